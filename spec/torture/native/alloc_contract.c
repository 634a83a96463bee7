/* The allocator contract, checked under the mwrap preload and without it.
 *
 * Each check prints one line, "ok - ..." or "not ok - ...", and the
 * program exits 1 if any check failed. Results follow glibc's manual;
 * where the preload documents a different result (aligned_alloc with an
 * alignment that is not a power of two: EINVAL, as glibc >= 2.38 and C17
 * document, while glibc 2.36 accepts it) the expected result depends on
 * whether the preload is loaded, and the line says so.
 *
 * Build: gcc -std=gnu11 -O1 -fno-builtin -o alloc_contract alloc_contract.c -ldl
 * (-fno-builtin keeps gcc from folding the calls it knows.)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <glob.h>
#include <iconv.h>
#include <locale.h>
#include <netdb.h>
#include <regex.h>
#include <search.h>
#include <errno.h>
#include <malloc.h>
#include <gnu/libc-version.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The overflow checks use a block after a realloc that failed on purpose. */
#if defined(__GNUC__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

static int failures;
static int checks;
static int preloaded;	/* the mwrap preload is in this process */
static int glibc_heap;	/* the allocator underneath is glibc's (mallinfo2 means something) */

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...)
{
	va_list ap;
	checks++;
	if (!ok)
		failures++;
	printf("%s - ", ok ? "ok" : "not ok");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* Sizes the compiler cannot see through. */
static volatile size_t v_size_max = SIZE_MAX;
static volatile size_t v_half = SIZE_MAX / 2 + 1;
static volatile size_t v_ptrdiff_max = PTRDIFF_MAX;

static size_t page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static int aligned(const void *p, size_t a)
{
	return ((uintptr_t)p & (a - 1)) == 0;
}

static int pattern_ok(const unsigned char *p, size_t n, unsigned char seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed + i * 7))
			return 0;
	return 1;
}

static void pattern(unsigned char *p, size_t n, unsigned char seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 7);
}

static const char *errname(int e)
{
	switch (e) {
	case 0: return "0";
	case ENOMEM: return "ENOMEM";
	case EINVAL: return "EINVAL";
	default: return strerror(e);
	}
}

static void overflowing_sizes(void)
{
	void *p;

	errno = 0;
	p = malloc(v_size_max);
	check(p == NULL && errno == ENOMEM, "malloc(SIZE_MAX): NULL, ENOMEM (got %p, %s)", p, errname(errno));
	errno = 0;
	p = malloc(v_ptrdiff_max + 1);
	check(p == NULL && errno == ENOMEM, "malloc(PTRDIFF_MAX + 1): NULL, ENOMEM (got %p, %s)", p, errname(errno));
	errno = 0;
	p = malloc(v_size_max - 64);
	check(p == NULL && errno == ENOMEM, "malloc(SIZE_MAX - 64): NULL, ENOMEM (got %p, %s)", p, errname(errno));
	errno = 0;
	p = calloc(v_half, 2);
	check(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX/2 + 1, 2) overflows: NULL, ENOMEM (got %p, %s)", p,
	      errname(errno));
	errno = 0;
	p = calloc(v_size_max / 3 + 7, 3);
	check(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX/3 + 7, 3) overflows: NULL, ENOMEM (got %p, %s)", p,
	      errname(errno));
	errno = 0;
	p = calloc(1, v_size_max);
	check(p == NULL && errno == ENOMEM, "calloc(1, SIZE_MAX): NULL, ENOMEM (got %p, %s)", p, errname(errno));

	unsigned char *q = malloc(100);
	pattern(q, 100, 11);
	errno = 0;
	p = reallocarray(q, v_half, 2);
	check(p == NULL && errno == ENOMEM && pattern_ok(q, 100, 11),
	      "reallocarray(p, SIZE_MAX/2 + 1, 2) overflows: NULL, ENOMEM, block intact (got %p, %s)", p,
	      errname(errno));
	errno = 0;
	p = realloc(q, v_size_max);
	check(p == NULL && errno == ENOMEM && pattern_ok(q, 100, 11),
	      "realloc(p, SIZE_MAX): NULL, ENOMEM, block intact (got %p, %s)", p, errname(errno));
	errno = 0;
	p = realloc(q, v_ptrdiff_max + 1);
	check(p == NULL && errno == ENOMEM && pattern_ok(q, 100, 11),
	      "realloc(p, PTRDIFF_MAX + 1): NULL, ENOMEM, block intact (got %p, %s)", p, errname(errno));
	p = reallocarray(q, 50, 4);
	check(p != NULL && pattern_ok(p, 100, 11), "reallocarray(p, 50, 4) grows, content kept");
	free(p);
	errno = 0;
	p = reallocarray(NULL, v_half, 4);
	check(p == NULL && errno == ENOMEM, "reallocarray(NULL, SIZE_MAX/2 + 1, 4): NULL, ENOMEM (got %p, %s)", p,
	      errname(errno));
	p = reallocarray(NULL, 10, 10);
	check(p != NULL && malloc_usable_size(p) >= 100, "reallocarray(NULL, 10, 10) allocates 100 bytes");
	free(p);
}

