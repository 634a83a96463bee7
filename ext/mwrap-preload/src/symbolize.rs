//! What naming native frames needs, kept by the preload: the one
//! [`Symbolizer`] (behind a lock of its own, made on first use, on the
//! read side only) and the log of objects `dlclose`d, each captured by the
//! `dlclose` hook before the real close (see `loader`), so that a frame of
//! an object gone since keeps its name.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use mwrap_core::mem::{ChunkedArray, ZeroInit};
use mwrap_symbols::{ModuleRecord, Symbolizer};

/// The symbolizer, locked by the thread using it.
pub struct SymbolizerCell {
    /// Kernel thread id of the holder, 0 when free.
    owner: AtomicU32,
    inner: UnsafeCell<Option<Symbolizer>>,
}

// SAFETY: `inner` is only touched by the thread that set `owner`.
unsafe impl Sync for SymbolizerCell {}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

impl SymbolizerCell {
    pub const fn new() -> Self {
        SymbolizerCell {
            owner: AtomicU32::new(0),
            inner: UnsafeCell::new(None),
        }
    }

    /// Runs `f` with the symbolizer (made on first use, trusting the
    /// loader's state when `loader_trusted` says so); None when this thread
    /// already holds it (a signal handler that interrupted naming, such as
    /// an exit dump), and the caller names frames without it.
    pub fn with<R>(
        &self,
        loader_trusted: fn() -> bool,
        f: impl FnOnce(&mut Symbolizer) -> R,
    ) -> Option<R> {
        let me = gettid();
        loop {
            match self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(holder) if holder == me => return None,
                // Naming is slow (it may read debug files); readers are
                // rare: yielding beats a futex here.
                // SAFETY: sched_yield has no preconditions.
                Err(_) => unsafe {
                    libc::sched_yield();
                },
            }
        }
        // SAFETY: this thread holds the cell (set `owner` above).
        let inner = unsafe { &mut *self.inner.get() };
        let r = f(inner.get_or_insert_with(|| {
            let mut s = Symbolizer::new();
            s.set_loader_check(loader_trusted);
            s
        }));
        self.owner.store(0, Ordering::Release);
        Some(r)
    }

    /// In a fork child: a holder that was another thread is gone; its
    /// half-made state is dropped (leaked, not freed) and the lock opened.
    pub fn after_fork_in_child(&self) {
        if self.owner.load(Ordering::Relaxed) != 0 {
            // SAFETY: the only thread of the child; the old value may be
            // mid-update, so it is forgotten rather than dropped.
            unsafe { core::mem::forget((*self.inner.get()).take()) };
            self.owner.store(0, Ordering::Release);
        }
    }
}

/// One closed object, and the `dlclose` count it was closed at.
struct ClosedModule {
    /// 0 until `record` is written.
    seq: AtomicU32,
    record: UnsafeCell<ModuleRecord>,
}

// SAFETY: an all-zero ModuleRecord is a valid (empty) record: integers,
// a bool and byte arrays; a zero `seq` marks the slot unwritten.
unsafe impl ZeroInit for ClosedModule {}

const CLOSED_PER_CHUNK: usize = 64;
const CLOSED_CHUNKS: usize = 64;
/// Closed objects remembered; past this, frames of later closes are named
/// after what is loaded at their address when read.
pub const MAX_CLOSED: usize = CLOSED_PER_CHUNK * CLOSED_CHUNKS;

/// Objects closed so far, in the order of their closes.
pub struct ClosedModules {
    slots: ChunkedArray<ClosedModule, CLOSED_PER_CHUNK, CLOSED_CHUNKS>,
    next: AtomicU32,
    /// The lowest `map_start` and highest `map_end` of the records kept:
    /// an address outside them is in no closed object, and naming it
    /// skips the scan (which otherwise costs every frame of every stack
    /// up to MAX_CLOSED steps once a program has dlclosed that often).
    lowest: AtomicUsize,
    highest: AtomicUsize,
}

// SAFETY: a slot's record is written once, by the thread that reserved it,
// before its `seq` is published; readers skip slots with `seq` 0.
unsafe impl Sync for ClosedModules {}

impl ClosedModules {
    pub const fn new() -> Self {
        ClosedModules {
            slots: ChunkedArray::new(),
            next: AtomicU32::new(0),
            lowest: AtomicUsize::new(usize::MAX),
            highest: AtomicUsize::new(0),
        }
    }

    /// Keeps `record`, closed as `dlclose` number `seq`.
    pub fn push(&self, seq: u32, record: &ModuleRecord) {
        let i = self.next.fetch_add(1, Ordering::AcqRel) as usize;
        let Some(slot) = self.slots.get_or_map(i) else {
            return;
        };
        // SAFETY: slot `i` was reserved by this thread alone and is not
        // published yet.
        unsafe { *slot.record.get() = *record };
        self.lowest.fetch_min(record.map_start(), Ordering::AcqRel);
        self.highest.fetch_max(record.map_end(), Ordering::AcqRel);
        slot.seq.store(seq, Ordering::Release);
    }

    /// The object that held `address` when a stack was first seen after
    /// `epoch` closes, if it was closed since: the first one closed after
    /// that which covered the address.
    pub fn closed_since(&self, epoch: u32, address: usize) -> Option<ModuleRecord> {
        // A record published after these loads is one closed while this
        // name is made: it may be missed, as it may be by the scan.
        if address < self.lowest.load(Ordering::Acquire)
            || address >= self.highest.load(Ordering::Acquire)
        {
            return None;
        }
        let n = (self.next.load(Ordering::Acquire) as usize).min(MAX_CLOSED);
        let mut best: Option<(u32, ModuleRecord)> = None;
        for i in 0..n {
            let Some(slot) = self.slots.get(i) else {
                break;
            };
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == 0 || seq <= epoch || best.is_some_and(|(s, _)| s <= seq) {
                continue;
            }
            // SAFETY: a published slot's record is never written again.
            let record = unsafe { *slot.record.get() };
            if record.contains(address) {
                best = Some((seq, record));
            }
        }
        best.map(|(_, r)| r)
    }
}
