//! Bookkeeping for mwrap, testable without any hook: the site table and
//! its live sets, file names, per-thread records, the fork-safe locks and
//! gate, `MWRAP` options, the read API and one renderer per format. The
//! preload library wires these to the malloc family; the Ruby extension
//! reads them through the C ABI of [`abi`] (the `mwrap-abi` crate).

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub use mwrap_abi as abi;

pub mod address_table;
pub mod app_root;
pub mod errno;
pub mod files;
pub mod format;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub mod got;
pub mod hash;
pub mod header;
pub mod heap;
pub mod key;
pub mod leaks;
pub mod live;
pub mod location;
pub mod lock;
pub mod maps;
pub mod mem;
pub mod options;
pub mod page;
pub mod read;
pub mod render;
pub mod sampler;
pub mod sites;
pub mod stacks;
pub mod threads;
pub mod web;

#[cfg(test)]
mod testing;

pub use header::{LiveAllocation, HEADER_SIZE};
pub use key::SiteKey;
pub use sites::SiteTable;
