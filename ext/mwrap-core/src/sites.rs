//! The site table: every location that allocated, its counters and (through
//! the [`LiveSet`] seam) its live allocations.
//!
//! - The index (key → id) sits behind one lock, taken on a thread's cache
//!   misses and by lookups; keys are stored in the sites themselves and
//!   never change, so naming a site needs no lock.
//! - Sites live in chunks that never move, so `site(id)` needs no lock.
//! - Each site is split into [`SHARDS`] shards (counters and live part
//!   behind the shard's own lock, on a cache line of its own); every thread
//!   charges its own shard, so threads allocating from one place do not
//!   fight over one lock. A block's owner word names its shard.
//!
//! Every bookkeeping allocation is fallible: a location the profiler has no
//! memory for goes to one [`SiteKey::NoMemory`] bucket, never an abort.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use hashbrown::HashTable;

use crate::abi::{LiveAllocationInfo, SiteSnapshot, UNTRACKED_SITE};
use crate::files::FileNames;
use crate::key::SiteKey;
use crate::live::{HeaderList, LiveBlock, LiveSet};
use crate::lock::{LockCx, TableLock};
use crate::mem::{map_zeroed, ChunkedArray, ZeroInit};
use crate::stacks::StackId;

const SITES_PER_CHUNK: usize = 1024;
const SITE_CHUNKS: usize = 1024;
/// Hard ceiling on distinct locations (ids are 1-based, 0 is untracked).
pub const MAX_SITES: u32 = (SITES_PER_CHUNK * SITE_CHUNKS - 1) as u32;

/// The no-memory bucket's id, taken by the table's first use.
pub const NO_MEMORY_ID: u32 = 1;

/// Shards per site.
pub const SHARDS: usize = 8;
/// A block's shard is kept in the top bits of its owner word.
const SHARD_SHIFT: u32 = 29;
const SITE_ID_MASK: u32 = (1 << SHARD_SHIFT) - 1;

/// The owner word of a block charged to shard `shard` of site `id`.
#[inline]
fn owner_word(id: u32, shard: usize) -> u32 {
    id | ((shard as u32) << SHARD_SHIFT)
}

/// The site id of a block's owner word (its shard bits dropped).
#[inline]
pub fn owner_site(word: u32) -> u32 {
    word & SITE_ID_MASK
}

/// Counters of one shard of one location.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SiteCounters {
    pub total: u64,
    pub allocations: u64,
    pub frees: u64,
    pub freed_bytes: u64,
    pub age_total: u64,
    pub max_lifespan: u64,
}

// SAFETY: integers only.
unsafe impl ZeroInit for SiteCounters {}

impl SiteCounters {
    #[inline]
    fn count_alloc(&mut self, size: usize) {
        self.total += size as u64;
        self.allocations += 1;
    }

    #[inline]
    fn count_free(&mut self, size: usize, lifespan: u64) {
        self.frees += 1;
        self.freed_bytes += size as u64;
        self.age_total += lifespan;
        if lifespan > self.max_lifespan {
            self.max_lifespan = lifespan;
        }
    }

    fn add_to(&self, snap: &mut SiteSnapshot) {
        snap.total += self.total;
        snap.allocations += self.allocations;
        snap.frees += self.frees;
        snap.freed_bytes += self.freed_bytes;
        snap.age_total += self.age_total;
        snap.max_lifespan = snap.max_lifespan.max(self.max_lifespan);
    }
}

struct ShardData<P> {
    counters: SiteCounters,
    live: P,
}

/// Part of one location: counters and live part behind one lock, on a
/// cache line of its own.
#[repr(C, align(64))]
struct Shard<P> {
    data: TableLock<ShardData<P>>,
}