static void posix_memalign_cases(void)
{
	static const size_t bad[] = { 0, 1, 2, 3, 4, 12, 24, 48, 96, 4095, 4097, 3 * 4096 };
	static const size_t good[] = { 8, 16, 32, 64, 128, 256, 1024, 4096, 8192, 65536, 1 << 20 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		void *p = (void *)0x1;
		int rc = posix_memalign(&p, bad[i], 100);
		check(rc == EINVAL && p == (void *)0x1, "posix_memalign(align %zu): EINVAL, *out untouched (got %s)",
		      bad[i], errname(rc));
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		for (size_t n = 0; n <= 5000; n += 2500) {
			void *p = NULL;
			int rc = posix_memalign(&p, good[i], n);
			int ok = rc == 0 && p && aligned(p, good[i]) && malloc_usable_size(p) >= n;
			if (ok && n) {
				pattern(p, n, (unsigned char)i);
				ok = pattern_ok(p, n, (unsigned char)i);
			}
			check(ok, "posix_memalign(align %zu, %zu): 0, aligned, usable >= size (got %s, %p)", good[i], n,
			      errname(rc), p);
			free(p);
		}
	}
	void *p = (void *)0x1;
	int saved = errno = 1234;
	int rc = posix_memalign(&p, 64, v_size_max - 4096);
	check(rc == ENOMEM && p == (void *)0x1, "posix_memalign(64, SIZE_MAX - 4096): ENOMEM, *out untouched (got %s)",
	      errname(rc));
	(void)saved;
	rc = posix_memalign(&p, v_half, 16);
	check(rc == ENOMEM || rc == EINVAL, "posix_memalign(SIZE_MAX/2 + 1, 16): ENOMEM or EINVAL (got %s)",
	      errname(rc));
}

