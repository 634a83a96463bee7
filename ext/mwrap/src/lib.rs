//! The `mwrap_ext` Ruby extension: reads the tables kept by the preload
//! library (`libmwrap_preload.so`) and exposes them as module `Mwrap`.
//! It links no preload code; see [`preload`] for how the API is found.
//!
//! One file per Ruby class or module: `mwrap_module` (`Mwrap`'s functions),
//! `source_location` (`Mwrap[]` and `Mwrap::SourceLocation`), `quiet`
//! (`Mwrap.quiet`), `heap_page_body` (`Mwrap::HeapPageBody`), `stacks`
//! (`Mwrap.each_stack`, `Mwrap.app_root`), `iseq_memory`
//! (`Mwrap.iseq_memory`), `leaks` (`Mwrap.leaks`), `memory_breakdown`
//! (`Mwrap.memory_breakdown`, `memory_report`, `trim`, over the
//! `mwrap-memory` crate), `rack_page` (`Mwrap.render_page`, for the Rack
//! app), `pprof` (`Mwrap.pprof`); `args` holds the argument checks and
//! exception lookups they share.

use magnus::{prelude::*, Error, Ruby};

mod args;
mod heap_page_body;
mod iseq_memory;
mod leaks;
mod memory_breakdown;
mod mwrap_module;
mod pprof;
mod preload;
mod quiet;
mod rack_page;
mod source_location;
mod stacks;

#[magnus::init(name = "mwrap_ext")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    // The exception classes live in lib/mwrap/error.rb; load them when the
    // extension is required on its own.
    let module = ruby.define_module("Mwrap")?;
    let defined: bool = module.funcall("const_defined?", ("Error", false))?;
    if !defined {
        ruby.require("mwrap/error")?;
    }
    if let Some(preload) = preload::get() {
        preload.attach_ruby();
    }
    mwrap_module::init(ruby)?;
    quiet::init(ruby)?;
    source_location::init(ruby)?;
    heap_page_body::init(ruby)?;
    iseq_memory::init(ruby)?;
    stacks::init(ruby)?;
    leaks::init(ruby)?;
    memory_breakdown::init(ruby)?;
    rack_page::init(ruby)?;
    pprof::init(ruby)?;
    Ok(())
}