/// One location. Shard 0 is inline (all a single-threaded program uses);
/// the others are carved from an arena the first time another thread
/// charges the site.
#[repr(C)]
pub struct Site<P> {
    primary: Shard<P>,
    /// `SHARDS - 1` shards, or null.
    others: AtomicPtr<Shard<P>>,
    /// Written once, before the site's id is published.
    key: UnsafeCell<SiteKey>,
    /// A location's newest stack site (0: none); its stack sites link
    /// through `next_stack`. Published under the index lock, read without.
    first_stack: AtomicU32,
    /// A stack site's next (older) sibling of the same location.
    next_stack: AtomicU32,
}

// SAFETY: a zeroed lock is unlocked, zeroed counters are zero, a zeroed
// `P` is valid by its own promise, and a zeroed key is `SiteKey::Unset`.
unsafe impl<P: ZeroInit> ZeroInit for Site<P> {}

// A location costs two cache lines (the shard's, then key and extra-shard
// pointer) with the header list.
const _: () = assert!(core::mem::size_of::<Site<crate::live::ListHead>>() == 128);
const _: () = assert!(core::mem::size_of::<Shard<crate::live::ListHead>>() == 64);

impl<P> Site<P> {
    #[inline]
    fn shard(&self, index: usize) -> Option<&TableLock<ShardData<P>>> {
        if index == 0 {
            return Some(&self.primary.data);
        }
        let others = self.others.load(Ordering::Acquire);
        if others.is_null() || index >= SHARDS {
            return None;
        }
        // SAFETY: `others` holds SHARDS - 1 zeroed shards, published whole,
        // never freed.
        Some(unsafe { &(*others.add(index - 1)).data })
    }

    /// Every shard in use so far.
    fn shards(&self) -> impl Iterator<Item = &TableLock<ShardData<P>>> {
        (0..SHARDS).map_while(move |i| self.shard(i))
    }
}

struct Index {
    ids: HashTable<u32>,
    /// Id of the overflow bucket once the table is full, else 0.
    overflow: u32,
    /// Id of the no-memory bucket ([`NO_MEMORY_ID`]) once the table is in
    /// use, else 0.
    no_memory: u32,
    /// Where extra shards are carved from.
    shard_arena: usize,
    shard_arena_left: usize,
}

/// All locations of one process.
pub struct SiteTable<L: LiveSet = HeaderList> {
    files: FileNames,
    index: TableLock<Index>,
    sites: ChunkedArray<Site<L::Part>, SITES_PER_CHUNK, SITE_CHUNKS>,
    /// Ids handed out so far (ids 1..=count are valid).
    count: AtomicU32,
    /// Ids handed out before the table is considered full (tests lower it).
    capacity: u32,
    /// New keys charged to the overflow bucket because the table was full.
    overflowed_keys: AtomicU64,
}

// SAFETY: every mutable field is behind a lock or an atomic; keys are
// written once before their id is published.
unsafe impl<L: LiveSet> Sync for SiteTable<L> {}
// SAFETY: as above.
unsafe impl<L: LiveSet> Send for SiteTable<L> {}

/// What became of a free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeOutcome {
    /// Counted and removed from its live part; `watched` when a cache
    /// pointed into the block.
    Counted { watched: bool },
    /// The block was not tracked (or a reset orphaned it): nothing to do.
    Untracked,
    /// A signal handler interrupted this thread while it held a table
    /// lock: the block must stay allocated until the caller can retry.
    Deferred,
}

/// No memory for a copy the caller asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMemory;

