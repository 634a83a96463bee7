//! The address-keyed table: which live blocks are known to the profiler,
//! found by their address alone, for the modes that put no header on a
//! block (sampling and attach). A block it does not hold is the real
//! allocator's, untouched: a free of it goes straight through.
//!
//! Lock-free open addressing (linear probing) over levels of slots. A key
//! is a block address (16-byte aligned, so never [`EMPTY`] nor
//! [`TOMBSTONE`]); a value is the caller's record for it. Inserts go to the
//! current level; when its slots (live ones and tombstones) pass half of
//! it, the thread that wins the growth flag makes a new current level sized
//! for the live entries, or recycles a drained one. Lookups visit every
//! level that still has live entries, so a miss costs one probe run in the
//! usual single-level table. Nothing takes a lock, so a signal handler or a
//! forked child finds the table consistent whatever was interrupted.
//! Levels are never unmapped: a reader that loaded a level pointer may
//! still be probing it.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::mem::map_zeroed;

/// A slot never used since its level was made (or recycled): ends a probe.
const EMPTY: usize = 0;
/// A slot whose block was freed: probes go on past it; inserts reuse it.
const TOMBSTONE: usize = 1;

/// Levels a table can have; sizes double from the first, so the last ones
/// are never reached in practice (drained levels are recycled first).
const MAX_LEVELS: usize = 24;

/// Bytes before a level's slots (its counters, on a cache line of their own).
const LEVEL_HEADER: usize = 64;

#[repr(C)]
struct Slot {
    key: AtomicUsize,
    value: AtomicUsize,
}

#[repr(C, align(64))]
struct Level {
    /// log2 of the slot count.
    bits: u32,
    /// Entries present, plus inserts under way (reserved before probing, so
    /// a level with an insert in flight is never recycled under it).
    live: AtomicUsize,
    /// Slots that are not EMPTY (live keys and tombstones).
    used: AtomicUsize,
}

impl Level {
    fn capacity(&self) -> usize {
        1usize << self.bits
    }

    fn slot(&self, i: usize) -> &Slot {
        debug_assert!(i < self.capacity());
        // SAFETY: a level is mapped as LEVEL_HEADER bytes followed by
        // `capacity` zero-initialised slots, and never unmapped.
        unsafe {
            &*((self as *const Level as *const u8)
                .add(LEVEL_HEADER)
                .cast::<Slot>()
                .add(i))
        }
    }

    fn home(&self, addr: usize) -> usize {
        // Fibonacci hashing: the multiplication spreads the address's
        // middle bits into the top ones, which pick the slot.
        addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - self.bits)
    }

    /// The slot holding `addr`, if any.
    fn find(&self, addr: usize) -> Option<&Slot> {
        let mask = self.capacity() - 1;
        let mut i = self.home(addr);
        for _ in 0..self.capacity() {
            let slot = self.slot(i);
            match slot.key.load(Ordering::Acquire) {
                k if k == addr => return Some(slot),
                EMPTY => return None,
                _ => i = (i + 1) & mask,
            }
        }
        None
    }

    /// Puts `addr → value` in the first free slot from its home; false when
    /// the level is too full to take it. The caller has reserved `live`.
    fn put(&self, addr: usize, value: usize, max_used: usize) -> bool {
        let mask = self.capacity() - 1;
        let mut i = self.home(addr);
        for _ in 0..self.capacity() {
            let slot = self.slot(i);
            let k = slot.key.load(Ordering::Relaxed);
            if k == TOMBSTONE || (k == EMPTY && self.used.load(Ordering::Relaxed) < max_used) {
                if slot
                    .key
                    .compare_exchange(k, addr, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    if k == EMPTY {
                        self.used.fetch_add(1, Ordering::Relaxed);
                    }
                    // The block is not yet handed out: nobody looks it up
                    // before the value is stored.
                    slot.value.store(value, Ordering::Release);
                    return true;
                }
                continue; // lost the slot to another insert: look again
            }
            if k == EMPTY {
                return false; // full enough: the caller grows the table
            }
            i = (i + 1) & mask;
        }
        false
    }
}

