//! Printable names of locations. Keys are copied out of the table first:
//! `dladdr` takes the dynamic linker's lock, and a thread inside `dlopen`
//! may be waiting in our hooks for the table's lock.

use mwrap_core::format::{self, ByteWriter, NativeSymbol};
use mwrap_core::SiteKey;

use crate::tracker::TABLE;

/// Appends the name of `id` to `out`; false if the id is unknown.
pub fn site_name(id: u32, out: &mut Vec<u8>) -> bool {
    let Some(key) = TABLE.with_key(id, |k| k.clone()) else {
        return false;
    };
    key_name(&key, out);
    true
}

pub fn key_name(key: &SiteKey, out: &mut Vec<u8>) {
    match key {
        SiteKey::Ruby { file, line } => {
            // room for the file, ':' and a u32's digits
            let mut buf = vec![0u8; file.len() + 11];
            let mut w = ByteWriter::new(&mut buf);
            format::ruby_location(&mut w, file, *line);
            out.extend_from_slice(w.as_bytes());
        }
        SiteKey::Native { address } => {
            let mut buf = [0u8; 4096];
            let mut w = ByteWriter::new(&mut buf);
            native_name(&mut w, *address);
            out.extend_from_slice(w.as_bytes());
        }
        SiteKey::Overflow => out.extend_from_slice(b"[mwrap: location table full]"),
    }
}

/// `backtrace_symbols`-style name of a return address, without allocating.
pub fn native_name(out: &mut ByteWriter<'_>, address: usize) {
    // SAFETY: dladdr fills a plain struct; the strings it points to live as
    // long as the object stays loaded, which covers this call.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let found = crate::loader::dladdr_is_safe()
            && libc::dladdr(address as *const libc::c_void, &mut info) != 0;
        let cstr = |p: *const libc::c_char| mapped_cstr(p, 4096);
        let sym = if found {
            NativeSymbol {
                object: cstr(info.dli_fname).filter(|s| !s.is_empty()),
                object_base: info.dli_fbase as usize,
                symbol: cstr(info.dli_sname),
                symbol_address: info.dli_saddr as usize,
            }
        } else {
            NativeSymbol::default()
        };
        format::native_location(out, address, &sym);
    }
}

/// The NUL-terminated string at `p` (at most `max` bytes), reading only
/// from pages that are mapped. `dladdr` can hand back names inside an object
/// that is no longer there: a fork child inherits the dynamic loader in
/// whatever state another thread left it in the middle of a `dlclose`.
unsafe fn mapped_cstr<'a>(p: *const libc::c_char, max: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        return None;
    }
    let page = match libc::sysconf(libc::_SC_PAGESIZE) {
        n if n > 0 => n as usize,
        _ => 4096,
    };
    let start = p as usize;
    let mut mapped_until = start;
    for len in 0..max {
        let at = start + len;
        if at >= mapped_until {
            let first = at & !(page - 1);
            // msync fails with ENOMEM on an address that is not mapped.
            if libc::msync(first as *mut libc::c_void, page, libc::MS_ASYNC) != 0 {
                return None;
            }
            mapped_until = first + page;
        }
        if *(at as *const u8) == 0 {
            return Some(core::slice::from_raw_parts(p as *const u8, len));
        }
    }
    None
}
