//! The frame walk: apply each frame's rule to get its caller's registers.

use crate::cache::{Rule, RuleCacheOf};
use crate::cfi::{self, Lookup};
use crate::stack::ensure_readable;
use crate::{Registers, Stop, Unwound, MAX_STACK_SPAN};

const WORD: usize = 8;

/// # Safety
/// As [`crate::unwind_detailed`].
pub(crate) unsafe fn unwind<const SETS: usize>(
    regs: Registers,
    cache: &mut RuleCacheOf<SETS>,
    out: &mut [usize],
) -> Unwound {
    let Some(first) = out.first_mut() else {
        return Unwound {
            frames: 0,
            stop: Stop::Full,
        };
    };
    *first = regs.pc;
    let mut frames = 1;
    if !cfi::available() {
        return Unwound {
            frames,
            stop: Stop::Unsupported,
        };
    }
    cache.check_epoch();
    let Some(slot) = cache.stack.slot_for(regs.sp) else {
        return Unwound {
            frames,
            stop: Stop::BadFrame,
        };
    };
    let highest_cfa = regs.sp.saturating_add(MAX_STACK_SPAN);
    let (mut pc, mut sp) = (regs.pc, regs.sp);
    // None once a frame's rule lost the caller's rbp.
    let mut bp = Some(regs.bp);
    let stop = loop {
        if frames >= out.len() {
            break Stop::Full;
        }
        let rule = match cache.lookup(pc) {
            Some(rule) => rule,
            None => match cfi::find_rule(pc) {
                Lookup::Found(rule) => {
                    cache.insert(pc, rule);
                    rule
                }
                Lookup::NoObject => {
                    // lookup() counted the miss; nothing to cache.
                    break Stop::NoObject;
                }
            },
        };
        if rule.has(Rule::OUTERMOST) {
            break Stop::Outermost;
        }
        if rule.has(Rule::SIGNAL) {
            break Stop::SignalFrame;
        }
        if rule.has(Rule::NO_INFO) {
            break Stop::NoUnwindInfo;
        }
        let base = if rule.has(Rule::CFA_FROM_RBP) {
            match bp {
                Some(bp) => bp,
                None => break Stop::NoUnwindInfo,
            }
        } else {
            sp
        };
        let Some(cfa) = base.checked_add_signed(rule.cfa_offset as isize) else {
            break Stop::BadFrame;
        };
        if cfa <= sp || cfa > highest_cfa || cfa % WORD != 0 || cfa - sp < WORD {
            break Stop::BadFrame;
        }
        // The return address is at CFA - 8, inside [sp, CFA) by the checks.
        let ra_slot = cfa - WORD;
        if !ensure_readable(&mut cache.stack, slot, ra_slot) {
            break Stop::BadFrame;
        }
        // SAFETY: ra_slot is 8-aligned, in this frame and in a page proven
        // readable; the thread is inside this call, so its stack is not
        // being written.
        let ra = unsafe { core::ptr::read(ra_slot as *const usize) };
        if rule.has(Rule::RBP_SAVED) {
            let rbp_slot = cfa.checked_add_signed(rule.rbp_offset as isize);
            match rbp_slot {
                Some(slot_addr)
                    if slot_addr >= sp
                        && slot_addr < ra_slot
                        && slot_addr % WORD == 0
                        && ensure_readable(&mut cache.stack, slot, slot_addr) =>
                {
                    // SAFETY: as for the return address.
                    bp = Some(unsafe { core::ptr::read(slot_addr as *const usize) });
                }
                _ => break Stop::BadFrame,
            }
        } else if rule.has(Rule::RBP_LOST) {
            bp = None;
        }
        if ra == 0 {
            break Stop::Outermost;
        }
        let Some(entry) = out.get_mut(frames) else {
            break Stop::Full;
        };
        *entry = ra;
        frames += 1;
        pc = ra;
        sp = cfa;
    };
    Unwound { frames, stop }
}
