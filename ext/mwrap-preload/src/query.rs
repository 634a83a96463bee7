//! The read side of the preload, exported to the Ruby extension as one
//! function table. Every function copies what it needs under the table's
//! locks and calls the extension's sink only after releasing them.

use core::ffi::c_void;

use mwrap_core::abi::{
    BytesSink, HeapPageSink, HeapPageStats, LiveSink, PreloadApi, SiteSnapshot, SnapshotSink,
    ABI_VERSION,
};
use mwrap_core::location::parse_location;

use crate::tracker::{self, HEAP, TABLE};
use crate::{names, ruby, thread_state};

pub static API: PreloadApi = PreloadApi {
    abi_version: ABI_VERSION,
    struct_size: core::mem::size_of::<PreloadApi>() as u32,
    snapshot_sites,
    site_snapshot,
    site_name,
    site_lookup,
    site_live,
    reset,
    total_bytes_allocated,
    total_bytes_freed,
    quiet_enter,
    quiet_exit,
    current_generation,
    attach_ruby,
    heap_pages,
    heap_stats,
    heap_page_size,
};

/// Snapshots of every location with total strictly above `min`.
pub fn sites_above(min: u64) -> Vec<SiteSnapshot> {
    (1..=TABLE.site_count())
        .filter_map(|id| TABLE.snapshot(id))
        .filter(|s| s.total > min)
        .collect()
}

unsafe extern "C" fn snapshot_sites(min: u64, sink: SnapshotSink, ctx: *mut c_void) {
    let sites = sites_above(min);
    sink(ctx, sites.as_ptr(), sites.len());
}

unsafe extern "C" fn site_snapshot(id: u32, out: *mut SiteSnapshot) -> bool {
    match TABLE.snapshot(id) {
        Some(s) => {
            out.write(s);
            true
        }
        None => false,
    }
}

unsafe extern "C" fn site_name(id: u32, sink: BytesSink, ctx: *mut c_void) -> bool {
    let mut name = Vec::new();
    if !names::site_name(id, &mut name) {
        return false;
    }
    sink(ctx, name.as_ptr(), name.len());
    true
}

unsafe extern "C" fn site_lookup(name: *const u8, len: usize) -> u32 {
    if name.is_null() {
        return 0;
    }
    let name = core::slice::from_raw_parts(name, len);
    parse_location(name)
        .and_then(|key| TABLE.lookup(key))
        .unwrap_or(0)
}

unsafe extern "C" fn site_live(id: u32, sink: LiveSink, ctx: *mut c_void) -> bool {
    let mut live = Vec::new();
    if !TABLE.live(id, tracker::current_generation(), &mut live) {
        return false;
    }
    sink(ctx, live.as_ptr(), live.len());
    true
}

unsafe extern "C" fn reset() {
    TABLE.reset();
}

unsafe extern "C" fn total_bytes_allocated() -> u64 {
    sites_above(0).iter().map(|s| s.total).sum()
}

unsafe extern "C" fn total_bytes_freed() -> u64 {
    sites_above(0).iter().map(|s| s.freed_bytes).sum()
}

unsafe extern "C" fn quiet_enter() -> u32 {
    thread_state::with(|ts| {
        let depth = ts.quiet.get().saturating_add(1);
        ts.quiet.set(depth);
        depth
    })
    .unwrap_or(0)
}

unsafe extern "C" fn quiet_exit() -> u32 {
    thread_state::with(|ts| {
        let depth = ts.quiet.get().saturating_sub(1);
        ts.quiet.set(depth);
        depth
    })
    .unwrap_or(0)
}

unsafe extern "C" fn current_generation() -> u64 {
    tracker::current_generation()
}

unsafe extern "C" fn attach_ruby() {
    thread_state::guarded(|_| ruby::attach());
}

unsafe extern "C" fn heap_pages(sink: HeapPageSink, ctx: *mut c_void) {
    let mut pages = Vec::new();
    HEAP.live(&mut pages);
    sink(ctx, pages.as_ptr(), pages.len());
}

unsafe extern "C" fn heap_stats(out: *mut HeapPageStats) {
    out.write(HEAP.stats());
}

unsafe extern "C" fn heap_page_size() -> u64 {
    HEAP.page_size() as u64
}
