/* spec/stacks/robustness_spec.rb: called through Fiddle (without the
 * GVL) from Ruby threads. gvl_free_loop(n) mallocs and frees n blocks;
 * gvl_free_keep(size) mallocs one block and returns it. */
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) long gvl_free_loop(long n) {
  long done = 0;
  for (long i = 0; i < n; i++) {
    char *p = malloc(32 + (size_t)(i % 480));
    if (!p) continue;
    p[0] = (char)i;
    done += p[0] == (char)i;
    free(p);
  }
  return done;
}

__attribute__((noinline)) void *gvl_free_keep(size_t size) {
  void *p = malloc(size);
  if (p) memset(p, 1, size);
  return p;
}
