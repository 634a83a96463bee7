//! The per-process endpoint (`MWRAP=socket_dir:DIR`): one thread of the
//! preload's own listens on the unix socket `DIR/PID.sock`, accepts one
//! connection at a time, parses the request (`httparse`), lets `pages`
//! render the answer and writes it, then closes the connection.
//!
//! The same thread samples RSS and live bytes every `interval_ms` for
//! `timeline`, and writes a `snapshot` every `snapshot_interval` (it runs
//! for either: with snapshots alone it serves nothing). It waits in
//! `poll` on the listening socket until the next of them is due.
//!
//! The thread is created with every signal blocked, so the program's
//! handlers never run on it, and it holds the recursion guard for its
//! whole life: whatever it allocates goes untracked, and a page shows the
//! program's memory, not the endpoint's. It never calls Ruby, so it answers
//! while a Ruby thread spins holding the GVL.
//!
//! Who may connect: `DIR` must be a directory of this process's effective
//! uid that neither its group nor others may write (it is created 0700
//! when missing); the socket is bound, chmod'ed 0600 and only then put to
//! `listen`, so nobody can connect while it has a wider mode (a unix
//! socket that is not listening refuses every connection); and each peer's
//! `SO_PEERCRED` must be this uid or root, else it gets a 403.
//!
//! Lifetime: the socket file is removed at exit if it is still the one
//! bound (same device and inode); a fork child closes the parent's
//! descriptors and serves its own `DIR/CHILDPID.sock` from a thread of its
//! own; a new image `exec`'d under the preload binds the same pid's name
//! again, replacing the socket left by the old image. A process killed by
//! a signal leaves its socket behind.

use core::ffi::c_void;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use mwrap_core::errno;
use mwrap_core::options::{quoted, SUN_PATH_BYTES};

use crate::config::{dup_high, Config};
use crate::copy::monotonic_nanos;
use crate::diag::{strerror, write_stderr};
use crate::pages::{self, Request, Respond};
use crate::state::CONFIG;
use crate::{per_thread, snapshot, timeline};

/// The server thread's stack: rendering needs little (the tables are
/// read in pieces); glibc maps it, and only the pages touched are resident.
const STACK_BYTES: usize = 512 << 10;
/// A request's head must fit in this many bytes.
const HEAD_LIMIT: usize = 16 << 10;
const MAX_HEADERS: usize = 64;
/// A response is written in pieces of this size.
const BODY_BUFFER: usize = 64 << 10;
/// How long a client may take to send its request, and to take each
/// piece of the answer, before it is dropped (so that a stuck client
/// cannot hold the only server thread).
const READ_TIMEOUT_SECONDS: i64 = 2;
const WRITE_TIMEOUT_SECONDS: i64 = 10;

/// The listening socket of this process, -1 when there is none.
static LISTEN_FD: AtomicI32 = AtomicI32::new(-1);
/// The connection being served, -1 when none: a fork child closes its
/// copy, so that the client is not kept waiting for the child's exit.
static CONN_FD: AtomicI32 = AtomicI32::new(-1);
/// The pid that bound `DIR/PID.sock` (0: none), and the socket file's
/// `st_dev` and `st_ino` then: exit removes the file only if it is still
/// that one.
static BOUND_PID: AtomicU32 = AtomicU32::new(0);
static BOUND_DEV: AtomicU64 = AtomicU64::new(0);
static BOUND_INO: AtomicU64 = AtomicU64::new(0);
/// Whether this process started the thread (a fork child starts its own).
static THREAD_STARTED: AtomicBool = AtomicBool::new(false);

/// `DIR/PID.sock`, NUL-terminated, in a `sockaddr_un`'s room.
struct SocketPath {
    bytes: [u8; SUN_PATH_BYTES],
    len: usize,
}

