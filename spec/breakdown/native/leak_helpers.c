/* Native helpers for spec/breakdown/leaks_spec.rb, loaded with Fiddle. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* A static array is a root: the blocks it points to are not leaked. (Not
 * `static`: the compiler would drop an array that is never read.) */
void *leak_helpers_kept[4096];

int keep_in_static(int n, size_t size) {
  if (n > 4096) return -1;
  for (int i = 0; i < n; i++) {
    leak_helpers_kept[i] = malloc(size);
    if (leak_helpers_kept[i]) memset(leak_helpers_kept[i], 0, size);
  }
  return n;
}

/* Blocks whose pointers are dropped at once: leaked. */
int drop_pointers(int n, size_t size) {
  for (int i = 0; i < n; i++) {
    void *p = malloc(size);
    if (p) memset(p, 0, size);
    __asm__ volatile("" : : "r"(p) : "memory");
  }
  return n;
}

/* From now on a clone(2) with no flags (what fork-like copies use; threads
 * pass CLONE_VM and friends) fails with EAGAIN, as when the process limit
 * is reached. */
int refuse_plain_clone(void) {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return -errno;
  return 0;
}
