//! Ruby file names, stored once each. Every `file:line` location refers to
//! its file by a [`FileId`], so a long eval'd name costs its bytes once,
//! not once per line.
//!
//! Names live in an append-only arena the profiler maps itself and never
//! move, so readers (and the exit dump) need no lock: an id is published
//! only after its bytes are written.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use hashbrown::HashTable;

use crate::hash::hash_bytes;
use crate::lock::{LockCx, TableLock};
use crate::mem::{map_zeroed, ChunkedArray, ZeroInit};

/// A file name's number; 0 is never used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct FileId(pub u32);

const ENTRIES_PER_CHUNK: usize = 1024;
const ENTRY_CHUNKS: usize = 1024;
/// Distinct file names the table can hold.
pub const MAX_FILES: usize = ENTRIES_PER_CHUNK * ENTRY_CHUNKS - 1;
/// Arena pieces are this large; a longer name gets a mapping of its own.
const ARENA_PIECE: usize = 256 * 1024;

/// Where the bytes of one name are.
#[derive(Default)]
struct FileEntry {
    ptr: AtomicUsize,
    len: AtomicUsize,
    hash: AtomicUsize,
}

// SAFETY: atomics only.
unsafe impl ZeroInit for FileEntry {}

struct Index {
    ids: HashTable<u32>,
    /// Current arena piece and how much of it is used.
    piece: usize,
    used: usize,
    cap: usize,
}

pub struct FileNames {
    index: TableLock<Index>,
    entries: ChunkedArray<FileEntry, ENTRIES_PER_CHUNK, ENTRY_CHUNKS>,
    /// Ids handed out (ids 1..=count are valid).
    count: AtomicU32,
    /// Bytes of names stored, for the profiler's own memory report.
    bytes: AtomicUsize,
}

impl Default for FileNames {
    fn default() -> Self {
        Self::new()
    }
}

impl FileNames {
    pub const fn new() -> Self {
        FileNames {
            index: TableLock::new(Index {
                ids: HashTable::new(),
                piece: 0,
                used: 0,
                cap: 0,
            }),
            entries: ChunkedArray::new(),
            count: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The bytes of `id`, without a lock.
    pub fn get(&self, id: FileId) -> Option<&[u8]> {
        if id.0 == 0 || id.0 > self.count.load(Ordering::Acquire) {
            return None;
        }
        let e = self.entries.get(id.0 as usize)?;
        let (ptr, len) = (e.ptr.load(Ordering::Relaxed), e.len.load(Ordering::Relaxed));
        // SAFETY: published entries point at arena bytes that never move
        // and are never freed.
        Some(unsafe { core::slice::from_raw_parts(ptr as *const u8, len) })
    }

    /// Bytes of names stored so far.
    pub fn stored_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The id of `name`, storing it on first sight. None when the lock is
    /// re-entered (a signal handler) or no memory could be had.
    pub fn intern(&self, cx: &LockCx<'_>, name: &[u8]) -> Option<FileId> {
        let hash = hash_bytes(name);
        let mut guard = self.index.lock(cx)?;
        let index = &mut *guard;
        if let Some(&id) = index
            .ids
            .find(hash, |&id| self.get(FileId(id)) == Some(name))
        {
            return Some(FileId(id));
        }
        let id = self.count.load(Ordering::Relaxed) + 1;
        if id as usize > MAX_FILES {
            return None;
        }
        let entry = self.entries.get_or_map(id as usize)?;
        let entries = &self.entries;
        index
            .ids
            .try_reserve(1, |&other| {
                entries
                    .get(other as usize)
                    .map_or(0, |e| e.hash.load(Ordering::Relaxed) as u64)
            })
            .ok()?;
        let stored = Self::store(index, name)?;
        entry.ptr.store(stored as usize, Ordering::Relaxed);
        entry.len.store(name.len(), Ordering::Relaxed);
        entry.hash.store(hash as usize, Ordering::Relaxed);
        index
            .ids
            .insert_unique(hash, id, |_| unreachable!("capacity was reserved"));
        self.count.store(id, Ordering::Release);
        self.bytes.fetch_add(name.len(), Ordering::Relaxed);
        Some(FileId(id))
    }

    /// The id of `name` if it was ever stored.
    pub fn lookup(&self, cx: &LockCx<'_>, name: &[u8]) -> Option<FileId> {
        let hash = hash_bytes(name);
        self.index.read(cx, |index| {
            index
                .ids
                .find(hash, |&id| self.get(FileId(id)) == Some(name))
                .map(|&id| FileId(id))
        })
    }

    /// Copies `name` into the arena; its address.
    fn store(index: &mut Index, name: &[u8]) -> Option<*const u8> {
        if name.is_empty() {
            return Some(NonNull::<u8>::dangling().as_ptr());
        }
        if name.len() > ARENA_PIECE / 4 {
            let p = map_zeroed(name.len())?.as_ptr();
            // SAFETY: a fresh mapping of name.len() bytes.
            unsafe { core::ptr::copy_nonoverlapping(name.as_ptr(), p, name.len()) };
            return Some(p);
        }
        if index.cap - index.used < name.len() {
            index.piece = map_zeroed(ARENA_PIECE)?.as_ptr() as usize;
            index.used = 0;
            index.cap = ARENA_PIECE;
        }
        let p = (index.piece + index.used) as *mut u8;
        // SAFETY: [used, used + len) of the current piece is free.
        unsafe { core::ptr::copy_nonoverlapping(name.as_ptr(), p, name.len()) };
        index.used += name.len();
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cx;

    #[test]
    fn names_are_stored_once_and_read_back() {
        let f = FileNames::new();
        let c = cx();
        let a = f.intern(&c.cx(), b"/app/a.rb").unwrap();
        let b = f.intern(&c.cx(), b"/app/b.rb").unwrap();
        assert_ne!(a, b);
        assert_eq!(f.intern(&c.cx(), b"/app/a.rb"), Some(a));
        assert_eq!(f.get(a), Some(&b"/app/a.rb"[..]));
        assert_eq!(f.lookup(&c.cx(), b"/app/b.rb"), Some(b));
        assert_eq!(f.lookup(&c.cx(), b"/app/c.rb"), None);
        assert_eq!(f.get(FileId(0)), None);
        assert_eq!(f.get(FileId(99)), None);
        assert_eq!(f.stored_bytes(), 18);
    }

    #[test]
    fn long_and_empty_names_and_many_names() {
        let f = FileNames::new();
        let c = cx();
        let long = vec![b'x'; 200_000];
        let l = f.intern(&c.cx(), &long).unwrap();
        let e = f.intern(&c.cx(), b"").unwrap();
        assert_eq!(f.get(l).unwrap().len(), 200_000);
        assert_eq!(f.get(e), Some(&b""[..]));
        let ids: Vec<_> = (0..5000)
            .map(|i| f.intern(&c.cx(), format!("eval{i}.rb").as_bytes()).unwrap())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(f.get(*id).unwrap(), format!("eval{i}.rb").as_bytes());
        }
        assert_eq!(f.get(l).unwrap().len(), 200_000);
    }
}
