//! Native stacks (`MWRAP=bt:N`): the return addresses of an allocation,
//! the caller of `malloc` first, from the registers the entry trampoline
//! passed (see `api`). The unwinding itself is `mwrap_unwind`'s.

use crate::caller::Caller;

/// The unwinder's per-thread cache (kept in `frames::FrameCaches`).
#[derive(Clone, Copy)]
pub struct RuleCache {
    _empty: [u64; 1],
}

/// Fills `out` with the return addresses of the allocation made by
/// `caller`, innermost first; returns how many.
#[inline]
pub fn capture(caller: Caller, _cache: &mut RuleCache, out: &mut [u64]) -> usize {
    match out.first_mut() {
        Some(first) => {
            *first = caller.pc as u64;
            1
        }
        None => 0,
    }
}

/// An object was unloaded: rules cached for its addresses are stale.
pub fn invalidate() {}
