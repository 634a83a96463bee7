//! The read API: consistent copies of the tables, named and ordered the
//! one way every output shows them. The Ruby extension (through the ABI),
//! the exit dump and any future endpoint all read through here.

use crate::abi::{SiteFilter, SiteSnapshot, Totals};
use crate::files::FileNames;
use crate::format::{ruby_location, ByteWriter};
use crate::key::{SiteKey, NO_MEMORY_NAME, OVERFLOW_NAME};
use crate::live::LiveSet;
use crate::location::{candidates, Candidate};
use crate::lock::LockCx;
use crate::sites::{NoMemory, SiteTable};
use crate::stacks::{StackId, StackTable};

/// Names native return addresses (`dladdr` lives in the preload).
pub trait NativeNamer {
    /// Writes the printed (escaped) name of `address`, a location.
    fn name_native(&self, address: usize, out: &mut ByteWriter<'_>);

    /// Writes the printed (escaped) name of `address`, a frame of a stack
    /// first seen when `epoch` objects had been `dlclose`d (so that a
    /// frame of an object closed since is named after that object). By
    /// default, as a location.
    fn name_frame(&self, address: usize, epoch: u32, out: &mut ByteWriter<'_>) {
        let _ = epoch;
        self.name_native(address, out);
    }
}

/// Longest printed native name; longer ones are cut.
pub const MAX_NATIVE_NAME: usize = 4096;

/// Appends the printed name of `key`: escaped, as every output shows it.
pub fn name_key(
    key: SiteKey,
    files: &FileNames,
    native: &impl NativeNamer,
    out: &mut Vec<u8>,
) -> Result<(), NoMemory> {
    match key {
        SiteKey::Ruby { file, line } => {
            let file = files.get(file).unwrap_or(b"?");
            // escaping at most quadruples a byte; ':' and a u32's digits
            out.try_reserve(file.len() * 4 + 11).map_err(|_| NoMemory)?;
            ruby_location(out, file, line);
        }
        SiteKey::Native { address } => {
            let mut buf = [0u8; MAX_NATIVE_NAME];
            let mut w = ByteWriter::new(&mut buf);
            native.name_native(address, &mut w);
            out.try_reserve(w.len()).map_err(|_| NoMemory)?;
            out.extend_from_slice(w.as_bytes());
        }
        SiteKey::Overflow => push_fallible(out, OVERFLOW_NAME)?,
        SiteKey::NoMemory => push_fallible(out, NO_MEMORY_NAME)?,
        SiteKey::Unset | SiteKey::Stack { .. } => push_fallible(out, b"?")?,
    }
    Ok(())
}

fn push_fallible(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), NoMemory> {
    out.try_reserve(bytes.len()).map_err(|_| NoMemory)?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// One location in a [`SiteRows`].
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub snapshot: SiteSnapshot,
    pub key: SiteKey,
    name_start: usize,
    name_len: usize,
}

/// Named locations, largest total first, ties by name bytewise.
#[derive(Default)]
pub struct SiteRows {
    rows: Vec<Row>,
    names: Vec<u8>,
}

impl SiteRows {
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn name(&self, row: &Row) -> &[u8] {
        &self.names[row.name_start..row.name_start + row.name_len]
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn push(
        &mut self,
        snapshot: SiteSnapshot,
        key: SiteKey,
        files: &FileNames,
        native: &impl NativeNamer,
    ) -> Result<(), NoMemory> {
        self.rows.try_reserve(1).map_err(|_| NoMemory)?;
        let name_start = self.names.len();
        name_key(key, files, native, &mut self.names)?;
        self.rows.push(Row {
            snapshot,
            key,
            name_start,
            name_len: self.names.len() - name_start,
        });
        Ok(())
    }

    /// The order every output uses: total descending, then name bytewise.
    fn sort(&mut self) {
        let names = &self.names;
        let name = |r: &Row| &names[r.name_start..r.name_start + r.name_len];
        self.rows.sort_unstable_by(|a, b| {
            b.snapshot
                .total
                .cmp(&a.snapshot.total)
                .then_with(|| name(a).cmp(name(b)))
        });
    }
}

/// Whether `filter` selects a location with these counters.
pub fn selects(filter: &SiteFilter, s: &SiteSnapshot) -> bool {
    s.total > filter.min_total && (filter.use_min_live == 0 || s.live_bytes > filter.min_live_bytes)
}

/// Every location `filter` selects, named and in output order.
pub fn sites<L: LiveSet>(
    table: &SiteTable<L>,
    cx: &LockCx<'_>,
    filter: &SiteFilter,
    native: &impl NativeNamer,
) -> Result<SiteRows, NoMemory> {
    let mut out = SiteRows::default();
    for id in 1..=table.site_count() {
        let Some(snapshot) = table.snapshot(cx, id) else {
            continue;
        };
        if !selects(filter, &snapshot) {
            continue;
        }
        let Some(key) = table.key(id) else { continue };
        out.push(snapshot, key, table.files(), native)?;
    }
    out.sort();
    Ok(out)
}

/// One location by id.
pub fn site<L: LiveSet>(
    table: &SiteTable<L>,
    cx: &LockCx<'_>,
    id: u32,
    native: &impl NativeNamer,
) -> Result<Option<SiteRows>, NoMemory> {
    let (Some(snapshot), Some(key)) = (table.snapshot(cx, id), table.key(id)) else {
        return Ok(None);
    };
    let mut out = SiteRows::default();
    out.push(snapshot, key, table.files(), native)?;
    Ok(Some(out))
}

/// The id of the location a user-given name stands for (see
/// [`candidates`]), or None.
pub fn lookup<L: LiveSet>(table: &SiteTable<L>, cx: &LockCx<'_>, name: &[u8]) -> Option<u32> {
    candidates(name).into_iter().find_map(|c| {
        let key = match c {
            Candidate::Ruby { file, line } => SiteKey::Ruby {
                file: table.files().lookup(cx, &file)?,
                line,
            },
            Candidate::Native { address } => SiteKey::Native { address },
            Candidate::Overflow => SiteKey::Overflow,
            Candidate::NoMemory => SiteKey::NoMemory,
        };
        table.lookup(cx, key)
    })
}

/// One (location, stack) pair in a [`StackRows`]: the counters of what was
/// charged to the location with that stack (`stack` None: without one).
#[derive(Clone, Copy, Debug)]
pub struct StackRow {
    pub snapshot: SiteSnapshot,
    /// The location's site id and key.
    pub location: u32,
    pub key: SiteKey,
    pub stack: Option<StackId>,
    name: (usize, usize),
    /// Frame names: Ruby frames, then native frames, innermost first.
    frames: (usize, usize),
    pub ruby_frames: usize,
    pub native_frames: usize,
}

/// Named (location, stack) pairs, largest total first, ties by location
/// name, then by frames.
#[derive(Default)]
pub struct StackRows {
    rows: Vec<StackRow>,
    /// Printed names; frame `i` of a row is `frame_spans[row.frames.0 + i]`.
    names: Vec<u8>,
    frame_spans: Vec<(usize, usize)>,
}

impl StackRows {
    pub fn rows(&self) -> &[StackRow] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The printed name of the row's location.
    pub fn location_name(&self, row: &StackRow) -> &[u8] {
        &self.names[row.name.0..row.name.0 + row.name.1]
    }

