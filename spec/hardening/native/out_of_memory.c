/* Item 2: out of memory. Limits its address space (RLIMIT_AS) to what it
 * uses now plus LIMIT_MIB, allocates until malloc returns NULL (blocks of
 * 1 MiB, then 64 KiB; then it gives back 1 MiB of those and fills it with
 * 24-byte blocks until even those fail), maps the address space the
 * allocator could not use page by page until mmap fails too, frees every
 * other 24-byte block
 * (so small requests can still be served from the allocator's free lists
 * but nothing larger), then calls malloc(24) from 2,000 new call sites
 * (site_0 … site_1999, each a function of its own: built with -O0, each has
 * its own return address), so that the profiler has to record 2,000 new
 * locations with no memory left. Then it frees everything, calls every
 * site once more (now with memory to spare) and prints
 *
 *   out of memory: yes; sites 2000; first round 2000; second round 2000
 *
 * (whether malloc(4096) and malloc(24) both failed before the sites were
 * called, then how many calls of each round returned a block) and exits 0.
 * A setup that goes wrong exits 10-12.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define LIMIT_MIB 64
#define SMALL 24

#define S1(n) void *site_##n(void) { return malloc(SMALL); }
#define S10(n) S1(n##0) S1(n##1) S1(n##2) S1(n##3) S1(n##4) S1(n##5) S1(n##6) S1(n##7) S1(n##8) S1(n##9)
#define S100(n) S10(n##0) S10(n##1) S10(n##2) S10(n##3) S10(n##4) S10(n##5) S10(n##6) S10(n##7) S10(n##8) S10(n##9)
#define S1000(n) S100(n##0) S100(n##1) S100(n##2) S100(n##3) S100(n##4) S100(n##5) S100(n##6) S100(n##7) S100(n##8) S100(n##9)
S1000(1) S1000(2)

#define P1(n) site_##n,
#define P10(n) P1(n##0) P1(n##1) P1(n##2) P1(n##3) P1(n##4) P1(n##5) P1(n##6) P1(n##7) P1(n##8) P1(n##9)
#define P100(n) P10(n##0) P10(n##1) P10(n##2) P10(n##3) P10(n##4) P10(n##5) P10(n##6) P10(n##7) P10(n##8) P10(n##9)
#define P1000(n) P100(n##0) P100(n##1) P100(n##2) P100(n##3) P100(n##4) P100(n##5) P100(n##6) P100(n##7) P100(n##8) P100(n##9)
static void *(*const sites[])(void) = { P1000(1) P1000(2) };
#define NSITES ((int)(sizeof sites / sizeof sites[0]))

/* Blocks are kept in singly linked lists through their first word. */
struct block { struct block *next; };

/* The address space in use now, in KiB (no stdio: it would allocate). */
static long vm_size_kib(void) {
  char buf[256];
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  return strtol(buf, NULL, 10) * (sysconf(_SC_PAGESIZE) / 1024);
}

static struct block *fill(size_t size, struct block *list, long *count) {
  for (;;) {
    struct block *b = malloc(size);
    if (!b) return list;
    b->next = list;
    list = b;
    (*count)++;
  }
}

static void free_list(struct block *list) {
  while (list) {
    struct block *next = list->next;
    free(list);
    list = next;
  }
}

int main(void) {
  long vm = vm_size_kib();
  if (vm <= 0) return 10;
  struct rlimit rl;
  rl.rlim_cur = rl.rlim_max = (rlim_t)(vm + LIMIT_MIB * 1024) * 1024;
  if (setrlimit(RLIMIT_AS, &rl) != 0) return 11;

  long count = 0;
  struct block *big = fill(1 << 20, NULL, &count);
  struct block *medium = fill(64 << 10, NULL, &count);
  /* Give back 1 MiB of 64 KiB blocks, fill it (and whatever else is left)
   * with small blocks. */
  for (int i = 0; i < 16 && medium; i++) {
    struct block *next = medium->next;
    free(medium);
    medium = next;
  }
  long small_count = 0;
  struct block *small = fill(SMALL, NULL, &small_count);
  if (small_count < 2 * NSITES) return 12;
  /* What the allocator could not use (it grows by 1 MiB at least): map it
   * page by page, so no mapping of any size is left for the profiler. */
  struct block *pages = NULL;
  long page = sysconf(_SC_PAGESIZE), npages = 0;
  for (;;) {
    struct block *b = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) break;
    b->next = pages;
    pages = b;
    npages++;
  }
  /* Really out of memory? (Printed, not fatal: a preload that serves
   * these anyway should still be seen to crash or not further on.) */
  void *probe_page = malloc(4096), *probe_small = malloc(SMALL);
  int exhausted = !probe_page && !probe_small;
  free(probe_page);
  free(probe_small);
  /* Free every other small block: room for small requests only. */
  struct block *kept = NULL;
  int odd = 0;
  while (small) {
    struct block *next = small->next;
    if (odd) free(small); else { small->next = kept; kept = small; }
    odd = !odd;
    small = next;
  }

  void *got[NSITES];
  int first = 0;
  for (int i = 0; i < NSITES; i++) {
    got[i] = sites[i]();
    if (got[i]) first++;
  }

  for (int i = 0; i < NSITES; i++) free(got[i]);
  while (pages) {
    struct block *next = pages->next;
    munmap(pages, (size_t)page);
    pages = next;
  }
  free_list(kept);
  free_list(medium);
  free_list(big);

  int second = 0;
  for (int i = 0; i < NSITES; i++) {
    void *p = sites[i]();
    if (p) { memset(p, 0x5a, SMALL); second++; }
    free(p);
  }
  printf("out of memory: %s; sites %d; first round %d; second round %d\n", exhausted ? "yes" : "no", NSITES,
         first, second);
  return 0;
}
