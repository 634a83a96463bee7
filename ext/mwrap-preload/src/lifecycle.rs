//! Process events: `fork` (through `pthread_atfork`) and exit (from
//! `.fini_array`, after the program's own destructors): the endpoint's
//! socket is removed, then the last snapshot and the dump written.
//!
//! Around a fork the handlers take no table lock: the prepare handler
//! closes the fork gate and waits until no other thread holds a table lock
//! (see `mwrap_core::lock`), so its cost is one system call and one look at
//! each thread's record, whatever the size of the tables. That holds when
//! `fork` is called from a signal handler that interrupted the profiler on
//! this very thread, too: the lock that frame holds stays with it.

use core::sync::atomic::Ordering;

use crate::copy::{after_copy, before_copy, in_copy, monotonic_nanos as now_nanos};
use crate::state::{FORKS, FORK_HANDLER_NANOS};
use crate::{dump, per_thread, server, snapshot};

extern "C" fn prepare() {
    let started = now_nanos();
    before_copy();
    FORK_HANDLER_NANOS.fetch_add(now_nanos() - started, Ordering::Relaxed);
}

extern "C" fn parent() {
    let started = now_nanos();
    after_copy();
    FORK_HANDLER_NANOS.fetch_add(now_nanos() - started, Ordering::Relaxed);
    FORKS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn child() {
    in_copy();
    // A fork child serves its own endpoint; the leak scan's copy, which
    // shares `in_copy`, must not (it never comes here).
    if per_thread::busy(|_, _| server::in_fork_child()).is_none() {
        server::in_fork_child(); // inside the profiler already: untracked
    }
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
    server::at_exit();
    snapshot::at_exit();
    dump::at_exit();
}

// Also in test builds: without MWRAP it does nothing.
#[used]
#[link_section = ".fini_array"]
static DUMP_AT_EXIT: extern "C" fn() = dump_at_exit;
