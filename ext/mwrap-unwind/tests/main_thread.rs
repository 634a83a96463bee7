//! The main thread unwinds up to `_start` and stops there (the outermost
//! frame: its return address rule is "undefined"), without error and with
//! room to spare. Its own process (harness = false): the libtest harness runs
//! tests on spawned threads.

use mwrap_unwind::{init, registers_here, unwind_detailed, RuleCache, Stop};

#[inline(never)]
fn unwind_from_here(cache: &mut RuleCache, out: &mut [usize]) -> mwrap_unwind::Unwound {
    let regs = registers_here();
    // SAFETY: registers of this live frame.
    let got = unsafe { unwind_detailed(regs, cache, out) };
    std::hint::black_box(got)
}

fn main() {
    assert!(init());
    let mut cache = Box::new(RuleCache::new());
    let mut out = [0usize; 256];
    let got = unwind_from_here(&mut cache, &mut out);
    let frames = &out[..got.frames];
    assert_eq!(got.stop, Stop::Outermost, "{frames:x?}");
    assert!(got.frames < out.len());
    // SAFETY: getauxval has no preconditions.
    let entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as usize;
    let last = *frames.last().unwrap();
    assert!(
        last > entry && last < entry + 64,
        "last frame {last:#x} is not in _start at {entry:#x}: {frames:x?}"
    );
    // And it is stable: a second (warm) unwind gives the same frames.
    let mut again = [0usize; 256];
    let got2 = unwind_from_here(&mut cache, &mut again);
    assert_eq!(got2.stop, Stop::Outermost);
    assert_eq!(got2.frames, got.frames);
    println!(
        "main thread: {} frames up to _start at {entry:#x}",
        got.frames
    );
    println!("test result: ok. 1 passed; 0 failed");
}
