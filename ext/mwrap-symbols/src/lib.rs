//! Names for mwrap's native frames, made on the read side (never inside a
//! hook): a return address becomes the frame `backtrace_symbols` prints,
//! with more names and a source line where the files on disk have them.
//!
//! - [`Symbolizer`] names addresses of objects loaded now, and of objects
//!   since `dlclose`d from a [`ModuleRecord`] captured before the close.
//! - [`ModuleRecord::capture`] is the only part meant to run inside a hook:
//!   it allocates nothing and takes no lock.
//!
//! # What a frame looks like
//!
//! `object(symbol+0xOFF) [0xADDRESS] at file.c:LINE`, escaped as every
//! mwrap name is ([`mwrap_core::format`]):
//!
//! - object, symbol and offsets as
//!   [`mwrap_core::format::native_location`] prints `dladdr`'s answer
//!   (`object(+0xOFF) [0x…]` with no symbol, `[0x…]` with no object);
//! - where `dladdr` finds no symbol, the `.symtab` symbol holding the
//!   address names it (static functions): a function before a label, a
//!   sized symbol before a sizeless one, then the nearest;
//! - ` at file:LINE` when DWARF has a line for it. The file is the line
//!   table's name, relative to the compilation directory when under it
//!   (`helper.c`, `src/vm.c`, `../string.c`), absolute otherwise
//!   (`/usr/include/x86_64-linux-gnu/bits/string_fortified.h`): what the
//!   build wrote, the same on every machine that has that build. For
//!   inlined code it is the innermost line, the one executing; the
//!   function named is the symbol's, the outermost.
//! - Symbol and line are those of `address - 1` (a return address points
//!   past its call, maybe into the next function); the address printed is
//!   the return address itself, as today.
//!
//! # Where debug information is looked for
//!
//! In the object itself; else, as gdb looks: by build-id,
//! `ROOT/.build-id/xx/yyyy….debug`; by `.gnu_debuglink` name, next to the
//! object, in its `.debug/`, and in `ROOT` + the object's directory.
//! `ROOT` is `/usr/lib/debug` ([`Symbolizer::set_debug_root`]). A debug
//! file counts when its build-id is the object's, or, when either has
//! none, when its CRC-32 is the debug link's. The debug file's `.symtab`
//! names static functions of an object stripped of its own. Split DWARF
//! (`.dwo`) and `dwz`'s `.gnu_debugaltlink` files are not followed.
//!
//! Loader memory (`dladdr`'s strings, link maps, mapped ELF headers) is
//! read through the kernel, so a concurrent `dlclose` gives an error
//! rather than a fault; symbol tables and DWARF are read from the files on
//! disk, never from the mapped object.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod dwarf;
mod elf;
mod loaded;
mod memory;
mod module;
mod symbolizer;
mod symbols;

pub use loaded::{resolve_dl_find_object, DlFindObject, DlFindObjectFn, BUILD_ID_MAX};
pub use memory::copy_cstr;
pub use module::{ModuleRecord, MODULE_PATH_MAX};
pub use symbolizer::{Stats, Symbolizer, DEFAULT_DEBUG_ROOT};

#[cfg(test)]
mod tests {
    /// The preload keeps one behind a lock in a static.
    #[test]
    fn symbolizer_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<crate::Symbolizer>();
        send::<crate::ModuleRecord>();
    }
}
