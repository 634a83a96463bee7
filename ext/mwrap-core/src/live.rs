//! How the live allocations of a location are known: the [`LiveSet`] seam.
//!
//! The site table keeps, in each shard of each location, the counters and
//! one [`LiveSet::Part`] under the shard's lock. Today's one
//! implementation, [`HeaderList`], links the 32-byte header in front of
//! every block into its shard's list. An address-keyed map (for blocks
//! without a header) fits the same seam: its `Part` can be empty and its
//! `Block` an address.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::abi::UNTRACKED_SITE;
use crate::header::LiveAllocation;
use crate::mem::ZeroInit;

/// What removing a live block tells the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    pub size: usize,
    /// GC generation at birth (truncated to 32 bits).
    pub birth: u32,
    /// A cache of the preload points into the block (see
    /// `LiveAllocation::watch`).
    pub watched: bool,
}

/// Where one live block lies, for a scan of memory (see [`crate::leaks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveBlock {
    /// What the real allocator returned: the block's bookkeeping starts here.
    pub raw: usize,
    /// What the program was handed.
    pub user: usize,
    /// Bytes the program asked for.
    pub size: usize,
}

/// One way to keep the live allocations of a site's shard.
///
/// An *owner word* names the site and shard a block is charged to (see
/// `sites`); 0 is untracked.
pub trait LiveSet {
    /// What the hooks hand over for one block.
    type Block: Copy;
    /// The part kept in each shard, under the shard's lock.
    type Part: ZeroInit + Send;

    /// The owner word of `block`, read without a lock (it may change under
    /// a concurrent reset; `remove` checks it again).
    ///
    /// # Safety
    /// `block` is a live block handed out by the preload.
    unsafe fn owner(block: Self::Block) -> u32;

    /// The block's requested size.
    ///
    /// # Safety
    /// As for `owner`.
    unsafe fn size(block: Self::Block) -> usize;

    /// Adds a new block charged to `owner`, born in `birth`.
    ///
    /// # Safety
    /// `block` is not in any part; called under the shard's lock.
    unsafe fn insert(part: &mut Self::Part, block: Self::Block, owner: u32, birth: u32);

    /// Removes `block` if it is still charged to `owner`; None when a reset
    /// orphaned it meanwhile.
    ///
    /// # Safety
    /// `block` was inserted into `part` (or orphaned); under the shard's lock.
    unsafe fn remove(part: &mut Self::Part, block: Self::Block, owner: u32) -> Option<Removed>;

    /// Calls `f(size, birth)` for every live block of `part`.
    fn for_each(part: &Self::Part, f: impl FnMut(usize, u32));

    /// Calls `f` with where every live block of `part` lies.
    fn for_each_block(part: &Self::Part, f: impl FnMut(LiveBlock));

    /// Forgets every block of `part`: they stay allocated, untracked.
    fn orphan_all(part: &mut Self::Part);
}

/// The live blocks of a shard as an intrusive list through their headers.
pub struct HeaderList;

/// Head of a shard's list, newest first. One pointer: with the counters
/// and the lock it fills one cache line.
pub struct ListHead {
    head: *mut LiveAllocation,
}

// SAFETY: a null head is an empty list.
unsafe impl ZeroInit for ListHead {}
// SAFETY: the list is only walked or changed under the shard's lock.
unsafe impl Send for ListHead {}

impl LiveSet for HeaderList {
    type Block = *mut LiveAllocation;
    type Part = ListHead;

    #[inline]
    unsafe fn owner(block: Self::Block) -> u32 {
        // SAFETY: the caller passes a live header.
        unsafe { (*block).site.load(Ordering::Relaxed) }
    }

    #[inline]
    unsafe fn size(block: Self::Block) -> usize {
        // SAFETY: as above.
        unsafe { (*block).size() }
    }

    #[inline]
    unsafe fn insert(part: &mut ListHead, block: Self::Block, owner: u32, birth: u32) {
        // SAFETY: under the shard's lock; `block` is unlinked and `head`
        // (if any) is a linked header of this list.
        unsafe {
            (*block).birth = birth;
            (*block).site.store(owner, Ordering::Relaxed);
            (*block).prev = ptr::null_mut();
            (*block).next = part.head;
            if !part.head.is_null() {
                (*part.head).prev = block;
            }
        }
        part.head = block;
    }

