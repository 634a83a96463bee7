//! The table's locks, and the gate that lets a `fork` through without
//! taking them.
//!
//! A [`TableLock`] is a bare futex word: no per-thread data, no global wait
//! queue, no allocation. (parking_lot creates per-thread data lazily and
//! registers its destructor with `__cxa_thread_atexit_impl`, which takes the
//! dynamic loader's lock: a fork could then deadlock against a thread in
//! `dlclose` waiting in our `free` hook.)
//!
//! Fork safety comes from the [`ForkGate`] instead of from holding every
//! lock: a child must never inherit a lock held by a thread that does not
//! exist in it. Every thread announces, in its [`LockSlot`], the lock it is
//! about to take, and checks the gate after announcing; the forking thread
//! closes the gate and then waits until no other thread announces a lock.
//! The store-then-load on both sides is a Dekker handshake: the hot side
//! pays a compiler fence only, the forking side a `membarrier` system call
//! that makes every thread of the process execute a full fence (when the
//! kernel has no `membarrier`, both sides use a full fence). The handler's
//! cost is one system call and one look at each thread, whatever the size
//! of the tables.
//!
//! Rules that make this deadlock-free:
//! - A thread holds at most one table lock at a time, and announces it
//!   before taking it.
//! - A thread never sleeps at the gate while holding a lock.
//! - A signal handler that interrupts a thread holding a lock cannot take
//!   a lock on that thread ([`TableLock::lock`] says so, and the caller
//!   defers its work); readers may look through ([`TableLock::read`]).
//! - The forking thread does not wait for a thread whose announced lock is
//!   the one the forking thread itself holds (a handler interrupted it):
//!   that thread is waiting for the lock, not holding it, and stays so
//!   until the fork is over.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{compiler_fence, fence, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and some thread may be sleeping in `futex_wait`.
const CONTENDED: u32 = 2;

/// Spins before sleeping: the locks are held for a few dozen instructions.
const SPINS: u32 = 100;

/// What one thread tells the forking thread: the address of the table lock
/// it holds or is about to take, 0 for none. It also names the thread (its
/// id for the gate) and the gate it answers to, so that a lock needs only
/// this one pointer from the caller.
pub struct LockSlot {
    held: AtomicUsize,
    me: AtomicU32,
    gate: AtomicPtr<ForkGate>,
}

// SAFETY: atomics only; a zeroed slot holds nothing and is bound before use.
unsafe impl crate::mem::ZeroInit for LockSlot {}

impl Default for LockSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl LockSlot {
    pub const fn new() -> Self {
        LockSlot {
            held: AtomicUsize::new(0),
            me: AtomicU32::new(0),
            gate: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Makes this the slot of thread `me` (never 0) under `gate`.
    pub fn bind(&self, gate: &'static ForkGate, me: u32) {
        self.held.store(0, Ordering::Relaxed);
        self.me.store(me, Ordering::Relaxed);
        self.gate
            .store(gate as *const ForkGate as *mut ForkGate, Ordering::Release);
    }

    /// True while this thread holds (or waits for) a table lock.
    #[inline]
    pub fn holds_a_lock(&self) -> bool {
        self.held.load(Ordering::Relaxed) != 0
    }

    /// Forgets the lock of a thread that no longer exists (fork child,
    /// reclaimed record).
    pub fn clear(&self) {
        self.held.store(0, Ordering::Relaxed);
    }

    #[inline]
    fn gate(&self) -> &ForkGate {
        // SAFETY: bound to a 'static gate before any lock is taken with
        // this slot (a thread's record is bound when claimed).
        unsafe { &*self.gate.load(Ordering::Relaxed) }
    }
}

/// Closed by the forking thread between `fork`'s prepare and parent/child
/// handlers; every other thread waits before taking a table lock then.
pub struct ForkGate {
    /// Id of the thread that closed the gate (0 when open), and
    /// [`SYMMETRIC`] when there is no asymmetric fence: one word, so the
    /// hot side makes one load.
    state: AtomicU32,
}

/// In [`ForkGate::state`]: both sides use full fences.
const SYMMETRIC: u32 = 1 << 31;
const CLOSER: u32 = SYMMETRIC - 1;

impl Default for ForkGate {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`TableLock::lock`] needs of the calling thread: its bound slot.
#[derive(Clone, Copy)]
pub struct LockCx<'a> {
    slot: &'a LockSlot,
}

impl<'a> LockCx<'a> {
    /// The context of the thread owning `slot` (bound with
    /// [`LockSlot::bind`]).
    #[inline]
    pub fn new(slot: &'a LockSlot) -> Self {
        LockCx { slot }
    }

    pub fn slot(&self) -> &'a LockSlot {
        self.slot
    }
}

