//! The real allocator: the next definitions of the malloc family in link
//! order (`dlsym(RTLD_NEXT, …)`), so `LD_PRELOAD=<ours>:libjemalloc.so.2`
//! profiles jemalloc.
//!
//! `dlsym` itself may allocate while we resolve, so until resolution is done
//! every allocation is served from a static bootstrap arena. Blocks from the
//! arena are never freed; `free` recognises them by address.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

pub type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
pub type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type FreeFn = unsafe extern "C" fn(*mut c_void);
pub type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;

/// The real allocator's entry points.
#[derive(Clone, Copy)]
pub struct RealAllocator {
    pub malloc: MallocFn,
    pub calloc: CallocFn,
    pub realloc: ReallocFn,
    pub free: FreeFn,
    pub posix_memalign: PosixMemalignFn,
}

const UNRESOLVED: u8 = 0;
const RESOLVING: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNRESOLVED);

struct RealCell(UnsafeCell<Option<RealAllocator>>);
// SAFETY: written once by the thread that wins UNRESOLVED→RESOLVING, read
// only after READY is published with Release.
unsafe impl Sync for RealCell {}
static REAL: RealCell = RealCell(UnsafeCell::new(None));

/// The real allocator, or None while it is being resolved (then use the
/// bootstrap arena).
#[inline]
pub fn get() -> Option<&'static RealAllocator> {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY is only stored after REAL was written.
        return unsafe { (*REAL.0.get()).as_ref() };
    }
    resolve_slow()
}

#[cold]
fn resolve_slow() -> Option<&'static RealAllocator> {
    if STATE
        .compare_exchange(UNRESOLVED, RESOLVING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Either we are inside our own dlsym (recursion), or another thread
        // is resolving: both are served by the bootstrap arena.
        return if STATE.load(Ordering::Acquire) == READY {
            // SAFETY: READY is only stored after REAL was written.
            unsafe { (*REAL.0.get()).as_ref() }
        } else {
            None
        };
    }
    // SAFETY: dlsym with NUL-terminated names; transmutes are to the C types.
    unsafe {
        let real = RealAllocator {
            malloc: core::mem::transmute::<*mut c_void, MallocFn>(next(c"malloc".as_ptr())),
            calloc: core::mem::transmute::<*mut c_void, CallocFn>(next(c"calloc".as_ptr())),
            realloc: core::mem::transmute::<*mut c_void, ReallocFn>(next(c"realloc".as_ptr())),
            free: core::mem::transmute::<*mut c_void, FreeFn>(next(c"free".as_ptr())),
            posix_memalign: core::mem::transmute::<*mut c_void, PosixMemalignFn>(next(
                c"posix_memalign".as_ptr(),
            )),
        };
        *REAL.0.get() = Some(real);
    }
    STATE.store(READY, Ordering::Release);
    // SAFETY: written just above, by this thread.
    unsafe { (*REAL.0.get()).as_ref() }
}

/// The next definition of `name` (ours is at `own`). When an allocator
/// was preloaded before us (`LD_PRELOAD="libc.so.6 libmwrap_preload.so"`)
/// there is none after us, and the first definition, that one, is the real
/// allocator: the program calls it directly, and only our other entry
/// points (`rb_nogvl`) can bring a thread here. Aborts with a message when
/// there is none at all, since no allocation could ever succeed.
///
/// # Safety
/// `name` is NUL-terminated.
unsafe fn next(name: *const c_char) -> *mut c_void {
    // SAFETY: per this function's contract.
    let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, name) };
    if p.is_null() {
        // SAFETY: as above.
        p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name) };
        if in_this_library(p) {
            p = core::ptr::null_mut();
        }
    }
    if p.is_null() {
        crate::diag::write_stderr(
            b"mwrap: no real allocator found after the preload (dlsym RTLD_NEXT failed)\n",
        );
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
    p
}

