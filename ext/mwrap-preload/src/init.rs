//! Start-up, once, on the first tracked allocation, in this order: read
//! `MWRAP` (and set up the dump's destinations), look for Ruby, switch the
//! fork gate to its cheap side, and register the fork handlers. Runs with
//! the recursion guard held, so whatever it allocates is untracked.

use crate::state::{begin_start, finish_start, CONFIG, GATE};
use crate::{config, lifecycle, ruby};

#[cold]
pub fn start() {
    if !begin_start() {
        return; // another thread is starting; its allocations count later
    }
    CONFIG.set(config::from_env());
    ruby::attach();
    GATE.use_membarrier();
    lifecycle::register_fork_handlers();
    finish_start();
}
