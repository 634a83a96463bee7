//! Finding the preload library's API table and a safe wrapper around it.
//!
//! The extension links no preload code: at load time it looks up
//! [`PRELOAD_API_SYMBOL`] with `dlsym(RTLD_DEFAULT, …)`. When the symbol is
//! absent (the process was not started under the preload) every query
//! reports nothing. When the preload speaks another ABI version, a warning
//! naming both versions goes to stderr once and the extension behaves as if
//! the preload were absent.
//!
//! The API's sinks only copy into Rust vectors (growing them fallibly); no
//! Ruby object is created and no Ruby code runs while the preload is
//! calling back into us.

use core::ffi::c_void;
use std::mem::size_of;
use std::sync::OnceLock;

use mwrap_abi::{
    HeapPageInfo, HeapPageStats, LeakRow, LeakScan, LeakSummary, LiveAllocationInfo, PageRequest,
    PreloadApi, Recording, SiteFilter, SiteRow, SiteSnapshot, StackRow, Totals, ABI_VERSION,
    PRELOAD_API_SYMBOL, STATUS_NO_MEMORY, STATUS_OK, STATUS_SCAN_FAILED, UNTRACKED_SITE,
};

/// Signature of the exported `mwrap_preload_api` function.
type ApiGetter = unsafe extern "C" fn() -> *const PreloadApi;

static PRELOAD: OnceLock<Option<Preload>> = OnceLock::new();

/// A validated handle on the preload's API table.
#[derive(Clone, Copy)]
pub struct Preload {
    api: &'static PreloadApi,
}

/// Why the preload cannot be used.
enum Unusable {
    Absent,
    Mismatch { version: u32, struct_size: u32 },
}

/// The preload (or this extension) could not get memory for a copy.
#[derive(Debug, Clone, Copy)]
pub struct NoMemory;

/// The preload, when this process runs under a compatible one. Looked up
/// once; the version-mismatch warning is therefore printed at most once.
pub fn get() -> Option<Preload> {
    *PRELOAD.get_or_init(|| match locate() {
        Ok(preload) => Some(preload),
        Err(Unusable::Absent) => None,
        Err(Unusable::Mismatch {
            version,
            struct_size,
        }) => {
            eprintln!(
                "mwrap: ignoring the preloaded libmwrap_preload.so: it speaks ABI version {version} \
                 (table of {struct_size} bytes) but this mwrap extension needs ABI version \
                 {ABI_VERSION} (table of {} bytes); a stale copy is probably first in LD_PRELOAD. \
                 Mwrap will report nothing.",
                size_of::<PreloadApi>()
            );
            None
        }
    })
}

fn locate() -> Result<Preload, Unusable> {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the
    // global scope, which holds every LD_PRELOAD object.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, PRELOAD_API_SYMBOL.as_ptr().cast()) };
    if sym.is_null() {
        // SAFETY: dlerror has no preconditions; it clears the miss.
        unsafe { libc::dlerror() };
        return Err(Unusable::Absent);
    }
    // SAFETY: the ABI documents the symbol as `extern "C" fn() -> *const PreloadApi`.
    let getter: ApiGetter = unsafe { std::mem::transmute::<*mut c_void, ApiGetter>(sym) };
    // SAFETY: calling the documented getter; it takes no argument.
    let table = unsafe { getter() };
    if table.is_null() {
        return Err(Unusable::Absent);
    }
    // Only the two leading u32 fields have a fixed meaning in every ABI
    // version: read them before trusting the rest of the table.
    let header = table.cast::<u32>();
    // SAFETY: every version of the table starts with these two u32 fields.
    let (version, struct_size) = unsafe { (header.read(), header.add(1).read()) };
    if version != ABI_VERSION || (struct_size as usize) < size_of::<PreloadApi>() {
        return Err(Unusable::Mismatch {
            version,
            struct_size,
        });
    }
    // SAFETY: version and size checked; the table lives as long as the process.
    Ok(Preload {
        api: unsafe { &*table },
    })
}

