//! Finding the Ruby line that is allocating, in a library that links no Ruby
//! symbol: every Ruby function is looked up with `dlsym` and called only
//! when it is safe.
//!
//! Safe means all of:
//! - libruby is in the process (the symbols resolved);
//! - the VM exists (`ruby_current_vm_ptr`) and is not being destroyed (we
//!   interpose `ruby_vm_destruct` to learn when teardown starts);
//! - this thread holds the GVL (`ruby_thread_has_gvl_p`);
//! - this thread has an execution context (`ruby_current_ec`, a TLS variable):
//!   during `ruby_setup` a thread "has the GVL" before its EC and VM stack
//!   exist, and source lookups would crash;
//! - no GC is running (`rb_during_gc`): a compacting GC moves the objects a
//!   frame points to.

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::thread_state::ThreadState;

type HasGvlFn = unsafe extern "C" fn() -> c_int;
type SourceLocationFn = unsafe extern "C" fn(*mut c_int) -> *const c_char;
type SourceFileFn = unsafe extern "C" fn() -> *const c_char;
type SourceLineFn = unsafe extern "C" fn() -> c_int;
type GcCountFn = unsafe extern "C" fn() -> usize;
type DuringGcFn = unsafe extern "C" fn() -> c_int;

/// Ruby's entry points, resolved once.
struct RubyRuntime {
    has_gvl: HasGvlFn,
    /// `rb_source_location_cstr`: file and line in one frame walk.
    source_location: Option<SourceLocationFn>,
    source_file: SourceFileFn,
    source_line: SourceLineFn,
    gc_count: GcCountFn,
    during_gc: Option<DuringGcFn>,
    /// `&ruby_current_vm_ptr`.
    vm_ptr: *const *const c_void,
}

static RUNTIME: AtomicPtr<RubyRuntime> = AtomicPtr::new(core::ptr::null_mut());
static VM_TORN_DOWN: AtomicBool = AtomicBool::new(false);

/// A Ruby source position and the GC generation it was seen in.
pub struct RubyLocation {
    pub file: *const c_char,
    pub line: u32,
    pub generation: u64,
}

unsafe fn sym(name: &core::ffi::CStr) -> *mut c_void {
    libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr())
}

/// Looks for libruby's symbols; a no-op once found. Call with the recursion
/// guard held (dlsym may allocate).
pub fn attach() {
    if !RUNTIME.load(Ordering::Acquire).is_null() {
        return;
    }
    // SAFETY: the transmutes are to the documented C signatures.
    unsafe {
        let has_gvl = sym(c"ruby_thread_has_gvl_p");
        let source_file = sym(c"rb_sourcefile");
        let source_line = sym(c"rb_sourceline");
        let gc_count = sym(c"rb_gc_count");
        let vm_ptr = sym(c"ruby_current_vm_ptr");
        let ec = sym(c"ruby_current_ec");
        if [has_gvl, source_file, source_line, gc_count, vm_ptr, ec]
            .iter()
            .any(|p| p.is_null())
        {
            return; // not a Ruby process (or not yet)
        }
        let source_location = sym(c"rb_source_location_cstr");
        let during_gc = sym(c"rb_during_gc");
        let rt = Box::new(RubyRuntime {
            has_gvl: core::mem::transmute::<*mut c_void, HasGvlFn>(has_gvl),
            source_location: (!source_location.is_null())
                .then(|| core::mem::transmute::<*mut c_void, SourceLocationFn>(source_location)),
            source_file: core::mem::transmute::<*mut c_void, SourceFileFn>(source_file),
            source_line: core::mem::transmute::<*mut c_void, SourceLineFn>(source_line),
            gc_count: core::mem::transmute::<*mut c_void, GcCountFn>(gc_count),
            during_gc: (!during_gc.is_null())
                .then(|| core::mem::transmute::<*mut c_void, DuringGcFn>(during_gc)),
            vm_ptr: vm_ptr as *const *const c_void,
        });
        let rt = Box::into_raw(rt);
        if RUNTIME
            .compare_exchange(
                core::ptr::null_mut(),
                rt,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            drop(Box::from_raw(rt));
        }
    }
}

/// From here on no Ruby function is called: the VM is being destroyed.
pub fn mark_vm_torn_down() {
    VM_TORN_DOWN.store(true, Ordering::Release);
}

/// The Ruby line running on this thread, when it is safe to ask.
#[inline]
pub fn current_location(ts: &ThreadState) -> Option<RubyLocation> {
    let rt = RUNTIME.load(Ordering::Acquire);
    if rt.is_null() || VM_TORN_DOWN.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: rt is leaked and never freed; every call below is guarded by
    // the checks listed at the top of this file.
    unsafe {
        let rt = &*rt;
        if (*rt.vm_ptr).is_null() || (rt.has_gvl)() == 0 {
            return None;
        }
        let mut ec_slot = ts.ruby_ec_slot.get();
        if ec_slot.is_null() {
            // dlsym of a TLS symbol returns the calling thread's copy.
            ec_slot = sym(c"ruby_current_ec") as *const *const c_void;
            if ec_slot.is_null() {
                return None;
            }
            ts.ruby_ec_slot.set(ec_slot);
        }
        if (*ec_slot).is_null() {
            return None;
        }
        if let Some(during_gc) = rt.during_gc {
            if during_gc() != 0 {
                return None;
            }
        }
        let (file, line) = match rt.source_location {
            Some(f) => {
                let mut line: c_int = 0;
                let file = f(&mut line);
                (file, line)
            }
            None => {
                let file = (rt.source_file)();
                (
                    file,
                    if file.is_null() {
                        0
                    } else {
                        (rt.source_line)()
                    },
                )
            }
        };
        if file.is_null() {
            return None;
        }
        Some(RubyLocation {
            file,
            line: line.max(0) as u32,
            generation: (rt.gc_count)() as u64,
        })
    }
}
