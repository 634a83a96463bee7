//! Leaked or still referenced (`Mwrap.leaks`, `MWRAP=dump_leaks:1`): which
//! live blocks no pointer reaches, found in a copy of the process.
//!
//! The process is copied (`clone` with fork semantics) while the fork gate
//! keeps every other thread out of the tables, so the copy holds whole
//! tables and a still picture of memory; this process stands still only
//! for the copy. The copy is invisible to the program: it gets no
//! `SIGCHLD` and the program's `wait(-1)` cannot reap it (a clone child,
//! reaped with `__WALL`), no `pthread_atfork` handler runs, and it leaves
//! with `exit_group`, running nothing of the program's. In the copy, one
//! thread and no allocator: its memory comes from [`map_zeroed`], so it
//! scans without changing what it scans.
//!
//! Roots are every writable mapping (see [`mwrap_core::maps::is_root`])
//! less the tracked blocks (bookkeeping and bytes), the profiler's own
//! mappings and its own data and bss; they are read with
//! `process_vm_readv` of the copy itself, so a page that cannot be read
//! is skipped rather than fatal. The answer (per site: leaked bytes and
//! blocks) comes back through a pipe.

use core::mem::size_of;
use core::ptr::NonNull;

use mwrap_core::abi::{LeakScan, LeakSummary};
use mwrap_core::errno;
use mwrap_core::leaks::{
    glibc_in_use_chunks, page_slots_needed, sort_blocks, Marker, PageSlot, ScanBlock,
};
use mwrap_core::maps;
use mwrap_core::mem::{map_zeroed, unmap, OWN_MAPPINGS};
use mwrap_core::read;
use mwrap_core::render::LeakCount;

use crate::copy::{after_copy, before_copy, in_copy, monotonic_nanos};
use crate::names::Symbols;
use crate::per_thread::{self, lock_cx};
use crate::state::SITES;

/// How a scan went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// The copy could not be made (its errno); nothing changed.
    Copy(i32),
    /// The copy had no memory for its work.
    NoMemory,
    /// The copy died or sent no whole answer; its wait status, or -1.
    Failed(i32),
}

/// The leaked blocks of one location.
#[derive(Clone, Copy, Debug)]
pub struct LeakLine {
    pub location: u32,
    pub bytes: u64,
    pub count: u64,
    name: (usize, usize),
}

/// What a finished scan found: per location, most leaked bytes first.
#[derive(Default)]
pub struct LeakReport {
    pub summary: LeakSummary,
    pub lines: Vec<LeakLine>,
    names: Vec<u8>,
}

impl LeakReport {
    pub fn name(&self, line: &LeakLine) -> &[u8] {
        &self.names[line.name.0..line.name.0 + line.name.1]
    }

    /// The counts by location id, for a renderer.
    pub fn by_location(&self) -> Result<Vec<LeakCount>, ScanError> {
        let mut out = Vec::new();
        out.try_reserve(self.lines.len())
            .map_err(|_| ScanError::NoMemory)?;
        out.extend(self.lines.iter().map(|l| LeakCount {
            location: l.location,
            bytes: l.bytes,
            count: l.count,
        }));
        out.sort_unstable_by_key(|l| l.location);
        Ok(out)
    }
}

impl ScanError {
    /// Why, in words.
    pub fn describe(self) -> String {
        match self {
            ScanError::Copy(e) => format!(
                "cannot copy the process to scan it (fork: {})",
                crate::diag::strerror(e)
            ),
            ScanError::NoMemory => "no memory for the scan".to_string(),
            ScanError::Failed(status) if status >= 0 && libc::WIFSIGNALED(status) => format!(
                "the scanning copy died of signal {}",
                libc::WTERMSIG(status)
            ),
            ScanError::Failed(_) => "the scanning copy sent no whole answer".to_string(),
        }
    }
}

/// A whole scan on this thread (the exit dump): begin, then finish.
pub fn scan(only: u32) -> Result<LeakReport, ScanError> {
    let scan = begin()?;
    finish(&scan, only)
}