static void memalign_cases(void)
{
	/* glibc: alignment below MALLOC_ALIGNMENT acts like malloc, a
	 * non-power-of-two is rounded up to the next power of two, one above
	 * SIZE_MAX/2 + 1 is EINVAL. */
	static const struct { size_t align, expect; } cases[] = {
		{ 0, 16 }, { 1, 16 }, { 3, 16 }, { 8, 16 }, { 16, 16 }, { 24, 32 }, { 48, 64 }, { 100, 128 },
		{ 4096, 4096 }, { 5000, 8192 }, { 65536, 65536 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		void *p = memalign(cases[i].align, 1000);
		int ok = p && aligned(p, cases[i].expect) && malloc_usable_size(p) >= 1000;
		if (ok) {
			pattern(p, 1000, 3);
			ok = pattern_ok(p, 1000, 3);
		}
		check(ok, "memalign(%zu, 1000): aligned to %zu, usable >= 1000 (got %p)", cases[i].align, cases[i].expect,
		      p);
		free(p);
	}
	errno = 0;
	void *p = memalign(v_half + 1, 16);
	check(p == NULL && errno == EINVAL, "memalign(SIZE_MAX/2 + 2, 16): NULL, EINVAL (got %p, %s)", p,
	      errname(errno));
	errno = 0;
	p = memalign(64, v_size_max - 4096);
	check(p == NULL && errno == ENOMEM, "memalign(64, SIZE_MAX - 4096): NULL, ENOMEM (got %p, %s)", p,
	      errname(errno));
}

static void aligned_alloc_cases(void)
{
	static const size_t good[] = { 1, 2, 8, 16, 64, 4096, 65536 };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		void *p = aligned_alloc(good[i], 4096);
		check(p && aligned(p, good[i]) && malloc_usable_size(p) >= 4096,
		      "aligned_alloc(%zu, 4096): aligned, usable >= 4096 (got %p)", good[i], p);
		free(p);
	}
	/* A size that is not a multiple of the alignment: C11 made it UB,
	 * C17 and glibc accept it. */
	void *p = aligned_alloc(64, 100);
	check(p && aligned(p, 64) && malloc_usable_size(p) >= 100, "aligned_alloc(64, 100): aligned (got %p)", p);
	free(p);
	static const size_t odd[] = { 0, 3, 24, 100, 4097 };
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		errno = 0;
		p = aligned_alloc(odd[i], 256);
		if (preloaded) {
			check(p == NULL && errno == EINVAL,
			      "aligned_alloc(%zu, 256) under mwrap: NULL, EINVAL as glibc >= 2.38 documents "
			      "(glibc 2.36 accepts it) (got %p, %s)",
			      odd[i], p, errname(errno));
		} else if (glibc_heap) {
			/* glibc < 2.38 treats it like memalign; 2.38 and later say EINVAL. */
			check(p != NULL || errno == EINVAL,
			      "aligned_alloc(%zu, 256) with glibc %s: a block (< 2.38) or EINVAL (>= 2.38) (got %p, %s)",
			      odd[i], gnu_get_libc_version(), p, errname(errno));
		} else {
			check(1, "aligned_alloc(%zu, 256) with another allocator: %p, %s (not checked)", odd[i], p,
			      errname(errno));
		}
		free(p);
	}
	errno = 0;
	p = aligned_alloc(64, v_size_max - 4096);
	check(p == NULL && errno == ENOMEM, "aligned_alloc(64, SIZE_MAX - 4096): NULL, ENOMEM (got %p, %s)", p,
	      errname(errno));
}

static void page_cases(void)
{
	size_t pg = page();
	static const size_t sizes[] = { 1, 100, 4095, 4096, 4097, 10000 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		void *p = valloc(n);
		check(p && aligned(p, pg) && malloc_usable_size(p) >= n,
		      "valloc(%zu): page-aligned, usable >= %zu (got %p, usable %zu)", n, n, p,
		      p ? malloc_usable_size(p) : 0);
		free(p);
		size_t rounded = (n + pg - 1) / pg * pg;
		p = pvalloc(n);
		int ok = p && aligned(p, pg) && malloc_usable_size(p) >= rounded;
		if (ok) {
			memset(p, 0xab, rounded); /* the whole rounded size is ours */
		}
		check(ok, "pvalloc(%zu): page-aligned, usable >= %zu (whole pages) (got %p, usable %zu)", n, rounded, p,
		      p ? malloc_usable_size(p) : 0);
		free(p);
	}
	void *p = pvalloc(0);
	check(p != NULL, "pvalloc(0): a block (got %p)", p);
	free(p);
	errno = 0;
	p = valloc(v_size_max - pg);
	check(p == NULL && errno == ENOMEM, "valloc(SIZE_MAX - page): NULL, ENOMEM (got %p, %s)", p, errname(errno));
	errno = 0;
	p = pvalloc(v_size_max - 10);
	check(p == NULL && errno == ENOMEM, "pvalloc(SIZE_MAX - 10) (rounding overflows): NULL, ENOMEM (got %p, %s)",
	      p, errname(errno));
}

static void malloc_zero_and_free_null(void)
{
	void *p = malloc(0);
	check(p != NULL, "malloc(0): non-NULL (got %p)", p);
	free(p);
	check(1, "malloc(0) block freed");
	p = calloc(0, 10);
	check(p != NULL, "calloc(0, 10): non-NULL (got %p)", p);
	free(p);
	free(NULL);
	check(1, "free(NULL) returns");
	check(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) == 0");
}

