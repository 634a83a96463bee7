//! One record per live thread, in memory the profiler maps itself.
//!
//! glibc carves every thread's static TLS out of its stack, so the preload
//! keeps almost nothing in TLS (a pointer to its record): a thread created
//! with a 16 KiB stack must not lose kilobytes to us. Records also give the
//! forking thread a list of every thread's [`LockSlot`] to wait on.
//!
//! A thread claims a free record on its first use of the profiler and
//! keeps it for life. There is no hook at thread exit that is safe to use
//! from a preload (TLS destructors take the loader's lock), so a record is
//! reclaimed lazily: when no record is free, one whose thread no longer
//! exists (`tgkill(pid, tid, 0)` says ESRCH) is taken over.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::lock::{ForkGate, LockSlot};
use crate::mem::{ChunkedArray, ZeroInit};

const RECORDS_PER_CHUNK: usize = 64;
const CHUNKS: usize = 256;
/// The most threads that can hold a record at once; further threads run
/// untracked.
pub const MAX_THREADS: usize = RECORDS_PER_CHUNK * CHUNKS;

/// One thread's record: who owns it, its lock slot, and the per-thread
/// data `R` that only the owner touches.
#[repr(C, align(64))]
pub struct ThreadRecord<R> {
    /// Kernel thread id of the owner, 0 when free.
    tid: AtomicU32,
    /// 1 + this record's index: the thread's id for the fork gate.
    id: AtomicU32,
    /// An address inside the owner's stack (a local of the claim), so that
    /// a reader can find the stack's mapping; 0 when free.
    stack: AtomicUsize,
    pub slot: LockSlot,
    data: UnsafeCell<R>,
}

// SAFETY: every field accepts zero bytes when `R` does (an id of 0 is set
// on claim).
unsafe impl<R: ZeroInit> ZeroInit for ThreadRecord<R> {}

impl<R> ThreadRecord<R> {
    /// This thread's id for the fork gate (never 0 once claimed).
    #[inline]
    pub fn id(&self) -> u32 {
        self.id.load(Ordering::Relaxed)
    }

    /// The owner's data (`R` keeps its state in cells).
    ///
    /// # Safety
    /// Only the owning thread may call this: `R` need not be `Sync`.
    #[inline]
    pub unsafe fn data(&self) -> &R {
        // SAFETY: the caller is the owner (see above).
        unsafe { &*self.data.get() }
    }

    fn tid(&self) -> u32 {
        self.tid.load(Ordering::Acquire)
    }
}

/// Every thread record of the process.
pub struct ThreadRegistry<R: ZeroInit + 'static> {
    /// The gate every record's lock slot answers to.
    gate: &'static ForkGate,
    records: ChunkedArray<ThreadRecord<R>, RECORDS_PER_CHUNK, CHUNKS>,
    /// Records handed out so far (a high-water mark of indexes in use).
    high: AtomicUsize,
}

// SAFETY: shared state is atomics; `data` is only touched by its owner.
unsafe impl<R: ZeroInit> Sync for ThreadRegistry<R> {}

#[cfg(test)]
static TEST_GATE: ForkGate = ForkGate::new();

impl<R: ZeroInit> ThreadRegistry<R> {
    pub const fn new(gate: &'static ForkGate) -> Self {
        ThreadRegistry {
            gate,
            records: ChunkedArray::new(),
            high: AtomicUsize::new(0),
        }
    }

    /// A record for the calling thread (kernel id `tid`): a free one, one
    /// whose thread is gone, or a new one. None when every record is taken
    /// or no memory can be mapped.
    pub fn claim(&self, tid: u32) -> Option<&ThreadRecord<R>> {
        let high = self.high.load(Ordering::Acquire);
        for i in 0..high {
            if let Some(r) = self.take(i, 0, tid) {
                return Some(r);
            }
        }
        for i in 0..high {
            let Some(r) = self.records.get(i) else {
                continue;
            };
            let owner = r.tid();
            if owner != 0 && owner != tid && !thread_alive(owner) {
                if let Some(r) = self.take(i, owner, tid) {
                    return Some(r);
                }
            }
        }
        loop {
            let i = self.high.load(Ordering::Acquire);
            if i >= MAX_THREADS {
                return None;
            }
            self.records.get_or_map(i)?;
            if self
                .high
                .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if let Some(r) = self.take(i, 0, tid) {
                    return Some(r);
                }
            }
        }
    }

    /// Takes record `i` from owner `from` (0: free) for `tid`, resetting it.
    fn take(&self, i: usize, from: u32, tid: u32) -> Option<&ThreadRecord<R>> {
        let r = self.records.get(i)?;
        r.tid
            .compare_exchange(from, tid, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        // SAFETY: the record is ours now; zero bytes are a valid `R`.
        unsafe { core::ptr::write_bytes(r.data.get(), 0, 1) };
        r.id.store(i as u32 + 1, Ordering::Relaxed);
        // One store on the (cold) claim path: any address inside this
        // thread's stack names its mapping.
        let on_stack = 0u8;
        let here = core::hint::black_box(&on_stack) as *const u8 as usize;
        r.stack.store(here, Ordering::Relaxed);
        r.slot.bind(self.gate, i as u32 + 1);
        Some(r)
    }

    /// Every record that some thread owns.
    pub fn claimed(&self) -> impl Iterator<Item = &ThreadRecord<R>> {
        let high = self.high.load(Ordering::Acquire);
        (0..high).filter_map(|i| self.records.get(i).filter(|r| r.tid() != 0))
    }

    /// Calls `f` with an address inside the stack of every thread that
    /// holds a record and still exists (records of exited threads wait to
    /// be taken over, so each is checked). Read side only: one syscall per
    /// record.
    pub fn live_stacks(&self, mut f: impl FnMut(usize)) {
        for r in self.claimed() {
            let stack = r.stack.load(Ordering::Relaxed);
            if stack != 0 && thread_alive(r.tid()) {
                f(stack);
            }
        }
    }

    /// Gives the record up (the thread will not use the profiler again).
    pub fn release(&self, record: &ThreadRecord<R>) {
        record.tid.store(0, Ordering::Release);
    }

    /// In a fork child only the forking thread exists: its record now
    /// belongs to its new kernel id, and every other record is free.
    pub fn after_fork_in_child(&self, mine: &ThreadRecord<R>, tid: u32) {
        for r in self.claimed() {
            if !core::ptr::eq(r, mine) {
                r.slot.clear();
                r.tid.store(0, Ordering::Relaxed);
            }
        }
        mine.tid.store(tid, Ordering::Relaxed);
    }
}

