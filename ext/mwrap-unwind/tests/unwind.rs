//! The unwinder on real stacks: Rust and C (without frame pointers), through
//! libc, from a signal handler, through JIT code, on small thread stacks.

mod support;

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use mwrap_unwind::{
    init, invalidate, registers_here, unwind, unwind_detailed, RuleCache, Stop, Unwound,
};
use support::{file, in_rust_fn, symbol, zeroed_cache, Chain};

fn setup() {
    assert!(init(), "glibc has _dl_find_object");
}

/// Unwinds from the caller of this function (out[0] is in the caller).
#[inline(always)]
fn unwind_here(cache: &mut RuleCache, out: &mut [usize]) -> Unwound {
    let regs = registers_here();
    // SAFETY: registers of this live frame.
    unsafe { unwind_detailed(regs, cache, out) }
}

#[inline(never)]
fn rust_c(cache: &mut RuleCache, out: &mut [usize]) -> usize {
    let got = unwind_here(cache, out);
    black_box(got.frames)
}

#[inline(never)]
fn rust_b(cache: &mut RuleCache, out: &mut [usize]) -> usize {
    black_box(rust_c(cache, out))
}

#[inline(never)]
fn rust_a(cache: &mut RuleCache, out: &mut [usize]) -> usize {
    black_box(rust_b(cache, out))
}

#[test]
fn rust_chain_in_order() {
    setup();
    let mut cache = zeroed_cache();
    let mut out = [0usize; 64];
    let n = rust_a(&mut cache, &mut out);
    assert!(n >= 5, "{n} frames");
    let expected = [
        ("rust_c", rust_c as *const () as usize),
        ("rust_b", rust_b as *const () as usize),
        ("rust_a", rust_a as *const () as usize),
        (
            "rust_chain_in_order",
            rust_chain_in_order as *const () as usize,
        ),
    ];
    for (i, (name, start)) in expected.iter().enumerate() {
        assert!(
            in_rust_fn(out[i], *start, 1024),
            "frame {i} = {:#x} is not in {name} at {start:#x}",
            out[i]
        );
    }
}

#[test]
fn c_chain_without_frame_pointers() {
    setup();
    let chain = Chain::get();
    let mut cache = zeroed_cache();
    let mut out = [0usize; 64];
    let mut got = None;
    let depth = 12;
    chain.run(depth, &mut || got = Some(unwind_here(&mut cache, &mut out)));
    let got = got.unwrap();
    let names: Vec<_> = out[..got.frames].iter().map(|&pc| symbol(pc)).collect();
    let first = names
        .iter()
        .position(|n| n.as_deref() == Some("mw_f11"))
        .unwrap_or_else(|| panic!("no mw_f11 in {names:?}"));
    for k in 0..depth as usize {
        let want = format!("mw_f{}", depth as usize - 1 - k);
        assert_eq!(
            names[first + k].as_deref(),
            Some(want.as_str()),
            "{names:?}"
        );
    }
    assert_eq!(names[first + depth as usize].as_deref(), Some("mw_chain"));
    // ...and back into this test: the frame above mw_chain is Rust again.
    let above = out[first + depth as usize + 1];
    assert_ne!(file(above), file(out[first]), "{names:?}");
    assert!(got.frames > first + depth as usize + 2);
}

#[test]
fn through_libc_qsort() {
    setup();
    let chain = Chain::get();
    let mut cache = zeroed_cache();
    let mut out = [0usize; 64];
    let mut got = None;
    chain.run_in_qsort(2, &mut || got = Some(unwind_here(&mut cache, &mut out)));
    let frames = &out[..got.unwrap().frames];
    let names: Vec<_> = frames.iter().map(|&pc| (symbol(pc), file(pc))).collect();
    let compare = names
        .iter()
        .position(|(s, _)| s.as_deref() == Some("mw_compare"))
        .unwrap_or_else(|| panic!("{names:?}"));
    let caller = names
        .iter()
        .position(|(s, _)| s.as_deref() == Some("mw_qsort_chain"))
        .unwrap_or_else(|| panic!("{names:?}"));
    let libc_frames = &names[compare + 1..caller];
    assert!(!libc_frames.is_empty(), "{names:?}");
    for (s, f) in libc_frames {
        assert!(
            f.as_deref().unwrap_or("").contains("libc.so"),
            "{s:?} in {f:?}: {names:?}"
        );
    }
    // qsort_r is among them (qsort jumps to it; the others are its static
    // helpers, which dladdr cannot name).
    assert!(
        libc_frames
            .iter()
            .any(|(s, _)| s.as_deref() == Some("qsort_r")),
        "{names:?}"
    );
    // And the unwind went on past the C caller, back into Rust.
    assert!(frames.len() > caller + 2, "{names:?}");
}

