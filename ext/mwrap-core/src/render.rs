//! One renderer per format, shared by every output: the exit dump,
//! `Mwrap.dump` and any future endpoint. Renderers write whole lines to a
//! [`LineSink`], which decides how lines become writes.

use std::fmt::Write as _;

use crate::abi::{HeapPageInfo, HeapPageStats, SpanStats};
use crate::format::{dump_line, TextOut};
use crate::options::{DUMP_HEAP_PAGES, DUMP_HEAP_STATS};
use crate::read::{SiteRows, StackRow, StackRows};

/// Receives rendered text one whole line (ending in `\n`) at a time.
pub trait LineSink {
    fn line(&mut self, line: &[u8]);
}

impl LineSink for Vec<u8> {
    fn line(&mut self, line: &[u8]) {
        self.extend_from_slice(line);
    }
}

/// mwrap 2.x's dump: `"%16zu %12zu %s\n"` (total, allocations, location)
/// per row, in the rows' order.
pub fn text(rows: &SiteRows, out: &mut impl LineSink) {
    let mut line = Vec::new();
    for row in rows.rows() {
        line.clear();
        dump_line(
            &mut line,
            row.snapshot.total,
            row.snapshot.allocations,
            rows.name(row),
        );
        out.line(&line);
    }
}

/// Flame graph input (`dump_format:folded`, read by flamegraph.pl,
/// inferno and speedscope): one line per (location, stack) pair with live
/// bytes, `outermost;…;innermost LIVE_BYTES`. Ruby frames go above native
/// frames; without recorded Ruby frames the location stands for them (the
/// innermost Ruby frame) unless it is a native address, which is then the
/// first native frame already. A `;` inside a frame is written `\x3b`
/// (names are escaped already, so no frame holds a newline).
pub fn folded(rows: &StackRows, min_live: u64, out: &mut impl LineSink) {
    let mut line = Vec::new();
    for row in rows.rows() {
        let live = row.snapshot.live_bytes;
        if live == 0 || live < min_live {
            continue;
        }
        line.clear();
        let mut frames: Vec<&[u8]> = rows.ruby_frames(row).rev().collect();
        let native_location = matches!(row.key, crate::key::SiteKey::Native { .. });
        if frames.is_empty() && !(native_location && row.native_frames > 0) {
            frames.push(rows.location_name(row));
        }
        frames.extend(rows.native_frames(row).rev());
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 {
                line.push(b';');
            }
            push_folded_frame(&mut line, frame);
        }
        line.push(b' ');
        line.push_decimal(live, 0);
        line.push(b'\n');
        out.line(&line);
    }
}

fn push_folded_frame(line: &mut Vec<u8>, frame: &[u8]) {
    for &b in frame {
        if b == b';' {
            line.extend_from_slice(b"\\x3b");
        } else {
            line.push(b);
        }
    }
}

