/*
 * A stand-in for libmwrap_preload.so with canned data, used to test the
 * Ruby extension's side of the ABI (ext/mwrap-core/src/abi.rs) exactly.
 * It exports mwrap_preload_api and nothing else; it hooks no allocator.
 *
 * FAKE_MWRAP_ABI_VERSION / FAKE_MWRAP_STRUCT_SIZE override the header to
 * simulate a stale preload; FAKE_MWRAP_NO_HEAP reports no heap page. At exit it reports on stderr how the extension
 * used it (quiet depth balance, calls made outside a quiet section, ...).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct site_snapshot {
	uint32_t id, reserved;
	uint64_t total, allocations, frees, freed_bytes, age_total,
		max_lifespan, live_count, live_bytes;
};
struct live_info { uint64_t size, generation; };
struct heap_page_info { uint64_t address, generation; };
struct span_stats { uint64_t count, min, max; double mean, stddev; };
struct heap_page_stats {
	uint64_t live_pages;
	struct span_stats lifespan, deathspan;
	uint64_t resurrects;
};

typedef void (*snapshot_sink)(void *, const struct site_snapshot *, size_t);
typedef void (*live_sink)(void *, const struct live_info *, size_t);
typedef void (*heap_page_sink)(void *, const struct heap_page_info *, size_t);
typedef void (*bytes_sink)(void *, const uint8_t *, size_t);

struct preload_api {
	uint32_t abi_version, struct_size;
	void (*snapshot_sites)(uint64_t, snapshot_sink, void *);
	bool (*site_snapshot)(uint32_t, struct site_snapshot *);
	bool (*site_name)(uint32_t, bytes_sink, void *);
	uint32_t (*site_lookup)(const uint8_t *, size_t);
	bool (*site_live)(uint32_t, live_sink, void *);
	void (*reset)(void);
	uint64_t (*total_bytes_allocated)(void);
	uint64_t (*total_bytes_freed)(void);
	uint32_t (*quiet_enter)(void);
	uint32_t (*quiet_exit)(void);
	uint64_t (*current_generation)(void);
	void (*attach_ruby)(void);
	/* ABI 2 */
	void (*heap_pages)(heap_page_sink, void *);
	void (*heap_stats)(struct heap_page_stats *);
	uint64_t (*heap_page_size)(void);
};

#define NSITES 7
static struct site_snapshot sites[NSITES] = {
	{ .id = 1, .total = 300, .allocations = 3, .frees = 1, .age_total = 5, .max_lifespan = 4,
	  .freed_bytes = 101, .live_count = 2, .live_bytes = 199 },
	{ .id = 2, .total = 1000, .allocations = 1, .live_count = 1, .live_bytes = 1000 },
	{ .id = 3, .total = 50, .allocations = 5, .frees = 5, .age_total = 10, .max_lifespan = 3 },
	{ .id = 4, .total = 300, .allocations = 2, .frees = 2, .age_total = 2, .max_lifespan = 1 },
	{ .id = 5, .total = 77, .allocations = 7 }, /* name unknown */
	{ .id = 6, .total = 0 },
	{ .id = 7, .total = 5, .allocations = 1, .live_count = 1, .live_bytes = 5 },
};
static const char *names[NSITES] = {
	"/app/a.rb:10",
	"/app/b.rb:20",
	"/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]",
	"[0xdead]",
	NULL,
	"/app/zero.rb:1",
	"/app/\xff.rb:1",
};

static unsigned quiet_depth, max_depth, unquiet_calls, attach_calls, reset_calls;

static void check_quiet(void) { if (quiet_depth == 0) unquiet_calls++; }

static void snapshot_sites(uint64_t min, snapshot_sink sink, void *ctx)
{
	struct site_snapshot batch[NSITES];
	size_t n = 0;

	check_quiet();
	for (size_t i = 0; i < NSITES; i++) {
		if (sites[i].total > min)
			batch[n++] = sites[i];
		if (n == 2) { /* several batches, like the real one may send */
			sink(ctx, batch, n);
			n = 0;
		}
	}
	sink(ctx, batch, n);
}

static bool site_snapshot(uint32_t id, struct site_snapshot *out)
{
	if (id == 0 || id > NSITES) return false;
	*out = sites[id - 1];
	return true;
}

static bool site_name(uint32_t id, bytes_sink sink, void *ctx)
{
	check_quiet();
	if (id == 0 || id > NSITES || !names[id - 1]) return false;
	sink(ctx, (const uint8_t *)names[id - 1], strlen(names[id - 1]));
	return true;
}