/// One location's counters and printable name, copied out of the preload.
pub struct Site {
    pub snapshot: SiteSnapshot,
    pub name: Vec<u8>,
}

/// One (location, stack) pair copied out of the preload: its own counters,
/// the location's printed name, and the printed frames.
pub struct StackEntry {
    pub snapshot: SiteSnapshot,
    pub name: Vec<u8>,
    pub ruby: Vec<Vec<u8>>,
    pub native: Vec<Vec<u8>>,
}

/// Keeps the calling fiber quiet (its allocations untracked) while alive.
pub struct QuietGuard {
    api: &'static PreloadApi,
}

impl QuietGuard {
    fn enter(api: &'static PreloadApi) -> Self {
        // SAFETY: plain call into the validated table.
        unsafe { (api.quiet_enter)() };
        QuietGuard { api }
    }
}

impl Drop for QuietGuard {
    fn drop(&mut self) {
        // SAFETY: balances the quiet_enter in `enter`.
        unsafe { (self.api.quiet_exit)() };
    }
}

/// Where a sink copies to, and whether a copy ran out of memory.
struct Collect<T> {
    items: Vec<T>,
    no_memory: bool,
}

impl<T> Collect<T> {
    fn new() -> Self {
        Collect {
            items: Vec::new(),
            no_memory: false,
        }
    }

    fn ctx(&mut self) -> *mut c_void {
        (self as *mut Self).cast()
    }

    fn finish(self, status: i32) -> Result<Vec<T>, NoMemory> {
        if self.no_memory || status == STATUS_NO_MEMORY {
            Err(NoMemory)
        } else {
            Ok(self.items)
        }
    }
}

/// Appends a batch of `T` handed over by the preload to the `Collect<T>`
/// at `ctx`.
///
/// # Safety
/// `ctx` must be a `&mut Collect<T>` and `items` must point at `n` valid
/// `T`s (or be null with any `n`) for the duration of the call.
unsafe extern "C" fn collect_sink<T: Copy>(ctx: *mut c_void, items: *const T, n: usize) {
    if items.is_null() || n == 0 {
        return;
    }
    // SAFETY: see the function's contract.
    let out = unsafe { &mut *ctx.cast::<Collect<T>>() };
    if out.items.try_reserve(n).is_err() {
        out.no_memory = true;
        return;
    }
    // SAFETY: see the function's contract.
    out.items
        .extend_from_slice(unsafe { std::slice::from_raw_parts(items, n) });
}

/// Copies site rows (counters and names) into a `Collect<Site>`.
///
/// # Safety
/// As for [`collect_sink`], with `Collect<Site>` and `SiteRow`s whose
/// names point at `name_len` readable bytes.
unsafe extern "C" fn site_sink(ctx: *mut c_void, rows: *const SiteRow, n: usize) {
    if rows.is_null() || n == 0 {
        return;
    }
    // SAFETY: see the function's contract.
    let out = unsafe { &mut *ctx.cast::<Collect<Site>>() };
    // SAFETY: see the function's contract.
    let rows = unsafe { std::slice::from_raw_parts(rows, n) };
    if out.items.try_reserve(n).is_err() {
        out.no_memory = true;
        return;
    }
    for row in rows {
        let mut name = Vec::new();
        if name.try_reserve(row.name_len).is_err() {
            out.no_memory = true;
            return;
        }
        if !row.name.is_null() {
            // SAFETY: see the function's contract.
            name.extend_from_slice(unsafe { std::slice::from_raw_parts(row.name, row.name_len) });
        }
        out.items.push(Site {
            snapshot: row.snapshot,
            name,
        });
    }
}

