//! The dump at exit (`MWRAP=dump_fd`/`dump_path`/`dump_heap`).
//!
//! It is rendered once by the core renderers, then written so that the
//! program cannot tell: after the program's own buffered stdio output to
//! the same file, in one contiguous piece in a regular file (under a lock,
//! so processes exiting together do not interleave), in whole lines no
//! longer than `PIPE_BUF` to a pipe (all a pipe can promise), and with
//! SIGPIPE and SIGXFSZ held back, so that a reader that went away or a file
//! size limit cannot change the program's exit status. A dump that cannot
//! be written whole is reported in one stderr line.

use core::ffi::c_void;

use mwrap_core::abi::{HeapPageInfo, RENDER_FOLDED, RENDER_JSON, RENDER_TEXT};
use mwrap_core::errno;
use mwrap_core::options::{self, DumpFormat, DUMP_HEAP_ONLY, DUMP_HEAP_PAGES};
use mwrap_core::render;

use crate::config::{identity, open_for_append, Config, SavedFd};
use crate::diag::{strerror, write_all};
use crate::per_thread::{self, lock_cx};
use crate::state::{current_generation, CONFIG, HEAP, SITES, THREADS};
use mwrap_core::lock::LockCx;
use mwrap_memory::breakdown;

/// Writes the dump if `MWRAP` asks for one. Runs from `.fini_array` on the
/// exiting thread, which may be inside a signal handler that interrupted
/// the profiler itself: every lock is then read through (see
/// `TableLock::read`), never waited on by this thread.
pub fn at_exit() {
    let Some(config) = CONFIG.get() else { return };
    if !config.wants_dump() {
        return;
    }
    let Some(record) = per_thread::current() else {
        return;
    };
    let data = per_thread::data(record);
    let entered = data.enter_busy();
    let opts = &config.options;
    let format = match opts.dump_format {
        DumpFormat::Text => RENDER_TEXT,
        DumpFormat::Folded => RENDER_FOLDED,
        DumpFormat::Json => RENDER_JSON,
    };
    // With snapshots the dump_path gets its last one (`snapshot`), not
    // this dump; dump_fd still gets it.
    let to_fd_only = config.snapshots();
    if to_fd_only && config.dump_fd.is_none() {
        if entered {
            data.leave_busy();
        }
        return;
    }
    // No memory breakdown at exit: measuring allocates a good deal, and an
    // exit from a signal handler may have interrupted the allocator itself
    // (glibc's malloc takes no lock while the process has one thread).
    // Snapshots and the endpoint's /json, made on the preload's own thread,
    // carry it.
    match render(config, record, format, opts.dump_leaks, true, false) {
        Some(text) => write_dump(config, &text, to_fd_only),
        None => report(
            config,
            b"mwrap: no memory to render the dump; nothing written\n",
        ),
    }
    if entered {
        data.leave_busy();
    }
}

/// The dump in `format` (a `RENDER_*`), with the leak scan's lines when
/// `with_leaks`, the heap part of `dump_heap` when `with_heap`, and (JSON)
/// the memory breakdown when `with_memory`.
pub fn render(
    config: &Config,
    record: &'static per_thread::Record,
    format: u32,
    with_leaks: bool,
    with_heap: bool,
    with_memory: bool,
) -> Option<Vec<u8>> {
    let cx = lock_cx(record);
    let opts = &config.options;
    let dump_heap = if with_heap { opts.dump_heap } else { 0 };
    let mut text = Vec::new();
    if dump_heap & DUMP_HEAP_ONLY == 0 {
        let leaks = if with_leaks {
            match crate::leak_scan::scan(0) {
                Ok(report) => Some(report),
                Err(e) => {
                    report(
                        config,
                        format!(
                            "mwrap: dump_leaks: {}; the dump has no leak lines\n",
                            e.describe()
                        )
                        .as_bytes(),
                    );
                    None
                }
            }
        } else {
            None
        };
        let memory = (with_memory && format == RENDER_JSON).then(|| memory_breakdown(&cx));
        let extras = crate::formats::DumpExtras {
            leaks: leaks.as_ref(),
            memory: memory.as_ref().map(|rows| &rows[..]),
            pid: Some(std::process::id()),
        };
        text.try_reserve(SITES.site_count() as usize * 80).ok()?;
        crate::formats::render_format(&cx, format, opts.dump_min, &extras, &mut text).ok()?;
    }
    if dump_heap != 0 {
        let mut pages: Vec<HeapPageInfo> = Vec::new();
        if dump_heap & DUMP_HEAP_PAGES != 0 {
            HEAP.live(&cx, &mut pages).ok()?;
        }
        render::heap(
            dump_heap,
            &HEAP.stats(&cx),
            current_generation(),
            &pages,
            &mut text,
        );
    }
    Some(text)
}

