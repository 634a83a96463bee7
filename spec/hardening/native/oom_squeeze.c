/* Item 2, for Ruby (through Fiddle): squeeze() limits the address space
 * (RLIMIT_AS) to what the process uses now plus 64 MiB, allocates until
 * malloc returns NULL (1 MiB blocks, then 64 KiB; then it gives back 1 MiB
 * of those and fills it with `small`-byte blocks until even those fail),
 * maps what the allocator could not use page by page until mmap fails,
 * and frees every other small block: afterwards only small requests can be
 * served, from the allocator's free lists. Returns the number of small
 * blocks freed (0: the squeeze did not work). release() frees and unmaps
 * everything and lifts the limit again. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

struct block { struct block *next; };

static struct block *big, *small, *pages;
static struct rlimit saved;
static long page;

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

static long fill(size_t size, struct block **list) {
  long n = 0;
  for (;;) {
    struct block *b = malloc(size);
    if (!b) return n;
    b->next = *list;
    *list = b;
    n++;
  }
}

long squeeze(long small_size) {
  page = sysconf(_SC_PAGESIZE);
  long vm = vm_size_kib();
  if (vm <= 0 || getrlimit(RLIMIT_AS, &saved) != 0) return 0;
  struct rlimit rl = saved;
  rl.rlim_cur = (rlim_t)(vm + 64 * 1024) * 1024;
  if (setrlimit(RLIMIT_AS, &rl) != 0) return 0;
  struct block *medium = NULL;
  fill(1 << 20, &big);
  fill(64 << 10, &medium);
  for (int i = 0; i < 16 && medium; i++) {
    struct block *next = medium->next;
    free(medium);
    medium = next;
  }
  while (medium) { /* the rest of the medium blocks stay held, with the big ones */
    struct block *next = medium->next;
    medium->next = big;
    big = medium;
    medium = next;
  }
  struct block *all = NULL;
  fill((size_t)small_size, &all);
  for (;;) {
    struct block *b = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) break;
    b->next = pages;
    pages = b;
  }
  long freed = 0;
  int odd = 0;
  while (all) {
    struct block *next = all->next;
    if (odd) { free(all); freed++; } else { all->next = small; small = all; }
    odd = !odd;
    all = next;
  }
  return freed;
}

static void free_list(struct block **list) {
  while (*list) {
    struct block *next = (*list)->next;
    free(*list);
    *list = next;
  }
}

void release(void) {
  while (pages) {
    struct block *next = pages->next;
    munmap(pages, (size_t)page);
    pages = next;
  }
  free_list(&small);
  free_list(&big);
  setrlimit(RLIMIT_AS, &saved);
}