impl<L: LiveSet> Default for SiteTable<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: LiveSet> SiteTable<L> {
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
            files: FileNames::new(),
            index: TableLock::new(Index {
                ids: HashTable::new(),
                overflow: 0,
                no_memory: 0,
                shard_arena: 0,
                shard_arena_left: 0,
            }),
            sites: ChunkedArray::new(),
            count: AtomicU32::new(0),
            capacity,
            overflowed_keys: AtomicU64::new(0),
        }
    }

    /// The file names Ruby keys refer to.
    pub fn files(&self) -> &FileNames {
        &self.files
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
    #[inline(always)]
    fn site(&self, id: u32) -> Option<&Site<L::Part>> {
        if id == UNTRACKED_SITE {
            return None;
        }
        self.sites.get(id as usize)
    }

    /// The key of `id`, without locking; None for an id not handed out.
    pub fn key(&self, id: u32) -> Option<SiteKey> {
        if id > self.site_count() {
            return None;
        }
        // SAFETY: the key of a published id was written before the id was
        // published and never changes.
        let key = unsafe { *self.site(id)?.key.get() };
        (key != SiteKey::Unset).then_some(key)
    }

    fn key_hasher(&self) -> impl Fn(&u32) -> u64 + '_ {
        |&id| self.key(id).map_or(0, |k| k.hash())
    }

    /// The id of `key`, creating the location on first sight. The
    /// overflow bucket once the table is full, the no-memory bucket when no
    /// memory can be had, and the untracked id only when not even that
    /// exists or the thread is inside a signal handler that interrupted the
    /// table (see [`TableLock::lock`]).
    pub fn intern(&self, cx: &LockCx<'_>, key: SiteKey) -> u32 {
        let hash = key.hash();
        let Some(mut guard) = self.index.lock(cx) else {
            return UNTRACKED_SITE;
        };
        let index = &mut *guard;
        if let Some(&id) = index.ids.find(hash, |&id| self.key(id) == Some(key)) {
            return id;
        }
        if index.no_memory == 0 {
            // The first location ever: the no-memory bucket takes id 1, in
            // the chunk mapped now, so that it exists whenever the table
            // does (later, a chunk that cannot be mapped has no room for it).
            if self.sites.get_or_map(NO_MEMORY_ID as usize).is_none() {
                return UNTRACKED_SITE;
            }
            self.publish(NO_MEMORY_ID, SiteKey::NoMemory);
            index.no_memory = NO_MEMORY_ID;
        }
        let next = self.site_count() + 1;
        if next >= self.capacity {
            return self.overflow_bucket(index, next);
        }
        if self.sites.get_or_map(next as usize).is_none() {
            return index.no_memory;
        }
        if index.ids.try_reserve(1, self.key_hasher()).is_err() {
            return index.no_memory;
        }
        self.publish(next, key);
        index.ids.insert_unique(hash, next, self.key_hasher());
        next
    }

    /// The site of stack `stack` of location `location`, created on first
    /// sight and linked to the location. None when the table is full (only
    /// the overflow slot left), no memory can be had, or a signal handler
    /// re-enters the index: the caller then charges the location itself,
    /// so that per-location numbers never depend on stacks.
    pub fn intern_stack(&self, cx: &LockCx<'_>, location: u32, stack: StackId) -> Option<u32> {
        let parent = self.site(location)?;
        let key = SiteKey::Stack { location, stack };
        let hash = key.hash();
        let mut guard = self.index.lock(cx)?;
        let index = &mut *guard;
        if let Some(&id) = index.ids.find(hash, |&id| self.key(id) == Some(key)) {
            return Some(id);
        }
        let next = self.site_count() + 1;
        if next >= self.capacity {
            return None;
        }
        let site = self.sites.get_or_map(next as usize)?;
        index.ids.try_reserve(1, self.key_hasher()).ok()?;
        site.next_stack.store(
            parent.first_stack.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.publish(next, key);
        index.ids.insert_unique(hash, next, self.key_hasher());
        parent.first_stack.store(next, Ordering::Release);
        Some(next)
    }

    /// The stack sites of location `id`, newest first.
    pub fn stacks_of(&self, id: u32) -> impl Iterator<Item = u32> + '_ {
        let first = self
            .site(id)
            .map_or(0, |s| s.first_stack.load(Ordering::Acquire));
        core::iter::successors((first != 0).then_some(first), move |&child| {
            let next = self
                .site(child)
                .map_or(0, |s| s.next_stack.load(Ordering::Acquire));
            (next != 0).then_some(next)
        })
    }

    /// The id of the overflow bucket, created at `next` the first time
    /// (buckets are never in the index).
    fn overflow_bucket(&self, index: &mut Index, next: u32) -> u32 {
        self.overflowed_keys.fetch_add(1, Ordering::Relaxed);
        if index.overflow == 0
            && next <= MAX_SITES
            && self.sites.get_or_map(next as usize).is_some()
        {
            self.publish(next, SiteKey::Overflow);
            index.overflow = next;
        }
        if index.overflow != 0 {
            index.overflow
        } else {
            index.no_memory
        }
    }

    /// Writes the key of the new site `id` and publishes the id.
    fn publish(&self, id: u32, key: SiteKey) {
        if let Some(site) = self.sites.get(id as usize) {
            // SAFETY: `id` is not published yet, so no reader looks at its
            // key; the index lock makes this the only writer.
            unsafe { *site.key.get() = key };
            self.count.store(id, Ordering::Release);
        }
    }

    /// The id of `key` if it was ever interned (buckets included).
    pub fn lookup(&self, cx: &LockCx<'_>, key: SiteKey) -> Option<u32> {
        self.index.read(cx, |index| match key {
            SiteKey::Overflow => (index.overflow != 0).then_some(index.overflow),
            SiteKey::NoMemory => (index.no_memory != 0).then_some(index.no_memory),
            _ => index
                .ids
                .find(key.hash(), |&id| self.key(id) == Some(key))
                .copied(),
        })
    }

    /// Shard `index` of `site`, carving the site's other shards on first
    /// use (under the index lock, so each site gets them once).
    #[cold]
    fn grow_shards<'s>(
        &self,
        cx: &LockCx<'_>,
        site: &'s Site<L::Part>,
        index: usize,
    ) -> Option<&'s TableLock<ShardData<L::Part>>> {
        let mut guard = self.index.lock(cx)?;
        if site.others.load(Ordering::Acquire).is_null() {
            let bytes = (SHARDS - 1) * core::mem::size_of::<Shard<L::Part>>();
            if guard.shard_arena_left < bytes {
                const ARENA: usize = 256 * 1024;
                guard.shard_arena = map_zeroed(ARENA)?.as_ptr() as usize;
                guard.shard_arena_left = ARENA;
            }
            let others = guard.shard_arena as *mut Shard<L::Part>;
            guard.shard_arena += bytes;
            guard.shard_arena_left -= bytes;
            site.others.store(others, Ordering::Release);
        }
        drop(guard);
        site.shard(index)
    }

    /// Charges a new block to shard `shard` (any number; taken modulo
    /// [`SHARDS`]) of site `id` and adds it to that shard's live part.
    /// False when it could not be (unknown id, or a signal handler inside
    /// the table): the block then stays untracked.
    ///
    /// # Safety
    /// `block` is a fresh block, in no live part, owner word untracked.
    #[inline(always)]
    pub unsafe fn record_alloc(
        &self,
        cx: &LockCx<'_>,
        id: u32,
        shard: usize,
        block: L::Block,
        generation: u64,
    ) -> bool {
        let Some(site) = self.site(id) else {
            return false;
        };
        let mut shard = shard % SHARDS;
        let lock = match site.shard(shard) {
            Some(lock) => lock,
            None => match self.grow_shards(cx, site, shard) {
                Some(lock) => lock,
                None => {
                    shard = 0;
                    &site.primary.data
                }
            },
        };
        let Some(mut data) = lock.lock(cx) else {
            return false;
        };
        // SAFETY: per this function's contract.
        let size = unsafe { L::size(block) };
        data.counters.count_alloc(size);
        // SAFETY: under the shard's lock; the block is in no part.
        unsafe {
            L::insert(
                &mut data.live,
                block,
                owner_word(id, shard),
                generation as u32,
            )
        };
        true
    }

    /// Counts the free of a tracked block and removes it from its live part.
    ///
    /// # Safety
    /// `block` is a live block handed out by the preload.
    #[inline(always)]
    pub unsafe fn record_free(
        &self,
        cx: &LockCx<'_>,
        block: L::Block,
        generation: u64,
    ) -> FreeOutcome {
        // SAFETY: per this function's contract.
        let word = unsafe { L::owner(block) };
        let Some(site) = self.site(word & SITE_ID_MASK) else {
            return FreeOutcome::Untracked;
        };
        let Some(lock) = site.shard((word >> SHARD_SHIFT) as usize) else {
            return FreeOutcome::Untracked;
        };
        let Some(mut data) = lock.lock(cx) else {
            return FreeOutcome::Deferred;
        };
        // SAFETY: under the shard's lock that `word` names.
        let Some(removed) = (unsafe { L::remove(&mut data.live, block, word) }) else {
            return FreeOutcome::Untracked; // orphaned by a reset while we waited
        };
        let lifespan = (generation as u32).wrapping_sub(removed.birth) as u64;
        data.counters.count_free(removed.size, lifespan);
        FreeOutcome::Counted {
            watched: removed.watched,
        }
    }

    /// A copy of one location's counters, summed over its shards and its
    /// stacks' (see [`Self::intern_stack`]). None for an id not handed out
    /// and for a stack site (not a location: see [`Self::own_snapshot`]).
    pub fn snapshot(&self, cx: &LockCx<'_>, id: u32) -> Option<SiteSnapshot> {
        if !self.key(id)?.is_location() {
            return None;
        }
        let mut snap = SiteSnapshot {
            id,
            ..Default::default()
        };
        self.add_counters(cx, id, &mut snap);
        for child in self.stacks_of(id) {
            self.add_counters(cx, child, &mut snap);
        }
        Some(Self::with_live(snap))
    }

    /// A copy of one site's own counters: for a stack site, what was
    /// charged with that stack; for a location, what was charged to it
    /// without a stack.
    pub fn own_snapshot(&self, cx: &LockCx<'_>, id: u32) -> Option<SiteSnapshot> {
        self.key(id)?;
        let mut snap = SiteSnapshot {
            id,
            ..Default::default()
        };
        self.add_counters(cx, id, &mut snap);
        Some(Self::with_live(snap))
    }

    fn add_counters(&self, cx: &LockCx<'_>, id: u32, snap: &mut SiteSnapshot) {
        if let Some(site) = self.site(id) {
            for shard in site.shards() {
                shard.read(cx, |data| data.counters.add_to(snap));
            }
        }
    }

    /// Every tracked block is either freed or live: a reset zeroes the
    /// counters and orphans the live ones together.
    fn with_live(mut snap: SiteSnapshot) -> SiteSnapshot {
        snap.live_count = snap.allocations - snap.frees;
        snap.live_bytes = snap.total - snap.freed_bytes;
        snap
    }

    /// Appends a copy of the live allocations of `id` (a location's
    /// include its stacks') to `out`; Ok(false) if `id` is unknown.
    /// Generations are rebuilt from the 32-bit birth stamp relative to
    /// `current_generation`.
    pub fn live(
        &self,
        cx: &LockCx<'_>,
        id: u32,
        current_generation: u64,
        out: &mut Vec<LiveAllocationInfo>,
    ) -> Result<bool, NoMemory> {
        if self.key(id).is_none() {
            return Ok(false);
        }
        self.own_live(cx, id, current_generation, out)?;
        for child in self.stacks_of(id) {
            self.own_live(cx, child, current_generation, out)?;
        }
        Ok(true)
    }

    fn own_live(
        &self,
        cx: &LockCx<'_>,
        id: u32,
        current_generation: u64,
        out: &mut Vec<LiveAllocationInfo>,
    ) -> Result<(), NoMemory> {
        let Some(site) = self.site(id) else {
            return Ok(());
        };
        for shard in site.shards() {
            shard.read(cx, |data| {
                let live = data.counters.allocations - data.counters.frees;
                out.try_reserve(live as usize).map_err(|_| NoMemory)?;
                L::for_each(&data.live, |size, birth| {
                    let age = (current_generation as u32).wrapping_sub(birth) as u64;
                    out.push(LiveAllocationInfo {
                        size: size as u64,
                        generation: current_generation.wrapping_sub(age),
                    });
                });
                Ok(())
            })?;
        }
        Ok(())
    }

    /// How many blocks are live, over every site (a bound for
    /// [`Self::for_each_live_block`] to size its output by).
    pub fn live_block_count(&self, cx: &LockCx<'_>) -> u64 {
        (1..=self.site_count())
            .filter_map(|id| self.site(id))
            .flat_map(|site| site.shards())
            .map(|shard| shard.read(cx, |d| d.counters.allocations - d.counters.frees))
            .sum()
    }

    /// Calls `f(site, block)` for every live block of every site (stack
    /// sites by their own id), each shard under its lock.
    pub fn for_each_live_block(&self, cx: &LockCx<'_>, mut f: impl FnMut(u32, LiveBlock)) {
        for id in 1..=self.site_count() {
            let Some(site) = self.site(id) else { continue };
            for shard in site.shards() {
                shard.read(cx, |data| L::for_each_block(&data.live, |b| f(id, b)));
            }
        }
    }

    /// The location a site's blocks are charged to: itself, or for a stack
    /// site its location.
    pub fn location_of(&self, id: u32) -> Option<u32> {
        match self.key(id)? {
            SiteKey::Stack { location, .. } => Some(location),
            _ => Some(id),
        }
    }

    /// Zeroes every counter and orphans the blocks live now, so that
    /// `allocations - frees == live` holds again from this point on.
    pub fn reset(&self, cx: &LockCx<'_>) {
        for id in 1..=self.site_count() {
            let Some(site) = self.site(id) else { continue };
            for shard in site.shards() {
                if let Some(mut data) = shard.lock(cx) {
                    L::orphan_all(&mut data.live);
                    data.counters = SiteCounters::default();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::FileId;
    use crate::testing::{cx, Blocks};

    fn ruby(t: &SiteTable, c: &LockCx<'_>, file: &str, line: u32) -> SiteKey {
        SiteKey::Ruby {
            file: t.files().intern(c, file.as_bytes()).unwrap(),
            line,
        }
    }

    #[test]
    fn intern_is_stable_and_distinct() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        let ka = ruby(&t, &c, "a.rb", 1);
        let a = t.intern(&c, ka);
        let b = t.intern(&c, ruby(&t, &c, "a.rb", 2));
        let n = t.intern(&c, SiteKey::Native { address: 0x1234 });
        assert_ne!(a, UNTRACKED_SITE);
        assert_ne!(a, b);
        assert_ne!(b, n);
        assert_eq!(t.intern(&c, ka), a);
        assert_eq!(t.lookup(&c, SiteKey::Native { address: 0x1234 }), Some(n));
        assert_eq!(
            t.lookup(
                &c,
                SiteKey::Ruby {
                    file: FileId(77),
                    line: 1
                }
            ),
            None
        );
        // ids after the no-memory bucket's
        assert_eq!((a, t.site_count()), (NO_MEMORY_ID + 1, 4));
        assert_eq!(t.key(NO_MEMORY_ID), Some(SiteKey::NoMemory));
        assert_eq!(t.key(a), Some(ka));
        assert_eq!(t.key(5), None);
    }

    #[test]
    fn alloc_and_free_balance_with_lifespans() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let id = t.intern(&c, ruby(&t, &c, "x.rb", 3));
        let h1 = blocks.header(100);
        let h2 = blocks.header(50);
        let h3 = blocks.header(7);
        // SAFETY: fresh test headers.
        unsafe {
            assert!(t.record_alloc(&c, id, 0, h1, 10));
            assert!(t.record_alloc(&c, id, 0, h2, 11));
            assert!(t.record_alloc(&c, id, 0, h3, 12));
            assert_eq!(
                t.record_free(&c, h2, 15),
                FreeOutcome::Counted { watched: false }
            ); // lifespan 4
            assert_eq!(
                t.record_free(&c, h1, 11),
                FreeOutcome::Counted { watched: false }
            ); // lifespan 1
        }
        let s = t.snapshot(&c, id).unwrap();
        assert_eq!(
            (
                s.total,
                s.allocations,
                s.frees,
                s.freed_bytes,
                s.age_total,
                s.max_lifespan
            ),
            (157, 3, 2, 150, 5, 4)
        );
        assert_eq!((s.live_count, s.live_bytes), (1, 7));
        let mut live = Vec::new();
        assert_eq!(t.live(&c, id, 20, &mut live), Ok(true));
        assert_eq!(
            live,
            vec![LiveAllocationInfo {
                size: 7,
                generation: 12
            }]
        );
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                t.record_free(&c, h3, 20),
                FreeOutcome::Counted { watched: false }
            );
            // a second free of an unlinked header is ignored
            assert_eq!(t.record_free(&c, h3, 20), FreeOutcome::Untracked);
        }
        assert_eq!(t.snapshot(&c, id).unwrap().frees, 3);
        assert_eq!(t.live(&c, 99, 0, &mut live), Ok(false));
    }

    #[test]
    fn reset_zeroes_and_orphans_live_blocks() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let key = ruby(&t, &c, "r.rb", 9);
        let id = t.intern(&c, key);
        let h1 = blocks.header(10);
        let h2 = blocks.header(20);
        // SAFETY: fresh test headers.
        unsafe {
            t.record_alloc(&c, id, 0, h1, 0);
            t.record_alloc(&c, id, 0, h2, 0);
        }
        t.reset(&c);
        assert_eq!(
            t.snapshot(&c, id).unwrap(),
            SiteSnapshot {
                id,
                ..Default::default()
            }
        );
        // SAFETY: orphaned headers stay valid.
        assert_eq!(unsafe { t.record_free(&c, h1, 3) }, FreeOutcome::Untracked);
        let s = t.snapshot(&c, id).unwrap();
        assert_eq!((s.allocations, s.frees, s.live_count), (0, 0, 0));
        let h3 = blocks.header(5);
        // SAFETY: a fresh test header.
        unsafe { t.record_alloc(&c, t.intern(&c, key), 0, h3, 0) };
        assert_eq!(t.snapshot(&c, id).unwrap().total, 5);
    }

    #[test]
    fn full_table_charges_new_keys_to_one_overflow_bucket() {
        let t: SiteTable = SiteTable::with_capacity(4);
        let th = cx();
        let c = th.cx();
        let ids: Vec<u32> = (1..=4)
            .map(|a| t.intern(&c, SiteKey::Native { address: a }))
            .collect();
        // id 1 is the no-memory bucket; the last slot the overflow bucket
        assert_eq!(ids, vec![2, 3, 4, 4]);
        assert_eq!(t.key(4), Some(SiteKey::Overflow));
        assert_eq!(t.overflowed_keys(), 2);
        assert_eq!(t.intern(&c, SiteKey::Native { address: 2 }), 3);
        assert_eq!(t.lookup(&c, SiteKey::Native { address: 4 }), None);
        assert_eq!(t.lookup(&c, SiteKey::Overflow), Some(4));
        assert_eq!(t.lookup(&c, SiteKey::NoMemory), Some(NO_MEMORY_ID));
    }

    #[test]
    fn many_sites_span_chunks() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        for i in 0..5000usize {
            let id = t.intern(&c, SiteKey::Native { address: i * 16 });
            assert_eq!(id as usize, i + 2); // after the no-memory bucket
        }
        assert_eq!(
            t.lookup(&c, SiteKey::Native { address: 4999 * 16 }),
            Some(5001)
        );
    }

    #[test]
    fn a_handler_inside_the_table_is_told_to_defer() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let id = t.intern(&c, SiteKey::Native { address: 1 });
        let h = blocks.header(8);
        // SAFETY: a fresh test header.
        unsafe { assert!(t.record_alloc(&c, id, 0, h, 0)) };
        // Pretend this thread was interrupted while holding some table lock.
        let other = TableLock::new(());
        let held = other.lock(&c).unwrap();
        // SAFETY: as above.
        unsafe { assert_eq!(t.record_free(&c, h, 0), FreeOutcome::Deferred) };
        assert_eq!(t.intern(&c, SiteKey::Native { address: 2 }), UNTRACKED_SITE);
        // Reading still works.
        assert_eq!(t.snapshot(&c, id).unwrap().live_count, 1);
        drop(held);
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                t.record_free(&c, h, 0),
                FreeOutcome::Counted { watched: false }
            )
        };
    }

    #[test]
    fn concurrent_alloc_free_keeps_books_balanced() {
        use std::sync::Arc;
        let t: Arc<SiteTable> = Arc::new(SiteTable::new());
        let handles: Vec<_> = (0..4usize)
            .map(|n| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let th = cx();
                    let c = th.cx();
                    let mut blocks = Blocks::new();
                    let mut held = Vec::new();
                    for i in 0..2000usize {
                        let id = t.intern(
                            &c,
                            SiteKey::Native {
                                address: (i % 7) + n * 100,
                            },
                        );
                        let shared = t.intern(&c, SiteKey::Native { address: 0xfeed });
                        let h = blocks.header(i % 13);
                        let g = blocks.header(1);
                        // SAFETY: fresh test headers, each freed once.
                        unsafe {
                            t.record_alloc(&c, id, n, h, 0);
                            t.record_alloc(&c, shared, n, g, 0);
                            held.push(h);
                            t.record_free(&c, g, 1);
                            if i % 3 == 0 {
                                let h = held.swap_remove(held.len() / 2);
                                t.record_free(&c, h, 1);
                            }
                        }
                    }
                    blocks
                })
            })
            .collect();
        let _blocks: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let th = cx();
        let c = th.cx();
        for id in 1..=t.site_count() {
            let s = t.snapshot(&c, id).unwrap();
            let mut live = Vec::new();
            t.live(&c, id, 0, &mut live).unwrap();
            assert_eq!(s.allocations - s.frees, s.live_count);
            assert_eq!(live.len() as u64, s.live_count);
            assert_eq!(live.iter().map(|l| l.size).sum::<u64>(), s.live_bytes);
        }
    }

    #[test]
    fn shards_are_summed_and_freed_from_any_thread() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let id = t.intern(&c, ruby(&t, &c, "s.rb", 1));
        let hs: Vec<_> = (0..SHARDS * 2).map(|n| blocks.header(n + 1)).collect();
        for (i, &h) in hs.iter().enumerate() {
            // SAFETY: fresh test headers.
            unsafe { t.record_alloc(&c, id, i, h, 0) };
        }
        let total: u64 = (1..=SHARDS as u64 * 2).sum();
        let s = t.snapshot(&c, id).unwrap();
        assert_eq!(
            (s.total, s.allocations, s.live_count),
            (total, SHARDS as u64 * 2, SHARDS as u64 * 2)
        );
        for &h in hs.iter().step_by(2) {
            // SAFETY: each freed once.
            unsafe { t.record_free(&c, h, 3) };
        }
        let s = t.snapshot(&c, id).unwrap();
        assert_eq!((s.frees, s.max_lifespan), (SHARDS as u64, 3));
    }
}
