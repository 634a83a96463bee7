//! Memory the profiler maps for itself, with raw system calls: the preload
//! exports `mmap` and `munmap`, so calling libc's would come back into our
//! own hooks. Mappings are private, anonymous and zeroed; a failure is
//! `None`, never an abort.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

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
    OWN_MAPPINGS.note(p as usize, len);
    NonNull::new(p as *mut u8)
}

/// The system's page size (4096 if sysconf cannot tell).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Gives back a mapping made by [`map_zeroed`].
///
/// # Safety
/// `p` and `len` are those of one mapping, no longer used.
pub unsafe fn unmap(p: NonNull<u8>, len: usize) {
    OWN_MAPPINGS.forget(p.as_ptr() as usize);
    // SAFETY: the caller owns the mapping.
    crate::errno::preserved(|| unsafe { libc::syscall(libc::SYS_munmap, p.as_ptr(), len) });
}

/// Every mapping [`map_zeroed`] made and has not given back: the
/// profiler's own tables and caches, which a conservative scan of the
/// process (see [`crate::leaks`]) must not take for the program's memory
/// (a per-thread cache of Ruby frames points into compiled code, and
/// would anchor it).
pub struct OwnMappings {
    /// `(start, len)` pairs; a start of 0 is a free slot, a len of 0 one
    /// being filled or emptied.
    slots: [(AtomicUsize, AtomicUsize); OWN_MAPPING_SLOTS],
    /// Slots below this index have been used at least once.
    used: AtomicUsize,
}

/// Slots of [`OWN_MAPPINGS`]; mappings beyond them are scanned as the
/// program's (which can only hide a leak, never invent one).
pub const OWN_MAPPING_SLOTS: usize = 4096;

/// The process's one registry of its own mappings.
pub static OWN_MAPPINGS: OwnMappings = OwnMappings::new();

impl Default for OwnMappings {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnMappings {
    pub const fn new() -> Self {
        OwnMappings {
            slots: [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; OWN_MAPPING_SLOTS],
            used: AtomicUsize::new(0),
        }
    }

    /// Records a new mapping: a fresh slot while there are some, else the
    /// first free one.
    pub fn note(&self, start: usize, len: usize) {
        let fresh = self.used.fetch_add(1, Ordering::Relaxed);
        let claim = |(s, l): &(AtomicUsize, AtomicUsize)| {
            let won = s
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            if won {
                l.store(len, Ordering::Release);
            }
            won
        };
        if fresh < OWN_MAPPING_SLOTS && claim(&self.slots[fresh]) {
            return;
        }
        self.used.store(OWN_MAPPING_SLOTS, Ordering::Relaxed);
        let _ = self.slots.iter().any(claim);
    }

    /// Forgets the mapping that starts at `start`.
    pub fn forget(&self, start: usize) {
        let used = self.used.load(Ordering::Relaxed).min(OWN_MAPPING_SLOTS);
        if let Some((s, l)) = self.slots[..used]
            .iter()
            .find(|(s, _)| s.load(Ordering::Acquire) == start)
        {
            l.store(0, Ordering::Release);
            s.store(0, Ordering::Release);
        }
    }

    /// Calls `f(start, len)` for every mapping recorded now.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let used = self.used.load(Ordering::Relaxed).min(OWN_MAPPING_SLOTS);
        for (s, l) in &self.slots[..used] {
            let (start, len) = (s.load(Ordering::Acquire), l.load(Ordering::Acquire));
            if start != 0 && len != 0 {
                f(start, len);
            }
        }
    }
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
    fn own_mappings_are_listed_until_unmapped() {
        let listed = |p: usize| {
            let mut found = None;
            OWN_MAPPINGS.for_each(|start, len| {
                if start == p {
                    found = Some(len);
                }
            });
            found
        };
        let p = map_zeroed(3 * 4096).unwrap();
        assert_eq!(listed(p.as_ptr() as usize), Some(3 * 4096));
        // SAFETY: our own mapping, unused.
        unsafe { unmap(p, 3 * 4096) };
        assert_eq!(listed(p.as_ptr() as usize), None);
        let r = OwnMappings::new();
        for i in 1..=OWN_MAPPING_SLOTS + 5 {
            r.note(i * 4096, 4096);
        }
        r.forget(4096);
        r.note(99 << 30, 8192); // past the fresh slots: the freed one
        let mut n = 0;
        let mut big = false;
        r.for_each(|start, len| {
            n += 1;
            big |= start == 99 << 30 && len == 8192;
        });
        assert_eq!((n, big), (OWN_MAPPING_SLOTS, true));
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
