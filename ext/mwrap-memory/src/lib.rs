//! What this process's memory is made of, for mwrap: `/proc/self/smaps`
//! and `mincore` ([`maps`]), the allocator's own statistics
//! ([`allocator`]), and the breakdown of RSS over them ([`breakdown`]).
//! Shared by the Ruby extension (`Mwrap.memory_breakdown`) and the
//! preload (the JSON exit dump); it knows nothing of Ruby or of mwrap's
//! tables, which the caller passes in.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod allocator;
pub mod breakdown;
pub mod maps;
