/* alloc_bench THREADS OPS_PER_THREAD
 *
 * Native allocator micro-benchmark, no Ruby: each thread keeps a ring of
 * 512 live blocks and, OPS_PER_THREAD times, frees the oldest block and
 * mallocs a new one of a pseudo-random size between 16 and 4096 bytes
 * (log-uniform: as many blocks under 256 bytes as over), writing one byte
 * into it. Every block is freed at the end, so the run is exactly
 * THREADS * OPS_PER_THREAD malloc+free pairs (plus the ring's first fill).
 * All threads call malloc from the same call site, as threads running the
 * same code do, so a profiler that charges allocations per call site sees
 * them all on one location.
 *
 * Prints: threads ops_per_thread wall_ns ns_per_op
 * (ns_per_op = wall time / ops per thread: what one thread's op costs
 * while all threads run). Built by rakelib/bench.rake with
 * cc -O2 -pthread -fno-builtin-malloc -fno-builtin-free. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RING 512

static long ops_per_thread;
static pthread_barrier_t start;

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *worker(void *arg) {
  uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)((uintptr_t)arg + 1);
  char **ring = calloc(RING, sizeof *ring);
  unsigned long sum = 0;
  pthread_barrier_wait(&start);
  for (long i = 0; i < ops_per_thread; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    unsigned shift = (unsigned)(x % 9);              /* 16 << 0..8: 16..4096 */
    size_t size = 16 + ((x >> 8) & ((16u << shift) - 1));
    if (size > 4096) size = 4096;
    long slot = i & (RING - 1);
    free(ring[slot]);
    char *p = malloc(size);
    p[0] = (char)i;
    sum += (unsigned char)p[0];
    ring[slot] = p;
  }
  for (long i = 0; i < RING; i++) free(ring[i]);
  free(ring);
  return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: alloc_bench THREADS OPS_PER_THREAD\n");
    return 2;
  }
  int threads = atoi(argv[1]);
  ops_per_thread = atol(argv[2]);
  if (threads < 1 || threads > 64 || ops_per_thread < 0) {
    fprintf(stderr, "alloc_bench: bad arguments\n");
    return 2;
  }
  pthread_t tid[64];
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  for (int t = 0; t < threads; t++) pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t);
  pthread_barrier_wait(&start);
  long long t0 = now_ns();
  for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
  long long wall = now_ns() - t0;
  printf("%d %ld %lld %.2f\n", threads, ops_per_thread, wall,
         ops_per_thread ? (double)wall / (double)ops_per_thread : 0.0);
  return 0;
}
