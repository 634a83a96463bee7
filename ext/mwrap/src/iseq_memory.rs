//! `Mwrap.iseq_memory(min = 0)`: the memory held by live instruction
//! sequences, grouped by the path they were compiled under and their
//! first line.
//!
//! Ruby's own way to reach an iseq from Ruby code is to wrap it in a
//! `RubyVM::InstructionSequence`, which allocates an object per iseq and
//! changes the very heap being measured. Instead this walks the heap's
//! slots with `rb_objspace_each_objects` and reads the internal iseqs
//! (T_IMEMO objects of imemo type iseq) directly: no wrapper is made.
//!
//! Nothing in the walk allocates a Ruby object (so no GC, and no
//! compaction, can run during it): each iseq's path is copied into Rust
//! memory inside the callback and the Hash is built after the walk, so no
//! raw VALUE is held across an allocation. It needs no preload.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::Write;

use magnus::{function, scan_args::scan_args, Error, RHash, Ruby, Value};
use rb_sys::{ruby_fl_ushift, ruby_value_type, VALUE};

use crate::args::byte_count;
use crate::mwrap_module::location_string;
use crate::preload;

extern "C" {
    // gc.c; exported by libruby but not declared in its public headers.
    fn rb_objspace_each_objects(
        callback: unsafe extern "C" fn(*mut c_void, *mut c_void, usize, *mut c_void) -> c_int,
        data: *mut c_void,
    );
    fn rb_obj_memsize_of(obj: VALUE) -> usize;
    fn rb_imemo_name(imemo_type: c_int) -> *const c_char;
    // iseq.c: take an `rb_iseq_t *` (the imemo itself, not a wrapper).
    fn rb_iseq_path(iseq: *const c_void) -> VALUE;
    fn rb_iseq_first_lineno(iseq: *const c_void) -> VALUE;
}

/// `imemo_iseq` of `enum imemo_type` (Ruby 3.1 internal/imemo.h).
/// Checked against libruby's own `rb_imemo_name` before every walk.
const IMEMO_ISEQ: c_int = 7;
/// `IMEMO_MASK`: the imemo type is `(flags >> FL_USHIFT) & IMEMO_MASK`, as
/// Ruby 3.1's `imemo_type()` reads it.
const IMEMO_MASK: VALUE = 0x0f;
const FL_USHIFT: u32 = ruby_fl_ushift::RUBY_FL_USHIFT as u32;
/// `ISEQ_NOT_LOADED_YET` (iseq.h): `IMEMO_FL_USER1`, which is `FL_USER5`:
/// an iseq from a binary (`load_from_binary`) whose body is not read yet.
const ISEQ_NOT_LOADED_YET: VALUE = 1 << (FL_USHIFT + 5);
/// `ISEQ_USE_COMPILE_DATA` (iseq.h): `IMEMO_FL_USER2`, `FL_USER6`: still
/// being compiled (or its compilation failed); not an executable iseq.
const ISEQ_USE_COMPILE_DATA: VALUE = 1 << (FL_USHIFT + 6);
const T_MASK: VALUE = ruby_value_type::RUBY_T_MASK as VALUE;
const T_IMEMO: VALUE = ruby_value_type::RUBY_T_IMEMO as VALUE;

/// The start of `struct rb_iseq_struct` (vm_core.h, Ruby 3.1): enough to
/// see whether the iseq has a body.
#[repr(C)]
struct IseqHead {
    flags: VALUE,
    wrapper: VALUE,
    body: *const c_void,
}

/// What the live iseqs of one `path:first_lineno` hold.
#[derive(Default)]
struct Group {
    bytes: u64,
    count: u64,
}

/// The walk's state: groups by their `path:first_lineno` key, and a
/// scratch buffer the key of each iseq is built in (one allocation per
/// new group, not per iseq).
#[derive(Default)]
struct Walk {
    groups: HashMap<Vec<u8>, Group>,
    key: Vec<u8>,
}

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    module.define_module_function("iseq_memory", function!(iseq_memory, -1))?;
    Ok(())
}

/// `Mwrap.iseq_memory(min = 0)`: `{ "path:first_lineno" => [bytes, count] }`
/// for every group of live, fully built iseqs holding more than `min`
/// bytes (`rb_obj_memsize_of` of each iseq, its slot included).
fn iseq_memory(ruby: &Ruby, args: &[Value]) -> Result<RHash, Error> {
    let parsed = scan_args::<(), (Option<Value>,), (), (), (), ()>(args)?;
    let (min,) = parsed.optional;
    let min = byte_count(ruby, "min", min)?;
    let walk = walk_heap(ruby)?;
    let hash = ruby.hash_new();
    for (key, group) in walk.groups {
        if group.bytes <= min {
            continue;
        }
        let row = ruby.ary_new_capa(2);
        row.push(group.bytes)?;
        row.push(group.count)?;
        hash.aset(location_string(ruby, &key), row)?;
    }
    Ok(hash)
}

/// Bytes of every live, fully built iseq (`Mwrap.memory_breakdown`'s
/// `:iseq`).
pub fn total_bytes(ruby: &Ruby) -> Result<u64, Error> {
    Ok(walk_heap(ruby)?.groups.values().map(|g| g.bytes).sum())
}

/// One walk over Ruby's heap, grouping iseqs by path and first line.
fn walk_heap(ruby: &Ruby) -> Result<Walk, Error> {
    check_imemo_layout(ruby)?;
    // Our own copies (the groups) are not the program's memory.
    let _quiet = preload::get().map(|p| p.quiet());
    let mut walk = Walk::default();
    // SAFETY: called with the GVL held (a normal method). The callback
    // allocates no Ruby object and does not raise; `walk` outlives the
    // call, and only the callback touches it meanwhile.
    unsafe { rb_objspace_each_objects(each_slot_range, (&raw mut walk).cast()) };
    Ok(walk)
}

