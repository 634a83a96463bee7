//! The C ABI between the preload library (which owns every table) and the
//! Ruby extension (which only reads them). No dependencies: both sides
//! compile these exact types, so their layout cannot drift.
//!
//! The preload exports one function, [`PRELOAD_API_SYMBOL`], returning a
//! `&'static PreloadApi`. The extension finds it with `dlsym` at load time
//! and refuses to use it unless `abi_version == ABI_VERSION` and
//! `struct_size` is at least its own idea of the struct's size. Bump
//! [`ABI_VERSION`] whenever a field changes meaning or position; only
//! appending fields is compatible.
//!
//! Every sink is called with no lock held, and whatever it is handed is
//! valid only for the duration of that call.

#![no_std]

use core::ffi::c_void;

/// Version of [`PreloadApi`]. Both libraries are built from one tree, so a
/// mismatch means a stale preload library is first in `LD_PRELOAD`.
pub const ABI_VERSION: u32 = 7;

/// Name of the exported function returning `*const PreloadApi`.
pub const PRELOAD_API_SYMBOL: &[u8] = b"mwrap_preload_api\0";

/// Site id 0 is never a real location: it marks allocations that are not
/// tracked (made while quiet, inside the profiler itself, or orphaned by a
/// reset).
pub const UNTRACKED_SITE: u32 = 0;

/// Status of a call that copies data out: done.
pub const STATUS_OK: i32 = 0;
/// Status: the id names no location.
pub const STATUS_UNKNOWN: i32 = -1;
/// Status: the preload could not get memory for the copy (`errno` ENOMEM).
pub const STATUS_NO_MEMORY: i32 = 12;
/// Status: the argument was refused; the reason went to the sink.
pub const STATUS_INVALID: i32 = 22;
/// Status: the leak scan's child process died or sent no whole answer
/// (its wait status is in [`LeakSummary::child_status`]).
pub const STATUS_SCAN_FAILED: i32 = -2;

/// A copy of one location's counters, summed over its shards.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteSnapshot {
    pub id: u32,
    pub _reserved: u32,
    /// Bytes requested by every allocation charged here.
    pub total: u64,
    pub allocations: u64,
    pub frees: u64,
    /// Bytes of the freed allocations.
    pub freed_bytes: u64,
    /// Sum of lifespans (in GC generations) of the freed allocations.
    pub age_total: u64,
    /// Longest lifespan of a freed allocation, in GC generations.
    pub max_lifespan: u64,
    /// Allocations from this location that are still live.
    pub live_count: u64,
    pub live_bytes: u64,
}

/// [`LocationKey::kind`]: a Ruby source line (`file`, `line`).
pub const LOCATION_RUBY: u32 = 1;
/// [`LocationKey::kind`]: a native return address (`address`).
pub const LOCATION_NATIVE: u32 = 2;
/// [`LocationKey::kind`]: the bucket for new locations once the table is full.
pub const LOCATION_OVERFLOW: u32 = 3;
/// [`LocationKey::kind`]: the bucket for new locations the profiler had no
/// memory to record.
pub const LOCATION_NO_MEMORY: u32 = 4;

/// What a location is made of, as data rather than printed text.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LocationKey {
    /// One of the `LOCATION_*` kinds.
    pub kind: u32,
    /// Ruby: the line.
    pub line: u32,
    /// Native: the return address.
    pub address: u64,
    /// Ruby: the file name as Ruby reported it (raw bytes, not escaped).
    pub file: *const u8,
    pub file_len: usize,
    /// The frames of a stack, innermost first (none yet: room for stacks).
    pub frames: *const u64,
    pub frames_len: usize,
}

impl Default for LocationKey {
    fn default() -> Self {
        LocationKey {
            kind: 0,
            line: 0,
            address: 0,
            file: core::ptr::null(),
            file_len: 0,
            frames: core::ptr::null(),
            frames_len: 0,
        }
    }
}

/// One location: its counters, its key and its printed name (escaped, as
/// every output prints it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SiteRow {
    pub snapshot: SiteSnapshot,
    pub key: LocationKey,
    pub name: *const u8,
    pub name_len: usize,
}

/// Which locations [`PreloadApi::sites`] reports: those whose total is
/// strictly above `min_total` and whose live bytes are strictly above
/// `min_live_bytes` (when `use_min_live` is non-zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteFilter {
    pub min_total: u64,
    pub min_live_bytes: u64,
    pub use_min_live: u32,
    pub _reserved: u32,
}

