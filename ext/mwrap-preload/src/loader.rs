//! Whether `dladdr` may be trusted in this process.
//!
//! A child forked while another thread was inside `dlclose` inherits the
//! dynamic loader's lists half-updated (glibc re-initialises the loader's
//! lock in the child), and `dladdr` then reads an object that is no longer
//! mapped. The preload interposes `dlclose` only to count the calls in
//! flight: the child sees the count as it was at the instant of the fork,
//! and if one was in flight it names native locations by address alone.
//! (`dlopen` is not interposed: it finds its caller by return address to
//! apply the caller's RUNPATH.)

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static DLCLOSE_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static UNTRUSTED: AtomicBool = AtomicBool::new(false);

static NEXT_DLCLOSE: core::sync::atomic::AtomicPtr<c_void> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// `dlclose`, counted while it runs.
///
/// # Safety
/// As for the C function.
pub unsafe fn dlclose(handle: *mut c_void) -> c_int {
    type DlcloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;
    let mut next = NEXT_DLCLOSE.load(Ordering::Acquire);
    if next.is_null() {
        // SAFETY: dlsym with a NUL-terminated name.
        next = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlclose".as_ptr()) };
        if next.is_null() {
            return -1;
        }
        NEXT_DLCLOSE.store(next, Ordering::Release);
    }
    DLCLOSE_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    // What naming its frames needs, before it may go; stacks seen from
    // now on name their frames after what is loaded after this close (see
    // `mwrap_core::stacks`).
    // SAFETY: the handle is the caller's, still open.
    let record = unsafe { mwrap_symbols::ModuleRecord::capture(handle) };
    let seq = crate::state::next_dlclose();
    if let Some(record) = record {
        crate::state::CLOSED_MODULES.push(seq, &record);
    }
    // SAFETY: `next` is the loader's dlclose; the handle is the caller's.
    let rc = unsafe { core::mem::transmute::<*mut c_void, DlcloseFn>(next)(handle) };
    // Its code may be gone: unwind rules cached for its addresses too.
    crate::unwind::invalidate();
    DLCLOSE_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    rc
}

/// In a fork child: the closing threads are gone, and if any was closing,
/// the loader's state cannot be trusted for the rest of this process.
pub fn after_fork_in_child() {
    if DLCLOSE_IN_FLIGHT.swap(0, Ordering::SeqCst) != 0 {
        UNTRUSTED.store(true, Ordering::SeqCst);
    }
}

/// False when `dladdr` could read freed loader state.
pub fn dladdr_is_safe() -> bool {
    !UNTRUSTED.load(Ordering::Relaxed)
}
