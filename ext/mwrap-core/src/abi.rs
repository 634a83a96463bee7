//! The C ABI between the preload library (which owns every table) and the
//! Ruby extension (which only reads them).
//!
//! The preload exports one symbol, [`PRELOAD_API_SYMBOL`], whose value is a
//! `&'static PreloadApi`. The extension finds it with `dlsym` at load time and
//! refuses to use it unless `abi_version == ABI_VERSION` and `struct_size` is
//! at least its own idea of the struct's size. Bump [`ABI_VERSION`] whenever a
//! field changes meaning or position; only appending fields is compatible.

use core::ffi::c_void;

/// Version of [`PreloadApi`]. Both libraries are built from one tree, so a
/// mismatch means a stale preload library is first in `LD_PRELOAD`.
pub const ABI_VERSION: u32 = 2;

/// Name of the exported function returning `*const PreloadApi`.
pub const PRELOAD_API_SYMBOL: &[u8] = b"mwrap_preload_api\0";

/// Site id 0 is never a real location: it marks allocations that are not
/// tracked (made while quiet, inside the profiler itself, or orphaned by a
/// reset).
pub const UNTRACKED_SITE: u32 = 0;

/// A copy of one location's counters, taken under that location's lock.
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

/// Receives a batch of site snapshots. Called with no lock held.
pub type SnapshotSink =
    unsafe extern "C" fn(ctx: *mut c_void, sites: *const SiteSnapshot, n: usize);
/// Receives a batch of live allocations. Called with no lock held.
pub type LiveSink =
    unsafe extern "C" fn(ctx: *mut c_void, live: *const LiveAllocationInfo, n: usize);
/// Receives a batch of live heap pages. Called with no lock held.
pub type HeapPageSink =
    unsafe extern "C" fn(ctx: *mut c_void, pages: *const HeapPageInfo, n: usize);
/// Receives bytes (a location name). Called with no lock held.
pub type BytesSink = unsafe extern "C" fn(ctx: *mut c_void, bytes: *const u8, len: usize);

/// Function table exported by the preload library.
#[repr(C)]
pub struct PreloadApi {
    pub abi_version: u32,
    /// `size_of::<PreloadApi>()` in the preload that filled it.
    pub struct_size: u32,
    /// Calls `sink` (possibly several times) with every location whose total
    /// is strictly above `min`.
    pub snapshot_sites: unsafe extern "C" fn(min: u64, sink: SnapshotSink, ctx: *mut c_void),
    /// Copies one location's counters; false if `id` is unknown.
    pub site_snapshot: unsafe extern "C" fn(id: u32, out: *mut SiteSnapshot) -> bool,
    /// Calls `sink` once with the location's printable name; false if unknown.
    pub site_name: unsafe extern "C" fn(id: u32, sink: BytesSink, ctx: *mut c_void) -> bool,
    /// Finds the id of a location by its printed name (`file.rb:LINE`, or a
    /// native name holding `[0xADDR]`, or a bare `0xADDR`); 0 when never seen.
    pub site_lookup: unsafe extern "C" fn(name: *const u8, len: usize) -> u32,
    /// Calls `sink` with a copy of the location's live allocations; false if unknown.
    pub site_live: unsafe extern "C" fn(id: u32, sink: LiveSink, ctx: *mut c_void) -> bool,
    /// Zeroes every counter and stops tracking the allocations live now.
    pub reset: unsafe extern "C" fn(),
    pub total_bytes_allocated: unsafe extern "C" fn() -> u64,
    pub total_bytes_freed: unsafe extern "C" fn() -> u64,
    /// Enters a quiet section on the calling thread; returns the new depth.
    pub quiet_enter: unsafe extern "C" fn() -> u32,
    /// Leaves a quiet section on the calling thread; returns the new depth.
    pub quiet_exit: unsafe extern "C" fn() -> u32,
    /// The GC generation last seen by the preload.
    pub current_generation: unsafe extern "C" fn() -> u64,
    /// Asks the preload to look for Ruby's symbols again (for a libruby
    /// loaded with dlopen after the preload initialised).
    pub attach_ruby: unsafe extern "C" fn(),
    // --- ABI 2 ---
    /// Calls `sink` with every live Ruby heap page, by address.
    pub heap_pages: unsafe extern "C" fn(sink: HeapPageSink, ctx: *mut c_void),
    /// Copies the heap page statistics.
    pub heap_stats: unsafe extern "C" fn(out: *mut HeapPageStats),
    /// Size (and alignment) of a Ruby heap page as the preload tracks it.
    pub heap_page_size: unsafe extern "C" fn() -> u64,
}
