//! `Mwrap::SourceLocation`: one location (`file.rb:LINE` or a native
//! address), found with `Mwrap[name]`.
//!
//! An instance holds the location's id and name only; every reader asks
//! the preload again, so the object stays current as the program runs.
//! It cannot be created from Ruby (`new` and `allocate` are undefined).

use magnus::{
    function, method, prelude::*, rb_sys::AsRawValue, typed_data::Obj, Error, RArray, RString,
    Ruby, Value,
};
use mwrap_abi::SiteSnapshot;

use crate::args::{mwrap_exception, no_memory, string_arg};
use crate::mwrap_module::location_string;
use crate::preload;

#[magnus::wrap(class = "Mwrap::SourceLocation", free_immediately, size)]
pub struct SourceLocation {
    id: u32,
    name: Box<[u8]>,
}

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    let class = module.define_class("SourceLocation", ruby.class_object())?;
    class.undef_default_alloc_func();
    // SAFETY: undefining a method on a live class object with a C string name.
    unsafe { rb_sys::rb_undef_method(rb_sys::rb_singleton_class(class.as_raw()), c"new".as_ptr()) };
    module.define_module_function("[]", function!(aref, 1))?;
    class.define_method("total", method!(SourceLocation::total, 0))?;
    class.define_method("allocations", method!(SourceLocation::allocations, 0))?;
    class.define_method("frees", method!(SourceLocation::frees, 0))?;
    class.define_method("mean_lifespan", method!(SourceLocation::mean_lifespan, 0))?;
    class.define_method("max_lifespan", method!(SourceLocation::max_lifespan, 0))?;
    class.define_method("live_bytes", method!(SourceLocation::live_bytes, 0))?;
    class.define_method("live_count", method!(SourceLocation::live_count, 0))?;
    class.define_method("name", method!(SourceLocation::name, 0))?;
    class.define_method("each", method!(SourceLocation::each, 0))?;
    class.define_method("stacks", method!(SourceLocation::stacks, 0))?;
    class.define_method("leaked", method!(SourceLocation::leaked, 0))?;
    class.define_method("temporary", method!(SourceLocation::temporary, 0))?;
    class.define_method("inspect", method!(SourceLocation::inspect, 0))?;
    class.define_method("==", method!(SourceLocation::equal, 1))?;
    class.define_method("eql?", method!(SourceLocation::equal, 1))?;
    class.define_method("hash", method!(SourceLocation::hash, 0))?;
    Ok(())
}

/// `Mwrap[location]`: the SourceLocation printed as `location`, or nil when
/// no allocation was ever charged there (always nil without the preload).
///
/// `location` is a String as `Mwrap.each`/`Mwrap.dump` print it (escaped)
/// or raw: `"file.rb:LINE"` (looked up as a Ruby line first), a native
/// name holding `[0xADDR]`, or a bare `0xADDR`.
/// A non-String is a TypeError; an empty String or one holding a NUL byte
/// is `Mwrap::InvalidLocation` (an ArgumentError).
fn aref(ruby: &Ruby, location: Value) -> Result<Option<SourceLocation>, Error> {
    let string = string_arg(ruby, "location", location)?;
    // SAFETY: the bytes are copied before any Ruby code can run.
    let bytes: Vec<u8> = unsafe { string.as_slice() }.to_vec();
    if bytes.is_empty() || bytes.contains(&0) {
        let why = if bytes.is_empty() {
            "must not be empty"
        } else {
            "must not contain a NUL byte"
        };
        return Err(Error::new(
            mwrap_exception(ruby, "InvalidLocation")?,
            format!("location {why}: {}", string.inspect()),
        ));
    }
    let Some(preload) = preload::get() else {
        return Ok(None);
    };
    let Some(id) = preload.lookup(&bytes) else {
        return Ok(None);
    };
    let name = match preload.site(id).map_err(|_| no_memory(ruby, "Mwrap[]"))? {
        Some(site) => site.name,
        None => bytes,
    };
    Ok(Some(SourceLocation {
        id,
        name: name.into_boxed_slice(),
    }))
}