/// Copies stack rows into a `Collect<StackEntry>`.
///
/// # Safety
/// As for [`collect_sink`], with `Collect<StackEntry>` and `StackRow`s
/// whose names and frames point at their lengths of readable bytes.
unsafe extern "C" fn stack_sink(ctx: *mut c_void, rows: *const StackRow, n: usize) {
    if rows.is_null() || n == 0 {
        return;
    }
    // SAFETY: see the function's contract.
    let out = unsafe { &mut *ctx.cast::<Collect<StackEntry>>() };
    // SAFETY: see the function's contract.
    let rows = unsafe { std::slice::from_raw_parts(rows, n) };
    if out.items.try_reserve(n).is_err() {
        out.no_memory = true;
        return;
    }
    let bytes = |p: *const u8, len: usize| -> &[u8] {
        if p.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: see the function's contract.
            unsafe { std::slice::from_raw_parts(p, len) }
        }
    };
    for row in rows {
        let mut frames = bytes(row.frames, row.frames_len)
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec);
        let ruby: Vec<Vec<u8>> = frames.by_ref().take(row.ruby_frames as usize).collect();
        let native: Vec<Vec<u8>> = frames.take(row.native_frames as usize).collect();
        out.items.push(StackEntry {
            snapshot: row.snapshot,
            name: bytes(row.name, row.name_len).to_vec(),
            ruby,
            native,
        });
    }
}

/// Appends bytes handed over by the preload to the `Vec<u8>` at `ctx`.
///
/// # Safety
/// `ctx` is a `&mut Vec<u8>` and `bytes` points at `len` readable bytes.
unsafe extern "C" fn bytes_sink(ctx: *mut c_void, bytes: *const u8, len: usize) {
    if bytes.is_null() || len == 0 {
        return;
    }
    // SAFETY: see the function's contract.
    let out = unsafe { &mut *ctx.cast::<Vec<u8>>() };
    // SAFETY: see the function's contract.
    out.extend_from_slice(unsafe { std::slice::from_raw_parts(bytes, len) });
}

impl Preload {
    /// Every (location, stack) pair whose own total is above `min` (of
    /// `location` only, unless None), as the preload orders them.
    pub fn stacks(self, min: u64, location: Option<u32>) -> Result<Vec<StackEntry>, NoMemory> {
        let _quiet = self.quiet();
        let mut out = Collect::new();
        let filter = SiteFilter {
            min_total: min,
            ..Default::default()
        };
        // SAFETY: the sink matches `StackRowSink` and ctx points at `out`.
        let status =
            unsafe { (self.api.stacks)(&filter, location.unwrap_or(0), stack_sink, out.ctx()) };
        out.finish(status)
    }

    /// What allocations record besides their location (`bt`, `ruby_bt`).
    pub fn recording(self) -> Recording {
        let mut out = Recording::default();
        // SAFETY: `out` is a valid, writable Recording.
        unsafe { (self.api.recording)(&mut out) };
        out
    }

