//! The read side of the preload, exported to the Ruby extension as one
//! function table over the core read API. Every function copies what it
//! needs (under short locks, with the recursion guard held so that its own
//! allocations are untracked) and calls the extension's sink only after
//! releasing every lock.

use core::ffi::c_void;

use mwrap_core::abi::{
    BytesSink, HeapPageSink, HeapPageStats, LeakRow, LeakRowSink, LeakScan, LeakSummary, LiveSink,
    LocationKey, PageHeadSink, PageRequest, PreloadApi, Recording, SiteFilter, SiteRow,
    SiteRowSink, SiteSnapshot, StackRow, StackRowSink, Totals, ABI_VERSION, LOCATION_NATIVE,
    LOCATION_NO_MEMORY, LOCATION_OVERFLOW, LOCATION_RUBY, RENDER_FOLDED, RENDER_JSON, RENDER_TEXT,
    STATUS_INVALID, STATUS_NO_MEMORY, STATUS_OK, STATUS_SCAN_FAILED, STATUS_UNKNOWN,
    UNTRACKED_SITE,
};
use mwrap_core::lock::LockCx;
use mwrap_core::read::{self, SiteRows};
use mwrap_core::render::LineSink;
use mwrap_core::SiteKey;

use crate::names::Symbols;
use crate::per_thread::{self, lock_cx};
use crate::ruby;
use crate::state::{current_generation, CONFIG, HEAP, SITES, STACKS, THREADS};