static void realloc_cases(void)
{
	unsigned char *p = malloc(1000);
	pattern(p, 1000, 5);
	p = realloc(p, 100000);
	check(p && pattern_ok(p, 1000, 5) && malloc_usable_size(p) >= 100000, "realloc grows 1000 -> 100000, content kept");
	memset(p + 1000, 0x11, 99000);
	p = realloc(p, 1 << 22);
	check(p && pattern_ok(p, 1000, 5) && malloc_usable_size(p) >= (1 << 22),
	      "realloc grows 100000 -> 4 MiB (mmap), content kept");
	p = realloc(p, 10);
	check(p && pattern_ok(p, 10, 5) && malloc_usable_size(p) >= 10, "realloc shrinks 4 MiB -> 10, content kept");
	p = realloc(p, 10);
	check(p && pattern_ok(p, 10, 5), "realloc to the same size keeps content");
	errno = 0;
	void *r = realloc(p, 0);
	check(r == NULL, "realloc(p, 0): frees and returns NULL (got %p)", r);

	p = realloc(NULL, 777);
	check(p && malloc_usable_size(p) >= 777, "realloc(NULL, 777) allocates");
	pattern(p, 777, 9);
	free(p);

	/* Aligned blocks keep their content through realloc (not their alignment). */
	static const size_t aligns[] = { 32, 64, 4096 };
	for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
		p = memalign(aligns[i], 3000);
		pattern(p, 3000, 21);
		p = realloc(p, 50000);
		int ok = p && pattern_ok(p, 3000, 21) && malloc_usable_size(p) >= 50000;
		p = realloc(p, 200);
		ok = ok && p && pattern_ok(p, 200, 21) && malloc_usable_size(p) >= 200;
		check(ok, "memalign(%zu) block: realloc grow then shrink keeps content", aligns[i]);
		free(p);
	}

	/* calloc really zeroes, even on recycled memory */
	for (int round = 0; round < 3; round++) {
		unsigned char *d = malloc(50000);
		memset(d, 0xff, 50000);
		free(d);
		unsigned char *z = calloc(500, 100);
		int zero = z != NULL;
		for (size_t i = 0; zero && i < 50000; i++)
			zero = z[i] == 0;
		check(zero, "calloc(500, 100) is zeroed after a dirty block of the same size was freed (round %d)", round);
		free(z);
	}

	if (glibc_heap) {
		/* realloc(p, 0) really frees: glibc's in-use byte count drops back. */
		void *warm = malloc(64);
		struct mallinfo2 before = mallinfo2();
		void *b = malloc(100000);
		memset(b, 1, 100000);
		struct mallinfo2 during = mallinfo2();
		r = realloc(b, 0);
		struct mallinfo2 after = mallinfo2();
		check(r == NULL && during.uordblks >= before.uordblks + 100000 && after.uordblks == before.uordblks,
		      "realloc(p, 0) returns the block to glibc (in use: %zu -> %zu -> %zu)", before.uordblks,
		      during.uordblks, after.uordblks);
		free(warm);
	}
}

/* Fills every usable byte of many blocks of every kind, then checks each
 * block still holds its own byte: writing up to malloc_usable_size must
 * not touch a neighbour (or the preload's header of one). */
