/* Item 13: the dump must not change the program's exit status. Allocates
 * from keep_some, reads stdin to its end (the spec's handshake: it closes
 * stdin once the scene is set), writes nothing to stdout and exits 3 with
 * exit(3).
 */
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) void *keep_some(size_t n) { return malloc(n); }

int main(void) {
  for (int i = 0; i < 10; i++)
    if (!keep_some(1000)) return 4;
  char buf[256];
  while (read(0, buf, sizeof buf) > 0) {}
  exit(3);
}
