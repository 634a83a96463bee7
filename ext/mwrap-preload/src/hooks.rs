//! The malloc family with a header in front of every block. Each function
//! calls the real allocator, writes the header and hands it to the
//! [`tracker`]; the exported symbols in [`crate::api`] are thin entry points
//! that add the caller's return address.
//!
//! Error behaviour follows glibc's documentation: overflowing sizes give
//! NULL with errno ENOMEM, bad alignments EINVAL, `realloc(p, 0)` frees `p`
//! and returns NULL, `free(NULL)` does nothing.

use core::ffi::{c_int, c_void};
use core::ptr::null_mut;

use mwrap_core::errno;
use mwrap_core::header::{MAX_REQUEST, MIN_ALIGNMENT};
use mwrap_core::mem::page_size;
use mwrap_core::{LiveAllocation, HEADER_SIZE};

pub use crate::caller::Caller;
use crate::real;
use crate::tracker;

#[inline]
fn enomem() -> *mut c_void {
    errno::set(libc::ENOMEM);
    null_mut()
}

/// Writes the header at the start of `raw` (a real block of at least
/// `size + HEADER_SIZE` bytes, or `offset` before the user pointer for an
/// aligned one), charges it, and returns the user pointer.
///
/// # Safety
/// `hdr` points to `HEADER_SIZE` writable bytes inside a fresh real block,
/// followed by `size` user bytes.
#[inline(always)]
unsafe fn track(
    hdr: *mut LiveAllocation,
    size: usize,
    align_shift: u32,
    caller: Caller,
) -> *mut u8 {
    // SAFETY: per this function's contract.
    unsafe {
        LiveAllocation::init(hdr, size, align_shift);
        tracker::charge(hdr, caller);
    }
    LiveAllocation::user_ptr(hdr)
}

/// A plain block (16-byte aligned) of `size` bytes, zeroed if asked.
#[inline(always)]
pub fn allocate(size: usize, zeroed: bool, caller: Caller) -> *mut c_void {
    if size > MAX_REQUEST {
        return enomem();
    }
    let Some(real) = real::get() else {
        let p = real::boot_alloc(size, MIN_ALIGNMENT);
        return if p.is_null() { enomem() } else { p.cast() };
    };
    // SAFETY: the real allocator's malloc/calloc take any size.
    let raw = unsafe {
        if zeroed {
            (real.calloc)(1, size + HEADER_SIZE)
        } else {
            (real.malloc)(size + HEADER_SIZE)
        }
    };
    if raw.is_null() {
        return null_mut(); // the real allocator set errno
    }
    // SAFETY: a fresh block of size + HEADER_SIZE bytes, 16-byte aligned.
    unsafe { track(raw as *mut LiveAllocation, size, 0, caller) }.cast()
}

/// `calloc`: overflow of `n * size` is ENOMEM.
#[inline]
pub fn allocate_zeroed(n: usize, size: usize, caller: Caller) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => allocate(total, true, caller),
        None => enomem(),
    }
}

/// A block whose user pointer is aligned to `align` (a power of two).
/// Returns the block or an errno value.
fn allocate_aligned(align: usize, size: usize, caller: Caller) -> Result<*mut c_void, c_int> {
    debug_assert!(align.is_power_of_two());
    if align <= MIN_ALIGNMENT {
        let p = allocate(size, false, caller);
        return if p.is_null() {
            Err(libc::ENOMEM)
        } else {
            Ok(p)
        };
    }
    if size > MAX_REQUEST || align > MAX_REQUEST {
        return Err(libc::ENOMEM);
    }
    let Some(real) = real::get() else {
        let p = real::boot_alloc(size, align);
        return if p.is_null() {
            Err(libc::ENOMEM)
        } else {
            Ok(p.cast())
        };
    };
    // The user pointer sits `align` bytes into a block aligned to `align`;
    // align >= 32 = HEADER_SIZE leaves room for the header before it.
    let mut raw = null_mut();
    // SAFETY: `align` is a power of two above 16 (so a multiple of the
    // pointer size), as posix_memalign requires.
    let rc = unsafe { (real.posix_memalign)(&mut raw, align, size + align) };
    if rc != 0 {
        return Err(rc);
    }
    let user = (raw as *mut u8).wrapping_add(align);
    // SAFETY: the header's HEADER_SIZE bytes end at `user`, inside the
    // block, and `size` user bytes follow.
    Ok(unsafe {
        track(
            LiveAllocation::from_user(user),
            size,
            align.trailing_zeros(),
            caller,
        )
    }
    .cast())
}

