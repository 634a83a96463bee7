//! `MWRAP` handling: options are read once when the profiler starts, and the
//! dump is written when the process exits (from `.fini_array`, which runs
//! after every other library's destructors since the preload was loaded
//! first).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use mwrap_core::abi::{HeapPageInfo, SpanStats};
use mwrap_core::format::{dump_line, ByteWriter};
use mwrap_core::options::{self, Options, DUMP_HEAP_ONLY, DUMP_HEAP_PAGES, DUMP_HEAP_STATS};

use crate::diag::{write_all, write_stderr};
use crate::{names, query, thread_state, tracker};
use mwrap_core::errno;

struct OptionsCell(UnsafeCell<Option<Options>>);
// SAFETY: written once before CONFIGURED is published, read after.
unsafe impl Sync for OptionsCell {}
static OPTIONS: OptionsCell = OptionsCell(UnsafeCell::new(None));
static CONFIGURED: AtomicBool = AtomicBool::new(false);

fn options() -> Option<&'static Options> {
    if !CONFIGURED.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: see OptionsCell.
    unsafe { (*OPTIONS.0.get()).as_ref() }
}

/// Reads `MWRAP`, reports bad entries as one stderr line, and makes
/// `dump_path` absolute (the program may chdir before it exits).
pub fn configure_from_env() {
    // SAFETY: getenv returns a NUL-terminated string or NULL.
    let raw = unsafe { libc::getenv(c"MWRAP".as_ptr()) };
    if raw.is_null() {
        return;
    }
    let value = unsafe { core::ffi::CStr::from_ptr(raw) }.to_bytes();
    let (mut opts, mut problems) = options::parse(value);
    if let Some(path) = opts.dump_path.take() {
        match absolute_dump_path(&path) {
            Ok(abs) => opts.dump_path = Some(abs),
            Err(e) => problems.push(format!(
                "cannot open dump_path {}: {}",
                options::quoted(&path),
                strerror(e)
            )),
        }
    }
    if let Some(line) = options::problems_line(&problems) {
        write_stderr(line.as_bytes());
    }
    // SAFETY: only the thread that won the start race gets here, once.
    unsafe { *OPTIONS.0.get() = Some(opts) };
    CONFIGURED.store(true, Ordering::Release);
}

/// The absolute form of `path`, checked by opening it as the dump will.
fn absolute_dump_path(path: &[u8]) -> Result<Vec<u8>, i32> {
    let mut abs = Vec::new();
    if path.first() != Some(&b'/') {
        let mut cwd = [0u8; 4096];
        // SAFETY: getcwd writes at most cwd.len() bytes.
        if unsafe { libc::getcwd(cwd.as_mut_ptr().cast(), cwd.len()) }.is_null() {
            return Err(errno::get());
        }
        let len = cwd.iter().position(|&b| b == 0).unwrap_or(0);
        abs.extend_from_slice(&cwd[..len]);
        abs.push(b'/');
    }
    abs.extend_from_slice(path);
    let fd = open_dump(&abs)?;
    // SAFETY: fd was just opened by us.
    unsafe { libc::close(fd) };
    Ok(abs)
}

