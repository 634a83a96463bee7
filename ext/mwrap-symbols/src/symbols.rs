//! Function symbols of one ELF symbol table, by address.

/// One symbol, in ELF addresses (before the load bias).
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u64,
    /// Exclusive; for a symbol without `st_size`, the next symbol's start
    /// or its section's end.
    end: u64,
    /// `STT_FUNC` or `STT_GNU_IFUNC` (else `STT_NOTYPE`, an assembler label).
    function: bool,
    /// `st_size` was not zero.
    sized: bool,
    name_start: u32,
    name_len: u32,
}

impl Entry {
    /// Preference among the symbols holding an address: functions first,
    /// then symbols whose size says they hold it.
    fn rank(&self) -> u8 {
        (self.function as u8) * 2 + self.sized as u8
    }
}

/// A symbol table's code symbols, sorted by address, names in one buffer.
#[derive(Default)]
pub(crate) struct SymbolTable {
    entries: Vec<Entry>,
    /// `max_end[i]`: the largest `end` among `entries[..=i]`, which bounds
    /// the backward scan of [`Self::containing`].
    max_end: Vec<u64>,
    names: Vec<u8>,
}

/// A symbol as the builder receives it.
pub(crate) struct RawSymbol<'a> {
    pub name: &'a [u8],
    pub value: u64,
    pub size: u64,
    pub function: bool,
    /// End of the symbol's section, in ELF addresses.
    pub section_end: u64,
}

impl SymbolTable {
    /// Builds the table; symbols keep their table order among equals.
    pub(crate) fn build<'a>(symbols: impl Iterator<Item = RawSymbol<'a>>) -> Self {
        let mut table = SymbolTable::default();
        let mut section_ends = Vec::new();
        for s in symbols {
            if s.name.is_empty() || s.name.len() > u32::MAX as usize {
                continue;
            }
            let Ok(name_start) = u32::try_from(table.names.len()) else {
                break; // 4 GiB of names: the rest is left out
            };
            table.names.extend_from_slice(s.name);
            table.entries.push(Entry {
                start: s.value,
                end: s.value.saturating_add(s.size),
                function: s.function,
                sized: s.size != 0,
                name_start,
                name_len: s.name.len() as u32,
            });
            section_ends.push(s.section_end);
        }
        // Sort (stably) together with the section ends.
        let mut order: Vec<usize> = (0..table.entries.len()).collect();
        order.sort_by_key(|&i| table.entries[i].start);
        let entries: Vec<Entry> = order.iter().map(|&i| table.entries[i]).collect();
        let ends: Vec<u64> = order.iter().map(|&i| section_ends[i]).collect();
        table.entries = entries;
        // A sizeless symbol reaches to the next symbol that starts after it.
        let mut next_start = u64::MAX;
        for i in (0..table.entries.len()).rev() {
            let e = &mut table.entries[i];
            if !e.sized {
                e.end = next_start.min(ends[i]).max(e.start);
            }
            if i == 0 || table.entries[i - 1].start < table.entries[i].start {
                next_start = table.entries[i].start;
            }
        }
        let mut max = 0;
        table.max_end = table
            .entries
            .iter()
            .map(|e| {
                max = max.max(e.end);
                max
            })
            .collect();
        table
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The symbol holding ELF address `address`: its name and start. A
    /// function wins over a label, a sized symbol over a sizeless one,
    /// then the nearest start, then the first in table order.
    pub(crate) fn containing(&self, address: u64) -> Option<(&[u8], u64)> {
        let after = self.entries.partition_point(|e| e.start <= address);
        let mut best: Option<&Entry> = None;
        for i in (0..after).rev() {
            if self.max_end[i] <= address {
                break; // nothing at or before i reaches the address
            }
            let e = &self.entries[i];
            if address >= e.end {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => e.rank() > b.rank() || (e.rank() == b.rank() && e.start == b.start),
            };
            if better {
                best = Some(e);
            }
        }
        best.map(|e| {
            let start = e.name_start as usize;
            let name = &self.names[start..start + e.name_len as usize];
            (name, e.start)
        })
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.max_end.capacity() * size_of::<u64>()
            + self.names.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: &'static str, value: u64, size: u64, function: bool) -> RawSymbol<'static> {
        RawSymbol {
            name: name.as_bytes(),
            value,
            size,
            function,
            section_end: 0x1000,
        }
    }

    fn name(t: &SymbolTable, a: u64) -> Option<(&str, u64)> {
        t.containing(a)
            .map(|(n, s)| (core::str::from_utf8(n).unwrap(), s))
    }

    #[test]
    fn picks_the_containing_function() {
        let t = SymbolTable::build(
            [
                sym("big", 0x100, 0x200, true),
                sym("label", 0x180, 0, false),
                sym("inner", 0x150, 0x10, true),
                sym("alias2", 0x400, 0x10, true),
                sym("alias1", 0x400, 0x10, true),
                sym("tail", 0x800, 0, true),
            ]
            .into_iter(),
        );
        assert_eq!(name(&t, 0xff), None);
        assert_eq!(name(&t, 0x100), Some(("big", 0x100)));
        assert_eq!(name(&t, 0x155), Some(("inner", 0x150)));
        // A label inside a sized function does not take the function's name.
        assert_eq!(name(&t, 0x190), Some(("big", 0x100)));
        assert_eq!(name(&t, 0x2ff), Some(("big", 0x100)));
        // Past it, a sizeless label reaches to the next symbol.
        assert_eq!(name(&t, 0x300), Some(("label", 0x180)));
        // Equal symbols: the first in table order.
        assert_eq!(name(&t, 0x405), Some(("alias2", 0x400)));
        // A sizeless function reaches to its section's end.
        assert_eq!(name(&t, 0xfff), Some(("tail", 0x800)));
        assert_eq!(name(&t, 0x1000), None);
    }

    #[test]
    fn sizeless_symbols_stop_at_the_next_one() {
        let t = SymbolTable::build(
            [
                sym("a", 0x10, 0, true),
                sym("b", 0x20, 0, true),
                sym("", 0x30, 0, true),
            ]
            .into_iter(),
        );
        assert_eq!(name(&t, 0x1f), Some(("a", 0x10)));
        assert_eq!(name(&t, 0x20), Some(("b", 0x20)));
        assert!(SymbolTable::build(core::iter::empty()).is_empty());
    }
}