    fn span(&self, (start, len): (usize, usize)) -> &[u8] {
        &self.names[start..start + len]
    }

    /// The printed Ruby frames (`path:line`), innermost first.
    pub fn ruby_frames(
        &self,
        row: &StackRow,
    ) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        let spans = &self.frame_spans[row.frames.0..row.frames.0 + row.ruby_frames];
        spans.iter().map(|&sp| self.span(sp))
    }

    /// The printed native frames, the caller of `malloc` first.
    pub fn native_frames(
        &self,
        row: &StackRow,
    ) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        let start = row.frames.0 + row.ruby_frames;
        let spans = &self.frame_spans[start..start + row.native_frames];
        spans.iter().map(|&sp| self.span(sp))
    }

    fn push_name(
        &mut self,
        f: impl FnOnce(&mut Vec<u8>) -> Result<(), NoMemory>,
    ) -> Result<(usize, usize), NoMemory> {
        let start = self.names.len();
        f(&mut self.names)?;
        Ok((start, self.names.len() - start))
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        snapshot: SiteSnapshot,
        location: u32,
        key: SiteKey,
        stack: Option<StackId>,
        name: (usize, usize),
        files: &FileNames,
        stacks: &StackTable,
        native: &impl NativeNamer,
    ) -> Result<(), NoMemory> {
        self.rows.try_reserve(1).map_err(|_| NoMemory)?;
        let first = self.frame_spans.len();
        let (mut ruby_frames, mut native_frames) = (0, 0);
        if let Some(stored) = stack.and_then(|id| stacks.get(id)) {
            self.frame_spans
                .try_reserve(stored.ruby.len() + stored.native.len())
                .map_err(|_| NoMemory)?;
            for f in stored.ruby() {
                let file = files.get(f.file()).unwrap_or(b"?");
                let span = self.push_name(|out| {
                    out.try_reserve(file.len() * 4 + 11).map_err(|_| NoMemory)?;
                    ruby_location(out, file, f.line());
                    Ok(())
                })?;
                self.frame_spans.push(span);
                ruby_frames += 1;
            }
            for address in stored.native() {
                let span = self.push_name(|out| {
                    let mut buf = [0u8; MAX_NATIVE_NAME];
                    let mut w = ByteWriter::new(&mut buf);
                    native.name_frame(address as usize, stored.epoch, &mut w);
                    push_fallible(out, w.as_bytes())
                })?;
                self.frame_spans.push(span);
                native_frames += 1;
            }
        }
        self.rows.push(StackRow {
            snapshot,
            location,
            key,
            stack,
            name,
            frames: (first, ruby_frames + native_frames),
            ruby_frames,
            native_frames,
        });
        Ok(())
    }

