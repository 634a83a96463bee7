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
//!
//! Asking Ruby for the line is the costliest step of a hook (the line is
//! computed from the frame's pc each time). On Ruby versions whose frame
//! layout we know, the hook instead reads the current Ruby frame's
//! `(iseq, pc, path)`, which maps to exactly one `file:line`, and only asks
//! Ruby for the line when that pair is not cached yet.

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::thread_data::ThreadData;

type HasGvlFn = unsafe extern "C" fn() -> c_int;
type SourceLocationFn = unsafe extern "C" fn(*mut c_int) -> *const c_char;
type SourceFileFn = unsafe extern "C" fn() -> *const c_char;
type SourceLineFn = unsafe extern "C" fn() -> c_int;
type GcCountFn = unsafe extern "C" fn() -> usize;
type DuringGcFn = unsafe extern "C" fn() -> c_int;
type NextCfpFn = unsafe extern "C" fn(*const c_void, *const c_void) -> *const c_void;
type IseqPathFn = unsafe extern "C" fn(*const c_void) -> usize;
type IseqLineNoFn = unsafe extern "C" fn(*const c_void, usize) -> u32;
type StringValuePtrFn = unsafe extern "C" fn(*mut usize) -> *const c_char;

/// Frame layout shared by Ruby 2.6 to 3.4 (vm_core.h):
/// `rb_execution_context_t { VALUE *vm_stack; size_t vm_stack_size; rb_control_frame_t *cfp; … }`
/// `rb_control_frame_t { const VALUE *pc; VALUE *sp; const rb_iseq_t *iseq; … }`
const EC_CFP_OFFSET: usize = 16;
const CFP_PC_OFFSET: usize = 0;
const CFP_ISEQ_OFFSET: usize = 16;
const CFP_EP_OFFSET: usize = 32;
/// `ep[0]` holds the frame's flags; a C frame has `VM_FRAME_FLAG_CFRAME`.
const VM_FRAME_FLAG_CFRAME: usize = 0x0080;
/// `rb_execution_context_t { VALUE *vm_stack; size_t vm_stack_size; … }`:
/// the control frames grow down from `vm_stack + vm_stack_size`.
const EC_VM_STACK_OFFSET: usize = 0;
const EC_VM_STACK_SIZE_OFFSET: usize = 8;
/// `rb_iseq_t { VALUE flags; VALUE wrapper; struct rb_iseq_constant_body *body; … }`
/// `rb_iseq_constant_body { enum iseq_type type; unsigned int iseq_size; VALUE *iseq_encoded; … }`
const ISEQ_BODY_OFFSET: usize = 16;
const BODY_ISEQ_SIZE_OFFSET: usize = 4;
const BODY_ENCODED_OFFSET: usize = 8;

/// Ruby's entry points, resolved once.
struct RubyRuntime {
    has_gvl: HasGvlFn,
    /// `rb_source_location_cstr`: file and line in one frame walk.
    source_location: Option<SourceLocationFn>,
    source_file: SourceFileFn,
    source_line: SourceLineFn,
    gc_count: GcCountFn,
    during_gc: Option<DuringGcFn>,
    /// `rb_vm_get_ruby_level_next_cfp` and `rb_iseq_path`, only when the
    /// frame layout is known.
    next_cfp: Option<(NextCfpFn, IseqPathFn)>,
    /// What walking every Ruby frame needs (`MWRAP=ruby_bt`, `app_root`,
    /// GVL notes): `rb_iseq_line_no`, `rb_string_value_ptr` and the size
    /// of a control frame, when the frame layout is known.
    frame_walk: Option<FrameWalk>,
    /// `&ruby_current_vm_ptr`.
    vm_ptr: *const *const c_void,
}

#[derive(Clone, Copy)]
struct FrameWalk {
    line_no: IseqLineNoFn,
    string_ptr: StringValuePtrFn,
    path: IseqPathFn,
    /// `sizeof(rb_control_frame_t)`.
    cfp_size: usize,
}

/// Where the runtime lives once found: a static, not a heap block, so
/// that finding Ruby cannot fail for lack of memory.
struct RuntimeCell(core::cell::UnsafeCell<core::mem::MaybeUninit<RubyRuntime>>);
// SAFETY: written once by the thread that publishes RUNTIME, read after.
unsafe impl Sync for RuntimeCell {}
static RUNTIME_STORAGE: RuntimeCell =
    RuntimeCell(core::cell::UnsafeCell::new(core::mem::MaybeUninit::uninit()));
