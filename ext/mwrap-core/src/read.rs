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

/// Names native return addresses (`dladdr` lives in the preload).
pub trait NativeNamer {
    /// Writes the printed (escaped) name of `address`.
    fn name_native(&self, address: usize, out: &mut ByteWriter<'_>);
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
        SiteKey::Unset => push_fallible(out, b"?")?,
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
}