#[test]
fn second_unwind_hits_the_cache_and_invalidate_empties_it() {
    setup();
    let chain = Chain::get();
    let mut cache = zeroed_cache();
    let mut out = [0usize; 64];
    let mut runs = Vec::new();
    for i in 0..3 {
        if i == 2 {
            invalidate();
        }
        let (h0, m0) = (cache.hits(), cache.misses());
        let mut frames = 0;
        chain.run(8, &mut || frames = unwind_here(&mut cache, &mut out).frames);
        runs.push((frames, cache.hits() - h0, cache.misses() - m0, out));
    }
    let (frames, hits, misses, first) = runs[0];
    assert!(misses > 8 && hits + misses <= frames as u64, "{runs:?}");
    let (frames2, hits, misses, second) = runs[1];
    assert_eq!(frames2, frames);
    assert_eq!(second[..frames], first[..frames]);
    assert_eq!(misses, 0, "warm unwind missed");
    assert!(hits > 8);
    let (_, _, misses, third) = runs[2];
    assert!(misses > 8, "after invalidate(): {misses} misses");
    // The same C frames again (the Rust ones differ: another call site of
    // the loop, once unrolled).
    let in_chain = |pcs: &[usize]| -> Vec<usize> {
        pcs.iter()
            .copied()
            .filter(|&pc| symbol(pc).is_some_and(|s| s.starts_with("mw_")))
            .collect()
    };
    assert_eq!(in_chain(&third[..frames]), in_chain(&first[..frames]));
    assert_eq!(in_chain(&first[..frames]).len(), 9);
}

// --- signal frames ---------------------------------------------------------

static SIGNAL_CACHE: AtomicPtr<RuleCache> = AtomicPtr::new(std::ptr::null_mut());
static SIGNAL_OUT: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];
static SIGNAL_FRAMES: AtomicUsize = AtomicUsize::new(0);
static SIGNAL_STOP: AtomicUsize = AtomicUsize::new(0);
static SIGNAL_ERRNO_KEPT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    let regs = registers_here();
    // SAFETY: the test stores a live cache before raising, and takes it back
    // after; nothing else uses it meanwhile.
    let cache = unsafe { &mut *SIGNAL_CACHE.load(Ordering::Acquire) };
    let mut out = [0usize; 16];
    // SAFETY: errno is thread-local; set it to see the unwind leaves it.
    unsafe { *libc::__errno_location() = 4242 };
    // SAFETY: registers of this live frame.
    let got = unsafe { unwind_detailed(regs, cache, &mut out) };
    // SAFETY: as above.
    let kept = unsafe { *libc::__errno_location() } == 4242;
    SIGNAL_ERRNO_KEPT.store(kept as usize, Ordering::Relaxed);
    for (slot, pc) in SIGNAL_OUT.iter().zip(out) {
        slot.store(pc, Ordering::Relaxed);
    }
    SIGNAL_FRAMES.store(got.frames, Ordering::Relaxed);
    SIGNAL_STOP.store(got.stop as usize + 1, Ordering::Release);
}

/// Raises SIGUSR1 with `on_signal` installed (on `alt_stack` if given) and
/// returns the handler's frames, its stop reason and the trampoline address
/// glibc gave the kernel.
fn unwind_in_signal_handler(alt_stack: Option<&mut [u8]>) -> (Vec<usize>, usize, usize) {
    let cache = Box::into_raw(zeroed_cache());
    SIGNAL_CACHE.store(cache, Ordering::Release);
    SIGNAL_STOP.store(0, Ordering::Relaxed);
    // SAFETY: plain libc calls on structs we own; SIGUSR1 is delivered to
    // this thread (raise), and the handler only touches atomics and the cache.
    let restorer = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = 0;
        if let Some(stack) = alt_stack {
            let ss = libc::stack_t {
                ss_sp: stack.as_mut_ptr().cast(),
                ss_flags: 0,
                ss_size: stack.len(),
            };
            assert_eq!(libc::sigaltstack(&ss, std::ptr::null_mut()), 0);
            action.sa_flags |= libc::SA_ONSTACK;
        }
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
        let mut installed: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut installed),
            0
        );
        assert_eq!(libc::raise(libc::SIGUSR1), 0);
        let off = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        libc::sigaltstack(&off, std::ptr::null_mut());
        libc::signal(libc::SIGUSR1, libc::SIG_DFL);
        installed.sa_restorer.map_or(0, |f| f as usize)
    };
    SIGNAL_CACHE.store(std::ptr::null_mut(), Ordering::Release);
    // SAFETY: from Box::into_raw above; the handler is done with it.
    drop(unsafe { Box::from_raw(cache) });
    let frames = SIGNAL_FRAMES.load(Ordering::Relaxed);
    let out = SIGNAL_OUT[..frames]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    (out, SIGNAL_STOP.load(Ordering::Acquire), restorer)
}

