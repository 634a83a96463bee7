//! A stand-in for `libmwrap_preload.so` with canned data, used to test the
//! Ruby extension's side of the ABI exactly. It exports `mwrap_preload_api`
//! and nothing else; it hooks no allocator. Being written against the
//! `mwrap-abi` types themselves, it cannot drift from the real layout.
//!
//! `FAKE_MWRAP_ABI_VERSION` / `FAKE_MWRAP_STRUCT_SIZE` override the header
//! to simulate a stale preload; `FAKE_MWRAP_NO_HEAP` reports no heap page.
//! At exit it reports on stderr how the extension used it (quiet depth
//! balance, calls made outside a quiet section, ...).

#![allow(clippy::missing_safety_doc)]

use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use mwrap_abi::*;

/// Canned locations, by id (1-based), with their printed names.
struct Canned {
    sites: Vec<SiteSnapshot>,
    names: Vec<&'static [u8]>,
}

fn snap(
    id: u32,
    total: u64,
    allocations: u64,
    frees: u64,
    age_total: u64,
    max_lifespan: u64,
    freed_bytes: u64,
) -> SiteSnapshot {
    SiteSnapshot {
        id,
        _reserved: 0,
        total,
        allocations,
        frees,
        freed_bytes,
        age_total,
        max_lifespan,
        live_count: allocations - frees,
        live_bytes: total - freed_bytes,
    }
}

fn canned() -> Canned {
    Canned {
        sites: vec![
            snap(1, 300, 3, 1, 5, 4, 101),
            snap(2, 1000, 1, 0, 0, 0, 0),
            snap(3, 50, 5, 5, 10, 3, 50),
            snap(4, 300, 2, 2, 2, 1, 300),
            snap(5, 0, 0, 0, 0, 0, 0),
            snap(6, 5, 1, 0, 0, 0, 0),
        ],
        names: vec![
            b"/app/a.rb:10",
            b"/app/b.rb:20",
            b"/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]",
            b"[0xdead]",
            b"/app/zero.rb:1",
            b"/app/\xff.rb:1",
        ],
    }
}

static STATE: Mutex<Option<Canned>> = Mutex::new(None);
static QUIET_DEPTH: AtomicU32 = AtomicU32::new(0);
static MAX_DEPTH: AtomicU32 = AtomicU32::new(0);
static UNQUIET_CALLS: AtomicU32 = AtomicU32::new(0);
static ATTACH_CALLS: AtomicU32 = AtomicU32::new(0);
static RESET_CALLS: AtomicU32 = AtomicU32::new(0);
static RESET: AtomicBool = AtomicBool::new(false);

fn with_state<R>(f: impl FnOnce(&mut Canned) -> R) -> R {
    let mut guard = STATE.lock().unwrap();
    f(guard.get_or_insert_with(canned))
}

fn check_quiet() {
    if QUIET_DEPTH.load(Ordering::SeqCst) == 0 {
        UNQUIET_CALLS.fetch_add(1, Ordering::SeqCst);
    }
}

fn key_of(name: &'static [u8]) -> LocationKey {
    let mut key = LocationKey::default();
    if name.contains(&b'[') {
        key.kind = LOCATION_NATIVE;
    } else {
        key.kind = LOCATION_RUBY;
        let colon = name.iter().rposition(|&b| b == b':').unwrap();
        key.file = name.as_ptr();
        key.file_len = colon;
        key.line = std::str::from_utf8(&name[colon + 1..])
            .unwrap()
            .parse()
            .unwrap();
    }
    key
}

/// The rows `filter` selects in the ABI's order (total descending, then
/// name bytewise).
fn selected(filter: &SiteFilter) -> Vec<SiteRow> {
    with_state(|c| {
        let mut rows: Vec<SiteRow> = c
            .sites
            .iter()
            .zip(&c.names)
            .filter(|(s, _)| {
                s.total > filter.min_total
                    && (filter.use_min_live == 0 || s.live_bytes > filter.min_live_bytes)
            })
            .map(|(s, name)| SiteRow {
                snapshot: *s,
                key: key_of(name),
                name: name.as_ptr(),
                name_len: name.len(),
            })
            .collect();
        rows.sort_by(|a, b| {
            // SAFETY: canned names are 'static.
            let (na, nb) = unsafe {
                (
                    core::slice::from_raw_parts(a.name, a.name_len),
                    core::slice::from_raw_parts(b.name, b.name_len),
                )
            };
            b.snapshot.total.cmp(&a.snapshot.total).then(na.cmp(nb))
        });
        rows
    })
}

