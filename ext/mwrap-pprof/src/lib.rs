//! mwrap's heap as a pprof profile (`/heap.pb.gz`, `Mwrap.pprof`): the
//! read API's stack rows ([`mwrap_core::read::StackRows`]) turned into
//! pprof's `profile.proto` ([`proto`]), then gzip'd as pprof reads it.
//!
//! A crate of its own so that `prost` and `flate2` weigh on the preload
//! (which serves the profile) and on nothing else of the core.
//!
//! # What the profile holds
//!
//! - Four sample types, in this order: `alloc_objects`/count (the
//!   allocations charged), `alloc_space`/bytes (their bytes),
//!   `inuse_objects`/count (those still live), `inuse_space`/bytes (their
//!   bytes); `inuse_space` is the default. The period is 1 of
//!   `space`/bytes: mwrap records every allocation, nothing is sampled.
//! - One sample per (location, stack) row with any allocation; its
//!   locations leaf first: the native frames (the caller of `malloc`
//!   first), then the Ruby frames (innermost first). A row with no Ruby
//!   frame whose location is a Ruby line has that line as its Ruby frame;
//!   a native location with no native frame is its own first frame.
//! - A Ruby frame `path:LINE` is a location with one line of the
//!   function named `path:LINE` (mwrap knows lines, not methods, so the
//!   line is what `-top` should tell apart), filename `path`, start line
//!   `LINE`. It has no mapping and no address.
//! - A native frame, as mwrap prints it (`object(symbol+0xOFF) [0xADDR]`,
//!   `object(+0xOFF) [0xADDR]` or `[0xADDR]`, then ` at file.c:LINE` when
//!   DWARF had a line) is a location at `ADDR` with one line of the
//!   function named `symbol` (`object(+0xOFF)` without one), filename
//!   `file.c` and that line (empty and 0 without DWARF); its start line is
//!   not known (0). Its mapping is the executable mapping of
//!   `/proc/self/maps` holding the address (start, limit, file offset and
//!   path from there), else one per object name with nothing but the
//!   name (an object `dlclose`d since), else none.
//! - Names are mwrap's printed ones (control bytes and `\` escaped), made
//!   valid UTF-8 where they are not.

pub mod proto;

use std::collections::HashMap;
use std::hash::Hash;
use std::io::Write as _;

use mwrap_core::read::{StackRow, StackRows};
use mwrap_core::sites::NoMemory;
use mwrap_core::SiteKey;

use proto::{Function, Line, Location, Mapping, Profile, Sample, ValueType};

/// The sample types, in the order of every sample's values.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// The sample type pprof shows unless told otherwise.
pub const DEFAULT_SAMPLE_TYPE: &str = "inuse_space";

/// One executable mapping of the process, as `/proc/self/maps` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecMapping<'a> {
    pub start: u64,
    pub limit: u64,
    pub file_offset: u64,
    pub path: &'a [u8],
}

/// The executable mappings of a `/proc/PID/maps` text, in its order
/// (by address); lines that are not mappings are skipped.
pub fn exec_mappings(proc_maps: &[u8]) -> Result<Vec<ExecMapping<'_>>, NoMemory> {
    let mut out = Vec::new();
    for line in proc_maps.split(|&b| b == b'\n') {
        let Some(mapping) = parse_exec_mapping(line) else {
            continue;
        };
        out.try_reserve(1).map_err(|_| NoMemory)?;
        out.push(mapping);
    }
    Ok(out)
}

fn parse_exec_mapping(line: &[u8]) -> Option<ExecMapping<'_>> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let (range, perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
    let (_dev, _inode) = (fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or(b"");
    let path = &path[path.iter().position(|&b| b != b' ').unwrap_or(path.len())..];
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = parse_hex(&range[..dash])?;
    let limit = parse_hex(&range[dash + 1..])?;
    if perms.get(2) != Some(&b'x') || path.is_empty() || limit < start {
        return None;
    }
    Some(ExecMapping {
        start,
        limit,
        file_offset: parse_hex(offset)?,
        path,
    })
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        Some(n << 4 | d as u64)
    })
}

fn parse_decimal(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let n = digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(10)?;
        Some(n * 10 + d as u64)
    })?;
    u32::try_from(n).ok()
}

