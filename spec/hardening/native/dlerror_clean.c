/* Item 9: no dlerror() message leaks into the program. The preload looks
 * up Ruby's functions with dlsym when it starts (at the first malloc);
 * in a program without Ruby those lookups fail, and their message must
 * not be left for the program's next dlerror().
 *
 *   dlerror_clean dlopen   dlopen("libm.so.6", RTLD_NOW) as the very
 *                          first thing (the loader's own malloc starts the
 *                          preload), then dlerror()
 *   dlerror_clean malloc   malloc first, then dlerror()
 *
 * Prints "dlerror: none\n" and exits 0, or prints the leaked message and
 * exits 1.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  if (strcmp(argv[1], "dlopen") == 0) {
    if (!dlopen("libm.so.6", RTLD_NOW)) {
      printf("dlopen failed: %s\n", dlerror());
      return 2;
    }
  } else {
    free(malloc(16));
  }
  const char *e = dlerror();
  if (e) {
    printf("dlerror: %s\n", e);
    return 1;
  }
  printf("dlerror: none\n");
  return 0;
}
