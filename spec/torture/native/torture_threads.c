/* Native threads for the torture suite, loaded with Fiddle.
 *
 * torture_start(n, seed) starts n pthreads (they never hold Ruby's GVL)
 * that allocate, resize and free blocks of random sizes with malloc,
 * calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign
 * and free until torture_stop(); torture_join() joins them and returns the
 * number of operations. Every block is filled with a per-block byte and
 * checked before it is resized or freed (and calloc'd blocks are checked
 * to be zero); torture_errors() counts mismatches. When a thread stops it
 * frees every block it still holds, so at the sites of this library
 * allocations - frees == 0 once joined. torture_wait_busy(ms) waits until
 * every thread has made its first 256 operations (0), or ms have passed
 * (ETIMEDOUT): a handshake for scripts that must act while they allocate.
 *
 * torture_dlopen_start(path) starts a thread that dlopens `path`, calls its
 * `churn_alloc(size)` (which mallocs), frees the block and dlcloses it, in
 * a loop until torture_dlopen_stop(), which joins it and returns the
 * number of rounds (negative if dlopen failed).
 *
 * torture_keep(n, size) allocates n blocks of `size` bytes on a thread of
 * its own, from one call site, and keeps them until torture_release_kept().
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64
#define SLOTS 512

struct slot {
	unsigned char *p;
	size_t n;
	unsigned char tag;
};

struct worker {
	pthread_t thread;
	uint64_t seed;
	unsigned long ops;
	unsigned long errors;
	struct slot slots[SLOTS];
};

static struct worker workers[MAX_THREADS];
static int nworkers;
static volatile int stop_flag;
static volatile int running;
/* Threads that made their first round of operations (torture_wait_busy). */
static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t busy_cond = PTHREAD_COND_INITIALIZER;
static int busy_workers;

static uint64_t next_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Mostly small, some medium, a few large enough for mmap. */
static size_t rand_size(uint64_t *s)
{
	uint64_t r = next_rand(s);
	switch (r % 32) {
	case 0:
		return 0;
	case 1:
		return 128 * 1024 + (r >> 8) % (512 * 1024);
	case 2: case 3: case 4:
		return 4096 + (r >> 8) % 65536;
	default:
		return 1 + (r >> 8) % 1024;
	}
}

static int check(const struct slot *sl)
{
	for (size_t i = 0; i < sl->n; i++)
		if (sl->p[i] != sl->tag)
			return 1;
	return 0;
}

static void fill(struct slot *sl)
{
	memset(sl->p, sl->tag, sl->n);
}

static size_t rand_align(uint64_t *s)
{
	static const size_t aligns[] = { 8, 16, 32, 64, 128, 256, 4096, 8192 };
	return aligns[next_rand(s) % (sizeof(aligns) / sizeof(aligns[0]))];
}

static void allocate(struct worker *w, struct slot *sl)
{
	size_t n = rand_size(&w->seed);
	void *p = NULL;
	int zeroed = 0;
	switch (next_rand(&w->seed) % 8) {
	case 0:
	case 1:
		p = malloc(n);
		break;
	case 2:
		p = calloc(1 + n / 8, 8);
		n = (1 + n / 8) * 8;
		zeroed = 1;
		break;
	case 3:
		p = realloc(NULL, n);
		break;
	case 4:
		if (posix_memalign(&p, rand_align(&w->seed), n) != 0)
			p = NULL;
		break;
	case 5: {
		size_t a = rand_align(&w->seed);
		p = aligned_alloc(a, (n + a - 1) / a * a);
		n = (n + a - 1) / a * a;
		break;
	}
	case 6:
		p = memalign(rand_align(&w->seed), n);
		break;
	default:
		p = reallocarray(NULL, 1 + n / 4, 4);
		n = (1 + n / 4) * 4;
		break;
	}
	if (!p) {
		if (n != 0)
			w->errors++;
		sl->p = NULL;
		return;
	}
	sl->p = p;
	sl->n = n;
	if (zeroed) {
		sl->tag = 0;
		if (check(sl))
			w->errors++;
	}
	sl->tag = (unsigned char)(next_rand(&w->seed) | 1);
	fill(sl);
	if (malloc_usable_size(p) < n)
		w->errors++;
}

static void resize(struct worker *w, struct slot *sl)
{
	size_t n = rand_size(&w->seed);
	if (n == 0)
		n = 1; /* realloc(p, 0) frees: keep it for the free path */
	void *p = (next_rand(&w->seed) & 1) ? realloc(sl->p, n) : reallocarray(sl->p, n, 1);
	if (!p) {
		w->errors++;
		return;
	}
	size_t keep = sl->n < n ? sl->n : n;
	sl->p = p;
	sl->n = keep;
	if (check(sl))
		w->errors++;
	sl->n = n;
	fill(sl);
}

static void release(struct worker *w, struct slot *sl)
{
	if (next_rand(&w->seed) % 8 == 0) {
		if (realloc(sl->p, 0) != NULL)
			w->errors++;
	} else {
		free(sl->p);
	}
	sl->p = NULL;
}