/// The parts of RSS now (see `Mwrap.memory_breakdown`), from the
/// preload's own tables: no Ruby is asked (at exit the VM is gone; the
/// endpoint never calls Ruby), so `iseq` is unknown.
pub fn memory_breakdown(cx: &LockCx<'_>) -> [(&'static str, Option<i128>); 12] {
    breakdown::rows(&measure_memory(cx))
}

/// The breakdown itself (see [`memory_breakdown`]).
pub fn measure_memory(cx: &LockCx<'_>) -> breakdown::Breakdown {
    let totals = mwrap_core::read::totals(&SITES, cx);
    let mut pages: Vec<HeapPageInfo> = Vec::new();
    let _ = HEAP.live(cx, &mut pages);
    let mut addresses: Vec<u64> = pages.iter().map(|p| p.address).collect();
    addresses.sort_unstable();
    let mut stacks = Vec::new();
    THREADS.live_stacks(|address| stacks.push(address));
    breakdown::measure(&breakdown::Inputs {
        tracked: true,
        malloc_in_use: Some(totals.allocated.saturating_sub(totals.freed)),
        ruby_pages: &addresses,
        ruby_page_size: HEAP.page_size(),
        estimated_ruby_heap: None,
        stacks: &stacks,
        iseq: None,
    })
}

fn write_dump(config: &Config, text: &[u8], to_fd_only: bool) {
    if let Some(saved) = &config.dump_fd {
        match saved.usable() {
            Some(fd) => {
                flush_program_output(saved.file());
                if let Err((done, e)) = write_to(fd, text, Lock::Posix) {
                    cut_short(
                        config,
                        &format!("dump_fd {}", saved.named),
                        done,
                        text.len(),
                        e,
                    );
                }
            }
            None => report(
                config,
                format!(
                    "mwrap: dump_fd {} was closed or reused before exit; dump not written\n",
                    saved.named
                )
                .as_bytes(),
            ),
        }
    }
    if let Some(template) = config.dump_path.as_ref().filter(|_| !to_fd_only) {
        let mut path = Vec::new();
        options::expand_dump_path(
            template,
            std::process::id(),
            crate::config::unix_seconds(),
            &mut path,
        );
        let what = format!("dump_path {}", options::quoted(&path));
        match open_dump_path(&path) {
            Ok(fd) => {
                if let Ok(file) = identity(fd) {
                    flush_program_output(file);
                }
                if let Err((done, e)) = write_to(fd, text, Lock::Flock) {
                    cut_short(config, &what, done, text.len(), e);
                }
                // SAFETY: our own descriptor.
                unsafe { libc::close(fd) };
            }
            Err(libc::ENXIO) => report(
                config,
                format!("mwrap: {what} is a FIFO with no reader; dump not written\n").as_bytes(),
            ),
            Err(e) => report(
                config,
                format!("mwrap: cannot open {what}: {}\n", strerror(e)).as_bytes(),
            ),
        }
    }
}

/// Opens the dump file for appending without blocking on a FIFO that has
/// no reader (ENXIO), then makes the descriptor blocking again.
fn open_dump_path(path: &[u8]) -> Result<i32, i32> {
    let mut c = path.to_vec();
    c.push(0);
    errno::preserved(|| {
        let fd = open_for_append(c.as_ptr().cast())?;
        // SAFETY: our own descriptor.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        Ok(fd)
    })
}

fn cut_short(config: &Config, what: &str, done: usize, total: usize, e: i32) {
    report(
        config,
        format!(
            "mwrap: the dump to {what} was cut short after {done} of {total} bytes: {}\n",
            strerror(e)
        )
        .as_bytes(),
    );
}

/// A message about the dump, to stderr as it was at start-up (the program
/// may have closed fd 2, or opened another file there, by now).
pub fn report(config: &Config, message: &[u8]) {
    if let Some(fd) = config.stderr.as_ref().and_then(SavedFd::usable) {
        let _held = HeldSignals::hold();
        let _ = write_all(fd, message);
    }
}

extern "C" {
    static mut stdout: *mut libc::FILE;
    static mut stderr: *mut libc::FILE;
    fn ftrylockfile(stream: *mut libc::FILE) -> libc::c_int;
    fn funlockfile(stream: *mut libc::FILE);
    fn fflush_unlocked(stream: *mut libc::FILE) -> libc::c_int;
    fn fileno_unlocked(stream: *mut libc::FILE) -> libc::c_int;
}

