//! Per-thread memory of the stacked path (`MWRAP=bt`, `ruby_bt`,
//! `app_root`): the unwinder's rule cache, the caches that turn a Ruby
//! frame into its `file:line` and a stack into its site without a lock,
//! and scratch space for the frames of the allocation being charged.
//!
//! About 100 KiB per thread, mapped (zeroed, by the profiler itself) the
//! first time the thread charges an allocation with stacks on, and kept
//! with the thread's record slot: a thread that takes over a dead thread's
//! record takes over its caches, which stay valid (they describe the
//! process, not the thread). Static TLS stays one pointer.

use core::sync::atomic::{AtomicPtr, Ordering};

use mwrap_core::mem::{map_zeroed, ChunkedArray, ZeroInit};
use mwrap_core::stacks::{RubyFrame, MAX_FRAMES};
use mwrap_core::threads::MAX_THREADS;

use crate::per_thread::Record;
use crate::ruby::RawFrame;
use crate::thread_data::ThreadData;
use crate::unwind::RuleCache;

const LINE_SLOTS: usize = 1024;
const STACK_SLOTS: usize = 1024;

/// A Ruby frame seen on this thread and its `file:line`; valid in the
/// code epoch it was made in (see `state::code_epoch`), like the ruby site
/// cache of `thread_data`.
#[derive(Clone, Copy, Default)]
struct LineEntry {
    frame: RawFrame,
    epoch: u64,
    resolved: RubyFrame,
}

/// A stack seen on this thread: its hash and location, and the site they
/// were charged to (checked against the tables on use).
#[derive(Clone, Copy, Default)]
struct StackEntry {
    hash: u64,
    location: u32,
    site: u32,
}

/// Which site a stack seen on this thread was charged to.
pub struct StackSites {
    entries: [StackEntry; STACK_SLOTS],
}

/// One thread's caches and scratch frames.
pub struct FrameCaches {
    pub rules: RuleCache,
    lines: [LineEntry; LINE_SLOTS],
    pub stack_sites: StackSites,
    /// The Ruby frames walked for the allocation being charged.
    pub raw: [RawFrame; MAX_FRAMES],
    /// Their locations, as far as resolved.
    pub ruby: [RubyFrame; MAX_FRAMES],
    /// The native return addresses of the allocation being charged.
    pub native: [u64; MAX_FRAMES],
}

// The rule cache is the largest part; keep the whole under ~100 KiB.
const _: () = assert!(core::mem::size_of::<FrameCaches>() < 100 * 1024);

// SAFETY: integers, plain structs of integers and the rule cache, whose
// all-zero bytes are an empty cache.
unsafe impl ZeroInit for FrameCaches {}

/// Every record slot's caches, by record index.
static CACHES: ChunkedArray<AtomicPtr<FrameCaches>, 64, { MAX_THREADS / 64 }> = ChunkedArray::new();

/// The calling thread's caches, mapped on first use; None when no memory
/// can be had (the allocation is then charged without stacks).
#[inline]
// The caches belong to the thread, not to the shared record they hang off.
#[allow(clippy::mut_from_ref)]
pub fn caches(record: &'static Record, data: &ThreadData) -> Option<&'static mut FrameCaches> {
    let slot = CACHES.get_or_map(record.id().checked_sub(1)? as usize)?;
    let mut p = slot.load(Ordering::Acquire);
    if p.is_null() {
        p = map_zeroed(core::mem::size_of::<FrameCaches>())?.as_ptr() as *mut FrameCaches;
        slot.store(p, Ordering::Release);
    }
    // SAFETY: the slot belongs to the calling thread's record, which only
    // its owner uses, and the owner holds no other reference to it (the
    // stacked path takes it once per allocation, and a signal handler's
    // allocation on this thread stays untracked while it runs).
    let caches = unsafe { &mut *p };
    if !data.frame_caches_owned.get() {
        // A new thread on this record: the unwinder's cache remembers
        // which stack pages of the old thread were readable.
        caches.rules.clear();
        data.frame_caches_owned.set(true);
    }
    Some(caches)
}

impl FrameCaches {
    #[inline]
    fn line_slot(frame: &RawFrame) -> usize {
        let h = (frame.iseq as u64
            ^ (frame.pc as u64).rotate_left(29)
            ^ (frame.path as u64).rotate_left(47))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 54) as usize & (LINE_SLOTS - 1)
    }

    #[inline]
    pub fn cached_line(&self, frame: &RawFrame, epoch: u64) -> Option<RubyFrame> {
        let e = &self.lines[Self::line_slot(frame)];
        (e.frame == *frame && e.epoch == epoch && e.resolved.0 != 0).then_some(e.resolved)
    }

    #[inline]
    pub fn cache_line(&mut self, frame: &RawFrame, epoch: u64, resolved: RubyFrame) {
        self.lines[Self::line_slot(frame)] = LineEntry {
            frame: *frame,
            epoch,
            resolved,
        };
    }
}

impl StackSites {
    #[inline]
    fn slot(hash: u64) -> usize {
        (hash >> 54) as usize & (STACK_SLOTS - 1)
    }

    /// The site last charged with a stack of this hash at `location`
    /// (the caller checks it still holds those frames).
    #[inline]
    pub fn get(&self, hash: u64, location: u32) -> Option<u32> {
        let e = &self.entries[Self::slot(hash)];
        (e.hash == hash && e.location == location && e.site != 0).then_some(e.site)
    }

    #[inline]
    pub fn set(&mut self, hash: u64, location: u32, site: u32) {
        self.entries[Self::slot(hash)] = StackEntry {
            hash,
            location,
            site,
        };
    }
}