/// The calling thread's kernel id.
pub fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Whether thread `tid` of this process still exists. Signal 0 is not
/// sent: the kernel only checks that the thread could receive one.
fn thread_alive(tid: u32) -> bool {
    crate::errno::preserved(|| {
        // SAFETY: getpid and tgkill with signal 0 deliver nothing.
        let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::c_long, 0) };
        rc == 0 || crate::errno::get() != libc::ESRCH
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Data {
        counter: core::cell::Cell<u64>,
    }
    // SAFETY: a plain integer.
    unsafe impl ZeroInit for Data {}

    #[test]
    fn claims_are_distinct_and_data_starts_zeroed() {
        let reg: ThreadRegistry<Data> = ThreadRegistry::new(&TEST_GATE);
        let a = reg.claim(current_tid()).unwrap();
        // SAFETY: this test thread plays the owner of both records.
        unsafe { a.data().counter.set(7) };
        let b = reg.claim(current_tid()).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(reg.claimed().count(), 2);
        reg.release(a);
        let c = reg.claim(current_tid()).unwrap();
        assert_eq!(c.id(), a.id());
        // SAFETY: as above.
        assert_eq!(unsafe { c.data().counter.get() }, 0);
    }

    #[test]
    fn records_of_dead_threads_are_taken_over() {
        let reg: &'static ThreadRegistry<Data> =
            Box::leak(Box::new(ThreadRegistry::new(&TEST_GATE)));
        let first = std::thread::spawn(move || reg.claim(current_tid()).unwrap().id())
            .join()
            .unwrap();
        // That thread is gone: its record is reused rather than a new one.
        let again = reg.claim(current_tid()).unwrap();
        assert_eq!(again.id(), first);
        assert_eq!(reg.claimed().count(), 1);
    }

    #[test]
    fn a_fork_child_keeps_only_its_own_record() {
        let reg: ThreadRegistry<Data> = ThreadRegistry::new(&TEST_GATE);
        let mine = reg.claim(current_tid()).unwrap();
        let other = reg.claim(current_tid() + 1_000_000).unwrap();
        other.slot.clear();
        reg.after_fork_in_child(mine, 424242);
        assert_eq!(reg.claimed().count(), 1);
        assert_eq!(reg.claimed().next().unwrap().id(), mine.id());
        assert_eq!(mine.tid(), 424242);
    }

    #[test]
    fn live_stacks_name_each_live_threads_own_stack() {
        let reg: &'static ThreadRegistry<Data> =
            Box::leak(Box::new(ThreadRegistry::new(&TEST_GATE)));
        let local = 0u8;
        let mine = &local as *const u8 as usize;
        reg.claim(current_tid()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let local = 0u8;
            reg.claim(current_tid()).unwrap();
            tx.send(&local as *const u8 as usize).unwrap();
            done_rx.recv().unwrap();
        });
        let theirs = rx.recv().unwrap();
        let mut seen = Vec::new();
        reg.live_stacks(|a| seen.push(a));
        assert_eq!(seen.len(), 2);
        // Each address lies within a megabyte of a local of its thread.
        let near = |a: usize, b: usize| a.abs_diff(b) < 1 << 20;
        assert!(seen.iter().any(|&a| near(a, mine)));
        assert!(seen.iter().any(|&a| near(a, theirs)));
        done_tx.send(()).unwrap();
        other.join().unwrap();
        let mut gone = false;
        for _ in 0..1000 {
            let mut n = 0;
            reg.live_stacks(|_| n += 1);
            if n == 1 {
                gone = true;
                break;
            }
            std::thread::yield_now();
        }
        assert!(gone, "an exited thread's stack is still listed");
    }

    #[test]
    fn only_live_threads_count_as_alive() {
        assert!(thread_alive(current_tid()));
        let tid = std::thread::spawn(current_tid).join().unwrap();
        // The kernel may take a moment to reap a joined thread's id.
        let mut dead = false;
        for _ in 0..1000 {
            if !thread_alive(tid) {
                dead = true;
                break;
            }
            std::thread::yield_now();
        }
        assert!(dead);
    }
}