pub static API: PreloadApi = PreloadApi {
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
    current_generation: api_current_generation,
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

/// Runs `f` with this thread's lock context and the recursion guard held;
/// `otherwise` when the thread has no record or is already inside the
/// profiler (a signal handler that interrupted it).
fn reading<R>(otherwise: R, f: impl FnOnce(&LockCx<'static>) -> R) -> R {
    per_thread::busy(|record, _| f(&lock_cx(record))).unwrap_or(otherwise)
}

/// The ABI's form of a key; `file` points into the table (valid for the
/// process's life).
fn location_key(key: SiteKey) -> LocationKey {
    let mut k = LocationKey::default();
    match key {
        SiteKey::Ruby { file, line } => {
            let name = SITES.files().get(file).unwrap_or(b"");
            k.kind = LOCATION_RUBY;
            k.line = line;
            k.file = name.as_ptr();
            k.file_len = name.len();
        }
        SiteKey::Native { address } => {
            k.kind = LOCATION_NATIVE;
            k.address = address as u64;
        }
        SiteKey::Overflow => k.kind = LOCATION_OVERFLOW,
        SiteKey::NoMemory => k.kind = LOCATION_NO_MEMORY,
        SiteKey::Unset | SiteKey::Stack { .. } => {}
    }
    k
}

/// Hands `rows` to `sink` in batches, with no lock held.
///
/// # Safety
/// `sink` and `ctx` are the caller's, per the ABI.
unsafe fn send_rows(rows: &SiteRows, sink: SiteRowSink, ctx: *mut c_void) -> i32 {
    const BATCH: usize = 256;
    let mut batch: Vec<SiteRow> = Vec::new();
    if batch.try_reserve(BATCH.min(rows.len())).is_err() {
        return STATUS_NO_MEMORY;
    }
    for chunk in rows.rows().chunks(BATCH) {
        batch.clear();
        batch.extend(chunk.iter().map(|r| {
            let name = rows.name(r);
            SiteRow {
                snapshot: r.snapshot,
                key: location_key(r.key),
                name: name.as_ptr(),
                name_len: name.len(),
            }
        }));
        // SAFETY: per the ABI; `batch` and the names it points to outlive the call.
        unsafe { sink(ctx, batch.as_ptr(), batch.len()) };
    }
    STATUS_OK
}

unsafe extern "C" fn sites(filter: *const SiteFilter, sink: SiteRowSink, ctx: *mut c_void) -> i32 {
    // SAFETY: the extension passes a valid filter or null.
    let filter = unsafe { filter.as_ref() }.copied().unwrap_or_default();
    let rows = reading(Err(()), |cx| {
        read::sites(&SITES, cx, &filter, &Symbols).map_err(|_| ())
    });
    match rows {
        // SAFETY: per the ABI.
        Ok(rows) => unsafe { send_rows(&rows, sink, ctx) },
        Err(()) => STATUS_NO_MEMORY,
    }
}

unsafe extern "C" fn site(id: u32, sink: SiteRowSink, ctx: *mut c_void) -> i32 {
    match reading(Err(()), |cx| {
        read::site(&SITES, cx, id, &Symbols).map_err(|_| ())
    }) {
        // SAFETY: per the ABI.
        Ok(Some(rows)) => unsafe { send_rows(&rows, sink, ctx) },
        Ok(None) => STATUS_UNKNOWN,
        Err(()) => STATUS_NO_MEMORY,
    }
}

unsafe extern "C" fn site_snapshot(id: u32, out: *mut SiteSnapshot) -> bool {
    match reading(None, |cx| SITES.snapshot(cx, id)) {
        Some(s) => {
            // SAFETY: the extension passes a writable SiteSnapshot.
            unsafe { out.write(s) };
            true
        }
        None => false,
    }
}

unsafe extern "C" fn site_lookup(name: *const u8, len: usize) -> u32 {
    if name.is_null() {
        return UNTRACKED_SITE;
    }
    // SAFETY: the extension passes `len` readable bytes.
    let name = unsafe { core::slice::from_raw_parts(name, len) };
    reading(None, |cx| read::lookup(&SITES, cx, name)).unwrap_or(UNTRACKED_SITE)
}

unsafe extern "C" fn site_live(id: u32, sink: LiveSink, ctx: *mut c_void) -> i32 {
    let mut live = Vec::new();
    match reading(Err(()), |cx| {
        SITES
            .live(cx, id, current_generation(), &mut live)
            .map_err(|_| ())
    }) {
        Ok(true) => {
            // SAFETY: per the ABI.
            unsafe { sink(ctx, live.as_ptr(), live.len()) };
            STATUS_OK
        }
        Ok(false) => STATUS_UNKNOWN,
        Err(()) => STATUS_NO_MEMORY,
    }
}

unsafe extern "C" fn reset() {
    reading((), |cx| SITES.reset(cx));
    crate::state::reset_temporary();
    // Watched code blocks are untracked now; their frees will not be seen.
    crate::state::code_freed();
}

unsafe extern "C" fn totals(out: *mut Totals) {
    let t = reading(Totals::default(), |cx| read::totals(&SITES, cx));
    // SAFETY: the extension passes a writable Totals.
    unsafe { out.write(t) };
}

unsafe extern "C" fn quiet_enter() -> u32 {
    per_thread::busy(|_, data| data.quiet_enter(ruby::current_ec(data))).unwrap_or(0)
}

unsafe extern "C" fn quiet_exit() -> u32 {
    per_thread::busy(|_, data| data.quiet_exit(ruby::current_ec(data))).unwrap_or(0)
}

unsafe extern "C" fn api_current_generation() -> u64 {
    current_generation()
}

unsafe extern "C" fn attach_ruby() {
    per_thread::busy(|_, _| ruby::attach());
}

unsafe extern "C" fn heap_pages(sink: HeapPageSink, ctx: *mut c_void) -> i32 {
    let mut pages = Vec::new();
    if reading(Err(()), |cx| HEAP.live(cx, &mut pages).map_err(|_| ())).is_err() {
        return STATUS_NO_MEMORY;
    }
    // SAFETY: per the ABI.
    unsafe { sink(ctx, pages.as_ptr(), pages.len()) };
    STATUS_OK
}

unsafe extern "C" fn heap_stats(out: *mut HeapPageStats) {
    let stats = reading(HeapPageStats::default(), |cx| HEAP.stats(cx));
    // SAFETY: the extension passes a writable HeapPageStats.
    unsafe { out.write(stats) };
}

unsafe extern "C" fn heap_page_size() -> u64 {
    HEAP.page_size() as u64
}

/// Hands rendered text to the extension in pieces of whole lines.
struct SinkLines {
    sink: BytesSink,
    ctx: *mut c_void,
    buf: Vec<u8>,
}

impl SinkLines {
    const PIECE: usize = 64 * 1024;

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            // SAFETY: per the ABI; `buf` outlives the call.
            unsafe { (self.sink)(self.ctx, self.buf.as_ptr(), self.buf.len()) };
            self.buf.clear();
        }
    }
}

impl LineSink for SinkLines {
    fn line(&mut self, line: &[u8]) {
        if self.buf.len() + line.len() > Self::PIECE {
            self.flush();
        }
        self.buf.extend_from_slice(line);
    }
}

unsafe extern "C" fn render(format: u32, min: u64, sink: BytesSink, ctx: *mut c_void) -> i32 {
    if ![RENDER_TEXT, RENDER_FOLDED, RENDER_JSON].contains(&format) {
        return STATUS_UNKNOWN;
    }
    let mut out = SinkLines {
        sink,
        ctx,
        buf: Vec::new(),
    };
    if out.buf.try_reserve(SinkLines::PIECE).is_err() {
        return STATUS_NO_MEMORY;
    }
    if reading(Err(()), |cx| {
        crate::formats::render_format(
            cx,
            format,
            min,
            &crate::formats::DumpExtras::default(),
            &mut out,
        )
    })
    .is_err()
    {
        return STATUS_NO_MEMORY;
    }
    out.flush();
    STATUS_OK
}

