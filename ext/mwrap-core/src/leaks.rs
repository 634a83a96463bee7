//! Leaked or still referenced: a conservative mark of the live blocks, as
//! LeakSanitizer and chap do it.
//!
//! A block is *anchored* when some word of a root, or of an anchored
//! block, holds an address inside it (anywhere from its first byte to its
//! last, not only its start); every other live block is *leaked*: no
//! pointer reaches it. Words are read at pointer alignment and taken at
//! face value, so a tagged value (a Ruby Fixnum is `n * 2 + 1`) is not a
//! pointer, and an integer that happens to look like one anchors a block
//! (the scan can miss a leak, never invent one).
//!
//! [`Marker`] knows nothing of processes: it is given the blocks, sorted
//! by address, and the words of the roots; the preload's `leak_scan`
//! finds those in a snapshot of the process.

/// One live block as the scan sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanBlock {
    /// The program's bytes: `start..end`.
    pub start: usize,
    pub end: usize,
    /// Where the block's bookkeeping (our header) begins: `raw..end` is
    /// left out of the roots.
    pub raw: usize,
    /// The site it is charged to.
    pub site: u32,
    /// Anchored (reached from a root).
    pub marked: u32,
}

impl ScanBlock {
    /// Whether `word` points into the block (a zero-byte block is pointed
    /// to by its start).
    #[inline]
    fn holds(&self, word: usize) -> bool {
        word >= self.start && (word < self.end || word == self.start)
    }
}

/// One 4 KiB page of the address space that blocks lie in: the blocks
/// (a run of the sorted array) that overlap it. Most words of a process
/// are not pointers into tracked blocks; a missing page answers that in
/// one probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageSlot {
    /// The page number plus one; 0 is an empty slot.
    page: usize,
    first: u32,
    count: u32,
}

const PAGE_SHIFT: u32 = 12;

/// The pages `block` overlaps (a zero-byte block, the page of its start).
fn pages_of(b: &ScanBlock) -> core::ops::RangeInclusive<usize> {
    (b.start >> PAGE_SHIFT)..=(b.end.max(b.start + 1) - 1) >> PAGE_SHIFT
}

/// How many [`PageSlot`]s [`Marker::new`] needs for `blocks` (sorted): a
/// power of two, at least twice the pages they overlap.
pub fn page_slots_needed(blocks: &[ScanBlock]) -> usize {
    let mut pages = 0usize;
    let mut last = None;
    for b in blocks {
        let r = pages_of(b);
        let (lo, hi) = (*r.start(), *r.end());
        let fresh_from = match last {
            Some(l) if l >= lo => l + 1,
            _ => lo,
        };
        pages += hi.saturating_sub(fresh_from) + usize::from(hi >= fresh_from);
        last = Some(hi.max(last.unwrap_or(0)));
    }
    (pages * 2).max(2).next_power_of_two()
}

/// Marks the blocks reachable from the roots it is shown.
pub struct Marker<'a> {
    /// Sorted by `start`, non-overlapping.
    blocks: &'a mut [ScanBlock],
    /// Open addressing over page numbers; its length a power of two.
    slots: &'a mut [PageSlot],
    slot_shift: u32,
    /// Indices of marked blocks whose words are still to be read; each
    /// block enters at most once, so `blocks.len()` slots are enough.
    pending: &'a mut [u32],
    pending_len: usize,
    /// Every block lies in `low..high`: a word outside is no pointer of ours.
    low: usize,
    high: usize,
    /// Words read so far.
    words: u64,
}

impl<'a> Marker<'a> {
    /// `blocks` must be sorted by `start` (see [`sort_blocks`]), `pending`
    /// at least as long, and `slots` (zeroed) as long as
    /// [`page_slots_needed`] says.
    pub fn new(
        blocks: &'a mut [ScanBlock],
        pending: &'a mut [u32],
        slots: &'a mut [PageSlot],
    ) -> Self {
        assert!(pending.len() >= blocks.len());
        assert!(slots.len().is_power_of_two() && slots.len() >= page_slots_needed(blocks));
        let low = blocks.first().map_or(usize::MAX, |b| b.start);
        let high = blocks
            .iter()
            .map(|b| b.end.max(b.start + 1))
            .max()
            .unwrap_or(0);
        let mut m = Marker {
            blocks,
            slot_shift: usize::BITS - slots.len().trailing_zeros(),
            slots,
            pending,
            pending_len: 0,
            low,
            high,
            words: 0,
        };
        for i in 0..m.blocks.len() {
            for page in pages_of(&m.blocks[i]) {
                let slot = m.slot_for(page);
                if slot.page == 0 {
                    *slot = PageSlot {
                        page: page + 1,
                        first: i as u32,
                        count: 1,
                    };
                } else {
                    // blocks come in address order: a page's run grows at its end
                    slot.count = i as u32 + 1 - slot.first;
                }
            }
        }
        m
    }

