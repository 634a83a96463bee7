//! An in-process stack unwinder for malloc hooks, driven by the DWARF CFI
//! every x86_64 Linux object carries (`.eh_frame_hdr` + `.eh_frame`), so
//! code built without frame pointers (Debian's libc and libruby) unwinds.
//!
//! It runs inside the allocator, so on the unwind path it:
//! - never allocates (the crate is `no_std` without `alloc`) and never panics
//!   (no indexing that can fail, no `unwrap`);
//! - takes no lock the dynamic loader holds: objects are found with glibc's
//!   lock-free, async-signal-safe `_dl_find_object` (glibc ≥ 2.35), never
//!   `dl_iterate_phdr`, `dladdr` or `dlopen`;
//! - leaves `errno` alone (the only system call is a raw one, see below);
//! - reads the stack only where a read cannot fault (see "Stack reads").
//!
//! # Use
//! 1. [`init`] once, outside any hook (it calls `dlsym`); until then
//!    [`unwind`] returns only the first frame. It says whether glibc has
//!    `_dl_find_object`; without it every unwind is one frame long.
//! 2. Give each thread a [`RuleCache`] in memory of its own. All-zero bytes
//!    are a valid, empty cache (`#[repr(C)]`, integers only), so freshly
//!    mapped memory needs no constructor. A cache belongs to one thread at a
//!    time: [`RuleCacheOf::clear`] it before handing it to another.
//! 3. [`unwind`] from the hook with the registers of the hooked call.
//! 4. [`invalidate`] after every `dlclose`: it makes every cache stale.
//!
//! # What an unwind does
//! Each frame's return address is looked up (at `ra - 1`, inside the call
//! instruction) first in the cache, then, on a miss, in the object's
//! `.eh_frame_hdr` search table with gimli. The row found is reduced to a
//! compact [`Rule`](cache) (CFA = rsp+K or rbp+K, return address at CFA-8,
//! rbp restored from CFA+K or unchanged), which is cached; rows that need
//! more (DWARF expressions, another register as the CFA's base) are cached
//! as "stop". In Debian's libc, libruby, libstdc++, perl and git the only
//! such rows are PLT stubs (never a return address: the PLT jumps) and the
//! signal trampoline (where the unwind stops anyway), so evaluating them
//! would buy nothing and cost an expression evaluator on the hook's stack.
//!
//! # Where an unwind stops ([`Stop`])
//! - the output is full;
//! - the pc is in no loaded object (JIT code): it is reported, then stop;
//! - the object has no CFI for the pc, or a row the compact rule cannot
//!   express: the pc is reported, then stop;
//! - a signal frame (the CIE has the "S" augmentation, glibc's
//!   `__restore_rt`): its pc is reported, the unwind does not go through it,
//!   as the interrupted context is not on the handler's frame chain;
//! - the outermost frame (return address rule "undefined": `_start`, the
//!   thread start in `clone3`), or a return address of 0 (the convention
//!   for coroutine and fiber entry points);
//! - an implausible frame: the CFA must be 8-aligned, strictly above the
//!   previous frame's sp, and at most [`MAX_STACK_SPAN`] above the first sp;
//!   every saved slot read must lie in `[sp, CFA)` of its frame.
//!
//! # Stack reads
//! The bounds above keep reads in the frame they belong to, but do not
//! prove the memory is mapped: with a wrong rule the CFA could land past
//! the top of the stack. So the cache also remembers a few page ranges of
//! stack proven readable (`stack` module): the page holding the starting sp
//! is readable (the caller's frame is there), and each further page is
//! proven once with `process_vm_readv` on our own process, which returns an
//! error instead of faulting. Warm unwinds on a known stack make no system
//! call. If that call is refused (seccomp), the unwind stops at the first
//! unproven page instead.
//!
//! The crate's README has the design note: cache layout and size, stack use
//! of the miss path, and the benchmark against libgcc, libunwind and
//! framehop.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Elsewhere only the cache's layout is kept (the preload allocates it on
// every target); its lookups and the stack probes go unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

mod cache;
#[cfg(target_arch = "x86_64")]
mod cfi;
mod stack;
#[cfg(target_arch = "x86_64")]
mod walk;

pub use cache::{invalidate, RuleCache, RuleCacheOf, DEFAULT_CACHE_SETS};

