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
            let mut buf = [0u8; 16];
            let mut w = ByteWriter::new(&mut buf);
            w.push_decimal(*line as u64, 0);
            out.extend_from_slice(file);
            out.push(b':');
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
        let found = libc::dladdr(address as *const libc::c_void, &mut info) != 0;
        let cstr = |p: *const libc::c_char| {
            (!p.is_null()).then(|| core::ffi::CStr::from_ptr(p).to_bytes())
        };
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
