//! A mutex that can be carried across `fork`: held by the forking thread
//! before the fork, released after it in the parent, and rebuilt unlocked in
//! the child (where the threads that might wait on it are gone, so waking
//! them through parking_lot's queues could itself deadlock).

use core::cell::UnsafeCell;
use core::ptr;

use parking_lot::lock_api::RawMutex as _;
use parking_lot::{Mutex, MutexGuard};

pub struct ForkSafeMutex<T> {
    /// In an `UnsafeCell` only so a fork child can rebuild the lock.
    inner: UnsafeCell<Mutex<T>>,
}

// SAFETY: access goes through the mutex, except in `release_in_child`,
// which runs when no other thread exists.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}
unsafe impl<T: Send> Send for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    pub const fn new(value: T) -> Self {
        ForkSafeMutex {
            inner: UnsafeCell::new(Mutex::new(value)),
        }
    }

    #[inline]
    fn mutex(&self) -> &Mutex<T> {
        // SAFETY: only `release_in_child` writes the cell, with no other thread alive.
        unsafe { &*self.inner.get() }
    }

    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.mutex().lock()
    }

    /// Takes the lock and keeps it until one of the `release_*` calls.
    pub fn hold_for_fork(&self) {
        // SAFETY: paired with release_in_parent / release_in_child.
        unsafe { self.mutex().raw().lock() };
    }

    /// # Safety
    /// The calling thread took the lock with `hold_for_fork`.
    pub unsafe fn release_in_parent(&self) {
        self.mutex().force_unlock();
    }

    /// Replaces the held lock with an unlocked one holding the same data.
    ///
    /// # Safety
    /// Only in a fork child (no other thread exists), after `hold_for_fork`.
    pub unsafe fn release_in_child(&self) {
        let data = ptr::read(self.mutex().data_ptr());
        ptr::write(self.inner.get(), Mutex::new(data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