/// Copies the process; the copy scans itself and answers on a pipe.
pub fn begin() -> Result<LeakScan, ScanError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ScanError::Copy(errno::get()));
    }
    let [read_end, write_end] = fds;
    let own = OwnSegments::find();
    let glibc = allocator_is_glibc();
    // The calling thread's callee-saved registers, in memory the copy
    // reads: a pointer held only in one of them still anchors its block.
    let registers = callee_saved_registers();
    let started = monotonic_nanos();
    before_copy();
    // SAFETY: clone with no flags and no new stack is fork(2) at the
    // kernel's level, with no exit signal: the child returns 0 here on a
    // copy of this stack.
    let pid = unsafe { libc::syscall(libc::SYS_clone, 0usize, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        in_copy();
        core::hint::black_box(&registers);
        // SAFETY: the copy is single-threaded and only reads.
        let code = unsafe { scan_in_copy(write_end, &own, glibc) };
        exit_copy(code);
    }
    let copy_errno = errno::get();
    after_copy();
    let pause_nanos = monotonic_nanos() - started;
    core::hint::black_box(&registers);
    // SAFETY: our own descriptor, not needed in this process.
    unsafe { libc::close(write_end) };
    if pid < 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(read_end) };
        errno::set(copy_errno);
        return Err(ScanError::Copy(copy_errno));
    }
    Ok(LeakScan {
        pid: pid as i32,
        fd: read_end,
        pause_nanos,
    })
}

/// Reads the copy's answer, reaps it, and adds its sites up by location
/// (of `only`, unless 0).
pub fn finish(scan: &LeakScan, only: u32) -> Result<LeakReport, ScanError> {
    let answer = read_answer(scan.fd);
    // SAFETY: the descriptor begin() opened.
    unsafe { libc::close(scan.fd) };
    let status = reap(scan.pid);
    let Some(answer) = answer else {
        return Err(ScanError::NoMemory);
    };
    let (mut summary, rows) = match parse_answer(&answer) {
        Some(parsed) => parsed,
        None if status == Some(EXIT_NO_MEMORY << 8) => return Err(ScanError::NoMemory),
        None => return Err(ScanError::Failed(status.unwrap_or(-1))),
    };
    summary.pause_nanos = scan.pause_nanos;
    summary.child_status = status.unwrap_or(-1);
    let mut report = LeakReport {
        summary,
        ..Default::default()
    };
    // Busy (if not already, as in the exit dump): naming native frames
    // allocates, untracked.
    let data = per_thread::current().map(per_thread::data);
    let entered = data.is_some_and(|d| d.enter_busy());
    let added = by_location(rows, only, &mut report);
    if entered {
        data.inspect(|d| d.leave_busy());
    }
    added.map(|()| report)
}

fn by_location(
    rows: impl Iterator<Item = AnswerRow>,
    only: u32,
    report: &mut LeakReport,
) -> Result<(), ScanError> {
    let mut sums: Vec<(u32, u64, u64)> = Vec::new();
    for row in rows {
        let Some(location) = SITES.location_of(row.site) else {
            continue;
        };
        if only != 0 && location != only {
            continue;
        }
        sums.try_reserve(1).map_err(|_| ScanError::NoMemory)?;
        sums.push((location, row.bytes, row.count));
    }
    // a location's stack sites are added to it
    sums.sort_unstable_by_key(|s| s.0);
    sums.dedup_by(|later, first| {
        let same = later.0 == first.0;
        if same {
            first.1 += later.1;
            first.2 += later.2;
        }
        same
    });
    report
        .lines
        .try_reserve(sums.len())
        .map_err(|_| ScanError::NoMemory)?;
    for (location, bytes, count) in sums {
        let Some(key) = SITES.key(location) else {
            continue;
        };
        let at = report.names.len();
        read::name_key(key, SITES.files(), &Symbols, &mut report.names)
            .map_err(|_| ScanError::NoMemory)?;
        report.lines.push(LeakLine {
            location,
            bytes,
            count,
            name: (at, report.names.len() - at),
        });
    }
    let names = &report.names;
    let name = |l: &LeakLine| &names[l.name.0..l.name.0 + l.name.1];
    report
        .lines
        .sort_unstable_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| name(a).cmp(name(b))));
    Ok(())
}