static void usable_bytes_cases(void)
{
	enum { N = 600 };
	static void *blocks[N];
	static size_t usable[N];
	static size_t requested[N];
	static const char *kinds[] = { "malloc", "calloc", "realloc", "memalign(64)", "memalign(4096)",
				       "aligned_alloc(256)", "valloc", "pvalloc", "posix_memalign(32)",
				       "reallocarray" };
	int nk = sizeof(kinds) / sizeof(kinds[0]);
	int bad_usable[10] = { 0 };
	for (int i = 0; i < N; i++) {
		size_t n = (size_t)(i * 37 % 5000) + (i % 3 == 0 ? 0 : 1);
		int k = i % nk;
		void *p = NULL;
		switch (k) {
		case 0: p = malloc(n); break;
		case 1: p = calloc(n, 1); break;
		case 2: p = realloc(malloc(n / 2 + 1), n); break;
		case 3: p = memalign(64, n); break;
		case 4: p = memalign(4096, n); break;
		case 5: p = aligned_alloc(256, n); break;
		case 6: p = valloc(n); break;
		case 7: p = pvalloc(n); break;
		case 8: if (posix_memalign(&p, 32, n)) p = NULL; break;
		case 9: p = reallocarray(NULL, n, 1); break;
		}
		if (!p) {
			check(0, "%s(%zu) returned NULL", kinds[k], n);
			continue;
		}
		blocks[i] = p;
		requested[i] = n;
		usable[i] = malloc_usable_size(p);
		if (usable[i] < n)
			bad_usable[k]++;
		memset(p, (unsigned char)(i | 1), usable[i]);
	}
	for (int k = 0; k < nk; k++)
		check(bad_usable[k] == 0, "malloc_usable_size >= requested for every %s block (%d short)", kinds[k],
		      bad_usable[k]);
	int corrupted = 0;
	for (int i = 0; i < N; i++) {
		unsigned char *p = blocks[i];
		if (!p)
			continue;
		for (size_t j = 0; j < usable[i]; j++) {
			if (p[j] != (unsigned char)(i | 1)) {
				corrupted++;
				break;
			}
		}
	}
	check(corrupted == 0, "writing every usable byte of %d blocks of %d kinds corrupts no neighbour (%d corrupted)",
	      N, nk, corrupted);
	for (int i = 0; i < N; i += 2)
		free(blocks[i]);
	/* Reuse the freed holes, then check the survivors again. */
	for (int i = 0; i < N; i += 2) {
		blocks[i] = malloc(requested[i]);
		usable[i] = malloc_usable_size(blocks[i]);
		memset(blocks[i], 0xee, usable[i]);
	}
	corrupted = 0;
	for (int i = 1; i < N; i += 2) {
		unsigned char *p = blocks[i];
		for (size_t j = 0; p && j < usable[i]; j++) {
			if (p[j] != (unsigned char)(i | 1)) {
				corrupted++;
				break;
			}
		}
	}
	check(corrupted == 0, "after freeing half and refilling the holes, the other half is intact (%d corrupted)",
	      corrupted);
	for (int i = 0; i < N; i++)
		free(blocks[i]);
	check(1, "freed all %d blocks", N);
}

/* libc hands out memory from malloc that callers release with free (or
 * with a libc function that frees internally): all of it must go through
 * the preload's free without trouble. */
static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

