//! The mwrap preload library: interposes the malloc family and charges
//! every allocation to the Ruby line (or native caller) that made it.
//!
//! It links no Ruby symbol, so it loads into any dynamically linked program
//! (`sh`, `perl`, `git` spawned from Ruby); Ruby is found with `dlsym`.
//!
//! - [`api`]: every exported symbol (thin entry points)
//! - [`hooks`]: the malloc family with a header per block
//! - [`tracker`]: charges blocks to locations, hands them to the tables
//! - [`locate`]: which location an allocation belongs to
//! - [`ruby`]: when and how Ruby may be asked for the current line
//! - `state`: the process's globals; `config`: `MWRAP`; `init`: start-up
//! - `per_thread`, `thread_data`: each thread's record
//! - `lifecycle`: fork and exit; `copy`: the process copied whole (fork,
//!   the leak scan); `dump`: the dump at exit; `leak_scan`: `Mwrap.leaks`
//! - `query`: the read side, exported to the Ruby extension; `names`: native
//!   names (`symbolize` keeps the symbolizer and the closed objects)
//! - `frames`, `unwind`, `nogvl`, `caller`: stacks (`MWRAP=bt`, `ruby_bt`,
//!   `app_root`) and the GVL-released line
//! - `server`: the endpoint thread of `MWRAP=socket_dir` (accept, parse,
//!   write), which also samples for `timeline` (`/timeline`, `/peak`) and
//!   writes `snapshot`s (`MWRAP=snapshot_interval`); `pages`: what it renders

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod api;
mod caller;
mod config;
mod copy;
mod diag;
mod dump;
mod formats;
mod frames;
pub mod hooks;
mod init;
mod leak_scan;
mod lifecycle;
mod loader;
mod locate;
mod names;
mod nogvl;
mod pages;
mod per_thread;
mod pprof_export;
mod query;
mod real;
mod ruby;
mod server;
mod snapshot;
mod state;
mod symbolize;
mod thread_data;
mod timeline;
pub mod tracker;
mod unwind;

// Rust's own allocations in the preload bypass our hooks.
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: real::RealGlobalAlloc = real::RealGlobalAlloc;
