//! Module functions of `Mwrap`: the 2.x API (`dump`, `each`, `clear`,
//! `reset`, totals) plus `preloaded?`, `current_generation`,
//! `abi_version` and `live_snapshot`. `Mwrap[]` lives with
//! [`crate::source_location`], `Mwrap.quiet` in [`crate::quiet`].
//!
//! Every function copies what it needs out of the preload first (see
//! [`crate::preload`]) and only then builds Ruby objects, yields or calls
//! `io.write`: nothing is held while Ruby code runs.

use magnus::{
    function, method, prelude::*, rb_sys::FromRawValue, scan_args::scan_args, Error, RHash,
    RString, Ruby, Value,
};
use mwrap_abi::{SiteFilter, ABI_VERSION, RENDER_TEXT};

use crate::args::{byte_count, class_name, no_memory};
use crate::preload::{self, Site};

/// `io.write` is called with at most this much output at a time.
const WRITE_CHUNK: usize = 64 * 1024;

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    module.define_module_function("preloaded?", function!(preloaded, 0))?;
    module.define_module_function("dump", function!(dump, -1))?;
    module.define_module_function("each", method!(each, -1))?;
    module.define_module_function("total_bytes_allocated", function!(total_bytes_allocated, 0))?;
    module.define_module_function("total_bytes_freed", function!(total_bytes_freed, 0))?;
    module.define_module_function("clear", function!(reset, 0))?;
    module.define_module_function("reset", function!(reset, 0))?;
    module.define_module_function("current_generation", function!(current_generation, 0))?;
    module.define_module_function("abi_version", function!(abi_version, 0))?;
    module.define_module_function("live_snapshot", function!(live_snapshot, -1))?;
    Ok(())
}

/// `Mwrap.preloaded?`: true when the process runs under a compatible preload.
fn preloaded() -> bool {
    preload::get().is_some()
}

/// `Mwrap.dump(io = $stderr, min = 0)`: one `"%16zu %12zu %s\n"` line per
/// location whose total is above `min`, largest first, via `io.write`.
fn dump(ruby: &Ruby, args: &[Value]) -> Result<(), Error> {
    let args = scan_args::<(), (Option<Value>, Option<Value>), (), (), (), ()>(args)?;
    let (io, min) = args.optional;
    let io = match io {
        Some(io) if !io.is_nil() => io,
        _ => stderr(),
    };
    if !io.is_kind_of(ruby.class_io()) {
        return Err(Error::new(
            ruby.exception_type_error(),
            format!(
                "wrong argument type {} (expected IO): {}",
                class_name(io),
                io.inspect()
            ),
        ));
    }
    let min = byte_count(ruby, "min", min)?;
    let Some(preload) = preload::get() else {
        return Ok(());
    };
    // Rendered by the preload (the same renderer as the exit dump), then
    // written in pieces of whole lines.
    let text = preload
        .render(RENDER_TEXT, min)
        .map_err(|_| no_memory(ruby, "Mwrap.dump"))?;
    let mut rest = &text[..];
    while !rest.is_empty() {
        let mut end = rest.len().min(WRITE_CHUNK);
        if end < rest.len() {
            end = rest[..end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(end, |nl| nl + 1);
        }
        write_io(ruby, io, &rest[..end])?;
        rest = &rest[end..];
    }
    Ok(())
}

fn write_io(ruby: &Ruby, io: Value, bytes: &[u8]) -> Result<(), Error> {
    let _: Value = io.funcall("write", (ruby.str_from_slice(bytes),))?;
    Ok(())
}

/// `Mwrap.each(min = 0) { |location, total, allocations, frees, age_total,
/// max_lifespan| }`; an Enumerator without a block.
fn each(ruby: &Ruby, rb_self: Value, args: &[Value]) -> Result<Value, Error> {
    let parsed = scan_args::<(), (Option<Value>,), (), (), (), ()>(args)?;
    let (min,) = parsed.optional;
    let min = byte_count(ruby, "min", min)?;
    if !ruby.block_given() {
        return Ok(rb_self.enumeratorize("each", args).as_value());
    }
    let Some(preload) = preload::get() else {
        return Ok(ruby.qnil().as_value());
    };
    let sites = preload
        .sites_above(min)
        .map_err(|_| no_memory(ruby, "Mwrap.each"))?;
    for Site { snapshot, name } in sites {
        let location = location_string(ruby, &name);
        let _: Value = ruby.yield_values((
            location,
            snapshot.total,
            snapshot.allocations,
            snapshot.frees,
            snapshot.age_total,
            snapshot.max_lifespan,
        ))?;
    }
    Ok(ruby.qnil().as_value())
}

/// `Mwrap.live_snapshot(min_live_bytes = 0)`: `{ location => [live_bytes,
/// live_count, allocations, frees, total] }` for every location holding
/// more than `min_live_bytes` live bytes, from one snapshot of the table.
/// Keys are frozen, interned location strings; `{}` without the preload.
fn live_snapshot(ruby: &Ruby, args: &[Value]) -> Result<RHash, Error> {
    let parsed = scan_args::<(), (Option<Value>,), (), (), (), ()>(args)?;
    let (min,) = parsed.optional;
    let min = byte_count(ruby, "min_live_bytes", min)?;
    let hash = ruby.hash_new();
    let Some(preload) = preload::get() else {
        return Ok(hash);
    };
    // live_bytes <= total, so also asking `total > min` loses nothing.
    let filter = SiteFilter {
        min_total: min,
        min_live_bytes: min,
        use_min_live: 1,
        _reserved: 0,
    };
    let sites = preload
        .sites(filter)
        .map_err(|_| no_memory(ruby, "Mwrap.live_snapshot"))?;
    for Site { snapshot, name } in sites {
        let row = ruby.ary_new_capa(5);
        row.push(snapshot.live_bytes)?;
        row.push(snapshot.live_count)?;
        row.push(snapshot.allocations)?;
        row.push(snapshot.frees)?;
        row.push(snapshot.total)?;
        hash.aset(location_string(ruby, &name), row)?;
    }
    Ok(hash)
}

fn total_bytes_allocated() -> u64 {
    preload::get().map_or(0, |p| p.totals().allocated)
}

fn total_bytes_freed() -> u64 {
    preload::get().map_or(0, |p| p.totals().freed)
}

/// `Mwrap.clear` / `Mwrap.reset`: zero every counter.
fn reset() {
    if let Some(p) = preload::get() {
        p.reset();
    }
}

fn current_generation() -> u64 {
    preload::get().map_or(0, |p| p.current_generation())
}

fn abi_version() -> u32 {
    ABI_VERSION
}

/// A frozen, deduplicated (interned) location string: UTF-8 when the name
/// is valid UTF-8, binary otherwise.
pub(crate) fn location_string(ruby: &Ruby, name: &[u8]) -> RString {
    let s = match std::str::from_utf8(name) {
        Ok(utf8) => ruby.str_new(utf8),
        Err(_) => ruby.str_from_slice(name),
    };
    s.to_interned_str().as_r_string()
}

fn stderr() -> Value {
    // SAFETY: `$stderr` always exists; rb_gv_get returns its current value.
    unsafe { Value::from_raw(rb_sys::rb_gv_get(c"$stderr".as_ptr())) }
}