impl ForkGate {
    /// A gate whose hot side uses full fences until
    /// [`ForkGate::use_membarrier`] succeeds.
    pub const fn new() -> Self {
        ForkGate {
            state: AtomicU32::new(SYMMETRIC),
        }
    }

    /// Registers for `membarrier(PRIVATE_EXPEDITED)` and, if the kernel
    /// allows it, lets the hot side use compiler fences only. Call while
    /// the gate is open; switching back to full fences (a refusal) is only
    /// safe while this is the only thread that takes table locks (start-up,
    /// fork child). Returns whether the asymmetric mode is on.
    pub fn use_membarrier(&self) -> bool {
        let ok = membarrier::register();
        if ok {
            self.state.fetch_and(!SYMMETRIC, Ordering::SeqCst);
        } else {
            self.state.fetch_or(SYMMETRIC, Ordering::SeqCst);
        }
        ok
    }

    /// Whether the hot side pays only a compiler fence.
    pub fn is_asymmetric(&self) -> bool {
        self.state.load(Ordering::Relaxed) & SYMMETRIC == 0
    }

    /// Announces `lock` in the slot and waits while another thread holds
    /// the gate closed.
    #[inline(always)]
    fn enter(&self, slot: &LockSlot, lock: usize) {
        slot.held.store(lock, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        let mut state = self.state.load(Ordering::Relaxed);
        if state != 0 {
            self.enter_slow(slot, lock, &mut state);
        }
    }

    /// The gate is closed, or the fences are symmetric.
    #[cold]
    #[inline(never)]
    fn enter_slow(&self, slot: &LockSlot, lock: usize, state: &mut u32) {
        let me = slot.me.load(Ordering::Relaxed);
        loop {
            if *state & SYMMETRIC != 0 {
                fence(Ordering::SeqCst);
                *state = self.state.load(Ordering::Relaxed);
            }
            let closer = *state & CLOSER;
            if closer == 0 || closer == me {
                // Pairs with the forking thread's fence.
                fence(Ordering::Acquire);
                return;
            }
            slot.held.store(0, Ordering::Release);
            self.wait_open();
            slot.held.store(lock, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            *state = self.state.load(Ordering::Relaxed);
        }
    }

    #[cold]
    fn wait_open(&self) {
        loop {
            let state = self.state.load(Ordering::Acquire);
            if state & CLOSER == 0 {
                return;
            }
            futex::wait(&self.state, state);
        }
    }

    /// Closes the gate for the calling thread and waits until no thread
    /// in `others` holds a table lock. `others` may include the caller's
    /// own slot; it is skipped.
    pub fn close<'s>(&self, cx: &LockCx<'_>, others: impl Iterator<Item = &'s LockSlot>) {
        let me = cx.slot.me.load(Ordering::Relaxed) & CLOSER;
        // One fork at a time: a second forking thread waits for the first.
        let state = loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & CLOSER != 0 && s & CLOSER != me {
                self.wait_open();
                continue;
            }
            let closed = (s & SYMMETRIC) | me;
            if self
                .state
                .compare_exchange(s, closed, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                break closed;
            }
        };
        if state & SYMMETRIC != 0 || !membarrier::expedited() {
            fence(Ordering::SeqCst);
        }
        let mine = cx.slot.held.load(Ordering::Relaxed);
        for slot in others {
            if core::ptr::eq(slot, cx.slot) {
                continue;
            }
            let mut spins = 0u32;
            loop {
                let held = slot.held.load(Ordering::Acquire);
                // A thread announcing the lock this thread holds (from the
                // frame a signal handler interrupted) is waiting for it.
                if held == 0 || held == mine {
                    break;
                }
                spins += 1;
                if spins < SPINS * 10 {
                    core::hint::spin_loop();
                } else {
                    // SAFETY: sched_yield has no preconditions.
                    crate::errno::preserved(|| unsafe { libc::sched_yield() });
                }
            }
        }
    }

    /// Opens the gate and wakes every waiting thread.
    pub fn open(&self) {
        self.state.fetch_and(SYMMETRIC, Ordering::Release);
        futex::wake_all(&self.state);
    }

    /// In a fork child: the gate's closer is the only thread, so the gate
    /// is simply marked open.
    pub fn open_in_child(&self) {
        self.state.fetch_and(SYMMETRIC, Ordering::Relaxed);
    }
}

/// A mutex for the profiler's tables. See the module documentation.
pub struct TableLock<T> {
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through the lock, or by `peek` on the
// thread that holds it.
unsafe impl<T: Send> Sync for TableLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for TableLock<T> {}

/// Access to the data of a locked [`TableLock`]; unlocks on drop.
pub struct TableGuard<'a, T> {
    lock: &'a TableLock<T>,
    /// The slot to clear on unlock; None for a nested read.
    slot: Option<&'a LockSlot>,
}