/// A native frame or location as mwrap prints it, taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeFrame<'a> {
    /// The object's path, when `dladdr` knew it.
    pub object: Option<&'a [u8]>,
    /// The symbol before the address, when one was found.
    pub symbol: Option<&'a [u8]>,
    /// `object(symbol+0xOFF)`: the text before the address; empty when no
    /// object holds it; the whole text when it is not a printed frame.
    pub function: &'a [u8],
    pub address: Option<u64>,
    /// ` at file:LINE`'s file and line.
    pub source: Option<(&'a [u8], u32)>,
}

/// Takes apart `object(symbol+0xOFF) [0xADDR] at file:LINE` (each part
/// but the address optional, see `mwrap_symbols`); anything else is a
/// function named by the whole text, with no address.
pub fn parse_native(text: &[u8]) -> NativeFrame<'_> {
    let unknown = NativeFrame {
        object: None,
        symbol: None,
        function: text,
        address: None,
        source: None,
    };
    let mut from = 0;
    while let Some(found) = find(&text[from..], b"[0x") {
        let open = from + found;
        from = open + 1;
        // The address follows `) ` (an object) or starts the text.
        if open != 0 && !text[..open].ends_with(b") ") {
            continue;
        }
        let Some(close) = text[open..].iter().position(|&b| b == b']') else {
            break;
        };
        let close = open + close;
        let Some(address) = parse_hex(&text[open + 3..close]) else {
            continue;
        };
        let rest = &text[close + 1..];
        let source = if rest.is_empty() {
            None
        } else if let Some(at) = rest.strip_prefix(b" at ") {
            Some(split_line(at))
        } else {
            continue;
        };
        // `object(…)` without the space before the address.
        let head = &text[..open.saturating_sub(1)];
        let (object, symbol) = split_object(head);
        return NativeFrame {
            object,
            symbol,
            function: head,
            address: Some(address),
            source,
        };
    }
    unknown
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `object(symbol+0xOFF)` → object and symbol (None when empty).
fn split_object(head: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let Some(inner_end) = head.len().checked_sub(1).filter(|&i| head[i] == b')') else {
        return (None, None);
    };
    let Some(open) = head[..inner_end].iter().rposition(|&b| b == b'(') else {
        return (None, None);
    };
    let object = Some(&head[..open]).filter(|o| !o.is_empty());
    let inner = &head[open + 1..inner_end];
    let symbol = inner
        .iter()
        .rposition(|&b| b == b'+' || b == b'-')
        .map(|sign| &inner[..sign])
        .filter(|s| !s.is_empty());
    (object, symbol)
}

/// `path:LINE` → path and line (0, and the whole text, with no line).
fn split_line(text: &[u8]) -> (&[u8], u32) {
    if let Some(colon) = text.iter().rposition(|&b| b == b':') {
        if let Some(line) = parse_decimal(&text[colon + 1..]) {
            return (&text[..colon], line);
        }
    }
    (text, 0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn insert<K: Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) -> Result<(), NoMemory> {
    map.try_reserve(1).map_err(|_| NoMemory)?;
    map.insert(key, value);
    Ok(())
}

fn push<T>(vec: &mut Vec<T>, item: T) -> Result<(), NoMemory> {
    vec.try_reserve(1).map_err(|_| NoMemory)?;
    vec.push(item);
    Ok(())
}

/// What a location's printed text is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum FrameKind {
    Ruby,
    Native,
    /// A bucket (`[overflow]`, `[no memory]`): a name and nothing else.
    Named,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum MappingKey<'a> {
    /// Index into the executable mappings.
    Exec(usize),
    /// An object in none of them, by name.
    Object(&'a [u8]),
}

/// Builds one profile, deduplicating strings, functions, locations and
/// mappings as it goes; ids are 1 + the index in the profile's list.
struct Builder<'a> {
    profile: Profile,
    exec: &'a [ExecMapping<'a>],
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64), u64>,
    locations: HashMap<(FrameKind, &'a [u8]), u64>,
    mappings: HashMap<MappingKey<'a>, u64>,
}