static RUNTIME: AtomicPtr<RubyRuntime> = AtomicPtr::new(core::ptr::null_mut());
/// Set by the one thread that fills RUNTIME_STORAGE.
static ATTACHING: AtomicBool = AtomicBool::new(false);
static VM_TORN_DOWN: AtomicBool = AtomicBool::new(false);

/// The Ruby frame that is allocating: a cache key that names one
/// `file:line` within one GC generation, and the line when already known.
pub struct RubyFrame {
    /// `(iseq, pc, path object)` with the fast path (an iseq's path can be
    /// set again, as the main script's is during boot), else
    /// `(file pointer, line, 0)`.
    pub key: (usize, usize, usize),
    pub generation: u64,
    location: Option<(*const c_char, u32)>,
}

impl RubyFrame {
    /// The block of compiled code the frame's pc points into, and its size
    /// in bytes (`ALLOC_N(VALUE, iseq_size)`), when the frame was read
    /// directly.
    pub fn code(&self) -> Option<(*const u8, usize)> {
        let (iseq, _, path) = self.key;
        if path == 0 || iseq == 0 {
            return None;
        }
        // SAFETY: a frame read directly (known layout) is the running
        // Ruby frame of this thread, which holds the GVL with no GC
        // running: its iseq and body are alive and not moving.
        unsafe { iseq_code(iseq) }
    }

    /// The frame's file (NUL-terminated, owned by Ruby) and line.
    pub fn location(&self) -> Option<(*const c_char, u32)> {
        if self.location.is_some() {
            return self.location;
        }
        let rt = RUNTIME.load(Ordering::Acquire);
        // SAFETY: a RubyFrame only exists after `current_frame` checked
        // that asking Ruby is safe on this thread, and nothing ran since.
        unsafe { source_location(&*rt) }
    }
}

/// Whether this Ruby's frame layout is the one we read directly.
fn known_frame_layout() -> bool {
    control_frame_size().is_some()
}

/// `sizeof(rb_control_frame_t)` of this Ruby, for the versions whose
/// layout we know: seven words up to 3.0, eight (`jit_return`) from 3.1.
/// Checked on 3.1 (the frames found match `rb_profile_frames`).
fn control_frame_size() -> Option<usize> {
    // SAFETY: a NUL-terminated name.
    let v = unsafe { sym(c"ruby_api_version") } as *const c_int;
    if v.is_null() {
        return None;
    }
    // SAFETY: libruby exports `const int ruby_api_version[3]`.
    let (major, minor) = unsafe { (*v, *v.add(1)) };
    match (major, minor) {
        (2, 6..) | (3, 0) => Some(7 * 8),
        (3, 1..=4) => Some(8 * 8),
        _ => None,
    }
}

