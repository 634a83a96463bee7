//! Fork safety: every lock of the table is taken before `fork` and released
//! after it in both processes, so a child never inherits a lock that another
//! thread held at fork time. The forking thread is marked busy meanwhile, so
//! an allocation it makes inside other fork handlers is untracked instead of
//! deadlocking on a lock it holds itself.

use crate::thread_state;
use crate::tracker::{HEAP, TABLE};

extern "C" fn prepare() {
    thread_state::with(|ts| ts.busy.set(true));
    TABLE.hold_for_fork();
    HEAP.hold_for_fork();
}

extern "C" fn parent() {
    // SAFETY: held by prepare() on this thread.
    unsafe { HEAP.release_after_fork_in_parent() };
    TABLE.release_after_fork_in_parent();
    thread_state::with(|ts| ts.busy.set(false));
}

extern "C" fn child() {
    // SAFETY: fork child, held by prepare().
    unsafe { HEAP.release_after_fork_in_child() };
    TABLE.release_after_fork_in_child();
    thread_state::with(|ts| ts.busy.set(false));
}

pub fn register() {
    // SAFETY: the handlers are plain functions with static lifetime.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc != 0 {
        crate::diag::write_stderr(
            b"mwrap: pthread_atfork failed; a fork while other threads allocate may deadlock\n",
        );
    }
}