    #[inline]
    fn slot_index(&self, page: usize) -> usize {
        if self.slot_shift >= usize::BITS {
            return 0;
        }
        (page.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> self.slot_shift
    }

    /// The slot of `page`, or the empty one where it would go.
    fn slot_for(&mut self, page: usize) -> &mut PageSlot {
        let mask = self.slots.len() - 1;
        let mut i = self.slot_index(page);
        while self.slots[i].page != 0 && self.slots[i].page != page + 1 {
            i = (i + 1) & mask;
        }
        &mut self.slots[i]
    }

    /// The block `word` points into, if any.
    #[inline]
    pub fn find(&self, word: usize) -> Option<usize> {
        if word < self.low || word >= self.high {
            return None;
        }
        let page = word >> PAGE_SHIFT;
        let mask = self.slots.len() - 1;
        let mut i = self.slot_index(page);
        loop {
            let slot = self.slots[i];
            if slot.page == 0 {
                return None;
            }
            if slot.page == page + 1 {
                let first = slot.first as usize;
                let run = &self.blocks[first..first + slot.count as usize];
                let j = run.partition_point(|b| b.start <= word).checked_sub(1)?;
                return run[j].holds(word).then_some(first + j);
            }
            i = (i + 1) & mask;
        }
    }

    /// Reads `words` as a root (or as an anchored block's contents).
    #[inline]
    pub fn scan_words(&mut self, words: &[usize]) {
        self.words += words.len() as u64;
        for &w in words {
            if let Some(i) = self.find(w) {
                let b = &mut self.blocks[i];
                if b.marked == 0 {
                    b.marked = 1;
                    self.pending[self.pending_len] = i as u32;
                    self.pending_len += 1;
                }
            }
        }
    }

    /// The first stretch of `from..end` that no block's bookkeeping or
    /// bytes cover: what of a root mapping is read as roots (a block's own
    /// words are read only once it is anchored).
    pub fn next_gap(&self, from: usize, end: usize) -> Option<(usize, usize)> {
        let mut at = from;
        let mut i = self.blocks.partition_point(|b| b.end <= at);
        while at < end {
            match self.blocks.get(i) {
                Some(b) if b.raw <= at => {
                    at = at.max(b.end.max(b.start + 1));
                    i += 1;
                }
                Some(b) => return Some((at, b.raw.min(end))),
                None => return Some((at, end)),
            }
        }
        None
    }

    /// Reads every anchored block not yet read, and the blocks they
    /// anchor in turn, until none is left.
    ///
    /// # Safety
    /// Every block's `start..end` must be readable memory of this process.
    pub unsafe fn drain(&mut self) {
        while self.pending_len > 0 {
            self.pending_len -= 1;
            let b = self.blocks[self.pending[self.pending_len] as usize];
            let start = b.start.next_multiple_of(core::mem::align_of::<usize>());
            let n = b.end.saturating_sub(start) / core::mem::size_of::<usize>();
            // SAFETY: per this function's contract; `start` is aligned.
            let words = unsafe { core::slice::from_raw_parts(start as *const usize, n) };
            self.scan_words(words);
        }
    }

    /// Words read so far (roots and blocks).
    pub fn words_read(&self) -> u64 {
        self.words
    }

    /// The block whose bytes end at `at` (the one a gap starting at `at`
    /// follows), if any.
    pub fn block_ending_at(&self, at: usize) -> Option<&ScanBlock> {
        let i = self.blocks.partition_point(|b| b.end < at);
        self.blocks
            .get(i)
            .filter(|b| b.end.max(b.start + 1) == at || b.end == at)
    }

    /// The block whose bookkeeping starts at `at`, if any.
    pub fn block_at_raw(&self, at: usize) -> Option<&ScanBlock> {
        let i = self.blocks.partition_point(|b| b.raw < at);
        self.blocks.get(i).filter(|b| b.raw == at)
    }

    /// The blocks, marked or not.
    pub fn blocks(&self) -> &[ScanBlock] {
        self.blocks
    }
}

/// glibc's malloc chunk: `[prev_size][size | flags][user bytes …]`, the
/// user bytes 16 bytes in; a chunk is in use when the chunk after it has
/// `PREV_INUSE` set.
const CHUNK_HEADER: usize = 16;
const PREV_INUSE: usize = 1;
const IS_MMAPPED: usize = 2;
const CHUNK_FLAGS: usize = 7;

/// The in-use chunks of glibc's heap in a gap that follows a tracked
/// block, so that a scan reads those (blocks the profiler does not track)
/// and skips the free ones: a free chunk holds only stale words, pointers
/// of what lived there before, which would anchor whatever now lies where
/// they point. (Chunks in glibc's per-thread cache and fast bins look in
/// use, and are read.)
///
/// `prev_raw` is the tracked block's raw address (glibc's user pointer of
/// its chunk); the walk starts at the chunk after it and ends at
/// `next_raw`'s chunk (the next tracked block), or, when `next_raw` is
/// None, at the heap's top chunk, where `read` finds no chunk after.
/// `read(address)` reads a word of the heap, None outside it. `in_use(a,
/// b)` is called for each in-use chunk's bytes. Err(address) when the
/// walk does not add up there (a layout it does not know, not glibc's
/// heap): the caller reads from that address on as roots.
pub fn glibc_in_use_chunks(
    prev_raw: usize,
    gap_end: usize,
    next_raw: Option<usize>,
    read: impl Fn(usize) -> Option<usize>,
    mut in_use: impl FnMut(usize, usize),
) -> Result<(), usize> {
    let fail = |at: usize| Err(at);
    let Some(prev_size) = prev_raw.checked_sub(8).and_then(&read) else {
        return fail(prev_raw);
    };
    if prev_size & IS_MMAPPED != 0 {
        return fail(prev_raw);
    }
    let mut chunk = prev_raw - CHUNK_HEADER + (prev_size & !CHUNK_FLAGS);
    let stop = next_raw.map(|r| r - CHUNK_HEADER);
    loop {
        if Some(chunk) == stop {
            return Ok(());
        }
        if chunk + CHUNK_HEADER > gap_end {
            return fail(chunk.min(gap_end));
        }
        let Some(size) = read(chunk + 8) else {
            return fail(chunk);
        };
        let size = size & !CHUNK_FLAGS;
        if size < 2 * CHUNK_HEADER || !size.is_multiple_of(CHUNK_HEADER) || size > usize::MAX / 4 {
            return fail(chunk);
        }
        let next = chunk + size;
        if stop.is_some_and(|s| next > s) {
            return fail(chunk);
        }
        match read(next + 8) {
            // the top chunk: nothing of the program's lies in it
            None if stop.is_none() => return Ok(()),
            None => return fail(chunk),
            Some(after) => {
                if after & PREV_INUSE != 0 {
                    // in use: its bytes run into the next chunk's prev_size
                    in_use(chunk + CHUNK_HEADER, (next + 8).min(gap_end));
                }
            }
        }
        chunk = next;
    }
}

/// Sorts blocks by address, as [`Marker::new`] needs them (no allocation).
pub fn sort_blocks(blocks: &mut [ScanBlock]) {
    blocks.sort_unstable_by_key(|b| b.start);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of `n` words in one arena, so their order is known.
    struct Arena {
        words: Vec<usize>,
    }

    impl Arena {
        fn new(n: usize) -> Self {
            Arena { words: vec![0; n] }
        }

        fn addr(&self, word: usize) -> usize {
            &self.words[word] as *const usize as usize
        }

        /// Block `i` of `per` words, with one word of bookkeeping before it.
        fn block(&self, i: usize, per: usize, site: u32) -> ScanBlock {
            let first = i * (per + 1) + 1;
            ScanBlock {
                start: self.addr(first),
                end: self.addr(first) + per * 8,
                raw: self.addr(first - 1),
                site,
                marked: 0,
            }
        }
    }

    fn slots(blocks: &[ScanBlock]) -> Vec<PageSlot> {
        vec![PageSlot::default(); page_slots_needed(blocks)]
    }

    fn marked(m: &Marker<'_>) -> Vec<u32> {
        m.blocks().iter().map(|b| b.marked).collect()
    }

    #[test]
    fn roots_anchor_blocks_transitively_through_interior_pointers() {
        let mut arena = Arena::new(64);
        let per = 3;
        let mut blocks: Vec<_> = (0..5).map(|i| arena.block(i, per, i as u32)).collect();
        // block 0 holds a pointer into the middle of block 2; block 2 to
        // the last byte of block 3; block 4 points to 1 but nothing to 4.
        arena.words[1] = blocks[2].start + 9;
        arena.words[2 * 4 + 1] = blocks[3].end - 1;
        arena.words[4 * 4 + 1] = blocks[1].start;
        let mut pending = vec![0; blocks.len()];
        let roots = [0usize, blocks[0].start, 12345, blocks[4].end];
        let mut slots = slots(&blocks);
        let mut m = Marker::new(&mut blocks, &mut pending, &mut slots);
        m.scan_words(&roots);
        // SAFETY: the blocks lie in `arena`.
        unsafe { m.drain() };
        assert_eq!(marked(&m), vec![1, 0, 1, 1, 0]);
        assert_eq!(m.words_read(), 4 + 3 * per as u64);
    }

    #[test]
    fn tagged_integers_and_the_end_address_are_not_pointers() {
        let arena = Arena::new(16);
        let mut blocks = vec![arena.block(0, 2, 1), arena.block(1, 2, 2)];
        let mut pending = vec![0; 2];
        let fixnum = blocks[0].start * 2 + 1;
        let past_end = blocks[1].end;
        let mut slots = slots(&blocks);
        let mut m = Marker::new(&mut blocks, &mut pending, &mut slots);
        m.scan_words(&[fixnum, past_end, usize::MAX]);
        assert_eq!(marked(&m), vec![0, 0]);
    }

    #[test]
    fn a_zero_byte_block_is_anchored_by_its_start() {
        let arena = Arena::new(8);
        let mut b = arena.block(0, 0, 1);
        b.end = b.start;
        let start = b.start;
        let mut blocks = vec![b];
        let mut pending = vec![0; 1];
        let mut slots = slots(&blocks);
        let mut m = Marker::new(&mut blocks, &mut pending, &mut slots);
        m.scan_words(&[start]);
        assert_eq!(marked(&m), vec![1]);
    }

    #[test]
    fn cycles_are_read_once() {
        let mut arena = Arena::new(16);
        let mut blocks = vec![arena.block(0, 1, 1), arena.block(1, 1, 2)];
        arena.words[1] = blocks[1].start;
        arena.words[3] = blocks[0].start;
        let mut pending = vec![0; 2];
        let root = blocks[0].start;
        let mut slots = slots(&blocks);
        let mut m = Marker::new(&mut blocks, &mut pending, &mut slots);
        m.scan_words(&[root, root]);
        // SAFETY: the blocks lie in `arena`.
        unsafe { m.drain() };
        assert_eq!(marked(&m), vec![1, 1]);
        assert_eq!(m.words_read(), 2 + 2);
    }

    #[test]
    fn gaps_leave_out_each_block_with_its_bookkeeping() {
        let arena = Arena::new(32);
        let mut blocks: Vec<_> = (0..3).map(|i| arena.block(i, 2, 1)).collect();
        let mut pending = vec![0; 3];
        let (lo, hi) = (arena.addr(0), arena.addr(31));
        let mut slots = slots(&blocks);
        let m = Marker::new(&mut blocks, &mut pending, &mut slots);
        let gaps = |from: usize, end: usize| {
            let mut out = Vec::new();
            let mut at = from;
            while let Some((a, b)) = m.next_gap(at, end) {
                out.push((a, b));
                at = b;
            }
            out
        };
        let b = m.blocks();
        // the blocks (each with its one word of bookkeeping) are adjacent
        assert_eq!(gaps(lo, hi), vec![(b[2].end, hi)]);
        assert_eq!(gaps(b[1].start + 8, hi), vec![(b[2].end, hi)]);
        assert_eq!(gaps(lo - 64, b[0].raw + 8), vec![(lo - 64, lo)]);
        assert_eq!(gaps(b[0].start, b[0].end), vec![]);
    }

    #[test]
    fn gaps_between_blocks_are_read() {
        let arena = Arena::new(64);
        // every other block: gaps of 3 words between them
        let mut blocks: Vec<_> = (0..4).step_by(2).map(|i| arena.block(i, 2, 1)).collect();
        let mut pending = vec![0; 2];
        let mut slots = slots(&blocks);
        let m = Marker::new(&mut blocks, &mut pending, &mut slots);
        let b = m.blocks();
        let (lo, hi) = (arena.addr(0), arena.addr(20));
        assert_eq!(m.next_gap(lo, hi), Some((b[0].end, b[1].raw)));
        assert_eq!(m.next_gap(b[1].raw, hi), Some((b[1].end, hi)));
    }

    #[test]
    fn pages_shared_by_many_blocks_and_blocks_over_many_pages() {
        // blocks of 3 words, many per page; then one block of 3 pages
        let mut words = vec![0usize; 4 * 512 + 3 * 512 + 64];
        let base = (words.as_mut_ptr() as usize).next_multiple_of(4096);
        let at = |w: usize| base + w * 8;
        let mut blocks: Vec<_> = (0..600)
            .map(|i| ScanBlock {
                start: at(i * 4 + 1),
                end: at(i * 4 + 4),
                raw: at(i * 4),
                site: 1,
                marked: 0,
            })
            .collect();
        blocks.push(ScanBlock {
            start: at(2560),
            end: at(2560 + 3 * 512),
            raw: at(2559),
            site: 2,
            marked: 0,
        });
        let mut pending = vec![0; blocks.len()];
        let mut slots = slots(&blocks);
        assert!(slots.len() >= 2 * (3 + 3));
        let m = Marker::new(&mut blocks, &mut pending, &mut slots);
        for i in [0usize, 1, 127, 128, 300, 599] {
            assert_eq!(m.find(at(i * 4 + 1)), Some(i));
            assert_eq!(m.find(at(i * 4 + 3) + 7), Some(i));
            assert_eq!(m.find(at(i * 4)), None);
        }
        for w in [2560, 2560 + 700, 2560 + 3 * 512 - 1] {
            assert_eq!(m.find(at(w)), Some(600));
        }
        assert_eq!(m.find(at(2560 + 3 * 512)), None);
        assert_eq!(m.find(at(2559)), None);
    }

    /// A fake glibc heap: chunks of the given sizes (bytes) and in-use
    /// flags, laid out from a 16-aligned base; returns (base, words, the
    /// user pointer of each chunk).
    fn fake_heap(chunks: &[(usize, bool)], top: usize) -> (Vec<usize>, usize, Vec<usize>) {
        let total: usize = chunks.iter().map(|c| c.0).sum::<usize>() + top + 64;
        let mut words = vec![0usize; total / 8 + 4];
        let base = (words.as_ptr() as usize).next_multiple_of(16);
        let off = (base - words.as_ptr() as usize) / 8;
        let mut at = 0;
        let mut users = Vec::new();
        let mut prev_in_use = true;
        for &(size, used) in chunks.iter().chain([(top, true)].iter()) {
            words[off + (at + 8) / 8] = size | usize::from(prev_in_use);
            users.push(base + at + 16);
            prev_in_use = used;
            at += size;
        }
        (words, base, users)
    }

    #[test]
    fn glibc_walk_reads_in_use_chunks_and_skips_free_ones() {
        // tracked, foreign (in use), free, foreign, tracked, then top
        let layout = [(64, true), (48, true), (96, false), (32, true), (64, true)];
        let (words, base, users) = fake_heap(&layout, 256);
        let end = base + 64 + 48 + 96 + 32 + 64 + 256;
        let origin = words.as_ptr() as usize;
        let read = |a: usize| (a >= base && a + 8 <= end).then(|| words[(a - origin) / 8]);
        let mut seen = Vec::new();
        let r = glibc_in_use_chunks(users[0], users[4], Some(users[4]), read, |a, b| {
            seen.push((a, b))
        });
        assert_eq!(r, Ok(()));
        assert_eq!(
            seen,
            vec![(users[1], users[2] - 8), (users[3], users[4] - 8)]
        );
        // after the last tracked block: the top chunk is skipped
        seen.clear();
        let r = glibc_in_use_chunks(users[4], end, None, read, |a, b| seen.push((a, b)));
        assert_eq!((r, seen.len()), (Ok(()), 0));
        // a walk that does not land on the next tracked block fails there
        seen.clear();
        let r = glibc_in_use_chunks(users[0], users[4], Some(users[4] + 16), read, |a, b| {
            seen.push((a, b))
        });
        assert!(r.is_err());
        // a broken size field: the walk stops at that chunk
        let (mut words, base, users) = fake_heap(&layout, 256);
        let origin = words.as_ptr() as usize;
        let end = base + 64 + 48 + 96 + 32 + 64 + 256;
        words[(users[2] - 8 - origin) / 8] = 12345;
        let read = |a: usize| (a >= base && a + 8 <= end).then(|| words[(a - origin) / 8]);
        let r = glibc_in_use_chunks(users[0], users[4], Some(users[4]), read, |_, _| {});
        assert_eq!(r, Err(users[2] - 16));
    }

    #[test]
    fn sorting_orders_by_address() {
        let arena = Arena::new(32);
        let mut blocks: Vec<_> = (0..4).rev().map(|i| arena.block(i, 2, i as u32)).collect();
        sort_blocks(&mut blocks);
        assert!(blocks.windows(2).all(|w| w[0].start < w[1].start));
        let mut pending = vec![0; 4];
        let mut slots = slots(&blocks);
        let m = Marker::new(&mut blocks, &mut pending, &mut slots);
        assert_eq!(m.find(m.blocks()[2].start + 15), Some(2));
        assert_eq!(m.find(m.blocks()[2].raw), None);
    }
}
