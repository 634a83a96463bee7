//! Every symbol the preload exports. `#[cfg_attr(not(test), no_mangle)]`
//! keeps unit tests on their own malloc.
//!
//! Functions that charge the caller are naked trampolines: they copy the
//! caller's registers at the call — its return address (the caller of
//! `malloc`), its stack pointer after the return and its frame pointer —
//! into the next three free argument registers and jump to the
//! implementation, which then returns straight to the caller. Stable Rust
//! has no other way to read the return address, and this way costs three
//! register moves; the stack and frame pointers start the unwinder
//! (`MWRAP=bt:N`) at the caller, with none of our frames to skip.

// The safety contract of each function is the C one of its namesake.
#![allow(clippy::missing_safety_doc)]

use core::ffi::{c_int, c_void};

use crate::caller::Caller;
use crate::hooks;
use crate::nogvl;

/// Defines an exported allocator entry point that passes its caller's
/// registers as three extra last arguments to `$target`.
macro_rules! entry_with_caller {
    ($name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $target:ident, x86_64 = ($pc:literal, $sp:literal, $bp:literal), aarch64 = ($apc:literal, $asp:literal, $abp:literal)) => {
        #[cfg(target_arch = "x86_64")]
        #[cfg_attr(not(test), no_mangle)]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(
                concat!("mov ", $pc, ", qword ptr [rsp]"),
                concat!("lea ", $sp, ", [rsp + 8]"),
                concat!("mov ", $bp, ", rbp"),
                "jmp {f}",
                f = sym $target
            )
        }

        #[cfg(target_arch = "aarch64")]
        #[cfg_attr(not(test), no_mangle)]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(
                concat!("mov ", $apc, ", x30"),
                concat!("mov ", $asp, ", sp"),
                concat!("mov ", $abp, ", x29"),
                "b {f}",
                f = sym $target
            )
        }

        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        #[cfg_attr(not(test), no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the C contract of the entry point is the caller's.
            #[allow(unused_unsafe)]
            unsafe { $target($($arg,)* 0, 0, 0) }
        }
    };
}

entry_with_caller!(malloc(size: usize) -> *mut c_void, malloc_at, x86_64 = ("rsi", "rdx", "rcx"), aarch64 = ("x1", "x2", "x3"));
entry_with_caller!(calloc(n: usize, size: usize) -> *mut c_void, calloc_at, x86_64 = ("rdx", "rcx", "r8"), aarch64 = ("x2", "x3", "x4"));
entry_with_caller!(realloc(ptr: *mut c_void, size: usize) -> *mut c_void, realloc_at, x86_64 = ("rdx", "rcx", "r8"), aarch64 = ("x2", "x3", "x4"));
entry_with_caller!(reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void, reallocarray_at, x86_64 = ("rcx", "r8", "r9"), aarch64 = ("x3", "x4", "x5"));
entry_with_caller!(posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int, posix_memalign_at, x86_64 = ("rcx", "r8", "r9"), aarch64 = ("x3", "x4", "x5"));
entry_with_caller!(memalign(align: usize, size: usize) -> *mut c_void, memalign_at, x86_64 = ("rdx", "rcx", "r8"), aarch64 = ("x2", "x3", "x4"));
entry_with_caller!(aligned_alloc(align: usize, size: usize) -> *mut c_void, aligned_alloc_at, x86_64 = ("rdx", "rcx", "r8"), aarch64 = ("x2", "x3", "x4"));
entry_with_caller!(valloc(size: usize) -> *mut c_void, valloc_at, x86_64 = ("rsi", "rdx", "rcx"), aarch64 = ("x1", "x2", "x3"));
entry_with_caller!(pvalloc(size: usize) -> *mut c_void, pvalloc_at, x86_64 = ("rsi", "rdx", "rcx"), aarch64 = ("x1", "x2", "x3"));
// glibc's own names for its allocator: programs and debugging libraries
// call them directly and mix them with `free`, so they must hand out (and
// take back) the same blocks as the rest of the family.
entry_with_caller!(__libc_malloc(size: usize) -> *mut c_void, malloc_at, x86_64 = ("rsi", "rdx", "rcx"), aarch64 = ("x1", "x2", "x3"));
entry_with_caller!(__libc_calloc(n: usize, size: usize) -> *mut c_void, calloc_at, x86_64 = ("rdx", "rcx", "r8"), aarch64 = ("x2", "x3", "x4"));
entry_with_caller!(__libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void, realloc_at, x86_64 = ("rdx", "rcx", "r8"), aarch64 = ("x2", "x3", "x4"));
entry_with_caller!(__libc_memalign(align: usize, size: usize) -> *mut c_void, memalign_at, x86_64 = ("rdx", "rcx", "r8"), aarch64 = ("x2", "x3", "x4"));
entry_with_caller!(__libc_valloc(size: usize) -> *mut c_void, valloc_at, x86_64 = ("rsi", "rdx", "rcx"), aarch64 = ("x1", "x2", "x3"));
entry_with_caller!(__libc_pvalloc(size: usize) -> *mut c_void, pvalloc_at, x86_64 = ("rsi", "rdx", "rcx"), aarch64 = ("x1", "x2", "x3"));

extern "C" fn malloc_at(size: usize, pc: usize, sp: usize, bp: usize) -> *mut c_void {
    hooks::allocate(size, false, Caller { pc, sp, bp })
}

extern "C" fn calloc_at(n: usize, size: usize, pc: usize, sp: usize, bp: usize) -> *mut c_void {
    hooks::allocate_zeroed(n, size, Caller { pc, sp, bp })
}

