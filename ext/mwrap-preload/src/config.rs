//! `MWRAP`, parsed once at start-up, and the dump's destinations set up
//! then: a descriptor named by `dump_fd` is copied to a private, high,
//! close-on-exec descriptor, so that the dump reaches the file the program
//! had open as that number at start-up, even if the program closes or
//! reuses the number before it exits. Bad entries are reported in one
//! stderr line and otherwise ignored.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use mwrap_core::app_root::AppRoot;
use mwrap_core::errno;
use mwrap_core::options::{self, Options};

use crate::diag::{strerror, write_stderr};

/// A descriptor the program had open at start-up, kept by a private copy.
#[derive(Clone, Copy, Debug)]
pub struct SavedFd {
    /// Our copy.
    pub fd: i32,
    /// The number the program knows it by.
    pub named: i32,
    /// What it refers to (`st_dev`, `st_ino`), to notice a takeover.
    dev: u64,
    ino: u64,
}

impl SavedFd {
    /// Copies `named` to a high descriptor of our own.
    pub fn save(named: i32) -> Result<SavedFd, i32> {
        let (dev, ino) = identity(named)?;
        let fd = errno::preserved(|| dup_high(named))?;
        Ok(SavedFd {
            fd,
            named,
            dev,
            ino,
        })
    }

    /// A descriptor that still refers to the file saved at start-up: our
    /// copy, else the original number; None when both were closed or now
    /// refer to something else (writing there would splice the dump into
    /// another file).
    pub fn usable(&self) -> Option<i32> {
        [self.fd, self.named]
            .into_iter()
            .find(|&fd| identity(fd) == Ok((self.dev, self.ino)))
    }

    /// The file it refers to (`st_dev`, `st_ino`).
    pub fn file(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// `(st_dev, st_ino)` of an open descriptor, or the errno of `fstat`.
pub fn identity(fd: i32) -> Result<(u64, u64), i32> {
    errno::preserved(|| {
        // SAFETY: fstat fills a plain struct.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(errno::get());
        }
        Ok((st.st_dev, st.st_ino))
    })
}

/// A close-on-exec copy of `fd` numbered high, out of the way of the low
/// numbers programs expect to get from `open`.
pub fn dup_high(fd: i32) -> Result<i32, i32> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a plain struct.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as i32
    } else {
        1024
    };
    let floor = if soft > 128 { soft - 64 } else { soft / 2 };
    for min in [floor, 3] {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor of this process.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
        if copy >= 0 {
            return Ok(copy);
        }
    }
    Err(errno::get())
}

/// The profiler's configuration.
#[derive(Debug, Default)]
pub struct Config {
    pub options: Options,
    /// `dump_fd`'s descriptor, or stderr's when `dump_heap` is given alone.
    pub dump_fd: Option<SavedFd>,
    /// The `dump_path` template, absolute (the program may chdir).
    pub dump_path: Option<Vec<u8>>,
    /// stderr as it was at start-up, for the dump's own error messages.
    pub stderr: Option<SavedFd>,
    /// Native frames per allocation (`bt`, 0 where it cannot be had).
    pub bt: u8,
    /// The checked `app_root`.
    pub app_root: Option<AppRoot>,
    /// The working directory at start-up (absolute), which Ruby's relative
    /// file names are relative to; None if it could not be had.
    pub start_dir: Option<Vec<u8>>,
    /// The `socket_dir` of the endpoint, absolute (checked by `server`).
    pub socket_dir: Option<Vec<u8>>,
}

impl Config {
    /// Whether a dump is written at exit, to a destination set up at start.
    pub fn wants_dump(&self) -> bool {
        self.dump_fd.is_some() || self.dump_path.is_some()
    }

    /// Whether `snapshot_interval` replaces the dump_path now and then
    /// (the options made sure it came with a dump_path; this one is also
    /// writable).
    pub fn snapshots(&self) -> bool {
        self.options.snapshot_interval.is_some() && self.dump_path.is_some()
    }
}

