//! Process events: `fork` (through `pthread_atfork`) and exit (from
//! `.fini_array`, after the program's own destructors).
//!
//! Around a fork the handlers take no table lock: the prepare handler
//! closes the fork gate and waits until no other thread holds a table lock
//! (see `mwrap_core::lock`), so its cost is one system call and one look at
//! each thread's record, whatever the size of the tables. That holds when
//! `fork` is called from a signal handler that interrupted the profiler on
//! this very thread, too: the lock that frame holds stays with it.

use core::sync::atomic::Ordering;

use mwrap_core::threads::current_tid;

use crate::per_thread::{self, lock_cx};
use crate::state::{FORKS, FORK_HANDLER_NANOS, GATE, SYMBOLIZER, THREADS};
use crate::{dump, loader};

fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a plain struct (vDSO, no system call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

extern "C" fn prepare() {
    let started = now_nanos();
    before_copy();
    FORK_HANDLER_NANOS.fetch_add(now_nanos() - started, Ordering::Relaxed);
}

extern "C" fn parent() {
    let started = now_nanos();
    GATE.open();
    FORK_HANDLER_NANOS.fetch_add(now_nanos() - started, Ordering::Relaxed);
    FORKS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn child() {
    in_copy();
}

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
    now_nanos()
}

pub fn register_fork_handlers() {
    // SAFETY: the handlers are plain functions with static lifetime.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc != 0 {
        crate::diag::write_stderr(
            b"mwrap: pthread_atfork failed; a fork while other threads allocate may deadlock\n",
        );
    }
}

extern "C" fn dump_at_exit() {
    dump::at_exit();
}

// Also in test builds: without MWRAP it does nothing.
#[used]
#[link_section = ".fini_array"]
static DUMP_AT_EXIT: extern "C" fn() = dump_at_exit;
