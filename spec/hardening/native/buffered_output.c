/* Item 7: the dump and the program's own buffered output. Prints LINES
 * numbered lines (12,000 bytes: more than one stdio buffer) with stdio to
 * stdout, or to stderr made fully buffered with setvbuf, and exits
 * normally, leaving the last part in the buffer for exit() to flush. Its
 * allocations come from keep_some (exported with -rdynamic).
 *
 *   buffered_output stdout|stderr
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINES 400 /* 30 bytes each */

__attribute__((noinline)) void *keep_some(size_t n) { return malloc(n); }

static char stderr_buffer[16384];

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  FILE *out = strcmp(argv[1], "stderr") == 0 ? stderr : stdout;
  if (out == stderr && setvbuf(stderr, stderr_buffer, _IOFBF, sizeof stderr_buffer) != 0) return 3;
  for (int i = 0; i < 10; i++)
    if (!keep_some(1000)) return 4;
  for (int i = 1; i <= LINES; i++) fprintf(out, "program output line %9d\n", i);
  return 0;
}
