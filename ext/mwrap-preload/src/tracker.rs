//! Charges allocations to locations. Knows nothing of hooking: the hooks
//! hand it headers; it decides where they belong and records them in the
//! site table, through the live set's seam (`state::Live`).

use mwrap_core::abi::UNTRACKED_SITE;
use mwrap_core::sites::FreeOutcome;
use mwrap_core::LiveAllocation;

use crate::caller::Caller;
use crate::per_thread::{self, lock_cx, Record};
use crate::state::stacked;
use crate::state::{code_freed, current_generation, started, HEAP, SITES, TEMPORARY};
use crate::thread_data::{ThreadData, BUSY, DEFERRED, QUIET, READY};
use crate::{init, locate, real, ruby};

/// Charges a new block to the location running on this thread: the Ruby
/// line when it is safe to ask Ruby, else `caller` (a return address).
/// Quiet fibers and nested allocations leave the header untracked.
///
/// # Safety
/// `hdr` was just initialised with [`LiveAllocation::init`].
#[inline(always)]
pub unsafe fn charge(hdr: *mut LiveAllocation, caller: Caller) {
    let Some(record) = per_thread::current() else {
        return;
    };
    let data = per_thread::data(record);
    if data.state.get() != READY {
        // SAFETY: per this function's contract.
        unsafe { charge_slow(record, data, hdr, caller) };
        return;
    }
    data.state.set(READY | BUSY);
    // SAFETY: per this function's contract.
    unsafe { charge_to_location(record, data, hdr, caller) };
    let state = data.state.get();
    data.state.set(state & !BUSY);
    if state & DEFERRED != 0 {
        drain_deferred(record, data);
    }
}

/// `charge` on a thread that is not simply ready: before start-up, inside
/// the profiler, quiet, or with frees deferred.
///
/// # Safety
/// As for [`charge`].
#[cold]
#[inline(never)]
unsafe fn charge_slow(
    record: &'static Record,
    data: &ThreadData,
    hdr: *mut LiveAllocation,
    caller: Caller,
) {
    if !data.enter_busy() {
        return;
    }
    if data.state.get() & READY == 0 {
        if !started() {
            init::start();
        }
        data.state.set(data.state.get() | READY);
    }
    if data.state.get() & QUIET == 0 || !data.is_quiet(ruby::current_ec(data)) {
        // SAFETY: per this function's contract.
        unsafe { charge_to_location(record, data, hdr, caller) };
    }
    data.leave_busy();
    if data.state.get() & DEFERRED != 0 {
        drain_deferred(record, data);
    }
}

/// Finds the block's location and records it; on failure (a signal
/// handler inside the table) the header simply stays untracked.
///
/// # Safety
/// As for [`charge`].
#[inline(always)]
unsafe fn charge_to_location(
    record: &'static Record,
    data: &ThreadData,
    hdr: *mut LiveAllocation,
    caller: Caller,
) {
    let (site, generation) = if stacked() {
        locate::locate_stacked(record, data, caller)
    } else {
        locate::locate(record, data, caller.pc)
    };
    // SAFETY: per this function's contract.
    unsafe { SITES.record_alloc(&lock_cx(record), site, data.shard(), hdr, generation) };
    data.last_block.set(hdr as usize);
}

/// Counts the free of a block (if it is tracked) and takes it out of its
/// site's live set. Returns whether the caller may give the block back to
/// the real allocator now. False when a signal handler frees a tracked
/// block while this thread holds a table lock: the block is kept and freed
/// by this thread's next tracked allocation (or, with no room to keep it,
/// stays allocated).
///
/// # Safety
/// `hdr` is the header of a live block handed out by the preload.
#[inline(always)]
#[must_use]
pub unsafe fn release(hdr: *mut LiveAllocation) -> bool {
    // SAFETY: per this function's contract.
    let owner = unsafe { (*hdr).site() };
    if owner == UNTRACKED_SITE {
        return true; // (only tracked blocks are watched)
    }
    let Some(record) = per_thread::current() else {
        return false; // no record to lock with: the block stays allocated
    };
    // SAFETY: per this function's contract.
    match unsafe { SITES.record_free(&lock_cx(record), hdr, current_generation()) } {
        // Frees a handler deferred are done by this thread's next charge.
        FreeOutcome::Counted { watched } => {
            let data = per_thread::data(record);
            if data.last_block.get() == hdr as usize {
                data.last_block.set(0);
                count_temporary(owner);
            }
            if watched {
                code_freed();
            }
            true
        }
        FreeOutcome::Untracked => true,
        FreeOutcome::Deferred => {
            per_thread::data(record).defer_free(hdr);
            false
        }
    }
}

/// One more temporary allocation of the site `owner` names.
#[cold]
#[inline(never)]
fn count_temporary(owner: u32) {
    if let Some(t) = TEMPORARY.get_or_map(mwrap_core::sites::owner_site(owner) as usize) {
        t.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Frees the blocks a signal handler deferred, now that this thread holds
/// no table lock.
#[cold]
#[inline(never)]
fn drain_deferred(record: &'static Record, data: &ThreadData) {
    if record.slot.holds_a_lock() {
        return; // still inside the interrupted frame
    }
    while let Some(hdr) = data.pop_deferred() {
        // SAFETY: deferred blocks are live, tracked blocks of ours that
        // the program has freed.
        match unsafe { SITES.record_free(&lock_cx(record), hdr, current_generation()) } {
            FreeOutcome::Deferred => {
                data.defer_free(hdr);
                return;
            }
            outcome => {
                if outcome == (FreeOutcome::Counted { watched: true }) {
                    code_freed();
                }
                // SAFETY: the block is out of every table and the program
                // is done with it.
                unsafe { real::free_block(hdr) }
            }
        }
    }
}

/// A fresh mapping that may hold a Ruby heap page: recorded when the
/// thread that made it holds the GVL (Ruby's GC maps pages under it).
pub fn heap_mapping(start: usize, len: usize) {
    per_thread::busy(|record, data| {
        if let Some(generation) = ruby::generation_with_gvl(data) {
            HEAP.record_mapping(&lock_cx(record), start, len, generation);
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
    per_thread::busy(|record: &'static Record, data| {
        let cx = lock_cx(record);
        if HEAP.may_hold_page(&cx, start, len) {
            let generation = ruby::generation_with_gvl(data).unwrap_or_else(current_generation);
            HEAP.record_unmap(&cx, start, len, generation);
        }
    });
}
