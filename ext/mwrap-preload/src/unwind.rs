//! Native stacks (`MWRAP=bt:N`): the return addresses of an allocation,
//! the caller of `malloc` first, from the registers the entry trampoline
//! passed (see `api`). The unwinding itself is `mwrap_unwind`'s: x86_64
//! call frame information, a per-thread rule cache, no allocation and no
//! loader lock.

use crate::caller::Caller;

/// The unwinder's per-thread cache (kept in `frames::FrameCaches`).
pub type RuleCache = mwrap_unwind::RuleCache;

const _: () = assert!(core::mem::size_of::<usize>() == core::mem::size_of::<u64>());

/// Looks up what unwinding needs (`_dl_find_object`); at start-up.
pub fn init() {
    mwrap_unwind::init();
}

/// Fills `out` with the return addresses of the allocation made by
/// `caller`, innermost first; returns how many.
#[inline]
pub fn capture(caller: Caller, cache: &mut RuleCache, out: &mut [u64]) -> usize {
    let regs = mwrap_unwind::Registers {
        pc: caller.pc,
        sp: caller.sp,
        bp: caller.bp,
    };
    // SAFETY: u64 and usize have one size and alignment here (checked
    // above), so `out` is a valid `[usize]` of the same length.
    let out =
        unsafe { core::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<usize>(), out.len()) };
    // SAFETY: the registers are those of the thread running this code, at
    // a call still on its stack (the allocation being charged).
    unsafe { mwrap_unwind::unwind(regs, cache, out) }
}

/// An object was unloaded: rules cached for its addresses are stale.
pub fn invalidate() {
    mwrap_unwind::invalidate();
}
