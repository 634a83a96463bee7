//! What the allocator underneath the preload says about itself: glibc's
//! `mallinfo2`, or jemalloc's statistics through `mallctl` when jemalloc
//! is in the process (its `mallctl` is found with `dlsym`). Byte counts of
//! address space the allocator manages, not resident pages.

use core::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// jemalloc's `mallctl(name, oldp, oldlenp, newp, newlen)`.
type MallctlFn =
    unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;

/// The allocator that `malloc` ends in.
#[derive(Clone, Copy)]
pub enum Allocator {
    Glibc,
    Jemalloc(MallctlFn),
}

/// Looked up once: a `mallctl` in the global scope means jemalloc is
/// loaded (LD_PRELOAD=…:libjemalloc.so.2, or linked into Ruby) and, being
/// first in the search order, serves `malloc`.
pub fn allocator() -> Allocator {
    static FOUND: OnceLock<Option<MallctlFn>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallctl".as_ptr()) };
        if sym.is_null() {
            // SAFETY: dlerror has no preconditions; it clears the miss.
            unsafe { libc::dlerror() };
            return None;
        }
        // SAFETY: jemalloc documents mallctl with exactly this signature.
        Some(unsafe { core::mem::transmute::<*mut c_void, MallctlFn>(sym) })
    });
    match *found {
        Some(mallctl) => Allocator::Jemalloc(mallctl),
        None => Allocator::Glibc,
    }
}

impl Allocator {
    pub fn is_jemalloc(self) -> bool {
        matches!(self, Allocator::Jemalloc(_))
    }
}

/// The allocator's own totals, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallocStats {
    /// Handed out to callers, with the allocator's rounding and headers
    /// (glibc: `uordblks + hblkhd`; jemalloc: `allocated + metadata`).
    pub in_use: u64,
    /// Held by the allocator but free (glibc: `fordblks`; jemalloc:
    /// `resident − allocated − metadata`: free regions of its slabs and
    /// dirty pages not yet given back).
    pub free_held: u64,
    /// glibc: the address space of its arenas and mmapped chunks
    /// (`arena + hblkhd`), resident or not; None for jemalloc.
    pub mapped: Option<u64>,
}

/// The allocator's totals now; None when jemalloc's statistics cannot be
/// read (a jemalloc built without `--enable-stats`).
pub fn stats() -> Option<MallocStats> {
    match allocator() {
        Allocator::Glibc => {
            // SAFETY: mallinfo2 takes the arenas' locks itself; no argument.
            let info = unsafe { libc::mallinfo2() };
            Some(MallocStats {
                in_use: (info.uordblks + info.hblkhd) as u64,
                free_held: info.fordblks as u64,
                mapped: Some((info.arena + info.hblkhd) as u64),
            })
        }
        Allocator::Jemalloc(mallctl) => {
            // Statistics are a snapshot taken at each `epoch` write.
            let mut epoch: u64 = 1;
            let mut len = core::mem::size_of::<u64>();
            // SAFETY: "epoch" reads and writes a u64; every pointer is valid.
            let rc = unsafe {
                mallctl(
                    c"epoch".as_ptr(),
                    (&mut epoch as *mut u64).cast(),
                    &mut len,
                    (&mut epoch as *mut u64).cast(),
                    core::mem::size_of::<u64>(),
                )
            };
            if rc != 0 {
                return None;
            }
            let allocated = jemalloc_size(mallctl, c"stats.allocated")?;
            let metadata = jemalloc_size(mallctl, c"stats.metadata")?;
            let resident = jemalloc_size(mallctl, c"stats.resident")?;
            Some(MallocStats {
                in_use: allocated + metadata,
                free_held: resident.saturating_sub(allocated + metadata),
                mapped: None,
            })
        }
    }
}

/// A `size_t` statistic of jemalloc.
fn jemalloc_size(mallctl: MallctlFn, name: &CStr) -> Option<u64> {
    let mut value: usize = 0;
    let mut len = core::mem::size_of::<usize>();
    // SAFETY: the statistic is a size_t; `value` and `len` are valid.
    let rc = unsafe {
        mallctl(
            name.as_ptr(),
            (&mut value as *mut usize).cast(),
            &mut len,
            core::ptr::null_mut(),
            0,
        )
    };
    (rc == 0 && len == core::mem::size_of::<usize>()).then_some(value as u64)
}

/// Asks the allocator to give its free memory back to the kernel: glibc's
/// `malloc_trim(0)` (every arena, free pages inside the heap too), or
/// jemalloc's `arena.<MALLCTL_ARENAS_ALL>.purge`. False when jemalloc
/// refused.
pub fn give_back_free_memory() -> bool {
    match allocator() {
        Allocator::Glibc => {
            // SAFETY: malloc_trim takes the arenas' locks itself.
            unsafe { libc::malloc_trim(0) };
            true
        }
        Allocator::Jemalloc(mallctl) => {
            // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5.
            // SAFETY: a purge takes no old or new value.
            let rc = unsafe {
                mallctl(
                    c"arena.4096.purge".as_ptr(),
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                    0,
                )
            };
            rc == 0
        }
    }
}