fn open_dump(path: &[u8]) -> Result<i32, i32> {
    let mut c = path.to_vec();
    c.push(0);
    // SAFETY: c is NUL-terminated.
    let fd = unsafe {
        libc::open(
            c.as_ptr().cast(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o666,
        )
    };
    if fd < 0 {
        Err(errno::get())
    } else {
        Ok(fd)
    }
}

fn strerror(e: i32) -> String {
    // SAFETY: strerror returns a static or thread-local string.
    let s = unsafe { core::ffi::CStr::from_ptr(libc::strerror(e)) };
    s.to_string_lossy().into_owned()
}

/// The dump text: one line per location with total above `min`, largest
/// first, in mwrap 2.x's format.
pub fn render_dump(min: u64) -> Vec<u8> {
    let mut sites = query::sites_above(min);
    sites.sort_by(|a, b| b.total.cmp(&a.total).then(a.id.cmp(&b.id)));
    let mut text = Vec::with_capacity(sites.len() * 80);
    let mut name = Vec::new();
    let mut line = Vec::new();
    for s in &sites {
        name.clear();
        if !names::site_name(s.id, &mut name) {
            continue;
        }
        // room for the name, two counters of up to 20 digits and separators
        line.resize(name.len() + 64, 0);
        let mut w = ByteWriter::new(&mut line);
        dump_line(&mut w, s.total, s.allocations, &name);
        text.extend_from_slice(w.as_bytes());
    }
    text
}

/// The heap page part of the dump (`dump_heap`): `key: value` lines for
/// the statistics, then `0xADDRESS\tGENERATION` per live page.
pub fn render_heap(mask: u32) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = String::new();
    if mask & DUMP_HEAP_STATS != 0 {
        let s = tracker::HEAP.stats();
        let span = |out: &mut String, name: &str, st: &SpanStats| {
            if st.count == 0 {
                // No sample yet (like mwrap 2.x, which printed "-").
                for stat in ["max", "min", "mean", "stddev"] {
                    let _ = writeln!(out, "{name}_{stat}: -");
                }
                return;
            }
            let _ = writeln!(out, "{name}_max: {}", st.max);
            let _ = writeln!(out, "{name}_min: {}", st.min);
            let _ = writeln!(out, "{name}_mean: {:.3}", st.mean);
            let _ = writeln!(out, "{name}_stddev: {:.3}", st.stddev);
        };
        span(&mut out, "lifespan", &s.lifespan);
        span(&mut out, "deathspan", &s.deathspan);
        let _ = writeln!(out, "resurrects: {}", s.resurrects);
        let _ = writeln!(out, "live_pages: {}", s.live_pages);
        let _ = writeln!(out, "gc_count: {}", tracker::current_generation());
    }
    if mask & DUMP_HEAP_PAGES != 0 {
        let mut pages: Vec<HeapPageInfo> = Vec::new();
        tracker::HEAP.live(&mut pages);
        for p in &pages {
            let _ = writeln!(out, "{:#x}\t{}", p.address, p.generation);
        }
    }
    out.into_bytes()
}

/// Writes `text` in pieces of whole lines no larger than PIPE_BUF where
/// possible, so dumps of several processes never interleave within a line.
pub fn write_lines(fd: i32, text: &[u8]) {
    const PIECE: usize = 4096;
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(PIECE);
        if end < rest.len() {
            end = match rest[..end].iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                // one line longer than a piece: write it whole
                None => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |nl| nl + 1),
            };
        }
        if !write_all(fd, &rest[..end]) {
            return;
        }
        rest = &rest[end..];
    }
}

extern "C" fn dump_at_exit() {
    thread_state::guarded(|_| {
        let Some(opts) = options() else { return };
        if !opts.wants_dump() {
            return;
        }
        let mut text = Vec::new();
        if opts.dump_heap & DUMP_HEAP_ONLY == 0 {
            text = render_dump(opts.dump_min);
        }
        text.extend_from_slice(&render_heap(opts.dump_heap));
        // dump_heap alone, like mwrap 2.x, goes to stderr.
        let fd = opts.dump_fd.or((opts.dump_path.is_none()).then_some(2));
        if let Some(fd) = fd {
            write_lines(fd, &text);
        }
        if let Some(path) = &opts.dump_path {
            match open_dump(path) {
                Ok(fd) => {
                    write_lines(fd, &text);
                    // SAFETY: our own descriptor.
                    unsafe { libc::close(fd) };
                }
                Err(e) => write_stderr(
                    format!(
                        "mwrap: cannot open dump_path {}: {}\n",
                        options::quoted(path),
                        strerror(e)
                    )
                    .as_bytes(),
                ),
            }
        }
    });
}

// Also in test builds: without MWRAP it does nothing.
#[used]
#[link_section = ".fini_array"]
static DUMP_AT_EXIT: extern "C" fn() = dump_at_exit;
