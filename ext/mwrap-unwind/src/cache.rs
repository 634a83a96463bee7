//! The per-thread rule cache: return address → compact unwind rule.
//!
//! Two-way set associative, indexed by a multiplicative hash of the return
//! address. A new rule goes into way 0 and pushes way 0's rule into way 1,
//! so a set keeps its two most recently inserted rules; hits write nothing.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::stack::ReadableStack;

/// Sets in [`RuleCache`]: 1024 sets × 2 ways × 16 bytes = 32 KiB of entries.
/// Measured with `examples/cache_sizes.rs` in Ruby (see the README): at 64
/// frames, 99.94% of lookups hit, against 99.69% with half as many sets
/// (5× the misses, at ~200 ns each) and 99.96% with twice as many.
pub const DEFAULT_CACHE_SETS: usize = 1024;

/// The cache the preload uses: [`RuleCacheOf`] with [`DEFAULT_CACHE_SETS`].
pub type RuleCache = RuleCacheOf<DEFAULT_CACHE_SETS>;

const WAYS: usize = 2;

/// Bumped by [`invalidate`]; a cache filled under another value is stale.
/// Starts at 0, the epoch of an all-zero cache, so fresh caches need no
/// clearing (which would touch every page of them).
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Makes every [`RuleCacheOf`] stale: each clears itself at its next unwind.
/// Call it after the real `dlclose` returns, as an unmapped object's
/// addresses may be reused by a later `dlopen`.
pub fn invalidate() {
    // Release pairs with nothing in particular: a thread can only meet a
    // reused address after synchronizing with the loader (dlopen/dlsym take
    // its lock), which orders this increment before that thread's next
    // (relaxed) load of EPOCH.
    EPOCH.fetch_add(1, Ordering::Release);
}

pub(crate) fn current_epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// How to find a frame's caller, reduced from a CFI row. All-zero is
/// "CFA = rsp + 0", which no real frame has; it is never read from an empty
/// entry (those have `ra == 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub(crate) struct Rule {
    /// CFA = base + this, base being rsp or rbp (flag `CFA_FROM_RBP`).
    pub cfa_offset: i32,
    /// With `RBP_SAVED`: the caller's rbp is at CFA + this.
    pub rbp_offset: i16,
    pub flags: u8,
    _pad: u8,
}

impl Rule {
    /// CFA = rbp + cfa_offset (otherwise rsp + cfa_offset).
    pub const CFA_FROM_RBP: u8 = 1 << 0;
    /// The caller's rbp was saved at CFA + rbp_offset (otherwise unchanged).
    pub const RBP_SAVED: u8 = 1 << 1;
    /// The caller's rbp is unknown (held in another register, or an
    /// expression): frames above can still unwind if they do not need it.
    pub const RBP_LOST: u8 = 1 << 2;
    /// The return address is undefined: this is the outermost frame.
    pub const OUTERMOST: u8 = 1 << 3;
    /// A signal trampoline: do not unwind through it.
    pub const SIGNAL: u8 = 1 << 4;
    /// No CFI covers the pc, or its row is beyond this compact form.
    pub const NO_INFO: u8 = 1 << 5;

    pub const fn new(cfa_offset: i32, rbp_offset: i16, flags: u8) -> Rule {
        Rule {
            cfa_offset,
            rbp_offset,
            flags,
            _pad: 0,
        }
    }

    pub const fn stop(flag: u8) -> Rule {
        Rule::new(0, 0, flag)
    }

    pub const fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    /// The return address (not `ra - 1`); 0 marks an empty entry.
    ra: usize,
    rule: Rule,
}

const EMPTY: Entry = Entry {
    ra: 0,
    rule: Rule::new(0, 0, 0),
};

/// A thread's cache of unwind rules, with `SETS` sets of two entries
/// (16 bytes each); `SETS` must be a power of two.
///
/// **All-zero bytes are a valid, empty cache**: every field is an integer
/// (or an array of them) and zero means "empty" or "epoch 0", the epoch
/// before any [`invalidate`]. So it can live in zeroed memory mapped per
/// thread, without being written first; see the test `zeroed_cache_is_empty`.
///
/// It also holds the thread's proven-readable stack ranges, and hit/miss
/// counters (one per frame looked up) for tests and benchmarks.
#[repr(C)]
pub struct RuleCacheOf<const SETS: usize> {
    epoch: u64,
    hits: u64,
    misses: u64,
    pub(crate) stack: ReadableStack,
    sets: [[Entry; WAYS]; SETS],
}

impl<const SETS: usize> Default for RuleCacheOf<SETS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SETS: usize> RuleCacheOf<SETS> {
    const VALID_SETS: () = assert!(SETS.is_power_of_two(), "SETS must be a power of two");
    const INDEX_SHIFT: u32 = u64::BITS - SETS.trailing_zeros();