/// Refuses to walk when this libruby's imemo type `IMEMO_ISEQ` is not iseq
/// (another Ruby's layout): reading other imemos as iseqs would crash.
fn check_imemo_layout(ruby: &Ruby) -> Result<(), Error> {
    // SAFETY: rb_imemo_name returns a static C string for every valid
    // imemo type, and 7 is one in every Ruby with this function.
    let name = unsafe { CStr::from_ptr(rb_imemo_name(IMEMO_ISEQ)) };
    if name.to_bytes() == b"iseq" {
        return Ok(());
    }
    Err(Error::new(
        ruby.exception_not_imp_error(),
        format!(
            "Mwrap.iseq_memory: imemo type {IMEMO_ISEQ} of this Ruby is {name:?}, not iseq \
             (built for Ruby 3.1's layout)"
        ),
    ))
}

/// `rb_objspace_each_objects`' callback: the slots `start..end`, `stride`
/// bytes apart, of one heap page. Returns 0 to go on with the next page.
unsafe extern "C" fn each_slot_range(
    start: *mut c_void,
    end: *mut c_void,
    stride: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Walk` iseq_memory passed, alive and not
    // otherwise borrowed during the walk.
    let walk = unsafe { &mut *data.cast::<Walk>() };
    let mut slot = start as usize;
    while slot < end as usize {
        // SAFETY: every slot of a heap page starts with `flags` (RBasic);
        // free slots have their type T_NONE and flags 0.
        let flags = unsafe { *(slot as *const VALUE) };
        if is_iseq(flags) {
            // SAFETY: a live T_IMEMO of imemo type iseq is an rb_iseq_t,
            // and the GVL is held: no GC moves or frees it during the walk.
            unsafe { add_iseq(walk, slot as *const IseqHead) };
        }
        slot += stride;
    }
    0
}

/// Whether a slot with these flags is a fully built iseq: a T_IMEMO (not a
/// free slot, zombie or moved object) of imemo type iseq, neither waiting
/// to be loaded nor still being compiled.
fn is_iseq(flags: VALUE) -> bool {
    flags & T_MASK == T_IMEMO
        && (flags >> FL_USHIFT) & IMEMO_MASK == IMEMO_ISEQ as VALUE
        && flags & (ISEQ_NOT_LOADED_YET | ISEQ_USE_COMPILE_DATA) == 0
}

/// Charges one iseq to its `path:first_lineno` group.
///
/// # Safety
/// `iseq` is a live, executable iseq (see [`is_iseq`]) and the GVL is held.
unsafe fn add_iseq(walk: &mut Walk, iseq: *const IseqHead) {
    // SAFETY: the caller's contract: `iseq` points at a live rb_iseq_t.
    let body = unsafe { (*iseq).body };
    if body.is_null() {
        return; // allocated, its body not yet (a GC inside iseq_alloc)
    }
    // SAFETY: an executable iseq with a body has its location set
    // (prepare_iseq_build does it before anything can see the iseq), so
    // rb_iseq_path returns its path String; it allocates nothing.
    let path = unsafe { rb_iseq_path(iseq.cast()) };
    // SAFETY: as above; returns the body's first_lineno, allocating nothing.
    let lineno = unsafe { rb_iseq_first_lineno(iseq.cast()) };
    // SAFETY: `path` is checked to be a String before its bytes are read;
    // they are copied into `walk.key` before anything else runs.
    let Some(path_bytes) = (unsafe { string_bytes(path) }) else {
        return;
    };
    walk.key.clear();
    walk.key.extend_from_slice(path_bytes);
    // A Fixnum (INT2FIX) in Ruby 3.1; anything else is shown as 0.
    let line = if rb_sys::FIXNUM_P(lineno) {
        // SAFETY: `lineno` is a Fixnum.
        unsafe { rb_sys::FIX2LONG(lineno) }
    } else {
        0
    };
    // Writing into a Vec cannot fail.
    let _ = write!(walk.key, ":{line}");
    // SAFETY: `iseq` is a live object; rb_obj_memsize_of only reads it.
    let bytes = unsafe { rb_obj_memsize_of(iseq as VALUE) } as u64;
    let group = match walk.groups.get_mut(walk.key.as_slice()) {
        Some(group) => group,
        None => walk.groups.entry(walk.key.clone()).or_default(),
    };
    group.bytes = group.bytes.saturating_add(bytes);
    group.count += 1;
}

/// The bytes of `value` if it is a String (not a special constant).
///
/// # Safety
/// `value` is a live Ruby object or a special constant; the slice is only
/// valid until Ruby code runs or allocates.
unsafe fn string_bytes<'a>(value: VALUE) -> Option<&'a [u8]> {
    if rb_sys::SPECIAL_CONST_P(value) {
        return None;
    }
    // SAFETY: `value` is a heap object: its type can be read from its flags.
    if unsafe { rb_sys::RB_BUILTIN_TYPE(value) } != ruby_value_type::RUBY_T_STRING {
        return None;
    }
    // SAFETY: `value` is a String; its pointer and length describe its
    // bytes, which live as long as it does.
    let (ptr, len) = unsafe { (rb_sys::RSTRING_PTR(value), rb_sys::RSTRING_LEN(value)) };
    let len = usize::try_from(len).ok()?;
    if ptr.is_null() {
        return Some(&[]);
    }
    // SAFETY: `ptr` holds `len` readable bytes (see above).
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}