/// Reads `MWRAP`, reports bad entries as one stderr line, and sets up the
/// dump's destinations.
pub fn from_env() -> Config {
    let mut config = Config {
        // One getcwd per process, for `Mwrap.app_root=` set after a chdir.
        start_dir: errno::preserved(|| absolute(b".").ok()),
        ..Config::default()
    };
    // SAFETY: getenv returns a NUL-terminated string or NULL.
    let raw = unsafe { libc::getenv(c"MWRAP".as_ptr()) };
    if raw.is_null() {
        return config;
    }
    // SAFETY: as above.
    let value = unsafe { core::ffi::CStr::from_ptr(raw) }.to_bytes();
    let (options, mut problems) = options::parse(value);
    if let Some(path) = &options.dump_path {
        match absolute(path).and_then(|abs| check_dump_path(&abs).map(|()| abs)) {
            Ok(abs) => config.dump_path = Some(abs),
            Err(e) => problems.push(format!(
                "cannot open dump_path {}: {}",
                options::quoted(path),
                strerror(e)
            )),
        }
    }
    let fd = options
        .dump_fd
        .or((options.dump_heap != 0 && config.dump_path.is_none()).then_some(2));
    if let Some(n) = fd {
        match SavedFd::save(n) {
            Ok(saved) => config.dump_fd = Some(saved),
            Err(e) => problems.push(format!(
                "dump_fd {n} is not an open file descriptor: {}",
                strerror(e)
            )),
        }
    }
    if config.wants_dump() || options.wants_dump() {
        config.stderr = SavedFd::save(2).ok();
    }
    if options.bt > 0 && !cfg!(target_arch = "x86_64") {
        problems.push(format!(
            "bt:{} needs an x86_64 build (native stacks are unwound from x86_64 call frame information)",
            options.bt
        ));
    }
    config.bt = if cfg!(target_arch = "x86_64") {
        options.bt
    } else {
        0
    };
    if let Some(dir) = &options.app_root {
        match app_root(dir, config.start_dir.as_deref()) {
            Ok(root) => config.app_root = Some(root),
            Err(e) => problems.push(format!("app_root {}: {e}", options::quoted(dir))),
        }
    }
    if let Some(dir) = &options.socket_dir {
        match errno::preserved(|| absolute(dir)) {
            Ok(abs) if options::socket_dir_fits(&abs) => config.socket_dir = Some(abs),
            Ok(abs) => problems.push(options::socket_dir_too_long(&abs)),
            Err(e) => problems.push(format!(
                "socket_dir {}: cannot make it absolute: {}",
                options::quoted(dir),
                strerror(e)
            )),
        }
    }
    if let Some(line) = options::problems_line(&problems) {
        write_stderr(line.as_bytes());
    }
    config.options = options;
    config
}

/// The application root of `MWRAP=app_root` (or `Mwrap.app_root=`): an
/// existing directory, as given (relative to the working directory now)
/// and resolved, with `start_dir`, the start-up directory that relative
/// Ruby file names are taken against (the current one when unknown). The
/// error says why not.
pub fn app_root(dir: &[u8], start_dir: Option<&[u8]>) -> Result<AppRoot, String> {
    let mut c = dir.to_vec();
    c.push(0);
    let mut resolved = [0u8; libc::PATH_MAX as usize];
    let ok = errno::preserved(|| {
        // SAFETY: `c` is NUL-terminated; realpath writes at most PATH_MAX
        // bytes into `resolved`.
        let r = unsafe { libc::realpath(c.as_ptr().cast(), resolved.as_mut_ptr().cast()) };
        if r.is_null() {
            return Err(errno::get());
        }
        // SAFETY: stat fills a plain struct.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: `resolved` is NUL-terminated now.
        if unsafe { libc::stat(resolved.as_ptr().cast(), &mut st) } != 0 {
            return Err(errno::get());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(libc::ENOTDIR);
        }
        Ok(())
    });
    ok.map_err(strerror)?;
    let len = resolved.iter().position(|&b| b == 0).unwrap_or(0);
    let cwd = absolute(b".").map_err(strerror)?;
    Ok(AppRoot::new(
        dir,
        Some(&resolved[..len]),
        &cwd,
        start_dir.unwrap_or(&cwd),
    ))
}