unsafe extern "C" fn sites(filter: *const SiteFilter, sink: SiteRowSink, ctx: *mut c_void) -> i32 {
    check_quiet();
    let rows = selected(&*filter);
    // several batches, as the real one may send
    for chunk in rows.chunks(2) {
        sink(ctx, chunk.as_ptr(), chunk.len());
    }
    STATUS_OK
}

unsafe extern "C" fn site(id: u32, sink: SiteRowSink, ctx: *mut c_void) -> i32 {
    check_quiet();
    let row = with_state(|c| {
        let i = (id as usize).checked_sub(1)?;
        let s = *c.sites.get(i)?;
        let name = c.names[i];
        Some(SiteRow {
            snapshot: s,
            key: key_of(name),
            name: name.as_ptr(),
            name_len: name.len(),
        })
    });
    match row {
        Some(row) => {
            sink(ctx, &row, 1);
            STATUS_OK
        }
        None => STATUS_UNKNOWN,
    }
}

unsafe extern "C" fn site_snapshot(id: u32, out: *mut SiteSnapshot) -> bool {
    match with_state(|c| c.sites.get((id as usize).wrapping_sub(1)).copied()) {
        Some(s) => {
            out.write(s);
            true
        }
        None => false,
    }
}

unsafe extern "C" fn site_lookup(name: *const u8, len: usize) -> u32 {
    let name = core::slice::from_raw_parts(name, len);
    with_state(|c| {
        c.names
            .iter()
            .position(|n| *n == name)
            .map_or(UNTRACKED_SITE, |i| i as u32 + 1)
    })
}

/// Site 1 (/app/a.rb:10) has two live allocations, sent in two batches.
static LIVE_A: [LiveAllocationInfo; 2] = [
    LiveAllocationInfo {
        size: 100,
        generation: 7,
    },
    LiveAllocationInfo {
        size: 99,
        generation: 8,
    },
];

unsafe extern "C" fn site_live(id: u32, sink: LiveSink, ctx: *mut c_void) -> i32 {
    check_quiet();
    if id == 0 || id as usize > with_state(|c| c.sites.len()) {
        return STATUS_UNKNOWN;
    }
    if id == 1 {
        sink(ctx, LIVE_A.as_ptr(), 1);
        sink(ctx, LIVE_A.as_ptr().add(1), 1);
    } else {
        sink(ctx, core::ptr::null(), 0);
    }
    STATUS_OK
}

unsafe extern "C" fn reset() {
    RESET_CALLS.fetch_add(1, Ordering::SeqCst);
    RESET.store(true, Ordering::SeqCst);
    with_state(|c| {
        for s in &mut c.sites {
            *s = SiteSnapshot {
                id: s.id,
                ..Default::default()
            };
        }
    });
}

/// Bytes of a location `sites` never lists (as if it were being created).
const UNLISTED_TOTAL: u64 = 77;

unsafe extern "C" fn totals(out: *mut Totals) {
    let listed: u64 = with_state(|c| c.sites.iter().map(|s| s.total).sum());
    let allocated = if RESET.load(Ordering::SeqCst) {
        listed
    } else {
        listed + UNLISTED_TOTAL
    };
    let freed = if RESET.load(Ordering::SeqCst) { 0 } else { 123 };
    out.write(Totals { allocated, freed });
}

unsafe extern "C" fn quiet_enter() -> u32 {
    let depth = QUIET_DEPTH.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_DEPTH.fetch_max(depth, Ordering::SeqCst);
    depth
}

unsafe extern "C" fn quiet_exit() -> u32 {
    QUIET_DEPTH.fetch_sub(1, Ordering::SeqCst) - 1
}

unsafe extern "C" fn current_generation() -> u64 {
    42
}

unsafe extern "C" fn attach_ruby() {
    ATTACH_CALLS.fetch_add(1, Ordering::SeqCst);
}

/// Three pages, sent out of address order.
static PAGES: [HeapPageInfo; 3] = [
    HeapPageInfo {
        address: 0x7f00_0003_0000,
        generation: 5,
    },
    HeapPageInfo {
        address: 0x7f00_0001_0000,
        generation: 1,
    },
    HeapPageInfo {
        address: 0x7f00_0002_0000,
        generation: 3,
    },
];

fn no_heap() -> bool {
    std::env::var_os("FAKE_MWRAP_NO_HEAP").is_some()
}

unsafe extern "C" fn heap_pages(sink: HeapPageSink, ctx: *mut c_void) -> i32 {
    check_quiet();
    if no_heap() {
        sink(ctx, core::ptr::null(), 0);
    } else {
        sink(ctx, PAGES.as_ptr(), 2);
        sink(ctx, PAGES.as_ptr().add(2), 1);
    }
    STATUS_OK
}