    /// Sets the application root (`MWRAP=app_root`), or clears it with an
    /// empty `dir`; the preload's reason when it refuses.
    pub fn set_app_root(self, dir: &[u8]) -> Result<(), String> {
        let _quiet = self.quiet();
        let mut why: Vec<u8> = Vec::new();
        let ctx = (&mut why as *mut Vec<u8>).cast();
        // SAFETY: `dir` is valid for its length; the sink matches
        // `BytesSink` and ctx points at `why`.
        let status = unsafe { (self.api.set_app_root)(dir.as_ptr(), dir.len(), bytes_sink, ctx) };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&why).into_owned())
        }
    }

    /// The application root, absolute; None when there is none.
    pub fn app_root(self) -> Option<Vec<u8>> {
        let _quiet = self.quiet();
        let mut dir: Vec<u8> = Vec::new();
        let ctx = (&mut dir as *mut Vec<u8>).cast();
        // SAFETY: the sink matches `BytesSink` and ctx points at `dir`.
        unsafe { (self.api.app_root)(bytes_sink, ctx) };
        (!dir.is_empty()).then_some(dir)
    }

    /// Every location `filter` selects, with its name, largest total first
    /// and ties by name, as the preload orders them.
    pub fn sites(self, filter: SiteFilter) -> Result<Vec<Site>, NoMemory> {
        let _quiet = self.quiet();
        let mut out = Collect::new();
        // SAFETY: the sink matches `SiteRowSink` and ctx points at `out`.
        let status = unsafe { (self.api.sites)(&filter, site_sink, out.ctx()) };
        out.finish(status)
    }

    /// Locations whose total is strictly above `min`.
    pub fn sites_above(self, min: u64) -> Result<Vec<Site>, NoMemory> {
        self.sites(SiteFilter {
            min_total: min,
            ..Default::default()
        })
    }

    /// Enters a quiet section on this fiber until the guard is dropped.
    pub fn quiet(self) -> QuietGuard {
        QuietGuard::enter(self.api)
    }

    /// Enters a quiet section on this fiber (see `Mwrap.quiet`); the
    /// caller must balance it with [`Preload::quiet_exit`]. The new depth.
    pub fn quiet_enter(self) -> u32 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.quiet_enter)() }
    }

    pub fn quiet_exit(self) -> u32 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.quiet_exit)() }
    }

    /// The id of the location a user-given String names; None when it
    /// names none.
    pub fn lookup(self, name: &[u8]) -> Option<u32> {
        let _quiet = self.quiet();
        // SAFETY: `name` is valid for `name.len()` bytes during the call.
        let id = unsafe { (self.api.site_lookup)(name.as_ptr(), name.len()) };
        (id != UNTRACKED_SITE).then_some(id)
    }

    /// Location `id` with its printed name; None when unknown.
    pub fn site(self, id: u32) -> Result<Option<Site>, NoMemory> {
        let _quiet = self.quiet();
        let mut out = Collect::new();
        // SAFETY: the sink matches `SiteRowSink` and ctx points at `out`.
        let status = unsafe { (self.api.site)(id, site_sink, out.ctx()) };
        Ok(out.finish(status)?.pop())
    }

    /// The counters of location `id`; None when the preload does not know it.
    pub fn snapshot(self, id: u32) -> Option<SiteSnapshot> {
        let mut out = SiteSnapshot::default();
        // SAFETY: `out` is a valid, writable SiteSnapshot.
        let known = unsafe { (self.api.site_snapshot)(id, &mut out) };
        known.then_some(out)
    }

    /// A copy of the allocations from location `id` that are still live
    /// (empty when the id is unknown).
    pub fn live(self, id: u32) -> Result<Vec<LiveAllocationInfo>, NoMemory> {
        let _quiet = self.quiet();
        let mut out = Collect::new();
        // SAFETY: the sink matches `LiveSink` and ctx points at `out`.
        let status =
            unsafe { (self.api.site_live)(id, collect_sink::<LiveAllocationInfo>, out.ctx()) };
        out.finish(status)
    }

    /// `format` (a `RENDER_*`: the dump's text, folded or JSON) of what
    /// is above `min`, rendered by the preload.
    pub fn render(self, format: u32, min: u64) -> Result<Vec<u8>, NoMemory> {
        let _quiet = self.quiet();
        let mut out = Collect::new();
        // SAFETY: the sink matches `BytesSink` and ctx points at `out`.
        let status = unsafe { (self.api.render)(format, min, collect_sink::<u8>, out.ctx()) };
        out.finish(status)
    }

    /// The heap as a gzip'd pprof profile.proto (ABI 6).
    pub fn pprof(self) -> Result<Vec<u8>, NoMemory> {
        let _quiet = self.quiet();
        let mut out = Collect::new();
        // SAFETY: the sink matches `BytesSink` and ctx points at `out`.
        let status = unsafe { (self.api.render_pprof)(collect_sink::<u8>, out.ctx()) };
        out.finish(status)
    }

    /// A copy of every live Ruby heap page, by address.
    pub fn heap_pages(self) -> Result<Vec<HeapPageInfo>, NoMemory> {
        let _quiet = self.quiet();
        let mut out = Collect::new();
        // SAFETY: the sink matches `HeapPageSink` and ctx points at `out`.
        let status = unsafe { (self.api.heap_pages)(collect_sink::<HeapPageInfo>, out.ctx()) };
        let mut pages: Vec<HeapPageInfo> = out.finish(status)?;
        pages.sort_unstable_by_key(|p| p.address);
        Ok(pages)
    }

    pub fn heap_stats(self) -> HeapPageStats {
        let _quiet = self.quiet();
        let mut out = HeapPageStats::default();
        // SAFETY: `out` is a valid, writable HeapPageStats.
        unsafe { (self.api.heap_stats)(&mut out) };
        out
    }

    pub fn heap_page_size(self) -> u64 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.heap_page_size)() }
    }

    /// Zeroes every counter.
    pub fn reset(self) {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.reset)() }
    }

    pub fn totals(self) -> Totals {
        let _quiet = self.quiet();
        let mut out = Totals::default();
        // SAFETY: `out` is a valid, writable Totals.
        unsafe { (self.api.totals)(&mut out) };
        out
    }

    pub fn current_generation(self) -> u64 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.current_generation)() }
    }

    /// An address inside the stack of every live thread that used the
    /// profiler (see `PreloadApi::thread_stacks`).
    pub fn thread_stacks(self) -> Vec<usize> {
        let mut room: Vec<u64> = vec![0; 64];
        loop {
            // SAFETY: `room` has space for `room.len()` u64s.
            let live = unsafe { (self.api.thread_stacks)(room.as_mut_ptr(), room.len()) };
            if live <= room.len() {
                return room[..live].iter().map(|&a| a as usize).collect();
            }
            // Threads started meanwhile: ask again with room for them.
            room.resize(live + 16, 0);
        }
    }

    /// Lets the preload find Ruby's symbols if libruby was loaded after it
    /// initialised (an embedding program that dlopens libruby).
    pub fn attach_ruby(self) {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.attach_ruby)() }
    }

    /// Allocations of location `id` freed before their thread's next one.
    pub fn temporary(self, id: u32) -> u64 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.site_temporary)(id) }
    }

    /// One page of the endpoint, rendered by the preload.
    pub fn render_page(
        self,
        method: &[u8],
        path: &[u8],
        query: &[u8],
        base: &[u8],
    ) -> Result<Page, NoMemory> {
        let _quiet = self.quiet();
        let request = PageRequest {
            method: method.as_ptr(),
            method_len: method.len(),
            path: path.as_ptr(),
            path_len: path.len(),
            query: query.as_ptr(),
            query_len: query.len(),
            base: base.as_ptr(),
            base_len: base.len(),
        };
        let mut page = Page::default();
        // SAFETY: the sinks match the ABI and ctx points at `page`; the
        // request's bytes outlive the call.
        let status = unsafe {
            (self.api.render_page)(
                &request,
                page_head,
                page_body,
                (&mut page as *mut Page).cast(),
            )
        };
        if page.no_memory || status == STATUS_NO_MEMORY {
            return Err(NoMemory);
        }
        Ok(page)
    }

    /// Copies the process for a leak scan (call with the GVL held); the
    /// errno of a copy that failed.
    pub fn leak_scan_begin(self) -> Result<LeakScan, LeakScanError> {
        let mut scan = LeakScan::default();
        // SAFETY: `scan` is a valid, writable LeakScan.
        match unsafe { (self.api.leak_scan_begin)(&mut scan) } {
            STATUS_OK => Ok(scan),
            STATUS_NO_MEMORY => Err(LeakScanError::NoMemory),
            errno => Err(LeakScanError::Copy(errno)),
        }
    }

    /// Waits for a scan's answer (blocking, no Ruby call: fit to run
    /// without the GVL): the summary and the leaked blocks per location
    /// (of `location` only, unless 0).
    pub fn leak_scan_finish(
        self,
        scan: &LeakScan,
        location: u32,
    ) -> Result<(LeakSummary, Vec<Leak>), LeakScanError> {
        let mut out = Collect::new();
        let mut summary = LeakSummary::default();
        // SAFETY: the sink matches `LeakRowSink`, ctx points at `out`, and
        // `scan` is what leak_scan_begin filled.
        let status = unsafe {
            (self.api.leak_scan_finish)(scan, location, &mut summary, leak_sink, out.ctx())
        };
        match status {
            STATUS_SCAN_FAILED => Err(LeakScanError::Died(summary.child_status)),
            _ => match out.finish(status) {
                Ok(leaks) => Ok((summary, leaks)),
                Err(NoMemory) => Err(LeakScanError::NoMemory),
            },
        }
    }
}