unsafe extern "C" fn realloc_at(
    ptr: *mut c_void,
    size: usize,
    pc: usize,
    sp: usize,
    bp: usize,
) -> *mut c_void {
    // SAFETY: the C contract of realloc is the caller's.
    unsafe { hooks::realloc(ptr, size, Caller { pc, sp, bp }) }
}

unsafe extern "C" fn reallocarray_at(
    ptr: *mut c_void,
    n: usize,
    size: usize,
    pc: usize,
    sp: usize,
    bp: usize,
) -> *mut c_void {
    // SAFETY: the C contract of reallocarray is the caller's.
    unsafe { hooks::reallocarray(ptr, n, size, Caller { pc, sp, bp }) }
}

unsafe extern "C" fn posix_memalign_at(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
    pc: usize,
    sp: usize,
    bp: usize,
) -> c_int {
    // SAFETY: the C contract of posix_memalign is the caller's.
    unsafe { hooks::posix_memalign(out, align, size, Caller { pc, sp, bp }) }
}

extern "C" fn memalign_at(
    align: usize,
    size: usize,
    pc: usize,
    sp: usize,
    bp: usize,
) -> *mut c_void {
    hooks::memalign(align, size, Caller { pc, sp, bp })
}

extern "C" fn aligned_alloc_at(
    align: usize,
    size: usize,
    pc: usize,
    sp: usize,
    bp: usize,
) -> *mut c_void {
    hooks::aligned_alloc(align, size, Caller { pc, sp, bp })
}

extern "C" fn valloc_at(size: usize, pc: usize, sp: usize, bp: usize) -> *mut c_void {
    hooks::valloc(size, Caller { pc, sp, bp })
}

extern "C" fn pvalloc_at(size: usize, pc: usize, sp: usize, bp: usize) -> *mut c_void {
    hooks::pvalloc(size, Caller { pc, sp, bp })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: the C contract of free is the caller's.
    unsafe { hooks::free(ptr) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
    // SAFETY: the C contract of free is the caller's.
    unsafe { hooks::free(ptr) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __libc_free(ptr: *mut c_void) {
    // SAFETY: the C contract of free is the caller's.
    unsafe { hooks::free(ptr) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: the C contract of malloc_usable_size is the caller's.
    unsafe { hooks::usable_size(ptr) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    // SAFETY: the C contract of mmap is the caller's.
    unsafe { hooks::mmap(false, addr, len, prot, flags, fd, off) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    // SAFETY: the C contract of mmap64 is the caller's.
    unsafe { hooks::mmap(true, addr, len, prot, flags, fd, off) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    // SAFETY: the C contract of munmap is the caller's.
    unsafe { hooks::munmap(addr, len) }
}

/// Interposed to count the calls in flight (see [`crate::loader`]).
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    // SAFETY: the C contract of dlclose is the caller's.
    unsafe { crate::loader::dlclose(handle) }
}

/// Interposed so we learn that the Ruby VM is being destroyed before any of
/// its memory goes: from then on no Ruby function is called. libruby calls
/// it through its PLT, so the preload's definition wins.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn ruby_vm_destruct(vm: *mut c_void) -> c_int {
    crate::ruby::mark_vm_torn_down();
    type DestructFn = unsafe extern "C" fn(*mut c_void) -> c_int;
    // SAFETY: dlsym with a NUL-terminated name.
    let next = unsafe { libc::dlsym(libc::RTLD_NEXT, c"ruby_vm_destruct".as_ptr()) };
    if next.is_null() {
        return 0;
    }
    // SAFETY: libruby's ruby_vm_destruct has this signature; `vm` is the
    // caller's.
    unsafe { core::mem::transmute::<*mut c_void, DestructFn>(next)(vm) }
}

/// Interposed (with the two below) so that allocations made while the GVL
/// is released are charged to the Ruby line that released it (see
/// [`crate::nogvl`]). Extensions call them through their PLT.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn rb_nogvl(
    func: nogvl::BlockingFn,
    data1: *mut c_void,
    ubf: nogvl::UnblockFn,
    data2: *mut c_void,
    flags: c_int,
) -> *mut c_void {
    // SAFETY: the contract of rb_nogvl is the caller's.
    unsafe { nogvl::nogvl(func, data1, ubf, data2, flags) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn rb_thread_call_without_gvl(
    func: nogvl::BlockingFn,
    data1: *mut c_void,
    ubf: nogvl::UnblockFn,
    data2: *mut c_void,
) -> *mut c_void {
    // SAFETY: the contract of rb_thread_call_without_gvl is the caller's.
    unsafe { nogvl::without_gvl(&nogvl::WITHOUT_GVL, func, data1, ubf, data2) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn rb_thread_call_without_gvl2(
    func: nogvl::BlockingFn,
    data1: *mut c_void,
    ubf: nogvl::UnblockFn,
    data2: *mut c_void,
) -> *mut c_void {
    // SAFETY: the contract of rb_thread_call_without_gvl2 is the caller's.
    unsafe { nogvl::without_gvl(&nogvl::WITHOUT_GVL2, func, data1, ubf, data2) }
}

/// The function table the Ruby extension looks up with `dlsym`.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn mwrap_preload_api() -> *const mwrap_core::abi::PreloadApi {
    &crate::query::API
}

/// For the benchmark (`bench/native/fork_bench.c`): how many forks this
/// process made and the nanoseconds spent in mwrap's fork handlers
/// (prepare and parent) over all of them. Not part of the Ruby ABI.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn mwrap_fork_handler_stats(forks: *mut u64, nanos: *mut u64) {
    use core::sync::atomic::Ordering;
    // SAFETY: the caller passes two writable u64s.
    unsafe {
        forks.write(crate::state::FORKS.load(Ordering::Relaxed));
        nanos.write(crate::state::FORK_HANDLER_NANOS.load(Ordering::Relaxed));
    }
}