// --- the answer on the pipe -------------------------------------------

const ANSWER_MAGIC: u64 = u64::from_le_bytes(*b"mwrapLK1");
const ANSWER_END: u64 = u64::from_le_bytes(*b"mwrapEND");

/// The copy's exit status when it had no memory for its work.
const EXIT_NO_MEMORY: i32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AnswerHeader {
    magic: u64,
    summary: LeakSummary,
    rows: u64,
}

/// One site's leaked blocks.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AnswerRow {
    site: u32,
    _reserved: u32,
    bytes: u64,
    count: u64,
}

fn read_answer(fd: i32) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: read(2) into a local buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno::get() == libc::EINTR {
                continue;
            }
            return Some(out);
        }
        if n == 0 {
            return Some(out);
        }
        out.try_reserve(n as usize).ok()?;
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Waits for the copy; its wait status, or None when it could not be had
/// (the program reaped every child with `__WALL`, say).
fn reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid of our own child into a local.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc == pid {
            return Some(status);
        }
        if rc < 0 && errno::get() == libc::EINTR {
            continue;
        }
        return None;
    }
}

fn parse_answer(bytes: &[u8]) -> Option<(LeakSummary, impl Iterator<Item = AnswerRow> + '_)> {
    let head = size_of::<AnswerHeader>();
    let row = size_of::<AnswerRow>();
    if bytes.len() < head + 8 {
        return None;
    }
    // SAFETY: `head` bytes, read unaligned; every bit pattern is valid.
    let header: AnswerHeader = unsafe { bytes.as_ptr().cast::<AnswerHeader>().read_unaligned() };
    let rows = usize::try_from(header.rows).ok()?;
    let end = rows.checked_mul(row)?.checked_add(head)?;
    if header.magic != ANSWER_MAGIC || bytes.len() != end + 8 {
        return None;
    }
    if bytes[end..] != ANSWER_END.to_ne_bytes() {
        return None;
    }
    let rows = bytes[head..end].chunks_exact(row).map(|r| {
        // SAFETY: one row's bytes, read unaligned; every bit pattern is valid.
        unsafe { r.as_ptr().cast::<AnswerRow>().read_unaligned() }
    });
    Some((header.summary, rows))
}

// --- in the copy --------------------------------------------------------

/// Leaves the copy at once: no exit handler, no destructor, no dump.
fn exit_copy(code: i32) -> ! {
    loop {
        // SAFETY: exit_group ends the (single-threaded) copy.
        unsafe { libc::syscall(libc::SYS_exit_group, code) };
    }
}

/// Zeroed memory of the copy's own, as a slice of `T`.
struct Scratch<T> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T: Copy> Scratch<T> {
    fn new(len: usize) -> Option<Self> {
        let bytes = len.max(1).checked_mul(size_of::<T>())?;
        let ptr = map_zeroed(bytes)?.cast::<T>();
        Some(Scratch { ptr, len })
    }

    fn bytes(&self) -> usize {
        self.len.max(1) * size_of::<T>()
    }

    fn slice(&mut self) -> &mut [T] {
        // SAFETY: `len` zeroed elements (T is plain data: all-zero is valid
        // for every T used here), owned by this value.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for Scratch<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used.
        unsafe { unmap(self.ptr.cast(), self.len.max(1) * size_of::<T>()) };
    }
}

