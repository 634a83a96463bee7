/* A library for the dlopen/dlclose churn under bt:16: b_churn_alloc(n)
 * mallocs n bytes and returns them (the caller keeps them). Built twice,
 * with B_VARIANT 1 and 2: variant 2 (the file that replaces variant 1 on
 * disk) has another function where variant 1 has b_churn_alloc, so a
 * frame named from the wrong file would say b_replaced_pad. */
#include <stdlib.h>
#include <string.h>
#ifndef B_VARIANT
#define B_VARIANT 1
#endif
#if B_VARIANT == 2
__attribute__((noinline)) int b_replaced_pad(int x) {
  volatile int a[64];
  for (int i = 0; i < 64; i++) a[i] = x * i;
  int s = 0;
  for (int i = 0; i < 64; i++) s += a[i] ^ (s << 1);
  return s;
}
#endif
__attribute__((noinline)) void *b_churn_alloc(size_t n) {
  char *p = malloc(n);
  if (p) memset(p, B_VARIANT, n);
  return p;
}
int b_churn_variant(void) { return B_VARIANT; }
