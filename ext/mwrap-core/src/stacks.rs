//! Call stacks, stored once each. A stack is the native return addresses
//! (`MWRAP=bt:N`) and the Ruby frames (`MWRAP=ruby_bt:N`) of one
//! allocation, innermost first. Sites keyed by (location, stack) refer to
//! it by [`StackId`], so a stack that thousands of allocations share costs
//! its frames once.
//!
//! Frames live in an append-only arena of words the profiler maps itself
//! and never moves, so readers (the exit dump included) and the hooks'
//! cache checks need no lock: an id is published only after its frames and
//! entry are written. Interning takes the index lock.
//!
//! Memory per distinct stack: 8 bytes per frame, a 32-byte entry and about
//! 5 bytes of index (plus the site it keys, see `sites`).

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use hashbrown::HashTable;

use crate::files::FileId;
use crate::hash::mix;
use crate::lock::{LockCx, TableLock};
use crate::mem::{ChunkedArray, ZeroInit};

/// Most frames of either kind one stack holds (the `bt`/`ruby_bt` limit).
pub const MAX_FRAMES: usize = 64;

/// A stack's number; 0 is never used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct StackId(pub u32);

/// One Ruby frame: the file (as Ruby reports it) and the line, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RubyFrame(pub u64);

impl RubyFrame {
    pub const fn new(file: FileId, line: u32) -> Self {
        RubyFrame(((file.0 as u64) << 32) | line as u64)
    }

    pub const fn file(self) -> FileId {
        FileId((self.0 >> 32) as u32)
    }

    pub const fn line(self) -> u32 {
        self.0 as u32
    }
}

/// The frames of one stack, innermost first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stack<'a> {
    /// Return addresses, the caller of `malloc` first.
    pub native: &'a [u64],
    pub ruby: &'a [RubyFrame],
}

impl Stack<'_> {
    pub fn is_empty(&self) -> bool {
        self.native.is_empty() && self.ruby.is_empty()
    }

    /// The hash the table (and the hooks' caches) key a stack by.
    pub fn hash(&self) -> u64 {
        let mut h = (self.native.len() as u64) << 8 | self.ruby.len() as u64;
        for &w in self.native {
            h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        for f in self.ruby {
            h = (h.rotate_left(5) ^ f.0).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        mix(h)
    }
}

/// A stored stack: where its frames are.
#[derive(Default)]
struct StackEntry {
    /// Word index of the first frame (native frames, then Ruby frames).
    start: AtomicUsize,
    /// `native_len << 8 | ruby_len`.
    lens: AtomicU32,
    /// The `dlclose` count when the stack was first seen: which loaded
    /// objects its addresses belonged to (see [`StoredStack::epoch`]).
    epoch: AtomicU32,
    hash: AtomicU64,
}

// SAFETY: atomics only.
unsafe impl ZeroInit for StackEntry {}

const WORDS_PER_CHUNK: usize = 64 * 1024;
const WORD_CHUNKS: usize = 512;
/// Frames the arena holds at most (256 MiB of words): past it, new stacks
/// are not stored and their allocations go to the location without one.
pub const MAX_WORDS: usize = WORDS_PER_CHUNK * WORD_CHUNKS;

const ENTRIES_PER_CHUNK: usize = 1024;
const ENTRY_CHUNKS: usize = 1024;
/// Distinct stacks the table holds at most.
pub const MAX_STACKS: u32 = (ENTRIES_PER_CHUNK * ENTRY_CHUNKS - 1) as u32;

struct Index {
    ids: HashTable<u32>,
    /// The next free word of the arena.
    next_word: usize,
}

/// Every distinct stack of one process.
pub struct StackTable {
    index: TableLock<Index>,
    entries: ChunkedArray<StackEntry, ENTRIES_PER_CHUNK, ENTRY_CHUNKS>,
    words: ChunkedArray<AtomicU64, WORDS_PER_CHUNK, WORD_CHUNKS>,
    /// Ids handed out (ids 1..=count are valid).
    count: AtomicU32,
    /// Words of frames stored.
    words_used: AtomicUsize,
}

/// A stack as stored: its frames and the `dlclose` count it was seen at.
#[derive(Clone, Copy, Debug)]
pub struct StoredStack<'a> {
    pub native: &'a [AtomicU64],
    pub ruby: &'a [AtomicU64],
    pub epoch: u32,
}