/// `posix_memalign`: EINVAL unless `align` is a power of two multiple of
/// `sizeof(void *)`; errno is left as it was.
///
/// # Safety
/// `out` is writable, as for the C function.
pub unsafe fn posix_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
    caller: Caller,
) -> c_int {
    if align == 0
        || !align.is_power_of_two()
        || !align.is_multiple_of(core::mem::size_of::<*mut c_void>())
    {
        return libc::EINVAL;
    }
    errno::preserved(|| match allocate_aligned(align, size, caller) {
        Ok(p) => {
            // SAFETY: per this function's contract.
            unsafe { *out = p };
            0
        }
        Err(e) => e,
    })
}

/// `memalign` as glibc does it: alignments below 16 act like malloc, a
/// non-power-of-two is rounded up, and one above `SIZE_MAX/2+1` is EINVAL.
pub fn memalign(align: usize, size: usize, caller: Caller) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        errno::set(libc::EINVAL);
        return null_mut();
    }
    let align = align.max(1).next_power_of_two();
    match allocate_aligned(align, size, caller) {
        Ok(p) => p,
        Err(e) => {
            errno::set(e);
            null_mut()
        }
    }
}

/// `aligned_alloc`: like memalign, but, as documented since glibc 2.38 and
/// C17, an alignment that is not a power of two is EINVAL.
pub fn aligned_alloc(align: usize, size: usize, caller: Caller) -> *mut c_void {
    if align == 0 || !align.is_power_of_two() {
        errno::set(libc::EINVAL);
        return null_mut();
    }
    memalign(align, size, caller)
}

pub fn valloc(size: usize, caller: Caller) -> *mut c_void {
    memalign(page_size(), size, caller)
}

/// `pvalloc`: page-aligned, size rounded up to whole pages.
pub fn pvalloc(size: usize, caller: Caller) -> *mut c_void {
    let page = page_size();
    match size.checked_add(page - 1) {
        Some(s) => memalign(page, s & !(page - 1), caller),
        None => enomem(),
    }
}

/// `free`: counts the free and returns the raw block to the real allocator.
///
/// # Safety
/// `user` is null or a live block of ours, as for the C function.
#[inline(always)]
pub unsafe fn free(user: *mut c_void) {
    if user.is_null() || real::boot_owns(user as *const u8) {
        return;
    }
    let hdr = LiveAllocation::from_user(user.cast());
    // SAFETY: a live block of ours has its header right before it; once
    // released, nothing refers to it but us.
    unsafe {
        if tracker::release(hdr) {
            real::free_block(hdr);
        }
    }
}

/// A new block of `size` bytes at `caller` holding the first `old` bytes
/// of `from` (a block the caller keeps responsibility for).
///
/// # Safety
/// `from` is readable for `old.min(size)` bytes.
unsafe fn copy_to_new(from: *const u8, old: usize, size: usize, caller: Caller) -> *mut c_void {
    let new = allocate(size, false, caller);
    if !new.is_null() {
        // SAFETY: `new` has room for `size` bytes; `from` per the contract.
        unsafe { core::ptr::copy_nonoverlapping(from, new as *mut u8, old.min(size)) };
    }
    new
}

