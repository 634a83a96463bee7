/* Item 6a: a program that reuses the number of the dump's descriptor.
 * Started with fd 3 open (on the dump file, MWRAP=dump_fd:3), it closes
 * fd 3, opens DATA (which gets fd 3), writes its data there with write(2)
 * and exits normally. Its allocations come from keep_some (exported with
 * -rdynamic, so the dump names it).
 *
 *   fd_reuse DATA [closefrom]   prints "data on fd 3\n"; DATA holds
 *                  DATA_TEXT below. With "closefrom" it closes every
 *                  descriptor from 3 up (the profiler's own copy of fd 3
 *                  included, as daemons and shells do) instead of fd 3 only.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA_TEXT "the program's own data, line 1\nand line 2\n"

__attribute__((noinline)) void *keep_some(size_t n) { return malloc(n); }

int main(int argc, char **argv) {
  if (argc != 2 && argc != 3) return 2;
  for (int i = 0; i < 10; i++)
    if (!keep_some(1000)) return 3;
  if (argc == 3) closefrom(3);
  else if (close(3) != 0) return 4;
  int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd != 3) return 5;
  const char *text = DATA_TEXT;
  if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) return 6;
  printf("data on fd %d\n", fd);
  return 0;
}