/// The signal tests share the handler's statics.
static SIGNAL_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn stops_at_the_signal_frame() {
    setup();
    let _one_at_a_time = SIGNAL_TESTS.lock().unwrap();
    let (frames, stop, restorer) = unwind_in_signal_handler(None);
    assert_ne!(restorer, 0, "glibc installs __restore_rt as sa_restorer");
    assert!(
        in_rust_fn(frames[0], on_signal as *const () as usize, 2048),
        "{frames:x?}"
    );
    // The handler's return address is the trampoline, and the unwind stops
    // there: nothing of the interrupted code (which is not on the
    // handler's frame chain) is reported.
    assert_eq!(frames, [frames[0], restorer], "{frames:x?}");
    assert_eq!(stop, Stop::SignalFrame as usize + 1);
    assert_eq!(
        SIGNAL_ERRNO_KEPT.load(Ordering::Relaxed),
        1,
        "errno changed"
    );
}

#[test]
fn stops_at_the_signal_frame_on_an_alternate_stack() {
    setup();
    let _one_at_a_time = SIGNAL_TESTS.lock().unwrap();
    // A stack the unwinder knows nothing of: its pages are proven readable
    // with process_vm_readv rather than assumed.
    let mut alt = vec![0u8; 64 << 10];
    let (frames, stop, restorer) = unwind_in_signal_handler(Some(&mut alt));
    let alt_range = alt.as_ptr() as usize..alt.as_ptr() as usize + alt.len();
    assert!(
        in_rust_fn(frames[0], on_signal as *const () as usize, 2048),
        "{frames:x?}"
    );
    assert_eq!(
        frames,
        [frames[0], restorer],
        "{frames:x?} on {alt_range:x?}"
    );
    assert_eq!(stop, Stop::SignalFrame as usize + 1);
    assert_eq!(
        SIGNAL_ERRNO_KEPT.load(Ordering::Relaxed),
        1,
        "errno changed"
    );
}

// --- JIT code --------------------------------------------------------------

static JIT_CACHE: AtomicPtr<RuleCache> = AtomicPtr::new(std::ptr::null_mut());
static JIT_RESULT: std::sync::Mutex<Option<(Vec<usize>, Stop, bool)>> = std::sync::Mutex::new(None);

extern "C" fn called_from_jit() {
    let regs = registers_here();
    // SAFETY: set by the test for the duration of the JIT call.
    let cache = unsafe { &mut *JIT_CACHE.load(Ordering::Acquire) };
    let mut out = [0usize; 32];
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = 1234 };
    // SAFETY: registers of this live frame.
    let got = unsafe { unwind_detailed(regs, cache, &mut out) };
    // SAFETY: as above.
    let kept = unsafe { *libc::__errno_location() } == 1234;
    *JIT_RESULT.lock().unwrap() = Some((out[..got.frames].to_vec(), got.stop, kept));
}

#[test]
fn stops_at_jit_code() {
    setup();
    // push rbp; mov rbp, rsp; call rdi; pop rbp; ret
    const CODE: [u8; 8] = [0x55, 0x48, 0x89, 0xe5, 0xff, 0xd7, 0x5d, 0xc3];
    const CALL_END: usize = 6;
    // SAFETY: a fresh private mapping, written then made executable.
    let page = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast::<u8>(), CODE.len());
        assert_eq!(
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
        p as usize
    };
    let cache = Box::into_raw(zeroed_cache());
    JIT_CACHE.store(cache, Ordering::Release);
    // SAFETY: the code above is `void jit(void (*f)(void))`, calling f.
    unsafe {
        let jit: extern "C" fn(extern "C" fn()) = std::mem::transmute(page);
        jit(called_from_jit);
    }
    // SAFETY: from Box::into_raw; the callback is done.
    drop(unsafe { Box::from_raw(cache) });
    let (frames, stop, errno_kept) = JIT_RESULT.lock().unwrap().take().unwrap();
    assert!(
        in_rust_fn(frames[0], called_from_jit as *const () as usize, 2048),
        "{frames:x?}"
    );
    assert_eq!(frames, [frames[0], page + CALL_END], "{frames:x?}");
    assert_eq!(stop, Stop::NoObject);
    assert!(errno_kept, "errno changed");
    // A second unwind through the same JIT frame stops the same way (the
    // JIT pc is never cached).
    let cache = Box::into_raw(zeroed_cache());
    JIT_CACHE.store(cache, Ordering::Release);
    // SAFETY: as above.
    unsafe {
        let jit: extern "C" fn(extern "C" fn()) = std::mem::transmute(page);
        jit(called_from_jit);
        drop(Box::from_raw(cache));
        libc::munmap(page as *mut c_void, 4096);
    }
    let (again, stop, _) = JIT_RESULT.lock().unwrap().take().unwrap();
    assert_eq!(again[1], page + CALL_END);
    assert_eq!(stop, Stop::NoObject);
}

