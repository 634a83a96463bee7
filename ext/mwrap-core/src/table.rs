//! The site table: every location that allocated, its counters, and its
//! list of live allocations.
//!
//! Two halves with separate locks, so the allocation path never touches the
//! interner once a thread has cached a site id:
//! - [`Interner`]: key ↔ id, behind one mutex, taken on cache misses and by
//!   readers that need names.
//! - site storage: id → [`Site`] (counters + live list behind a per-site
//!   mutex), in fixed chunks that never move, so `site(id)` needs no lock.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use hashbrown::HashTable;

use crate::abi::{LiveAllocationInfo, SiteSnapshot, UNTRACKED_SITE};
use crate::fork_safe::ForkSafeMutex;
use crate::header::LiveAllocation;
use crate::key::{KeyRef, SiteKey};

const CHUNK_BITS: u32 = 10;
const CHUNK_SIZE: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 1024;
/// Hard ceiling on distinct locations (ids are 1-based, 0 is untracked).
pub const MAX_SITES: u32 = (MAX_CHUNKS * CHUNK_SIZE - 1) as u32;

/// Counters of one location; guarded by the site's mutex.
#[derive(Default)]
struct Counters {
    total: u64,
    allocations: u64,
    frees: u64,
    freed_bytes: u64,
    age_total: u64,
    max_lifespan: u64,
    /// Head of the intrusive list of live allocations.
    head: LiveList,
}

struct LiveList(*mut LiveAllocation);

impl Default for LiveList {
    fn default() -> Self {
        LiveList(ptr::null_mut())
    }
}

// SAFETY: the list is only walked or changed under the site's mutex.
unsafe impl Send for LiveList {}

/// Shards per site. Each thread charges its own shard of a site, so native
/// threads allocating from one call site do not fight over one lock.
pub const SHARDS: usize = 8;
/// A block's shard is kept in the top bits of its header's site word.
const SHARD_SHIFT: u32 = 29;
const SITE_ID_MASK: u32 = (1 << SHARD_SHIFT) - 1;

/// Part of one location's counters and live allocations, behind its own
/// lock, on a cache line of its own.
#[repr(align(64))]
struct Shard {
    counters: ForkSafeMutex<Counters>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            counters: ForkSafeMutex::new(Counters::default()),
        }
    }
}

/// One location. Shard 0 is inline (all a single-threaded program uses);
/// the others are allocated the first time another thread charges the site.
pub struct Site {
    primary: Shard,
    /// `SHARDS - 1` shards, or null.
    others: AtomicPtr<Shard>,
}

impl Site {
    fn new() -> Self {
        Site {
            primary: Shard::new(),
            others: AtomicPtr::new(ptr::null_mut()),
        }
    }

    #[inline]
    fn shard(&self, index: usize) -> Option<&ForkSafeMutex<Counters>> {
        if index == 0 {
            return Some(&self.primary.counters);
        }
        let others = self.others.load(Ordering::Acquire);
        if others.is_null() || index >= SHARDS {
            return None;
        }
        // SAFETY: `others` holds SHARDS - 1 shards, published built, never freed.
        Some(unsafe { &(*others.add(index - 1)).counters })
    }

    /// Every shard allocated so far.
    fn shards(&self) -> impl Iterator<Item = &ForkSafeMutex<Counters>> {
        (0..SHARDS).map_while(move |i| self.shard(i))
    }
}

struct Interner {
    index: HashTable<u32>,
    /// `keys[id]`; `keys[0]` is a placeholder for the untracked id.
    keys: Vec<SiteKey>,
    /// Id of the overflow bucket once the table is full, else 0.
    overflow: u32,
}

/// All locations of one process.
pub struct SiteTable {
    interner: ForkSafeMutex<Interner>,
    chunks: [AtomicPtr<Site>; MAX_CHUNKS],
    /// Number of ids handed out so far (ids 1..=count are valid).
    count: AtomicU32,
    /// Ids handed out before the table is considered full (tests lower it).
    capacity: u32,
    /// New keys charged to the overflow bucket because the table was full.
    overflowed_keys: AtomicU64,
}

// SAFETY: every mutable field is behind a mutex or an atomic.
unsafe impl Sync for SiteTable {}
unsafe impl Send for SiteTable {}