impl StoredStack<'_> {
    /// The native frames, innermost first.
    pub fn native(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.native.iter().map(|w| w.load(Ordering::Relaxed))
    }

    /// The Ruby frames, innermost first.
    pub fn ruby(&self) -> impl ExactSizeIterator<Item = RubyFrame> + '_ {
        self.ruby
            .iter()
            .map(|w| RubyFrame(w.load(Ordering::Relaxed)))
    }

    /// Whether these are the frames of `stack`.
    pub fn is(&self, stack: &Stack<'_>) -> bool {
        self.native.len() == stack.native.len()
            && self.ruby.len() == stack.ruby.len()
            && self.native().eq(stack.native.iter().copied())
            && self.ruby().eq(stack.ruby.iter().copied())
    }
}

impl Default for StackTable {
    fn default() -> Self {
        Self::new()
    }
}

impl StackTable {
    pub const fn new() -> Self {
        StackTable {
            index: TableLock::new(Index {
                ids: HashTable::new(),
                next_word: 0,
            }),
            entries: ChunkedArray::new(),
            words: ChunkedArray::new(),
            count: AtomicU32::new(0),
            words_used: AtomicUsize::new(0),
        }
    }

    /// Stacks stored so far.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// Words of frames stored so far (for the profiler's own memory).
    pub fn stored_words(&self) -> usize {
        self.words_used.load(Ordering::Relaxed)
    }