unsafe extern "C" fn stacks(
    filter: *const SiteFilter,
    location: u32,
    sink: StackRowSink,
    ctx: *mut c_void,
) -> i32 {
    // SAFETY: the extension passes a valid filter or null.
    let filter = unsafe { filter.as_ref() }.copied().unwrap_or_default();
    if location != 0 && SITES.key(location).is_none_or(|k| !k.is_location()) {
        return STATUS_UNKNOWN;
    }
    let only = (location != 0).then_some(location);
    let Ok(rows) = reading(Err(()), |cx| {
        read::stacks(&SITES, &STACKS, cx, &filter, only, &Symbols).map_err(|_| ())
    }) else {
        return STATUS_NO_MEMORY;
    };
    // Frames of a row, one name and a newline each, in one buffer per batch.
    const BATCH: usize = 256;
    let mut batch: Vec<StackRow> = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    if batch.try_reserve(BATCH.min(rows.len())).is_err() {
        return STATUS_NO_MEMORY;
    }
    for chunk in rows.rows().chunks(BATCH) {
        batch.clear();
        text.clear();
        let mut spans = Vec::new();
        if spans.try_reserve(chunk.len()).is_err() {
            return STATUS_NO_MEMORY;
        }
        for r in chunk {
            let start = text.len();
            for f in rows.ruby_frames(r).chain(rows.native_frames(r)) {
                if text.try_reserve(f.len() + 1).is_err() {
                    return STATUS_NO_MEMORY;
                }
                text.extend_from_slice(f);
                text.push(b'\n');
            }
            spans.push((start, text.len() - start));
        }
        for (r, &(start, len)) in chunk.iter().zip(&spans) {
            let name = rows.location_name(r);
            batch.push(StackRow {
                snapshot: r.snapshot,
                location: r.location,
                ruby_frames: r.ruby_frames as u32,
                native_frames: r.native_frames as u32,
                _reserved: 0,
                key: location_key(r.key),
                name: name.as_ptr(),
                name_len: name.len(),
                frames: text[start..].as_ptr(),
                frames_len: len,
            });
        }
        // SAFETY: per the ABI; `batch`, `text` and the names outlive the call.
        unsafe { sink(ctx, batch.as_ptr(), batch.len()) };
    }
    STATUS_OK
}

unsafe extern "C" fn recording(out: *mut Recording) {
    let r = crate::state::recording();
    // SAFETY: the extension passes a writable Recording.
    unsafe {
        out.write(Recording {
            bt: r.bt as u32,
            ruby_bt: r.ruby_bt as u32,
        })
    };
}

unsafe extern "C" fn set_app_root(
    dir: *const u8,
    len: usize,
    sink: BytesSink,
    ctx: *mut c_void,
) -> i32 {
    if len == 0 || dir.is_null() {
        reading((), |_| crate::state::set_app_root(None));
        return STATUS_OK;
    }
    // SAFETY: the extension passes `len` readable bytes.
    let dir = unsafe { core::slice::from_raw_parts(dir, len) };
    let start_dir = CONFIG.get().and_then(|c| c.start_dir.as_deref());
    match reading(Err(String::new()), |_| {
        crate::config::app_root(dir, start_dir)
    }) {
        Ok(root) => {
            reading((), |_| crate::state::set_app_root(Some(root)));
            STATUS_OK
        }
        Err(why) => {
            // SAFETY: per the ABI.
            unsafe { sink(ctx, why.as_ptr(), why.len()) };
            STATUS_INVALID
        }
    }
}

unsafe extern "C" fn app_root(sink: BytesSink, ctx: *mut c_void) {
    if let Some(root) = crate::state::recording().app_root {
        let dir = root.dir();
        // SAFETY: per the ABI.
        unsafe { sink(ctx, dir.as_ptr(), dir.len()) };
    }
}

unsafe extern "C" fn leak_scan_begin(scan: *mut LeakScan) -> i32 {
    match reading(Err(crate::leak_scan::ScanError::NoMemory), |_| {
        crate::leak_scan::begin()
    }) {
        Ok(s) => {
            // SAFETY: the extension passes a writable LeakScan.
            unsafe { scan.write(s) };
            STATUS_OK
        }
        Err(crate::leak_scan::ScanError::Copy(e)) => e,
        Err(_) => STATUS_NO_MEMORY,
    }
}