/// Whether `p` lies in the preload itself (our own address of a name is
/// not what `crate::api::malloc` evaluates to: references to our exported
/// symbols go through the GOT, so they can name an interposer).
fn in_this_library(p: *mut c_void) -> bool {
    if p.is_null() {
        return false;
    }
    // SAFETY: dladdr fills plain structs; only the base addresses are read.
    unsafe {
        let mut theirs: libc::Dl_info = core::mem::zeroed();
        let mut ours: libc::Dl_info = core::mem::zeroed();
        libc::dladdr(p, &mut theirs) != 0
            && libc::dladdr(in_this_library as *const c_void, &mut ours) != 0
            && theirs.dli_fbase == ours.dli_fbase
    }
}

// ---------------------------------------------------------------------------
// Bootstrap arena

const BOOT_SIZE: usize = 256 * 1024;
/// Each bootstrap block is preceded by its size, padded to keep 16-byte alignment.
const BOOT_HEADER: usize = 16;

#[repr(C, align(4096))]
struct BootArena(UnsafeCell<[u8; BOOT_SIZE]>);
// SAFETY: disjoint ranges are handed out through an atomic bump pointer.
unsafe impl Sync for BootArena {}

static BOOT: BootArena = BootArena(UnsafeCell::new([0; BOOT_SIZE]));
static BOOT_USED: AtomicUsize = AtomicUsize::new(0);

fn boot_base() -> usize {
    BOOT.0.get() as usize
}

/// A zeroed block from the bootstrap arena aligned to `align` (≤ 4096), or
/// null (ENOMEM) when the arena is exhausted.
pub fn boot_alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.clamp(16, 4096);
    let Some(need) = size.checked_add(BOOT_HEADER + align) else {
        return core::ptr::null_mut();
    };
    let start = BOOT_USED.fetch_add(need, Ordering::Relaxed);
    if start + need > BOOT_SIZE {
        return core::ptr::null_mut();
    }
    let base = boot_base();
    let user = (base + start + BOOT_HEADER + align - 1) & !(align - 1);
    // SAFETY: [start, start+need) is ours; the size word sits right before user.
    unsafe { ((user - 8) as *mut usize).write(size) };
    user as *mut u8
}

/// True if `p` came from the bootstrap arena.
#[inline(always)]
pub fn boot_owns(p: *const u8) -> bool {
    (p as usize).wrapping_sub(boot_base()) < BOOT_SIZE
}

/// Size recorded for a bootstrap block.
pub fn boot_size(p: *const u8) -> usize {
    // SAFETY: callers check boot_owns first.
    unsafe { ((p as usize - 8) as *const usize).read() }
}

// ---------------------------------------------------------------------------
// Rust's own allocations inside the preload go straight to the real
// allocator, never through our hooks.

#[cfg_attr(test, allow(dead_code))]
pub struct RealGlobalAlloc;

