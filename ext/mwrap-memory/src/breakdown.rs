//! Where the resident memory of this process is, part by part
//! (`Mwrap.memory_breakdown`, `Mwrap.memory_report`, the JSON exit dump's
//! `memory`), from what [`crate::maps`] and [`crate::allocator`] read.
//!
//! Page-level parts (resident pages, from smaps and mincore): `rss`,
//! `anon_rss`, `file_rss`, `ruby_heap`, `thread_stacks`, `mmap_other`,
//! `malloc_not_resident`. Byte-level parts (allocator statistics, address
//! space whether resident or not): `malloc_in_use`, `malloc_overhead`,
//! `iseq`; `malloc_free_held` less what is not resident. `unexplained` is
//! RSS minus the parts, measured apart (never defined so as to make it 0):
//! what the two kinds disagree on shows there.

use crate::allocator::{self, Allocator};
use crate::maps::{self, Mapping, Special, Walked, Walker};

/// A guard page before a stack is one page (glibc threads, Ruby's fiber
/// pool); a PROT_NONE mapping larger than this is a reservation instead
/// (the tail of a glibc arena heap, a jemalloc extent).
const MAX_GUARD: usize = 64 * 1024;

/// Every part, in bytes; None where it cannot be known.
#[derive(Clone, Copy, Debug, Default)]
pub struct Breakdown {
    rss: Option<u64>,
    anon_rss: Option<u64>,
    file_rss: Option<u64>,
    malloc_in_use: Option<u64>,
    malloc_overhead: Option<u64>,
    malloc_free_held: Option<u64>,
    /// Of the three malloc parts (byte-level), what is not resident:
    /// glibc's arenas and mmapped chunks minus their resident pages.
    /// Not summed; taken out of `malloc_free_held` (see `breakdown`),
    /// what exceeds it (untouched parts of in-use blocks) shows as a
    /// negative `unexplained`.
    malloc_not_resident: Option<u64>,
    ruby_heap: Option<u64>,
    iseq: Option<u64>,
    thread_stacks: Option<u64>,
    mmap_other: Option<u64>,
    unexplained: Option<i64>,
    /// What the allocator says it hands out, headers and rounding included
    /// (`malloc_in_use + malloc_overhead` when both are known): stands in
    /// for the two when the preload is absent.
    allocator_in_use: Option<u64>,
}

impl Breakdown {
    /// The parts that add up to RSS, with `malloc_in_use +
    /// malloc_overhead` replaced by the allocator's own in-use total when
    /// they are unknown (no preload).
    fn summed_parts(&self) -> i128 {
        let malloc = match (self.malloc_in_use, self.malloc_overhead) {
            (Some(a), Some(b)) => Some(a + b),
            _ => self.allocator_in_use,
        };
        [
            self.file_rss,
            malloc,
            self.malloc_free_held,
            self.ruby_heap,
            self.thread_stacks,
            self.mmap_other,
        ]
        .iter()
        .flatten()
        .map(|&n| n as i128)
        .sum()
    }

    /// Free-but-held memory is more than a quarter of what is in use
    /// (tracked bytes, or the allocator's in-use total without the preload).
    pub fn advise(&self) -> bool {
        match (
            self.malloc_free_held,
            self.malloc_in_use.or(self.allocator_in_use),
        ) {
            (Some(free), Some(in_use)) => free > in_use / 4,
            _ => false,
        }
    }
}

/// Resident bytes of Ruby's heap pages: mincore over each run of adjacent
/// pages the preload knows.
fn resident_heap_pages(pages: &[u64], page_size: usize) -> u64 {
    let mut total = 0;
    let mut i = 0;
    while i < pages.len() {
        let start = pages[i] as usize;
        let mut end = start + page_size;
        i += 1;
        while i < pages.len() && pages[i] as usize == end {
            end += page_size;
            i += 1;
        }
        total += maps::resident_bytes(start, end - start).unwrap_or(0);
    }
    total
}

/// Resident bytes of the stacks, and of the anonymous memory left over,
/// from smaps (and mincore over the mappings that smaps cannot tell apart).
struct Classified {
    thread_stacks: u64,
    /// In glibc's mappings: `[heap]`, arena heaps, mmapped chunks.
    malloc_resident: u64,
    /// In none of the other parts: unattributed anonymous mappings and the
    /// copy-on-write pages of file mappings.
    other: u64,
}

/// Whether `maps[i]` comes right after a guard page: an inaccessible
/// anonymous mapping of at most [`MAX_GUARD`] bytes that ends where it
/// starts. glibc puts one below each thread's stack, Ruby one below each
/// stack of its fiber pool.
fn follows_guard(maps: &[Mapping], i: usize) -> bool {
    let Some(guard) = i.checked_sub(1).and_then(|g| maps.get(g)) else {
        return false;
    };
    let map = &maps[i];
    guard.end == map.start
        && guard.anonymous
        && !guard.readable
        && !guard.writable
        && guard.len() <= MAX_GUARD
        && map.readable
        && map.writable
        // A glibc arena heap starts aligned and may follow another's tail.
        && !map.start.is_multiple_of(maps::GLIBC_HEAP_MAX)
}