unsafe extern "C" fn leak_scan_finish(
    scan: *const LeakScan,
    location: u32,
    summary: *mut LeakSummary,
    sink: LeakRowSink,
    ctx: *mut c_void,
) -> i32 {
    use crate::leak_scan::ScanError;
    // SAFETY: the extension passes the LeakScan its begin filled.
    let Some(scan) = (unsafe { scan.as_ref() }) else {
        return STATUS_INVALID;
    };
    let report = match crate::leak_scan::finish(scan, location) {
        Ok(report) => report,
        Err(e) => {
            let status = match e {
                ScanError::Failed(status) => status,
                _ => -1,
            };
            // SAFETY: the extension passes a writable LeakSummary.
            unsafe {
                summary.write(LeakSummary {
                    pause_nanos: scan.pause_nanos,
                    child_status: status,
                    ..Default::default()
                })
            };
            return match e {
                ScanError::Failed(_) => STATUS_SCAN_FAILED,
                _ => STATUS_NO_MEMORY,
            };
        }
    };
    // SAFETY: the extension passes a writable LeakSummary.
    unsafe { summary.write(report.summary) };
    const BATCH: usize = 256;
    let mut batch: Vec<LeakRow> = Vec::new();
    if batch.try_reserve(BATCH).is_err() {
        return STATUS_NO_MEMORY;
    }
    for chunk in report.lines.chunks(BATCH) {
        batch.clear();
        batch.extend(chunk.iter().map(|l| {
            let name = report.name(l);
            LeakRow {
                location: l.location,
                _reserved: 0,
                leaked_bytes: l.bytes,
                leaked_count: l.count,
                name: name.as_ptr(),
                name_len: name.len(),
            }
        }));
        // SAFETY: per the ABI; `batch` and the names outlive the call.
        unsafe { sink(ctx, batch.as_ptr(), batch.len()) };
    }
    STATUS_OK
}

unsafe extern "C" fn thread_stacks(out: *mut u64, cap: usize) -> usize {
    let mut live = 0;
    THREADS.live_stacks(|address| {
        if live < cap && !out.is_null() {
            // SAFETY: the extension passes room for `cap` u64s.
            unsafe { out.add(live).write(address as u64) };
        }
        live += 1;
    });
    live
}

/// The ABI's form of a page's responder: the head to `head`, the body to
/// its sink in pieces, as rendered text is handed over (`SinkLines`).
struct SinkPage {
    head: PageHeadSink,
    ctx: *mut c_void,
    body: SinkLines,
}

impl crate::pages::Respond for SinkPage {
    fn head(&mut self, status: u16, content_type: &str, extra: &[(&str, &str)]) {
        let mut headers = String::new();
        for (k, v) in extra {
            headers.push_str(k);
            headers.push_str(": ");
            headers.push_str(v);
            headers.push('\n');
        }
        // SAFETY: per the ABI; both strings outlive the call.
        unsafe {
            (self.head)(
                self.ctx,
                status as u32,
                content_type.as_ptr(),
                content_type.len(),
                headers.as_ptr(),
                headers.len(),
            )
        };
    }

    fn body(&mut self, bytes: &[u8]) {
        self.body.line(bytes);
    }
}

unsafe extern "C" fn render_page(
    request: *const PageRequest,
    head: PageHeadSink,
    body: BytesSink,
    ctx: *mut c_void,
) -> i32 {
    // SAFETY: the extension passes a valid request or null.
    let Some(r) = (unsafe { request.as_ref() }) else {
        return STATUS_INVALID;
    };
    let bytes = |p: *const u8, n: usize| -> &[u8] {
        if p.is_null() || n == 0 {
            &[]
        } else {
            // SAFETY: the extension passes `n` readable bytes at `p`.
            unsafe { core::slice::from_raw_parts(p, n) }
        }
    };
    let req = crate::pages::Request {
        method: bytes(r.method, r.method_len),
        path: bytes(r.path, r.path_len),
        query: bytes(r.query, r.query_len),
        base: bytes(r.base, r.base_len),
    };
    let mut out = SinkPage {
        head,
        ctx,
        body: SinkLines {
            sink: body,
            ctx,
            buf: Vec::new(),
        },
    };
    reading((), |_| crate::pages::respond(&req, &mut out));
    out.body.flush();
    STATUS_OK
}

unsafe extern "C" fn render_pprof(sink: BytesSink, ctx: *mut c_void) -> i32 {
    match reading(Err(()), crate::pprof_export::heap_profile) {
        Ok(bytes) => {
            // SAFETY: per the ABI; `bytes` outlives the call.
            unsafe { sink(ctx, bytes.as_ptr(), bytes.len()) };
            STATUS_OK
        }
        Err(()) => STATUS_NO_MEMORY,
    }
}

unsafe extern "C" fn site_temporary(id: u32) -> u64 {
    crate::state::temporary_of(id)
}