impl Default for SiteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SiteTable {
    pub const fn new() -> Self {
        Self::with_capacity(MAX_SITES)
    }

    /// A table that sends every key past the `capacity`-th (the last slot
    /// being the overflow bucket) to one overflow location.
    pub const fn with_capacity(capacity: u32) -> Self {
        let capacity = if capacity < 2 {
            2
        } else if capacity > MAX_SITES {
            MAX_SITES
        } else {
            capacity
        };
        SiteTable {
            interner: ForkSafeMutex::new(Interner {
                index: HashTable::new(),
                keys: Vec::new(),
                overflow: 0,
            }),
            chunks: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CHUNKS],
            count: AtomicU32::new(0),
            capacity,
            overflowed_keys: AtomicU64::new(0),
        }
    }

    /// Number of ids handed out; ids `1..=site_count()` are valid.
    pub fn site_count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// How many distinct keys were charged to the overflow bucket.
    pub fn overflowed_keys(&self) -> u64 {
        self.overflowed_keys.load(Ordering::Relaxed)
    }

    /// The site of an id, without locking.
    #[inline]
    pub fn site(&self, id: u32) -> Option<&Site> {
        if id == UNTRACKED_SITE {
            return None;
        }
        let chunk = self
            .chunks
            .get((id >> CHUNK_BITS) as usize)?
            .load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: chunks are CHUNK_SIZE sites, published fully built, never freed.
        Some(unsafe { &*chunk.add(id as usize & (CHUNK_SIZE - 1)) })
    }

    /// The id of `key`, creating the location on first sight. Never returns
    /// the untracked id; returns the overflow bucket once the table is full.
    pub fn intern(&self, key: KeyRef<'_>) -> u32 {
        let hash = key.hash();
        let mut guard = self.interner.lock();
        let interner = &mut *guard;
        if let Some(&id) = interner
            .index
            .find(hash, |&id| interner.keys[id as usize].matches(&key))
        {
            return id;
        }
        if interner.keys.is_empty() {
            interner.keys.push(SiteKey::Overflow); // id 0 placeholder
        }
        let next = interner.keys.len() as u32;
        if next >= self.capacity {
            return self.overflow_id(interner);
        }
        self.push_site(interner, key.to_owned(), hash)
    }

    /// The id of `key` if it was ever interned.
    pub fn lookup(&self, key: KeyRef<'_>) -> Option<u32> {
        let hash = key.hash();
        let guard = self.interner.lock();
        guard
            .index
            .find(hash, |&id| guard.keys[id as usize].matches(&key))
            .copied()
    }

    fn overflow_id(&self, interner: &mut Interner) -> u32 {
        self.overflowed_keys.fetch_add(1, Ordering::Relaxed);
        if interner.overflow == 0 {
            // The bucket takes the last slot; it is never in the index.
            let id = interner.keys.len() as u32;
            self.ensure_chunk(id);
            interner.keys.push(SiteKey::Overflow);
            self.count.store(id, Ordering::Release);
            interner.overflow = id;
        }
        interner.overflow
    }

    fn push_site(&self, interner: &mut Interner, key: SiteKey, hash: u64) -> u32 {
        let id = interner.keys.len() as u32;
        self.ensure_chunk(id);
        interner.keys.push(key);
        let keys = &interner.keys;
        interner
            .index
            .insert_unique(hash, id, |&other| keys[other as usize].as_ref().hash());
        self.count.store(id, Ordering::Release);
        id
    }

    fn ensure_chunk(&self, id: u32) {
        let slot = &self.chunks[(id >> CHUNK_BITS) as usize];
        if slot.load(Ordering::Acquire).is_null() {
            let chunk: Box<[Site]> = (0..CHUNK_SIZE).map(|_| Site::new()).collect();
            slot.store(Box::into_raw(chunk) as *mut Site, Ordering::Release);
        }
    }

    /// Shard `index` of `site`, allocating the site's other shards on first
    /// use. Allocation happens under the interner lock, which
    /// [`SiteTable::hold_for_fork`] takes first, so no shard can appear
    /// (unlocked) while the table is held for a fork.
    #[cold]
    fn grow_shards<'s>(&self, site: &'s Site, index: usize) -> Option<&'s ForkSafeMutex<Counters>> {
        let _guard = self.interner.lock();
        if site.others.load(Ordering::Acquire).is_null() {
            let others: Box<[Shard]> = (1..SHARDS).map(|_| Shard::new()).collect();
            site.others
                .store(Box::into_raw(others) as *mut Shard, Ordering::Release);
        }
        site.shard(index)
    }

    /// Calls `f` with the key of `id` (under the interner lock: keep it short
    /// and never call into foreign code from `f`).
    pub fn with_key<R>(&self, id: u32, f: impl FnOnce(&SiteKey) -> R) -> Option<R> {
        if id == UNTRACKED_SITE {
            return None;
        }
        let guard = self.interner.lock();
        guard.keys.get(id as usize).map(f)
    }

    /// Charges a new block to `id` and links it into the live list of the
    /// site's shard `shard` (any number; taken modulo [`SHARDS`]).
    ///
    /// # Safety
    /// `hdr` is a header made by [`LiveAllocation::init`], not linked anywhere.
    #[inline]
    pub unsafe fn record_alloc(
        &self,
        id: u32,
        shard: usize,
        hdr: *mut LiveAllocation,
        generation: u64,
    ) {
        let Some(site) = self.site(id) else { return };
        let shard = shard % SHARDS;
        let Some(counters) = site.shard(shard).or_else(|| self.grow_shards(site, shard)) else {
            return;
        };
        let size = (*hdr).size() as u64;
        (*hdr).birth = generation as u32;
        let mut c = counters.lock();
        (*hdr)
            .site
            .store(id | ((shard as u32) << SHARD_SHIFT), Ordering::Relaxed);
        (*hdr).prev = ptr::null_mut();
        (*hdr).next = c.head.0;
        if !c.head.0.is_null() {
            (*c.head.0).prev = hdr;
        }
        c.head.0 = hdr;
        c.total += size;
        c.allocations += 1;
    }

    /// Counts the free of a block and unlinks it. Blocks that are untracked,
    /// or were orphaned by [`SiteTable::reset`], are left alone.
    ///
    /// # Safety
    /// `hdr` is the header of a live block handed out by the preload.
    #[inline]
    pub unsafe fn record_free(&self, hdr: *mut LiveAllocation, generation: u64) {
        let word = (*hdr).site.load(Ordering::Relaxed);
        let Some(site) = self.site(word & SITE_ID_MASK) else {
            return;
        };
        let Some(counters) = site.shard((word >> SHARD_SHIFT) as usize) else {
            return;
        };
        let mut c = counters.lock();
        if (*hdr).site.load(Ordering::Relaxed) != word {
            return; // orphaned by a reset while we waited
        }
        unlink(&mut c, hdr);
        let size = (*hdr).size() as u64;
        let lifespan = (generation as u32).wrapping_sub((*hdr).birth) as u64;
        c.frees += 1;
        c.freed_bytes += size;
        c.age_total += lifespan;
        if lifespan > c.max_lifespan {
            c.max_lifespan = lifespan;
        }
    }

    /// A copy of one location's counters, summed over its shards.
    pub fn snapshot(&self, id: u32) -> Option<SiteSnapshot> {
        let site = self.site(id)?;
        if id > self.site_count() {
            return None;
        }
        let mut snap = SiteSnapshot {
            id,
            ..Default::default()
        };
        for shard in site.shards() {
            let c = shard.lock();
            snap.total += c.total;
            snap.allocations += c.allocations;
            snap.frees += c.frees;
            snap.freed_bytes += c.freed_bytes;
            snap.age_total += c.age_total;
            snap.max_lifespan = snap.max_lifespan.max(c.max_lifespan);
        }
        // Every tracked block is either freed or live: a reset zeroes the
        // counters and orphans the live ones together.
        snap.live_count = snap.allocations - snap.frees;
        snap.live_bytes = snap.total - snap.freed_bytes;
        Some(snap)
    }

    /// Appends a copy of the live allocations of `id` to `out`; false if unknown.
    /// Generations are reconstructed from the 32-bit birth stamp relative
    /// to `current_generation`.
    pub fn live(
        &self,
        id: u32,
        current_generation: u64,
        out: &mut Vec<LiveAllocationInfo>,
    ) -> bool {
        let Some(site) = self.site(id) else {
            return false;
        };
        if id > self.site_count() {
            return false;
        }
        for shard in site.shards() {
            let c = shard.lock();
            out.reserve((c.allocations - c.frees) as usize);
            let mut cur = c.head.0;
            while !cur.is_null() {
                // SAFETY: linked headers stay valid while we hold the shard's lock.
                let h = unsafe { &*cur };
                let age = (current_generation as u32).wrapping_sub(h.birth) as u64;
                out.push(LiveAllocationInfo {
                    size: h.size() as u64,
                    generation: current_generation.wrapping_sub(age),
                });
                cur = h.next;
            }
        }
        true
    }

    /// Zeroes every counter and orphans the blocks live now, so that
    /// `allocations - frees == live` holds again from this point on.
    pub fn reset(&self) {
        for id in 1..=self.site_count() {
            let Some(site) = self.site(id) else { continue };
            for shard in site.shards() {
                let mut c = shard.lock();
                let mut cur = c.head.0;
                while !cur.is_null() {
                    // SAFETY: as in `live`.
                    unsafe {
                        (*cur).site.store(UNTRACKED_SITE, Ordering::Relaxed);
                        let next = (*cur).next;
                        (*cur).prev = ptr::null_mut();
                        (*cur).next = ptr::null_mut();
                        cur = next;
                    }
                }
                *c = Counters::default();
            }
        }
    }

    /// Takes every lock of the table and keeps it, so that a `fork` cannot
    /// copy a lock held by another thread. Pair with
    /// [`SiteTable::release_after_fork_in_parent`] or
    /// [`SiteTable::release_after_fork_in_child`].
    pub fn hold_for_fork(&self) {
        self.interner.hold_for_fork();
        for id in 1..=self.site_count() {
            if let Some(site) = self.site(id) {
                site.shards().for_each(|shard| shard.hold_for_fork());
            }
        }
    }

    pub fn release_after_fork_in_parent(&self) {
        for id in 1..=self.site_count() {
            if let Some(site) = self.site(id) {
                // SAFETY: taken by hold_for_fork on this thread.
                site.shards()
                    .for_each(|shard| unsafe { shard.release_in_parent() });
            }
        }
        unsafe { self.interner.release_in_parent() };
    }

    /// In the child only the forking thread exists, so the locks are marked
    /// free without waking anyone (see [`ForkSafeMutex::release_in_child`]).
    pub fn release_after_fork_in_child(&self) {
        for id in 1..=self.site_count() {
            if let Some(site) = self.site(id) {
                // SAFETY: fork child, locks taken by hold_for_fork.
                site.shards()
                    .for_each(|shard| unsafe { shard.release_in_child() });
            }
        }
        unsafe { self.interner.release_in_child() };
    }
}