unsafe extern "C" fn heap_stats(out: *mut HeapPageStats) {
    let empty = SpanStats {
        mean: f64::NAN,
        stddev: f64::NAN,
        ..Default::default()
    };
    let stats = if no_heap() {
        HeapPageStats {
            live_pages: 0,
            lifespan: empty,
            deathspan: empty,
            resurrects: 0,
        }
    } else {
        HeapPageStats {
            live_pages: 3,
            lifespan: SpanStats {
                count: 4,
                min: 2,
                max: 9,
                mean: 5.5,
                stddev: 2.5,
            },
            deathspan: SpanStats {
                count: 1,
                min: 6,
                max: 6,
                mean: 6.0,
                stddev: 0.0,
            },
            resurrects: 1,
        }
    };
    out.write(stats);
}

unsafe extern "C" fn heap_page_size() -> u64 {
    65536
}

unsafe extern "C" fn render(format: u32, min: u64, sink: BytesSink, ctx: *mut c_void) -> i32 {
    check_quiet();
    if format != RENDER_TEXT {
        return STATUS_UNKNOWN;
    }
    let filter = SiteFilter {
        min_total: min,
        ..Default::default()
    };
    for row in selected(&filter) {
        let name = core::slice::from_raw_parts(row.name, row.name_len);
        let mut line = format!(
            "{:>16} {:>12} ",
            row.snapshot.total, row.snapshot.allocations
        )
        .into_bytes();
        line.extend_from_slice(name);
        line.push(b'\n');
        // one line per call, as small pieces may come
        sink(ctx, line.as_ptr(), line.len());
    }
    STATUS_OK
}

/// Canned stacks: location 1 (`/app/a.rb:10`, total 300) was charged 200
/// bytes with one stack, 90 with another and 10 without one.
struct CannedStack {
    snapshot: SiteSnapshot,
    location: u32,
    ruby: &'static [&'static [u8]],
    native: &'static [&'static [u8]],
}

fn canned_stacks() -> Vec<CannedStack> {
    vec![
        CannedStack {
            snapshot: snap(11, 200, 2, 1, 3, 3, 100),
            location: 1,
            ruby: &[b"/app/a.rb:10", b"/app/main.rb:3"],
            native: &[
                b"/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]",
                b"[0xbeef]",
            ],
        },
        CannedStack {
            snapshot: snap(12, 90, 1, 0, 0, 0, 0),
            location: 1,
            ruby: &[b"/app/a.rb:10", b"/app/\xff.rb:7"],
            native: &[],
        },
        CannedStack {
            snapshot: snap(1, 10, 0, 0, 0, 0, 0),
            location: 1,
            ruby: &[],
            native: &[],
        },
    ]
}

unsafe extern "C" fn stacks(
    filter: *const SiteFilter,
    location: u32,
    sink: StackRowSink,
    ctx: *mut c_void,
) -> i32 {
    check_quiet();
    let filter = filter.as_ref().copied().unwrap_or_default();
    let names = with_state(|c| c.names.clone());
    let mut texts = Vec::new();
    let mut rows = Vec::new();
    let canned = canned_stacks();
    for st in &canned {
        if st.snapshot.total <= filter.min_total || (location != 0 && location != st.location) {
            continue;
        }
        let mut text = Vec::new();
        for f in st.ruby.iter().chain(st.native) {
            text.extend_from_slice(f);
            text.push(b'\n');
        }
        texts.push(text);
        let name = names[st.location as usize - 1];
        rows.push(StackRow {
            snapshot: st.snapshot,
            location: st.location,
            ruby_frames: st.ruby.len() as u32,
            native_frames: st.native.len() as u32,
            _reserved: 0,
            key: key_of(name),
            name: name.as_ptr(),
            name_len: name.len(),
            frames: core::ptr::null(),
            frames_len: 0,
        });
    }
    for (row, text) in rows.iter_mut().zip(&texts) {
        row.frames = text.as_ptr();
        row.frames_len = text.len();
    }
    // one row per call, as batches may come in any size
    for row in &rows {
        sink(ctx, row, 1);
    }
    STATUS_OK
}

unsafe extern "C" fn recording(out: *mut Recording) {
    out.write(Recording { bt: 16, ruby_bt: 8 });
}

static APP_ROOT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

