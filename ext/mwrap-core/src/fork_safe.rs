//! A mutex that can be carried across `fork`: held by the forking thread
//! before the fork, released after it in the parent, and rebuilt unlocked in
//! the child.
//!
//! It is a bare futex word, not parking_lot: parking_lot parks a thread
//! through per-thread data that it creates lazily and registers for
//! destruction with `__cxa_thread_atexit_impl`, which takes the dynamic
//! loader's lock. A thread that first parked while holding table locks
//! (the forking thread, in the prepare handler) then waited for the loader
//! lock, held by a thread inside `dlclose` that was itself waiting in our
//! `free` hook for one of those table locks: a deadlock. A futex needs no
//! per-thread data, no global queue that a fork could copy half-updated,
//! and no allocation.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and some thread may be sleeping in `futex_wait`.
const CONTENDED: u32 = 2;

/// Spins before sleeping: the locks are held for a few dozen instructions.
const SPINS: u32 = 100;

pub struct ForkSafeMutex<T> {
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through the lock (or, in
// `release_in_child`, when no other thread exists).
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}
unsafe impl<T: Send> Send for ForkSafeMutex<T> {}

/// Access to the data of a locked [`ForkSafeMutex`]; unlocks on drop.
pub struct ForkSafeMutexGuard<'a, T> {
    mutex: &'a ForkSafeMutex<T>,
}

impl<T> ForkSafeMutex<T> {
    pub const fn new(value: T) -> Self {
        ForkSafeMutex {
            state: AtomicU32::new(UNLOCKED),
            data: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub fn lock(&self) -> ForkSafeMutexGuard<'_, T> {
        self.acquire();
        ForkSafeMutexGuard { mutex: self }
    }

    #[inline]
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

    #[inline]
    fn release(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex::wake_one(&self.state);
        }
    }

    /// Takes the lock and keeps it until one of the `release_*` calls.
    pub fn hold_for_fork(&self) {
        self.acquire();
    }

    /// # Safety
    /// The calling thread took the lock with `hold_for_fork`.
    pub unsafe fn release_in_parent(&self) {
        self.release();
    }

    /// Marks the lock free without waking anyone: in the child the threads
    /// that might have been waiting do not exist.
    ///
    /// # Safety
    /// Only in a fork child (no other thread exists), after `hold_for_fork`.
    pub unsafe fn release_in_child(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }
}

impl<T> Deref for ForkSafeMutexGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for ForkSafeMutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and is unique.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for ForkSafeMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.release();
    }
}

/// The two futex operations, with `errno` left as the caller had it: they
/// run inside `malloc` and `free`, whose callers may be reading errno.
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

    pub fn wake_one(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE on a live, aligned u32.
        crate::errno::preserved(|| unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hold_and_release_keep_the_data() {
        let m = ForkSafeMutex::new(vec![1, 2, 3]);
        m.hold_for_fork();
        unsafe { m.release_in_parent() };
        m.lock().push(4);
        m.hold_for_fork();
        unsafe { m.release_in_child() };
        assert_eq!(*m.lock(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn contended_increments_are_not_lost() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 50_000;
        let m = Arc::new(ForkSafeMutex::new(0usize));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*m.lock(), THREADS * ROUNDS);
    }

    #[test]
    fn a_waiter_sleeps_until_the_holder_releases() {
        let m = Arc::new(ForkSafeMutex::new(0u32));
        m.hold_for_fork();
        let waiter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                *m.lock() += 1;
            })
        };
        // Long enough for the waiter to give up spinning and sleep.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(m.state.load(Ordering::Relaxed), CONTENDED);
        unsafe { m.release_in_parent() };
        waiter.join().unwrap();
        assert_eq!(*m.lock(), 1);
        assert_eq!(m.state.load(Ordering::Relaxed), UNLOCKED);
    }
}