impl Level {
    /// Makes every slot EMPTY again. The whole pages among the slots go
    /// back to the kernel (DONTNEED gives zero pages); the slots on the
    /// partial pages at either end are cleared one by one. A reader probing
    /// meanwhile looks for a key the level cannot hold (it has no live
    /// entry) and ends at an EMPTY slot either way.
    fn clear(&self) -> Result<(), TableFull> {
        const PAGE: usize = 4096;
        let size = core::mem::size_of::<Slot>();
        let start = (self as *const Level as usize) + LEVEL_HEADER;
        let end = start + self.capacity() * size;
        let first_page = start.next_multiple_of(PAGE);
        let last_page = end / PAGE * PAGE;
        if last_page > first_page {
            // SAFETY: whole pages of our own anonymous mapping, holding
            // only slots.
            let rc = crate::errno::preserved(|| unsafe {
                libc::madvise(
                    first_page as *mut libc::c_void,
                    last_page - first_page,
                    libc::MADV_DONTNEED,
                )
            });
            if rc != 0 {
                return Err(TableFull);
            }
        }
        for i in 0..self.capacity() {
            let at = start + i * size;
            if at < first_page || at >= last_page.max(first_page) {
                self.slot(i).key.store(EMPTY, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// Live blocks by address (see the module documentation).
pub struct AddressTable {
    levels: [AtomicPtr<Level>; MAX_LEVELS],
    /// Levels published (a prefix of `levels`).
    count: AtomicUsize,
    /// Index of the level inserts go to.
    current: AtomicUsize,
    growing: AtomicBool,
    /// log2 of the first level's slot count.
    first_bits: AtomicU32,
}

impl Default for AddressTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an insert did not happen: no memory for a new level (or every level
/// in use and none drained). The block simply stays unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

impl AddressTable {
    /// 65,536 slots (1 MiB of address space, touched as slots are used).
    pub const FIRST_BITS: u32 = 16;

    pub const fn new() -> Self {
        AddressTable {
            levels: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_LEVELS],
            count: AtomicUsize::new(0),
            current: AtomicUsize::new(0),
            growing: AtomicBool::new(false),
            first_bits: AtomicU32::new(Self::FIRST_BITS),
        }
    }

    /// A table whose first level has `2^bits` slots (tests use small ones).
    pub const fn with_first_bits(bits: u32) -> Self {
        let mut t = Self::new();
        t.first_bits = AtomicU32::new(bits);
        t
    }

    fn level(&self, i: usize) -> Option<&Level> {
        let p = self.levels.get(i)?.load(Ordering::Acquire);
        // SAFETY: a published level is a mapped, initialised Level that is
        // never unmapped.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    fn levels(&self) -> impl Iterator<Item = &Level> {
        (0..self.count.load(Ordering::Acquire)).filter_map(|i| self.level(i))
    }

    /// Records `addr → value`. `addr` must not be in the table already.
    pub fn insert(&self, addr: usize, value: usize) -> Result<(), TableFull> {
        debug_assert!(addr > TOMBSTONE);
        loop {
            let index = self.current.load(Ordering::Acquire);
            let level = match self.level(index) {
                Some(level) => level,
                None => {
                    self.grow(None)?;
                    continue;
                }
            };
            level.live.fetch_add(1, Ordering::AcqRel);
            // Past half full, one thread grows while the others go on
            // filling up to 15/16.
            let half = level.capacity() / 2;
            if level.used.load(Ordering::Relaxed) < half && level.put(addr, value, half) {
                return Ok(());
            }
            let grown = self.grow(Some(index));
            if grown.is_err() || self.current.load(Ordering::Acquire) == index {
                let nearly_full = level.capacity() - level.capacity() / 16;
                if level.put(addr, value, nearly_full) {
                    return Ok(());
                }
                level.live.fetch_sub(1, Ordering::AcqRel);
                if grown.is_err() {
                    return Err(TableFull);
                }
                continue;
            }
            level.live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Takes `addr` out of the table and returns its value; None for a block
    /// the table does not know (the real allocator's own).
    #[inline]
    pub fn remove(&self, addr: usize) -> Option<usize> {
        for level in self.levels() {
            if level.live.load(Ordering::Acquire) == 0 {
                continue;
            }
            if let Some(slot) = level.find(addr) {
                let value = slot.value.load(Ordering::Acquire);
                if slot
                    .key
                    .compare_exchange(addr, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    level.live.fetch_sub(1, Ordering::AcqRel);
                    return Some(value);
                }
                return None; // a concurrent free of the same block won
            }
        }
        None
    }

    /// The value of `addr`, left in the table.
    pub fn get(&self, addr: usize) -> Option<usize> {
        self.levels()
            .filter(|level| level.live.load(Ordering::Acquire) != 0)
            .find_map(|level| level.find(addr))
            .map(|slot| slot.value.load(Ordering::Acquire))
    }

    /// Entries present now (a moment's count while others insert).
    pub fn len(&self) -> usize {
        self.levels().map(|l| l.live.load(Ordering::Relaxed)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f(addr, value)` for each entry present (entries inserted or
    /// removed meanwhile may or may not be seen).
    pub fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        for level in self.levels() {
            for i in 0..level.capacity() {
                let slot = level.slot(i);
                let k = slot.key.load(Ordering::Acquire);
                if k > TOMBSTONE {
                    f(k, slot.value.load(Ordering::Acquire));
                }
            }
        }
    }

    /// Mapped bytes of every level (what the table costs in address space).
    pub fn mapped_bytes(&self) -> usize {
        self.levels()
            .map(|l| LEVEL_HEADER + l.capacity() * core::mem::size_of::<Slot>())
            .sum()
    }

    /// Makes a new current level (or recycles a drained one) if `from` is
    /// still current; Ok also when another thread is doing it.
    #[cold]
    fn grow(&self, from: Option<usize>) -> Result<(), TableFull> {
        if self
            .growing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(()); // another thread grows; keep filling meanwhile
        }
        let result = self.grow_now(from);
        self.growing.store(false, Ordering::Release);
        result
    }

    fn grow_now(&self, from: Option<usize>) -> Result<(), TableFull> {
        let count = self.count.load(Ordering::Acquire);
        let current = self.current.load(Ordering::Acquire);
        match from {
            Some(i) if i != current => return Ok(()), // done by another
            None if count > 0 => return Ok(()),
            _ => {}
        }
        let live: usize = self.len();
        let first = self.first_bits.load(Ordering::Relaxed);
        // Room for four times the live entries: half full after doubling.
        let bits = (usize::BITS - (live.max(1) * 4 - 1).leading_zeros()).max(first);
        // A drained level big enough is reused before any new mapping.
        let drained = (0..count).filter(|&i| i != current).find(|&i| {
            self.level(i)
                .is_some_and(|l| l.live.load(Ordering::Acquire) == 0 && l.bits >= bits)
        });
        if let Some(i) = drained {
            let level = self.level(i).ok_or(TableFull)?;
            level.clear()?;
            level.used.store(0, Ordering::Release);
            self.current.store(i, Ordering::Release);
            return Ok(());
        }
        if count == MAX_LEVELS {
            return Err(TableFull);
        }
        let len = LEVEL_HEADER + (1usize << bits) * core::mem::size_of::<Slot>();
        let p = map_zeroed(len).ok_or(TableFull)?.as_ptr() as *mut Level;
        // SAFETY: a fresh zeroed mapping of `len` bytes, aligned to a page.
        unsafe { (*p).bits = bits };
        self.levels[count].store(p, Ordering::Release);
        self.count.store(count + 1, Ordering::Release);
        self.current.store(count, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn addr(n: usize) -> usize {
        0x7f00_0000_0000 + n * 16
    }

    #[test]
    fn finds_what_it_holds_and_nothing_else() {
        let t = AddressTable::with_first_bits(6);
        assert_eq!(t.remove(addr(1)), None);
        for n in 1..=20 {
            t.insert(addr(n), n * 10).unwrap();
        }
        assert_eq!(t.len(), 20);
        assert_eq!(t.get(addr(7)), Some(70));
        assert_eq!(t.remove(addr(7)), Some(70));
        assert_eq!(t.remove(addr(7)), None, "a second free is a miss");
        assert_eq!(t.get(addr(21)), None);
        let mut seen: Vec<_> = Vec::new();
        t.for_each(|k, v| seen.push((k, v)));
        seen.sort();
        assert_eq!(seen.len(), 19);
        assert!(seen.iter().all(|&(k, v)| k == addr(v / 10)));
    }

    #[test]
    fn grows_past_its_first_level_and_keeps_every_entry() {
        let t = AddressTable::with_first_bits(4);
        for n in 1..=5000 {
            t.insert(addr(n), n).unwrap();
        }
        assert_eq!(t.len(), 5000);
        assert!(t.count.load(Ordering::Relaxed) > 1);
        for n in 1..=5000 {
            assert_eq!(t.remove(addr(n)), Some(n), "entry {n}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn churn_recycles_drained_levels_instead_of_mapping_new_ones() {
        let t = AddressTable::with_first_bits(6);
        for round in 0..2000 {
            for n in 0..20 {
                t.insert(addr(round * 20 + n + 1), n).unwrap();
            }
            for n in 0..20 {
                assert_eq!(t.remove(addr(round * 20 + n + 1)), Some(n));
            }
        }
        assert!(t.is_empty());
        assert!(
            t.count.load(Ordering::Relaxed) <= 3,
            "{} levels",
            t.count.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn threads_insert_and_remove_their_own_blocks() {
        let t = Arc::new(AddressTable::with_first_bits(5));
        let handles: Vec<_> = (0..4)
            .map(|thread| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let base = thread * 1_000_000;
                    for round in 0..20 {
                        for n in 0..500 {
                            t.insert(addr(base + round * 500 + n + 1), n).unwrap();
                        }
                        for n in 0..500 {
                            let a = addr(base + round * 500 + n + 1);
                            assert_eq!(t.remove(a), Some(n));
                        }
                    }
                    for n in 0..300 {
                        t.insert(addr(base + 900_000 + n), thread).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(t.len(), 1200);
        for thread in 0..4 {
            for n in 0..300 {
                assert_eq!(t.get(addr(thread * 1_000_000 + 900_000 + n)), Some(thread));
            }
        }
    }
}
