//! Shared by the tests and the bench: the C chain library (built here with
//! the system's `cc`, loaded with dlopen so dladdr can name its functions),
//! and helpers to name addresses.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

use mwrap_unwind::RuleCache;

pub type Leaf = extern "C" fn(*mut c_void);
type ChainFn = unsafe extern "C" fn(c_int, Leaf, *mut c_void) -> c_long;

/// The functions of `chain.c`.
pub struct Chain {
    chain: ChainFn,
    qsort_chain: ChainFn,
}

impl Chain {
    /// Builds (once per process) and loads the library.
    pub fn get() -> &'static Chain {
        static CHAIN: OnceLock<Chain> = OnceLock::new();
        CHAIN.get_or_init(|| {
            let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/chain.c");
            // One file per process: test binaries run in parallel.
            let lib = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("libmwchain-{}.so", std::process::id()));
            let status = std::process::Command::new("cc")
                .args(["-O2", "-fomit-frame-pointer", "-fPIC", "-shared", "-o"])
                .arg(&lib)
                .arg(source)
                .status()
                .expect("run cc (gcc is needed for these tests)");
            assert!(status.success(), "cc failed on {source}");
            let path = CString::new(lib.to_str().unwrap()).unwrap();
            // SAFETY: dlopen of the library just built; it stays loaded.
            let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
            assert!(!handle.is_null(), "dlopen {}", lib.display());
            let _ = std::fs::remove_file(&lib);
            let sym = |name: &CStr| {
                // SAFETY: a symbol of the library, of type ChainFn.
                let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
                assert!(!f.is_null(), "{name:?}");
                // SAFETY: both names below are `long f(int, mw_leaf, void *)`.
                unsafe { std::mem::transmute::<*mut c_void, ChainFn>(f) }
            };
            Chain {
                chain: sym(c"mw_chain"),
                qsort_chain: sym(c"mw_qsort_chain"),
            }
        })
    }

    /// `mw_f0` .. `mw_f{depth-1}`, then `leaf`.
    pub fn run(&self, depth: i32, leaf: &mut dyn FnMut()) -> c_long {
        let mut leaf = leaf;
        // SAFETY: `arg` is the `&mut &mut dyn FnMut()` that `call_leaf` expects,
        // alive for the call.
        unsafe {
            (self.chain)(
                depth,
                call_leaf,
                &mut leaf as *mut &mut dyn FnMut() as *mut c_void,
            )
        }
    }

    /// Calls qsort, whose comparator runs the chain.
    pub fn run_in_qsort(&self, depth: i32, leaf: &mut dyn FnMut()) -> c_long {
        let mut leaf = leaf;
        // SAFETY: as in `run`.
        unsafe {
            (self.qsort_chain)(
                depth,
                call_leaf,
                &mut leaf as *mut &mut dyn FnMut() as *mut c_void,
            )
        }
    }
}

extern "C" fn call_leaf(arg: *mut c_void) {
    // SAFETY: `run` passes a live `&mut &mut dyn FnMut()`.
    let leaf = unsafe { &mut *(arg as *mut &mut dyn FnMut()) };
    leaf();
}

/// The exported symbol and file containing `addr`, via dladdr.
pub fn describe(addr: usize) -> (Option<String>, Option<String>) {
    // SAFETY: dladdr fills `info` or returns 0; the strings it points to
    // belong to the loader and live as long as the object.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr as *const c_void, &mut info) == 0 {
            return (None, None);
        }
        let s = |p: *const c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        (s(info.dli_sname), s(info.dli_fname))
    }
}

pub fn symbol(addr: usize) -> Option<String> {
    describe(addr).0
}

pub fn file(addr: usize) -> Option<String> {
    describe(addr).1
}

/// A cache on the heap, from zeroed memory (all-zero is an empty cache), and
/// without a 16 KiB temporary on the stack (small-stack threads).
pub fn zeroed_cache() -> Box<RuleCache> {
    let layout = std::alloc::Layout::new::<RuleCache>();
    // SAFETY: a non-zero-sized layout; zeroed bytes are a valid RuleCache
    // (its documented promise), and Box frees it with the same layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut RuleCache;
        assert!(!p.is_null());
        Box::from_raw(p)
    }
}

/// Whether `ra` is a return address inside the Rust function starting at
/// `start` (test binaries export no symbols, so no dladdr): after its first
/// byte and within `max_len`.
pub fn in_rust_fn(ra: usize, start: usize, max_len: usize) -> bool {
    ra > start && ra < start + max_len
}