impl SourceLocation {
    /// The location's counters now (all zero if the preload forgot it).
    fn snapshot(&self) -> SiteSnapshot {
        preload::get()
            .and_then(|p| p.snapshot(self.id))
            .unwrap_or_default()
    }

    /// Bytes requested by every allocation charged here.
    fn total(&self) -> u64 {
        self.snapshot().total
    }

    fn allocations(&self) -> u64 {
        self.snapshot().allocations
    }

    fn frees(&self) -> u64 {
        self.snapshot().frees
    }

    /// Mean lifespan in GC generations of the freed allocations;
    /// Infinity when none was freed.
    fn mean_lifespan(&self) -> f64 {
        let s = self.snapshot();
        if s.frees == 0 {
            f64::INFINITY
        } else {
            s.age_total as f64 / s.frees as f64
        }
    }

    /// Longest lifespan in GC generations of a freed allocation.
    fn max_lifespan(&self) -> u64 {
        self.snapshot().max_lifespan
    }

    fn live_bytes(&self) -> u64 {
        self.snapshot().live_bytes
    }

    fn live_count(&self) -> u64 {
        self.snapshot().live_count
    }

    /// The printed name, frozen and deduplicated: `Mwrap[loc.name]` finds it.
    fn name(ruby: &Ruby, rb_self: &Self) -> RString {
        location_string(ruby, &rb_self.name)
    }

    /// `each { |size, generation| }` over the allocations still live, as
    /// copied when `each` starts; returns self. An Enumerator without a block.
    fn each(ruby: &Ruby, rb_self: Obj<Self>) -> Result<Value, Error> {
        if !ruby.block_given() {
            return Ok(rb_self.enumeratorize("each", ()).as_value());
        }
        let live = match preload::get() {
            Some(p) => p
                .live(rb_self.id)
                .map_err(|_| no_memory(ruby, "Mwrap::SourceLocation#each"))?,
            None => Vec::new(),
        };
        for allocation in live {
            let _: Value = ruby.yield_values((allocation.size, allocation.generation))?;
        }
        Ok(rb_self.as_value())
    }

    /// `stacks`: the location's (location, stack) rows, largest total
    /// first, each the eight values `Mwrap.each_stack` yields, as an Array.
    fn stacks(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        let out = ruby.ary_new();
        let Some(preload) = preload::get() else {
            return Ok(out);
        };
        let rows = preload
            .stacks(0, Some(rb_self.id))
            .map_err(|_| no_memory(ruby, "Mwrap::SourceLocation#stacks"))?;
        for entry in &rows {
            out.push(crate::stacks::stack_row(ruby, entry)?)?;
        }
        Ok(out)
    }

    /// How many of this location's allocations were freed before their
    /// thread's next allocation (temporary ones, as memray and heaptrack
    /// count them).
    fn temporary(&self) -> u64 {
        preload::get().map_or(0, |p| p.temporary(self.id))
    }

    /// `[leaked_bytes, leaked_count]`: this location's live blocks that no
    /// pointer reaches (one scan of the process, see `Mwrap.leaks`).
    fn leaked(ruby: &Ruby, rb_self: &Self) -> Result<(u64, u64), Error> {
        crate::leaks::leaked_at(ruby, rb_self.id)
    }

    fn inspect(ruby: &Ruby, rb_self: &Self) -> String {
        let s = rb_self.snapshot();
        format!(
            "#<Mwrap::SourceLocation {} total={} allocations={} frees={} live_bytes={} \
             live_count={}>",
            location_string(ruby, &rb_self.name).inspect(),
            s.total,
            s.allocations,
            s.frees,
            s.live_bytes,
            s.live_count
        )
    }

    /// Two SourceLocations are equal when they name the same location.
    fn equal(&self, other: Value) -> bool {
        <&SourceLocation>::try_convert(other).is_ok_and(|o| o.id == self.id)
    }

    fn hash(&self) -> i64 {
        // Any stable mix of the id that stays a Fixnum.
        (u64::from(self.id).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 2) as i64
    }
}