fn classify(maps: &[Mapping], stacks: &[usize], walker: &Walker<'_>) -> Classified {
    let mut thread_stacks = 0;
    let mut brk_heap = 0;
    let mut walked = Walked::default();
    let mut cow = 0;
    for (i, map) in maps.iter().enumerate() {
        if !map.anonymous {
            // Copy-on-write pages of a file mapping (a library's data).
            cow += map.anon_bytes;
            continue;
        }
        match map.kind {
            // glibc's main arena: malloc's, counted by its statistics.
            Special::Heap => {
                brk_heap += map.anon_bytes;
                continue;
            }
            Special::Stack => {
                thread_stacks += map.anon_bytes;
                continue;
            }
            Special::None | Special::Kernel => {}
        }
        if stacks.iter().any(|&a| map.contains(a)) || follows_guard(maps, i) {
            thread_stacks += map.anon_bytes;
        } else if map.readable {
            walker.walk(map, &mut walked);
        } else {
            cow += map.anon_bytes;
        }
    }
    Classified {
        thread_stacks,
        malloc_resident: brk_heap + walked.malloc,
        other: walked.other + cow,
    }
}

/// What the caller knows that the kernel and the allocator do not.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs<'a> {
    /// Whether mwrap's preload tracks this process (its tables are known).
    pub tracked: bool,
    /// Bytes live through the malloc family as mwrap tracks them.
    pub malloc_in_use: Option<u64>,
    /// Ruby's live heap pages (sorted addresses) and their size, when the
    /// preload knows them.
    pub ruby_pages: &'a [u64],
    pub ruby_page_size: usize,
    /// Without the preload, Ruby's own count of its heap page bytes.
    pub estimated_ruby_heap: Option<u64>,
    /// One address inside each live thread's stack.
    pub stacks: &'a [usize],
    /// Bytes of instruction sequences, when Ruby could be asked.
    pub iseq: Option<u64>,
}

/// Measures every part now.
pub fn measure(inputs: &Inputs<'_>) -> Breakdown {
    let ruby_heap = if inputs.tracked {
        Some(resident_heap_pages(
            inputs.ruby_pages,
            inputs.ruby_page_size,
        ))
    } else {
        inputs.estimated_ruby_heap
    };
    let allocator = allocator::allocator();
    let rollup = maps::rollup();
    let classified = maps::smaps().map(|smaps| {
        let walker = Walker {
            ruby_pages: inputs.ruby_pages,
            ruby_page_size: inputs.ruby_page_size,
            glibc: !allocator.is_jemalloc(),
        };
        let mut c = classify(&smaps.maps, inputs.stacks, &walker);
        // The buffer smaps was read into is ours, and goes with `smaps`.
        c.other = c.other.saturating_sub(smaps.own_resident());
        c
    });
    let stats = allocator::stats();
    let mut b = Breakdown {
        rss: rollup.map(|r| r.rss),
        anon_rss: rollup.map(|r| r.anon_bytes),
        file_rss: rollup.map(|r| r.rss.saturating_sub(r.anon_bytes)),
        malloc_in_use: inputs.malloc_in_use,
        malloc_overhead: match (stats, inputs.malloc_in_use) {
            (Some(s), Some(tracked)) => Some(s.in_use.saturating_sub(tracked)),
            _ => None,
        },
        malloc_free_held: stats.map(|s| s.free_held),
        malloc_not_resident: match (stats.and_then(|s| s.mapped), &classified) {
            (Some(mapped), Some(c)) => Some(mapped.saturating_sub(c.malloc_resident)),
            _ => None,
        },
        ruby_heap,
        iseq: inputs.iseq,
        thread_stacks: classified.as_ref().map(|c| c.thread_stacks),
        mmap_other: None,
        unexplained: None,
        allocator_in_use: stats.map(|s| s.in_use),
    };
    b.mmap_other = classified.map(|c| {
        let mut other = c.other;
        if !inputs.tracked {
            // The walk could not tell Ruby's heap pages apart.
            other = other.saturating_sub(b.ruby_heap.unwrap_or(0));
        }
        if let (Allocator::Jemalloc(_), Some(s)) = (allocator, stats) {
            // jemalloc's mappings carry no header to tell them by: its
            // resident bytes (in_use + free_held) come out of the leftover.
            other = other.saturating_sub(s.in_use + s.free_held);
        }
        other
    });
    // glibc counts trimmed and never-touched free memory (a trimmed page
    // stays inside a free chunk, the top chunk's tail was never written)
    // as free: held in RSS is only what of it is resident.
    if let (Some(free), Some(absent)) = (b.malloc_free_held, b.malloc_not_resident) {
        b.malloc_free_held = Some(free.saturating_sub(absent));
    }
    b.unexplained = b.rss.map(|rss| {
        (rss as i128 - b.summed_parts()).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    });
    b
}