// SAFETY: blocks come from the real allocator (aligned as asked, see
// `alloc`) or from the bootstrap arena, and each goes back where it came from.
unsafe impl core::alloc::GlobalAlloc for RealGlobalAlloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let Some(real) = get() else {
            return boot_alloc(layout.size(), layout.align());
        };
        // malloc aligns to 16 only blocks of at least 16 bytes (jemalloc
        // gives an 8-byte block 8-byte alignment), as std's System knows.
        let p = if layout.align() <= 16 && layout.align() <= layout.size() {
            // SAFETY: the real malloc, with any size.
            unsafe { (real.malloc)(layout.size()) as *mut u8 }
        } else {
            let mut p = core::ptr::null_mut();
            let align = layout.align().max(core::mem::size_of::<usize>());
            // SAFETY: a power of two, multiple of the pointer size.
            if unsafe { (real.posix_memalign)(&mut p, align, layout.size()) } != 0 {
                p = core::ptr::null_mut();
            }
            p as *mut u8
        };
        if p.is_null() {
            // Out of memory: the profiler's own small needs come from what
            // is left of the bootstrap arena rather than aborting.
            return boot_alloc(layout.size(), layout.align());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: core::alloc::Layout) {
        if boot_owns(ptr) {
            return;
        }
        if let Some(real) = get() {
            // SAFETY: `ptr` came from the real allocator (see `alloc`).
            unsafe { (real.free)(ptr as *mut c_void) };
        }
    }

    unsafe fn realloc(
        &self,
        ptr: *mut u8,
        layout: core::alloc::Layout,
        new_size: usize,
    ) -> *mut u8 {
        if layout.align() <= 16 && layout.align() <= new_size && !boot_owns(ptr) {
            if let Some(real) = get() {
                // SAFETY: `ptr` came from the real malloc (see `alloc`).
                let p = unsafe { (real.realloc)(ptr as *mut c_void, new_size) as *mut u8 };
                if !p.is_null() {
                    return p;
                }
            }
        }
        let Ok(new_layout) = core::alloc::Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: a valid layout of non-zero size (GlobalAlloc's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks hold at least the bytes copied; `ptr` is
            // ours to free per GlobalAlloc's contract.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Gives a block of ours (its header at `hdr`) back to the real allocator.
///
/// # Safety
/// `hdr` is the header of a block handed out by the hooks, out of every
/// table, and the program is done with it.
#[inline(always)]
pub unsafe fn free_block(hdr: *mut mwrap_core::LiveAllocation) {
    // SAFETY: a block of ours came from the real allocator, so it was
    // resolved (READY published) before the block was handed out.
    let real = unsafe { (*REAL.0.get()).as_ref() };
    if let Some(real) = real {
        // SAFETY: per this function's contract.
        unsafe { (real.free)(mwrap_core::LiveAllocation::raw_block(hdr).cast()) };
    }
}

// ---------------------------------------------------------------------------
// mmap / munmap, for Ruby's heap pages. Resolved on first use; until then
// (or if the lookup fails) the system calls are made directly.

pub type MmapFn =
    unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, c_int, libc::off_t) -> *mut c_void;
pub type MunmapFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;

static REAL_MMAP: core::sync::atomic::AtomicPtr<c_void> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
static REAL_MMAP64: core::sync::atomic::AtomicPtr<c_void> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
static REAL_MUNMAP: core::sync::atomic::AtomicPtr<c_void> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

fn resolve_next(
    slot: &core::sync::atomic::AtomicPtr<c_void>,
    name: &core::ffi::CStr,
) -> *mut c_void {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: dlsym with a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    slot.store(p, Ordering::Release);
    p
}

/// The next `mmap` (or `mmap64` when `wide`) in link order.
///
/// # Safety
/// As for the C function.
pub unsafe fn mmap(
    wide: bool,
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    let f = if wide {
        resolve_next(&REAL_MMAP64, c"mmap64")
    } else {
        resolve_next(&REAL_MMAP, c"mmap")
    };
    if f.is_null() {
        // SAFETY: the caller's arguments, per the C contract.
        return unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) }
            as *mut c_void;
    }
    // SAFETY: `f` is the next mmap, of this type; the caller's arguments.
    unsafe { core::mem::transmute::<*mut c_void, MmapFn>(f)(addr, len, prot, flags, fd, off) }
}

/// The next `munmap` in link order.
///
/// # Safety
/// As for the C function.
pub unsafe fn munmap(addr: *mut c_void, len: usize) -> c_int {
    let f = resolve_next(&REAL_MUNMAP, c"munmap");
    if f.is_null() {
        // SAFETY: the caller's arguments, per the C contract.
        return unsafe { libc::syscall(libc::SYS_munmap, addr, len) } as c_int;
    }
    // SAFETY: `f` is the next munmap, of this type; the caller's arguments.
    unsafe { core::mem::transmute::<*mut c_void, MunmapFn>(f)(addr, len) }
}
