//! Ruby's object heap pages. Ruby ≥ 3.1 maps each heap page with `mmap`
//! (and frees it with `munmap`) instead of `posix_memalign`, so the preload
//! watches those mappings and keeps, per live page, the GC generation it
//! was born in, plus statistics over the lives of freed pages.
//!
//! Ruby's page allocator (gc.c: `heap_page_body_allocate`) maps twice the
//! page size, keeps the page-aligned page inside and unmaps the two ends.
//! The page size is 16 KiB on Ruby 3.1 and 64 KiB from 3.2 on; the first
//! such mapping fixes it for the process.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::abi::{HeapPageInfo, HeapPageStats, SpanStats};
use crate::lock::{LockCx, TableLock};
use crate::sites::NoMemory;

/// Heap page sizes Ruby has used (`HEAP_PAGE_SIZE`, also its alignment).
pub const HEAP_PAGE_SIZES: [usize; 3] = [16 * 1024, 32 * 1024, 64 * 1024];

/// Whether a mapping of `len` bytes may be one of Ruby's heap page mappings.
pub fn is_page_mapping_len(len: usize) -> bool {
    HEAP_PAGE_SIZES.iter().any(|&p| 2 * p == len)
}

/// Count, extremes, mean and standard deviation of samples (Welford).
#[derive(Clone, Copy, Debug, Default)]
pub struct Accumulator {
    count: u64,
    min: u64,
    max: u64,
    mean: f64,
    m2: f64,
}

impl Accumulator {
    pub const fn new() -> Self {
        Accumulator {
            count: 0,
            min: 0,
            max: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    pub fn add(&mut self, x: u64) {
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
        let delta = x as f64 - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x as f64 - self.mean);
    }

    pub fn stats(&self) -> SpanStats {
        let stddev = if self.count > 1 {
            (self.m2 / (self.count - 1) as f64).sqrt()
        } else {
            0.0
        };
        SpanStats {
            count: self.count,
            min: self.min,
            max: self.max,
            mean: if self.count == 0 { f64::NAN } else { self.mean },
            stddev: if self.count == 0 { f64::NAN } else { stddev },
        }
    }
}

struct Pages {
    /// Live pages (address, birth generation), sorted by address. A sorted
    /// Vec rather than a BTreeMap: its growth can fail without aborting.
    live: Vec<(usize, u64)>,
    /// Lifespans of freed pages, in GC generations.
    lifespan: Accumulator,
    /// For pages born after some page died: generations since the last death.
    deathspan: Accumulator,
    last_death: Option<u64>,
}

impl Pages {
    /// Index range of the live pages inside `[start, end)`.
    fn range(&self, start: usize, end: usize) -> core::ops::Range<usize> {
        let lo = self.live.partition_point(|&(a, _)| a < start);
        let hi = self.live.partition_point(|&(a, _)| a < end);
        lo..hi.max(lo)
    }
}

/// The live heap pages of one process.
pub struct HeapPageTable {
    pages: TableLock<Pages>,
    /// Page size of this process's Ruby; 0 until the first page is seen.
    page_size: AtomicUsize,
}

impl Default for HeapPageTable {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapPageTable {
    pub const fn new() -> Self {
        HeapPageTable {
            pages: TableLock::new(Pages {
                live: Vec::new(),
                lifespan: Accumulator::new(),
                deathspan: Accumulator::new(),
                last_death: None,
            }),
            page_size: AtomicUsize::new(0),
        }
    }

    /// The heap page size seen so far, or 0.
    pub fn page_size(&self) -> usize {
        self.page_size.load(Ordering::Relaxed)
    }

    /// The page inside a fresh mapping of two pages at `start`: the first
    /// page-aligned address after it, as Ruby picks it.
    pub fn page_in_mapping(start: usize, page_size: usize) -> usize {
        (start + page_size) & !(page_size - 1)
    }

    /// A fresh anonymous mapping of `len` bytes at `start`, made by Ruby's
    /// thread: records the heap page inside it, born in `generation`, if it
    /// has the shape of one. Returns whether it did.
    pub fn record_mapping(
        &self,
        cx: &LockCx<'_>,
        start: usize,
        len: usize,
        generation: u64,
    ) -> bool {
        if !is_page_mapping_len(len) {
            return false;
        }
        let page_size = len / 2;
        let known =
            match self
                .page_size
                .compare_exchange(0, page_size, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => page_size,
                Err(known) => known,
            };
        if known != page_size {
            return false;
        }
        self.record_map(cx, Self::page_in_mapping(start, page_size), generation)
    }

    /// Records a new page at `address`, born in `generation`; false when it
    /// could not (no memory, or a signal handler inside the table).
    fn record_map(&self, cx: &LockCx<'_>, address: usize, generation: u64) -> bool {
        let Some(mut pages) = self.pages.lock(cx) else {
            return false;
        };
        if pages.live.try_reserve(1).is_err() {
            return false;
        }
        if let Some(death) = pages.last_death {
            pages.deathspan.add(generation.saturating_sub(death));
        }
        let at = pages.live.partition_point(|&(a, _)| a < address);
        if pages.live.get(at).is_some_and(|&(a, _)| a == address) {
            pages.live[at].1 = generation;
        } else {
            pages.live.insert(at, (address, generation));
        }
        true
    }

