/* Item 4: threads with small stacks. glibc carves static TLS (every
 * preloaded library's included) out of each thread's stack, so a preload
 * with a large PT_TLS segment leaves a small-stack thread too little room.
 *
 *   small_stacks [32k|min]   a thread with a 32 KiB stack that touches a
 *                  ~20 KB local array and then mallocs, then a thread
 *                  created with a PTHREAD_STACK_MIN stack that mallocs
 *                  (or only one of them); prints "32k: ok\nmin: ok\n" and
 *                  exits 0
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USED 20000

__attribute__((noinline)) static long use_stack(void) {
  volatile char buf[USED];
  for (size_t i = 0; i < sizeof buf; i += 64) buf[i] = (char)i;
  long sum = 0;
  for (size_t i = 0; i < sizeof buf; i += 64) sum += buf[i];
  return sum;
}

static void *thirty_two_k(void *arg) {
  (void)arg;
  long sum = use_stack();
  char *p = malloc(100);
  if (!p) return (void *)1;
  memset(p, 1, 100);
  free(p);
  return sum == -1 ? (void *)2 : NULL;
}

static void *minimal(void *arg) {
  (void)arg;
  void *p = malloc(64);
  if (!p) return (void *)1;
  free(p);
  return NULL;
}

static int run(size_t stack, void *(*fn)(void *), const char *label) {
  pthread_attr_t attr;
  pthread_t t;
  void *ret = (void *)-1;
  pthread_attr_init(&attr);
  int rc = pthread_attr_setstacksize(&attr, stack);
  if (rc != 0) {
    fprintf(stderr, "%s: setstacksize(%zu): %s\n", label, stack, strerror(rc));
    return 1;
  }
  rc = pthread_create(&t, &attr, fn, NULL);
  if (rc != 0) {
    fprintf(stderr, "%s: pthread_create: %s\n", label, strerror(rc));
    return 1;
  }
  pthread_join(t, &ret);
  pthread_attr_destroy(&attr);
  printf("%s: %s\n", label, ret == NULL ? "ok" : "failed");
  fflush(stdout);
  return ret != NULL;
}

int main(int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : "";
  int bad = 0;
  if (strcmp(only, "min") != 0) bad |= run(32 * 1024, thirty_two_k, "32k");
  if (strcmp(only, "32k") != 0) bad |= run(PTHREAD_STACK_MIN, minimal, "min");
  return bad;
}
