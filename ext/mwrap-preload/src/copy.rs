//! The process copied whole: around a `fork` (the `pthread_atfork`
//! handlers of `lifecycle`) and the leak scan's own copy (`leak_scan`),
//! the fork gate keeps every other thread out of the tables, so the copy
//! holds them whole; the copy's one thread then takes them over.

use mwrap_core::threads::current_tid;

use crate::loader;
use crate::per_thread::{self, lock_cx};
use crate::state::{GATE, SYMBOLIZER, THREADS};

/// Before this process is copied (`fork`, or the leak scan's snapshot):
/// waits until no other thread holds a table lock, and keeps them out.
pub fn before_copy() {
    if let Some(record) = per_thread::current() {
        GATE.close(&lock_cx(record), THREADS.claimed().map(|r| &r.slot));
    }
}

/// In the parent, after the copy.
pub fn after_copy() {
    GATE.open();
}

/// In the copy: its one thread takes over the tables.
pub fn in_copy() {
    GATE.open_in_child();
    if let Some(record) = per_thread::current() {
        THREADS.after_fork_in_child(record, current_tid());
    }
    // membarrier registration belongs to the memory map: register the
    // child's; if it is refused, this (still single-threaded) process
    // falls back to full fences.
    if GATE.is_asymmetric() {
        GATE.use_membarrier();
    }
    loader::after_fork_in_child();
    SYMBOLIZER.after_fork_in_child();
}

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a plain struct (vDSO, no system call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
