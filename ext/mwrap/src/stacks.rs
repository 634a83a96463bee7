//! Module functions of `Mwrap` about stacks and where allocations are
//! charged: `Mwrap.each_stack`, `Mwrap.app_root` / `Mwrap.app_root=` and
//! `Mwrap.recording`. `Mwrap::SourceLocation#stacks` (in
//! [`crate::source_location`]) builds its rows with [`stack_row`].

use magnus::{
    function, method, prelude::*, scan_args::scan_args, Error, RArray, RHash, RString, Ruby, Value,
};

use crate::args::{byte_count, describe, no_memory};
use crate::mwrap_module::location_string;
use crate::preload::{self, StackEntry};

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    module.define_module_function("each_stack", method!(each_stack, -1))?;
    module.define_module_function("app_root", function!(app_root, 0))?;
    module.define_module_function("app_root=", function!(set_app_root, 1))?;
    module.define_module_function("recording", function!(recording, 0))?;
    Ok(())
}

/// A frozen Array of the frames, each a frozen, deduplicated String.
fn frames(ruby: &Ruby, names: &[Vec<u8>]) -> Result<RArray, Error> {
    let ary = ruby.ary_new_capa(names.len());
    for name in names {
        ary.push(location_string(ruby, name))?;
    }
    ary.freeze();
    Ok(ary)
}

/// The eight values of a stack row: location, Ruby frames, native frames,
/// total, allocations, frees, live bytes, live count.
pub fn stack_row(ruby: &Ruby, entry: &StackEntry) -> Result<RArray, Error> {
    let s = &entry.snapshot;
    let row = ruby.ary_new_capa(8);
    row.push(location_string(ruby, &entry.name))?;
    row.push(frames(ruby, &entry.ruby)?)?;
    row.push(frames(ruby, &entry.native)?)?;
    row.push(s.total)?;
    row.push(s.allocations)?;
    row.push(s.frees)?;
    row.push(s.live_bytes)?;
    row.push(s.live_count)?;
    Ok(row)
}

/// `Mwrap.each_stack(min = 0) { |location, ruby_frames, native_frames,
/// total, allocations, frees, live_bytes, live_count| }`: every (location,
/// stack) pair whose total is above `min`, largest first; an Enumerator
/// without a block.
fn each_stack(ruby: &Ruby, rb_self: Value, args: &[Value]) -> Result<Value, Error> {
    let parsed = scan_args::<(), (Option<Value>,), (), (), (), ()>(args)?;
    let (min,) = parsed.optional;
    let min = byte_count(ruby, "min", min)?;
    if !ruby.block_given() {
        return Ok(rb_self.enumeratorize("each_stack", args).as_value());
    }
    let Some(preload) = preload::get() else {
        return Ok(ruby.qnil().as_value());
    };
    let stacks = preload
        .stacks(min, None)
        .map_err(|_| no_memory(ruby, "Mwrap.each_stack"))?;
    for entry in &stacks {
        let row = stack_row(ruby, entry)?;
        let _: Value = ruby.yield_splat(row)?;
    }
    Ok(ruby.qnil().as_value())
}

/// `Mwrap.app_root`: the application root (absolute, frozen), or nil.
fn app_root(ruby: &Ruby) -> Option<RString> {
    let dir = preload::get()?.app_root()?;
    let s = ruby.str_from_slice(&dir);
    s.freeze();
    Some(s)
}

/// `Mwrap.app_root = dir`: from now on, allocations are charged to the
/// innermost Ruby frame whose file is under `dir` (nil: to the innermost
/// frame, as without `app_root`). An ArgumentError when `dir` is no
/// directory; a no-op without the preload.
fn set_app_root(ruby: &Ruby, dir: Value) -> Result<Value, Error> {
    let bytes: Vec<u8> = if dir.is_nil() {
        Vec::new()
    } else {
        let s = match RString::from_value(dir) {
            Some(s) => s,
            None => {
                let converted: Value = dir.funcall("to_path", ()).map_err(|_| {
                    Error::new(
                        ruby.exception_type_error(),
                        format!(
                            "app_root must be a String, a Pathname or nil, not {}",
                            describe(dir)
                        ),
                    )
                })?;
                RString::try_convert(converted)?
            }
        };
        // SAFETY: the bytes are copied before any Ruby code can run.
        let bytes = unsafe { s.as_slice() }.to_vec();
        if bytes.is_empty() || bytes.contains(&0) {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!("app_root must be a directory, not {}", s.inspect()),
            ));
        }
        bytes
    };
    let refused = |why: String| {
        Error::new(
            ruby.exception_arg_error(),
            format!("app_root {}: {why}", dir.inspect()),
        )
    };
    match preload::get() {
        Some(preload) => preload.set_app_root(&bytes).map_err(refused)?,
        // Nothing is recorded, but a bad directory is as wrong here as
        // under the preload, and said the same way.
        None if !bytes.is_empty() => check_directory(&bytes).map_err(refused)?,
        None => {}
    }
    Ok(dir)
}

/// Whether `path` is an existing directory; the error as strerror words it.
fn check_directory(path: &[u8]) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let errno_text = |code: i32| {
        // SAFETY: strerror returns a NUL-terminated static string; the GVL
        // is held, so no other Ruby thread calls it meanwhile.
        let text = unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) };
        text.to_string_lossy().into_owned()
    };
    match std::fs::metadata(std::ffi::OsStr::from_bytes(path)) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(errno_text(libc::ENOTDIR)),
        Err(e) => Err(errno_text(e.raw_os_error().unwrap_or(libc::EINVAL))),
    }
}

/// `Mwrap.recording`: `{ bt: N, ruby_bt: N, app_root: dir or nil }`, what
/// every allocation records besides its location.
fn recording(ruby: &Ruby) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    let (bt, ruby_bt) = preload::get().map_or((0, 0), |p| {
        let r = p.recording();
        (r.bt, r.ruby_bt)
    });
    hash.aset(ruby.to_symbol("bt"), bt)?;
    hash.aset(ruby.to_symbol("ruby_bt"), ruby_bt)?;
    hash.aset(ruby.to_symbol("app_root"), app_root(ruby))?;
    Ok(hash)
}