/// `dlsym(RTLD_DEFAULT, name)`. A miss leaves an error pending that the
/// program would read from its next `dlerror()`. It is cleared by a lookup
/// that succeeds (glibc resets the pending error at every `dl*` call), not
/// by calling `dlerror()`: that translates the message, which takes the
/// locale lock, and the first malloc of a program can come from inside
/// `setlocale` holding it.
unsafe fn sym(name: &core::ffi::CStr) -> *mut c_void {
    // SAFETY: dlsym with NUL-terminated names.
    unsafe {
        let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        if p.is_null() {
            libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        }
        p
    }
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
        let rt = RubyRuntime {
            has_gvl: core::mem::transmute::<*mut c_void, HasGvlFn>(has_gvl),
            source_location: (!source_location.is_null())
                .then(|| core::mem::transmute::<*mut c_void, SourceLocationFn>(source_location)),
            source_file: core::mem::transmute::<*mut c_void, SourceFileFn>(source_file),
            source_line: core::mem::transmute::<*mut c_void, SourceLineFn>(source_line),
            gc_count: core::mem::transmute::<*mut c_void, GcCountFn>(gc_count),
            during_gc: (!during_gc.is_null())
                .then(|| core::mem::transmute::<*mut c_void, DuringGcFn>(during_gc)),
            next_cfp: {
                let f = sym(c"rb_vm_get_ruby_level_next_cfp");
                let p = sym(c"rb_iseq_path");
                (!f.is_null() && !p.is_null() && known_frame_layout()).then(|| {
                    (
                        core::mem::transmute::<*mut c_void, NextCfpFn>(f),
                        core::mem::transmute::<*mut c_void, IseqPathFn>(p),
                    )
                })
            },
            frame_walk: {
                let line_no = sym(c"rb_iseq_line_no");
                let string_ptr = sym(c"rb_string_value_ptr");
                let path = sym(c"rb_iseq_path");
                match control_frame_size() {
                    Some(cfp_size)
                        if !line_no.is_null() && !string_ptr.is_null() && !path.is_null() =>
                    {
                        Some(FrameWalk {
                            line_no: core::mem::transmute::<*mut c_void, IseqLineNoFn>(line_no),
                            string_ptr: core::mem::transmute::<*mut c_void, StringValuePtrFn>(
                                string_ptr,
                            ),
                            path: core::mem::transmute::<*mut c_void, IseqPathFn>(path),
                            cfp_size,
                        })
                    }
                    _ => None,
                }
            },
            vm_ptr: vm_ptr as *const *const c_void,
        };
        if ATTACHING.swap(true, Ordering::AcqRel) {
            return; // another thread is publishing the same symbols
        }
        let slot = (*RUNTIME_STORAGE.0.get()).write(rt);
        RUNTIME.store(slot, Ordering::Release);
    }
}

/// Whether Ruby was found in this process (one load: non-Ruby programs
/// skip every other check).
#[inline(always)]
pub fn attached() -> bool {
    !RUNTIME.load(Ordering::Relaxed).is_null()
}

/// Whether the VM is being (or was) destroyed.
pub fn vm_torn_down() -> bool {
    VM_TORN_DOWN.load(Ordering::Acquire)
}

/// From here on no Ruby function is called: the VM is being destroyed.
pub fn mark_vm_torn_down() {
    VM_TORN_DOWN.store(true, Ordering::Release);
}

/// What a hook may learn about Ruby on this thread, asked in this order,
/// each question only when every earlier answer allows going on: an
/// answer may need a Ruby call that is only safe once the earlier ones are
/// known.
pub trait RubyState {
    /// libruby's symbols were found in the process.
    fn attached(&mut self) -> bool;
    /// `ruby_vm_destruct` has started.
    fn torn_down(&mut self) -> bool;
    /// This thread has an execution context (`ruby_current_ec`): during
    /// `ruby_setup` a thread "has the GVL" before its EC exists.
    fn has_ec(&mut self) -> bool;
    /// The VM exists (`ruby_current_vm_ptr`).
    fn vm_up(&mut self) -> bool;
    /// This thread holds the GVL (`ruby_thread_has_gvl_p`).
    fn has_gvl(&mut self) -> bool;
    /// A GC is running (`rb_during_gc`): a compacting GC moves the objects
    /// a frame points to.
    fn during_gc(&mut self) -> bool;
}

/// Whether this thread may call into Ruby at all (heap pages need only
/// this, GC or not).
#[inline(always)]
pub fn may_call_ruby(s: &mut impl RubyState) -> bool {
    s.attached() && !s.torn_down() && s.has_ec() && s.vm_up() && s.has_gvl()
}

/// Whether an allocation made now is charged to the Ruby line running on
/// this thread (else to its native caller).
#[inline(always)]
pub fn charges_ruby_line(s: &mut impl RubyState) -> bool {
    may_call_ruby(s) && !s.during_gc()
}

/// The real answers, for the calling thread.
struct LiveRuby<'a> {
    ts: &'a ThreadData,
    rt: *const RubyRuntime,
    ec: *const c_void,
}

impl<'a> LiveRuby<'a> {
    #[inline(always)]
    fn new(ts: &'a ThreadData) -> Self {
        LiveRuby {
            ts,
            rt: core::ptr::null(),
            ec: core::ptr::null(),
        }
    }
}

