//! ns per unwound frame: this crate (warm and cold cache) against libgcc's
//! `_Unwind_Backtrace`, libunwind's `unw_backtrace` and framehop, on stacks
//! of C frames built without frame pointers (and through libc's qsort).
//!
//! `cargo bench -p mwrap-unwind` (add `-- --rounds 15` for more rounds).
//! "ours cold" is `invalidate()` then an unwind with the 32 KiB cache (so it
//! includes clearing it); "ours miss" uses a one-set cache, where every
//! frame takes the miss path but nothing big is cleared.
//! Each cell is min / median over the rounds, each round timing enough
//! unwinds of the same stack to take about 20 ms.

#[path = "../tests/support/mod.rs"]
mod support;

use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::time::{Duration, Instant};

use mwrap_unwind::{init, invalidate, registers_here, unwind, RuleCacheOf};
use support::{zeroed_cache, Chain};

const MAX_FRAMES: usize = 128;

// --- libgcc ----------------------------------------------------------------

type UnwindTraceFn = extern "C" fn(context: *mut c_void, arg: *mut c_void) -> c_int;
extern "C" {
    // libgcc_s.so.1: Rust's std already links it on linux-gnu.
    fn _Unwind_Backtrace(trace: UnwindTraceFn, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(context: *mut c_void) -> usize;
}

struct Collected {
    out: [usize; MAX_FRAMES],
    len: usize,
}

extern "C" fn collect_ip(context: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `libgcc_backtrace` passes a live `Collected`.
    let collected = unsafe { &mut *(arg as *mut Collected) };
    if collected.len >= MAX_FRAMES {
        return 4; // _URC_NORMAL_STOP
    }
    // SAFETY: a context handed to the trace callback.
    collected.out[collected.len] = unsafe { _Unwind_GetIP(context) };
    collected.len += 1;
    0 // _URC_NO_REASON
}

#[inline(never)]
fn libgcc_backtrace() -> usize {
    let mut collected = Collected {
        out: [0; MAX_FRAMES],
        len: 0,
    };
    // SAFETY: the callback only writes into `collected`.
    unsafe { _Unwind_Backtrace(collect_ip, &mut collected as *mut Collected as *mut c_void) };
    black_box(&collected.out);
    collected.len
}

// --- libunwind (nongnu, libunwind8) ----------------------------------------

type UnwBacktrace = unsafe extern "C" fn(buffer: *mut *mut c_void, size: c_int) -> c_int;

fn load_libunwind() -> Result<UnwBacktrace, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the library is never
    // closed. RTLD_LOCAL keeps its _Unwind_* from interposing libgcc's.
    unsafe {
        let handle = libc::dlopen(
            c"libunwind.so.8".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if handle.is_null() {
            return Err("libunwind.so.8 not found (package libunwind8)".into());
        }
        let f = libc::dlsym(handle, c"unw_backtrace".as_ptr());
        if f.is_null() {
            return Err("libunwind.so.8 has no unw_backtrace".into());
        }
        Ok(std::mem::transmute::<*mut c_void, UnwBacktrace>(f))
    }
}

// --- framehop ----------------------------------------------------------------

mod hop {
    use std::ffi::{c_int, c_void, CStr};

    use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
    use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};

    pub struct Hop {
        unwinder: UnwinderX86_64<&'static [u8]>,
        cache: CacheX86_64,
    }

    const PT_LOAD: u32 = 1;
    const PT_GNU_EH_FRAME: u32 = 0x6474_e550;

    /// Every loaded object becomes a framehop module, with its CFI sections
    /// read in place (framehop needs all modules before unwinding, found
    /// here with dl_iterate_phdr: fine in a bench, not in a malloc hook).
    pub fn new() -> Hop {
        let mut modules: Vec<Module<&'static [u8]>> = Vec::new();
        extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
            // SAFETY: dl_iterate_phdr hands a valid info; data is our Vec.
            let (info, modules) =
                unsafe { (&*info, &mut *(data as *mut Vec<Module<&'static [u8]>>)) };
            // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
            let phdrs =
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
            let bias = info.dlpi_addr;
            let loads: Vec<_> = phdrs.iter().filter(|p| p.p_type == PT_LOAD).collect();
            let (Some(lo), Some(hi)) = (
                loads.iter().map(|p| p.p_vaddr).min(),
                loads.iter().map(|p| p.p_vaddr + p.p_memsz).max(),
            ) else {
                return 0;
            };
            let Some(hdr) = phdrs.iter().find(|p| p.p_type == PT_GNU_EH_FRAME) else {
                return 0;
            };
            let hdr_avma = bias + hdr.p_vaddr;
            // SAFETY: the PT_GNU_EH_FRAME segment is mapped, p_memsz long.
            let hdr_data: &'static [u8] =
                unsafe { std::slice::from_raw_parts(hdr_avma as *const u8, hdr.p_memsz as usize) };
            // eh_frame_ptr, encoded DW_EH_PE_pcrel | DW_EH_PE_sdata4 (0x1b)
            // by every linker in use.
            if hdr_data.len() < 8 || hdr_data[1] != 0x1b {
                return 0;
            }
            let rel = i32::from_le_bytes(hdr_data[4..8].try_into().unwrap());
            let frame_avma = (hdr_avma + 4).wrapping_add_signed(rel as i64);
            // .eh_frame runs at most to the end of its load segment.
            let Some(seg) = loads.iter().find(|p| {
                bias + p.p_vaddr <= frame_avma && frame_avma < bias + p.p_vaddr + p.p_filesz
            }) else {
                return 0;
            };
            let frame_len = bias + seg.p_vaddr + seg.p_filesz - frame_avma;
            // SAFETY: inside a mapped, file-backed load segment.
            let frame_data: &'static [u8] =
                unsafe { std::slice::from_raw_parts(frame_avma as *const u8, frame_len as usize) };
            let frame_svma = frame_avma - bias;
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                // SAFETY: a NUL-terminated name owned by the loader.
                unsafe { CStr::from_ptr(info.dlpi_name) }
                    .to_string_lossy()
                    .into_owned()
            };
            let section_info = ExplicitModuleSectionInfo {
                base_svma: 0,
                eh_frame_hdr_svma: Some(hdr.p_vaddr..hdr.p_vaddr + hdr.p_memsz),
                eh_frame_hdr: Some(hdr_data),
                eh_frame_svma: Some(frame_svma..frame_svma + frame_len),
                eh_frame: Some(frame_data),
                ..Default::default()
            };
            modules.push(Module::new(name, bias + lo..bias + hi, bias, section_info));
            0
        }
        // SAFETY: the callback only reads the headers it is handed.
        unsafe { libc::dl_iterate_phdr(Some(each), &mut modules as *mut _ as *mut c_void) };
        let mut unwinder = UnwinderX86_64::new();
        for module in modules {
            unwinder.add_module(module);
        }
        Hop {
            unwinder,
            cache: CacheX86_64::new(),
        }
    }

    impl Hop {
        /// Unwinds from the registers given; reads only the 1 MiB above sp.
        pub fn backtrace(&mut self, regs: mwrap_unwind::Registers, out: &mut [usize]) -> usize {
            let (lo, hi) = (regs.sp as u64, regs.sp as u64 + (1 << 20));
            let mut read_stack = |addr: u64| {
                if addr >= lo && addr + 8 <= hi && addr.is_multiple_of(8) {
                    // SAFETY: within the live stack above sp (the bench's
                    // main thread stack is far larger than 1 MiB above here).
                    Ok(unsafe { *(addr as *const u64) })
                } else {
                    Err(())
                }
            };
            let regs64 = UnwindRegsX86_64::new(regs.pc as u64, regs.sp as u64, regs.bp as u64);
            let mut frames =
                self.unwinder
                    .iter_frames(regs.pc as u64, regs64, &mut self.cache, &mut read_stack);
            let mut n = 0;
            while n < out.len() {
                match frames.next() {
                    Ok(Some(frame)) => {
                        out[n] = frame.address() as usize;
                        n += 1;
                    }
                    _ => break,
                }
            }
            n
        }
    }
}

// --- measurement -------------------------------------------------------------

struct Cell {
    frames: usize,
    min: f64,
    median: f64,
}

/// ns per frame of `f` (which returns the frames it unwound), min and median
/// over `rounds` rounds of about 20 ms each.
fn measure(rounds: usize, f: &mut dyn FnMut() -> usize) -> Cell {
    let frames = f();
    let start = Instant::now();
    let mut calibration = 0;
    while start.elapsed() < Duration::from_millis(2) {
        black_box(f());
        calibration += 1;
    }
    let iters = (calibration * 10).max(10);
    let mut per_frame: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / (iters * frames) as f64
        })
        .collect();
    per_frame.sort_by(f64::total_cmp);
    Cell {
        frames,
        min: per_frame[0],
        median: per_frame[per_frame.len() / 2],
    }
}

