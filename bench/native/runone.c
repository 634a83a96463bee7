/* runone RESULT_FILE [NAME=VALUE ...] -- COMMAND [ARGS ...]
 *
 * Runs COMMAND with the NAME=VALUE variables added to its environment (so
 * LD_PRELOAD applies to COMMAND only, never to this wrapper), waits for it
 * with wait4 and writes one line to RESULT_FILE:
 *
 *   <wall ns> <peak RSS KiB> <exit status or 128+signal> <user us> <sys us>
 *
 * Peak RSS is the child's ru_maxrss from wait4, which the kernel takes as
 * the largest of the child and of the descendants it waited for.
 * Used by bench/run.rb; stdin/stdout/stderr are the command's. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: runone RESULT_FILE [NAME=VALUE ...] -- COMMAND [ARGS ...]\n");
    return 2;
  }
  const char *result = argv[1];
  int i = 2;
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    if (!strchr(argv[i], '=')) {
      fprintf(stderr, "runone: not NAME=VALUE: %s\n", argv[i]);
      return 2;
    }
  }
  if (i >= argc - 1) {
    fprintf(stderr, "runone: no command after --\n");
    return 2;
  }
  int env_end = i;
  char **cmd = argv + i + 1;
  FILE *out = fopen(result, "w");
  if (!out) {
    perror(result);
    return 2;
  }
  long long t0 = now_ns();
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 2;
  }
  if (pid == 0) {
    for (int j = 2; j < env_end; j++) putenv(argv[j]);
    execvp(cmd[0], cmd);
    fprintf(stderr, "runone: %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
  }
  int status;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) {
      perror("wait4");
      return 2;
    }
  }
  long long wall = now_ns() - t0;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  fprintf(out, "%lld %ld %d %lld %lld\n", wall, ru.ru_maxrss, code,
          (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
          (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec);
  fclose(out);
  return code;
}