impl<'a> Builder<'a> {
    fn new(exec: &'a [ExecMapping<'a>]) -> Result<Self, NoMemory> {
        let mut b = Builder {
            profile: Profile::default(),
            exec,
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
            mappings: HashMap::new(),
        };
        push(&mut b.profile.string_table, String::new())?;
        insert(&mut b.strings, String::new(), 0)?;
        Ok(b)
    }

    fn string(&mut self, bytes: &[u8]) -> Result<i64, NoMemory> {
        let text = String::from_utf8_lossy(bytes);
        if let Some(&index) = self.strings.get(text.as_ref()) {
            return Ok(index);
        }
        let index = self.profile.string_table.len() as i64;
        // One copy for the table, one as the key.
        let copy = || -> Result<String, NoMemory> {
            let mut owned = String::new();
            owned.try_reserve(text.len()).map_err(|_| NoMemory)?;
            owned.push_str(&text);
            Ok(owned)
        };
        push(&mut self.profile.string_table, copy()?)?;
        insert(&mut self.strings, copy()?, index)?;
        Ok(index)
    }

    fn function(&mut self, name: &[u8], file: &[u8], start_line: u32) -> Result<u64, NoMemory> {
        let (name, file) = (self.string(name)?, self.string(file)?);
        let key = (name, file, start_line as i64);
        if let Some(&id) = self.functions.get(&key) {
            return Ok(id);
        }
        let id = self.profile.function.len() as u64 + 1;
        push(
            &mut self.profile.function,
            Function {
                id,
                name,
                system_name: name,
                filename: file,
                start_line: start_line as i64,
            },
        )?;
        insert(&mut self.functions, key, id)?;
        Ok(id)
    }

    /// The mapping of a native address, or 0.
    fn mapping(&mut self, frame: &NativeFrame<'a>) -> Result<u64, NoMemory> {
        let exec = frame.address.and_then(|address| {
            let i = self.exec.partition_point(|m| m.limit <= address);
            self.exec
                .get(i)
                .filter(|m| m.start <= address && address < m.limit)
                .map(|_| i)
        });
        let key = match (exec, frame.object) {
            (Some(i), _) => MappingKey::Exec(i),
            (None, Some(object)) => MappingKey::Object(object),
            (None, None) => return Ok(0),
        };
        self.mapping_for(key)
    }

    fn mapping_for(&mut self, key: MappingKey<'a>) -> Result<u64, NoMemory> {
        if let Some(&id) = self.mappings.get(&key) {
            return Ok(id);
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let mut mapping = Mapping {
            id,
            // Every location has a function (mwrap's name): pprof is not
            // to symbolize them again.
            has_functions: true,
            ..Default::default()
        };
        match key {
            MappingKey::Exec(i) => {
                let m = self.exec[i];
                mapping.memory_start = m.start;
                mapping.memory_limit = m.limit;
                mapping.file_offset = m.file_offset;
                mapping.filename = self.string(m.path)?;
            }
            MappingKey::Object(object) => mapping.filename = self.string(object)?,
        }
        push(&mut self.profile.mapping, mapping)?;
        insert(&mut self.mappings, key, id)?;
        Ok(id)
    }

    fn location(&mut self, kind: FrameKind, text: &'a [u8]) -> Result<u64, NoMemory> {
        if let Some(&id) = self.locations.get(&(kind, text)) {
            return Ok(id);
        }
        let id = self.profile.location.len() as u64 + 1;
        let mut location = Location {
            id,
            ..Default::default()
        };
        let line = match kind {
            FrameKind::Ruby => {
                let (file, line) = split_line(text);
                Line {
                    function_id: self.function(text, file, line)?,
                    line: line as i64,
                }
            }
            FrameKind::Named => Line {
                function_id: self.function(text, b"", 0)?,
                line: 0,
            },
            FrameKind::Native => {
                let frame = parse_native(text);
                location.address = frame.address.unwrap_or(0);
                location.mapping_id = self.mapping(&frame)?;
                let name = match (frame.symbol, frame.function) {
                    (Some(symbol), _) => symbol,
                    (None, b"") => text,
                    (None, function) => function,
                };
                let (file, line) = frame.source.unwrap_or((b"", 0));
                if frame.source.is_some() && location.mapping_id != 0 {
                    let m = &mut self.profile.mapping[location.mapping_id as usize - 1];
                    m.has_filenames = true;
                    m.has_line_numbers = true;
                }
                Line {
                    function_id: self.function(name, file, 0)?,
                    line: line as i64,
                }
            }
        };
        push(&mut location.line, line)?;
        push(&mut self.profile.location, location)?;
        insert(&mut self.locations, (kind, text), id)?;
        Ok(id)
    }

    /// The row's locations, leaf first (see the crate's doc).
    fn sample(&mut self, rows: &'a StackRows, row: &StackRow) -> Result<(), NoMemory> {
        let mut ids = Vec::new();
        ids.try_reserve(row.ruby_frames + row.native_frames + 1)
            .map_err(|_| NoMemory)?;
        let name = rows.location_name(row);
        let kind = match row.key {
            SiteKey::Ruby { .. } => FrameKind::Ruby,
            SiteKey::Native { .. } => FrameKind::Native,
            _ => FrameKind::Named,
        };
        if kind == FrameKind::Native && row.native_frames == 0 {
            ids.push(self.location(kind, name)?);
        }
        for frame in rows.native_frames(row) {
            ids.push(self.location(FrameKind::Native, frame)?);
        }
        for frame in rows.ruby_frames(row) {
            ids.push(self.location(FrameKind::Ruby, frame)?);
        }
        if (kind == FrameKind::Ruby && row.ruby_frames == 0) || ids.is_empty() {
            ids.push(self.location(kind, name)?);
        }
        let s = &row.snapshot;
        let sample = Sample {
            location_id: ids,
            value: vec![
                to_i64(s.allocations),
                to_i64(s.total),
                to_i64(s.live_count),
                to_i64(s.live_bytes),
            ],
            label: Vec::new(),
        };
        push(&mut self.profile.sample, sample)
    }
}