static uint32_t site_lookup(const uint8_t *name, size_t len)
{
	for (size_t i = 0; i < NSITES; i++)
		if (names[i] && strlen(names[i]) == len && !memcmp(names[i], name, len))
			return sites[i].id;
	return 0;
}

/* Site 1 (/app/a.rb:10) has two live allocations, sent in two batches. */
static const struct live_info live_a[] = { { 100, 7 }, { 99, 8 } };

static bool site_live(uint32_t id, live_sink sink, void *ctx)
{
	check_quiet();
	if (id == 0 || id > NSITES) return false;
	if (id == 1) {
		sink(ctx, live_a, 1);
		sink(ctx, live_a + 1, 1);
	} else {
		sink(ctx, NULL, 0);
	}
	return true;
}

/* Three pages, sent out of address order; FAKE_MWRAP_NO_HEAP empties them. */
static const struct heap_page_info pages[] = {
	{ 0x7f0000030000, 5 }, { 0x7f0000010000, 1 }, { 0x7f0000020000, 3 },
};

static void heap_pages(heap_page_sink sink, void *ctx)
{
	check_quiet();
	if (getenv("FAKE_MWRAP_NO_HEAP")) {
		sink(ctx, NULL, 0);
		return;
	}
	sink(ctx, pages, 2);
	sink(ctx, pages + 2, 1);
}

static void heap_stats(struct heap_page_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->lifespan.mean = out->lifespan.stddev = 0.0 / 0.0;
	out->deathspan.mean = out->deathspan.stddev = 0.0 / 0.0;
	if (getenv("FAKE_MWRAP_NO_HEAP"))
		return;
	out->live_pages = 3;
	out->lifespan = (struct span_stats){ .count = 4, .min = 2, .max = 9, .mean = 5.5, .stddev = 2.5 };
	out->deathspan = (struct span_stats){ .count = 1, .min = 6, .max = 6, .mean = 6.0, .stddev = 0.0 };
	out->resurrects = 1;
}

static uint64_t heap_page_size(void) { return 65536; }

static void reset(void)
{
	reset_calls++;
	for (size_t i = 0; i < NSITES; i++) {
		uint32_t id = sites[i].id;
		memset(&sites[i], 0, sizeof(sites[i]));
		sites[i].id = id;
	}
}

static uint64_t total_bytes_allocated(void)
{
	uint64_t t = 0;
	for (size_t i = 0; i < NSITES; i++) t += sites[i].total;
	return t;
}

static uint64_t total_bytes_freed(void) { return reset_calls ? 0 : 123; }

static uint32_t quiet_enter(void)
{
	if (++quiet_depth > max_depth) max_depth = quiet_depth;
	return quiet_depth;
}

static uint32_t quiet_exit(void) { return --quiet_depth; }
static uint64_t current_generation(void) { return 42; }
static void attach_ruby(void) { attach_calls++; }

static struct preload_api api = {
	.abi_version = 1, /* overwritten from ABI_VERSION below */
	.struct_size = sizeof(struct preload_api),
	.snapshot_sites = snapshot_sites,
	.site_snapshot = site_snapshot,
	.site_name = site_name,
	.site_lookup = site_lookup,
	.site_live = site_live,
	.reset = reset,
	.total_bytes_allocated = total_bytes_allocated,
	.total_bytes_freed = total_bytes_freed,
	.quiet_enter = quiet_enter,
	.quiet_exit = quiet_exit,
	.current_generation = current_generation,
	.attach_ruby = attach_ruby,
	.heap_pages = heap_pages,
	.heap_stats = heap_stats,
	.heap_page_size = heap_page_size,
};

const struct preload_api *mwrap_preload_api(void)
{
	const char *v = getenv("FAKE_MWRAP_ABI_VERSION");
	const char *s = getenv("FAKE_MWRAP_STRUCT_SIZE");

	api.abi_version = v ? (uint32_t)strtoul(v, NULL, 10) : FAKE_ABI_VERSION;
	if (s) api.struct_size = (uint32_t)strtoul(s, NULL, 10);
	return &api;
}

__attribute__((destructor)) static void report(void)
{
	fprintf(stderr, "fake-preload: quiet_depth=%u max_depth=%u unquiet_calls=%u "
		"attach_calls=%u reset_calls=%u\n", quiet_depth, max_depth,
		unquiet_calls, attach_calls, reset_calls);
}
