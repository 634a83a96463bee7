//! Native names of return addresses, as `backtrace_symbols` prints them
//! (from `dladdr`), with static functions and source lines where the files
//! have them (`mwrap_symbols`): the [`NativeNamer`] of the read API.
//! `dladdr` takes the dynamic linker's lock and the symbolizer reads
//! files, so names are only ever made on the read side, with no table lock
//! held (see `mwrap_core::read`).

use mwrap_core::format::TextOut;
use mwrap_core::format::{self, ByteWriter, NativeSymbol};
use mwrap_core::read::NativeNamer;
use mwrap_symbols::copy_cstr;

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
                object: copy_cstr(info.dli_fname as usize, &mut object_buf)
                    .map(|(s, _cut)| s)
                    .filter(|s| !s.is_empty()),
                object_base: info.dli_fbase as usize,
                symbol: copy_cstr(info.dli_sname as usize, &mut symbol_buf).map(|(s, _cut)| s),
                symbol_address: info.dli_saddr as usize,
            }
        } else {
            NativeSymbol::default()
        }
    };
    format::native_location(out, address, &sym);
}
