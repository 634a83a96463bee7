//! `Mwrap.memory_breakdown`, `Mwrap.memory_report` and `Mwrap.trim`:
//! where the resident memory of this process is, part by part (measured
//! by `mwrap_memory::breakdown`). This file gathers what only Ruby and the
//! preload know: tracked bytes, Ruby's heap pages, the threads' stacks,
//! instruction sequences.

use magnus::{function, prelude::*, Error, Integer, RHash, RModule, Ruby, Value};
use mwrap_abi::SiteFilter;
use mwrap_memory::breakdown::{self, Breakdown, Inputs};

use crate::preload::{self, Preload};

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    module.define_module_function("memory_breakdown", function!(memory_breakdown, 0))?;
    module.define_module_function("memory_report", function!(memory_report, 0))?;
    module.define_module_function("trim", function!(breakdown::trim, 0))?;
    Ok(())
}

/// Bytes live through the malloc family as mwrap tracks them: the sum of
/// every location's live bytes (requested sizes).
fn tracked_live_bytes(ruby: &Ruby, preload: Preload) -> Result<u64, Error> {
    let filter = SiteFilter {
        use_min_live: 1,
        ..Default::default()
    };
    let sites = preload
        .sites(filter)
        .map_err(|_| crate::args::no_memory(ruby, "Mwrap.memory_breakdown"))?;
    Ok(sites.iter().map(|s| s.snapshot.live_bytes).sum())
}

/// Without the preload: `GC.stat(:heap_allocated_pages)` pages of
/// `GC::INTERNAL_CONSTANTS[:HEAP_PAGE_SIZE]` bytes. Ruby writes every slot
/// of a page when it adds the page, so its pages are resident.
fn estimated_heap_pages(ruby: &Ruby) -> Result<Option<u64>, Error> {
    let gc: RModule = ruby.class_object().const_get("GC")?;
    let pages: Value = gc.funcall("stat", (ruby.to_symbol("heap_allocated_pages"),))?;
    let constants: Value = gc.const_get("INTERNAL_CONSTANTS")?;
    let Some(constants) = RHash::from_value(constants) else {
        return Ok(None);
    };
    let size: Option<Value> = constants.get(ruby.to_symbol("HEAP_PAGE_SIZE"));
    let as_u64 = |v: Value| Integer::from_value(v).and_then(|i| i.to_u64().ok());
    Ok(match (as_u64(pages), size.and_then(as_u64)) {
        (Some(pages), Some(size)) => Some(pages * size),
        _ => None,
    })
}

/// `Mwrap.iseq_memory`'s bytes in all (one walk of Ruby's heap); None
/// on a Ruby whose iseq layout the walk refuses.
fn iseq_bytes(ruby: &Ruby) -> Result<Option<u64>, Error> {
    Ok(crate::iseq_memory::total_bytes(ruby).ok())
}

fn measure(ruby: &Ruby) -> Result<Breakdown, Error> {
    let preload = preload::get();
    // Ruby code first: nothing below runs any.
    let iseq = iseq_bytes(ruby)?;
    let estimated_ruby_heap = match preload {
        Some(_) => None,
        None => estimated_heap_pages(ruby)?,
    };
    // What the measuring itself allocates is not the program's.
    let _quiet = preload.map(Preload::quiet);
    let malloc_in_use = preload.map(|p| tracked_live_bytes(ruby, p)).transpose()?;
    let (ruby_pages, ruby_page_size) = match preload {
        Some(p) => {
            let pages = p
                .heap_pages()
                .map_err(|_| crate::args::no_memory(ruby, "Mwrap.memory_breakdown"))?;
            let addresses: Vec<u64> = pages.iter().map(|p| p.address).collect();
            (addresses, p.heap_page_size() as usize)
        }
        None => (Vec::new(), 0),
    };
    let stacks = preload.map(Preload::thread_stacks).unwrap_or_default();
    Ok(breakdown::measure(&Inputs {
        tracked: preload.is_some(),
        malloc_in_use,
        ruby_pages: &ruby_pages,
        ruby_page_size,
        estimated_ruby_heap,
        stacks: &stacks,
        iseq,
    }))
}

/// `Mwrap.memory_breakdown`: `{ rss:, anon_rss:, file_rss:, malloc_in_use:,
/// malloc_overhead:, malloc_free_held:, malloc_not_resident:, ruby_heap:,
/// iseq:, thread_stacks:, mmap_other:, unexplained: }`, Integers of
/// bytes, nil where unknown.
fn memory_breakdown(ruby: &Ruby) -> Result<RHash, Error> {
    let b = measure(ruby)?;
    let hash = ruby.hash_new();
    for (name, value) in breakdown::rows(&b) {
        let value = match value {
            Some(v) => ruby.integer_from_i64(v as i64).as_value(),
            None => ruby.qnil().as_value(),
        };
        hash.aset(ruby.to_symbol(name), value)?;
    }
    Ok(hash)
}

/// `Mwrap.memory_report`: the breakdown as a table (bytes, human units,
/// percent of RSS), with a line of advice when malloc holds much free
/// memory.
fn memory_report(ruby: &Ruby) -> Result<String, Error> {
    Ok(breakdown::report(&measure(ruby)?))
}
