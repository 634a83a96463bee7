//! The calling thread's record. Static TLS holds one pointer to it (glibc
//! takes static TLS out of every thread's stack, so it must stay tiny);
//! the record itself lives in memory the profiler maps.

use core::cell::Cell;

use mwrap_core::lock::LockCx;
use mwrap_core::threads::{current_tid, ThreadRecord};

use crate::state::{GATE, THREADS};
use crate::thread_data::ThreadData;

pub type Record = ThreadRecord<ThreadData>;

thread_local! {
    // const-initialised and without Drop: no lazy init, no destructor, so
    // it is usable from the first malloc of a thread to its very end.
    static RECORD: Cell<*const Record> = const { Cell::new(core::ptr::null()) };
}

/// This thread's record, claimed on first use; None when no record can be
/// had (every record taken, or no memory), and the thread runs untracked.
#[inline]
pub fn current() -> Option<&'static Record> {
    let p = RECORD.try_with(|c| c.get()).ok()?;
    if !p.is_null() {
        // SAFETY: records are never unmapped; this one is ours.
        return Some(unsafe { &*p });
    }
    claim()
}

#[cold]
fn claim() -> Option<&'static Record> {
    let record = THREADS.claim(current_tid())?;
    RECORD.try_with(|c| c.set(record)).ok()?;
    Some(record)
}

/// The owner's data of this thread's record.
#[inline]
pub fn data(record: &'static Record) -> &'static ThreadData {
    // SAFETY: `record` is the calling thread's own (from `current`), and
    // ThreadData only hands out short-lived references into its cells.
    unsafe { record.data() }
}

/// The lock context of this thread.
#[inline]
pub fn lock_cx(record: &'static Record) -> LockCx<'static> {
    LockCx {
        gate: &GATE,
        slot: &record.slot,
        me: record.id(),
    }
}

/// Runs `f` with the recursion guard set, unless the thread is already
/// inside the profiler (then None, without running it): whatever `f`
/// allocates through our hooks is untracked.
#[inline]
pub fn busy<R>(f: impl FnOnce(&'static Record, &'static ThreadData) -> R) -> Option<R> {
    let record = current()?;
    let data = data(record);
    if data.busy.get() {
        return None;
    }
    data.busy.set(true);
    let r = f(record, data);
    data.busy.set(false);
    Some(r)
}
