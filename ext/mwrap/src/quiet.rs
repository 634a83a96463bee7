//! `Mwrap.quiet { |depth| }`: nothing the calling thread allocates inside
//! the block is recorded.
//!
//! The depth is counted here, per native thread (a Ruby thread is one
//! native thread; its fibers share the count), so `quiet` yields 1, 2, …
//! with or without the preload. Under the preload each level also enters
//! the preload's own quiet section for the thread.
//!
//! Unlike the rest of the extension this method is a raw C function around
//! `rb_ensure`, as in mwrap 2.x: Ruby itself runs the "leave" half when the
//! block returns, raises, `break`s or `throw`s, and an exception travels on
//! untouched. (A magnus function would catch the exception, leave, then
//! raise it again; that re-raise allocates, on the caller's line, after
//! the quiet section ended.) No Rust value with a destructor lives in a
//! frame Ruby may jump over.

use std::cell::Cell;

use magnus::{rb_sys::AsRawValue, Error, Ruby};
use rb_sys::VALUE;

use crate::preload;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    // SAFETY: `quiet` has the arity-0 method prototype `fn(self) -> VALUE`;
    // Ruby calls it through the untyped pointer it stores.
    unsafe {
        let func = std::mem::transmute::<
            unsafe extern "C" fn(VALUE) -> VALUE,
            unsafe extern "C" fn() -> VALUE,
        >(quiet);
        rb_sys::rb_define_module_function(module.as_raw(), c"quiet".as_ptr(), Some(func), 0);
    }
    Ok(())
}

/// Enters one level on this thread; returns the new depth.
fn enter() -> u32 {
    let depth = DEPTH
        .try_with(|d| {
            let depth = d.get().saturating_add(1);
            d.set(depth);
            depth
        })
        .unwrap_or(1);
    if let Some(p) = preload::get() {
        p.quiet_enter();
    }
    depth
}

/// Leaves one level on this thread.
fn leave() {
    if let Some(p) = preload::get() {
        p.quiet_exit();
    }
    let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
}

/// `Mwrap.quiet { |depth| … }`: the block's value.
unsafe extern "C" fn quiet(_module: VALUE) -> VALUE {
    // SAFETY (whole function): called by Ruby with the GVL held.
    if unsafe { rb_sys::rb_block_given_p() } == 0 {
        let message = "Mwrap.quiet needs a block (no block given)";
        let exception = unsafe {
            rb_sys::rb_exc_new(
                rb_sys::rb_eLocalJumpError,
                message.as_ptr().cast(),
                message.len() as _,
            )
        };
        unsafe { rb_sys::rb_exc_raise(exception) };
    }
    let depth = enter();
    unsafe {
        rb_sys::rb_ensure(
            Some(yield_depth),
            rb_sys::rb_uint2inum(depth as _),
            Some(leave_ensure),
            0,
        )
    }
}

unsafe extern "C" fn yield_depth(depth: VALUE) -> VALUE {
    // SAFETY: inside rb_ensure, with the GVL; the block was checked for.
    unsafe { rb_sys::rb_yield(depth) }
}

unsafe extern "C" fn leave_ensure(_: VALUE) -> VALUE {
    leave();
    rb_sys::Qnil as VALUE
}
