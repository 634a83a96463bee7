//! `Mwrap.quiet { |depth| }`: nothing the calling fiber allocates inside
//! the block is recorded.
//!
//! Quiet sections belong to the fiber that entered them: a fiber that
//! yields inside one (`Fiber.yield`, an `Enumerator#next`) leaves the rest
//! of its thread recorded as usual, and is quiet again when resumed. Under
//! the preload, the preload keeps the depth per fiber (by execution
//! context) and returns it; without it, the depth is kept in fiber-local
//! storage here, so `quiet` yields 1, 2, … either way.
//!
//! Unlike the rest of the extension this method is a raw C function around
//! `rb_ensure`, as in mwrap 2.x: Ruby itself runs the "leave" half when the
//! block returns, raises, `break`s or `throw`s, and an exception travels on
//! untouched. (A magnus function would catch the exception, leave, then
//! raise it again; that re-raise allocates, on the caller's line, after
//! the quiet section ended.) No Rust value with a destructor lives in a
//! frame Ruby may jump over.

use magnus::{rb_sys::AsRawValue, Error, Ruby};
use rb_sys::VALUE;

use crate::preload;

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

/// The fiber-local key of the depth without the preload.
fn depth_key() -> rb_sys::ID {
    // SAFETY: interning a C string literal, with the GVL.
    unsafe { rb_sys::rb_intern(c"__mwrap_quiet_depth".as_ptr()) }
}

/// Adds `delta` to this fiber's depth without the preload; the new depth.
/// Thread#[] storage is fiber-local.
fn add_fiber_depth(delta: i64) -> u32 {
    // SAFETY: with the GVL; rb_thread_local_aref/aset read and write the
    // current fiber's storage.
    unsafe {
        let thread = rb_sys::rb_thread_current();
        let key = depth_key();
        let old = rb_sys::rb_thread_local_aref(thread, key);
        let old = if old == rb_sys::Qnil as VALUE {
            0
        } else {
            rb_sys::rb_num2long(old)
        };
        let new = (old + delta).max(0);
        rb_sys::rb_thread_local_aset(thread, key, rb_sys::rb_int2inum(new as _));
        new as u32
    }
}

/// Enters one level on this fiber; returns the new depth.
fn enter() -> u32 {
    match preload::get() {
        Some(p) => p.quiet_enter(),
        None => add_fiber_depth(1),
    }
}

/// Leaves one level on this fiber.
fn leave() {
    match preload::get() {
        Some(p) => {
            p.quiet_exit();
        }
        None => {
            add_fiber_depth(-1);
        }
    }
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