impl RubyState for LiveRuby<'_> {
    #[inline(always)]
    fn attached(&mut self) -> bool {
        self.rt = RUNTIME.load(Ordering::Acquire);
        !self.rt.is_null()
    }

    #[inline(always)]
    fn torn_down(&mut self) -> bool {
        VM_TORN_DOWN.load(Ordering::Acquire)
    }

    #[inline(always)]
    fn has_ec(&mut self) -> bool {
        let slot = ec_slot(self.ts);
        if slot.is_null() {
            return false;
        }
        // SAFETY: this thread's copy of libruby's TLS pointer variable.
        self.ec = unsafe { *slot };
        !self.ec.is_null()
    }

    #[inline(always)]
    fn vm_up(&mut self) -> bool {
        // SAFETY: `attached` found the runtime, which is never freed.
        unsafe { !(*(*self.rt).vm_ptr).is_null() }
    }

    #[inline(always)]
    fn has_gvl(&mut self) -> bool {
        // SAFETY: Ruby's own predicate, callable from any thread once the
        // VM is up.
        unsafe { ((*self.rt).has_gvl)() != 0 }
    }

    #[inline(always)]
    fn during_gc(&mut self) -> bool {
        // SAFETY: asked only with the GVL held (see `charges_ruby_line`).
        unsafe { (*self.rt).during_gc.is_some_and(|f| f() != 0) }
    }
}

/// The execution context of the fiber running on this thread, or 0
/// without Ruby: a key for per-fiber state, never dereferenced. Reading
/// our own thread's `ruby_current_ec` touches no Ruby object.
pub fn current_ec(ts: &ThreadData) -> usize {
    if RUNTIME.load(Ordering::Acquire).is_null() {
        return 0;
    }
    let slot = ec_slot(ts);
    if slot.is_null() {
        return 0;
    }
    // SAFETY: `slot` is this thread's copy of a TLS pointer variable.
    unsafe { *slot as usize }
}

/// This thread's `&ruby_current_ec`, looked up once per thread (inlined:
/// every allocation under Ruby asks).
#[inline(always)]
fn ec_slot(ts: &ThreadData) -> *const *const c_void {
    let slot = ts.ruby_ec_slot.get();
    if slot.is_null() {
        return look_up_ec_slot(ts);
    }
    slot
}

#[cold]
#[inline(never)]
fn look_up_ec_slot(ts: &ThreadData) -> *const *const c_void {
    // SAFETY: dlsym of a TLS symbol returns the calling thread's copy.
    let slot = unsafe { sym(c"ruby_current_ec") } as *const *const c_void;
    ts.ruby_ec_slot.set(slot);
    slot
}

/// The current GC generation, when this thread may ask Ruby (also during GC).
pub fn generation_with_gvl(ts: &ThreadData) -> Option<u64> {
    let mut live = LiveRuby::new(ts);
    if !may_call_ruby(&mut live) {
        return None;
    }
    // SAFETY: may_call_ruby checked that Ruby may be called.
    Some(unsafe { ((*live.rt).gc_count)() } as u64)
}

/// The Ruby frame running on this thread, when it is safe to ask.
#[inline(always)]
pub fn current_frame(ts: &ThreadData) -> Option<RubyFrame> {
    let mut live = LiveRuby::new(ts);
    if !charges_ruby_line(&mut live) {
        return None;
    }
    let ec = live.ec;
    // SAFETY: charges_ruby_line checked that Ruby may be called and no GC
    // runs; the frame layout is only read when `known_frame_layout`
    // accepted this Ruby.
    unsafe {
        let rt = &*live.rt;
        let generation = (rt.gc_count)() as u64;
        if let Some((next_cfp, iseq_path)) = rt.next_cfp {
            let top = *((ec as *const u8).add(EC_CFP_OFFSET) as *const *const c_void);
            let cfp = next_cfp(ec, top) as *const u8;
            if cfp.is_null() {
                return None;
            }
            let pc = *(cfp.add(CFP_PC_OFFSET) as *const usize);
            let iseq = *(cfp.add(CFP_ISEQ_OFFSET) as *const usize);
            return Some(RubyFrame {
                key: (iseq, pc, iseq_path(iseq as *const c_void)),
                generation,
                location: None,
            });
        }
        let (file, line) = source_location(rt)?;
        Some(RubyFrame {
            key: (file as usize, line as usize, 0),
            generation,
            location: Some((file, line)),
        })
    }
}

/// A Ruby frame as the VM holds it: its iseq, pc and path object. Names
/// one `file:line` while its code lives (see `state::code_epoch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFrame {
    pub iseq: usize,
    pub pc: usize,
    pub path: usize,
}

