//! Fork safety: every lock of the table is taken before `fork` and released
//! after it in both processes, so a child never inherits a lock that another
//! thread held at fork time. The forking thread is marked busy meanwhile, so
//! an allocation it makes inside other fork handlers is untracked instead of
//! deadlocking on a lock it holds itself; a tracked block it frees there is
//! left allocated (see [`must_not_touch_tables`]).

use core::sync::atomic::{AtomicBool, Ordering};

use crate::thread_state;
use crate::tracker::{HEAP, TABLE};

/// Set while some thread holds every table lock for a fork.
static HOLDING: AtomicBool = AtomicBool::new(false);

/// True on the forking thread between the prepare and parent/child
/// handlers, where taking a table lock would deadlock on itself. One relaxed
/// load on every other path.
#[inline]
pub fn must_not_touch_tables() -> bool {
    HOLDING.load(Ordering::Relaxed) && this_thread_is_busy()
}

// Out of line so the compiler does not hoist the TLS lookup above the
// check of HOLDING onto every free.
#[cold]
#[inline(never)]
fn this_thread_is_busy() -> bool {
    thread_state::with(|ts| ts.busy.get()).unwrap_or(true)
}

extern "C" fn prepare() {
    thread_state::with(|ts| ts.busy.set(true));
    TABLE.hold_for_fork();
    HEAP.hold_for_fork();
    HOLDING.store(true, Ordering::Relaxed);
}

extern "C" fn parent() {
    HOLDING.store(false, Ordering::Relaxed);
    // SAFETY: held by prepare() on this thread.
    unsafe { HEAP.release_after_fork_in_parent() };
    TABLE.release_after_fork_in_parent();
    thread_state::with(|ts| ts.busy.set(false));
}

extern "C" fn child() {
    HOLDING.store(false, Ordering::Relaxed);
    crate::loader::after_fork_in_child();
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