unsafe extern "C" fn set_app_root(
    dir: *const u8,
    len: usize,
    sink: BytesSink,
    ctx: *mut c_void,
) -> i32 {
    let dir = if len == 0 {
        &[][..]
    } else {
        core::slice::from_raw_parts(dir, len)
    };
    if dir == b"/nonexistent" {
        let msg = b"No such file or directory";
        sink(ctx, msg.as_ptr(), msg.len());
        return STATUS_INVALID;
    }
    *APP_ROOT.lock().unwrap() = dir.to_vec();
    STATUS_OK
}

unsafe extern "C" fn app_root(sink: BytesSink, ctx: *mut c_void) {
    let root = APP_ROOT.lock().unwrap().clone();
    if !root.is_empty() {
        sink(ctx, root.as_ptr(), root.len());
    }
}

/// The fake cannot copy itself: every scan fails as a failed fork would.
unsafe extern "C" fn leak_scan_begin(_scan: *mut LeakScan) -> i32 {
    38 // ENOSYS
}

unsafe extern "C" fn leak_scan_finish(
    _scan: *const LeakScan,
    _location: u32,
    _summary: *mut LeakSummary,
    _sink: LeakRowSink,
    _ctx: *mut c_void,
) -> i32 {
    STATUS_SCAN_FAILED
}

/// The fake knows no threads: the extension falls back to what smaps shows.
unsafe extern "C" fn thread_stacks(_out: *mut u64, _cap: usize) -> usize {
    0
}

/// The fake renders one fixed page, echoing what it was asked.
unsafe extern "C" fn render_page(
    request: *const PageRequest,
    head: PageHeadSink,
    body: BytesSink,
    ctx: *mut c_void,
) -> i32 {
    let r = &*request;
    let part = |p: *const u8, n: usize| {
        String::from_utf8_lossy(core::slice::from_raw_parts(p, n)).into_owned()
    };
    let text = format!(
        "fake page: {} {} ? {} under {}\n",
        part(r.method, r.method_len),
        part(r.path, r.path_len),
        part(r.query, r.query_len),
        part(r.base, r.base_len)
    );
    let ct = b"text/plain; charset=utf-8";
    let headers = b"x-fake: 1\n";
    head(
        ctx,
        200,
        ct.as_ptr(),
        ct.len(),
        headers.as_ptr(),
        headers.len(),
    );
    body(ctx, text.as_ptr(), text.len());
    STATUS_OK
}

/// Not a real profile: the fake has no stacks to make one of. The bytes
/// are gzip's magic, so a caller can tell it got them.
unsafe extern "C" fn render_pprof(sink: BytesSink, ctx: *mut c_void) -> i32 {
    const BYTES: [u8; 2] = [0x1f, 0x8b];
    // SAFETY: per the ABI.
    unsafe { sink(ctx, BYTES.as_ptr(), BYTES.len()) };
    STATUS_OK
}

/// The fake's locations made no temporary allocation.
unsafe extern "C" fn site_temporary(_id: u32) -> u64 {
    0
}

static mut API: PreloadApi = PreloadApi {
    abi_version: ABI_VERSION,
    struct_size: core::mem::size_of::<PreloadApi>() as u32,
    sites,
    site,
    site_snapshot,
    site_lookup,
    site_live,
    reset,
    totals,
    quiet_enter,
    quiet_exit,
    current_generation,
    attach_ruby,
    heap_pages,
    heap_stats,
    heap_page_size,
    render,
    stacks,
    recording,
    set_app_root,
    app_root,
    leak_scan_begin,
    leak_scan_finish,
    thread_stacks,
    render_page,
    render_pprof,
    site_temporary,
};

#[no_mangle]
pub extern "C" fn mwrap_preload_api() -> *const PreloadApi {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    // SAFETY: the extension calls this once, before any other thread asks.
    unsafe {
        let api = &raw mut API;
        if let Some(v) = env("FAKE_MWRAP_ABI_VERSION") {
            (*api).abi_version = v;
        }
        if let Some(s) = env("FAKE_MWRAP_STRUCT_SIZE") {
            (*api).struct_size = s;
        }
        api
    }
}

extern "C" fn report() {
    eprintln!(
        "fake-preload: quiet_depth={} max_depth={} unquiet_calls={} attach_calls={} reset_calls={}",
        QUIET_DEPTH.load(Ordering::SeqCst),
        MAX_DEPTH.load(Ordering::SeqCst),
        UNQUIET_CALLS.load(Ordering::SeqCst),
        ATTACH_CALLS.load(Ordering::SeqCst),
        RESET_CALLS.load(Ordering::SeqCst)
    );
}

#[used]
#[link_section = ".fini_array"]
static REPORT_AT_EXIT: extern "C" fn() = report;
