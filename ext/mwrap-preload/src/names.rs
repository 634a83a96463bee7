//! Native names of return addresses, as `backtrace_symbols` prints them
//! (from `dladdr`), with static functions and source lines where the files
//! have them (`mwrap_symbols`): the [`NativeNamer`] of the read API.
//! `dladdr` takes the dynamic linker's lock and the symbolizer reads
//! files, so names are only ever made on the read side, with no table lock
//! held (see `mwrap_core::read`).

use mwrap_core::errno;
use mwrap_core::format::TextOut;
use mwrap_core::format::{self, ByteWriter, NativeSymbol};
use mwrap_core::read::NativeNamer;

use crate::state::{CLOSED_MODULES, SYMBOLIZER};

/// Names addresses with the symbolizer (`mwrap_symbols`): static
/// functions from `.symtab`, and for frames ` at file.c:LINE` from DWARF;
/// a frame of an object closed since its stack was first seen is named
/// after that object. Falls back to `dladdr` alone when the symbolizer is
/// held by this thread already.
pub struct Symbols;

impl Symbols {
    fn name(address: usize, epoch: u32, with_line: bool, out: &mut ByteWriter<'_>) {
        let closed = CLOSED_MODULES.closed_since(epoch, address);
        let mut text = Vec::new();
        let named = SYMBOLIZER.with(crate::loader::dladdr_is_safe, |s| {
            match (&closed, with_line) {
                (Some(m), true) => s.describe_closed(address, m, &mut text),
                (Some(m), false) => s.describe_closed_function(address, m, &mut text),
                (None, true) => s.describe(address, &mut text),
                (None, false) => s.describe_function(address, &mut text),
            }
        });
        if named.is_some() && !text.is_empty() {
            out.push(&text);
        } else {
            native_name(out, address);
        }
    }
}

impl NativeNamer for Symbols {
    /// A location: the function (no source line, which would make the
    /// name of one return address depend on the debug files installed);
    /// an object closed since it loaded is named after the first closed
    /// object that held the address.
    fn name_native(&self, address: usize, out: &mut ByteWriter<'_>) {
        Self::name(address, 0, false, out);
    }

    fn name_frame(&self, address: usize, epoch: u32, out: &mut ByteWriter<'_>) {
        Self::name(address, epoch, true, out);
    }
}

/// Longest object path or symbol name copied; longer ones are cut.
const MAX_NAME: usize = 1024;

/// `backtrace_symbols`-style name of a return address, without allocating.
fn native_name(out: &mut ByteWriter<'_>, address: usize) {
    let mut object_buf = [0u8; MAX_NAME];
    let mut symbol_buf = [0u8; MAX_NAME];
    // SAFETY: dladdr fills a plain struct. The strings it points to belong
    // to the object, which another thread may `dlclose` (and unmap) as soon
    // as dladdr returns: they are only ever read through `copy_cstr`.
    let sym = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if crate::loader::dladdr_is_safe()
            && libc::dladdr(address as *const libc::c_void, &mut info) != 0
        {
            NativeSymbol {
                object: copy_cstr(info.dli_fname, &mut object_buf).filter(|s| !s.is_empty()),
                object_base: info.dli_fbase as usize,
                symbol: copy_cstr(info.dli_sname, &mut symbol_buf),
                symbol_address: info.dli_saddr as usize,
            }
        } else {
            NativeSymbol::default()
        }
    };
    format::native_location(out, address, &sym);
}

/// Copies the NUL-terminated string at `p` into `buf` (cut at its length)
/// and returns the copy, or None when `p` is null or not mapped. The kernel
/// does the reading (`process_vm_readv` on this process), so memory that
/// another thread unmaps meanwhile gives an error instead of a SIGSEGV.
fn copy_cstr(p: *const libc::c_char, buf: &mut [u8]) -> Option<&[u8]> {
    if p.is_null() {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        let at = p as usize + len;
        // One page at a time: a fault ends the read at the page boundary.
        let chunk = (PAGE - at % PAGE).min(buf.len() - len);
        let got = read_own_memory(at, &mut buf[len..len + chunk])?;
        if let Some(nul) = buf[len..len + got].iter().position(|&b| b == 0) {
            return Some(&buf[..len + nul]);
        }
        len += got;
        if got < chunk {
            return None; // the rest is not mapped and no NUL was seen
        }
    }
    Some(&buf[..len]) // cut: longer than the buffer
}

/// Smallest page size on x86-64 and aarch64 Linux; reads are split here.
const PAGE: usize = 4096;

/// Reads `dst.len()` bytes at `src` of this process; the count read, or
/// None when nothing at `src` is readable.
fn read_own_memory(src: usize, dst: &mut [u8]) -> Option<usize> {
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: src as *mut libc::c_void,
        iov_len: dst.len(),
    };
    // SAFETY: `local` covers `dst`; the kernel checks `remote` and fails
    // with EFAULT instead of faulting.
    let (n, e) = errno::preserved(|| unsafe {
        let n = libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0);
        (n, errno::get())
    });
    if n < 0 && matches!(e, libc::ENOSYS | libc::EPERM) {
        // Seccomp or an old kernel: check that the page is mapped and
        // read it directly (a dlclose racing this read can still fault).
        // SAFETY: the copy stays within one page of `src` and `dst`.
        return unsafe { mapped_copy(src, dst) };
    }
    (n > 0).then_some(n as usize)
}

/// Fallback of [`read_own_memory`]: copies `dst.len()` bytes (all on one
/// page) if that page is mapped. `msync` fails with ENOMEM on an address
/// that is not mapped.
///
/// # Safety
/// `src..src + dst.len()` lies within one page.
unsafe fn mapped_copy(src: usize, dst: &mut [u8]) -> Option<usize> {
    let first = src & !(PAGE - 1);
    // SAFETY: msync only asks the kernel about the page.
    let rc = errno::preserved(|| unsafe {
        libc::msync(first as *mut libc::c_void, PAGE, libc::MS_ASYNC)
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
    fn copies_a_string_across_a_page_boundary_and_cuts_long_ones() {
        // A string that starts 3 bytes before a page boundary.
        let mut page = vec![b'x'; 3 * PAGE];
        let base = page.as_ptr() as usize;
        let start = (base / PAGE + 1) * PAGE - 3 - base;
        page[start..start + 6].copy_from_slice(b"hello\0");
        let mut buf = [0u8; 64];
        let p = page[start..].as_ptr().cast();
        assert_eq!(copy_cstr(p, &mut buf), Some(&b"hello"[..]));
        let mut small = [0u8; 4];
        assert_eq!(copy_cstr(p, &mut small), Some(&b"hell"[..]));
        assert_eq!(copy_cstr(core::ptr::null(), &mut buf), None);
    }

    #[test]
    fn unmapped_memory_gives_none_instead_of_a_fault() {
        // SAFETY: a fresh anonymous mapping, unmapped before it is read.
        unsafe {
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
            let mut buf = [0u8; 64];
            assert_eq!(copy_cstr(p.cast(), &mut buf), None);
        }
    }
}
