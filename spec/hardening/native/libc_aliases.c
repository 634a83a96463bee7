/* Item 15: glibc's own names for its allocator (__libc_malloc, …) mixed
 * with the standard ones. Programs and debugging libraries call them
 * directly; under the preload every block from either family must be
 * accepted by the other. Each step fills its block and checks the bytes
 * that must survive.
 *
 *   libc_aliases   prints "mixed: 10 ok\n" and exits 0
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static int steps;

static void *filled(void *p, size_t n, int c) {
  if (!p) { printf("step %d: NULL\n", steps + 1); exit(1); }
  memset(p, c, n);
  return p;
}

static void check(const void *p, size_t n, int c) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != (unsigned char)c) { printf("step %d: byte %zu lost\n", steps + 1, i); exit(1); }
  steps++;
}

int main(void) {
  void *p;
  p = filled(__libc_malloc(100), 100, 1); check(p, 100, 1); free(p);
  p = filled(malloc(100), 100, 2); check(p, 100, 2); __libc_free(p);
  p = __libc_calloc(10, 10); check(p, 100, 0); free(p);
  p = calloc(10, 10); check(p, 100, 0); __libc_free(p);
  p = filled(malloc(50), 50, 3); p = __libc_realloc(p, 5000); check(p, 50, 3); free(p);
  p = filled(__libc_malloc(50), 50, 4); p = realloc(p, 5000); check(p, 50, 4); __libc_free(p);
  p = filled(__libc_memalign(64, 200), 200, 5);
  if ((uintptr_t)p % 64) { printf("step 7: not aligned\n"); return 1; }
  check(p, 200, 5); free(p);
  p = filled(__libc_memalign(4096, 10), 10, 6); p = realloc(p, 20000); check(p, 10, 6); __libc_free(p);
  p = filled(aligned_alloc(256, 512), 512, 7); p = __libc_realloc(p, 8); check(p, 8, 7); __libc_free(p);
  p = filled(__libc_realloc(NULL, 30), 30, 8); check(p, 30, 8); free(p);
  printf("mixed: %d ok\n", steps);
  return 0;
}
