//! Names for mwrap's native frames, made on the read side (never inside a
//! hook): a return address becomes the frame `backtrace_symbols` prints
//! (`/lib/libfoo.so(func+0x1c) [0x7f…]`), with static functions named from
//! the object's `.symtab` and ` at file.c:LINE` appended from DWARF line
//! information, found in the object or in a separate debug file.
//!
//! - [`Symbolizer`] names addresses of objects loaded now, and of objects
//!   since `dlclose`d from a [`ModuleRecord`] captured before the close.
//! - [`ModuleRecord::capture`] is the only part meant to run inside a hook:
//!   it allocates nothing and takes no lock.
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
