//! A measuring preload: `LD_PRELOAD` it into any program and every
//! `malloc`/`calloc`/`realloc` is unwound (up to `CACHE_SIZES_DEPTH`
//! frames, default 16) with rule caches of several sizes at once; at exit it
//! prints each size's hit rate and how the unwinds ended. This is how the
//! default cache size was chosen (see the crate's README).
//!
//! ```sh
//! cargo build --release -p mwrap-unwind --example cache_sizes
//! LD_PRELOAD=target/release/examples/libcache_sizes.so ruby -e '...'
//! ```
//!
//! Not part of the library: it calls glibc's `__libc_malloc` family for the
//! real allocations and keeps its per-thread state in mmap'd memory.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mwrap_unwind::{registers_here, unwind_detailed, RuleCacheOf, Stop};

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
}

/// Caches of 64..4096 sets (2 ways of 16 bytes): 2 KiB .. 128 KiB.
struct Caches {
    s64: RuleCacheOf<64>,
    s128: RuleCacheOf<128>,
    s256: RuleCacheOf<256>,
    s512: RuleCacheOf<512>,
    s1024: RuleCacheOf<1024>,
    s2048: RuleCacheOf<2048>,
    s4096: RuleCacheOf<4096>,
}
const SIZES: [usize; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

static HITS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
static MISSES: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
static STOPS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static FRAMES: AtomicU64 = AtomicU64::new(0);
static UNWINDS: AtomicU64 = AtomicU64::new(0);
static DEPTH: AtomicUsize = AtomicUsize::new(16);

thread_local! {
    static CACHES: Cell<*mut Caches> = const { Cell::new(std::ptr::null_mut()) };
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn caches() -> Option<&'static mut Caches> {
    let p = CACHES.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: this thread's own mapping, never freed.
        return Some(unsafe { &mut *p });
    }
    // SAFETY: an anonymous mapping; zeroed memory is a valid set of caches.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<Caches>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    CACHES.with(|c| c.set(p.cast()));
    // SAFETY: as above.
    Some(unsafe { &mut *p.cast::<Caches>() })
}

fn one<const SETS: usize>(
    i: usize,
    regs: mwrap_unwind::Registers,
    cache: &mut RuleCacheOf<SETS>,
    out: &mut [usize],
) -> mwrap_unwind::Unwound {
    let (h, m) = (cache.hits(), cache.misses());
    // SAFETY: registers of the live hook frame.
    let got = unsafe { unwind_detailed(regs, cache, out) };
    HITS[i].fetch_add(cache.hits() - h, Ordering::Relaxed);
    MISSES[i].fetch_add(cache.misses() - m, Ordering::Relaxed);
    got
}

#[inline(never)]
fn record() {
    if BUSY.with(|b| b.replace(true)) {
        return;
    }
    if let Some(c) = caches() {
        let regs = registers_here();
        let mut out = [0usize; 65];
        let depth = DEPTH.load(Ordering::Relaxed).min(64) + 1; // + our own frame
        let out = &mut out[..depth];
        let got = one(3, regs, &mut c.s512, out);
        one(0, regs, &mut c.s64, out);
        one(1, regs, &mut c.s128, out);
        one(2, regs, &mut c.s256, out);
        one(4, regs, &mut c.s1024, out);
        one(5, regs, &mut c.s2048, out);
        one(6, regs, &mut c.s4096, out);
        STOPS[got.stop as usize].fetch_add(1, Ordering::Relaxed);
        FRAMES.fetch_add(got.frames as u64, Ordering::Relaxed);
        UNWINDS.fetch_add(1, Ordering::Relaxed);
    }
    BUSY.with(|b| b.set(false));
}

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    record();
    // SAFETY: glibc's malloc.
    unsafe { __libc_malloc(size) }
}

#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    record();
    // SAFETY: glibc's calloc.
    unsafe { __libc_calloc(n, size) }
}

/// # Safety
/// As C's `realloc`: `p` is null or a live block from this malloc family.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    record();
    // SAFETY: glibc's realloc of a block from glibc (the caller's contract).
    unsafe { __libc_realloc(p, size) }
}

extern "C" fn start() {
    BUSY.with(|b| b.set(true));
    mwrap_unwind::init();
    if let Some(d) = std::env::var_os("CACHE_SIZES_DEPTH").and_then(|d| d.to_str()?.parse().ok()) {
        DEPTH.store(d, Ordering::Relaxed);
    }
    BUSY.with(|b| b.set(false));
}

extern "C" fn report() {
    BUSY.with(|b| b.set(true));
    let unwinds = UNWINDS.load(Ordering::Relaxed);
    let mut text = format!(
        "cache_sizes: pid {} depth {}: {} unwinds, {:.1} frames each\n",
        std::process::id(),
        DEPTH.load(Ordering::Relaxed),
        unwinds,
        FRAMES.load(Ordering::Relaxed) as f64 / unwinds.max(1) as f64
    );
    for (i, sets) in SIZES.iter().enumerate() {
        let (h, m) = (
            HITS[i].load(Ordering::Relaxed),
            MISSES[i].load(Ordering::Relaxed),
        );
        text += &format!(
            "  {:>4} sets ({:>3} KiB): {:>6.2}% hits, {} misses\n",
            sets,
            sets * 32 / 1024,
            100.0 * h as f64 / (h + m).max(1) as f64,
            m
        );
    }
    let names = [
        "full",
        "outermost",
        "signal",
        "no object",
        "no unwind info",
        "bad frame",
        "unsupported",
    ];
    let stops = [
        Stop::Full,
        Stop::Outermost,
        Stop::SignalFrame,
        Stop::NoObject,
        Stop::NoUnwindInfo,
        Stop::BadFrame,
        Stop::Unsupported,
    ];
    text += "  stops:";
    for (name, stop) in names.iter().zip(stops) {
        text += &format!(" {name} {}", STOPS[stop as usize].load(Ordering::Relaxed));
    }
    text += "\n";
    // SAFETY: a write of our own buffer to stderr.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

#[used]
#[link_section = ".init_array"]
static START: extern "C" fn() = start;

#[used]
#[link_section = ".fini_array"]
static REPORT: extern "C" fn() = report;
