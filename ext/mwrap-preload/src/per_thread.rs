//! The calling thread's record. Static TLS holds one pointer to it (glibc
//! takes static TLS out of every thread's stack, so it must stay tiny);
//! the record itself lives in memory the profiler maps.
//!
//! On x86_64 the pointer is an initial-exec TLS variable, read with one
//! `fs:`-relative load (as jemalloc and tcmalloc do in their preloads):
//! Rust's `thread_local!` in a cdylib costs a call to `__tls_get_addr` on
//! every malloc and free. Initial-exec needs static TLS, which every
//! LD_PRELOAD library gets (and a dlopen'd one, within glibc's surplus,
//! for these 8 bytes). Elsewhere, `thread_local!`.

use mwrap_core::lock::LockCx;
use mwrap_core::threads::{current_tid, ThreadRecord};

use crate::state::THREADS;
use crate::thread_data::ThreadData;

pub type Record = ThreadRecord<ThreadData>;

#[cfg(target_arch = "x86_64")]
mod slot {
    use super::Record;

    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        // global for the other codegen units, hidden from other objects
        ".globl mwrap_thread_record",
        ".hidden mwrap_thread_record",
        ".type mwrap_thread_record,@object",
        ".size mwrap_thread_record,8",
        "mwrap_thread_record:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub fn get() -> *const Record {
        let p: *const Record;
        // SAFETY: reads this thread's copy of the 8-byte TLS variable
        // defined above (its offset from the thread pointer comes from the
        // GOT, filled by the loader).
        unsafe {
            core::arch::asm!(
                "mov {p}, qword ptr [rip + mwrap_thread_record@GOTTPOFF]",
                "mov {p}, qword ptr fs:[{p}]",
                p = out(reg) p,
                options(nostack, preserves_flags, readonly),
            )
        };
        p
    }

    pub fn set(record: *const Record) {
        // SAFETY: writes this thread's copy of the same TLS variable.
        unsafe {
            core::arch::asm!(
                "mov {off}, qword ptr [rip + mwrap_thread_record@GOTTPOFF]",
                "mov qword ptr fs:[{off}], {p}",
                off = out(reg) _,
                p = in(reg) record,
                options(nostack, preserves_flags),
            )
        };
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod slot {
    use super::Record;
    use core::cell::Cell;

    thread_local! {
        // const-initialised and without Drop: no lazy init, no destructor,
        // so it is usable from the first malloc of a thread to its end.
        static RECORD: Cell<*const Record> = const { Cell::new(core::ptr::null()) };
    }

    #[inline]
    pub fn get() -> *const Record {
        RECORD.try_with(|c| c.get()).unwrap_or(core::ptr::null())
    }

    pub fn set(record: *const Record) {
        let _ = RECORD.try_with(|c| c.set(record));
    }
}

/// This thread's record, claimed on first use; None when no record can be
/// had (every record taken, or no memory), and the thread runs untracked.
#[inline(always)]
pub fn current() -> Option<&'static Record> {
    let p = slot::get();
    if !p.is_null() {
        // SAFETY: records are never unmapped; this one is ours.
        return Some(unsafe { &*p });
    }
    claim()
}

#[cold]
#[inline(never)]
fn claim() -> Option<&'static Record> {
    let record = THREADS.claim(current_tid())?;
    slot::set(record);
    Some(record)
}

/// The owner's data of this thread's record.
#[inline(always)]
pub fn data(record: &'static Record) -> &'static ThreadData {
    // SAFETY: `record` is the calling thread's own (from `current`), and
    // ThreadData only hands out short-lived references into its cells.
    unsafe { record.data() }
}

/// The lock context of this thread.
#[inline(always)]
pub fn lock_cx(record: &'static Record) -> LockCx<'static> {
    LockCx::new(&record.slot)
}

/// Runs `f` with the recursion guard set, unless the thread is already
/// inside the profiler (then None, without running it): whatever `f`
/// allocates through our hooks is untracked.
#[inline]
pub fn busy<R>(f: impl FnOnce(&'static Record, &'static ThreadData) -> R) -> Option<R> {
    let record = current()?;
    let data = data(record);
    if !data.enter_busy() {
        return None;
    }
    let r = f(record, data);
    data.leave_busy();
    Some(r)
}