static void libc_allocations(void)
{
	char *s = strdup("hello");
	check(s && strcmp(s, "hello") == 0, "strdup");
	free(s);
	s = strndup("hello world", 5);
	check(s && strcmp(s, "hello") == 0, "strndup");
	free(s);
	s = NULL;
	int n = asprintf(&s, "%s-%d-%0500d", "x", 42, 7);
	check(n == 505 && s && s[504] == '7', "asprintf of %d bytes", n);
	free(s);

	FILE *f = tmpfile();
	check(f != NULL, "tmpfile");
	if (f) {
		for (int i = 0; i < 1000; i++)
			fprintf(f, "line %d %0*d\n", i, i % 300, i);
		rewind(f);
		char *line = NULL;
		size_t cap = 0;
		int lines = 0;
		while (getline(&line, &cap, f) > 0)
			lines++;
		free(line);
		fclose(f);
		check(lines == 1000, "getline read %d lines, buffer grown with realloc, freed", lines);
	}

	char *mem = NULL;
	size_t memlen = 0;
	FILE *ms = open_memstream(&mem, &memlen);
	for (int i = 0; ms && i < 10000; i++)
		fprintf(ms, "%d,", i);
	if (ms)
		fclose(ms);
	check(mem && memlen > 40000, "open_memstream grows to %zu bytes", memlen);
	free(mem);

	char *rp = realpath("/proc/self/exe", NULL);
	check(rp != NULL, "realpath(path, NULL)");
	free(rp);
	char *cwd = getcwd(NULL, 0);
	check(cwd != NULL, "getcwd(NULL, 0)");
	free(cwd);

	struct dirent **names = NULL;
	int nd = scandir("/proc/self", &names, NULL, alphasort);
	for (int i = 0; i < nd; i++)
		free(names[i]);
	free(names);
	check(nd > 5, "scandir of /proc/self: %d entries freed", nd);
	DIR *d = opendir("/proc/self/fd");
	int ents = 0;
	while (d && readdir(d))
		ents++;
	if (d)
		closedir(d);
	check(ents > 2, "opendir/readdir/closedir");

	glob_t g;
	int grc = glob("/proc/self/*", 0, NULL, &g);
	check(grc == 0 && g.gl_pathc > 5, "glob: %zu paths", grc == 0 ? g.gl_pathc : 0);
	if (grc == 0)
		globfree(&g);

	regex_t re;
	int rrc = regcomp(&re, "^(a|b)+[0-9]{2,5}$", REG_EXTENDED);
	check(rrc == 0 && regexec(&re, "abba123", 0, NULL, 0) == 0, "regcomp/regexec");
	if (rrc == 0)
		regfree(&re);

	struct addrinfo hints = { 0 }, *res = NULL;
	hints.ai_flags = AI_NUMERICHOST;
	int arc = getaddrinfo("127.0.0.1", "80", &hints, &res);
	check(arc == 0 && res, "getaddrinfo (numeric)");
	if (res)
		freeaddrinfo(res);

	iconv_t cd = iconv_open("UTF-16LE", "UTF-8");
	check(cd != (iconv_t)-1, "iconv_open");
	if (cd != (iconv_t)-1)
		iconv_close(cd);

	locale_t loc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
	check(loc != (locale_t)0, "newlocale");
	if (loc)
		freelocale(loc);

	void *frames[16];
	int nf = backtrace(frames, 16);
	char **syms = backtrace_symbols(frames, nf);
	check(nf > 0 && syms != NULL, "backtrace_symbols: %d frames", nf);
	free(syms);

	enum { NQ = 200000 };
	int *arr = malloc(NQ * sizeof(int));
	for (int i = 0; i < NQ; i++)
		arr[i] = (i * 7919) % NQ;
	qsort(arr, NQ, sizeof(int), cmp_int); /* large: glibc's qsort mallocs a buffer */
	int sorted = 1;
	for (int i = 1; i < NQ; i++)
		sorted &= arr[i - 1] <= arr[i];
	check(sorted, "qsort of %d ints", NQ);
	free(arr);

	void *root = NULL;
	static int keys[1000];
	for (int i = 0; i < 1000; i++) {
		keys[i] = i;
		tsearch(&keys[i], &root, cmp_int);
	}
	for (int i = 0; i < 1000; i++)
		tdelete(&keys[i], &root, cmp_int);
	check(root == NULL, "tsearch/tdelete of 1000 nodes");

	f = fopen("/proc/self/status", "r");
	char buf[256];
	int got = f && fgets(buf, sizeof(buf), f) != NULL;
	if (f)
		fclose(f);
	check(got, "fopen/fgets/fclose");
	setvbuf(stdout, NULL, _IOLBF, 0);
}

int main(void)
{
	preloaded = dlsym(RTLD_DEFAULT, "mwrap_preload_api") != NULL;
	glibc_heap = dlsym(RTLD_DEFAULT, "mallctl") == NULL && dlsym(RTLD_DEFAULT, "tc_malloc") == NULL;
	printf("# alloc_contract: mwrap preload %s, allocator underneath: %s, glibc %s\n",
	       preloaded ? "loaded" : "not loaded", glibc_heap ? "glibc" : "other", gnu_get_libc_version());
	overflowing_sizes();
	posix_memalign_cases();
	memalign_cases();
	aligned_alloc_cases();
	page_cases();
	malloc_zero_and_free_null();
	realloc_cases();
	usable_bytes_cases();
	libc_allocations();
	printf("# %d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