/// The scan itself; returns the copy's exit status.
///
/// # Safety
/// Only in the copy, which is single-threaded.
unsafe fn scan_in_copy(out: i32, own: &OwnSegments, glibc: bool) -> i32 {
    let Some(record) = per_thread::current() else {
        return 3;
    };
    let data = per_thread::data(record);
    data.enter_busy();
    let cx = lock_cx(record);
    let started = monotonic_nanos();
    let n = SITES.live_block_count(&cx) as usize;
    let (Some(mut blocks), Some(mut pending)) =
        (Scratch::<ScanBlock>::new(n), Scratch::<u32>::new(n))
    else {
        return EXIT_NO_MEMORY;
    };
    let mut filled = 0;
    let mut bytes = 0u64;
    let slots = blocks.slice();
    SITES.for_each_live_block(&cx, |site, b| {
        if let Some(slot) = slots.get_mut(filled) {
            *slot = ScanBlock {
                start: b.user,
                end: b.user + b.size,
                raw: b.raw,
                site,
                marked: 0,
            };
            filled += 1;
            bytes += b.size as u64;
        }
    });
    let Some(mut excluded) = own.with_own_mappings() else {
        return EXIT_NO_MEMORY;
    };
    let Some(mut buf) = Scratch::<usize>::new(ROOT_CHUNK / size_of::<usize>()) else {
        return EXIT_NO_MEMORY;
    };
    let Some(mut maps_text) = read_maps() else {
        return EXIT_NO_MEMORY;
    };
    let mut scratch_bytes = blocks.bytes() + pending.bytes() + excluded.bytes() + buf.bytes();
    scratch_bytes += maps_text.0.bytes();
    let blocks_slice = &mut blocks.slice()[..filled];
    sort_blocks(blocks_slice);
    let Some(mut slots) = Scratch::<PageSlot>::new(page_slots_needed(blocks_slice)) else {
        return EXIT_NO_MEMORY;
    };
    scratch_bytes += slots.bytes();
    let mut marker = Marker::new(blocks_slice, pending.slice(), slots.slice());
    let mut root_bytes = 0u64;
    let text = &maps_text.0.slice()[..maps_text.1];
    let excluded = excluded.sorted();
    for line in text.split(|&c| c == b'\n') {
        let Some(m) = maps::parse_line(line) else {
            continue;
        };
        if !maps::is_root(&m) {
            continue;
        }
        let in_place = !m.shared && (m.path.is_empty() || m.path.starts_with(b"["));
        let how = match (in_place, glibc) {
            (true, true) => RootRead::InPlaceSkippingFreeChunks(m.start, m.end),
            (true, false) => RootRead::InPlace,
            (false, _) => RootRead::Copied,
        };
        for_each_piece_outside(m.start, m.end, excluded, |start, end| {
            root_bytes += scan_root(&mut marker, start, end, how, buf.slice());
        });
    }
    // SAFETY: every block is live memory of this (copied) process.
    unsafe { marker.drain() };
    let site_count = SITES.site_count() as usize;
    let Some(mut per_site) = Scratch::<(u64, u64)>::new(site_count + 1) else {
        return EXIT_NO_MEMORY;
    };
    scratch_bytes += per_site.bytes();
    let sums = per_site.slice();
    let (mut leaked_blocks, mut leaked_bytes) = (0u64, 0u64);
    for b in marker.blocks().iter().filter(|b| b.marked == 0) {
        let size = (b.end - b.start) as u64;
        if let Some(s) = sums.get_mut(b.site as usize) {
            s.0 += size;
            s.1 += 1;
        }
        leaked_blocks += 1;
        leaked_bytes += size;
    }
    let rows = sums.iter().filter(|s| s.1 > 0).count();
    let header = AnswerHeader {
        magic: ANSWER_MAGIC,
        summary: LeakSummary {
            blocks: filled as u64,
            bytes,
            leaked_blocks,
            leaked_bytes,
            root_bytes,
            scratch_bytes: scratch_bytes as u64,
            scan_nanos: monotonic_nanos() - started,
            pause_nanos: 0,
            child_status: 0,
            _reserved: 0,
        },
        rows: rows as u64,
    };
    let answer_len = size_of::<AnswerHeader>() + rows * size_of::<AnswerRow>() + 8;
    let Some(mut answer) = Scratch::<u8>::new(answer_len) else {
        return EXIT_NO_MEMORY;
    };
    let a = answer.slice();
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        a[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(as_bytes(&header));
    for (site, s) in sums.iter().enumerate().filter(|(_, s)| s.1 > 0) {
        put(as_bytes(&AnswerRow {
            site: site as u32,
            _reserved: 0,
            bytes: s.0,
            count: s.1,
        }));
    }
    put(&ANSWER_END.to_ne_bytes());
    match crate::diag::write_all(out, a) {
        Ok(()) => 0,
        Err(_) => 4,
    }
}

fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: a plain #[repr(C)] value viewed as its bytes (no padding
    // holes in the types used: every field is a u32/u64 pair or u64).
    unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Roots are read in pieces of this many bytes.
const ROOT_CHUNK: usize = 256 * 1024;
const PAGE: usize = 4096;

/// How a root mapping is read.
#[derive(Clone, Copy)]
enum RootRead {
    /// Anonymous private memory, read in place: it cannot fault while
    /// mapped readable.
    InPlace,
    /// The same, glibc's heap maybe (the mapping's bounds): a gap after a
    /// tracked block is walked chunk by chunk and glibc's free chunks are
    /// skipped (see [`glibc_in_use_chunks`]).
    InPlaceSkippingFreeChunks(usize, usize),
    /// Anything else (a file's data, which a truncated file would turn
    /// into `SIGBUS`): copied with `process_vm_readv`, a piece at a time,
    /// so that a page that cannot be read is skipped.
    Copied,
}

/// Reads `start..end` in place as roots; the bytes read.
///
/// # Safety
/// `start..end` lies in a readable, anonymous, private mapping of this
/// single-threaded copy.
unsafe fn scan_in_place(marker: &mut Marker<'_>, start: usize, end: usize) -> u64 {
    let word = size_of::<usize>();
    let a = start.next_multiple_of(word);
    let b = end & !(word - 1);
    if a >= b {
        return 0;
    }
    // SAFETY: per this function's contract.
    let words = unsafe { core::slice::from_raw_parts(a as *const usize, (b - a) / word) };
    marker.scan_words(words);
    (b - a) as u64
}

/// Reads the untracked stretches of `start..end` (a piece of one root
/// mapping) as roots, as `how` says; returns the bytes read.
fn scan_root(
    marker: &mut Marker<'_>,
    start: usize,
    end: usize,
    how: RootRead,
    buf: &mut [usize],
) -> u64 {
    let word = size_of::<usize>();
    let mut read = 0u64;
    if let RootRead::InPlace | RootRead::InPlaceSkippingFreeChunks(..) = how {
        let mut at = start;
        while let Some((gap_start, gap_end)) = marker.next_gap(at, end) {
            at = gap_end;
            let after = match how {
                RootRead::InPlaceSkippingFreeChunks(lo, hi) => marker
                    .block_ending_at(gap_start)
                    .map(|prev| (prev.raw, lo, hi)),
                _ => None,
            };
            let Some((prev_raw, lo, hi)) = after else {
                // SAFETY: part of this root mapping (see RootRead::InPlace).
                read += unsafe { scan_in_place(marker, gap_start, gap_end) };
                continue;
            };
            let next_raw = marker.block_at_raw(gap_end).map(|b| b.raw);
            let word_at = |a: usize| {
                // SAFETY: an aligned word inside this mapping.
                (a >= lo && a + word <= hi && a.is_multiple_of(word))
                    .then(|| unsafe { *(a as *const usize) })
            };
            let mut stretches = 0u64;
            let walked = glibc_in_use_chunks(prev_raw, gap_end, next_raw, word_at, |a, b| {
                // SAFETY: as above.
                stretches += unsafe { scan_in_place(marker, a.max(gap_start), b) };
            });
            read += stretches;
            if let Err(from) = walked {
                // SAFETY: as above.
                read += unsafe { scan_in_place(marker, from.max(gap_start), gap_end) };
            }
        }
        return read;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut at = start & !(word - 1);
    while at < end {
        let want = (end - at).min(core::mem::size_of_val(buf));
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: want,
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: want,
        };
        // SAFETY: reads this process's own memory into `buf`; a fault is an
        // error return, never a signal.
        let got = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        let got = if got < 0 {
            0
        } else {
            got as usize & !(word - 1)
        };
        // the untracked stretches of what was read
        let mut from = at;
        while let Some((a, b)) = marker.next_gap(from, at + got) {
            let (i, j) = ((a - at).div_ceil(word), (b - at) / word);
            if i < j {
                marker.scan_words(&buf[i..j]);
                read += ((j - i) * word) as u64;
            }
            from = b;
        }
        at = if got == want {
            at + want
        } else {
            // past the page that could not be read
            (at + got + 1).next_multiple_of(PAGE).min(end)
        };
    }
    read
}

/// Calls `f` with the stretches of `start..end` outside every range of
/// `excluded` (sorted by start, not overlapping).
fn for_each_piece_outside(
    start: usize,
    end: usize,
    excluded: &[(usize, usize)],
    mut f: impl FnMut(usize, usize),
) {
    let mut at = start;
    let first = excluded.partition_point(|&(_, e)| e <= start);
    for &(s, e) in &excluded[first..] {
        if s >= end {
            break;
        }
        if s > at {
            f(at, s);
        }
        at = at.max(e);
    }
    if at < end {
        f(at, end);
    }
}

/// `/proc/self/maps`, whole, and its length.
fn read_maps() -> Option<(Scratch<u8>, usize)> {
    let mut size = 256 * 1024;
    loop {
        let mut buf = Scratch::<u8>::new(size)?;
        // SAFETY: open of a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c"/proc/self/maps".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        let full = loop {
            let room = &mut buf.slice()[len..];
            if room.is_empty() {
                break true;
            }
            // SAFETY: read(2) into our scratch.
            let n = unsafe { libc::read(fd, room.as_mut_ptr().cast(), room.len()) };
            if n < 0 && errno::get() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break false;
            }
            len += n as usize;
        };
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        if !full {
            return Some((buf, len));
        }
        size *= 4;
    }
}

