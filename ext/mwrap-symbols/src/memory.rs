//! Reads of this process's own memory that fail instead of faulting.
//!
//! What `dladdr` and the loader's `link_map` point to belongs to an object
//! that another thread may `dlclose` (and unmap) at any moment, so it is
//! read the way the preload's namer reads it: the kernel copies it
//! (`process_vm_readv` on this process) and reports unmapped memory as an
//! error. Nothing here allocates: [`crate::ModuleRecord::capture`] runs
//! inside the preload's `dlclose` hook.

/// Smallest page size on x86-64 and aarch64 Linux; reads are split here so
/// that a fault ends a read at a page boundary.
const PAGE: usize = 4096;

/// Fills `dst` from address `src` of this process; false when any of it is
/// not readable.
pub(crate) fn read_exact(src: usize, dst: &mut [u8]) -> bool {
    let mut done = 0;
    while done < dst.len() {
        let Some(at) = src.checked_add(done) else {
            return false;
        };
        let chunk = (PAGE - at % PAGE).min(dst.len() - done);
        match read_some(at, &mut dst[done..done + chunk]) {
            Some(n) if n == chunk => done += n,
            _ => return false,
        }
    }
    true
}

/// A `T` read from address `src`, or None when it is not readable.
pub(crate) fn read_value<T: Plain>(src: usize) -> Option<T> {
    let mut value = T::zeroed();
    // SAFETY: `T: Plain` is plain old data (every bit pattern is a valid
    // value), so its bytes may be overwritten with anything.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut((&mut value as *mut T).cast::<u8>(), size_of::<T>())
    };
    read_exact(src, bytes).then_some(value)
}

/// Types for which every bit pattern is a valid value.
///
/// # Safety
/// Implement only for integers and `#[repr(C)]` structs of them.
pub(crate) unsafe trait Plain: Copy {
    fn zeroed() -> Self;
}

// SAFETY: integers.
unsafe impl Plain for usize {
    fn zeroed() -> Self {
        0
    }
}

/// Copies the NUL-terminated string at `p` into `buf` and returns the copy
/// (cut at `buf.len()`; `.1` is true when it was cut), or None when `p` is
/// null or the string runs into unmapped memory.
pub fn copy_cstr(p: usize, buf: &mut [u8]) -> Option<(&[u8], bool)> {
    if p == 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        let at = p.checked_add(len)?;
        let chunk = (PAGE - at % PAGE).min(buf.len() - len);
        let got = read_some(at, &mut buf[len..len + chunk])?;
        if let Some(nul) = buf[len..len + got].iter().position(|&b| b == 0) {
            return Some((&buf[..len + nul], false));
        }
        len += got;
        if got < chunk {
            return None; // the rest is not mapped and no NUL was seen
        }
    }
    Some((&buf[..len], true))
}

/// Reads up to `dst.len()` bytes at `src` (all on one page); the count
/// read, or None when nothing at `src` is readable. errno is left as it was.
fn read_some(src: usize, dst: &mut [u8]) -> Option<usize> {
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: src as *mut libc::c_void,
        iov_len: dst.len(),
    };
    let (n, e) = mwrap_core::errno::preserved(|| {
        // SAFETY: `local` covers `dst`; the kernel checks `remote` and
        // fails with EFAULT instead of faulting.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        (n, mwrap_core::errno::get())
    });
    if n < 0 && matches!(e, libc::ENOSYS | libc::EPERM) {
        // Seccomp or an old kernel: check that the page is mapped and read
        // it directly (a dlclose racing this read can still fault).
        // SAFETY: the caller keeps `src..src + dst.len()` within one page.
        return unsafe { mapped_copy(src, dst) };
    }
    (n > 0).then_some(n as usize)
}

/// Fallback of [`read_some`]: copies `dst.len()` bytes if their page is
/// mapped (`msync` fails with ENOMEM on an address that is not).
///
/// # Safety
/// `src..src + dst.len()` lies within one page.
unsafe fn mapped_copy(src: usize, dst: &mut [u8]) -> Option<usize> {
    let first = src & !(PAGE - 1);
    let rc = mwrap_core::errno::preserved(|| {
        // SAFETY: msync only asks the kernel about the page.
        unsafe { libc::msync(first as *mut libc::c_void, PAGE, libc::MS_ASYNC) }
    });
    if rc != 0 {
        return None;
    }
    // SAFETY: the page is mapped (a racing dlclose can still unmap it: the
    // reason process_vm_readv is tried first); the copy stays in it.
    unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
    Some(dst.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_pages_and_cuts_long_strings() {
        let mut page = vec![b'x'; 3 * PAGE];
        let base = page.as_ptr() as usize;
        let start = (base / PAGE + 1) * PAGE - 3 - base;
        page[start..start + 6].copy_from_slice(b"hello\0");
        let p = page[start..].as_ptr() as usize;
        let mut buf = [0u8; 64];
        assert_eq!(copy_cstr(p, &mut buf), Some((&b"hello"[..], false)));
        let mut small = [0u8; 4];
        assert_eq!(copy_cstr(p, &mut small), Some((&b"hell"[..], true)));
        assert_eq!(copy_cstr(0, &mut buf), None);
        let mut six = [0u8; 6];
        assert!(read_exact(p, &mut six));
        assert_eq!(&six, b"hello\0");
        let word = read_value::<usize>(p).unwrap();
        assert_eq!(word.to_ne_bytes()[..6], *b"hello\0");
    }

    #[test]
    fn unmapped_memory_is_an_error_not_a_fault() {
        // SAFETY: a fresh anonymous mapping, unmapped before it is read.
        let p = unsafe {
            let p = libc::mmap(
                core::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::munmap(p, PAGE);
            p as usize
        };
        let mut buf = [0u8; 16];
        assert_eq!(copy_cstr(p, &mut buf), None);
        assert!(!read_exact(p, &mut buf));
        assert_eq!(read_value::<usize>(p), None);
    }
}