    #[inline]
    unsafe fn remove(part: &mut ListHead, block: Self::Block, owner: u32) -> Option<Removed> {
        // SAFETY: under the shard's lock; a header still owned by this
        // shard is linked into `part`, and so are its neighbours.
        unsafe {
            if (*block).site.load(Ordering::Relaxed) != owner {
                return None;
            }
            let prev = (*block).prev;
            let next = (*block).next;
            if prev.is_null() {
                part.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*block).prev = ptr::null_mut();
            (*block).next = ptr::null_mut();
            (*block).site.store(UNTRACKED_SITE, Ordering::Relaxed);
            let (size, watched) = (*block).size_and_watched();
            Some(Removed {
                size,
                birth: (*block).birth,
                watched,
            })
        }
    }

    fn for_each(part: &ListHead, mut f: impl FnMut(usize, u32)) {
        let mut cur = part.head;
        while !cur.is_null() {
            // SAFETY: linked headers stay valid while the shard's lock is held.
            let h = unsafe { &*cur };
            f(h.size(), h.birth);
            cur = h.next;
        }
    }

    fn for_each_block(part: &ListHead, mut f: impl FnMut(LiveBlock)) {
        let mut cur = part.head;
        while !cur.is_null() {
            // SAFETY: as in `for_each`; a linked header is initialised.
            let (raw, h) = unsafe { (LiveAllocation::raw_block(cur), &*cur) };
            f(LiveBlock {
                raw: raw as usize,
                user: LiveAllocation::user_ptr(cur) as usize,
                size: h.size(),
            });
            cur = h.next;
        }
    }

    fn orphan_all(part: &mut ListHead) {
        let mut cur = part.head;
        while !cur.is_null() {
            // SAFETY: as in `for_each`, and the lock is held for writing.
            unsafe {
                (*cur).site.store(UNTRACKED_SITE, Ordering::Relaxed);
                let next = (*cur).next;
                (*cur).prev = ptr::null_mut();
                (*cur).next = ptr::null_mut();
                cur = next;
            }
        }
        part.head = ptr::null_mut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Blocks;

    #[test]
    fn insert_remove_from_middle_head_and_tail() {
        let mut blocks = Blocks::new();
        // SAFETY: a zeroed head is an empty list.
        let mut part: ListHead = unsafe { core::mem::zeroed() };
        let hs: Vec<_> = (1..=5).map(|n| blocks.header(n)).collect();
        for &h in &hs {
            // SAFETY: fresh headers, one list.
            unsafe { HeaderList::insert(&mut part, h, 7, 3) };
        }
        // newest first: 5 4 3 2 1; remove 3, 5 and 1
        for &i in &[2usize, 4, 0] {
            // SAFETY: linked into `part`.
            let r = unsafe { HeaderList::remove(&mut part, hs[i], 7) };
            assert_eq!(
                r,
                Some(Removed {
                    size: i + 1,
                    birth: 3,
                    watched: false,
                })
            );
        }
        let mut sizes = Vec::new();
        HeaderList::for_each(&part, |size, _| sizes.push(size));
        assert_eq!(sizes, vec![4, 2]);
        let mut spans = Vec::new();
        HeaderList::for_each_block(&part, |b| spans.push(b));
        let user = |h: *mut LiveAllocation| LiveAllocation::user_ptr(h) as usize;
        assert_eq!(
            spans,
            vec![
                LiveBlock {
                    raw: hs[3] as usize,
                    user: user(hs[3]),
                    size: 4
                },
                LiveBlock {
                    raw: hs[1] as usize,
                    user: user(hs[1]),
                    size: 2
                },
            ]
        );
        // a second removal of an unlinked block is refused
        // SAFETY: unlinked headers are untracked.
        assert_eq!(unsafe { HeaderList::remove(&mut part, hs[2], 7) }, None);
        HeaderList::orphan_all(&mut part);
        // SAFETY: orphaned headers stay valid.
        assert_eq!(unsafe { HeaderList::owner(hs[1]) }, UNTRACKED_SITE);
        // SAFETY: as above.
        assert_eq!(unsafe { HeaderList::remove(&mut part, hs[1], 7) }, None);
    }
}