static void announce_busy(void)
{
	pthread_mutex_lock(&busy_lock);
	busy_workers++;
	pthread_cond_broadcast(&busy_cond);
	pthread_mutex_unlock(&busy_lock);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	int announced = 0;
	while (!stop_flag) {
		for (int k = 0; k < 256; k++) {
			struct slot *sl = &w->slots[next_rand(&w->seed) % SLOTS];
			if (!sl->p) {
				allocate(w, sl);
			} else {
				if (check(sl))
					w->errors++;
				if (next_rand(&w->seed) % 3 == 0)
					resize(w, sl);
				else
					release(w, sl);
			}
			w->ops++;
		}
		free(NULL);
		if (!announced) {
			announced = 1;
			announce_busy();
		}
	}
	for (int i = 0; i < SLOTS; i++) {
		struct slot *sl = &w->slots[i];
		if (sl->p) {
			if (check(sl))
				w->errors++;
			free(sl->p);
			sl->p = NULL;
		}
	}
	return NULL;
}

int torture_start(int n, int seed)
{
	if (running || n < 1 || n > MAX_THREADS)
		return EINVAL;
	stop_flag = 0;
	nworkers = 0;
	pthread_mutex_lock(&busy_lock);
	busy_workers = 0;
	pthread_mutex_unlock(&busy_lock);
	for (int i = 0; i < n; i++) {
		struct worker *w = &workers[i];
		memset(w, 0, sizeof(*w));
		w->seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(seed + i + 1);
		int rc = pthread_create(&w->thread, NULL, work, w);
		if (rc) {
			stop_flag = 1;
			for (int j = 0; j < i; j++)
				pthread_join(workers[j].thread, NULL);
			return rc;
		}
		nworkers++;
	}
	running = 1;
	return 0;
}

int torture_wait_busy(int timeout_ms)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	int rc = 0;
	pthread_mutex_lock(&busy_lock);
	while (busy_workers < nworkers && rc == 0)
		rc = pthread_cond_timedwait(&busy_cond, &busy_lock, &until);
	int busy = busy_workers >= nworkers;
	pthread_mutex_unlock(&busy_lock);
	return busy ? 0 : ETIMEDOUT;
}

void torture_stop(void)
{
	stop_flag = 1;
}

int torture_running(void)
{
	return running;
}

long torture_join(void)
{
	long ops = 0;
	stop_flag = 1;
	for (int i = 0; i < nworkers; i++) {
		pthread_join(workers[i].thread, NULL);
		ops += (long)workers[i].ops;
	}
	nworkers = 0;
	running = 0;
	return ops;
}

long torture_errors(void)
{
	long errors = 0;
	for (int i = 0; i < MAX_THREADS; i++)
		errors += (long)workers[i].errors;
	return errors;
}

/* torture_keep */
static void **kept;
static int nkept;
static size_t kept_size;

/* Not static: dladdr names the call site torture_keep_thread+0x... */
void *torture_keep_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < nkept; i++) {
		kept[i] = malloc(kept_size);
		if (kept[i])
			memset(kept[i], 0x5a, kept_size);
	}
	return NULL;
}

void *torture_release_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < nkept; i++)
		free(kept[i]);
	return NULL;
}

static int on_thread(void *(*fn)(void *))
{
	pthread_t t;
	int rc = pthread_create(&t, NULL, fn, NULL);
	if (rc)
		return rc;
	return pthread_join(t, NULL);
}

int torture_keep(int n, size_t size)
{
	static void *storage[1 << 16];
	if (nkept || n < 0 || n > (int)(sizeof(storage) / sizeof(storage[0])))
		return EINVAL;
	kept = storage;
	nkept = n;
	kept_size = size;
	int rc = on_thread(torture_keep_thread);
	for (int i = 0; i < n; i++)
		if (!kept[i])
			return ENOMEM;
	return rc;
}

int torture_release_kept(void)
{
	int rc = on_thread(torture_release_thread);
	nkept = 0;
	return rc;
}

/* torture_dlopen_start */
static pthread_t dl_thread;
static volatile int dl_stop;
static long dl_rounds;
static char dl_path[4096];

static void *dl_loop(void *arg)
{
	(void)arg;
	while (!dl_stop) {
		void *h = dlopen(dl_path, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			dl_rounds = -1;
			return NULL;
		}
		void *(*fn)(size_t) = (void *(*)(size_t))dlsym(h, "churn_alloc");
		if (fn)
			free(fn(100 + (size_t)(dl_rounds % 1000)));
		dlclose(h);
		dl_rounds++;
	}
	return NULL;
}

int torture_dlopen_start(const char *path)
{
	if (strlen(path) >= sizeof(dl_path))
		return ENAMETOOLONG;
	strcpy(dl_path, path);
	dl_stop = 0;
	dl_rounds = 0;
	return pthread_create(&dl_thread, NULL, dl_loop, NULL);
}

long torture_dlopen_stop(void)
{
	dl_stop = 1;
	pthread_join(dl_thread, NULL);
	return dl_rounds;
}
