//! One renderer per format, shared by every output: the exit dump,
//! `Mwrap.dump` and any future endpoint. Renderers write whole lines to a
//! [`LineSink`], which decides how lines become writes.

use std::fmt::Write as _;

use crate::abi::{HeapPageInfo, HeapPageStats, SpanStats};
use crate::format::dump_line;
use crate::options::{DUMP_HEAP_PAGES, DUMP_HEAP_STATS};
use crate::read::SiteRows;

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
}