/// One live allocation: its requested size and the GC generation it was born in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveAllocationInfo {
    pub size: u64,
    pub generation: u64,
}

/// A live Ruby heap page: its address and the GC generation it was born in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapPageInfo {
    pub address: u64,
    pub generation: u64,
}

/// Statistics over spans of GC generations. `mean` and `stddev` are NaN
/// when `count` is 0; `stddev` is the sample standard deviation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpanStats {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub stddev: f64,
}

/// Heap page statistics: `lifespan` over freed pages (death − birth),
/// `deathspan` over pages born after some page died (birth − last death),
/// `resurrects` = `deathspan.count`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeapPageStats {
    pub live_pages: u64,
    pub lifespan: SpanStats,
    pub deathspan: SpanStats,
    pub resurrects: u64,
}

/// Byte totals over every location.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub allocated: u64,
    pub freed: u64,
}

/// One (location, stack) pair: the counters of what was charged to the
/// location with that stack, the location, and the stack's frames as
/// printed names (escaped, so none holds a newline), each followed by
/// `\n`: `ruby_frames` Ruby frames (`path:line`), then `native_frames`
/// native ones, innermost first. No frames: what the location was charged
/// without a stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackRow {
    pub snapshot: SiteSnapshot,
    /// The location's id, key and printed name.
    pub location: u32,
    pub ruby_frames: u32,
    pub native_frames: u32,
    pub _reserved: u32,
    pub key: LocationKey,
    pub name: *const u8,
    pub name_len: usize,
    pub frames: *const u8,
    pub frames_len: usize,
}

/// What allocations record besides their location (`MWRAP=bt`, `ruby_bt`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    pub bt: u32,
    pub ruby_bt: u32,
}

/// A leak scan under way (see [`PreloadApi::leak_scan_begin`]): the
/// process scanning a snapshot of this one, and where its answer arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakScan {
    pub pid: i32,
    /// The read end of the answer's pipe.
    pub fd: i32,
    /// How long this process stood still for the snapshot.
    pub pause_nanos: u64,
}

/// What a leak scan looked at and found.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakSummary {
    /// Live tracked blocks and their bytes.
    pub blocks: u64,
    pub bytes: u64,
    /// Those no pointer reaches.
    pub leaked_blocks: u64,
    pub leaked_bytes: u64,
    /// Bytes of roots read (writable memory outside tracked blocks).
    pub root_bytes: u64,
    /// Memory the scanning process mapped for its own work.
    pub scratch_bytes: u64,
    /// Time the scan took in the child, and the parent's pause.
    pub scan_nanos: u64,
    pub pause_nanos: u64,
    /// The child's wait status (as `waitpid` gives it), or -1 unknown.
    pub child_status: i32,
    pub _reserved: u32,
}

/// The leaked blocks of one location.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LeakRow {
    pub location: u32,
    pub _reserved: u32,
    pub leaked_bytes: u64,
    pub leaked_count: u64,
    /// The location's printed name.
    pub name: *const u8,
    pub name_len: usize,
}

/// One request for [`PreloadApi::render_page`], as sent (bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub method: *const u8,
    pub method_len: usize,
    /// Percent-encoded, without the query.
    pub path: *const u8,
    pub path_len: usize,
    pub query: *const u8,
    pub query_len: usize,
    /// Put before every link of the page (a Rack mount point), or empty.
    pub base: *const u8,
    pub base_len: usize,
}

/// Receives a page's head: its status, content type and extra headers
/// (`name: value\n` lines).
pub type PageHeadSink = unsafe extern "C" fn(
    ctx: *mut c_void,
    status: u32,
    content_type: *const u8,
    content_type_len: usize,
    headers: *const u8,
    headers_len: usize,
);

/// [`PreloadApi::render`]: mwrap 2.x's dump text (`"%16zu %12zu %s\n"`).
pub const RENDER_TEXT: u32 = 1;
/// [`PreloadApi::render`]: flame graph input, one line per stack with live
/// bytes (`min` applies to live bytes).
pub const RENDER_FOLDED: u32 = 2;
/// [`PreloadApi::render`]: one JSON document of locations and their stacks.
pub const RENDER_JSON: u32 = 3;