/// `dump_format:json`: one JSON document, one location per line:
/// `{"mwrap":1,"locations":[` then `{"location":…,"total":…,…,"stacks":[…]}`
/// lines, then `]}`. Strings hold names as every output prints them
/// (mwrap's escaping), JSON-escaped; a byte that is not UTF-8 is written
/// `\\xNN`, as mwrap escapes it.
///
/// With `leaks` (`MWRAP=dump_leaks:1`), each location also has
/// `leaked_bytes` and `leaked_count`, and a `"leak_scan":{…}` member
/// follows the locations (see [`Leaks`]); with `pid` (the exit dump, the
/// endpoint) a `"pid":N` member; with `memory`, a `"memory":{…}` member of
/// the breakdown's parts (`null` where unknown); with `temporary` (the
/// preload's count by location id), a `temporary` field per location.
pub fn json(
    rows: &SiteRows,
    stacks: &StackRows,
    leaks: Option<&Leaks<'_>>,
    pid: Option<u32>,
    memory: Option<&[(&str, Option<i128>)]>,
    temporary: Option<&dyn Fn(u32) -> u64>,
    out: &mut impl LineSink,
) {
    let mut by_location: Vec<&StackRow> = stacks.rows().iter().collect();
    by_location.sort_by_key(|r| r.location);
    let mut line = Vec::new();
    out.line(b"{\"mwrap\":1,\"locations\":[\n");
    let count = rows.len();
    for (i, row) in rows.rows().iter().enumerate() {
        let s = &row.snapshot;
        line.clear();
        line.extend_from_slice(b"{\"location\":");
        json_string(&mut line, rows.name(row));
        for (key, value) in [
            ("total", s.total),
            ("allocations", s.allocations),
            ("frees", s.frees),
            ("live_bytes", s.live_bytes),
            ("live_count", s.live_count),
            ("age_total", s.age_total),
            ("max_lifespan", s.max_lifespan),
        ] {
            json_number(&mut line, key, value);
        }
        if let Some(temporary) = temporary {
            json_number(&mut line, "temporary", temporary(s.id));
        }
        if let Some(leaks) = leaks {
            let (bytes, count) = leaks.of(s.id);
            json_number(&mut line, "leaked_bytes", bytes);
            json_number(&mut line, "leaked_count", count);
        }
        line.extend_from_slice(b",\"stacks\":[");
        let first = by_location.partition_point(|r| r.location < s.id);
        let mine = by_location[first..]
            .iter()
            .take_while(|r| r.location == s.id);
        for (j, st) in mine.enumerate() {
            if j > 0 {
                line.push(b',');
            }
            json_stack(&mut line, stacks, st);
        }
        line.extend_from_slice(b"]}");
        if i + 1 < count {
            line.push(b',');
        }
        line.push(b'\n');
        out.line(&line);
    }
    line.clear();
    line.push(b']');
    if let Some(leaks) = leaks {
        let t = &leaks.summary;
        line.extend_from_slice(b",\"leak_scan\":{\"blocks\":");
        line.push_decimal(t.blocks, 0);
        for (key, value) in [
            ("bytes", t.bytes),
            ("leaked_blocks", t.leaked_blocks),
            ("leaked_bytes", t.leaked_bytes),
            ("root_bytes", t.root_bytes),
        ] {
            json_number(&mut line, key, value);
        }
        line.push(b'}');
    }
    if let Some(pid) = pid {
        line.extend_from_slice(b",\"pid\":");
        line.push_decimal(pid as u64, 0);
    }
    if let Some(parts) = memory {
        line.extend_from_slice(b",\"memory\":{");
        for (i, (key, value)) in parts.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.push(b'"');
            line.extend_from_slice(key.as_bytes());
            line.extend_from_slice(b"\":");
            match value {
                Some(v) => line.extend_from_slice(v.to_string().as_bytes()),
                None => line.extend_from_slice(b"null"),
            }
        }
        line.push(b'}');
    }
    line.extend_from_slice(b"}\n");
    out.line(&line);
}

/// The leaked blocks of one location (see `Mwrap.leaks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakCount {
    pub location: u32,
    pub bytes: u64,
    pub count: u64,
}

/// What a leak scan found, for a dump: its summary and, sorted by
/// location id, the locations with leaked blocks.
pub struct Leaks<'a> {
    pub summary: crate::abi::LeakSummary,
    pub by_location: &'a [LeakCount],
}

impl Leaks<'_> {
    /// Leaked bytes and blocks of `location`.
    pub fn of(&self, location: u32) -> (u64, u64) {
        let i = self.by_location.partition_point(|l| l.location < location);
        match self.by_location.get(i) {
            Some(l) if l.location == location => (l.bytes, l.count),
            _ => (0, 0),
        }
    }
}

/// `dump_leaks:1` in the text dump: after the 2.x lines, a `#` line on
/// what was scanned, then one line per location with leaked bytes above
/// `min`, `"leaked %16zu %12zu %s\n"` (bytes, blocks, location), in the
/// order given (most bytes first). No 2.x line starts with a letter.
pub fn leaks_text<'a>(
    summary: &crate::abi::LeakSummary,
    lines: impl Iterator<Item = (&'a [u8], u64, u64)>,
    min: u64,
    out: &mut impl LineSink,
) {
    let mut line = format!(
        "# mwrap leaks: {} of {} live blocks ({} of {} bytes) are reached by no pointer\n",
        summary.leaked_blocks, summary.blocks, summary.leaked_bytes, summary.bytes
    )
    .into_bytes();
    out.line(&line);
    for (name, bytes, count) in lines.filter(|l| l.1 > min) {
        line.clear();
        line.extend_from_slice(b"leaked ");
        dump_line(&mut line, bytes, count, name);
        out.line(&line);
    }
}

