/* spec/stacks/robustness_spec.rb: threads with small stacks that malloc
 * while the preload records 16 native frames per allocation.
 *
 *   stack_threads   one thread with a 32 KiB stack and one with a 16 KiB
 *                   stack (PTHREAD_STACK_MIN on x86_64), each mallocs
 *                   and frees ROUNDS blocks from a few frames deep and
 *                   keeps KEPT of them; prints "32k: ok\n16k: ok\n", exits 0
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 1000
#define KEPT 7
#define KEPT_SIZE 4321

static void *kept[2][KEPT];

__attribute__((noinline)) void *stack_leaf(size_t n) {
  void *p = malloc(n);
  if (p) memset(p, 0x5a, n);
  return p;
}

__attribute__((noinline)) void *stack_mid(size_t n, int depth) {
  volatile char pad[256];
  pad[0] = (char)depth;
  void *p = depth > 0 ? stack_mid(n, depth - 1) : stack_leaf(n);
  return pad[0] == 127 ? NULL : p;
}

struct job {
  int which;
  long failed;
};

__attribute__((noinline)) void *stack_worker(void *arg) {
  struct job *job = arg;
  for (int i = 0; i < ROUNDS; i++) {
    void *p = stack_mid(16 + (size_t)(i % 200), 4);
    if (!p) job->failed++;
    free(p);
  }
  for (int i = 0; i < KEPT; i++) {
    kept[job->which][i] = stack_leaf(KEPT_SIZE);
    if (!kept[job->which][i]) job->failed++;
  }
  return NULL;
}

static int run(int which, size_t stack, const char *label) {
  pthread_attr_t attr;
  pthread_t t;
  struct job job = { which, 0 };
  pthread_attr_init(&attr);
  int rc = pthread_attr_setstacksize(&attr, stack);
  if (rc) { fprintf(stderr, "%s: setstacksize: %s\n", label, strerror(rc)); return 1; }
  rc = pthread_create(&t, &attr, stack_worker, &job);
  if (rc) { fprintf(stderr, "%s: pthread_create: %s\n", label, strerror(rc)); return 1; }
  pthread_join(t, NULL);
  if (job.failed) { fprintf(stderr, "%s: %ld failed\n", label, job.failed); return 1; }
  printf("%s: ok\n", label);
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (run(0, 32 * 1024, "32k")) return 1;
  if (run(1, 16 * 1024, "16k")) return 1;
  return 0;
}