    /// Total descending, then location name, then frames (Ruby, then
    /// native), bytewise.
    fn sort(&mut self) {
        let mut rows = core::mem::take(&mut self.rows);
        rows.sort_unstable_by(|a, b| {
            b.snapshot
                .total
                .cmp(&a.snapshot.total)
                .then_with(|| self.location_name(a).cmp(self.location_name(b)))
                .then_with(|| {
                    let fa = self.ruby_frames(a).chain(self.native_frames(a));
                    fa.cmp(self.ruby_frames(b).chain(self.native_frames(b)))
                })
        });
        self.rows = rows;
    }
}

/// Every (location, stack) pair whose own counters `filter` selects — of
/// every location, or of `only` — named and in output order. A location's
/// allocations charged without a stack (with `bt`/`ruby_bt` off, or past
/// the table's capacity) are its row with no frames.
pub fn stacks<L: LiveSet>(
    table: &SiteTable<L>,
    stacks: &StackTable,
    cx: &LockCx<'_>,
    filter: &SiteFilter,
    only: Option<u32>,
    native: &impl NativeNamer,
) -> Result<StackRows, NoMemory> {
    let mut out = StackRows::default();
    let ids = match only {
        Some(id) => id..=id,
        None => 1..=table.site_count(),
    };
    for id in ids {
        let Some(key) = table.key(id).filter(|k| k.is_location()) else {
            continue;
        };
        let mut name = None;
        let mut add = |out: &mut StackRows, site: u32, stack: Option<StackId>| {
            let Some(snapshot) = table.own_snapshot(cx, site) else {
                return Ok(());
            };
            if !selects(filter, &snapshot) {
                return Ok(());
            }
            let name = match name {
                Some(n) => n,
                None => *name.insert(out.push_name(|o| name_key(key, table.files(), native, o))?),
            };
            out.push(
                snapshot,
                id,
                key,
                stack,
                name,
                table.files(),
                stacks,
                native,
            )
        };
        add(&mut out, id, None)?;
        for child in table.stacks_of(id) {
            if let Some(SiteKey::Stack { stack, .. }) = table.key(child) {
                add(&mut out, child, Some(stack))?;
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Byte totals over every location.
pub fn totals<L: LiveSet>(table: &SiteTable<L>, cx: &LockCx<'_>) -> Totals {
    let mut t = Totals::default();
    for id in 1..=table.site_count() {
        if let Some(s) = table.snapshot(cx, id) {
            t.allocated += s.total;
            t.freed += s.freed_bytes;
        }
    }
    t
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::native_location;
    use crate::testing::{cx, Blocks};

    /// Names every address as if no object held it.
    pub struct BareAddresses;

    impl NativeNamer for BareAddresses {
        fn name_native(&self, address: usize, out: &mut ByteWriter<'_>) {
            native_location(out, address, &Default::default());
        }
    }

    pub fn charge(
        t: &SiteTable,
        c: &LockCx<'_>,
        blocks: &mut Blocks,
        key: SiteKey,
        sizes: &[usize],
    ) -> u32 {
        let id = t.intern(c, key);
        for &size in sizes {
            // SAFETY: fresh test headers.
            unsafe { assert!(t.record_alloc(c, id, 0, blocks.header(size), 0)) };
        }
        id
    }

    #[test]
    fn rows_are_filtered_named_and_ordered_with_ties_by_name() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let b = t.files().intern(&c, b"b\n.rb").unwrap();
        let a = t.files().intern(&c, b"a.rb").unwrap();
        charge(
            &t,
            &c,
            &mut blocks,
            SiteKey::Ruby { file: b, line: 1 },
            &[100],
        );
        charge(
            &t,
            &c,
            &mut blocks,
            SiteKey::Ruby { file: a, line: 2 },
            &[60, 40],
        );
        charge(
            &t,
            &c,
            &mut blocks,
            SiteKey::Native { address: 0xbeef },
            &[500],
        );
        charge(&t, &c, &mut blocks, SiteKey::Native { address: 0x10 }, &[5]);
        let rows = sites(
            &t,
            &c,
            &SiteFilter {
                min_total: 5,
                ..Default::default()
            },
            &BareAddresses,
        )
        .unwrap();
        let names: Vec<&[u8]> = rows.rows().iter().map(|r| rows.name(r)).collect();
        assert_eq!(names, vec![&b"[0xbeef]"[..], b"a.rb:2", b"b\\n.rb:1"]);
        assert_eq!(rows.rows()[1].snapshot.allocations, 2);
        let live = SiteFilter {
            min_total: 0,
            min_live_bytes: 100,
            use_min_live: 1,
            _reserved: 0,
        };
        assert_eq!(sites(&t, &c, &live, &BareAddresses).unwrap().len(), 1);
        assert_eq!(totals(&t, &c).allocated, 705);
    }

    #[test]
    fn lookup_finds_printed_and_raw_names_and_buckets() {
        let t: SiteTable = SiteTable::with_capacity(5);
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let nl = t.files().intern(&c, b"a\nb.rb").unwrap();
        let hexy = t.files().intern(&c, b"0x10.rb").unwrap();
        let i1 = charge(
            &t,
            &c,
            &mut blocks,
            SiteKey::Ruby { file: nl, line: 3 },
            &[1],
        );
        let i2 = charge(
            &t,
            &c,
            &mut blocks,
            SiteKey::Ruby {
                file: hexy,
                line: 1,
            },
            &[1],
        );
        let i3 = charge(&t, &c, &mut blocks, SiteKey::Native { address: 0x10 }, &[1]);
        let over = charge(&t, &c, &mut blocks, SiteKey::Native { address: 0x20 }, &[1]);
        assert_eq!(lookup(&t, &c, b"a\\nb.rb:3"), Some(i1));
        assert_eq!(lookup(&t, &c, b"a\nb.rb:3"), Some(i1));
        assert_eq!(lookup(&t, &c, b"0x10.rb:1"), Some(i2));
        assert_eq!(lookup(&t, &c, b"0x10"), Some(i3));
        assert_eq!(lookup(&t, &c, b"lib.so(+0x1) [0x10]"), Some(i3));
        assert_eq!(lookup(&t, &c, OVERFLOW_NAME), Some(over));
        assert_eq!(
            lookup(&t, &c, NO_MEMORY_NAME),
            Some(crate::sites::NO_MEMORY_ID)
        );
        assert_eq!(lookup(&t, &c, b"nowhere.rb:1"), None);
        // every printed name finds its own site
        let rows = sites(&t, &c, &SiteFilter::default(), &BareAddresses).unwrap();
        for r in rows.rows() {
            assert_eq!(lookup(&t, &c, rows.name(r)), Some(r.snapshot.id));
        }
    }

    #[test]
    fn a_location_sums_its_stacks_and_each_stack_is_a_row() {
        use crate::stacks::{RubyFrame, Stack, StackTable};
        let t: SiteTable = SiteTable::new();
        let st = StackTable::new();
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let f = t.files().intern(&c, b"app.rb").unwrap();
        let loc = t.intern(&c, SiteKey::Ruby { file: f, line: 3 });
        let s1 = st
            .intern(
                &c,
                &Stack {
                    native: &[0x10, 0x20],
                    ruby: &[RubyFrame::new(f, 3), RubyFrame::new(f, 9)],
                },
                0,
            )
            .unwrap();
        let s2 = st
            .intern(
                &c,
                &Stack {
                    native: &[0x30],
                    ruby: &[],
                },
                0,
            )
            .unwrap();
        let c1 = t.intern_stack(&c, loc, s1).unwrap();
        let c2 = t.intern_stack(&c, loc, s2).unwrap();
        assert_eq!(t.intern_stack(&c, loc, s1), Some(c1));
        let h = [blocks.header(100), blocks.header(10), blocks.header(1)];
        // SAFETY: fresh test headers.
        unsafe {
            assert!(t.record_alloc(&c, c1, 0, h[0], 0));
            assert!(t.record_alloc(&c, c2, 0, h[1], 0));
            assert!(t.record_alloc(&c, loc, 0, h[2], 0));
            t.record_free(&c, h[1], 1);
        }
        // The location: everything, as if there were no stacks.
        let s = t.snapshot(&c, loc).unwrap();
        assert_eq!(
            (s.total, s.allocations, s.frees, s.live_bytes),
            (111, 3, 1, 101)
        );
        let mut live = Vec::new();
        t.live(&c, loc, 1, &mut live).unwrap();
        assert_eq!(live.len(), 2);
        // Stack sites are not locations.
        assert!(t.snapshot(&c, c1).is_none());
        let rows = sites(&t, &c, &SiteFilter::default(), &BareAddresses).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(totals(&t, &c).allocated, 111);
        // One row per pair, largest first; the stackless one has no frames.
        let rows = stacks(&t, &st, &c, &SiteFilter::default(), None, &BareAddresses).unwrap();
        type Frames<'a> = Vec<&'a [u8]>;
        let got: Vec<(u64, Frames, Frames)> = rows
            .rows()
            .iter()
            .map(|r| {
                assert_eq!(rows.location_name(r), b"app.rb:3");
                (
                    r.snapshot.total,
                    rows.ruby_frames(r).collect(),
                    rows.native_frames(r).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    100,
                    vec![&b"app.rb:3"[..], b"app.rb:9"],
                    vec![&b"[0x10]"[..], b"[0x20]"]
                ),
                (10, vec![], vec![&b"[0x30]"[..]]),
                (1, vec![], vec![]),
            ]
        );
        let only = stacks(
            &t,
            &st,
            &c,
            &SiteFilter {
                min_total: 5,
                ..Default::default()
            },
            Some(loc),
            &BareAddresses,
        )
        .unwrap();
        assert_eq!(only.len(), 2);
        assert_eq!(only.rows()[1].snapshot.live_bytes, 0);
    }

    #[test]
    fn a_full_table_charges_a_new_stack_to_its_location() {
        use crate::stacks::{Stack, StackTable};
        let t: SiteTable = SiteTable::with_capacity(4);
        let st = StackTable::new();
        let th = cx();
        let c = th.cx();
        let loc = t.intern(&c, SiteKey::Native { address: 1 }); // id 2
        let s1 = st
            .intern(
                &c,
                &Stack {
                    native: &[1],
                    ruby: &[],
                },
                0,
            )
            .unwrap();
        let s2 = st
            .intern(
                &c,
                &Stack {
                    native: &[2],
                    ruby: &[],
                },
                0,
            )
            .unwrap();
        assert_eq!(t.intern_stack(&c, loc, s1), Some(3));
        // Only the overflow slot is left: no site for another stack...
        assert_eq!(t.intern_stack(&c, loc, s2), None);
        // ...but a new location still goes to the overflow bucket.
        assert_eq!(t.intern(&c, SiteKey::Native { address: 9 }), 4);
        assert_eq!(t.key(4), Some(SiteKey::Overflow));
    }
}