fn json_stack(line: &mut Vec<u8>, stacks: &StackRows, row: &StackRow) {
    line.extend_from_slice(b"{\"ruby\":[");
    for (i, f) in stacks.ruby_frames(row).enumerate() {
        if i > 0 {
            line.push(b',');
        }
        json_string(line, f);
    }
    line.extend_from_slice(b"],\"native\":[");
    for (i, f) in stacks.native_frames(row).enumerate() {
        if i > 0 {
            line.push(b',');
        }
        json_string(line, f);
    }
    line.push(b']');
    let s = &row.snapshot;
    for (key, value) in [
        ("total", s.total),
        ("allocations", s.allocations),
        ("frees", s.frees),
        ("live_bytes", s.live_bytes),
        ("live_count", s.live_count),
    ] {
        json_number(line, key, value);
    }
    line.push(b'}');
}

fn json_number(line: &mut Vec<u8>, key: &str, value: u64) {
    line.extend_from_slice(b",\"");
    line.extend_from_slice(key.as_bytes());
    line.extend_from_slice(b"\":");
    line.push_decimal(value, 0);
}

/// A JSON string of an (already mwrap-escaped) name.
fn json_string(line: &mut Vec<u8>, name: &[u8]) {
    line.push(b'"');
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => line.extend_from_slice(b"\\\""),
                '\\' => line.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(ByteSink(line), "\\u{:04x}", c as u32);
                }
                c => {
                    let mut buf = [0u8; 4];
                    line.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(ByteSink(line), "\\\\x{b:02x}");
        }
    }
    line.push(b'"');
}

/// `write!` into a byte vector.
struct ByteSink<'a>(&'a mut Vec<u8>);

impl core::fmt::Write for ByteSink<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The heap page part of the dump (`dump_heap`): `key: value` lines for
/// the statistics (`-` for a span with no sample, as mwrap 2.x printed),
/// then `0xADDRESS\tGENERATION` per live page, by address.
pub fn heap(
    mask: u32,
    stats: &HeapPageStats,
    gc_count: u64,
    pages: &[HeapPageInfo],
    out: &mut impl LineSink,
) {
    let mut line = String::new();
    let mut emit = |line: &mut String| {
        out.line(line.as_bytes());
        line.clear();
    };
    if mask & DUMP_HEAP_STATS != 0 {
        for (name, st) in [
            ("lifespan", &stats.lifespan),
            ("deathspan", &stats.deathspan),
        ] {
            span(name, st, &mut line, &mut emit);
        }
        let _ = writeln!(line, "resurrects: {}", stats.resurrects);
        emit(&mut line);
        let _ = writeln!(line, "live_pages: {}", stats.live_pages);
        emit(&mut line);
        let _ = writeln!(line, "gc_count: {gc_count}");
        emit(&mut line);
    }
    if mask & DUMP_HEAP_PAGES != 0 {
        for p in pages {
            let _ = writeln!(line, "{:#x}\t{}", p.address, p.generation);
            emit(&mut line);
        }
    }
}