/// A page the preload rendered (see `PreloadApi::render_page`).
#[derive(Default)]
pub struct Page {
    pub status: u32,
    pub content_type: Vec<u8>,
    /// `name: value\n` lines.
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
    pub no_memory: bool,
}

unsafe extern "C" fn page_head(
    ctx: *mut c_void,
    status: u32,
    content_type: *const u8,
    content_type_len: usize,
    headers: *const u8,
    headers_len: usize,
) {
    // SAFETY: `render_page` passes its own `Page`.
    let page = unsafe { &mut *ctx.cast::<Page>() };
    page.status = status;
    // SAFETY: per the ABI, both point at that many readable bytes.
    unsafe {
        page.content_type = std::slice::from_raw_parts(content_type, content_type_len).to_vec();
        page.headers = std::slice::from_raw_parts(headers, headers_len).to_vec();
    }
}

unsafe extern "C" fn page_body(ctx: *mut c_void, bytes: *const u8, len: usize) {
    // SAFETY: `render_page` passes its own `Page`.
    let page = unsafe { &mut *ctx.cast::<Page>() };
    if bytes.is_null() || len == 0 {
        return;
    }
    if page.body.try_reserve(len).is_err() {
        page.no_memory = true;
        return;
    }
    // SAFETY: per the ABI, `len` readable bytes.
    page.body
        .extend_from_slice(unsafe { std::slice::from_raw_parts(bytes, len) });
}

