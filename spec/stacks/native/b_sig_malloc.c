/* malloc and free inside a signal handler that interrupted the program's
 * own malloc or free (under the preload: most often the profiler's hook).
 * Single-threaded.
 *
 *   b_sig_malloc N
 *
 * The main loop mallocs 100 bytes in b_loop_alloc and frees them; SIGALRM
 * arrives every 100 us; when it interrupted that malloc or free, the
 * handler mallocs 40 bytes in b_handler_alloc, writes them, frees them.
 * After N such handler allocations the loop stops and prints
 * "handled N iterations K". The handler's size has a tcache bin of its own
 * that the warm-up stocks, so glibc serves it without touching the state
 * the interrupted call may be changing: the program is correct without the
 * preload.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static volatile sig_atomic_t in_alloc, handled, wanted;
static volatile long iterations, bad;

__attribute__((noinline)) void b_handler_alloc(void) {
  char *p = malloc(40);
  if (!p) { bad++; return; }
  memset(p, 7, 40);
  if (p[39] != 7) bad++;
  free(p);
}

static void on_alarm(int sig) {
  (void)sig;
  if (!in_alloc || handled >= wanted) return;
  b_handler_alloc();
  handled++;
}

__attribute__((noinline)) void b_loop_alloc(void) {
  in_alloc = 1;
  char *p = malloc(100);
  in_alloc = 0;
  if (!p) { bad++; return; }
  p[0] = 1;
  iterations++;
  in_alloc = 1;
  free(p);
  in_alloc = 0;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  wanted = atoi(argv[1]);
  free(malloc(40)); /* stock the handler's tcache bin, start the profiler */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = { { 0, 100 }, { 0, 100 } };
  setitimer(ITIMER_REAL, &it, NULL);
  while (handled < wanted) b_loop_alloc();
  struct itimerval off = { { 0, 0 }, { 0, 0 } };
  setitimer(ITIMER_REAL, &off, NULL);
  if (bad) { fprintf(stderr, "%ld bad blocks\n", bad); return 1; }
  printf("handled %d iterations %ld\n", (int)handled, iterations);
  return 0;
}