fn span(name: &str, st: &SpanStats, line: &mut String, emit: &mut impl FnMut(&mut String)) {
    if st.count == 0 {
        for stat in ["max", "min", "mean", "stddev"] {
            let _ = writeln!(line, "{name}_{stat}: -");
            emit(line);
        }
        return;
    }
    let _ = writeln!(line, "{name}_max: {}", st.max);
    emit(line);
    let _ = writeln!(line, "{name}_min: {}", st.min);
    emit(line);
    let _ = writeln!(line, "{name}_mean: {:.3}", st.mean);
    emit(line);
    let _ = writeln!(line, "{name}_stddev: {:.3}", st.stddev);
    emit(line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SiteFilter;
    use crate::key::SiteKey;
    use crate::options::DUMP_HEAP_ONLY;
    use crate::read::sites;
    use crate::read::tests::{charge, BareAddresses};
    use crate::sites::SiteTable;
    use crate::testing::{cx, Blocks};

    #[test]
    fn text_is_the_2x_format_in_output_order() {
        let t: SiteTable = SiteTable::new();
        let th = cx();
        let c = th.cx();
        let mut blocks = Blocks::new();
        let f = t.files().intern(&c, b"/app/x.rb").unwrap();
        charge(
            &t,
            &c,
            &mut blocks,
            SiteKey::Ruby { file: f, line: 7 },
            &[10001],
        );
        charge(
            &t,
            &c,
            &mut blocks,
            SiteKey::Native { address: 0x7f00 },
            &[5000, 5001],
        );
        let rows = sites(&t, &c, &SiteFilter::default(), &BareAddresses).unwrap();
        let mut out = Vec::new();
        text(&rows, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{:>16} {:>12} /app/x.rb:7\n{:>16} {:>12} [0x7f00]\n",
                10001, 1, 10001, 2
            )
        );
    }

    #[test]
    fn heap_statistics_and_pages() {
        let empty = HeapPageStats {
            live_pages: 2,
            lifespan: SpanStats {
                count: 0,
                ..Default::default()
            },
            deathspan: SpanStats {
                count: 0,
                ..Default::default()
            },
            resurrects: 0,
        };
        let pages = [
            HeapPageInfo {
                address: 0x10000,
                generation: 3,
            },
            HeapPageInfo {
                address: 0x20000,
                generation: 5,
            },
        ];
        let mut out = Vec::new();
        heap(
            DUMP_HEAP_STATS | DUMP_HEAP_PAGES | DUMP_HEAP_ONLY,
            &empty,
            9,
            &pages,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "lifespan_max: -\nlifespan_min: -\nlifespan_mean: -\nlifespan_stddev: -\n\
             deathspan_max: -\ndeathspan_min: -\ndeathspan_mean: -\ndeathspan_stddev: -\n\
             resurrects: 0\nlive_pages: 2\ngc_count: 9\n0x10000\t3\n0x20000\t5\n"
        );
        let some = HeapPageStats {
            live_pages: 1,
            lifespan: SpanStats {
                count: 2,
                min: 1,
                max: 4,
                mean: 2.5,
                stddev: 2.1213203,
            },
            deathspan: SpanStats {
                count: 1,
                min: 7,
                max: 7,
                mean: 7.0,
                stddev: 0.0,
            },
            resurrects: 1,
        };
        let mut out = Vec::new();
        heap(DUMP_HEAP_STATS, &some, 12, &pages, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "lifespan_max: 4\nlifespan_min: 1\nlifespan_mean: 2.500\nlifespan_stddev: 2.121\n\
             deathspan_max: 7\ndeathspan_min: 7\ndeathspan_mean: 7.000\ndeathspan_stddev: 0.000\n\
             resurrects: 1\nlive_pages: 1\ngc_count: 12\n"
        );
    }

    /// A Ruby location `a;b.rb:3` with a 2-frame Ruby and 2-frame native
    /// stack (100 bytes live), the same location without a stack (7 live),
    /// a Ruby location with only native frames (`c.rb:1`, 5 live) and a
    /// native location with its native frames (9 live).
    fn stacked_tables() -> (
        SiteTable,
        crate::stacks::StackTable,
        crate::testing::TestThread,
        Blocks,
    ) {
        use crate::stacks::{RubyFrame, Stack, StackTable};
        let t: SiteTable = SiteTable::new();
        let st = StackTable::new();
        let th = cx();
        let mut blocks = Blocks::new();
        {
            let c = th.cx();
            let f = t.files().intern(&c, b"a;b.rb").unwrap();
            let g = t.files().intern(&c, b"\xffc.rb").unwrap();
            let loc = t.intern(&c, SiteKey::Ruby { file: f, line: 3 });
            let s = Stack {
                native: &[0x10, 0x20],
                ruby: &[RubyFrame::new(f, 3), RubyFrame::new(f, 1)],
            };
            let child = t
                .intern_stack(&c, loc, st.intern(&c, &s, 0).unwrap())
                .unwrap();
            let loc2 = t.intern(&c, SiteKey::Ruby { file: g, line: 1 });
            let s2 = Stack {
                native: &[0x30],
                ruby: &[],
            };
            let child2 = t
                .intern_stack(&c, loc2, st.intern(&c, &s2, 0).unwrap())
                .unwrap();
            let nat = t.intern(&c, SiteKey::Native { address: 0x40 });
            let s3 = Stack {
                native: &[0x40, 0x50],
                ruby: &[],
            };
            let child3 = t
                .intern_stack(&c, nat, st.intern(&c, &s3, 0).unwrap())
                .unwrap();
            for (id, size) in [(child, 100), (loc, 7), (child2, 5), (child3, 9)] {
                // SAFETY: fresh test headers.
                unsafe { assert!(t.record_alloc(&c, id, 0, blocks.header(size), 0)) };
            }
        }
        (t, st, th, blocks)
    }

    #[test]
    fn folded_puts_ruby_frames_above_native_ones_outermost_first() {
        let (t, st, th, _blocks) = stacked_tables();
        let c = th.cx();
        let rows =
            crate::read::stacks(&t, &st, &c, &SiteFilter::default(), None, &BareAddresses).unwrap();
        let mut out = Vec::new();
        folded(&rows, 0, &mut out);
        assert_eq!(
            out,
            b"a\\x3bb.rb:1;a\\x3bb.rb:3;[0x20];[0x10] 100\n\
              [0x50];[0x40] 9\n\
              a\\x3bb.rb:3 7\n\
              \xffc.rb:1;[0x30] 5\n"
                .to_vec()
        );
        let mut out = Vec::new();
        folded(&rows, 8, &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
    }

    #[test]
    fn json_lists_locations_with_their_stacks() {
        let (t, st, th, _blocks) = stacked_tables();
        let c = th.cx();
        let rows = sites(&t, &c, &SiteFilter::default(), &BareAddresses).unwrap();
        let stacks =
            crate::read::stacks(&t, &st, &c, &SiteFilter::default(), None, &BareAddresses).unwrap();
        let mut out = Vec::new();
        json(&rows, &stacks, None, None, None, None, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], r#"{"mwrap":1,"locations":["#);
        assert_eq!(
            lines[1],
            r#"{"location":"a;b.rb:3","total":107,"allocations":2,"frees":0,"live_bytes":107,"live_count":2,"age_total":0,"max_lifespan":0,"stacks":[{"ruby":["a;b.rb:3","a;b.rb:1"],"native":["[0x10]","[0x20]"],"total":100,"allocations":1,"frees":0,"live_bytes":100,"live_count":1},{"ruby":[],"native":[],"total":7,"allocations":1,"frees":0,"live_bytes":7,"live_count":1}]},"#
        );
        // The mwrap escape of the 0xff byte, itself JSON-escaped.
        assert!(
            lines[3].starts_with(r#"{"location":"\\xffc.rb:1","#),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("]}"), "the last location has no comma");
        assert_eq!(lines[4], "]}");
    }

    #[test]
    fn json_with_leaks_adds_them_per_location_and_the_scan_at_the_end() {
        let (t, st, th, _blocks) = stacked_tables();
        let c = th.cx();
        let rows = sites(&t, &c, &SiteFilter::default(), &BareAddresses).unwrap();
        let stacks =
            crate::read::stacks(&t, &st, &c, &SiteFilter::default(), None, &BareAddresses).unwrap();
        let first = rows.rows()[0].snapshot.id;
        let by_location = [LeakCount {
            location: first,
            bytes: 100,
            count: 1,
        }];
        let leaks = Leaks {
            summary: crate::abi::LeakSummary {
                blocks: 5,
                bytes: 200,
                leaked_blocks: 1,
                leaked_bytes: 100,
                root_bytes: 4096,
                ..Default::default()
            },
            by_location: &by_location,
        };
        let mut out = Vec::new();
        json(
            &rows,
            &stacks,
            Some(&leaks),
            Some(42),
            Some(&[
                ("rss", Some(4096)),
                ("iseq", None),
                ("unexplained", Some(-12)),
            ]),
            Some(&|id| id as u64 * 10),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let temporary = first as u64 * 10;
        assert!(lines[1].contains(&format!(
            r#""max_lifespan":0,"temporary":{temporary},"leaked_bytes":100,"leaked_count":1,"stacks""#
        )));
        assert!(lines[2].contains(r#""leaked_bytes":0,"leaked_count":0,"#));
        assert_eq!(
            lines[4],
            r#"],"leak_scan":{"blocks":5,"bytes":200,"leaked_blocks":1,"leaked_bytes":100,"root_bytes":4096},"pid":42,"memory":{"rss":4096,"iseq":null,"unexplained":-12}}"#
        );
    }

    #[test]
    fn leak_lines_follow_a_summary_and_keep_min() {
        let summary = crate::abi::LeakSummary {
            blocks: 10,
            bytes: 5000,
            leaked_blocks: 3,
            leaked_bytes: 3000,
            ..Default::default()
        };
        let lines = [(&b"a.rb:1"[..], 2048u64, 2u64), (&b"b.rb:2"[..], 952, 1)];
        let mut out = Vec::new();
        leaks_text(&summary, lines.iter().copied(), 1000, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# mwrap leaks: 3 of 10 live blocks (3000 of 5000 bytes) are reached by no pointer\n\
             leaked             2048            2 a.rb:1\n"
        );
    }
}