/// How far above the first frame's sp a CFA may be: a bound on the span of
/// one unwind, far above what any frame chain on an 8 MiB main stack (or a
/// thread stack as large) can span, so it never cuts a real unwind short,
/// and it bounds the pages one unwind may probe.
pub const MAX_STACK_SPAN: usize = 64 << 20;

/// The registers an unwind starts from, as at a call's return: `pc` is the
/// return address of the call (the first frame reported), `sp` the caller's
/// rsp after that return (the callee's entry rsp + 8), `bp` the caller's rbp
/// (callee-saved, so unchanged at the callee's entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Registers {
    pub pc: usize,
    pub sp: usize,
    pub bp: usize,
}

/// Why an unwind ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `out` is full (or empty).
    Full,
    /// The last frame is the outermost one (return address undefined, or a
    /// return address of 0 was found above it).
    Outermost,
    /// The last frame is a signal trampoline; it was not unwound through.
    SignalFrame,
    /// The last frame's pc is in no loaded object (JIT code, or garbage).
    NoObject,
    /// The last frame's object has no CFI for it, or a rule this unwinder
    /// does not follow (a DWARF expression, a CFA based on another register).
    NoUnwindInfo,
    /// The caller of the last frame failed a plausibility check (CFA not
    /// above sp, too far, misaligned, or its stack page not readable).
    BadFrame,
    /// [`init`] has not found `_dl_find_object` (not called, or glibc < 2.35),
    /// or the target is not x86_64.
    Unsupported,
}

/// The result of [`unwind_detailed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unwound {
    /// How many entries of `out` were written.
    pub frames: usize,
    pub stop: Stop,
}

/// Finds glibc's `_dl_find_object` (with `dlsym`, so call it outside any
/// malloc hook; calling it again is cheap). Returns whether unwinds can go
/// past the first frame.
pub fn init() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cfi::init()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Unwinds the stack described by `regs` into `out`, innermost first:
/// `out[0] = regs.pc`, then each caller's return address. Returns how many
/// entries were written. See [`unwind_detailed`].
///
/// # Safety
/// As [`unwind_detailed`].
#[inline]
pub unsafe fn unwind<const SETS: usize>(
    regs: Registers,
    cache: &mut RuleCacheOf<SETS>,
    out: &mut [usize],
) -> usize {
    // SAFETY: the caller upholds unwind_detailed's contract.
    unsafe { unwind_detailed(regs, cache, out) }.frames
}

/// [`unwind`], also saying why it stopped.
///
/// # Safety
/// `regs` must describe a frame that is live on the calling thread's current
/// stack, as a call's return would see it ([`Registers`]); [`registers_here`]
/// or the preload's trampoline give such registers. Every object on that
/// frame chain must stay mapped during the call (an object being
/// `dlclose`d while its code is on our stack would be a bug of the program).
pub unsafe fn unwind_detailed<const SETS: usize>(
    regs: Registers,
    cache: &mut RuleCacheOf<SETS>,
    out: &mut [usize],
) -> Unwound {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: forwarded contract.
        unsafe { walk::unwind(regs, cache, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = cache;
        match out.first_mut() {
            Some(first) => {
                *first = regs.pc;
                Unwound {
                    frames: 1,
                    stop: Stop::Unsupported,
                }
            }
            None => Unwound {
                frames: 0,
                stop: Stop::Full,
            },
        }
    }
}

/// The registers as the preload's trampoline would pass them if this
/// function were the hooked call: `pc` is this call's return address (so the
/// first frame reported lies in the function calling `registers_here`), `sp`
/// is the caller's rsp after the return, `bp` the caller's rbp.
///
/// On targets other than x86_64 it returns zeros.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
pub extern "C" fn registers_here() -> Registers {
    // A 24-byte struct is returned in memory: rdi points at it, and rax must
    // hold that pointer on return (SysV x86_64 ABI). Fields are repr(C):
    // pc at 0, sp at 8, bp at 16.
    core::arch::naked_asm!(
        "mov rax, [rsp]",
        "mov [rdi], rax",
        "lea rax, [rsp + 8]",
        "mov [rdi + 8], rax",
        "mov [rdi + 16], rbp",
        "mov rax, rdi",
        "ret",
    )
}

/// The registers as the preload's trampoline would pass them (zeros here:
/// this target has no unwinder).
#[cfg(not(target_arch = "x86_64"))]
pub extern "C" fn registers_here() -> Registers {
    Registers {
        pc: 0,
        sp: 0,
        bp: 0,
    }
}