// --- threads and small stacks ----------------------------------------------

/// Bytes of stack a (cold) unwind through `depth` C frames uses, measured
/// by painting the stack below this frame and finding the deepest byte the
/// unwind changed.
#[inline(never)]
fn stack_used_by_cold_unwind(depth: i32, paint_len: usize) -> (usize, Unwound) {
    const PATTERN: u8 = 0xa5;
    let chain = Chain::get();
    let mut cache = zeroed_cache();
    let mut out = [0usize; 64];
    let mut used = 0;
    let mut got = None;
    chain.run(depth, &mut || {
        // From the leaf's frame down; the leaf's own callees (paint, scan)
        // have small frames, well inside the first `GAP` bytes.
        const GAP: usize = 512;
        let here = registers_here().sp;
        let low = here - paint_len;
        paint(low, paint_len - GAP, PATTERN);
        got = Some(unwind_here(&mut cache, &mut out));
        let deepest = (low..here - GAP)
            .find(|&a| {
                // SAFETY: reads of this thread's own stack, between the
                // painted low end and this frame (mapped: just painted).
                unsafe { std::ptr::read_volatile(a as *const u8) != PATTERN }
            })
            .unwrap_or(here - GAP);
        used = here - deepest;
    });
    (used, got.unwrap())
}

#[inline(never)]
fn paint(from: usize, len: usize, pattern: u8) {
    for a in from..from + len {
        // SAFETY: below the caller's frame, on this thread's stack (the
        // caller checked it fits): free stack, used by no live frame.
        unsafe { std::ptr::write_volatile(a as *mut u8, pattern) };
    }
}

fn on_thread<T: Send + 'static>(stack_size: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(stack_size)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn small_stacks_and_miss_path_stack_use() {
    setup();
    Chain::get();
    for (stack_size, paint) in [(32 << 10, 16 << 10), (libc::PTHREAD_STACK_MIN, 8 << 10)] {
        let (used, got) = on_thread(stack_size, move || stack_used_by_cold_unwind(16, paint));
        eprintln!(
            "stack {stack_size}: cold unwind used {used} bytes of stack ({} frames, {:?})",
            got.frames, got.stop
        );
        assert_eq!(got.stop, Stop::Outermost, "{got:?}");
        assert!(got.frames > 18);
        // Unoptimized builds (gimli especially) use several times more.
        let limit = if cfg!(debug_assertions) {
            12 << 10
        } else {
            3 << 10
        };
        assert!(used < limit, "the miss path used {used} bytes of stack");
    }
}

#[test]
fn thread_stack_ends_at_the_thread_start() {
    setup();
    let (frames, stop) = on_thread(64 << 10, || {
        let mut cache = zeroed_cache();
        let mut out = [0usize; 256];
        let got = unwind_here(&mut cache, &mut out);
        (out[..got.frames].to_vec(), got.stop)
    });
    assert_eq!(stop, Stop::Outermost, "{frames:x?}");
    assert!(frames.len() < 64, "{frames:x?}");
    let last = *frames.last().unwrap();
    assert!(
        file(last).unwrap_or_default().contains("libc.so"),
        "{:?}",
        file(last)
    );
}

#[test]
fn empty_and_short_outputs() {
    setup();
    let mut cache = zeroed_cache();
    let regs = registers_here();
    // SAFETY: registers of this live frame.
    assert_eq!(unsafe { unwind(regs, &mut cache, &mut []) }, 0);
    let mut one = [0usize; 1];
    // SAFETY: as above.
    let got = unsafe { unwind_detailed(regs, &mut cache, &mut one) };
    assert_eq!((got.frames, got.stop, one[0]), (1, Stop::Full, regs.pc));
    let mut three = [0usize; 3];
    // SAFETY: as above.
    let got = unsafe { unwind_detailed(registers_here(), &mut cache, &mut three) };
    assert_eq!((got.frames, got.stop), (3, Stop::Full));
}
