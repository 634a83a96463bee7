/* Many distinct malloc call sites for the location-table test: x86_64
 * stubs generated at run time, each `sub rsp,8; mov rax,malloc; call rax;
 * add rsp,8; ret`, so every stub calls malloc from a return address of
 * its own (in anonymous memory: the location prints as "[0x...]").
 *
 * jit_sites_run(n, size, rounds): builds n stubs (once; more on a later
 * call with a larger n), calls each `rounds` times and frees each block
 * right away. Returns the number of malloc calls, or -1 where stubs
 * cannot be built (not x86_64, or no executable mapping allowed).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>

#define STUB_SIZE 32

static unsigned char *code;
static size_t nstubs;

typedef void *(*stub_fn)(size_t);

static int build(size_t n)
{
#if defined(__x86_64__)
	if (n <= nstubs)
		return 0;
	size_t len = n * STUB_SIZE;
	unsigned char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -1;
	uint64_t target = (uint64_t)(uintptr_t)&malloc;
	for (size_t i = 0; i < n; i++) {
		unsigned char *s = mem + i * STUB_SIZE;
		memset(s, 0xcc, STUB_SIZE);		/* int3 padding */
		s[0] = 0x48; s[1] = 0x83; s[2] = 0xec; s[3] = 0x08;	/* sub rsp, 8 */
		s[4] = 0x48; s[5] = 0xb8;		/* movabs rax, imm64 */
		memcpy(s + 6, &target, 8);
		s[14] = 0xff; s[15] = 0xd0;		/* call rax */
		s[16] = 0x48; s[17] = 0x83; s[18] = 0xc4; s[19] = 0x08;	/* add rsp, 8 */
		s[20] = 0xc3;				/* ret */
	}
	if (mprotect(mem, len, PROT_READ | PROT_EXEC) != 0) {
		munmap(mem, len);
		return -1;
	}
	if (code)
		munmap(code, nstubs * STUB_SIZE);
	code = mem;
	nstubs = n;
	return 0;
#else
	(void)n;
	return -1;
#endif
}

long jit_sites_run(long n, size_t size, int rounds)
{
	if (n < 0 || build((size_t)n) != 0)
		return -1;
	long calls = 0;
	for (int r = 0; r < rounds; r++) {
		for (long i = 0; i < n; i++) {
			stub_fn fn = (stub_fn)(void *)(code + (size_t)i * STUB_SIZE);
			void *p = fn(size);
			if (!p)
				return -2;
			free(p);
			calls++;
		}
	}
	return calls;
}

/* jit_sites_run on a thread of its own, which has no Ruby frames: its
 * mallocs are the stubs' own native locations. (A Ruby thread calling
 * without the GVL would have them charged to its Ruby line.) */
struct jit_args { long n; size_t size; int rounds; long result; };

static void *jit_thread(void *arg)
{
	struct jit_args *a = arg;
	a->result = jit_sites_run(a->n, a->size, a->rounds);
	return NULL;
}

long jit_sites_run_in_thread(long n, size_t size, int rounds)
{
	struct jit_args a = { n, size, rounds, -3 };
	pthread_t t;
	if (pthread_create(&t, NULL, jit_thread, &a) != 0)
		return -3;
	pthread_join(t, NULL);
	return a.result;
}