impl<T> TableLock<T> {
    pub const fn new(value: T) -> Self {
        TableLock {
            state: AtomicU32::new(UNLOCKED),
            data: UnsafeCell::new(value),
        }
    }

    fn address(&self) -> usize {
        self as *const Self as usize
    }

    /// Takes the lock, after waiting for a fork in progress on another
    /// thread. None when the calling thread already holds a table lock:
    /// a signal handler interrupted it there, and taking another lock (or
    /// the same) could deadlock; the caller must defer or skip its work.
    #[inline(always)]
    pub fn lock<'a>(&'a self, cx: &LockCx<'a>) -> Option<TableGuard<'a, T>> {
        if cx.slot.holds_a_lock() {
            return None;
        }
        cx.slot.gate().enter(cx.slot, self.address());
        self.acquire();
        Some(TableGuard {
            lock: self,
            slot: Some(cx.slot),
        })
    }

    /// Runs `f` on the data for reading, whatever the calling thread holds:
    /// normally under the lock; in a signal handler that interrupted this
    /// thread while it held this very lock, without locking (the
    /// interrupted frame cannot run meanwhile); while it holds another
    /// lock, taking this one too (its holder takes no other lock, so it
    /// finishes).
    pub fn read<R>(&self, cx: &LockCx<'_>, f: impl FnOnce(&T) -> R) -> R {
        if let Some(guard) = self.lock(cx) {
            return f(&guard);
        }
        if cx.slot.held.load(Ordering::Relaxed) == self.address() {
            // SAFETY: this thread holds the lock in a frame that cannot
            // resume before `f` returns; nothing else can hold it.
            return f(unsafe { &*self.data.get() });
        }
        self.acquire();
        let guard = TableGuard {
            lock: self,
            slot: None,
        };
        f(&guard)
    }

    /// Whether some thread holds the lock now (for tests and assertions).
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != UNLOCKED
    }

    #[inline(always)]
    fn acquire(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.acquire_slow();
        }
    }

    #[cold]
    fn acquire_slow(&self) {
        for _ in 0..SPINS {
            core::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // Mark the lock contended before sleeping so that the holder wakes
        // us; whoever gets it this way keeps it marked, which at worst costs
        // one spurious wake.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex::wait(&self.state, CONTENDED);
        }
    }

    #[inline(always)]
    fn release(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex::wake_one(&self.state);
        }
    }
}

impl<T> Deref for TableGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for TableGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and is unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for TableGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.release();
        if let Some(slot) = self.slot {
            slot.held.store(0, Ordering::Release);
        }
    }
}

/// `membarrier(2)`: one system call that makes every running thread of the
/// process execute a full memory barrier.
mod membarrier {
    const CMD_QUERY: libc::c_long = 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn call(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes two integers and touches no memory of ours.
        crate::errno::preserved(|| unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) })
    }

    /// Registers this process (its memory map: a fork child registers
    /// again) and checks that the barrier works.
    pub fn register() -> bool {
        let supported = call(CMD_QUERY);
        supported >= 0
            && supported & CMD_PRIVATE_EXPEDITED != 0
            && call(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
            && call(CMD_PRIVATE_EXPEDITED) == 0
    }

    /// The barrier; false when the kernel refused it.
    pub fn expedited() -> bool {
        call(CMD_PRIVATE_EXPEDITED) == 0
    }
}

/// The futex operations, with `errno` left as the caller had it: they run
/// inside `malloc` and `free`, whose callers may be reading errno.
mod futex {
    use core::sync::atomic::AtomicU32;

