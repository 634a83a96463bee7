//! `Mwrap::HeapPageBody`: Ruby's object heap pages, as the preload sees
//! them being mapped and unmapped. Class methods only; not instantiable.
//!
//! `stat` follows mwrap 2.x for spans with no sample: `*_max`, `*_min` and
//! `*_mean` are `Float::INFINITY` and `*_stddev` is `0.0`; otherwise
//! `*_max`/`*_min` are Integers and `*_mean`/`*_stddev` Floats (the stddev
//! of one sample is `0.0`). Without the preload every span is empty.

use magnus::{function, method, prelude::*, rb_sys::AsRawValue, Error, RClass, RHash, Ruby, Value};
use mwrap_abi::{HeapPageStats, SpanStats};

use crate::args::{no_memory, type_error};
use crate::preload;

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    let class = module.define_class("HeapPageBody", ruby.class_object())?;
    class.undef_default_alloc_func();
    // SAFETY: undefining a method on a live class object with a C string name.
    unsafe { rb_sys::rb_undef_method(rb_sys::rb_singleton_class(class.as_raw()), c"new".as_ptr()) };
    class.define_singleton_method("each", method!(each, 0))?;
    class.define_singleton_method("stat", function!(stat, -1))?;
    class.define_singleton_method("page_size", function!(page_size, 0))?;
    Ok(())
}

/// `HeapPageBody.each { |address, generation| }` over every live heap page
/// (copied when `each` starts), by address; returns how many pages it
/// yielded (`GC.stat(:heap_allocated_pages)` when nothing changed in
/// between). An Enumerator without a block.
fn each(ruby: &Ruby, rb_self: RClass) -> Result<Value, Error> {
    if !ruby.block_given() {
        return Ok(rb_self.enumeratorize("each", ()).as_value());
    }
    let pages = match preload::get() {
        Some(p) => p
            .heap_pages()
            .map_err(|_| no_memory(ruby, "Mwrap::HeapPageBody.each"))?,
        None => Vec::new(),
    };
    for page in &pages {
        let _: Value = ruby.yield_values((page.address, page.generation))?;
    }
    Ok(ruby.integer_from_u64(pages.len() as u64).as_value())
}

/// `HeapPageBody.stat(hash = {})`: fills `hash` (a new one when nil or
/// omitted) with the nine 2.x keys and returns it.
fn stat(ruby: &Ruby, args: &[Value]) -> Result<RHash, Error> {
    let args = magnus::scan_args::scan_args::<(), (Option<Value>,), (), (), (), ()>(args)?;
    let (hash,) = args.optional;
    let hash = match hash.filter(|h| !h.is_nil()) {
        None => ruby.hash_new(),
        Some(h) => {
            RHash::from_value(h).ok_or_else(|| type_error(ruby, "stat's argument", "a Hash", h))?
        }
    };
    let stats = preload::get()
        .map(|p| p.heap_stats())
        .unwrap_or(HeapPageStats {
            live_pages: 0,
            lifespan: SpanStats::default(),
            deathspan: SpanStats::default(),
            resurrects: 0,
        });
    for (prefix, span) in [("lifespan", stats.lifespan), ("deathspan", stats.deathspan)] {
        let empty = span.count == 0;
        let inf = || ruby.float_from_f64(f64::INFINITY).as_value();
        let int = |n: u64| ruby.integer_from_u64(n).as_value();
        let float = |x: f64| {
            ruby.float_from_f64(if x.is_nan() { 0.0 } else { x })
                .as_value()
        };
        hash.aset(
            ruby.to_symbol(format!("{prefix}_max")),
            if empty { inf() } else { int(span.max) },
        )?;
        hash.aset(
            ruby.to_symbol(format!("{prefix}_min")),
            if empty { inf() } else { int(span.min) },
        )?;
        hash.aset(
            ruby.to_symbol(format!("{prefix}_mean")),
            if empty { inf() } else { float(span.mean) },
        )?;
        hash.aset(
            ruby.to_symbol(format!("{prefix}_stddev")),
            if empty {
                float(0.0)
            } else {
                float(span.stddev)
            },
        )?;
    }
    hash.aset(ruby.to_symbol("resurrects"), stats.resurrects)?;
    Ok(hash)
}

/// `HeapPageBody.page_size`: the size (and alignment) of a heap page as
/// the preload tracks it, or nil without the preload.
fn page_size() -> Option<u64> {
    preload::get().map(|p| p.heap_page_size())
}