/// `realloc`, charged like mwrap 2.x: a free of the old block at its
/// location and a new allocation at the caller's. The real realloc is used,
/// so blocks can grow or shrink in place.
///
/// # Safety
/// `user` is null or a live block of ours, as for the C function.
pub unsafe fn realloc(user: *mut c_void, size: usize, caller: Caller) -> *mut c_void {
    if user.is_null() {
        return allocate(size, false, caller);
    }
    if size == 0 {
        // SAFETY: per this function's contract.
        unsafe { free(user) };
        return null_mut();
    }
    if size > MAX_REQUEST {
        return enomem();
    }
    if real::boot_owns(user as *const u8) {
        let old = real::boot_size(user as *const u8);
        // SAFETY: a bootstrap block is readable for its size.
        return unsafe { copy_to_new(user as *const u8, old, size, caller) };
    }
    let Some(real) = real::get() else {
        return enomem();
    };
    let hdr = LiveAllocation::from_user(user.cast());
    // SAFETY: a live block of ours has its header right before it.
    let (shift, offset, old_size) =
        unsafe { ((*hdr).align_shift(), (*hdr).user_offset(), (*hdr).size()) };
    // The header moves with the block, so it must leave its site's list first.
    // SAFETY: as above.
    if !unsafe { tracker::release(hdr) } {
        // A signal handler inside the table: the old block is kept (and
        // freed later, see `tracker::release`); copy into a new one.
        // SAFETY: the old block is live and holds `old_size` bytes.
        return unsafe { copy_to_new(user as *const u8, old_size, size, caller) };
    }
    // SAFETY: the raw block is the real allocator's; it is out of every table.
    let raw = unsafe { (real.realloc)(LiveAllocation::raw_block(hdr).cast(), size + offset) };
    if raw.is_null() {
        // The old block is intact: track it again, as a new allocation here.
        // SAFETY: the old header is still in front of the intact old block.
        unsafe { track(hdr, old_size, shift, caller) };
        return null_mut();
    }
    let user = (raw as *mut u8).wrapping_add(offset);
    // SAFETY: the new block holds the header's bytes before `user` and
    // `size` bytes after it.
    unsafe { track(LiveAllocation::from_user(user), size, shift, caller) }.cast()
}

/// `reallocarray`: realloc with an overflow check on `n * size`.
///
/// # Safety
/// As for [`realloc`].
pub unsafe fn reallocarray(
    user: *mut c_void,
    n: usize,
    size: usize,
    caller: Caller,
) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: per this function's contract.
        Some(total) => unsafe { realloc(user, total, caller) },
        None => enomem(),
    }
}

/// `malloc_usable_size`: the size that was requested. The real allocator
/// may have more room after it, but the C library allows any value from the
/// requested size up, and this one costs a load instead of a second lookup
/// in the real allocator (Ruby asks on every malloc and free).
///
/// # Safety
/// `user` is null or a live block of ours, as for the C function.
pub unsafe fn usable_size(user: *mut c_void) -> usize {
    if user.is_null() {
        return 0;
    }
    if real::boot_owns(user as *const u8) {
        return real::boot_size(user as *const u8);
    }
    // SAFETY: a live block of ours has its header right before it.
    unsafe { (*LiveAllocation::from_user(user.cast())).size() }
}

/// `mmap`: the real one, and if the mapping looks like one of Ruby's heap
/// pages (anonymous, private, read-write, two heap pages long, made
/// by a thread holding the GVL), the page inside it is recorded.
///
/// # Safety
/// As for the C function.
pub unsafe fn mmap(
    wide: bool,
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    // SAFETY: the caller's arguments, passed on unchanged.
    let p = unsafe { real::mmap(wide, addr, len, prot, flags, fd, off) };
    if p != libc::MAP_FAILED
        && addr.is_null()
        && mwrap_core::heap::is_page_mapping_len(len)
        && fd == -1
        && prot == libc::PROT_READ | libc::PROT_WRITE
        && flags & (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE)
            == libc::MAP_ANONYMOUS | libc::MAP_PRIVATE
        && flags & libc::MAP_FIXED == 0
    {
        errno::preserved(|| tracker::heap_mapping(p as usize, len));
    }
    p
}

