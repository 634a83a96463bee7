//! Allocations made while a Ruby thread runs without the GVL (a Fiddle
//! call, zlib, a DNS lookup through `rb_nogvl` and friends) are charged to
//! the Ruby line it released the GVL from. Ruby 3.1 has no hook for that,
//! but extensions release the GVL through libruby's exported
//! `rb_thread_call_without_gvl`, `rb_thread_call_without_gvl2` and
//! `rb_nogvl`, called through their PLT: the preload interposes them (see
//! `api`) and notes the line (and, with `ruby_bt`, the Ruby frames) while
//! the thread still holds the GVL. No Ruby object is read without it.
//!
//! Ruby's own blocking calls (IO, `sleep`, `Queue#pop`, `Process.wait`)
//! release the GVL inside libruby, not through those entry points: their
//! allocations stay charged to their native caller.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};

use mwrap_core::errno;

use crate::locate::{self, NoGvlNote};
use crate::per_thread;

/// The signatures of the interposed functions.
pub type BlockingFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
pub type UnblockFn = Option<unsafe extern "C" fn(*mut c_void)>;
type NogvlFn =
    unsafe extern "C" fn(BlockingFn, *mut c_void, UnblockFn, *mut c_void, c_int) -> *mut c_void;
type WithoutGvlFn =
    unsafe extern "C" fn(BlockingFn, *mut c_void, UnblockFn, *mut c_void) -> *mut c_void;

/// libruby's own functions, found with `dlsym(RTLD_NEXT)` on first use.
pub struct Next {
    name: &'static core::ffi::CStr,
    ptr: AtomicPtr<c_void>,
}

pub static NOGVL: Next = Next::new(c"rb_nogvl");
pub static WITHOUT_GVL: Next = Next::new(c"rb_thread_call_without_gvl");
pub static WITHOUT_GVL2: Next = Next::new(c"rb_thread_call_without_gvl2");

impl Next {
    const fn new(name: &'static core::ffi::CStr) -> Self {
        Next {
            name,
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    fn get(&self) -> *mut c_void {
        let mut p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            // SAFETY: dlsym with a NUL-terminated name; a lookup that
            // fails leaves dlerror() set, as libruby's own caller would
            // have seen it fail to link.
            p = per_thread::busy(|_, _| unsafe {
                libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr())
            })
            .unwrap_or(core::ptr::null_mut());
            self.ptr.store(p, Ordering::Release);
        }
        p
    }
}

/// Runs `call` (the real function) with this thread's Ruby line noted for
/// the allocations it makes without the GVL; the note made by an outer
/// call (a nested `rb_thread_call_with_gvl`) comes back afterwards.
fn noted<R>(call: impl FnOnce() -> R) -> R {
    let saved = errno::preserved(|| {
        per_thread::busy(|record, data| {
            let saved = NoGvlNote::of(data);
            locate::ruby_location_now(record, data)
                .unwrap_or_default()
                .set(data);
            saved
        })
    });
    let r = call();
    if let Some(saved) = saved {
        errno::preserved(|| per_thread::busy(|_, data| saved.set(data)));
    }
    r
}

/// `rb_nogvl`.
///
/// # Safety
/// As for libruby's function.
pub unsafe fn nogvl(
    func: BlockingFn,
    data1: *mut c_void,
    ubf: UnblockFn,
    data2: *mut c_void,
    flags: c_int,
) -> *mut c_void {
    let next = NOGVL.get();
    if next.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: libruby's rb_nogvl has this signature; the arguments are the
    // caller's.
    noted(|| unsafe {
        core::mem::transmute::<*mut c_void, NogvlFn>(next)(func, data1, ubf, data2, flags)
    })
}

/// `rb_thread_call_without_gvl` and `rb_thread_call_without_gvl2`.
///
/// # Safety
/// As for libruby's functions.
pub unsafe fn without_gvl(
    which: &Next,
    func: BlockingFn,
    data1: *mut c_void,
    ubf: UnblockFn,
    data2: *mut c_void,
) -> *mut c_void {
    let next = which.get();
    if next.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: libruby's functions have this signature; the arguments are
    // the caller's.
    noted(|| unsafe {
        core::mem::transmute::<*mut c_void, WithoutGvlFn>(next)(func, data1, ubf, data2)
    })
}