/// Receives a batch of site rows.
pub type SiteRowSink = unsafe extern "C" fn(ctx: *mut c_void, rows: *const SiteRow, n: usize);
/// Receives a batch of live allocations.
pub type LiveSink =
    unsafe extern "C" fn(ctx: *mut c_void, live: *const LiveAllocationInfo, n: usize);
/// Receives a batch of live heap pages.
pub type HeapPageSink =
    unsafe extern "C" fn(ctx: *mut c_void, pages: *const HeapPageInfo, n: usize);
/// Receives bytes (rendered text).
pub type BytesSink = unsafe extern "C" fn(ctx: *mut c_void, bytes: *const u8, len: usize);
/// Receives a batch of leak rows.
pub type LeakRowSink = unsafe extern "C" fn(ctx: *mut c_void, rows: *const LeakRow, n: usize);
/// Receives a batch of stack rows.
pub type StackRowSink = unsafe extern "C" fn(ctx: *mut c_void, rows: *const StackRow, n: usize);

/// Function table exported by the preload library.
#[repr(C)]
pub struct PreloadApi {
    pub abi_version: u32,
    /// `size_of::<PreloadApi>()` in the preload that filled it.
    pub struct_size: u32,
    /// Calls `sink` (possibly several times) with every location `filter`
    /// selects, largest total first, ties by name bytewise. Returns a
    /// `STATUS_*`.
    pub sites:
        unsafe extern "C" fn(filter: *const SiteFilter, sink: SiteRowSink, ctx: *mut c_void) -> i32,
    /// Calls `sink` once with the row of `id`. Returns a `STATUS_*`.
    pub site: unsafe extern "C" fn(id: u32, sink: SiteRowSink, ctx: *mut c_void) -> i32,
    /// Copies one location's counters; false if `id` is unknown.
    pub site_snapshot: unsafe extern "C" fn(id: u32, out: *mut SiteSnapshot) -> bool,
    /// Finds the id of a location from a user-given String (see
    /// `mwrap_core::location`); 0 when it names no known location.
    pub site_lookup: unsafe extern "C" fn(name: *const u8, len: usize) -> u32,
    /// Calls `sink` with a copy of the location's live allocations. Returns
    /// a `STATUS_*`.
    pub site_live: unsafe extern "C" fn(id: u32, sink: LiveSink, ctx: *mut c_void) -> i32,
    /// Zeroes every counter and stops tracking the allocations live now.
    pub reset: unsafe extern "C" fn(),
    pub totals: unsafe extern "C" fn(out: *mut Totals),
    /// Enters a quiet section for the calling fiber; returns the new depth.
    pub quiet_enter: unsafe extern "C" fn() -> u32,
    /// Leaves a quiet section for the calling fiber; returns the new depth.
    pub quiet_exit: unsafe extern "C" fn() -> u32,
    /// The GC generation last seen by the preload.
    pub current_generation: unsafe extern "C" fn() -> u64,
    /// Asks the preload to look for Ruby's symbols again (for a libruby
    /// loaded with dlopen after the preload initialised).
    pub attach_ruby: unsafe extern "C" fn(),
    /// Calls `sink` with every live Ruby heap page, by address. Returns a
    /// `STATUS_*`.
    pub heap_pages: unsafe extern "C" fn(sink: HeapPageSink, ctx: *mut c_void) -> i32,
    /// Copies the heap page statistics.
    pub heap_stats: unsafe extern "C" fn(out: *mut HeapPageStats),
    /// Size (and alignment) of a Ruby heap page as the preload tracks it.
    pub heap_page_size: unsafe extern "C" fn() -> u64,
    /// Renders `format` (a `RENDER_*`) of every location whose total is
    /// strictly above `min` into `sink`, in pieces of whole lines. Returns a
    /// `STATUS_*`.
    pub render:
        unsafe extern "C" fn(format: u32, min: u64, sink: BytesSink, ctx: *mut c_void) -> i32,
    /// Calls `sink` with every (location, stack) pair whose own total is
    /// strictly above `filter`'s `min_total` (of location `location` only,
    /// unless 0), largest total first, ties by location name, then frames.
    /// Returns a `STATUS_*`.
    pub stacks: unsafe extern "C" fn(
        filter: *const SiteFilter,
        location: u32,
        sink: StackRowSink,
        ctx: *mut c_void,
    ) -> i32,
    /// What allocations record (`bt`, `ruby_bt`).
    pub recording: unsafe extern "C" fn(out: *mut Recording),
    /// Sets the application root (`MWRAP=app_root`) to the directory
    /// `dir[..len]`, or turns it off when `len` is 0. `STATUS_INVALID` (the
    /// reason to `sink`) when it is no directory.
    pub set_app_root:
        unsafe extern "C" fn(dir: *const u8, len: usize, sink: BytesSink, ctx: *mut c_void) -> i32,
    /// Calls `sink` with the application root (absolute), or not at all
    /// when there is none.
    pub app_root: unsafe extern "C" fn(sink: BytesSink, ctx: *mut c_void),
    /// Starts a leak scan: this process stops only while it is copied
    /// (`fork` semantics, with no `SIGCHLD`: the program's own `wait` never
    /// sees the copy), and the copy scans itself. Returns `STATUS_OK`, or
    /// the `errno` of a failed copy (nothing changed then). Call it with
    /// the GVL held, so that Ruby's heap is whole in the snapshot.
    pub leak_scan_begin: unsafe extern "C" fn(scan: *mut LeakScan) -> i32,
    /// Waits for the scan's answer (blocking: call it without the GVL),
    /// reaps the child, fills `summary` and calls `sink` with the leaked
    /// blocks of every location (of `location` only, unless 0), most
    /// leaked bytes first. Returns a `STATUS_*`; `STATUS_SCAN_FAILED` when
    /// the child sent no whole answer.
    pub leak_scan_finish: unsafe extern "C" fn(
        scan: *const LeakScan,
        location: u32,
        summary: *mut LeakSummary,
        sink: LeakRowSink,
        ctx: *mut c_void,
    ) -> i32,
    /// Writes, for up to `cap` live threads that used the profiler, an
    /// address inside that thread's stack (taken when it first did) to
    /// `out`; returns how many live threads have one, which may exceed
    /// `cap` (call again with more room). Allocates nothing.
    pub thread_stacks: unsafe extern "C" fn(out: *mut u64, cap: usize) -> usize,
    /// Renders one page of the endpoint (`MWRAP=socket_dir`) for
    /// `request`: `head` once, then `body` in pieces. The same pages as the
    /// endpoint serves, for the Rack app. Returns a `STATUS_*`.
    pub render_page: unsafe extern "C" fn(
        request: *const PageRequest,
        head: PageHeadSink,
        body: BytesSink,
        ctx: *mut c_void,
    ) -> i32,
    /// Calls `sink` once with the heap as a gzip'd pprof `profile.proto`
    /// (what the endpoint's `/heap.pb.gz` serves: every (location, stack)
    /// with an allocation, its allocations and live blocks). Returns a
    /// `STATUS_*`; the sink is not called unless `STATUS_OK`.
    pub render_pprof: unsafe extern "C" fn(sink: BytesSink, ctx: *mut c_void) -> i32,
    /// How many allocations of location `id` (its stacks' included) were
    /// freed before their thread's next allocation (temporary ones); 0 for
    /// an unknown id.
    pub site_temporary: unsafe extern "C" fn(id: u32) -> u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// The layout the C side of older tools (and the docs) describe; a
    /// change here is an ABI change and needs a version bump.
    #[test]
    fn layouts_are_what_the_version_promises() {
        assert_eq!(size_of::<SiteSnapshot>(), 72);
        assert_eq!(size_of::<LocationKey>(), 48);
        assert_eq!(offset_of!(LocationKey, file), 16);
        assert_eq!(size_of::<SiteRow>(), 72 + 48 + 16);
        assert_eq!(size_of::<SiteFilter>(), 24);
        assert_eq!(size_of::<HeapPageStats>(), 8 + 2 * 40 + 8);
        assert_eq!(offset_of!(PreloadApi, sites), 8);
        assert_eq!(size_of::<PreloadApi>(), 8 + 25 * 8);
        assert_eq!(offset_of!(PreloadApi, site_temporary), 8 + 24 * 8);
        assert_eq!(size_of::<PageRequest>(), 64);
        assert_eq!(offset_of!(PreloadApi, thread_stacks), 8 + 21 * 8);
        assert_eq!(offset_of!(PreloadApi, render_page), 8 + 22 * 8);
        assert_eq!(offset_of!(PreloadApi, render_pprof), 8 + 23 * 8);
        assert_eq!(size_of::<LeakSummary>(), 9 * 8);
        assert_eq!(size_of::<LeakRow>(), 40);
        assert_eq!(size_of::<StackRow>(), 72 + 16 + 48 + 32);
    }
}
