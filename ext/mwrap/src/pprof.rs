//! `Mwrap.pprof`: the heap as a gzip'd pprof profile, the bytes the
//! endpoint serves as `/heap.pb.gz`, rendered by the preload.

use magnus::{function, Error, RString, Ruby};

use crate::args::no_memory;
use crate::preload;

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    module.define_module_function("pprof", function!(pprof, 0))?;
    Ok(())
}

/// `Mwrap.pprof`: a binary (ASCII-8BIT) String holding a gzip'd
/// profile.proto of every (location, stack) with an allocation, for `go
/// tool pprof`; nil without the preload (there is nothing to profile, and
/// an empty String would not be a profile).
fn pprof(ruby: &Ruby) -> Result<Option<RString>, Error> {
    let Some(preload) = preload::get() else {
        return Ok(None);
    };
    let bytes = preload
        .pprof()
        .map_err(|_| no_memory(ruby, "Mwrap.pprof"))?;
    // str_from_slice is ASCII-8BIT already.
    Ok(Some(ruby.str_from_slice(&bytes)))
}
