/* Frames without frame pointers for the unwinder's tests and bench:
 * compiled with -O2 -fomit-frame-pointer into a shared object the test
 * dlopens, so every function can be named with dladdr.
 *
 * mw_chain(depth, leaf, arg) calls mw_f0 -> mw_f1 -> ... -> mw_f{depth-1},
 * which calls leaf(arg). Each link is a distinct function (distinct return
 * addresses, as in a real stack) with a frame of its own size.
 * mw_qsort_chain does the same from inside a qsort comparator, so the
 * frames between the chain and its caller are libc's. */
#include <stdlib.h>

typedef void (*mw_leaf)(void *arg);

struct mw_ctx {
  mw_leaf leaf;
  void *arg;
};

/* Keeps the locals (and so the frame) alive and each call a call, not a
 * jump: the result is used after it returns. */
#define KEEP(x) __asm__ volatile("" : : "r"(x) : "memory")

#define LINK(i, next)                                                   \
  __attribute__((noinline)) long mw_f##i(const struct mw_ctx *c, int left) { \
    volatile char pad[8 + 16 * ((i) % 4)];                              \
    long r;                                                             \
    pad[0] = (char)(i);                                                 \
    if (left > 0)                                                       \
      r = next(c, left - 1);                                            \
    else {                                                              \
      c->leaf(c->arg);                                                  \
      r = 0;                                                            \
    }                                                                   \
    KEEP(pad);                                                          \
    return r + pad[0];                                                  \
  }

__attribute__((noinline)) long mw_end(const struct mw_ctx *c, int left) {
  (void)left;
  c->leaf(c->arg);
  KEEP(c);
  return 1;
}

long mw_f0(const struct mw_ctx *c, int left);
#define DECL(i) long mw_f##i(const struct mw_ctx *c, int left);
DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7) DECL(8) DECL(9)
DECL(10) DECL(11) DECL(12) DECL(13) DECL(14) DECL(15) DECL(16) DECL(17)
DECL(18) DECL(19) DECL(20) DECL(21) DECL(22) DECL(23) DECL(24) DECL(25)
DECL(26) DECL(27) DECL(28) DECL(29) DECL(30) DECL(31) DECL(32) DECL(33)
DECL(34) DECL(35) DECL(36) DECL(37) DECL(38) DECL(39)

LINK(0, mw_f1) LINK(1, mw_f2) LINK(2, mw_f3) LINK(3, mw_f4) LINK(4, mw_f5)
LINK(5, mw_f6) LINK(6, mw_f7) LINK(7, mw_f8) LINK(8, mw_f9) LINK(9, mw_f10)
LINK(10, mw_f11) LINK(11, mw_f12) LINK(12, mw_f13) LINK(13, mw_f14)
LINK(14, mw_f15) LINK(15, mw_f16) LINK(16, mw_f17) LINK(17, mw_f18)
LINK(18, mw_f19) LINK(19, mw_f20) LINK(20, mw_f21) LINK(21, mw_f22)
LINK(22, mw_f23) LINK(23, mw_f24) LINK(24, mw_f25) LINK(25, mw_f26)
LINK(26, mw_f27) LINK(27, mw_f28) LINK(28, mw_f29) LINK(29, mw_f30)
LINK(30, mw_f31) LINK(31, mw_f32) LINK(32, mw_f33) LINK(33, mw_f34)
LINK(34, mw_f35) LINK(35, mw_f36) LINK(36, mw_f37) LINK(37, mw_f38)
LINK(38, mw_f39) LINK(39, mw_end)

/* depth >= 1 links; at most 40. */
long mw_chain(int depth, mw_leaf leaf, void *arg) {
  struct mw_ctx c = {leaf, arg};
  long r = mw_f0(&c, depth - 1);
  KEEP(&c);
  return r;
}

static __thread const struct mw_ctx *qsort_ctx;
static __thread int qsort_depth;

int mw_compare(const void *a, const void *b) {
  const struct mw_ctx *c = qsort_ctx;
  if (c) {
    qsort_ctx = 0;
    mw_f0(c, qsort_depth - 1);
  }
  return *(const int *)a - *(const int *)b;
}

long mw_qsort_chain(int depth, mw_leaf leaf, void *arg) {
  struct mw_ctx c = {leaf, arg};
  int v[2] = {2, 1};
  qsort_ctx = &c;
  qsort_depth = depth;
  qsort(v, 2, sizeof v[0], mw_compare);
  KEEP(v);
  return v[0];
}
