//! Snapshots (`MWRAP=snapshot_interval:SEC`, with `dump_path`): every SEC
//! seconds the preload's thread (see `server`) writes the JSON dump to
//! `PATH.tmp.PID` and renames it over the dump_path, so the file is
//! always one whole document, and a process killed by a signal (SIGTERM,
//! the OOM killer) leaves its last state there. At exit the dump_path
//! gets a last snapshot the same way (replaced, not appended to).
//!
//! The periodic and the exit snapshot never write the temporary file at
//! once: exit takes the writer's flag (waiting a little for a periodic
//! one under way) and keeps it, so no periodic snapshot follows it.

use core::sync::atomic::{AtomicBool, Ordering};

use mwrap_core::abi::RENDER_JSON;
use mwrap_core::errno;
use mwrap_core::options;

use crate::config::Config;
use crate::diag::{strerror, write_all};
use crate::dump::{self, HeldSignals};
use crate::per_thread;
use crate::state::CONFIG;

/// Held while a snapshot is written; kept for good once exit took it.
static WRITING: AtomicBool = AtomicBool::new(false);
/// A failure was reported and nothing succeeded since: later failures
/// stay quiet (one stderr line, not one per interval).
static FAILED: AtomicBool = AtomicBool::new(false);

/// A periodic snapshot (on the preload's thread).
pub fn periodic() {
    let Some(config) = CONFIG.get().filter(|c| c.snapshots()) else {
        return;
    };
    if WRITING
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return; // exit took it: its snapshot is the last
    }
    write_snapshot(config, false);
    WRITING.store(false, Ordering::Release);
}

/// At exit: the last snapshot, with the leak lines of `dump_leaks`.
pub fn at_exit() {
    let Some(config) = CONFIG.get().filter(|c| c.snapshots()) else {
        return;
    };
    // A periodic snapshot under way takes well under this; a thread stuck
    // longer is not waited for (the file holds its last whole snapshot).
    const TRIES: u32 = 200;
    for _ in 0..TRIES {
        if WRITING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            break;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        // SAFETY: nanosleep reads a plain struct.
        errno::preserved(|| unsafe { libc::nanosleep(&pause, core::ptr::null_mut()) });
    }
    WRITING.store(true, Ordering::Release);
    write_snapshot(config, true);
}

fn write_snapshot(config: &Config, at_exit: bool) {
    let Some(template) = config.dump_path.as_deref() else {
        return;
    };
    let Some(record) = per_thread::current() else {
        return;
    };
    let data = per_thread::data(record);
    let entered = data.enter_busy();
    errno::preserved(|| {
        let mut path = Vec::new();
        // The template has no %t (options refuse it with snapshots).
        options::expand_dump_path(template, std::process::id(), 0, &mut path);
        let leaks = at_exit && config.options.dump_leaks;
        // The exit's snapshot has no memory breakdown, as the exit dump (see
        // `dump::at_exit`): an exit may interrupt the allocator.
        let outcome = match dump::render(config, record, RENDER_JSON, leaks, false, !at_exit) {
            Some(text) => replace(&path, &text),
            None => Err(("render".to_string(), libc::ENOMEM)),
        };
        match outcome {
            Ok(()) => FAILED.store(false, Ordering::Relaxed),
            Err((step, e)) => {
                if !FAILED.swap(true, Ordering::Relaxed) || at_exit {
                    dump::report(
                        config,
                        format!(
                            "mwrap: snapshot to dump_path {} not written: {step}: {}\n",
                            options::quoted(&path),
                            strerror(e)
                        )
                        .as_bytes(),
                    );
                }
            }
        }
    });
    if entered {
        data.leave_busy();
    }
}

/// `path` replaced by a file holding `text`: written whole to
/// `path.tmp.PID`, then renamed over `path` (a reader sees the old file
/// or the new one, never a part). The step that failed and its errno.
fn replace(path: &[u8], text: &[u8]) -> Result<(), (String, i32)> {
    let mut target = path.to_vec();
    target.push(0);
    // SAFETY: lstat fills a plain struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::lstat(target.as_ptr().cast(), &mut st) } == 0
        && st.st_mode & libc::S_IFMT != libc::S_IFREG
    {
        // A FIFO, a device or a symlink would be replaced by a plain file.
        return Err(("it is not a regular file".to_string(), libc::EINVAL));
    }
    let mut tmp = path.to_vec();
    tmp.extend_from_slice(format!(".tmp.{}", std::process::id()).as_bytes());
    let shown_tmp = options::quoted(&tmp);
    tmp.push(0);
    let tmp_c = tmp.as_ptr().cast();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            tmp_c,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o666,
        )
    };
    if fd < 0 {
        return Err((format!("open {shown_tmp}"), errno::get()));
    }
    let written = {
        let _held = HeldSignals::hold();
        write_all(fd, text)
    };
    // SAFETY: our own descriptor, closed once.
    let closed = unsafe { libc::close(fd) };
    let failed = match written {
        Err((_, e)) => Some((format!("write {shown_tmp}"), e)),
        Ok(()) if closed != 0 => Some((format!("close {shown_tmp}"), errno::get())),
        // SAFETY: two NUL-terminated paths.
        Ok(()) if unsafe { libc::rename(tmp_c, target.as_ptr().cast()) } != 0 => {
            Some((format!("rename {shown_tmp}"), errno::get()))
        }
        Ok(()) => None,
    };
    match failed {
        Some(problem) => {
            // SAFETY: a NUL-terminated path; the file is our own.
            unsafe { libc::unlink(tmp_c) };
            Err(problem)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_leaves_one_whole_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("mwrap-snapshot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snap.json");
        std::fs::write(&path, b"old, longer than the new one\n").unwrap();
        let c = path.as_os_str().as_encoded_bytes();
        assert_eq!(replace(c, b"{}\n"), Ok(()));
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let fifo = dir.join("fifo");
        let mut f = fifo.as_os_str().as_encoded_bytes().to_vec();
        f.push(0);
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(f.as_ptr().cast(), 0o600) }, 0);
        assert!(replace(&f[..f.len() - 1], b"{}\n").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
