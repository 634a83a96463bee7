//! Names for mwrap's native frames, made on the read side (never inside a
//! hook).
//!
//! - [`ModuleRecord::capture`] is the only part meant to run inside a hook:
//!   it allocates nothing and takes no lock.
//!
//! Loader memory (`dladdr`'s strings, link maps, mapped ELF headers) is
//! read through the kernel, so a concurrent `dlclose` gives an error
//! rather than a fault.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod loaded;
mod memory;
mod module;

pub use loaded::{resolve_dl_find_object, DlFindObject, DlFindObjectFn, BUILD_ID_MAX};
pub use module::{ModuleRecord, MODULE_PATH_MAX};