/// The profiler's own writable memory: its data and bss (found from its
/// own program headers, in the parent, before the copy), and, in the copy,
/// every mapping it made itself.
pub struct OwnSegments {
    segments: [(usize, usize); 4],
    count: usize,
}

extern "C" {
    /// The ELF header of this very object (defined by the linker).
    static __ehdr_start: libc::Elf64_Ehdr;
}

impl OwnSegments {
    fn find() -> Self {
        let mut own = OwnSegments {
            segments: [(0, 0); 4],
            count: 0,
        };
        let header = &raw const __ehdr_start;
        let base = header as usize;
        // SAFETY: the ELF header of a loaded object is mapped and whole.
        let (phoff, phnum) = unsafe { ((*header).e_phoff as usize, (*header).e_phnum as usize) };
        // SAFETY: the program headers of a loaded object are mapped with
        // its first segment.
        let phdrs = unsafe {
            core::slice::from_raw_parts((base + phoff) as *const libc::Elf64_Phdr, phnum)
        };
        let load = phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD);
        let Some(first) = load.clone().find(|p| p.p_offset == 0) else {
            return own;
        };
        let bias = base.wrapping_sub(first.p_vaddr as usize);
        for p in load.filter(|p| p.p_flags & libc::PF_W != 0) {
            if own.count == own.segments.len() {
                break;
            }
            let start = bias.wrapping_add(p.p_vaddr as usize) & !(PAGE - 1);
            let end = bias
                .wrapping_add((p.p_vaddr + p.p_memsz) as usize)
                .next_multiple_of(PAGE);
            own.segments[own.count] = (start, end);
            own.count += 1;
        }
        own
    }

    /// Our segments and every mapping of [`OWN_MAPPINGS`], in scratch.
    fn with_own_mappings(&self) -> Option<Excluded> {
        let mut ranges = Scratch::<(usize, usize)>::new(
            mwrap_core::mem::OWN_MAPPING_SLOTS + self.segments.len() + 1,
        )?;
        let r = ranges.slice();
        let mut n = 0;
        for &seg in &self.segments[..self.count] {
            r[n] = seg;
            n += 1;
        }
        OWN_MAPPINGS.for_each(|start, len| {
            if n < r.len() {
                r[n] = (start, start + len);
                n += 1;
            }
        });
        Some(Excluded { ranges, len: n })
    }
}

