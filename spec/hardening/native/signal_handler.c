/* Item 1: fork() and exit() called from a signal handler that may have
 * interrupted malloc or free (and so the profiler's hook, holding a table
 * lock). Single-threaded: without the preload glibc's malloc takes no lock
 * here, so every mode completes.
 *
 *   signal_handler fork N    SIGALRM every 200 us; the handler forks (the
 *                            child _exit(0)s, the parent waitpid()s); after
 *                            N forks prints "forks N", exits 0
 *   signal_handler exit      the handler calls exit(7); before that it
 *                            writes "iterations K\n" (the loop's count when
 *                            it was interrupted)
 *   signal_handler child N   the handler forks once; the child returns from
 *                            the handler, allocates N more times and exits
 *                            normally; both print "pid P iterations K"
 *
 * The handler acts only when it interrupted the loop's malloc or free
 * (under the preload: most often inside the hook), once the loop has run;
 * otherwise it returns and waits for the next tick. A warm-up allocation
 * before the timer starts the profiler (it starts on the first malloc:
 * an exit that interrupts its start-up has no MWRAP read yet, so no dump).
 *
 * The loop's malloc is in loop_alloc (exported with -rdynamic, so the dump
 * names it): each iteration is malloc(SIZE), iterations++, free. At a
 * normal exit the site's allocations equal `iterations` exactly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE 100

static volatile sig_atomic_t forks, wanted, in_child, stop;
static volatile long iterations;
/* Set around the loop's malloc and free: the handler acts only when it
 * interrupted one of them (so, under the preload, most often the hook). */
static volatile sig_atomic_t in_alloc;
static const char *mode;

__attribute__((noinline)) void *loop_alloc(void) { return malloc(SIZE); }

static void say(const char *text) {
  size_t n = strlen(text), done = 0;
  while (done < n) {
    ssize_t w = write(1, text + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(99);
    done += (size_t)w;
  }
}

/* snprintf without malloc, for the handler: digits only. */
static void say_number_line(const char *prefix, long pid, long k) {
  char buf[128];
  char *p = buf;
  const char *s;
  for (s = prefix; *s; s++) *p++ = *s;
  if (pid >= 0) {
    char d[24]; int n = 0; long v = pid;
    do { d[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (s = "pid "; *s; s++) *p++ = *s;
    while (n) *p++ = d[--n];
    *p++ = ' ';
  }
  {
    char d[24]; int n = 0; long v = k;
    do { d[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (s = "iterations "; *s; s++) *p++ = *s;
    while (n) *p++ = d[--n];
  }
  *p++ = '\n';
  *p = 0;
  say(buf);
}

static void stop_timer(void) {
  struct itimerval off;
  memset(&off, 0, sizeof off);
  setitimer(ITIMER_REAL, &off, NULL);
}

static void on_alarm(int sig) {
  int saved = errno;
  (void)sig;
  if (!in_alloc || iterations == 0) return;
  if (strcmp(mode, "exit") == 0) {
    say_number_line("", -1, iterations);
    exit(7);
  }
  if (in_child || stop) { errno = saved; return; }
  pid_t pid = fork();
  if (pid < 0) _exit(98);
  if (pid == 0) {
    if (strcmp(mode, "fork") == 0) _exit(0);
    in_child = 1; /* "child": return from the handler and carry on */
    errno = saved;
    return;
  }
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) _exit(97);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) _exit(96);
  forks++;
  if (forks >= wanted) stop = 1;
  errno = saved;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  mode = argv[1];
  long n = argc > 2 ? atol(argv[2]) : 0;
  if (strcmp(mode, "fork") == 0) wanted = (sig_atomic_t)n;
  else if (strcmp(mode, "child") == 0) wanted = 1;
  else if (strcmp(mode, "exit") != 0) return 2;

  free(malloc(1)); /* warm-up: the preload starts on its first malloc */

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval tv;
  memset(&tv, 0, sizeof tv);
  tv.it_interval.tv_usec = 200;
  tv.it_value.tv_usec = 200;
  setitimer(ITIMER_REAL, &tv, NULL);

  long after_child = 0;
  for (;;) {
    in_alloc = 1;
    void *p = loop_alloc();
    in_alloc = 0;
    if (!p) return 95;
    iterations++;
    in_alloc = 1;
    free(p);
    in_alloc = 0;
    if (stop) break;
    if (in_child && ++after_child >= n) break;
  }
  stop_timer();
  if (strcmp(mode, "fork") == 0) {
    char buf[64];
    snprintf(buf, sizeof buf, "forks %d\n", (int)forks);
    say(buf);
  } else {
    say_number_line(in_child ? "child " : "parent ", (long)getpid(), iterations);
  }
  return 0;
}
