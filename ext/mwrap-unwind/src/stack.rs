//! Which stack memory a read may touch without faulting.
//!
//! A CFA computed from a wrong rule could point past the top of the stack
//! into unmapped memory or a guard page, and a faulting read would kill the
//! profiled program. The frame bounds (`[sp, CFA)`, CFA increasing) do not
//! prevent that, and the stack's extent is not known cheaply (glibc's
//! `pthread_getattr_np` allocates; fibers and `sigaltstack` have stacks of
//! their own). So reads are confined to page ranges proven readable:
//!
//! - the page holding the first frame's sp is readable: the caller's live
//!   frame is there;
//! - any other page is proven by `process_vm_readv` of one byte from our own
//!   process, which fails with `EFAULT` instead of faulting, as a raw system
//!   call (errno untouched);
//! - proven ranges are kept in the thread's cache, so warm unwinds on a
//!   known stack make no system call.
//!
//! A range stays proven for the life of the cache. Thread stacks are never
//! unmapped while their thread runs; the one residual risk is a fiber stack
//! unmapped and another mapped over part of it, *and* a wrong rule sending a
//! CFA past the new stack's top: correct CFI never does that, as the frame
//! chain ends at the fiber's entry.

/// Page size on every x86_64 Linux system (larger pages are multiples).
pub(crate) const PAGE: usize = 4096;

/// Ranges kept per cache: the thread's own stack and a few fiber stacks.
const RANGES: usize = 4;

/// How far below a known range a new sp may be for the range to be
/// extended down to it (by proving the pages between) rather than a new
/// range started: a stack grown deeper since the range was proven.
const EXTEND_DOWN_MAX: usize = 64 * PAGE;

/// Pages proven by one `process_vm_readv` call.
const PROBE_BATCH: usize = 16;

/// Proven-readable page ranges `[lo, hi)`; `lo == hi` is an empty slot.
/// All-zero is valid (all slots empty).
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct ReadableStack {
    ranges: [[usize; 2]; RANGES],
    /// The slot the next new range replaces (round robin).
    next: usize,
    /// 1 once `process_vm_readv` was refused (ENOSYS/EPERM): stop probing.
    probe_refused: usize,
}

impl ReadableStack {
    pub const fn new() -> Self {
        ReadableStack {
            ranges: [[0; 2]; RANGES],
            next: 0,
            probe_refused: 0,
        }
    }

    /// The slot of the range holding `sp` (made or extended if need be),
    /// for the reads of one unwind through [`ensure_readable`].
    pub fn slot_for(&mut self, sp: usize) -> Option<usize> {
        let sp_page = sp & !(PAGE - 1);
        let mut below = None;
        for (i, &[lo, hi]) in self.ranges.iter().enumerate() {
            if lo <= sp && sp < hi {
                return Some(i);
            }
            if lo < hi && sp_page < lo && lo - sp_page <= EXTEND_DOWN_MAX {
                below = Some((i, lo));
            }
        }
        if let Some((i, lo)) = below {
            // The pages between sp's page (readable) and the range.
            let between = sp_page.checked_add(PAGE)?;
            if between >= lo || self.prove(between, lo) == lo {
                let range = self.ranges.get_mut(i)?;
                range[0] = sp_page;
                return Some(i);
            }
        }
        let slot = self.next % RANGES;
        self.next = (slot + 1) % RANGES;
        *self.ranges.get_mut(slot)? = [sp_page, sp_page.checked_add(PAGE)?];
        Some(slot)
    }

    /// Proves pages from `from` (page-aligned) up to `to`, and returns the
    /// end of the readable run (`to` rounded up, if all of it is).
    pub fn prove(&mut self, from: usize, to: usize) -> usize {
        let mut at = from;
        while at < to {
            if self.probe_refused != 0 {
                return at;
            }
            match probe_pages(at, to) {
                Probe::Readable(end) => at = end,
                Probe::Faulted(end) => return end,
                Probe::Refused => {
                    self.probe_refused = 1;
                    return at;
                }
            }
        }
        at
    }
}

/// Makes `[lo, hi)` of `range` cover `[addr, addr + 8)` if that memory is
/// readable, proving pages above `hi` as needed.
#[inline]
pub(crate) fn ensure_readable(stack: &mut ReadableStack, range_slot: usize, addr: usize) -> bool {
    let Some(end) = addr.checked_add(8) else {
        return false;
    };
    let Some(&[lo, hi]) = stack.ranges.get(range_slot) else {
        return false;
    };
    if lo <= addr && end <= hi {
        return true;
    }
    if addr < lo {
        return false;
    }
    let proven_to = stack.prove(hi, end);
    if let Some(range) = stack.ranges.get_mut(range_slot) {
        range[1] = proven_to;
    }
    proven_to >= end
}