struct Excluded {
    ranges: Scratch<(usize, usize)>,
    len: usize,
}

impl Excluded {
    fn bytes(&self) -> usize {
        self.ranges.bytes()
    }

    /// Sorted by start, overlaps merged.
    fn sorted(&mut self) -> &[(usize, usize)] {
        let len = self.len;
        let r = &mut self.ranges.slice()[..len];
        r.sort_unstable();
        let mut out = 0;
        for i in 0..r.len() {
            if out > 0 && r[i].0 <= r[out - 1].1 {
                r[out - 1].1 = r[out - 1].1.max(r[i].1);
            } else {
                r[out] = r[i];
                out += 1;
            }
        }
        // SAFETY: `out` ≤ len elements of our scratch.
        unsafe { core::slice::from_raw_parts(self.ranges.ptr.as_ptr(), out) }
    }
}

/// Whether the real allocator is glibc's (whose chunk layout the scan
/// knows): its `malloc` lies in libc.
fn allocator_is_glibc() -> bool {
    let Some(real) = crate::real::get() else {
        return false;
    };
    let mut info = empty_dl_info();
    // SAFETY: dladdr of a function address into a local struct.
    let found = unsafe { libc::dladdr(real.malloc as *const libc::c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: dladdr gave a NUL-terminated path of a loaded object.
    let path = unsafe { core::ffi::CStr::from_ptr(info.dli_fname) }.to_bytes();
    let name = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    name.starts_with(b"libc.so") || name.starts_with(b"libc-")
}

fn empty_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    }
}

