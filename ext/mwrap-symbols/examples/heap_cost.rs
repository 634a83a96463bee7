//! How much heap naming one frame of an object costs the symbolizer:
//! `cargo run --release -p mwrap-symbols --example heap_cost -- LIB SYMBOL…`
//! dlopens each LIB, names SYMBOL+1 in it and prints the heap the
//! symbolizer holds afterwards (counted by this program's allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.len().is_multiple_of(2) || args.is_empty() {
        eprintln!("usage: heap_cost LIB SYMBOL [LIB SYMBOL…]");
        std::process::exit(2);
    }
    for pair in args.chunks(2) {
        let (lib, symbol) = (&pair[0], &pair[1]);
        let c_lib = CString::new(lib.as_str()).unwrap();
        let c_symbol = CString::new(symbol.as_str()).unwrap();
        // SAFETY: dlopen and dlsym with NUL-terminated names; the handle
        // stays open for the rest of the program.
        let address = unsafe {
            let handle = libc::dlopen(c_lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                eprintln!("{lib}: cannot dlopen");
                continue;
            }
            libc::dlsym(handle, c_symbol.as_ptr()) as usize
        };
        if address == 0 {
            eprintln!("{lib}: no {symbol}");
            continue;
        }
        let before = LIVE.load(Ordering::Relaxed);
        let mut symbolizer = mwrap_symbols::Symbolizer::new();
        let start = std::time::Instant::now();
        let mut frame = Vec::new();
        symbolizer.describe(address + 1, &mut frame);
        let elapsed = start.elapsed();
        let held = LIVE.load(Ordering::Relaxed) - before - frame.capacity();
        println!(
            "{}\n  heap held: {} bytes (tables and DWARF sections: {}), first frame in {:?}",
            String::from_utf8_lossy(&frame),
            held,
            symbolizer.table_bytes(),
            elapsed
        );
    }
}