/// `munmap`: the real one, then forgets the heap pages it covered.
///
/// # Safety
/// As for the C function.
pub unsafe fn munmap(addr: *mut c_void, len: usize) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged.
    let rc = unsafe { real::munmap(addr, len) };
    if rc == 0 {
        errno::preserved(|| tracker::heap_unmapped(addr as usize, len));
    }
    rc
}

#[cfg(test)]
mod tests {
    //! The hooks called directly (in tests they are not exported, so the
    //! real allocator is the C library's, through RTLD_NEXT as in a process).
    use super::*;

    #[test]
    fn plain_blocks_round_trip_through_realloc() {
        // SAFETY: the blocks are the hooks' own, each freed once.
        unsafe {
            let p = allocate(100, false, Caller::default()) as *mut u8;
            assert!(!p.is_null());
            assert_eq!(p as usize % MIN_ALIGNMENT, 0);
            assert_eq!(usable_size(p.cast()), 100);
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            let q = realloc(p.cast(), 10_000, Caller::default()) as *mut u8;
            assert!(!q.is_null());
            assert_eq!(usable_size(q.cast()), 10_000);
            assert!((0..100).all(|i| *q.add(i) == i as u8));
            let r = realloc(q.cast(), 10, Caller::default()) as *mut u8;
            assert!((0..10).all(|i| *r.add(i) == i as u8));
            assert!(realloc(r.cast(), 0, Caller::default()).is_null()); // freed
            free(core::ptr::null_mut());
        }
    }

    #[test]
    fn zeroed_and_overflowing_requests() {
        // SAFETY: the blocks are the hooks' own, each freed once.
        unsafe {
            let p = allocate_zeroed(10, 100, Caller::default()) as *mut u8;
            assert!((0..1000).all(|i| *p.add(i) == 0));
            free(p.cast());
            assert!(allocate_zeroed(usize::MAX / 2, 3, Caller::default()).is_null());
            assert_eq!(errno::get(), libc::ENOMEM);
            assert!(allocate(usize::MAX - 8, false, Caller::default()).is_null());
            assert_eq!(errno::get(), libc::ENOMEM);
            let p = allocate(8, false, Caller::default());
            assert!(reallocarray(p, usize::MAX / 2, 3, Caller::default()).is_null());
            assert_eq!(errno::get(), libc::ENOMEM);
            free(p); // still ours after the failed reallocarray
        }
    }

    #[test]
    fn aligned_blocks_keep_their_alignment_and_free_cleanly() {
        // SAFETY: the blocks are the hooks' own, each freed once.
        unsafe {
            for align in [8usize, 16, 32, 64, 4096, 65536] {
                let mut out = core::ptr::null_mut();
                assert_eq!(
                    posix_memalign(&mut out, align, 333, Caller::default()),
                    0,
                    "align {align}"
                );
                assert_eq!(out as usize % align, 0);
                assert_eq!(usable_size(out), 333);
                let grown = realloc(out, 5000, Caller::default());
                assert!(!grown.is_null());
                free(grown);
            }
            let mut out = core::ptr::null_mut();
            assert_eq!(
                posix_memalign(&mut out, 3, 8, Caller::default()),
                libc::EINVAL
            );
            assert_eq!(
                posix_memalign(&mut out, 0, 8, Caller::default()),
                libc::EINVAL
            );
            assert!(aligned_alloc(24, 48, Caller::default()).is_null());
            assert_eq!(errno::get(), libc::EINVAL);
            let p = memalign(24, 48, Caller::default()); // rounded up to 32, as glibc does
            assert_eq!(p as usize % 32, 0);
            free(p);
            let v = pvalloc(1, Caller::default());
            assert_eq!(v as usize % page_size(), 0);
            assert_eq!(usable_size(v), page_size());
            free(v);
        }
    }
}
