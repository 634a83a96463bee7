//! Start-up, once, when the preload is initialised or on the first tracked
//! allocation if that comes first, in this order: read
//! `MWRAP` (and set up the dump's destinations), look for Ruby, switch the
//! fork gate to its cheap side, register the fork handlers, and start the
//! endpoint (`MWRAP=socket_dir`, see `server`). Runs with
//! the recursion guard held, so whatever it allocates is untracked.

use crate::state::{
    begin_start, finish_start, set_app_root, set_frame_counts, started, CONFIG, GATE,
};
use crate::{config, lifecycle, per_thread, ruby, server, unwind};

#[cold]
pub fn start() {
    if !begin_start() {
        return; // another thread is starting; its allocations count later
    }
    let mut config = config::from_env();
    set_frame_counts(config.bt, config.options.ruby_bt);
    set_app_root(config.app_root.take());
    CONFIG.set(config);
    ruby::attach();
    unwind::init();
    GATE.use_membarrier();
    lifecycle::register_fork_handlers();
    finish_start();
    // Last: the endpoint's thread allocates, and finds start-up done.
    server::start();
}

/// Start-up also runs when the preload is initialised, not only at the
/// first allocation: a program that never allocates still has its `MWRAP`
/// read (a bad entry reported) and its dump written.
extern "C" fn start_at_load() {
    per_thread::busy(|_, _| {
        if !started() {
            start();
        }
    });
}

#[used]
#[link_section = ".init_array"]
static START_AT_LOAD: extern "C" fn() = start_at_load;
