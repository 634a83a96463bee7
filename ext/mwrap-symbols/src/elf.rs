//! What an ELF file on disk says: build-id, debug link, load span, whether
//! it carries DWARF, and its code symbols. Files are read with `pread`
//! through `object`'s [`ReadCache`], never mapped: a file truncated or
//! rewritten meanwhile gives an error, not a SIGBUS. Nothing here panics
//! on a malformed file; it gives up on what it cannot read.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use object::elf::{FileHeader32, FileHeader64, PT_LOAD, SHF_EXECINSTR, SHT_NOBITS};
use object::read::elf::{
    ElfFile, FileHeader, ProgramHeader, SectionHeader, Sym, SymbolTable as ElfSymbols,
};
use object::{Endianness, FileKind, Object, ReadCache};

use crate::symbols::{RawSymbol, SymbolTable};

/// Which file a path named when it was read: a file replaced since (a
/// rebuilt library, an upgraded package) is read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// The identity of the file at `path` now (following symlinks).
    pub(crate) fn at(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }
}

/// Opens `path` for reading if it is a regular file, with its identity;
/// when `expected` is given, only if it is still that file.
pub(crate) fn open(path: &Path, expected: Option<FileIdentity>) -> Option<(File, FileIdentity)> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let identity = FileIdentity::of(&meta);
    if expected.is_some_and(|e| e != identity) {
        return None;
    }
    Some((file, identity))
}

/// Which symbol table to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// `.symtab`: every function, static ones included.
    Full,
    /// `.dynsym`: exported symbols only (what `dladdr` sees).
    Dynamic,
    /// Neither.
    None,
}

/// What one read of an ELF file found.
pub(crate) struct ElfFacts {
    pub build_id: Option<Vec<u8>>,
    /// `.gnu_debuglink`: the debug file's name and CRC-32.
    pub debuglink: Option<(Vec<u8>, u32)>,
    /// Lowest `PT_LOAD` address and end of the highest, in ELF addresses.
    pub load_span: Option<(u64, u64)>,
    /// `.debug_info` with contents (not `SHT_NOBITS`).
    pub has_dwarf: bool,
    /// The table asked for, if the file has it and it holds code symbols.
    pub symbols: Option<SymbolTable>,
}

/// Reads an ELF file's facts and (per `table`) a symbol table.
pub(crate) fn read_facts(file: File, table: Table) -> Option<ElfFacts> {
    let cache = ReadCache::new(file);
    match FileKind::parse(&cache).ok()? {
        FileKind::Elf64 => facts::<FileHeader64<Endianness>>(&cache, table),
        FileKind::Elf32 => facts::<FileHeader32<Endianness>>(&cache, table),
        _ => None,
    }
}

fn facts<Elf: FileHeader<Endian = Endianness>>(
    cache: &ReadCache<File>,
    table: Table,
) -> Option<ElfFacts> {
    let elf = ElfFile::<Elf, _>::parse(cache).ok()?;
    let endian = elf.endian();
    let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
    let debuglink = elf
        .gnu_debuglink()
        .ok()
        .flatten()
        .map(|(name, crc)| (name.to_vec(), crc));
    let mut span: Option<(u64, u64)> = None;
    for ph in elf.elf_program_headers() {
        if ph.p_type(endian) != PT_LOAD {
            continue;
        }
        let start: u64 = ph.p_vaddr(endian).into();
        let end = start.saturating_add(ph.p_memsz(endian).into());
        span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
    }
    let sections = elf.elf_section_table();
    let has_dwarf = sections
        .section_by_name(endian, b".debug_info")
        .is_some_and(|(_, sh)| sh.sh_type(endian) != SHT_NOBITS && sh.sh_size(endian).into() > 0);
    let symbols = match table {
        Table::Full => code_symbols(&elf, elf.elf_symbol_table()),
        Table::Dynamic => code_symbols(&elf, elf.elf_dynamic_symbol_table()),
        Table::None => None,
    };
    Some(ElfFacts {
        build_id,
        debuglink,
        load_span: span,
        has_dwarf,
        symbols,
    })
}

/// The symbols of `table` that can hold a return address: functions and
/// labels defined in executable sections.
fn code_symbols<'data, Elf: FileHeader<Endian = Endianness>>(
    elf: &ElfFile<'data, Elf, &'data ReadCache<File>>,
    table: &ElfSymbols<'data, Elf, &'data ReadCache<File>>,
) -> Option<SymbolTable> {
    use object::elf::{STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE};
    if table.is_empty() {
        return None;
    }
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let symbols = table.enumerate().skip(1).filter_map(|(index, sym)| {
        let kind = sym.st_type();
        let function = kind == STT_FUNC || kind == STT_GNU_IFUNC;
        if !function && kind != STT_NOTYPE {
            return None;
        }
        let section_index = table.symbol_section(endian, sym, index).ok()??;
        let section = sections.section(section_index).ok()?;
        if !section.sh_flags(endian).contains(SHF_EXECINSTR) {
            return None;
        }
        let name = table.symbol_name(endian, sym).ok()?;
        if name.starts_with(b"$") {
            return None; // ARM and AArch64 mapping symbols ($x, $d)
        }
        let section_start: u64 = section.sh_addr(endian).into();
        Some(RawSymbol {
            name,
            value: sym.st_value(endian).into(),
            size: sym.st_size(endian).into(),
            function,
            section_end: section_start.saturating_add(section.sh_size(endian).into()),
        })
    });
    let built = SymbolTable::build(symbols);
    (!built.is_empty()).then_some(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libc_facts_and_dynamic_symbols() {
        let path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let Some((file, _)) = open(path, None) else {
            return; // not a Debian x86-64 machine
        };
        let facts = read_facts(file, Table::Dynamic).unwrap();
        assert_eq!(facts.build_id.as_ref().map(Vec::len), Some(20));
        assert!(facts.load_span.is_some());
        let symbols = facts.symbols.unwrap();
        assert!(!symbols.is_empty());
    }

    #[test]
    fn garbage_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("mwrap-symbols-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.so");
        let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
        bytes.resize(200, 0xff);
        std::fs::write(&bad, &bytes).unwrap();
        let (file, id) = open(&bad, None).unwrap();
        assert!(read_facts(file, Table::Full).is_none());
        assert!(open(&bad, Some(id)).is_some());
        std::fs::write(&bad, b"x").unwrap();
        assert!(
            open(&bad, Some(id)).is_none(),
            "a rewritten file is another file"
        );
        assert!(open(&dir, None).is_none(), "a directory is no object");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