/// Whether Ruby frames can be walked here (`ruby_bt`, `app_root`, GVL
/// notes need it): a Ruby whose frame layout we know.
pub fn can_walk_frames() -> bool {
    let rt = RUNTIME.load(Ordering::Acquire);
    // SAFETY: a published runtime is never freed.
    !rt.is_null() && unsafe { (*rt).frame_walk.is_some() }
}

/// What [`walk_frames`] found.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    /// Frames written.
    pub frames: usize,
    /// How many of them a backtrace shows: Ruby's own backtraces
    /// (`caller_locations`) leave out the oldest control frame (the
    /// toplevel frame the main script or `-e` runs above, at line 0), and
    /// so do recorded stacks; the location may still be that frame, as
    /// `rb_source_location` finds it (allocations during boot).
    pub shown: usize,
    pub generation: u64,
}

/// The Ruby-level frames of this thread, innermost first (C methods left
/// out), up to `out.len()`; None when Ruby may not be asked now (see
/// `charges_ruby_line`).
#[inline]
pub fn walk_frames(ts: &ThreadData, out: &mut [RawFrame]) -> Option<Walk> {
    let mut live = LiveRuby::new(ts);
    if !charges_ruby_line(&mut live) {
        return None;
    }
    // SAFETY: charges_ruby_line checked that Ruby may be called and no GC
    // runs (so nothing moves), and `frame_walk` exists only for the frame
    // layouts we know: every control frame between `ec->cfp` and the end
    // of the VM stack is live, with an `ep` whose first word holds flags.
    unsafe {
        let rt = &*live.rt;
        let walk = rt.frame_walk?;
        let ec = live.ec as *const u8;
        let generation = (rt.gc_count)() as u64;
        let stack = *(ec.add(EC_VM_STACK_OFFSET) as *const *const usize);
        let size = *(ec.add(EC_VM_STACK_SIZE_OFFSET) as *const usize);
        let end = stack.add(size) as usize;
        let shown_end = end.saturating_sub(walk.cfp_size);
        let mut cfp = *(ec.add(EC_CFP_OFFSET) as *const usize);
        let mut n = 0;
        let mut shown = 0;
        while cfp < end && n < out.len() {
            let ep = *((cfp + CFP_EP_OFFSET) as *const *const usize);
            let iseq = *((cfp + CFP_ISEQ_OFFSET) as *const usize);
            if !ep.is_null() && *ep & VM_FRAME_FLAG_CFRAME == 0 && iseq != 0 {
                let pc = *((cfp + CFP_PC_OFFSET) as *const usize);
                out[n] = RawFrame {
                    iseq,
                    pc,
                    path: (walk.path)(iseq as *const c_void),
                };
                n += 1;
                if cfp < shown_end {
                    shown = n;
                }
            }
            cfp += walk.cfp_size;
        }
        Some(Walk {
            frames: n,
            shown,
            generation,
        })
    }
}

/// The file (NUL-terminated, owned by Ruby) and line of a frame just
/// walked.
///
/// # Safety
/// `frame` came from [`walk_frames`] on this thread, and nothing ran since
/// that could let Ruby free or move it (no GVL release, no GC).
pub unsafe fn frame_location(frame: &RawFrame) -> Option<(*const c_char, u32)> {
    let rt = RUNTIME.load(Ordering::Acquire);
    // SAFETY: per this function's contract, the frame's iseq and path are
    // alive; `rb_iseq_path` returned a String, which `rb_string_value_ptr`
    // reads without allocating; the body's code pointer is the one the pc
    // points into (`pc - iseq_encoded` is the position Ruby's own
    // `calc_lineno` uses, less one: the pc already points past the
    // instruction).
    unsafe {
        let walk = (*rt).frame_walk?;
        let mut path = frame.path;
        let file = (walk.string_ptr)(&mut path);
        let body = *((frame.iseq + ISEQ_BODY_OFFSET) as *const *const u8);
        if file.is_null() || body.is_null() {
            return None;
        }
        let code = *(body.add(BODY_ENCODED_OFFSET) as *const usize);
        let pos = frame.pc.wrapping_sub(code) / core::mem::size_of::<usize>();
        let line = (walk.line_no)(frame.iseq as *const c_void, pos.saturating_sub(1));
        Some((file, line))
    }
}