/// The profile of `rows`, with native frames in `exec` (from
/// [`exec_mappings`]; may be empty) mapped; `time_nanos` is when the rows
/// were read (nanoseconds since the epoch, 0 when unknown).
pub fn heap_profile<'a>(
    rows: &'a StackRows,
    exec: &'a [ExecMapping<'a>],
    time_nanos: i64,
) -> Result<Profile, NoMemory> {
    let mut b = Builder::new(exec)?;
    // mapping[0] is the main program's: the first executable mapping.
    if !exec.is_empty() {
        b.mapping_for(MappingKey::Exec(0))?;
    }
    for (kind, unit) in SAMPLE_TYPES {
        let value_type = ValueType {
            r#type: b.string(kind.as_bytes())?,
            unit: b.string(unit.as_bytes())?,
        };
        push(&mut b.profile.sample_type, value_type)?;
    }
    b.profile.default_sample_type = b.string(DEFAULT_SAMPLE_TYPE.as_bytes())?;
    b.profile.period_type = Some(ValueType {
        r#type: b.string(b"space")?,
        unit: b.string(b"bytes")?,
    });
    b.profile.period = 1;
    b.profile.time_nanos = time_nanos;
    b.profile
        .sample
        .try_reserve(rows.len())
        .map_err(|_| NoMemory)?;
    for row in rows.rows() {
        if row.snapshot.allocations > 0 {
            b.sample(rows, row)?;
        }
    }
    Ok(b.profile)
}

/// `profile` encoded and gzip'd: what `go tool pprof` reads.
pub fn gzipped(profile: &Profile) -> Result<Vec<u8>, NoMemory> {
    use prost::Message as _;
    let len = profile.encoded_len();
    let mut encoded = Vec::new();
    encoded.try_reserve_exact(len).map_err(|_| NoMemory)?;
    profile.encode(&mut encoded).map_err(|_| NoMemory)?;
    let mut out = Vec::new();
    // Room for all of it at worst (deflate's stored blocks, gzip's header
    // and trailer) so the encoder's writes do not grow it.
    out.try_reserve(len + len / 1024 * 5 + 64)
        .map_err(|_| NoMemory)?;
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&encoded).map_err(|_| NoMemory)?;
    gz.finish().map_err(|_| NoMemory)
}

/// [`heap_profile`], then [`gzipped`]: the bytes of `/heap.pb.gz`.
pub fn heap_pb_gz(
    rows: &StackRows,
    exec: &[ExecMapping<'_>],
    time_nanos: i64,
) -> Result<Vec<u8>, NoMemory> {
    gzipped(&heap_profile(rows, exec, time_nanos)?)
}

#[cfg(test)]
mod tests;
