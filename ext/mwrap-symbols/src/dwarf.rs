//! DWARF line information: finding it (in the object or a separate debug
//! file) and looking lines up with `addr2line`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gimli::{EndianArcSlice, Reader as _, RunTimeEndian, SectionId};
use object::{Object, ObjectSection, ReadCache};

use crate::elf::{self, ElfFacts, FileIdentity, Table};

type Reader = EndianArcSlice<RunTimeEndian>;

/// The sections a line lookup reads; the others (locations, macros, type
/// units, and `.debug_aranges`: units' own ranges are used) are never
/// loaded.
const LINE_SECTIONS: [SectionId; 9] = [
    SectionId::DebugAbbrev,
    SectionId::DebugAddr,
    SectionId::DebugInfo,
    SectionId::DebugLine,
    SectionId::DebugLineStr,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
    SectionId::DebugStr,
    SectionId::DebugStrOffsets,
];

/// One file's DWARF, parsed for line lookups, one compilation unit at a
/// time: an `addr2line` context over the whole file keeps every unit's
/// abbreviations and line header (23 MB for glibc's 2,000 units), one per
/// unit looked up keeps only what is used.
pub(crate) struct Lines {
    sections: Vec<(SectionId, Reader)>,
    empty: Reader,
    units: Vec<UnitEntry>,
    /// Units' address ranges `(start, end, unit)`, sorted by start, and
    /// the largest end up to each (bounds the backward scan).
    ranges: Vec<(u64, u64, u32)>,
    max_end: Vec<u64>,
    section_bytes: usize,
}

struct UnitEntry {
    /// The unit's bytes in `.debug_info`.
    offset: usize,
    length: usize,
    /// `DW_AT_comp_dir`, rendered as `addr2line` renders file names (lossy
    /// UTF-8): file names under it are printed relative to it.
    comp_dir: Option<Arc<str>>,
    /// Made at the unit's first lookup; None inside when it is unusable.
    context: Option<Option<addr2line::Context<Reader>>>,
}

impl Lines {
    /// Reads the DWARF of `file`; None when it has none or it is unusable.
    pub(crate) fn load(file: File) -> Option<Lines> {
        let cache = ReadCache::new(file);
        let object = object::File::parse(&cache).ok()?;
        let endian = if object.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let empty = EndianArcSlice::new(Arc::from(&[][..]), endian);
        let mut sections = Vec::new();
        let mut section_bytes = 0;
        for id in LINE_SECTIONS {
            let Some(section) = object.section_by_name(id.name()) else {
                continue;
            };
            let Ok(data) = section.uncompressed_data() else {
                continue;
            };
            section_bytes += data.len();
            sections.push((id, EndianArcSlice::new(Arc::from(&*data), endian)));
        }
        let mut lines = Lines {
            sections,
            empty,
            units: Vec::new(),
            ranges: Vec::new(),
            max_end: Vec::new(),
            section_bytes,
        };
        lines.index_units();
        (!lines.ranges.is_empty()).then_some(lines)
    }

    fn section(&self, id: SectionId) -> Reader {
        self.sections
            .iter()
            .find(|(s, _)| *s == id)
            .map_or_else(|| self.empty.clone(), |(_, r)| r.clone())
    }

    /// Finds every compilation unit, its directory and address ranges.
    fn index_units(&mut self) {
        let Ok(dwarf) = gimli::Dwarf::load(|id| Ok::<_, gimli::Error>(self.section(id))) else {
            return;
        };
        let mut headers = dwarf.units();
        while let Ok(Some(header)) = headers.next() {
            if !matches!(header.type_(), gimli::UnitType::Compilation) {
                continue;
            }
            let (Some(offset), length) =
                (header.debug_info_offset(), header.length_including_self())
            else {
                continue;
            };
            let Ok(unit) = dwarf.unit(header) else {
                continue;
            };
            let Ok(mut ranges) = dwarf.unit_ranges(&unit) else {
                continue;
            };
            let index = self.units.len() as u32;
            while let Ok(Some(range)) = ranges.next() {
                if range.begin < range.end {
                    self.ranges.push((range.begin, range.end, index));
                }
            }
            let comp_dir = unit
                .comp_dir
                .as_ref()
                .and_then(|dir| dir.to_string_lossy().ok().map(|d| Arc::from(d.as_ref())));
            self.units.push(UnitEntry {
                offset: offset.0,
                length,
                comp_dir,
                context: None,
            });
        }
        self.ranges.sort_by_key(|&(start, _, _)| start);
        let mut max = 0;
        self.max_end = self
            .ranges
            .iter()
            .map(|&(_, end, _)| {
                max = max.max(end);
                max
            })
            .collect();
    }