impl SocketPath {
    /// None when it does not fit (the configuration checked it does).
    fn new(dir: &[u8], pid: u32) -> Option<SocketPath> {
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut n = pid;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let parts: [&[u8]; 4] = [dir, b"/", &digits[at..], b".sock"];
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len >= SUN_PATH_BYTES {
            return None;
        }
        let mut bytes = [0u8; SUN_PATH_BYTES];
        let mut end = 0;
        for p in parts {
            bytes[end..end + p.len()].copy_from_slice(p);
            end += p.len();
        }
        Some(SocketPath { bytes, len })
    }

    fn c(&self) -> *const libc::c_char {
        self.bytes.as_ptr().cast()
    }

    fn shown(&self) -> String {
        quoted(&self.bytes[..self.len])
    }

    fn address(&self) -> libc::sockaddr_un {
        // SAFETY: sockaddr_un is plain bytes; all zero is valid.
        let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (to, &from) in addr.sun_path.iter_mut().zip(&self.bytes[..self.len]) {
            *to = from as libc::c_char;
        }
        addr
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// `stat` (or `lstat`) of a NUL-terminated path; the errno on failure.
fn stat_of(c: *const libc::c_char, follow: bool) -> Result<libc::stat, i32> {
    // SAFETY: stat fills a plain struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let rc = if follow {
        // SAFETY: `c` is NUL-terminated (callers' contract).
        unsafe { libc::stat(c, &mut st) }
    } else {
        // SAFETY: as above.
        unsafe { libc::lstat(c, &mut st) }
    };
    if rc == 0 {
        Ok(st)
    } else {
        Err(errno::get())
    }
}

fn close(fd: i32) {
    // SAFETY: a descriptor of ours, closed once.
    unsafe { libc::close(fd) };
}

/// Start-up, with the configuration read: the endpoint when `socket_dir`
/// is set, and the thread when there is an endpoint or snapshots. A
/// directory that is refused, or a socket that cannot be made, is
/// reported in one stderr line; the program runs on without endpoint.
pub fn start() {
    let Some(config) = CONFIG.get() else {
        return;
    };
    errno::preserved(|| begin(config, true));
}

/// In a fork child (not the leak scan's copy): the parent's descriptors
/// are closed here, and the child serves its own `DIR/CHILDPID.sock` and
/// writes its own snapshots from a thread of its own (threads do not
/// survive fork), with a timeline that starts at the fork.
pub fn in_fork_child() {
    errno::preserved(|| {
        for fd in [
            LISTEN_FD.swap(-1, Ordering::AcqRel),
            CONN_FD.swap(-1, Ordering::AcqRel),
        ] {
            if fd >= 0 {
                close(fd);
            }
        }
        let had_endpoint = BOUND_PID.swap(0, Ordering::AcqRel) != 0;
        if !THREAD_STARTED.swap(false, Ordering::AcqRel) {
            return; // the parent had no thread
        }
        timeline::in_fork_child();
        if let Some(config) = CONFIG.get() {
            begin(config, had_endpoint);
        }
    });
}

/// Binds the endpoint (when `listen` and `socket_dir` is set) and starts
/// the thread if there is an endpoint or snapshots to write.
fn begin(config: &Config, listen: bool) {
    timeline::restart_clock(config.options.interval_ms);
    if let Some(dir) = config.socket_dir.as_deref().filter(|_| listen) {
        let bound = checked_dir(dir).and_then(|()| bind_endpoint(dir));
        if let Err(problem) = bound {
            no_endpoint(dir, &problem);
        }
    }
    let endpoint = LISTEN_FD.load(Ordering::Acquire) >= 0;
    if !endpoint && !config.snapshots() {
        return;
    }
    match spawn() {
        Ok(()) => THREAD_STARTED.store(true, Ordering::Release),
        Err(e) => {
            let why = strerror(e);
            if let (true, Some(dir)) = (endpoint, config.socket_dir.as_deref()) {
                unbind();
                no_endpoint(dir, &format!("cannot start the endpoint's thread: {why}"));
            }
            if config.snapshots() {
                write_stderr(
                    format!("mwrap: snapshot_interval: cannot start the preload's thread: {why}; no snapshots\n")
                        .as_bytes(),
                );
            }
        }
    }
}

fn no_endpoint(dir: &[u8], problem: &str) {
    write_stderr(format!("mwrap: socket_dir {} {problem}; no endpoint\n", quoted(dir)).as_bytes());
}

/// At exit: removes this process's socket file if it is still the one it
/// bound (not one another process put there since).
pub fn at_exit() {
    let pid = BOUND_PID.load(Ordering::Acquire);
    if pid == 0 || pid != std::process::id() {
        return;
    }
    let Some(dir) = CONFIG.get().and_then(|c| c.socket_dir.as_deref()) else {
        return;
    };
    let Some(path) = SocketPath::new(dir, pid) else {
        return;
    };
    errno::preserved(|| {
        let bound = (
            BOUND_DEV.load(Ordering::Relaxed),
            BOUND_INO.load(Ordering::Relaxed),
        );
        if let Ok(st) = stat_of(path.c(), false) {
            if (st.st_dev, st.st_ino) == bound {
                // SAFETY: a NUL-terminated path.
                unsafe { libc::unlink(path.c()) };
            }
        }
    });
}

/// `dir` exists (made 0700 when missing), is a directory of this uid,
/// and neither group nor others may write it; else what is wrong, as the
/// end of "socket_dir DIR ...".
fn checked_dir(dir: &[u8]) -> Result<(), String> {
    let mut c = dir.to_vec();
    c.push(0);
    let c = c.as_ptr().cast();
    let st = match stat_of(c, true) {
        Err(libc::ENOENT) => {
            // SAFETY: a NUL-terminated path.
            if unsafe { libc::mkdir(c, 0o700) } != 0 && errno::get() != libc::EEXIST {
                return Err(format!("cannot be created: {}", strerror(errno::get())));
            }
            stat_of(c, true).map_err(|e| format!("cannot be read: {}", strerror(e)))?
        }
        Err(e) => return Err(format!("cannot be read: {}", strerror(e))),
        Ok(st) => st,
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err("is not a directory".to_string());
    }
    let uid = euid();
    if st.st_uid != uid {
        return Err(format!(
            "is owned by uid {}, not by this process's uid {uid}",
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        let who = if st.st_mode & 0o002 != 0 {
            "world"
        } else {
            "group"
        };
        return Err(format!(
            "is {who}-writable (mode {:04o}), so another user could replace the socket",
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// Binds `DIR/PID.sock` (0600) and listens; the thread is started after.
fn bind_endpoint(dir: &[u8]) -> Result<(), String> {
    let pid = std::process::id();
    let path = SocketPath::new(dir, pid).ok_or("is too long for a unix socket path")?;
    let fd = listening(&path)
        .map_err(|(what, e)| format!("cannot serve {}: {what}: {}", path.shown(), strerror(e)))?;
    let st = match stat_of(path.c(), false) {
        Ok(st) => st,
        Err(e) => {
            close(fd);
            return Err(format!(
                "cannot serve {}: stat: {}",
                path.shown(),
                strerror(e)
            ));
        }
    };
    BOUND_DEV.store(st.st_dev, Ordering::Relaxed);
    BOUND_INO.store(st.st_ino, Ordering::Relaxed);
    LISTEN_FD.store(fd, Ordering::Release);
    BOUND_PID.store(pid, Ordering::Release);
    Ok(())
}

/// Undoes `bind_endpoint` (its thread could not be started).
fn unbind() {
    at_exit();
    BOUND_PID.store(0, Ordering::Release);
    let fd = LISTEN_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        close(fd);
    }
}

/// A listening socket at `path`, on a high close-on-exec descriptor;
/// else the step that failed and its errno.
fn listening(path: &SocketPath) -> Result<i32, (&'static str, i32)> {
    // SAFETY: plain socket(2).
    let low = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if low < 0 {
        return Err(("socket", errno::get()));
    }
    // Out of the way of the low numbers the program expects from open.
    let fd = dup_high(low).unwrap_or(low);
    if fd != low {
        close(low);
    }
    // A socket left at this name by an earlier image of this pid (exec
    // keeps the pid, and its exit never ran): only a socket is removed.
    if let Ok(st) = stat_of(path.c(), false) {
        if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
            // SAFETY: a NUL-terminated path.
            unsafe { libc::unlink(path.c()) };
        }
    }
    let addr = path.address();
    // SAFETY: `addr` is a filled sockaddr_un of the size given.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = errno::get();
        close(fd);
        return Err(("bind", e));
    }
    // Before listen, nobody can connect whatever the mode: chmod then
    // listen leaves no window with a wider mode (no umask change, which
    // would be the whole process's).
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chmod(path.c(), 0o600) } != 0 {
        let e = errno::get();
        // SAFETY: as above; the file is the one just bound.
        unsafe { libc::unlink(path.c()) };
        close(fd);
        return Err(("chmod 0600", e));
    }
    // Non-blocking: `poll` said a connection is there, but a client that
    // gave up in between must not leave accept waiting (and samples late).
    // A connection accepted from it is blocking all the same (Linux).
    // SAFETY: fcntl on our own descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: a bound socket of ours.
    if unsafe { libc::listen(fd, 16) } != 0 {
        let e = errno::get();
        // SAFETY: as above.
        unsafe { libc::unlink(path.c()) };
        close(fd);
        return Err(("listen", e));
    }
    Ok(fd)
}

/// Every signal but glibc's two internal ones (32: thread cancellation,
/// 33: `setuid` and friends, which signal every thread and wait for each:
/// blocked here, a `setuid` in the program would never return). Blocking
/// goes through the system call, as in `dump`: a `pthread_sigmask` of the
/// program's (or another preload's) is never called.
const BLOCKED: u64 = !((1 << (32 - 1)) | (1 << (33 - 1)));
/// The kernel's sigset size.
const SIGSET_BYTES: usize = 8;

/// This thread's signal mask set to `mask`; the mask it had.
fn set_signal_mask(mask: u64) -> u64 {
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask with 8-byte sets, as the kernel expects.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask,
            &mut old,
            SIGSET_BYTES as libc::c_long,
        )
    };
    old
}

/// Starts the detached server thread, with every signal blocked from its
/// first instruction (it inherits the mask it is created under).
fn spawn() -> Result<(), i32> {
    // SAFETY: pthread_attr_t is a plain struct, initialised by
    // pthread_attr_init below.
    let mut attr: libc::pthread_attr_t = unsafe { core::mem::zeroed() };
    // SAFETY: initialises `attr`, which is destroyed below.
    let rc = unsafe { libc::pthread_attr_init(&mut attr) };
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: `attr` is initialised (a size above PTHREAD_STACK_MIN).
    unsafe { libc::pthread_attr_setstacksize(&mut attr, STACK_BYTES) };
    // SAFETY: as above.
    unsafe { libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED) };
    let old = set_signal_mask(BLOCKED);
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `attr` is initialised; `serve_forever` takes no argument and
    // lives as long as the library (never unloaded: it is preloaded).
    let rc =
        unsafe { libc::pthread_create(&mut thread, &attr, serve_forever, core::ptr::null_mut()) };
    set_signal_mask(old);
    // SAFETY: `attr` was initialised above and is not used after.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if rc != 0 {
        Err(rc)
    } else {
        Ok(())
    }
}