/// The calling thread's callee-saved registers, copied to memory.
#[inline(always)]
fn callee_saved_registers() -> [usize; 8] {
    let mut regs = [0usize; 8];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: stores six registers into our own array.
    unsafe {
        core::arch::asm!(
            "mov [{p}], rbx",
            "mov [{p} + 8], rbp",
            "mov [{p} + 16], r12",
            "mov [{p} + 24], r13",
            "mov [{p} + 32], r14",
            "mov [{p} + 40], r15",
            p = in(reg) regs.as_mut_ptr(),
            options(nostack, preserves_flags)
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: stores eight registers into our own array.
    unsafe {
        core::arch::asm!(
            "stp x19, x20, [{p}]",
            "stp x21, x22, [{p}, #16]",
            "stp x23, x24, [{p}, #32]",
            "stp x25, x26, [{p}, #48]",
            p = in(reg) regs.as_mut_ptr(),
            options(nostack, preserves_flags)
        );
    }
    regs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_outside_excluded_ranges() {
        let mut got = Vec::new();
        for_each_piece_outside(
            0,
            100,
            &[(10, 20), (20, 30), (50, 60), (90, 200)],
            |a, b| got.push((a, b)),
        );
        assert_eq!(got, vec![(0, 10), (30, 50), (60, 90)]);
        got.clear();
        for_each_piece_outside(40, 45, &[(10, 20), (50, 60)], |a, b| got.push((a, b)));
        assert_eq!(got, vec![(40, 45)]);
    }

    #[test]
    fn answers_round_trip_and_a_cut_answer_is_refused() {
        let header = AnswerHeader {
            magic: ANSWER_MAGIC,
            summary: LeakSummary {
                blocks: 3,
                leaked_blocks: 2,
                ..Default::default()
            },
            rows: 2,
        };
        let mut bytes = as_bytes(&header).to_vec();
        for site in [5u32, 9] {
            bytes.extend_from_slice(as_bytes(&AnswerRow {
                site,
                _reserved: 0,
                bytes: 100,
                count: 1,
            }));
        }
        bytes.extend_from_slice(&ANSWER_END.to_ne_bytes());
        let (summary, rows) = parse_answer(&bytes).unwrap();
        assert_eq!((summary.blocks, summary.leaked_blocks), (3, 2));
        assert_eq!(rows.map(|r| r.site).collect::<Vec<_>>(), vec![5, 9]);
        assert!(parse_answer(&bytes[..bytes.len() - 1]).is_none());
        assert!(parse_answer(&bytes[..10]).is_none());
    }

    #[test]
    fn the_allocator_of_tests_is_glibc() {
        assert!(allocator_is_glibc());
    }

    #[test]
    fn own_segments_cover_our_statics() {
        static PROBE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);
        let own = OwnSegments::find();
        let at = &PROBE as *const _ as usize;
        assert!(own.segments[..own.count]
            .iter()
            .any(|&(s, e)| s <= at && at < e));
    }
}
