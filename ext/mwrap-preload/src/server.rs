//! The per-process endpoint (`MWRAP=socket_dir:DIR`): one thread of the
//! preload's own listens on the unix socket `DIR/PID.sock`, accepts one
//! connection at a time, parses the request (`httparse`), lets `pages`
//! render the answer and writes it, then closes the connection.
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
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use mwrap_core::errno;
use mwrap_core::options::{quoted, SUN_PATH_BYTES};

use crate::config::dup_high;
use crate::diag::{strerror, write_stderr};
use crate::pages::{self, Request, Respond};
use crate::per_thread;
use crate::state::CONFIG;

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

fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
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
/// is set. A directory that is refused, or a socket that cannot be made,
/// is reported in one stderr line; the program runs on without endpoint.
pub fn start() {
    let Some(dir) = CONFIG.get().and_then(|c| c.socket_dir.as_deref()) else {
        return;
    };
    errno::preserved(|| {
        let problem = match checked_dir(dir) {
            Ok(()) => listen_and_serve(dir),
            Err(problem) => Err(problem),
        };
        if let Err(problem) = problem {
            write_stderr(
                format!("mwrap: socket_dir {} {problem}; no endpoint\n", quoted(dir)).as_bytes(),
            );
        }
    });
}

/// In a fork child (not the leak scan's copy): the parent's descriptors
/// are closed here, and the child serves its own `DIR/CHILDPID.sock` from
/// a thread of its own (threads do not survive fork).
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
        if BOUND_PID.swap(0, Ordering::AcqRel) == 0 {
            return; // the parent had no endpoint
        }
        let Some(dir) = CONFIG.get().and_then(|c| c.socket_dir.as_deref()) else {
            return;
        };
        if let Err(problem) = listen_and_serve(dir) {
            write_stderr(
                format!("mwrap: socket_dir {} {problem}; no endpoint\n", quoted(dir)).as_bytes(),
            );
        }
    });
}

/// At exit: removes this process's socket file if it is still the one it
/// bound (not one another process put there since).
pub fn at_exit() {
    let pid = BOUND_PID.load(Ordering::Acquire);
    if pid == 0 || pid != getpid() {
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

/// Binds `DIR/PID.sock` (0600), listens, and starts the server thread.
fn listen_and_serve(dir: &[u8]) -> Result<(), String> {
    let pid = getpid();
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
    if let Err(e) = spawn() {
        at_exit();
        BOUND_PID.store(0, Ordering::Release);
        LISTEN_FD.store(-1, Ordering::Release);
        close(fd);
        return Err(format!(
            "cannot start the endpoint's thread: {}",
            strerror(e)
        ));
    }
    Ok(())
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
    accept_loop();
    core::ptr::null_mut()
}

fn accept_loop() {
    loop {
        let listen = LISTEN_FD.load(Ordering::Acquire);
        if listen < 0 {
            return;
        }
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
            match errno::get() {
                libc::EINTR | libc::ECONNABORTED | libc::EPROTO => continue,
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    pause_briefly();
                    continue;
                }
                // The program closed our descriptor (EBADF, or a number
                // now not a listening socket): the endpoint ends.
                _ => return,
            }
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
    }
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
    fn within_never_grows() {
        let mut v = Vec::with_capacity(4);
        assert!(write!(Within(&mut v), "abcdef").is_err());
        assert_eq!((&v[..], v.capacity()), (&b"abcd"[..], 4));
    }
}