/// The server thread.
extern "C" fn serve_forever(_: *mut c_void) -> *mut c_void {
    // SAFETY: PR_SET_NAME reads a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"mwrap-server".as_ptr(), 0, 0, 0) };
    // Held for good: nothing this thread allocates is recorded.
    if let Some(record) = per_thread::current() {
        per_thread::data(record).enter_busy();
    }
    if let Some(config) = CONFIG.get() {
        run(config);
    }
    core::ptr::null_mut()
}

/// The next time something due at `due`, every `every` nanoseconds, is
/// due after `now`: intervals missed (a slow client, a stopped process)
/// are skipped, not caught up in a burst.
fn next_due(due: u64, every: u64, now: u64) -> u64 {
    let next = due.saturating_add(every);
    if next > now {
        next
    } else {
        now.saturating_add(every)
    }
}

/// Samples every `interval_ms`, writes a snapshot every
/// `snapshot_interval`, and between them waits in `poll` for a connection,
/// served at once: answering stays prompt, and the samples keep time
/// except while a page is being served (at most the client timeouts).
fn run(config: &Config) {
    const MILLI: u64 = 1_000_000;
    let sample_every = config.options.interval_ms as u64 * MILLI;
    let snapshot_every = config
        .snapshots()
        .then(|| config.options.snapshot_interval.unwrap_or(1) as u64 * 1000 * MILLI);
    let start = monotonic_nanos();
    let mut next_sample = start;
    let mut next_snapshot = snapshot_every.map_or(u64::MAX, |every| start + every);
    loop {
        let now = monotonic_nanos();
        if now >= next_sample {
            timeline::sample();
            next_sample = next_due(next_sample, sample_every, now);
        }
        if let Some(every) = snapshot_every {
            if now >= next_snapshot {
                snapshot::periodic();
                next_snapshot = next_due(next_snapshot, every, monotonic_nanos());
            }
        }
        let wait = next_sample
            .min(next_snapshot)
            .saturating_sub(monotonic_nanos());
        let timeout_ms = wait.div_ceil(MILLI).min(i32::MAX as u64) as i32;
        let listen = LISTEN_FD.load(Ordering::Acquire);
        if listen < 0 {
            if snapshot_every.is_none() {
                return; // the endpoint ended, and there is nothing else to do
            }
            // SAFETY: poll of no descriptor: a sleep.
            unsafe { libc::poll(core::ptr::null_mut(), 0, timeout_ms) };
            continue;
        }
        let mut waiting = libc::pollfd {
            fd: listen,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll of one pollfd of ours.
        let ready = unsafe { libc::poll(&mut waiting, 1, timeout_ms) };
        if ready <= 0 {
            continue; // a timeout (something is due) or EINTR
        }
        if waiting.revents & (libc::POLLNVAL | libc::POLLERR | libc::POLLHUP) != 0
            || !accept_one(listen)
        {
            // The program closed our descriptor (or the number now names
            // something else, its own: not ours to close).
            let _ = LISTEN_FD.compare_exchange(listen, -1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Accepts and serves one connection, if one is there; false when the
/// listening descriptor is no longer ours (the endpoint ends).
fn accept_one(listen: i32) -> bool {
    // SAFETY: accept4 on our listening socket; no address wanted.
    let conn = unsafe {
        libc::accept4(
            listen,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if conn < 0 {
        return match errno::get() {
            libc::EINTR | libc::EAGAIN | libc::ECONNABORTED | libc::EPROTO => true,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                pause_briefly();
                true
            }
            // EBADF, ENOTSOCK, EINVAL: the program closed our descriptor.
            _ => false,
        };
    }
    // Moved high at once: the low number is the program's next open's.
    let conn = match dup_high(conn) {
        Ok(high) => {
            close(conn);
            high
        }
        Err(_) => conn,
    };
    CONN_FD.store(conn, Ordering::Release);
    serve(conn);
    if CONN_FD.swap(-1, Ordering::AcqRel) == conn {
        close(conn);
    }
    true
}

fn pause_briefly() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    // SAFETY: nanosleep reads a plain struct.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

fn set_timeout(fd: i32, option: i32, seconds: i64) {
    let tv = libc::timeval {
        tv_sec: seconds as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            core::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
}

/// The peer's uid (`SO_PEERCRED`), None if it cannot be had.
fn peer_uid(conn: i32) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            conn,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Reads one request on `conn` and answers it.
fn serve(conn: i32) {
    set_timeout(conn, libc::SO_RCVTIMEO, READ_TIMEOUT_SECONDS);
    set_timeout(conn, libc::SO_SNDTIMEO, WRITE_TIMEOUT_SECONDS);
    let Some(mut out) = Response::new(conn) else {
        return; // no memory for the response buffer: the client sees a close
    };
    let uid = euid();
    match peer_uid(conn) {
        Some(peer) if peer == uid || peer == 0 => {}
        peer => {
            let peer = peer.map_or("unknown".to_string(), |p| p.to_string());
            out.plain(
                403,
                &format!(
                    "forbidden: the peer's uid {peer} is neither this process's ({uid}) nor root\n"
                ),
            );
            drain(conn);
            return;
        }
    }
    let mut head = [0u8; HEAD_LIMIT];
    let mut filled = 0;
    loop {
        if filled == head.len() {
            out.plain(
                400,
                &format!("bad request: the request head is larger than {HEAD_LIMIT} bytes\n"),
            );
            drain(conn);
            return;
        }
        // SAFETY: reads into the unfilled rest of `head`.
        let n = unsafe {
            libc::read(
                conn,
                head[filled..].as_mut_ptr().cast(),
                head.len() - filled,
            )
        };
        if n == 0 {
            return; // closed before a whole request
        }
        if n < 0 {
            match errno::get() {
                libc::EINTR => continue,
                libc::EAGAIN => out.plain(
                    408,
                    &format!("request timeout: no whole request within {READ_TIMEOUT_SECONDS} s\n"),
                ),
                _ => {}
            }
            return;
        }
        filled += n as usize;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head[..filled]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or("").as_bytes();
                let target = request.path.unwrap_or("").as_bytes();
                if target.first() != Some(&b'/') {
                    out.plain(
                        400,
                        &format!(
                            "bad request: the request target {} is not a path\n",
                            quoted(target)
                        ),
                    );
                    return;
                }
                let (path, query) = match target.iter().position(|&b| b == b'?') {
                    Some(q) => (&target[..q], &target[q + 1..]),
                    None => (target, &b""[..]),
                };
                out.head_only = method == b"HEAD";
                let base = link_base(request.headers);
                pages::respond(
                    &Request {
                        method,
                        path,
                        query,
                        base,
                    },
                    &mut out,
                );
                out.finish();
                return;
            }
            Err(e) => {
                out.plain(400, &format!("bad request: {e}\n"));
                return;
            }
        }
    }
}

/// The `x-mwrap-base` header (`mwrapctl proxy` serves a process's pages
/// under `/PID`): the prefix of the page's links, if it is a plain path
/// (`/`, letters, digits, `-`, `_`, `.`), else none.
fn link_base<'h>(headers: &[httparse::Header<'h>]) -> &'h [u8] {
    let plain = |v: &[u8]| {
        v.first() == Some(&b'/')
            && v.len() <= 256
            && v.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'-' | b'_' | b'.'))
    };
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-mwrap-base"))
        .map(|h| h.value)
        .filter(|v| plain(v))
        .unwrap_or(b"")
}

