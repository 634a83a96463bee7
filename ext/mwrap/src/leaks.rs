//! `Mwrap.leaks`, `Mwrap.last_leak_scan` and `Mwrap::SourceLocation#leaked`:
//! the live blocks that no pointer reaches.
//!
//! The preload copies the process with the GVL held (Ruby's heap is whole
//! in the copy), then this thread waits for the copy's answer with the
//! GVL released, so the program's other threads run on while it scans.

use std::sync::Mutex;

use magnus::{function, scan_args::scan_args, Error, RHash, Ruby, Value};
use mwrap_abi::{LeakScan, LeakSummary};

use crate::args::{byte_count, mwrap_exception, no_memory};
use crate::mwrap_module::location_string;
use crate::preload::{self, Leak, LeakScanError, Preload};

/// The summary of the last scan this process finished.
static LAST_SCAN: Mutex<Option<LeakSummary>> = Mutex::new(None);

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    module.define_module_function("leaks", function!(leaks, -1))?;
    module.define_module_function("last_leak_scan", function!(last_leak_scan, 0))?;
    Ok(())
}

/// `Mwrap.leaks(min = 0)`: `{ location => [leaked_bytes, leaked_count] }`
/// for every location whose leaked bytes are above `min`, most first; `{}`
/// without the preload.
fn leaks(ruby: &Ruby, args: &[Value]) -> Result<RHash, Error> {
    let args = scan_args::<(), (Option<Value>,), (), (), (), ()>(args)?;
    let min = byte_count(ruby, "min", args.optional.0)?;
    let out = ruby.hash_new();
    let Some(preload) = preload::get() else {
        return Ok(out);
    };
    for leak in scan(ruby, preload, 0, "Mwrap.leaks")? {
        if leak.bytes > min {
            let pair = ruby.ary_new_capa(2);
            pair.push(leak.bytes)?;
            pair.push(leak.count)?;
            out.aset(location_string(ruby, &leak.name), pair)?;
        }
    }
    Ok(out)
}

/// `[leaked_bytes, leaked_count]` of location `id` (one scan).
pub fn leaked_at(ruby: &Ruby, id: u32) -> Result<(u64, u64), Error> {
    let Some(preload) = preload::get() else {
        return Ok((0, 0));
    };
    let leaks = scan(ruby, preload, id, "Mwrap::SourceLocation#leaked")?;
    Ok(leaks
        .iter()
        .find(|l| l.location == id)
        .map_or((0, 0), |l| (l.bytes, l.count)))
}

/// `Mwrap.last_leak_scan`: what the last scan looked at, or nil.
fn last_leak_scan(ruby: &Ruby) -> Result<Option<RHash>, Error> {
    let Some(s) = *LAST_SCAN.lock().unwrap_or_else(|e| e.into_inner()) else {
        return Ok(None);
    };
    let h = ruby.hash_new();
    h.aset(ruby.to_symbol("blocks"), s.blocks)?;
    h.aset(ruby.to_symbol("bytes"), s.bytes)?;
    h.aset(ruby.to_symbol("leaked_blocks"), s.leaked_blocks)?;
    h.aset(ruby.to_symbol("leaked_bytes"), s.leaked_bytes)?;
    h.aset(ruby.to_symbol("root_bytes"), s.root_bytes)?;
    h.aset(ruby.to_symbol("scratch_bytes"), s.scratch_bytes)?;
    h.aset(ruby.to_symbol("scan_seconds"), s.scan_nanos as f64 / 1e9)?;
    h.aset(ruby.to_symbol("pause_seconds"), s.pause_nanos as f64 / 1e9)?;
    Ok(Some(h))
}

/// One scan: the copy is made here, with the GVL; its answer is awaited
/// without it.
fn scan(ruby: &Ruby, preload: Preload, location: u32, what: &str) -> Result<Vec<Leak>, Error> {
    let _quiet = preload.quiet();
    let started = preload
        .leak_scan_begin()
        .map_err(|e| scan_error(ruby, what, e))?;
    let mut wait = Wait {
        preload,
        scan: started,
        location,
        result: None,
    };
    // SAFETY: `wait_for_answer` touches only `wait` and the preload (no
    // Ruby object, no Ruby call), as code without the GVL must; no unblock
    // function: the copy always answers or dies, and then the pipe closes.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(wait_for_answer),
            (&mut wait as *mut Wait).cast(),
            None,
            core::ptr::null_mut(),
        )
    };
    let (summary, leaks) = wait
        .result
        .unwrap_or(Err(LeakScanError::Died(-1)))
        .map_err(|e| scan_error(ruby, what, e))?;
    *LAST_SCAN.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary);
    Ok(leaks)
}

struct Wait {
    preload: Preload,
    scan: LeakScan,
    location: u32,
    result: Option<Result<(LeakSummary, Vec<Leak>), LeakScanError>>,
}

unsafe extern "C" fn wait_for_answer(data: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    // SAFETY: `scan` passes its own `Wait`, alive for the call.
    let wait = unsafe { &mut *data.cast::<Wait>() };
    wait.result = Some(wait.preload.leak_scan_finish(&wait.scan, wait.location));
    core::ptr::null_mut()
}

fn scan_error(ruby: &Ruby, what: &str, e: LeakScanError) -> Error {
    let class = match mwrap_exception(ruby, "Error") {
        Ok(class) => class,
        Err(e) => return e,
    };
    match e {
        LeakScanError::NoMemory => no_memory(ruby, what),
        LeakScanError::Copy(errno) => Error::new(
            class,
            format!(
                "{what}: cannot copy the process to scan it (fork: {}, errno {errno}); \
                 nothing was scanned or changed",
                std::io::Error::from_raw_os_error(errno)
            ),
        ),
        LeakScanError::Died(status) => Error::new(
            class,
            format!(
                "{what}: the scanning copy of the process {}",
                describe_status(status)
            ),
        ),
    }
}

/// A wait status in words.
fn describe_status(status: i32) -> String {
    if status < 0 {
        "sent no whole answer".to_owned()
    } else if libc::WIFSIGNALED(status) {
        format!("died of signal {}", libc::WTERMSIG(status))
    } else {
        format!(
            "exited with status {} and no whole answer",
            libc::WEXITSTATUS(status)
        )
    }
}