enum Probe {
    /// Every page up to this (exclusive) end is readable.
    Readable(usize),
    /// Pages up to this end are readable, the next one is not.
    Faulted(usize),
    /// The system call is not allowed here.
    Refused,
}

#[cfg(target_arch = "x86_64")]
fn probe_pages(from: usize, to: usize) -> Probe {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct IoVec {
        base: usize,
        len: usize,
    }
    let mut remote = [IoVec { base: 0, len: 0 }; PROBE_BATCH];
    let mut count = 0;
    let mut page = from;
    for slot in remote.iter_mut() {
        if page >= to {
            break;
        }
        *slot = IoVec { base: page, len: 1 };
        count += 1;
        match page.checked_add(PAGE) {
            Some(next) => page = next,
            None => break,
        }
    }
    if count == 0 {
        return Probe::Readable(from);
    }
    let mut sink = [0u8; PROBE_BATCH];
    let local = IoVec {
        base: sink.as_mut_ptr() as usize,
        len: count,
    };
    let pid = raw::getpid();
    // SAFETY: process_vm_readv writes at most `count` bytes into `sink`
    // (the local iovec) and reads our own memory through the kernel, which
    // reports an unreadable page as an error instead of faulting.
    let copied = unsafe {
        raw::syscall6(
            raw::SYS_PROCESS_VM_READV,
            pid,
            &local as *const IoVec as usize,
            1,
            remote.as_ptr() as usize,
            count,
            0,
        )
    };
    if copied < 0 {
        // -EFAULT: the first page is unreadable; anything else (-ENOSYS,
        // -EPERM under seccomp) means this process cannot probe at all.
        return if copied == -14 {
            Probe::Faulted(from)
        } else {
            Probe::Refused
        };
    }
    // Partial transfers stop at the first unreadable remote iovec, and each
    // iovec is one byte, so `copied` pages are readable.
    let copied = copied as usize;
    let end = from.saturating_add(copied.saturating_mul(PAGE));
    if copied < count {
        Probe::Faulted(end)
    } else {
        Probe::Readable(end)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn probe_pages(from: usize, _to: usize) -> Probe {
    let _ = from;
    Probe::Refused
}

#[cfg(target_arch = "x86_64")]
mod raw {
    pub const SYS_GETPID: usize = 39;
    pub const SYS_PROCESS_VM_READV: usize = 310;

    /// A raw system call: returns -errno on failure, never touches errno.
    ///
    /// # Safety
    /// As the system call `nr` with these arguments.
    #[inline]
    pub unsafe fn syscall6(
        nr: usize,
        a1: usize,
        a2: usize,
        a3: usize,
        a4: usize,
        a5: usize,
        a6: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: the `syscall` instruction clobbers only rcx and r11 (and
        // rax, the result); memory effects are the caller's contract.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a1,
                in("rsi") a2,
                in("rdx") a3,
                in("r10") a4,
                in("r8") a5,
                in("r9") a6,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// Asked each time, not cached: after `fork` the child's cache still
    /// holds its parent's memory, and probing the parent would prove nothing.
    pub fn getpid() -> usize {
        // SAFETY: getpid has no arguments and no memory effects.
        unsafe { syscall6(SYS_GETPID, 0, 0, 0, 0, 0, 0) as usize }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn probe_tells_mapped_from_guard_pages() {
        // SAFETY: a fresh anonymous mapping of three pages; the middle one is
        // made inaccessible, as a guard page is.
        let base = unsafe {
            let p = libc::mmap(
                core::ptr::null_mut(),
                3 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(
                libc::mprotect(p.cast::<u8>().add(PAGE).cast(), PAGE, libc::PROT_NONE),
                0
            );
            p as usize
        };
        let mut stack = ReadableStack::new();
        assert_eq!(stack.prove(base, base + 3 * PAGE), base + PAGE);
        let slot = stack.slot_for(base + 100).unwrap();
        assert!(ensure_readable(&mut stack, slot, base + PAGE - 8));
        assert!(!ensure_readable(&mut stack, slot, base + PAGE));
        assert!(!ensure_readable(&mut stack, slot, base + 2 * PAGE + 8));
        // SAFETY: our mapping, no longer used.
        unsafe { libc::munmap(base as *mut libc::c_void, 3 * PAGE) };
    }
}