    /// Sleeps while `*word == expected` (returns at once otherwise, or on a
    /// wake or a signal; the caller loops).
    pub fn wait(word: &AtomicU32, expected: u32) {
        // SAFETY: FUTEX_WAIT on a live, aligned u32; a null timeout waits
        // without limit.
        crate::errno::preserved(|| unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                core::ptr::null::<libc::timespec>(),
            )
        });
    }

    fn wake(word: &AtomicU32, n: i32) {
        // SAFETY: FUTEX_WAKE on a live, aligned u32.
        crate::errno::preserved(|| unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                n,
            )
        });
    }

    pub fn wake_one(word: &AtomicU32) {
        wake(word, 1);
    }

    pub fn wake_all(word: &AtomicU32) {
        wake(word, i32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// One thread's slot, bound to `gate` as thread `id`.
    fn slot(gate: &'static ForkGate, id: u32) -> &'static LockSlot {
        let s: &'static LockSlot = Box::leak(Box::new(LockSlot::new()));
        s.bind(gate, id);
        s
    }

    fn gate() -> &'static ForkGate {
        Box::leak(Box::new(ForkGate::new()))
    }

    #[test]
    fn a_guard_announces_its_lock_until_dropped() {
        let s = slot(gate(), 1);
        let cx = LockCx::new(s);
        let m = TableLock::new(5);
        {
            let g = m.lock(&cx).unwrap();
            assert_eq!(*g, 5);
            assert!(s.holds_a_lock());
            assert!(m.is_locked());
            // A handler on this thread can take no second lock...
            let other = TableLock::new(0);
            assert!(other.lock(&cx).is_none());
            assert!(m.lock(&cx).is_none());
            // ...but can read through: the held one without locking, another by locking it.
            assert_eq!(m.read(&cx, |v| *v), 5);
            assert_eq!(other.read(&cx, |v| *v + 1), 1);
            assert!(!other.is_locked());
        }
        assert!(!s.holds_a_lock());
        assert!(!m.is_locked());
    }

    #[test]
    fn contended_increments_are_not_lost() {
        const THREADS: u32 = 4;
        const ROUNDS: usize = 50_000;
        let g = gate();
        let m = Arc::new(TableLock::new(0usize));
        let handles: Vec<_> = (0..THREADS)
            .map(|n| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let cx = LockCx::new(slot(g, 10 + n));
                    for _ in 0..ROUNDS {
                        *m.lock(&cx).unwrap() += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let cx = LockCx::new(slot(g, 1));
        assert_eq!(*m.lock(&cx).unwrap(), THREADS as usize * ROUNDS);
    }

    #[test]
    fn a_closed_gate_holds_other_threads_and_waits_for_holders() {
        use std::sync::mpsc;
        for asymmetric in [false, true] {
            let gate = gate();
            if asymmetric && !gate.use_membarrier() {
                continue;
            }
            let data: &'static TableLock<u32> = Box::leak(Box::new(TableLock::new(0)));
            let forker_slot = slot(gate, 1);
            let holder_slot = slot(gate, 2);
            let forker = LockCx::new(forker_slot);
            let (locked_tx, locked_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                let mut g = data.lock(&LockCx::new(holder_slot)).unwrap();
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                *g += 1;
            });
            locked_rx.recv().unwrap();
            // close() must wait for the holder: release it from another
            // thread only once close() is under way (the gate is closed).
            let releaser = std::thread::spawn(move || {
                while gate.state.load(Ordering::Acquire) & CLOSER != 1 {
                    std::thread::yield_now();
                }
                release_tx.send(()).unwrap();
            });
            gate.close(&forker, [forker_slot, holder_slot].into_iter());
            assert!(!holder_slot.holds_a_lock());
            // The forking thread itself passes its own closed gate.
            assert_eq!(*data.lock(&forker).unwrap(), 1);
            // Another thread waits until the gate opens.
            let waiter_slot = slot(gate, 3);
            let (done_tx, done_rx) = mpsc::channel();
            let waiter = std::thread::spawn(move || {
                *data.lock(&LockCx::new(waiter_slot)).unwrap() += 10;
                done_tx.send(()).unwrap();
            });
            assert!(done_rx
                .recv_timeout(std::time::Duration::from_millis(100))
                .is_err());
            gate.open();
            done_rx.recv().unwrap();
            holder.join().unwrap();
            releaser.join().unwrap();
            waiter.join().unwrap();
            assert_eq!(*data.lock(&forker).unwrap(), 11);
            assert_eq!(gate.is_asymmetric(), asymmetric);
        }
    }

    #[test]
    fn the_forker_does_not_wait_for_a_thread_that_wants_its_own_lock() {
        let gate = gate();
        let data: &'static TableLock<u32> = Box::leak(Box::new(TableLock::new(0)));
        let forker_slot = slot(gate, 1);
        let other_slot = slot(gate, 2);
        let forker = LockCx::new(forker_slot);
        // The forking thread's interrupted frame holds the lock...
        let held = data.lock(&forker).unwrap();
        // ...and another thread waits for it.
        let other = std::thread::spawn(move || {
            *data.lock(&LockCx::new(other_slot)).unwrap() += 1;
        });
        while !other_slot.holds_a_lock() {
            std::thread::yield_now();
        }
        gate.close(&forker, [forker_slot, other_slot].into_iter());
        gate.open();
        drop(held);
        other.join().unwrap();
        assert_eq!(*data.lock(&forker).unwrap(), 1);
    }

    #[test]
    fn membarrier_is_available_here_or_the_gate_stays_symmetric() {
        let gate = ForkGate::new();
        let asym = gate.use_membarrier();
        assert_eq!(gate.is_asymmetric(), asym);
    }
}