    /// Forgets every page inside `[start, start + len)`; returns how many.
    pub fn record_unmap(
        &self,
        cx: &LockCx<'_>,
        start: usize,
        len: usize,
        generation: u64,
    ) -> usize {
        let end = start.saturating_add(len);
        let page_size = self.page_size();
        let Some(mut guard) = self.pages.lock(cx) else {
            return 0;
        };
        let pages = &mut *guard;
        let range = pages.range(start, end);
        let mut dead = 0;
        let mut keep = range.start;
        for i in range.clone() {
            let (address, birth) = pages.live[i];
            if address.saturating_add(page_size) <= end {
                pages.lifespan.add(generation.saturating_sub(birth));
                pages.last_death = Some(generation);
                dead += 1;
            } else {
                pages.live[keep] = pages.live[i];
                keep += 1;
            }
        }
        pages.live.drain(keep..range.end);
        dead
    }

    /// Cheap pre-check for `munmap`: could `[start, start+len)` hold a page?
    pub fn may_hold_page(&self, cx: &LockCx<'_>, start: usize, len: usize) -> bool {
        let page_size = self.page_size();
        page_size != 0
            && len >= page_size
            && self.pages.read(cx, |p| {
                !p.range(start, start.saturating_add(len)).is_empty()
            })
    }

    /// Appends every live page, by address.
    pub fn live(&self, cx: &LockCx<'_>, out: &mut Vec<HeapPageInfo>) -> Result<(), NoMemory> {
        self.pages.read(cx, |pages| {
            out.try_reserve(pages.live.len()).map_err(|_| NoMemory)?;
            out.extend(pages.live.iter().map(|&(a, g)| HeapPageInfo {
                address: a as u64,
                generation: g,
            }));
            Ok(())
        })
    }

    pub fn stats(&self, cx: &LockCx<'_>) -> HeapPageStats {
        self.pages.read(cx, |p| HeapPageStats {
            live_pages: p.live.len() as u64,
            lifespan: p.lifespan.stats(),
            deathspan: p.deathspan.stats(),
            resurrects: p.deathspan.stats().count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cx;

    #[test]
    fn accumulator_matches_textbook_values() {
        let mut a = Accumulator::default();
        for x in [2u64, 4, 4, 4, 5, 5, 7, 9] {
            a.add(x);
        }
        let s = a.stats();
        assert_eq!((s.count, s.min, s.max), (8, 2, 9));
        assert!((s.mean - 5.0).abs() < 1e-12);
        assert!((s.stddev - 2.138_089_935).abs() < 1e-6);
        let empty = Accumulator::default().stats();
        assert!(empty.mean.is_nan() && empty.stddev.is_nan());
    }

    const P: usize = 16 * 1024;

    #[test]
    fn page_in_mapping_is_aligned_and_inside() {
        for start in [0x7f00_0000_0000usize, 0x7f00_0000_1000, 0x7f00_0000_3000] {
            let p = HeapPageTable::page_in_mapping(start, P);
            assert_eq!(p % P, 0);
            assert!(p > start && p + P <= start + 2 * P);
        }
    }

    #[test]
    fn trimming_unmaps_keep_the_page_and_page_unmap_removes_it() {
        let t = HeapPageTable::new();
        let th = cx();
        let c = th.cx();
        let start = 0x7f00_0000_3000usize;
        assert!(t.record_mapping(&c, start, 2 * P, 3));
        assert_eq!(t.page_size(), P);
        let page = HeapPageTable::page_in_mapping(start, P);
        // Ruby trims the unaligned head and tail
        assert_eq!(t.record_unmap(&c, start, page - start, 3), 0);
        assert_eq!(t.record_unmap(&c, page + P, start + 2 * P - page - P, 3), 0);
        let mut live = Vec::new();
        t.live(&c, &mut live).unwrap();
        assert_eq!(
            live,
            vec![HeapPageInfo {
                address: page as u64,
                generation: 3
            }]
        );
        assert!(t.may_hold_page(&c, page, P));
        assert_eq!(t.record_unmap(&c, page, P, 10), 1);
        assert!(!t.may_hold_page(&c, page, P));
        assert!(t.record_mapping(&c, page + 4 * P, 2 * P, 15));
        let s = t.stats(&c);
        assert_eq!(s.live_pages, 1);
        assert_eq!((s.lifespan.count, s.lifespan.max), (1, 7));
        assert_eq!((s.deathspan.count, s.deathspan.min), (1, 5));
        assert_eq!(s.resurrects, 1);
    }

    #[test]
    fn other_shapes_are_not_pages() {
        let t = HeapPageTable::new();
        let th = cx();
        let c = th.cx();
        assert!(!t.record_mapping(&c, 0x10_0000, 4096, 0));
        assert!(t.record_mapping(&c, 0x10_0000, 2 * P, 0));
        // once the size is known, another candidate size is ignored
        assert!(!t.record_mapping(&c, 0x20_0000, 128 * 1024, 0));
        assert_eq!(t.stats(&c).live_pages, 1);
    }

    #[test]
    fn a_partial_unmap_does_not_kill_a_page() {
        let t = HeapPageTable::new();
        let th = cx();
        let c = th.cx();
        t.record_mapping(&c, 0x10_0000, 2 * P, 0);
        let page = HeapPageTable::page_in_mapping(0x10_0000, P);
        assert_eq!(t.record_unmap(&c, page, 4096, 1), 0);
        assert_eq!(t.stats(&c).live_pages, 1);
    }
}