/// After an answer sent without reading the whole request: ends our side,
/// then reads what the client sends until it closes (at most
/// [`HEAD_LIMIT`] bytes more, within the read timeout), so that closing
/// with unread bytes does not reset the connection before the client has
/// read the answer.
fn drain(conn: i32) {
    // SAFETY: shutdown of our connection's write side.
    unsafe { libc::shutdown(conn, libc::SHUT_WR) };
    let mut sink = [0u8; 4096];
    let mut left = HEAD_LIMIT;
    while left > 0 {
        // SAFETY: reads into `sink`.
        let n = unsafe { libc::read(conn, sink.as_mut_ptr().cast(), sink.len()) };
        if n < 0 && errno::get() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        left = left.saturating_sub(n as usize);
    }
}

/// The answer on one connection: the head, then the body in pieces of
/// [`BODY_BUFFER`] bytes; nothing of the body after a HEAD request; the
/// rest dropped once a write failed (the client went away or stopped
/// reading for [`WRITE_TIMEOUT_SECONDS`]).
struct Response {
    fd: i32,
    buf: Vec<u8>,
    head_only: bool,
    headed: bool,
    failed: bool,
}

impl Response {
    fn new(fd: i32) -> Option<Response> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(BODY_BUFFER).ok()?;
        Some(Response {
            fd,
            buf,
            head_only: false,
            headed: false,
            failed: false,
        })
    }

    /// A whole plain-text answer.
    fn plain(&mut self, status: u16, text: &str) {
        self.head(status, "text/plain; charset=utf-8", &[]);
        self.body(text.as_bytes());
        self.finish();
    }

    fn flush(&mut self) {
        if !self.failed && !send_all(self.fd, &self.buf) {
            self.failed = true;
        }
        self.buf.clear();
    }

    fn finish(&mut self) {
        self.flush();
    }
}

