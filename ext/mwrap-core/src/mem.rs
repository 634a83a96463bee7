//! Memory the profiler maps for itself, with raw system calls: the preload
//! exports `mmap` and `munmap`, so calling libc's would come back into our
//! own hooks. Mappings are private, anonymous and zeroed; a failure is
//! `None`, never an abort.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

/// `len` zeroed bytes, page-aligned, or None (with errno untouched).
pub fn map_zeroed(len: usize) -> Option<NonNull<u8>> {
    if len == 0 {
        return None;
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let p = crate::errno::preserved(|| unsafe {
        libc::syscall(
            libc::SYS_mmap,
            core::ptr::null_mut::<libc::c_void>(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    });
    if p < 0 || p == libc::MAP_FAILED as libc::c_long {
        return None;
    }
    NonNull::new(p as *mut u8)
}

/// Gives back a mapping made by [`map_zeroed`].
///
/// # Safety
/// `p` and `len` are those of one mapping, no longer used.
pub unsafe fn unmap(p: NonNull<u8>, len: usize) {
    // SAFETY: the caller owns the mapping.
    crate::errno::preserved(|| unsafe { libc::syscall(libc::SYS_munmap, p.as_ptr(), len) });
}

/// Types whose all-zero bytes are a valid value, so they can live in
/// memory from [`map_zeroed`] without being written first.
///
/// # Safety
/// Every field must accept all-zero bytes (integers, atomics, raw
/// pointers, `Option` of a non-null pointer, and such types in turn).
pub unsafe trait ZeroInit {}

// SAFETY: zero is a valid value of each of these.
unsafe impl ZeroInit for u8 {}
// SAFETY: as above.
unsafe impl ZeroInit for u32 {}
// SAFETY: as above.
unsafe impl ZeroInit for u64 {}
// SAFETY: as above.
unsafe impl ZeroInit for usize {}
// SAFETY: an atomic of zero bytes holds 0.
unsafe impl ZeroInit for core::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl ZeroInit for core::sync::atomic::AtomicU32 {}
// SAFETY: an atomic pointer of zero bytes is null.
unsafe impl<T> ZeroInit for AtomicPtr<T> {}

/// An array that grows in chunks of `CHUNK` elements mapped on demand and
/// never moved or freed, so a reader needs no lock: element `i` is valid
/// once its chunk is published.
pub struct ChunkedArray<T: ZeroInit, const CHUNK: usize, const CHUNKS: usize> {
    chunks: [AtomicPtr<T>; CHUNKS],
}

impl<T: ZeroInit, const CHUNK: usize, const CHUNKS: usize> Default
    for ChunkedArray<T, CHUNK, CHUNKS>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T: ZeroInit, const CHUNK: usize, const CHUNKS: usize> ChunkedArray<T, CHUNK, CHUNKS> {
    pub const CAPACITY: usize = CHUNK * CHUNKS;

    pub const fn new() -> Self {
        ChunkedArray {
            chunks: [const { AtomicPtr::new(core::ptr::null_mut()) }; CHUNKS],
        }
    }

    /// Element `i`, if its chunk exists.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        let chunk = self.chunks.get(i / CHUNK)?.load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: a published chunk holds CHUNK zero-initialised elements
        // and is never unmapped.
        Some(unsafe { &*chunk.add(i % CHUNK) })
    }

    /// Element `i`, mapping its chunk if needed; None past the capacity or
    /// when the kernel gives no memory.
    pub fn get_or_map(&self, i: usize) -> Option<&T> {
        if let Some(t) = self.get(i) {
            return Some(t);
        }
        let slot = self.chunks.get(i / CHUNK)?;
        let bytes = CHUNK * core::mem::size_of::<T>();
        let fresh = map_zeroed(bytes)?.as_ptr() as *mut T;
        if let Err(_winner) = slot.compare_exchange(
            core::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: `fresh` was never published.
            unsafe { unmap(NonNull::new_unchecked(fresh as *mut u8), bytes) };
        }
        self.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_mapped_on_demand_and_zeroed() {
        let a: ChunkedArray<u64, 512, 4> = ChunkedArray::new();
        assert!(a.get(0).is_none());
        assert_eq!(*a.get_or_map(700).unwrap(), 0);
        assert!(a.get(0).is_none());
        assert!(a.get(512).is_some());
        assert!(a.get_or_map(4 * 512).is_none());
        let p = a.get(700).unwrap() as *const u64;
        assert_eq!(p, a.get_or_map(700).unwrap() as *const u64);
    }

    #[test]
    fn map_zeroed_rejects_nothing_it_can_serve() {
        assert!(map_zeroed(0).is_none());
        let p = map_zeroed(4096).unwrap();
        // SAFETY: a fresh page-sized mapping.
        unsafe {
            assert_eq!(*p.as_ptr(), 0);
            unmap(p, 4096);
        }
    }
}