/// Flushes the program's `stdout`/`stderr` if it writes to `file`, so the
/// dump comes after what the program printed. A stream another thread
/// holds (say, blocked in `fgets` on it) is left alone rather than waited
/// for.
fn flush_program_output(file: (u64, u64)) {
    errno::preserved(|| {
        // SAFETY: reading glibc's two stream pointers; each stream is only
        // touched while we hold its lock.
        unsafe {
            for stream in [stdout, stderr] {
                if stream.is_null() || ftrylockfile(stream) != 0 {
                    continue;
                }
                let fd = fileno_unlocked(stream);
                if fd >= 0 && identity(fd) == Ok(file) {
                    fflush_unlocked(stream);
                }
                funlockfile(stream);
            }
        }
    });
}

/// How a regular file is locked while the dump is written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lock {
    /// `flock` on our own open of the file: every process has its own.
    Flock,
    /// A POSIX record lock: per process, so it also holds between
    /// processes that share one inherited descriptor.
    Posix,
}

/// Writes the whole dump to `fd`: in one piece under a lock in a regular
/// file, in whole lines of at most `PIPE_BUF` bytes elsewhere.
fn write_to(fd: i32, text: &[u8], lock: Lock) -> Result<(), (usize, i32)> {
    let _held = HeldSignals::hold();
    if is_regular_file(fd) {
        let _lock = FileLock::take(fd, lock);
        return write_all(fd, text);
    }
    let mut done = 0;
    for piece in pieces(text, libc::PIPE_BUF) {
        write_all(fd, piece).map_err(|(n, e)| (done + n, e))?;
        done += piece.len();
    }
    Ok(())
}

fn is_regular_file(fd: i32) -> bool {
    errno::preserved(|| {
        // SAFETY: fstat fills a plain struct.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG }
    })
}

/// `text` cut into pieces of whole lines of at most `max` bytes (a longer
/// line is a piece of its own).
fn pieces(text: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        if end < rest.len() {
            end = match rest[..end].iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                None => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |nl| nl + 1),
            };
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// An exclusive lock on a whole regular file while it lives. Waits at most
/// a couple of seconds for another process, then goes on without it: a
/// process that keeps the file locked that long is not one of our dumps.
struct FileLock {
    fd: i32,
    lock: Lock,
    held: bool,
}

impl FileLock {
    fn take(fd: i32, lock: Lock) -> FileLock {
        const TRIES: u32 = 200;
        let mut held = false;
        for _ in 0..TRIES {
            if errno::preserved(|| Self::try_lock(fd, lock, true)) {
                held = true;
                break;
            }
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            // SAFETY: nanosleep with a valid timespec.
            errno::preserved(|| unsafe { libc::nanosleep(&pause, core::ptr::null_mut()) });
        }
        FileLock { fd, lock, held }
    }

