//! The 32-byte header the preload puts in front of every block it hands out.
//!
//! ```text
//! raw block from the real allocator
//! |<- padding (aligned blocks only) ->|<------ LiveAllocation ------>|<- user bytes ...
//!                                      prev  next  size+shift site birth
//! ```
//!
//! A tracked header is linked into its site's list of live allocations, so
//! a location can list what it still holds. The header is independent of the
//! site's key: only a 32-bit id is stored, whatever a location is made of.

use core::sync::atomic::{AtomicU32, Ordering};

/// Bytes of bookkeeping per allocation (mwrap 2.x uses 48).
pub const HEADER_SIZE: usize = 32;

/// Alignment the real allocator guarantees and that we keep for user pointers.
pub const MIN_ALIGNMENT: usize = 16;

const SIZE_BITS: u32 = 56;
const SIZE_MASK: usize = (1usize << SIZE_BITS) - 1;

/// Largest request we accept; larger ones fail with ENOMEM like glibc's
/// requests above PTRDIFF_MAX. Leaves room for the header and alignment.
pub const MAX_REQUEST: usize = SIZE_MASK - 2 * 4096 * 1024;

#[repr(C, align(16))]
pub struct LiveAllocation {
    /// Neighbours in the site's live list; only touched under the site's lock.
    pub(crate) prev: *mut LiveAllocation,
    pub(crate) next: *mut LiveAllocation,
    /// Requested size in the low 56 bits; the top 8 bits hold log2 of the
    /// alignment for blocks whose user pointer sits `alignment` bytes into
    /// the raw block (0 for plain blocks, whose header starts the block).
    size_and_shift: usize,
    /// Site id, or [`crate::abi::UNTRACKED_SITE`]. Atomic because a reset may
    /// orphan the block while its owner frees it.
    pub(crate) site: AtomicU32,
    /// GC generation at allocation (truncated; lifespans use wrapping math).
    pub(crate) birth: u32,
}

const _: () = assert!(core::mem::size_of::<LiveAllocation>() == HEADER_SIZE);

impl LiveAllocation {
    /// Writes a header at `hdr` for a block of `size` user bytes.
    /// `align_shift` is 0 for plain blocks, else log2 of the user offset.
    ///
    /// # Safety
    /// `hdr` must point to `HEADER_SIZE` writable bytes, aligned to 16.
    #[inline]
    pub unsafe fn init(hdr: *mut LiveAllocation, size: usize, align_shift: u32) {
        // SAFETY: per this function's contract.
        unsafe {
            hdr.write(LiveAllocation {
                prev: core::ptr::null_mut(),
                next: core::ptr::null_mut(),
                size_and_shift: (size & SIZE_MASK) | ((align_shift as usize) << SIZE_BITS),
                site: AtomicU32::new(crate::abi::UNTRACKED_SITE),
                birth: 0,
            })
        };
    }

    /// The header of a user pointer handed out by the preload.
    #[inline]
    pub fn from_user(user: *mut u8) -> *mut LiveAllocation {
        user.wrapping_sub(HEADER_SIZE) as *mut LiveAllocation
    }

    /// The user pointer following this header.
    #[inline]
    pub fn user_ptr(hdr: *mut LiveAllocation) -> *mut u8 {
        (hdr as *mut u8).wrapping_add(HEADER_SIZE)
    }

    #[inline]
    pub fn size(&self) -> usize {
        self.size_and_shift & SIZE_MASK
    }

    #[inline]
    pub fn align_shift(&self) -> u32 {
        (self.size_and_shift >> SIZE_BITS) as u32
    }

    /// Bytes between the start of the raw block and the user pointer.
    #[inline]
    pub fn user_offset(&self) -> usize {
        match self.align_shift() {
            0 => HEADER_SIZE,
            s => 1usize << s,
        }
    }

    /// The start of the raw block this header lives in (what the real
    /// allocator returned).
    ///
    /// # Safety
    /// `hdr` points to an initialised header.
    #[inline]
    pub unsafe fn raw_block(hdr: *mut LiveAllocation) -> *mut u8 {
        // SAFETY: per this function's contract.
        let offset = unsafe { (*hdr).user_offset() };
        LiveAllocation::user_ptr(hdr).wrapping_sub(offset)
    }

    #[inline]
    pub fn site(&self) -> u32 {
        self.site.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn birth(&self) -> u32 {
        self.birth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Block([u8; 256]);

    #[test]
    fn plain_block_round_trips() {
        let mut b = Block([0; 256]);
        let raw = b.0.as_mut_ptr();
        let hdr = raw as *mut LiveAllocation;
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        unsafe { LiveAllocation::init(hdr, 10001, 0) };
        let user = LiveAllocation::user_ptr(hdr);
        assert_eq!(user as usize % MIN_ALIGNMENT, 0);
        assert_eq!(LiveAllocation::from_user(user), hdr);
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        assert_eq!(unsafe { LiveAllocation::raw_block(hdr) }, raw);
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        let h = unsafe { &*hdr };
        assert_eq!(h.size(), 10001);
        assert_eq!(h.site(), 0);
    }

    #[test]
    fn aligned_block_finds_its_raw_start() {
        let mut b = Block([0; 256]);
        let raw = b.0.as_mut_ptr();
        // alignment 64: the user pointer is 64 bytes into the raw block
        let user = raw.wrapping_add(64);
        let hdr = LiveAllocation::from_user(user);
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        unsafe { LiveAllocation::init(hdr, 100, 6) };
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        assert_eq!(unsafe { LiveAllocation::raw_block(hdr) }, raw);
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        assert_eq!(unsafe { (*hdr).size() }, 100);
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        assert_eq!(unsafe { (*hdr).user_offset() }, 64);
    }

    #[test]
    fn max_request_fits_the_size_field() {
        let mut b = Block([0; 256]);
        let hdr = b.0.as_mut_ptr() as *mut LiveAllocation;
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        unsafe { LiveAllocation::init(hdr, MAX_REQUEST, 12) };
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        assert_eq!(unsafe { (*hdr).size() }, MAX_REQUEST);
        // SAFETY: a test block of 256 bytes aligned to 64 holds the header.
        assert_eq!(unsafe { (*hdr).align_shift() }, 12);
    }
}