    /// An `addr2line` context over unit `index` alone: `.debug_info` cut
    /// to the unit, and no `.debug_aranges` (never loaded: its unit offsets
    /// would point elsewhere in the cut section).
    fn unit_context(&self, index: usize) -> Option<addr2line::Context<Reader>> {
        let entry = &self.units[index];
        let dwarf = gimli::Dwarf::load(|id| -> Result<Reader, gimli::Error> {
            Ok(match id {
                SectionId::DebugInfo => {
                    let mut info = self.section(id);
                    info.skip(entry.offset)?;
                    info.truncate(entry.length)?;
                    info
                }
                _ => self.section(id),
            })
        })
        .ok()?;
        addr2line::Context::from_dwarf(dwarf).ok()
    }

    /// The source line of ELF address `probe`: the file as the line table
    /// names it (relative to its unit's compilation directory when under
    /// it) and the line. For inlined code this is the innermost line, the
    /// one actually executing.
    pub(crate) fn location(&mut self, probe: u64) -> Option<(String, u32)> {
        let after = self.ranges.partition_point(|&(start, _, _)| start <= probe);
        for i in (0..after).rev() {
            if self.max_end[i] <= probe {
                break;
            }
            let (_, end, unit) = self.ranges[i];
            if probe >= end {
                continue;
            }
            let unit = unit as usize;
            if self.units[unit].context.is_none() {
                let context = self.unit_context(unit);
                self.units[unit].context = Some(context);
            }
            let entry = &self.units[unit];
            let Some(context) = entry.context.as_ref().and_then(Option::as_ref) else {
                continue;
            };
            let Ok(Some(location)) = context.find_location(probe) else {
                continue;
            };
            let (Some(file), Some(line)) = (location.file, location.line.filter(|&l| l > 0)) else {
                continue;
            };
            let relative = entry
                .comp_dir
                .as_deref()
                .filter(|dir| !dir.is_empty())
                .and_then(|dir| file.strip_prefix(dir))
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|rest| !rest.is_empty());
            return Some((relative.unwrap_or(file).to_owned(), line));
        }
        None
    }

    /// Bytes of DWARF sections held (the units' parsed tables come on top,
    /// for the units looked up).
    pub(crate) fn section_bytes(&self) -> usize {
        self.section_bytes
    }
}

/// A separate debug file found for an object.
pub(crate) struct DebugFile {
    pub path: PathBuf,
    pub identity: FileIdentity,
    pub facts: ElfFacts,
}

/// Looks for the debug file of the object at `object_path` (whose facts
/// are `object`), as gdb does: by build-id under `root`
/// (`root/.build-id/xx/yyyy….debug`), then by `.gnu_debuglink` name next
/// to the object, in its `.debug/`, and under `root` + the object's
/// directory. A candidate is taken when its build-id equals the object's,
/// or, when either has none, when its CRC-32 is the debug link's. The
/// debug file's full symbol table is read when the object has none.
pub(crate) fn find_debug_file(
    object_path: &Path,
    object_identity: FileIdentity,
    object: &ElfFacts,
    root: &Path,
) -> Option<DebugFile> {
    let table = if object.symbols.is_some() {
        Table::None
    } else {
        Table::Full
    };
    if let Some(id) = object.build_id.as_deref().filter(|id| id.len() >= 2) {
        let hex = hex(id);
        let path = root
            .join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        if let Some(found) = try_candidate(&path, object_identity, table, |facts, _| {
            facts.build_id.as_deref() == Some(id)
        }) {
            return Some(found);
        }
    }
    let (name, crc) = object.debuglink.as_ref()?;
    let name = Path::new(OsStr::from_bytes(name));
    if name.as_os_str().is_empty() || name.components().count() != 1 {
        return None; // a debug link is a plain file name
    }
    let dir = object_path.parent().unwrap_or(Path::new(""));
    let mut candidates = vec![dir.join(name), dir.join(".debug").join(name)];
    if dir.is_absolute() {
        let under_root = dir.strip_prefix("/").unwrap_or(dir);
        candidates.push(root.join(under_root).join(name));
    }
    candidates.into_iter().find_map(|path| {
        try_candidate(&path, object_identity, table, |facts, file| {
            match (object.build_id.as_deref(), facts.build_id.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => crc32_of(file) == Some(*crc),
            }
        })
    })
}

/// Reads `path` as a debug file if it is another file than the object,
/// carries DWARF and `accept` takes it.
fn try_candidate(
    path: &Path,
    object_identity: FileIdentity,
    table: Table,
    accept: impl FnOnce(&ElfFacts, &File) -> bool,
) -> Option<DebugFile> {
    let (file, identity) = elf::open(path, None)?;
    if identity == object_identity {
        return None;
    }
    let check = file.try_clone().ok()?;
    let facts = elf::read_facts(file, table)?;
    if !facts.has_dwarf || !accept(&facts, &check) {
        return None;
    }
    Some(DebugFile {
        path: path.to_path_buf(),
        identity,
        facts,
    })
}

/// The CRC-32 `.gnu_debuglink` records: of the whole file.
fn crc32_of(file: &File) -> Option<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut reader = file;
    // try_clone shares the offset: read from the start.
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(0)).ok()?;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Some(hasher.finalize()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
