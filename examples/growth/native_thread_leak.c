/*
 * A leak made outside Ruby: mwrap_growth_leak() starts a native thread
 * that mallocs `count` blocks of `size` bytes and keeps them forever (in a
 * list no one frees), then joins it. Called through Fiddle by
 * native_thread_leak.rb; the growth check names the malloc call below by
 * its native address ("libmwrap_growth_native_leak.so(mwrap_growth_leak_thread+0x…) [0x…]").
 *
 *   gcc -shared -fPIC -O1 -pthread -o libmwrap_growth_native_leak.so native_thread_leak.c
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct job {
	size_t count;
	size_t size;
};

static void *kept; /* leaked blocks, each pointing at the previous one */

void *mwrap_growth_leak_thread(void *arg)
{
	struct job *job = arg;

	for (size_t i = 0; i < job->count; i++) {
		void **block = malloc(job->size);

		if (!block)
			return NULL;
		memset(block, 0xab, job->size);
		*block = kept;
		kept = block;
	}
	return NULL;
}

int mwrap_growth_leak(size_t count, size_t size)
{
	struct job job = { count, size < sizeof(void *) ? sizeof(void *) : size };
	pthread_t thread;
	int err = pthread_create(&thread, NULL, mwrap_growth_leak_thread, &job);

	if (err)
		return err;
	return pthread_join(thread, NULL);
}
