//! Per-thread state of the hooks: the recursion guard, the quiet depth and
//! the caches that turn a Ruby line or a return address into a site id
//! without taking a lock.

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

const RUBY_CACHE_SLOTS: usize = 128;
const NATIVE_CACHE_SLOTS: usize = 256;

/// A Ruby frame key (see [`crate::ruby::RubyFrame`]) seen on this thread.
/// Valid only within the GC generation it was filled in: Ruby frees (and
/// may reuse the memory of) an iseq or a file-name string only in a GC, so
/// pointers seen in this generation still name the same line.
#[derive(Clone, Copy)]
struct RubyCacheEntry {
    key: (usize, usize, usize),
    generation: u64,
    site: u32,
}

#[derive(Clone, Copy)]
struct NativeCacheEntry {
    address: usize,
    site: u32,
}

pub struct ThreadState {
    /// Set while this thread is inside the profiler: nested allocations
    /// (from dlsym, Ruby lookups, our own tables) are not tracked.
    pub busy: Cell<bool>,
    /// Depth of `Mwrap.quiet` on this thread.
    pub quiet: Cell<u32>,
    /// 1 + this thread's shard of every site (0: not assigned yet).
    shard: Cell<u8>,
    /// This thread's `&ruby_current_ec` (a TLS variable of libruby), once
    /// looked up.
    pub ruby_ec_slot: Cell<*const *const c_void>,
    ruby_cache: UnsafeCell<[RubyCacheEntry; RUBY_CACHE_SLOTS]>,
    native_cache: UnsafeCell<[NativeCacheEntry; NATIVE_CACHE_SLOTS]>,
}

impl ThreadState {
    const fn new() -> Self {
        ThreadState {
            busy: Cell::new(false),
            quiet: Cell::new(0),
            shard: Cell::new(0),
            ruby_ec_slot: Cell::new(core::ptr::null()),
            ruby_cache: UnsafeCell::new(
                [RubyCacheEntry {
                    key: (0, 0, 0),
                    generation: 0,
                    site: 0,
                }; RUBY_CACHE_SLOTS],
            ),
            native_cache: UnsafeCell::new(
                [NativeCacheEntry {
                    address: 0,
                    site: 0,
                }; NATIVE_CACHE_SLOTS],
            ),
        }
    }

    #[inline]
    fn ruby_slot(key: (usize, usize, usize)) -> usize {
        let h = (key.0 as u64 ^ (key.1 as u64).rotate_left(29) ^ (key.2 as u64).rotate_left(47))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 57) as usize & (RUBY_CACHE_SLOTS - 1)
    }

    /// This thread's shard of every site: threads take shards in turn, so
    /// two threads allocating from one place lock different mutexes.
    #[inline]
    pub fn shard(&self) -> usize {
        match self.shard.get() {
            0 => {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed) % mwrap_core::table::SHARDS;
                self.shard.set(n as u8 + 1);
                n
            }
            n => n as usize - 1,
        }
    }

    #[inline]
    fn native_slot(address: usize) -> usize {
        let h = (address as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 56) as usize & (NATIVE_CACHE_SLOTS - 1)
    }

    #[inline]
    pub fn cached_ruby_site(&self, key: (usize, usize, usize), generation: u64) -> Option<u32> {
        // SAFETY: the caches are only touched by their own thread.
        let e = unsafe { &(*self.ruby_cache.get())[Self::ruby_slot(key)] };
        (e.key == key && e.generation == generation && e.site != 0).then_some(e.site)
    }

    #[inline]
    pub fn cache_ruby_site(&self, key: (usize, usize, usize), generation: u64, site: u32) {
        let e = unsafe { &mut (*self.ruby_cache.get())[Self::ruby_slot(key)] };
        *e = RubyCacheEntry {
            key,
            generation,
            site,
        };
    }

    #[inline]
    pub fn cached_native_site(&self, address: usize) -> Option<u32> {
        let e = unsafe { &(*self.native_cache.get())[Self::native_slot(address)] };
        (e.address == address && e.site != 0).then_some(e.site)
    }

    #[inline]
    pub fn cache_native_site(&self, address: usize, site: u32) {
        let e = unsafe { &mut (*self.native_cache.get())[Self::native_slot(address)] };
        *e = NativeCacheEntry { address, site };
    }
}

thread_local! {
    // const-initialised and without Drop: no lazy init, no destructor, so it
    // is usable from the first malloc of a thread to its very end.
    static STATE: ThreadState = const { ThreadState::new() };
}

/// Runs `f` with this thread's state; None only if TLS is unavailable.
#[inline]
pub fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> Option<R> {
    STATE.try_with(f).ok()
}

/// Runs `f` with the recursion guard set, unless the thread is already
/// inside the profiler (then returns None without running it).
#[inline]
pub fn guarded<R>(f: impl FnOnce(&ThreadState) -> R) -> Option<R> {
    with(|ts| {
        if ts.busy.get() {
            return None;
        }
        ts.busy.set(true);
        let r = f(ts);
        ts.busy.set(false);
        Some(r)
    })
    .flatten()
}