/// The parts in the order they are reported; `iseq` is part of
/// `malloc_in_use`, for information.
pub fn rows(b: &Breakdown) -> [(&'static str, Option<i128>); 12] {
    let n = |v: Option<u64>| v.map(i128::from);
    [
        ("rss", n(b.rss)),
        ("anon_rss", n(b.anon_rss)),
        ("file_rss", n(b.file_rss)),
        ("malloc_in_use", n(b.malloc_in_use)),
        ("malloc_overhead", n(b.malloc_overhead)),
        ("malloc_free_held", n(b.malloc_free_held)),
        ("malloc_not_resident", n(b.malloc_not_resident)),
        ("ruby_heap", n(b.ruby_heap)),
        ("iseq", n(b.iseq)),
        ("thread_stacks", n(b.thread_stacks)),
        ("mmap_other", n(b.mmap_other)),
        ("unexplained", b.unexplained.map(i128::from)),
    ]
}

/// "117.7 MiB", "-3.0 KiB", "512 B".
fn human(bytes: i128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes.unsigned_abs() as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let sign = if bytes < 0 { "-" } else { "" };
    if unit == 0 {
        format!("{sign}{value} {}", UNITS[0])
    } else {
        format!("{sign}{value:.1} {}", UNITS[unit])
    }
}

/// The report's text (see `memory_report`): a header line, one line per
/// part whose columns (label, bytes, human units, percent of RSS) are
/// separated by at least two spaces and hold none, so that the Rack page
/// can split them; then perhaps the advice line.
pub fn report(b: &Breakdown) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20}  {:>14}  {:>11}  {:>8}\n",
        "part", "bytes", "human", "% of rss"
    ));
    for (name, value) in rows(b) {
        let label = match name {
            "iseq" => "  iseq (in malloc)",
            "malloc_not_resident" => "  not resident",
            "anon_rss" => "  anon_rss",
            "file_rss" => "  file_rss",
            other => other,
        };
        let Some(value) = value else {
            out.push_str(&format!("{label:<20}  {:>14}\n", "unknown"));
            continue;
        };
        let percent = match b.rss {
            Some(rss) if rss > 0 => format!("{:.1} %", value as f64 * 100.0 / rss as f64),
            _ => String::new(),
        };
        let line = format!(
            "{label:<20}  {value:>14}  {:>11}  {percent:>8}",
            human(value)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if b.advise() {
        let free = b.malloc_free_held.unwrap_or(0);
        out.push_str(&format!(
            "advice: malloc holds {} free, more than a quarter of what is in use: \
             MALLOC_ARENA_MAX=2 caps glibc's arenas, Mwrap.trim (malloc_trim) gives free pages back \
             now, and jemalloc (LD_PRELOAD=libjemalloc.so.2) fragments less\n",
            human(i128::from(free))
        ));
    }
    out
}

/// `Mwrap.trim`: has the allocator give free memory back (glibc
/// `malloc_trim(0)`, jemalloc's purge of every arena) and returns the RSS
/// bytes that released (never negative); nil when jemalloc refused the
/// purge or RSS cannot be read (having trimmed all the same).
pub fn trim() -> Option<u64> {
    // Trims even when RSS cannot be read: the memory still goes back.
    let before = maps::rollup().map(|r| r.rss);
    if !allocator::give_back_free_memory() {
        return None;
    }
    let after = maps::rollup()?.rss;
    Some(before?.saturating_sub(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(-3 * 1024), "-3.0 KiB");
        assert_eq!(human(117 * 1024 * 1024 + 700 * 1024), "117.7 MiB");
    }

    #[test]
    fn advice_when_free_held_exceeds_a_quarter_of_in_use() {
        let mut b = Breakdown {
            rss: Some(1000),
            malloc_in_use: Some(400),
            malloc_free_held: Some(100),
            ..Default::default()
        };
        assert!(!b.advise());
        assert!(!report(&b).contains("advice"));
        b.malloc_free_held = Some(101);
        assert!(b.advise());
        assert!(report(&b).contains("MALLOC_ARENA_MAX"));
    }

    #[test]
    fn report_columns_split_on_two_spaces() {
        let b = Breakdown {
            rss: Some(123_456_789_012),
            malloc_not_resident: Some(1023 * 1024 + 1000),
            unexplained: Some(-1_000_000),
            ..Default::default()
        };
        let text = report(&b);
        let cells =
            |line: &str| -> usize { line.trim().split("  ").filter(|c| !c.is_empty()).count() };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 13);
        assert_eq!(cells(lines[0]), 4);
        assert!(lines
            .iter()
            .any(|l| l.trim_start().starts_with("not resident") && cells(l) == 4));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("malloc_in_use") && cells(l) == 2));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("unexplained") && l.contains("-976.6 KiB")));
    }

    #[test]
    fn parts_sum_with_the_allocator_total_standing_in_for_tracked_ones() {
        let b = Breakdown {
            rss: Some(1000),
            file_rss: Some(100),
            allocator_in_use: Some(300),
            malloc_free_held: Some(50),
            ..Default::default()
        };
        assert_eq!(b.summed_parts(), 450);
        let tracked = Breakdown {
            malloc_in_use: Some(200),
            malloc_overhead: Some(20),
            ..b
        };
        assert_eq!(tracked.summed_parts(), 370);
    }
}