/// The block of compiled code of a frame just walked and its size in bytes
/// (`ALLOC_N(VALUE, iseq_size)`), to watch it (see `locate`).
///
/// # Safety
/// As for [`frame_location`].
pub unsafe fn frame_code(frame: &RawFrame) -> Option<(*const u8, usize)> {
    // SAFETY: per this function's contract, the iseq and its body are alive.
    unsafe { iseq_code(frame.iseq) }
}

/// # Safety
/// `iseq` is a live iseq, with the GVL held and no GC running.
unsafe fn iseq_code(iseq: usize) -> Option<(*const u8, usize)> {
    // SAFETY: per this function's contract.
    unsafe {
        let body = *((iseq + ISEQ_BODY_OFFSET) as *const *const u8);
        if body.is_null() {
            return None;
        }
        let size = *(body.add(BODY_ISEQ_SIZE_OFFSET) as *const u32) as usize;
        let code = *(body.add(BODY_ENCODED_OFFSET) as *const *const u8);
        (!code.is_null()).then_some((code, size * core::mem::size_of::<usize>()))
    }
}

/// Asks Ruby for the current file and line.
///
/// # Safety
/// Only after the checks of `current_frame` passed on this thread.
unsafe fn source_location(rt: &RubyRuntime) -> Option<(*const c_char, u32)> {
    // SAFETY: per this function's contract, Ruby may be asked.
    let (file, line) = unsafe {
        match rt.source_location {
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
        }
    };
    (!file.is_null()).then_some((file, line.max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canned answers; records which questions were asked.
    struct Facts {
        answers: [bool; 6],
        asked: Vec<&'static str>,
    }

    impl Facts {
        fn ask(&mut self, i: usize, name: &'static str) -> bool {
            self.asked.push(name);
            self.answers[i]
        }
    }

    impl RubyState for Facts {
        fn attached(&mut self) -> bool {
            self.ask(0, "attached")
        }
        fn torn_down(&mut self) -> bool {
            self.ask(1, "torn_down")
        }
        fn has_ec(&mut self) -> bool {
            self.ask(2, "has_ec")
        }
        fn vm_up(&mut self) -> bool {
            self.ask(3, "vm_up")
        }
        fn has_gvl(&mut self) -> bool {
            self.ask(4, "has_gvl")
        }
        fn during_gc(&mut self) -> bool {
            self.ask(5, "during_gc")
        }
    }

    #[test]
    fn the_decision_table() {
        const T: bool = true;
        const F: bool = false;
        // attached, torn_down, has_ec, vm_up, has_gvl, during_gc -> Ruby line?, last question asked
        let table: &[([bool; 6], bool, &str)] = &[
            ([F, F, T, T, T, F], false, "attached"), // not a Ruby process
            ([T, T, T, T, T, F], false, "torn_down"), // the VM is being destroyed
            ([T, F, F, T, T, F], false, "has_ec"), // a thread without an EC (ruby_setup, a native thread)
            ([T, F, T, F, T, F], false, "vm_up"),  // no VM yet
            ([T, F, T, T, F, F], false, "has_gvl"), // the thread released the GVL
            ([T, F, T, T, T, T], false, "during_gc"), // a GC runs
            ([T, F, T, T, T, F], true, "during_gc"), // the Ruby line
        ];
        for (answers, ruby_line, last) in table {
            let mut f = Facts {
                answers: *answers,
                asked: Vec::new(),
            };
            assert_eq!(charges_ruby_line(&mut f), *ruby_line, "{answers:?}");
            assert_eq!(f.asked.last(), Some(last), "{answers:?}");
            // Nothing is asked after the first answer that stops it.
            let order = [
                "attached",
                "torn_down",
                "has_ec",
                "vm_up",
                "has_gvl",
                "during_gc",
            ];
            assert_eq!(f.asked, order[..f.asked.len()], "{answers:?}");
        }
        // Heap pages need Ruby callable, whatever the GC does.
        let mut f = Facts {
            answers: [T, F, T, T, T, T],
            asked: Vec::new(),
        };
        assert!(may_call_ruby(&mut f));
        assert!(!f.asked.contains(&"during_gc"));
    }
}
