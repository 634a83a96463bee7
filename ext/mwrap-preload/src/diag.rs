//! Messages to stderr from places that must not allocate through our hooks.

use mwrap_core::errno;

/// One `write(2)` of the whole message, so lines from several processes
/// sharing a terminal do not interleave within a line.
pub fn write_stderr(msg: &[u8]) {
    let _ = write_all(2, msg);
}

/// Writes all of `bytes` to `fd`, retrying on EINTR and short writes.
/// Returns how many bytes were written, and the errno that stopped it.
pub fn write_all(fd: i32, bytes: &[u8]) -> Result<(), (usize, i32)> {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: plain write(2) of a valid slice.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = errno::get();
            if e == libc::EINTR {
                continue;
            }
            return Err((done, e));
        }
        if n == 0 {
            return Err((done, libc::EIO));
        }
        done += n as usize;
    }
    Ok(())
}

/// The text of an errno value.
pub fn strerror(e: i32) -> String {
    // SAFETY: strerror returns a static or thread-local string.
    let s = unsafe { core::ffi::CStr::from_ptr(libc::strerror(e)) };
    s.to_string_lossy().into_owned()
}