    /// An empty cache (the same bytes as all-zero memory).
    pub const fn new() -> Self {
        let () = Self::VALID_SETS;
        RuleCacheOf {
            epoch: 0,
            hits: 0,
            misses: 0,
            stack: ReadableStack::new(),
            sets: [[EMPTY; WAYS]; SETS],
        }
    }

    /// Forgets every rule and stack range, and zeroes the counters: for
    /// memory handed from one thread to another.
    pub fn clear(&mut self) {
        self.clear_rules();
        self.stack = ReadableStack::new();
        self.hits = 0;
        self.misses = 0;
    }

    /// Frames whose rule came from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Frames whose rule had to be looked up in the object's CFI (including
    /// pcs found in no object, which are never cached).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    fn clear_rules(&mut self) {
        for set in self.sets.iter_mut() {
            *set = [EMPTY; WAYS];
        }
    }

    /// Drops every rule if an [`invalidate`] happened since they were made.
    #[inline]
    pub(crate) fn check_epoch(&mut self) {
        let epoch = current_epoch();
        if self.epoch != epoch {
            self.clear_rules();
            self.epoch = epoch;
        }
    }

    #[inline]
    fn set_index(ra: usize) -> usize {
        // Fibonacci hashing: the multiply spreads the low bits of nearby
        // return addresses over the top bits, which pick the set. Shifting a
        // u64 right by INDEX_SHIFT leaves fewer bits than SETS needs, so the
        // index is in range (and `get` below checks anyway).
        ((ra as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (Self::INDEX_SHIFT % u64::BITS))
            as usize
            & (SETS - 1)
    }

    #[inline]
    pub(crate) fn lookup(&mut self, ra: usize) -> Option<Rule> {
        let set = self.sets.get(Self::set_index(ra))?;
        let found = set.iter().find(|e| e.ra == ra).map(|e| e.rule);
        match found {
            Some(_) => self.hits = self.hits.wrapping_add(1),
            None => self.misses = self.misses.wrapping_add(1),
        }
        found
    }

    pub(crate) fn insert(&mut self, ra: usize, rule: Rule) {
        if let Some(set) = self.sets.get_mut(Self::set_index(ra)) {
            let [way0, way1] = set;
            *way1 = *way0;
            *way0 = Entry { ra, rule };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_cache_is_empty() {
        // SAFETY: the promise under test: all-zero bytes are a valid cache.
        let zeroed: RuleCache = unsafe { core::mem::zeroed() };
        let cache = std::boxed::Box::new(zeroed);
        assert_eq!(cache.hits(), 0);
        assert_eq!(cache.misses(), 0);
        assert_eq!(cache.epoch, 0);
        assert!(cache.sets.iter().flatten().all(|e| e.ra == 0));
        // new() is the same bytes as zeroed memory.
        let fresh = std::boxed::Box::new(RuleCache::new());
        let size = core::mem::size_of::<RuleCache>();
        // SAFETY: both are initialized RuleCaches of `size` bytes with no
        // padding (every field is a u64/usize or an 8-byte Rule).
        let bytes =
            unsafe { core::slice::from_raw_parts(&*fresh as *const RuleCache as *const u8, size) };
        assert!(bytes.iter().all(|&b| b == 0));
    }

    #[test]
    fn size_is_what_the_docs_say() {
        assert_eq!(core::mem::size_of::<Entry>(), 16);
        let entries = DEFAULT_CACHE_SETS * WAYS * 16;
        assert_eq!(entries, 32 << 10);
        // Header: epoch, hits, misses (24 bytes), proven stack ranges (80).
        assert_eq!(core::mem::size_of::<RuleCache>(), entries + 104);
    }

    #[test]
    fn two_ways_keep_the_two_newest() {
        let mut cache = std::boxed::Box::new(RuleCacheOf::<1>::new());
        cache.insert(0x1000, Rule::new(8, 0, 0));
        cache.insert(0x2000, Rule::new(16, 0, 0));
        assert_eq!(cache.lookup(0x1000), Some(Rule::new(8, 0, 0)));
        assert_eq!(cache.lookup(0x2000), Some(Rule::new(16, 0, 0)));
        cache.insert(0x3000, Rule::new(24, 0, 0));
        assert_eq!(cache.lookup(0x1000), None);
        assert_eq!(cache.lookup(0x3000), Some(Rule::new(24, 0, 0)));
        assert_eq!((cache.hits(), cache.misses()), (3, 1));
    }

    #[test]
    fn invalidate_makes_rules_stale() {
        let mut cache = std::boxed::Box::new(RuleCacheOf::<64>::new());
        cache.check_epoch();
        cache.insert(0x1234, Rule::new(8, 0, 0));
        cache.check_epoch();
        assert!(cache.lookup(0x1234).is_some());
        invalidate();
        cache.check_epoch();
        assert!(cache.lookup(0x1234).is_none());
    }
}