impl Respond for Response {
    fn head(&mut self, status: u16, content_type: &str, extra: &[(&str, &str)]) {
        if self.headed {
            return;
        }
        self.headed = true;
        let _ = write!(
            Within(&mut self.buf),
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n",
            reason(status)
        );
        for (name, value) in extra {
            let _ = write!(Within(&mut self.buf), "{name}: {value}\r\n");
        }
        let _ = write!(
            Within(&mut self.buf),
            "connection: close\r\ncache-control: no-cache\r\n\r\n"
        );
    }

    fn body(&mut self, bytes: &[u8]) {
        if self.head_only || self.failed {
            return;
        }
        if self.buf.len() + bytes.len() > BODY_BUFFER {
            self.flush();
        }
        if bytes.len() >= BODY_BUFFER {
            if !self.failed && !send_all(self.fd, bytes) {
                self.failed = true;
            }
        } else {
            self.buf.extend_from_slice(bytes); // within the capacity
        }
    }
}

/// Formatting into a Vec without growing it past its capacity (a head
/// that does not fit is cut, never a reallocation that could fail).
struct Within<'a>(&'a mut Vec<u8>);

impl core::fmt::Write for Within<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.0.capacity() - self.0.len();
        let take = s.len().min(room);
        self.0.extend_from_slice(&s.as_bytes()[..take]);
        if take < s.len() {
            Err(core::fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Writes all of `bytes`; false when the peer went away or timed out.
fn send_all(fd: i32, bytes: &[u8]) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: send of a valid slice; MSG_NOSIGNAL: no SIGPIPE.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            if errno::get() == libc::EINTR {
                continue;
            }
            return false;
        }
        done += n as usize;
    }
    true
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_dir_pid_sock() {
        let p = SocketPath::new(b"/run/mwrap", 4194304).unwrap();
        assert_eq!(&p.bytes[..p.len + 1], b"/run/mwrap/4194304.sock\0");
        let p = SocketPath::new(b"/d", 0).unwrap();
        assert_eq!(&p.bytes[..p.len], b"/d/0.sock");
        assert!(SocketPath::new(&[b'x'; 100], 1).is_some()); // 107 bytes and the NUL
        assert!(SocketPath::new(&[b'x'; 101], 1).is_none());
    }

    #[test]
    fn missed_intervals_are_skipped_not_caught_up() {
        assert_eq!(next_due(100, 10, 105), 110);
        assert_eq!(next_due(100, 10, 110), 120); // late by a whole interval
        assert_eq!(next_due(100, 10, 1000), 1010);
        assert_eq!(next_due(u64::MAX - 1, 10, 0), u64::MAX);
    }

    #[test]
    fn within_never_grows() {
        let mut v = Vec::with_capacity(4);
        assert!(write!(Within(&mut v), "abcdef").is_err());
        assert_eq!((&v[..], v.capacity()), (&b"abcd"[..], 4));
    }
}