/// Why a leak scan gave no answer.
#[derive(Debug, Clone, Copy)]
pub enum LeakScanError {
    /// The process could not be copied (the errno); nothing changed.
    Copy(i32),
    NoMemory,
    /// The scanning copy died (its wait status, or -1).
    Died(i32),
}

/// One location's leaked blocks, copied out of the preload.
pub struct Leak {
    pub location: u32,
    pub bytes: u64,
    pub count: u64,
    pub name: Vec<u8>,
}

/// Copies leak rows into a `Collect<Leak>`.
///
/// # Safety
/// As for [`collect_sink`], with `Collect<Leak>` and `LeakRow`s whose
/// names point at `name_len` readable bytes.
unsafe extern "C" fn leak_sink(ctx: *mut c_void, rows: *const LeakRow, n: usize) {
    if rows.is_null() || n == 0 {
        return;
    }
    // SAFETY: see the function's contract.
    let out = unsafe { &mut *ctx.cast::<Collect<Leak>>() };
    // SAFETY: see the function's contract.
    let rows = unsafe { std::slice::from_raw_parts(rows, n) };
    if out.items.try_reserve(n).is_err() {
        out.no_memory = true;
        return;
    }
    for row in rows {
        // SAFETY: see the function's contract.
        let name = unsafe { std::slice::from_raw_parts(row.name, row.name_len) };
        let mut copy = Vec::new();
        if copy.try_reserve(name.len()).is_err() {
            out.no_memory = true;
            return;
        }
        copy.extend_from_slice(name);
        out.items.push(Leak {
            location: row.location,
            bytes: row.leaked_bytes,
            count: row.leaked_count,
            name: copy,
        });
    }
}

/// Statuses other than these two are the preload's business (unknown ids).
const _: () = assert!(STATUS_OK == 0 && STATUS_NO_MEMORY != 0);