    /// The frames of `id`, without a lock.
    #[inline]
    pub fn get(&self, id: StackId) -> Option<StoredStack<'_>> {
        if id.0 == 0 || id.0 > self.count() {
            return None;
        }
        let e = self.entries.get(id.0 as usize)?;
        let start = e.start.load(Ordering::Relaxed);
        let lens = e.lens.load(Ordering::Relaxed);
        let (native, ruby) = ((lens >> 8) as usize, (lens & 0xff) as usize);
        let words = self.words_at(start, native + ruby)?;
        Some(StoredStack {
            native: &words[..native],
            ruby: &words[native..],
            epoch: e.epoch.load(Ordering::Relaxed),
        })
    }

    /// The `len` words from `start` (never across a chunk: see `intern`).
    fn words_at(&self, start: usize, len: usize) -> Option<&[AtomicU64]> {
        if len == 0 {
            return Some(&[]);
        }
        let first = self.words.get(start)?;
        if start % WORDS_PER_CHUNK + len > WORDS_PER_CHUNK {
            return None;
        }
        // SAFETY: `len` words from `start` lie in one published chunk of
        // zero-initialised words that never moves (checked just above).
        Some(unsafe { core::slice::from_raw_parts(first as *const AtomicU64, len) })
    }

    /// Whether `id` holds exactly `stack` (the hooks' cache check).
    #[inline]
    pub fn holds(&self, id: StackId, stack: &Stack<'_>) -> bool {
        self.get(id).is_some_and(|s| s.is(stack))
    }

    /// The id of `stack`, storing it on first sight (with `epoch`, the
    /// current `dlclose` count). None for an empty stack, when a signal
    /// handler re-enters the lock, or when the table or memory runs out:
    /// the caller then charges the location without a stack.
    pub fn intern(&self, cx: &LockCx<'_>, stack: &Stack<'_>, epoch: u32) -> Option<StackId> {
        if stack.is_empty() || stack.native.len() > MAX_FRAMES || stack.ruby.len() > MAX_FRAMES {
            return None;
        }
        let hash = stack.hash();
        let mut guard = self.index.lock(cx)?;
        let index = &mut *guard;
        if let Some(&id) = index.ids.find(hash, |&id| self.holds(StackId(id), stack)) {
            return Some(StackId(id));
        }
        let id = self.count.load(Ordering::Relaxed) + 1;
        if id > MAX_STACKS {
            return None;
        }
        let len = stack.native.len() + stack.ruby.len();
        let mut start = index.next_word;
        if start % WORDS_PER_CHUNK + len > WORDS_PER_CHUNK {
            start = (start / WORDS_PER_CHUNK + 1) * WORDS_PER_CHUNK;
        }
        if start + len > MAX_WORDS {
            return None;
        }
        let entry = self.entries.get_or_map(id as usize)?;
        self.words.get_or_map(start)?;
        let entries = &self.entries;
        index
            .ids
            .try_reserve(1, |&other| {
                entries
                    .get(other as usize)
                    .map_or(0, |e| e.hash.load(Ordering::Relaxed))
            })
            .ok()?;
        let words = self.words_at(start, len)?;
        let frames = stack.native.iter().copied();
        let frames = frames.chain(stack.ruby.iter().map(|f| f.0));
        for (slot, w) in words.iter().zip(frames) {
            slot.store(w, Ordering::Relaxed);
        }
        entry.start.store(start, Ordering::Relaxed);
        entry.lens.store(
            (stack.native.len() as u32) << 8 | stack.ruby.len() as u32,
            Ordering::Relaxed,
        );
        entry.epoch.store(epoch, Ordering::Relaxed);
        entry.hash.store(hash, Ordering::Relaxed);
        index
            .ids
            .insert_unique(hash, id, |_| unreachable!("capacity was reserved"));
        index.next_word = start + len;
        self.words_used.fetch_add(len, Ordering::Relaxed);
        self.count.store(id, Ordering::Release);
        Some(StackId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cx;

    fn ruby(file: u32, line: u32) -> RubyFrame {
        RubyFrame::new(FileId(file), line)
    }

    #[test]
    fn stacks_are_stored_once_and_read_back() {
        let t = StackTable::new();
        let th = cx();
        let c = th.cx();
        let a = Stack {
            native: &[0x10, 0x20, 0x30],
            ruby: &[ruby(1, 5), ruby(2, 9)],
        };
        let b = Stack {
            native: &[0x10, 0x20],
            ruby: &[ruby(1, 5), ruby(2, 9)],
        };
        let ruby_only = Stack {
            native: &[],
            ruby: &[ruby(1, 5)],
        };
        let ia = t.intern(&c, &a, 3).unwrap();
        let ib = t.intern(&c, &b, 4).unwrap();
        let ir = t.intern(&c, &ruby_only, 4).unwrap();
        assert_eq!((ia, ib, ir), (StackId(1), StackId(2), StackId(3)));
        assert_eq!(t.intern(&c, &a, 9), Some(ia));
        let s = t.get(ia).unwrap();
        assert_eq!(s.native().collect::<Vec<_>>(), vec![0x10, 0x20, 0x30]);
        assert_eq!(s.ruby().collect::<Vec<_>>(), vec![ruby(1, 5), ruby(2, 9)]);
        assert_eq!(s.epoch, 3, "the epoch of first sight");
        assert!(t.holds(ia, &a) && !t.holds(ib, &a) && t.holds(ir, &ruby_only));
        assert_eq!(t.get(ir).unwrap().native().len(), 0);
        assert_eq!(t.stored_words(), 5 + 4 + 1);
        assert!(t.get(StackId(0)).is_none() && t.get(StackId(4)).is_none());
        assert_eq!(ruby(7, 42).file(), FileId(7));
        assert_eq!(ruby(7, 42).line(), 42);
    }

    #[test]
    fn empty_and_oversized_stacks_are_not_stored() {
        let t = StackTable::new();
        let th = cx();
        let c = th.cx();
        assert_eq!(t.intern(&c, &Stack::default(), 0), None);
        let long = [1u64; MAX_FRAMES + 1];
        let s = Stack {
            native: &long,
            ruby: &[],
        };
        assert_eq!(t.intern(&c, &s, 0), None);
        assert_eq!(t.count(), 0);
    }

    #[test]
    fn a_stack_never_straddles_a_chunk() {
        let t = StackTable::new();
        let th = cx();
        let c = th.cx();
        // 64-frame stacks: 1024 of them fill a chunk exactly; one more with
        // a 1-word stack first makes the next 64-word one skip ahead.
        let mut frames = [0u64; MAX_FRAMES];
        for i in 0..1100u64 {
            frames[0] = i;
            let s = Stack {
                native: &frames,
                ruby: &[],
            };
            let id = t.intern(&c, &s, 0).unwrap();
            assert!(t.holds(id, &s));
        }
        let one = Stack {
            native: &[7],
            ruby: &[],
        };
        let i1 = t.intern(&c, &one, 0).unwrap();
        frames[0] = 5000;
        let s = Stack {
            native: &frames,
            ruby: &[],
        };
        let i2 = t.intern(&c, &s, 0).unwrap();
        assert!(t.holds(i1, &one) && t.holds(i2, &s));
        // all still readable
        for id in 1..=t.count() {
            assert!(t.get(StackId(id)).is_some());
        }
    }

    #[test]
    fn a_handler_inside_the_table_gets_none() {
        let t = StackTable::new();
        let th = cx();
        let c = th.cx();
        let other = TableLock::new(());
        let held = other.lock(&c).unwrap();
        let s = Stack {
            native: &[1],
            ruby: &[],
        };
        assert_eq!(t.intern(&c, &s, 0), None);
        drop(held);
        assert_eq!(t.intern(&c, &s, 0), Some(StackId(1)));
    }
}