#[inline(never)]
fn ours<const SETS: usize>(cache: &mut RuleCacheOf<SETS>, out: &mut [usize]) -> usize {
    let regs = registers_here();
    // SAFETY: registers of this live frame.
    let n = unsafe { unwind(regs, cache, out) };
    black_box(n)
}

#[inline(never)]
fn framehop_here(hop: &mut hop::Hop, out: &mut [usize]) -> usize {
    let regs = registers_here();
    black_box(hop.backtrace(regs, out))
}

#[inline(never)]
fn libunwind_here(f: UnwBacktrace, out: &mut [*mut c_void]) -> usize {
    // SAFETY: `out` has room for out.len() pointers.
    let n = unsafe { f(out.as_mut_ptr(), out.len() as c_int) };
    black_box(n.max(0) as usize)
}

fn main() {
    let rounds = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    assert!(init(), "glibc has no _dl_find_object");
    let chain = Chain::get();
    let libunwind = load_libunwind();
    if let Err(why) = &libunwind {
        println!("libunwind skipped: {why}");
    }
    let mut hop = hop::new();
    let mut cache = zeroed_cache();
    // Two entries: every frame of these stacks misses (the miss path alone,
    // without the 32 KiB clear that `invalidate` costs the full cache).
    let mut tiny_cache = Box::new(RuleCacheOf::<1>::new());

    let scenarios: [(&str, i32, bool); 3] = [
        ("C x16", 16, false),
        ("C x32", 32, false),
        ("qsort + C x16", 16, true),
    ];
    println!(
        "ns per frame, min / median of {rounds} rounds; frames = whole stack from the leaf to _start"
    );
    println!(
        "{:<15} {:>6} {:>15} {:>15} {:>15} {:>15} {:>15} {:>15}",
        "stack", "frames", "ours warm", "ours cold", "ours miss", "libgcc", "libunwind", "framehop"
    );
    for (name, depth, through_qsort) in scenarios {
        let mut row: Vec<Option<Cell>> = Vec::new();
        let mut leaf = || {
            let mut out = [0usize; MAX_FRAMES];
            row.push(Some(measure(rounds, &mut || ours(&mut cache, &mut out))));
            row.push(Some(measure(rounds, &mut || {
                invalidate();
                ours(&mut cache, &mut out)
            })));
            row.push(Some(measure(rounds, &mut || {
                ours(&mut *tiny_cache, &mut out)
            })));
            row.push(Some(measure(rounds, &mut libgcc_backtrace)));
            row.push(libunwind.as_ref().ok().map(|&f| {
                let mut out = [std::ptr::null_mut::<c_void>(); MAX_FRAMES];
                measure(rounds, &mut || libunwind_here(f, &mut out))
            }));
            row.push(Some(measure(rounds, &mut || {
                framehop_here(&mut hop, &mut out)
            })));
        };
        if through_qsort {
            chain.run_in_qsort(depth, &mut leaf);
        } else {
            chain.run(depth, &mut leaf);
        }
        let frames = row[0].as_ref().map_or(0, |c| c.frames);
        let cells: Vec<String> = row
            .iter()
            .map(|c| match c {
                Some(c) if c.frames.abs_diff(frames) <= 2 => {
                    format!("{:.1} / {:.1}", c.min, c.median)
                }
                Some(c) => format!("{:.1} / {:.1} ({}f)", c.min, c.median, c.frames),
                None => "-".into(),
            })
            .collect();
        println!(
            "{:<15} {:>6} {:>15} {:>15} {:>15} {:>15} {:>15} {:>15}",
            name, frames, cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
        );
    }
}
