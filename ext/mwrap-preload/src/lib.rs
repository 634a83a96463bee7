//! The mwrap preload library: interposes the malloc family and charges
//! every allocation to the Ruby line (or native caller) that made it.
//!
//! It links no Ruby symbol, so it loads into any dynamically linked program
//! (`sh`, `perl`, `git` spawned from Ruby); Ruby is found with `dlsym`.
//!
//! - [`api`]: every exported symbol (thin entry points)
//! - [`hooks`]: the malloc family with a header per block
//! - [`tracker`]: decides which location a block belongs to and records it
//! - [`ruby`]: when and how Ruby may be asked for the current line
//! - [`query`]: the read side, exported to the Ruby extension
//! - [`exit_dump`]: `MWRAP` options and the dump at exit

pub mod api;
mod diag;
mod exit_dump;
mod fork;
pub mod hooks;
mod loader;
mod names;
mod query;
mod real;
mod ruby;
mod thread_state;
pub mod tracker;

// Rust's own allocations in the preload bypass our hooks.
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: real::RealGlobalAlloc = real::RealGlobalAlloc;