    fn try_lock(fd: i32, lock: Lock, on: bool) -> bool {
        match lock {
            Lock::Flock => {
                let op = if on {
                    libc::LOCK_EX | libc::LOCK_NB
                } else {
                    libc::LOCK_UN
                };
                // SAFETY: flock on our own descriptor.
                unsafe { libc::flock(fd, op) == 0 }
            }
            Lock::Posix => {
                // SAFETY: a zeroed flock is a valid whole-file range.
                let mut fl: libc::flock = unsafe { core::mem::zeroed() };
                fl.l_type = if on { libc::F_WRLCK } else { libc::F_UNLCK } as _;
                fl.l_whence = libc::SEEK_SET as _;
                // SAFETY: F_SETLK with a valid struct.
                unsafe {
                    libc::fcntl(
                        fd,
                        libc::F_SETLK,
                        &fl as *const libc::flock as *const c_void,
                    ) == 0
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if self.held {
            errno::preserved(|| Self::try_lock(self.fd, self.lock, false));
        }
    }
}

/// SIGPIPE and SIGXFSZ blocked while the dump is written; on release, any
/// of them that the dump raised is taken back, then the mask restored.
/// Raw system calls: the preload imports no signal function (the torture
/// suite checks), and installs no handler.
pub struct HeldSignals {
    old: u64,
    pending_before: u64,
}

const HELD: u64 = (1 << (libc::SIGPIPE - 1)) | (1 << (libc::SIGXFSZ - 1));
/// The kernel's `sigset_t` on Linux: 64 bits.
const SIGSET_SIZE: libc::c_long = 8;

impl HeldSignals {
    pub fn hold() -> HeldSignals {
        let mut old = 0u64;
        errno::preserved(|| {
            // SAFETY: rt_sigprocmask with 8-byte sets, as the kernel expects.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigprocmask,
                    libc::SIG_BLOCK,
                    &HELD,
                    &mut old,
                    SIGSET_SIZE,
                )
            };
        });
        HeldSignals {
            old,
            pending_before: pending(),
        }
    }
}

fn pending() -> u64 {
    let mut set = 0u64;
    errno::preserved(|| {
        // SAFETY: rt_sigpending fills an 8-byte set.
        unsafe { libc::syscall(libc::SYS_rt_sigpending, &mut set, SIGSET_SIZE) };
    });
    set
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        let raised = pending() & HELD & !self.pending_before;
        for sig in [libc::SIGPIPE, libc::SIGXFSZ] {
            let bit = 1u64 << (sig - 1);
            if raised & bit != 0 {
                let none = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                errno::preserved(|| {
                    // SAFETY: waits zero time for a signal that is pending.
                    unsafe {
                        libc::syscall(
                            libc::SYS_rt_sigtimedwait,
                            &bit,
                            core::ptr::null_mut::<libc::siginfo_t>(),
                            &none,
                            SIGSET_SIZE,
                        )
                    };
                });
            }
        }
        errno::preserved(|| {
            // SAFETY: restores the mask saved by `hold`.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigprocmask,
                    libc::SIG_SETMASK,
                    &self.old,
                    core::ptr::null_mut::<u64>(),
                    SIGSET_SIZE,
                )
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_whole_lines_within_the_limit() {
        let text = b"aaaa\nbb\ncccccccc\nd\n";
        let got: Vec<&[u8]> = pieces(text, 8).collect();
        assert_eq!(got, vec![&b"aaaa\nbb\n"[..], b"cccccccc\n", b"d\n"]);
        let got: Vec<&[u8]> = pieces(b"no newline at all", 4).collect();
        assert_eq!(got, vec![&b"no newline at all"[..]]);
        assert_eq!(pieces(b"", 4).count(), 0);
        let big: Vec<u8> = (0..1000)
            .flat_map(|i| format!("{i:>16}\n").into_bytes())
            .collect();
        let got: Vec<&[u8]> = pieces(&big, libc::PIPE_BUF).collect();
        assert!(got
            .iter()
            .all(|p| p.len() <= libc::PIPE_BUF && p.ends_with(b"\n")));
        assert_eq!(got.concat(), big);
    }

    #[test]
    fn a_pipe_gets_every_byte_in_line_pieces_and_a_closed_one_reports() {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let text: Vec<u8> = (0..500)
            .flat_map(|i| format!("{i:>30}\n").into_bytes())
            .collect();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            // SAFETY: the read end is this thread's from now on.
            let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
            let mut all = Vec::new();
            f.read_to_end(&mut all).unwrap();
            all
        });
        assert_eq!(write_to(fds[1], &text, Lock::Posix), Ok(()));
        // SAFETY: our write end.
        unsafe { libc::close(fds[1]) };
        assert_eq!(reader.join().unwrap(), text);

        // SAFETY: as above.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: closing our own read end.
        unsafe { libc::close(fds[0]) };
        // The test harness ignores SIGPIPE; the error comes back as EPIPE.
        assert_eq!(write_to(fds[1], b"x\n", Lock::Posix), Err((0, libc::EPIPE)));
        // SAFETY: our write end.
        unsafe { libc::close(fds[1]) };
    }

    #[test]
    fn a_regular_file_gets_the_dump_appended_whole() {
        let dir = std::env::temp_dir().join(format!("mwrap-dump-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dump.txt");
        std::fs::write(&path, b"before\n").unwrap();
        let mut c = path.as_os_str().as_encoded_bytes().to_vec();
        let fd = open_dump_path(&c).unwrap();
        assert_eq!(write_to(fd, b"one\ntwo\n", Lock::Flock), Ok(()));
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        assert_eq!(std::fs::read(&path).unwrap(), b"before\none\ntwo\n");
        c.extend_from_slice(b"/under-a-file");
        assert_eq!(open_dump_path(&c), Err(libc::ENOTDIR));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_device_cuts_the_dump_short_with_its_errno() {
        let fd = open_dump_path(b"/dev/full").unwrap();
        assert_eq!(write_to(fd, b"x\n", Lock::Flock), Err((0, libc::ENOSPC)));
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }

    /// The calling thread's blocked signals, read with the raw syscall
    /// as `HeldSignals` sets them.
    fn blocked_signals() -> u64 {
        let mut mask = 0u64;
        // SAFETY: an empty set to add and a u64 of SIGSET_SIZE bytes to
        // read the mask into.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_BLOCK,
                &0u64,
                &mut mask,
                SIGSET_SIZE,
            )
        };
        mask
    }

    #[test]
    fn held_signals_restore_the_mask() {
        let before = blocked_signals();
        {
            let _h = HeldSignals::hold();
            assert_eq!(blocked_signals() & HELD, HELD);
        }
        assert_eq!(blocked_signals(), before);
    }
}
