/* fork_bench SITES FORKS
 *
 * What a fork costs a process with a big location table: builds SITES
 * distinct malloc call sites (x86_64 stubs generated at run time, each
 * calling malloc from a return address of its own), calls each once
 * (freeing the block), then forks FORKS times, the child leaving at once
 * with _exit(0) and the parent waiting for it, and times each fork() call.
 * When the preload exports mwrap_fork_handler_stats (this build of mwrap
 * does), it also reports the time spent in mwrap's fork handlers.
 *
 * Prints: sites forks fork_ns_median fork_ns_min handler_ns_per_fork rss_kb
 * (handler_ns_per_fork is -1 without the stats symbol). Built by
 * bench/run.rb with cc -O2 -ldl. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STUB_SIZE 32

typedef void *(*stub_fn)(size_t);

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fork_bench SITES FORKS\n");
    return 2;
  }
  long sites = atol(argv[1]), forks = atol(argv[2]);
  if (sites < 0 || forks < 1) {
    fprintf(stderr, "fork_bench: SITES must be >= 0 and FORKS >= 1\n");
    return 2;
  }
#if defined(__x86_64__)
  size_t len = (size_t)sites * STUB_SIZE + 1;
  unsigned char *code = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (code == MAP_FAILED) {
    perror("fork_bench: mmap");
    return 1;
  }
  uint64_t target = (uint64_t)(uintptr_t)&malloc;
  for (long i = 0; i < sites; i++) {
    unsigned char *s = code + (size_t)i * STUB_SIZE;
    memset(s, 0xcc, STUB_SIZE);
    s[0] = 0x48; s[1] = 0x83; s[2] = 0xec; s[3] = 0x08;  /* sub rsp, 8 */
    s[4] = 0x48; s[5] = 0xb8;                             /* movabs rax, malloc */
    memcpy(s + 6, &target, 8);
    s[14] = 0xff; s[15] = 0xd0;                           /* call rax */
    s[16] = 0x48; s[17] = 0x83; s[18] = 0xc4; s[19] = 0x08; /* add rsp, 8 */
    s[20] = 0xc3;                                         /* ret */
  }
  if (mprotect(code, len, PROT_READ | PROT_EXEC) != 0) {
    perror("fork_bench: mprotect");
    return 1;
  }
  for (long i = 0; i < sites; i++)
    free(((stub_fn)(void *)(code + (size_t)i * STUB_SIZE))(16));
#else
  if (sites > 0) {
    fprintf(stderr, "fork_bench: generated call sites need x86_64\n");
    return 1;
  }
#endif
  void (*stats)(uint64_t *, uint64_t *) =
      (void (*)(uint64_t *, uint64_t *))dlsym(RTLD_DEFAULT, "mwrap_fork_handler_stats");
  uint64_t forks0 = 0, nanos0 = 0;
  if (stats)
    stats(&forks0, &nanos0);
  long long *took = calloc((size_t)forks, sizeof *took);
  for (long i = 0; i < forks; i++) {
    long long t0 = now_ns();
    pid_t pid = fork();
    if (pid == 0)
      _exit(0);
    took[i] = now_ns() - t0;
    if (pid < 0) {
      perror("fork_bench: fork");
      return 1;
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "fork_bench: child %d did not exit 0\n", (int)pid);
      return 1;
    }
  }
  long long handler = -1;
  if (stats) {
    uint64_t f1, n1;
    stats(&f1, &n1);
    handler = f1 > forks0 ? (long long)((n1 - nanos0) / (f1 - forks0)) : -1;
  }
  qsort(took, (size_t)forks, sizeof *took, cmp_ll);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%ld %ld %lld %lld %lld %ld\n", sites, forks, took[forks / 2], took[0], handler, ru.ru_maxrss);
  return 0;
}
