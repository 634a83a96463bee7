//! Messages to stderr from places that must not allocate through our hooks.

/// One `write(2)` of the whole message, so lines from several processes
/// sharing a terminal do not interleave within a line.
pub fn write_stderr(msg: &[u8]) {
    write_all(2, msg);
}

/// Writes all of `bytes` to `fd`, retrying on EINTR and short writes.
/// Returns false if the descriptor refused.
pub fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: plain write(2) of a valid slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if mwrap_core::errno::get() == libc::EINTR {
                continue;
            }
            return false;
        }
        if n == 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}
