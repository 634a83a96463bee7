//! Bookkeeping for mwrap, testable without any hook: the site table and its
//! live-allocation lists, the allocation header, `MWRAP` options, location
//! parsing, and allocation-free text formatting. The preload library wires
//! these to the malloc family; the Ruby extension reads them through [`abi`].

pub mod abi;
pub mod errno;
pub mod fork_safe;
pub mod format;
pub mod header;
pub mod heap;
pub mod key;
pub mod location;
pub mod options;
pub mod table;

pub use header::{LiveAllocation, HEADER_SIZE};
pub use key::{KeyRef, SiteKey};
pub use table::SiteTable;
