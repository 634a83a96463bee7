//! Charges allocations to locations. Knows nothing of hooking: the hooks
//! hand it headers, it decides where they belong and records them in the
//! one [`SiteTable`] of the process.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use mwrap_core::heap::HeapPageTable;
use mwrap_core::{KeyRef, LiveAllocation, SiteTable};

use crate::{exit_dump, fork, ruby, thread_state};

/// Every location of this process.
pub static TABLE: SiteTable = SiteTable::new();

/// Ruby's live heap pages.
pub static HEAP: HeapPageTable = HeapPageTable::new();

/// The newest GC generation seen by any thread holding the GVL. Frees and
/// native allocations use it instead of asking Ruby (which needs the GVL).
static LAST_GENERATION: AtomicU64 = AtomicU64::new(0);

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const STARTED: u8 = 2;
static START: AtomicU8 = AtomicU8::new(NOT_STARTED);

pub fn current_generation() -> u64 {
    LAST_GENERATION.load(Ordering::Relaxed)
}

/// One-time start of the profiler, on the first tracked allocation: read
/// `MWRAP`, look for Ruby, register fork handlers. Runs with the recursion
/// guard held, so whatever it allocates is untracked.
#[cold]
fn start() {
    if START
        .compare_exchange(NOT_STARTED, STARTING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    exit_dump::configure_from_env();
    ruby::attach();
    fork::register();
    START.store(STARTED, Ordering::Release);
}

/// Charges a new block to the location running on this thread: the Ruby
/// line when it is safe to ask Ruby, else `caller` (a return address).
/// Quiet threads and nested allocations leave the header untracked.
///
/// # Safety
/// `hdr` was just initialised with [`LiveAllocation::init`].
#[inline]
pub unsafe fn charge(hdr: *mut LiveAllocation, caller: usize) {
    thread_state::guarded(|ts| {
        if ts.quiet.get() > 0 {
            return;
        }
        if START.load(Ordering::Acquire) != STARTED {
            start();
        }
        let (site, generation) = locate(ts, caller);
        TABLE.record_alloc(site, ts.shard(), hdr, generation);
    });
}

/// Counts the free of a block (if it is tracked) and unlinks it. Returns
/// false when the block must stay allocated: a tracked block freed by the
/// forking thread inside another fork handler, while this thread holds the
/// table's locks (leaking it is the only safe choice).
///
/// # Safety
/// `hdr` is the header of a live block handed out by the preload.
#[inline]
#[must_use]
pub unsafe fn release(hdr: *mut LiveAllocation) -> bool {
    if fork::must_not_touch_tables() && (*hdr).site() != mwrap_core::abi::UNTRACKED_SITE {
        return false;
    }
    TABLE.record_free(hdr, current_generation());
    true
}

#[inline]
fn locate(ts: &thread_state::ThreadState, caller: usize) -> (u32, u64) {
    if let Some(frame) = ruby::current_frame(ts) {
        let generation = frame.generation;
        if LAST_GENERATION.load(Ordering::Relaxed) != generation {
            LAST_GENERATION.store(generation, Ordering::Relaxed);
        }
        if let Some(site) = ts.cached_ruby_site(frame.key, generation) {
            return (site, generation);
        }
        if let Some((file, line)) = frame.location() {
            // SAFETY: Ruby returned a NUL-terminated file name.
            let file = unsafe { core::ffi::CStr::from_ptr(file) }.to_bytes();
            let site = TABLE.intern(KeyRef::Ruby { file, line });
            ts.cache_ruby_site(frame.key, generation, site);
            return (site, generation);
        }
    }
    let site = match ts.cached_native_site(caller) {
        Some(site) => site,
        None => {
            let site = TABLE.intern(KeyRef::Native { address: caller });
            ts.cache_native_site(caller, site);
            site
        }
    };
    (site, current_generation())
}

/// A fresh mapping that may hold a Ruby heap page: recorded when the
/// thread that made it holds the GVL (Ruby's GC maps pages under it).
pub fn heap_mapping(start: usize, len: usize) {
    thread_state::guarded(|ts| {
        if let Some(generation) = ruby::generation_with_gvl(ts) {
            HEAP.record_mapping(start, len, generation);
        }
    });
}

/// `[start, start + len)` was unmapped: forget the heap pages in it.
/// Pages freed while the VM is destroyed are kept, so the exit dump shows
/// the heap as it was when the program ended.
pub fn heap_unmapped(start: usize, len: usize) {
    if ruby::vm_torn_down() {
        return;
    }
    thread_state::guarded(|ts| {
        if HEAP.may_hold_page(start, len) {
            let generation = ruby::generation_with_gvl(ts).unwrap_or_else(current_generation);
            HEAP.record_unmap(start, len, generation);
        }
    });
}