/// `path` made absolute against the current directory.
fn absolute(path: &[u8]) -> Result<Vec<u8>, i32> {
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
    Ok(abs)
}

/// Checks at start-up that the dump (at this pid's name) can be written,
/// the way it will be at exit: an existing regular file or a new one is
/// opened (and so created) for appending; a FIFO is only checked for
/// permission, since opening it would block without a reader or hand the
/// reader an early end of file.
fn check_dump_path(template: &[u8]) -> Result<(), i32> {
    let mut path = Vec::new();
    options::expand_dump_path(template, std::process::id(), unix_seconds(), &mut path);
    if options::dump_path_has_time(template) {
        // The file is named when it is written: check only that its
        // directory takes a new file (creating one now would leave an
        // empty file of the start-up time behind).
        return check_directory_of(&path);
    }
    path.push(0);
    let c = path.as_ptr().cast();
    errno::preserved(|| {
        // SAFETY: `c` is NUL-terminated; stat fills a plain struct.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::stat(c, &mut st) } == 0 {
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => return Err(libc::EISDIR),
                libc::S_IFIFO => {
                    // SAFETY: as above.
                    let rc =
                        unsafe { libc::faccessat(libc::AT_FDCWD, c, libc::W_OK, libc::AT_EACCESS) };
                    return if rc == 0 { Ok(()) } else { Err(errno::get()) };
                }
                _ => {}
            }
        }
        let fd = open_for_append(c)?;
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        Ok(())
    })
}

/// Milliseconds since the Unix epoch (the wall clock).
pub fn unix_millis() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a plain struct.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec.max(0) as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Seconds since the Unix epoch (`%t` of a dump_path).
pub fn unix_seconds() -> u64 {
    unix_millis() / 1000
}

/// Whether a new file can be made in the directory of `path`.
fn check_directory_of(path: &[u8]) -> Result<(), i32> {
    let dir = match path.iter().rposition(|&c| c == b'/') {
        Some(0) => b"/".to_vec(),
        Some(i) => path[..i].to_vec(),
        None => b".".to_vec(),
    };
    let mut c = dir;
    c.push(0);
    errno::preserved(|| {
        // SAFETY: a NUL-terminated path.
        let rc = unsafe {
            libc::faccessat(
                libc::AT_FDCWD,
                c.as_ptr().cast(),
                libc::W_OK | libc::X_OK,
                libc::AT_EACCESS,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(errno::get())
        }
    })
}

/// Opens the NUL-terminated path `c` for appending, creating it, without
/// blocking (a FIFO with no reader is ENXIO instead of a wait). The errno
/// of `open` on failure.
pub fn open_for_append(c: *const libc::c_char) -> Result<i32, i32> {
    // SAFETY: the caller passes a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c,
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NONBLOCK,
            0o666,
        )
    };
    if fd < 0 {
        Err(errno::get())
    } else {
        Ok(fd)
    }
}

/// The configuration, written once by start-up and read after.
pub struct ConfigCell {
    value: UnsafeCell<Option<Config>>,
    set: AtomicBool,
}

// SAFETY: written once before `set` is published, only read after.
unsafe impl Sync for ConfigCell {}

impl Default for ConfigCell {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigCell {
    pub const fn new() -> Self {
        ConfigCell {
            value: UnsafeCell::new(None),
            set: AtomicBool::new(false),
        }
    }

    /// Stores the configuration (start-up runs once).
    pub fn set(&self, config: Config) {
        if self.set.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: only start-up writes, once, before publishing.
        unsafe { *self.value.get() = Some(config) };
        self.set.store(true, Ordering::Release);
    }

    pub fn get(&self) -> Option<&Config> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: published after the one write.
        unsafe { (*self.value.get()).as_ref() }
    }
}