unsafe fn unlink(c: &mut Counters, hdr: *mut LiveAllocation) {
    let prev = (*hdr).prev;
    let next = (*hdr).next;
    if prev.is_null() {
        c.head.0 = next;
    } else {
        (*prev).next = next;
    }
    if !next.is_null() {
        (*next).prev = prev;
    }
    (*hdr).prev = ptr::null_mut();
    (*hdr).next = ptr::null_mut();
    (*hdr).site.store(UNTRACKED_SITE, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::LiveAllocation;

    /// Owns raw blocks for headers in tests (boxed: headers must not move).
    #[allow(clippy::vec_box)]
    struct Blocks(Vec<Box<[u128; 4]>>);

    impl Blocks {
        fn new() -> Self {
            Blocks(Vec::new())
        }
        fn header(&mut self, size: usize) -> *mut LiveAllocation {
            let mut b = Box::new([0u128; 4]);
            let p = b.as_mut_ptr() as *mut LiveAllocation;
            unsafe { LiveAllocation::init(p, size, 0) };
            self.0.push(b);
            p
        }
    }

    fn ruby(file: &str, line: u32) -> KeyRef<'_> {
        KeyRef::Ruby {
            file: file.as_bytes(),
            line,
        }
    }

    #[test]
    fn intern_is_stable_and_distinct() {
        let t = SiteTable::new();
        let a = t.intern(ruby("a.rb", 1));
        let b = t.intern(ruby("a.rb", 2));
        let c = t.intern(KeyRef::Native { address: 0x1234 });
        assert_ne!(a, UNTRACKED_SITE);
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_eq!(t.intern(ruby("a.rb", 1)), a);
        assert_eq!(t.lookup(KeyRef::Native { address: 0x1234 }), Some(c));
        assert_eq!(t.lookup(ruby("b.rb", 1)), None);
        assert_eq!(t.site_count(), 3);
        let name = t.with_key(a, |k| k.clone()).unwrap();
        assert_eq!(
            name,
            SiteKey::Ruby {
                file: b"a.rb".to_vec().into(),
                line: 1
            }
        );
    }

    #[test]
    fn alloc_and_free_balance_with_lifespans() {
        let t = SiteTable::new();
        let mut blocks = Blocks::new();
        let id = t.intern(ruby("x.rb", 3));
        let h1 = blocks.header(100);
        let h2 = blocks.header(50);
        let h3 = blocks.header(7);
        unsafe {
            t.record_alloc(id, 0, h1, 10);
            t.record_alloc(id, 0, h2, 11);
            t.record_alloc(id, 0, h3, 12);
            t.record_free(h2, 15); // lifespan 4
            t.record_free(h1, 11); // lifespan 1
        }
        let s = t.snapshot(id).unwrap();
        assert_eq!(s.total, 157);
        assert_eq!(s.allocations, 3);
        assert_eq!(s.frees, 2);
        assert_eq!(s.freed_bytes, 150);
        assert_eq!(s.age_total, 5);
        assert_eq!(s.max_lifespan, 4);
        assert_eq!(s.live_count, 1);
        assert_eq!(s.live_bytes, 7);
        let mut live = Vec::new();
        assert!(t.live(id, 20, &mut live));
        assert_eq!(
            live,
            vec![LiveAllocationInfo {
                size: 7,
                generation: 12
            }]
        );
        unsafe { t.record_free(h3, 20) };
        live.clear();
        t.live(id, 20, &mut live);
        assert!(live.is_empty());
        // a second free of an unlinked header is ignored (site is untracked now)
        unsafe { t.record_free(h3, 20) };
        assert_eq!(t.snapshot(id).unwrap().frees, 3);
    }

    #[test]
    fn unlink_from_middle_head_and_tail() {
        let t = SiteTable::new();
        let mut blocks = Blocks::new();
        let id = t.intern(ruby("l.rb", 1));
        let hs: Vec<_> = (1..=5).map(|n| blocks.header(n)).collect();
        for &h in &hs {
            unsafe { t.record_alloc(id, 0, h, 0) };
        }
        // list order is newest first: 5 4 3 2 1
        for &i in &[2usize, 4, 0] {
            unsafe { t.record_free(hs[i], 0) };
        }
        let mut live = Vec::new();
        t.live(id, 0, &mut live);
        let sizes: Vec<u64> = live.iter().map(|l| l.size).collect();
        assert_eq!(sizes, vec![4, 2]);
    }

    #[test]
    fn reset_zeroes_and_orphans_live_blocks() {
        let t = SiteTable::new();
        let mut blocks = Blocks::new();
        let id = t.intern(ruby("r.rb", 9));
        let h1 = blocks.header(10);
        let h2 = blocks.header(20);
        unsafe {
            t.record_alloc(id, 0, h1, 0);
            t.record_alloc(id, 0, h2, 0);
        }
        t.reset();
        assert_eq!(
            t.snapshot(id).unwrap(),
            SiteSnapshot {
                id,
                ..Default::default()
            }
        );
        // frees of orphaned blocks are not counted
        unsafe { t.record_free(h1, 3) };
        let s = t.snapshot(id).unwrap();
        assert_eq!((s.allocations, s.frees, s.live_count), (0, 0, 0));
        // the location is still known and counts again
        let h3 = blocks.header(5);
        unsafe { t.record_alloc(t.intern(ruby("r.rb", 9)), 0, h3, 0) };
        assert_eq!(t.snapshot(id).unwrap().total, 5);
        let _ = h2;
    }

    #[test]
    fn full_table_charges_new_keys_to_one_overflow_bucket() {
        let t = SiteTable::with_capacity(4);
        let a = t.intern(KeyRef::Native { address: 1 });
        let b = t.intern(KeyRef::Native { address: 2 });
        let c = t.intern(KeyRef::Native { address: 3 });
        let d = t.intern(KeyRef::Native { address: 4 });
        let e = t.intern(KeyRef::Native { address: 5 });
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(d, 4);
        assert_eq!(e, d);
        assert_eq!(t.with_key(d, |k| k.clone()), Some(SiteKey::Overflow));
        assert_eq!(t.overflowed_keys(), 2);
        // known keys still find their own site
        assert_eq!(t.intern(KeyRef::Native { address: 2 }), 2);
        assert_eq!(t.lookup(KeyRef::Native { address: 5 }), None);
    }

    #[test]
    fn many_sites_span_chunks() {
        let t = SiteTable::new();
        for i in 0..5000usize {
            let id = t.intern(KeyRef::Native { address: i * 16 });
            assert_eq!(id as usize, i + 1);
            assert!(t.site(id).is_some());
        }
        assert_eq!(t.lookup(KeyRef::Native { address: 4999 * 16 }), Some(5000));
    }

    #[test]
    fn concurrent_alloc_free_keeps_books_balanced() {
        use std::sync::Arc;
        let t = Arc::new(SiteTable::new());
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut blocks = Blocks::new();
                    let mut held = Vec::new();
                    for i in 0..2000usize {
                        let id = t.intern(KeyRef::Native {
                            address: (i % 7) + n * 100,
                        });
                        let shared = t.intern(KeyRef::Native { address: 0xfeed });
                        let h = blocks.header(i % 13);
                        let g = blocks.header(1);
                        unsafe {
                            t.record_alloc(id, n, h, 0);
                            t.record_alloc(shared, n, g, 0);
                        }
                        held.push(h);
                        unsafe { t.record_free(g, 1) };
                        if i % 3 == 0 {
                            let h = held.swap_remove(held.len() / 2);
                            unsafe { t.record_free(h, 1) };
                        }
                    }
                    blocks
                })
            })
            .collect();
        let _blocks: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for id in 1..=t.site_count() {
            let s = t.snapshot(id).unwrap();
            let mut live = Vec::new();
            t.live(id, 0, &mut live);
            assert_eq!(s.allocations - s.frees, s.live_count);
            assert_eq!(live.len() as u64, s.live_count);
            assert_eq!(live.iter().map(|l| l.size).sum::<u64>(), s.live_bytes);
            assert_eq!(s.total - s.freed_bytes, s.live_bytes);
        }
    }

    #[test]
    fn shards_are_summed_and_freed_from_any_thread() {
        let t = SiteTable::new();
        let mut blocks = Blocks::new();
        let id = t.intern(ruby("s.rb", 1));
        let hs: Vec<_> = (0..SHARDS * 2).map(|n| blocks.header(n + 1)).collect();
        for (i, &h) in hs.iter().enumerate() {
            unsafe { t.record_alloc(id, i, h, 0) };
        }
        let total: u64 = (1..=SHARDS as u64 * 2).sum();
        let s = t.snapshot(id).unwrap();
        assert_eq!(
            (s.total, s.allocations, s.live_count),
            (total, SHARDS as u64 * 2, SHARDS as u64 * 2)
        );
        let mut live = Vec::new();
        t.live(id, 0, &mut live);
        assert_eq!(live.len(), SHARDS * 2);
        // frees find each block's own shard
        for &h in hs.iter().step_by(2) {
            unsafe { t.record_free(h, 3) };
        }
        let s = t.snapshot(id).unwrap();
        assert_eq!(s.frees, SHARDS as u64);
        assert_eq!(s.max_lifespan, 3);
        t.reset();
        let s = t.snapshot(id).unwrap();
        assert_eq!((s.allocations, s.live_count), (0, 0));
        t.hold_for_fork();
        t.release_after_fork_in_child();
        assert_eq!(t.snapshot(id).unwrap().total, 0);
    }

    #[test]
    fn hold_and_release_for_fork() {
        let t = SiteTable::new();
        let id = t.intern(ruby("f.rb", 1));
        t.hold_for_fork();
        t.release_after_fork_in_parent();
        assert!(t.snapshot(id).is_some());
        t.hold_for_fork();
        t.release_after_fork_in_child();
        assert_eq!(t.intern(ruby("f.rb", 1)), id);
        assert!(t.snapshot(id).is_some());
    }
}
