//! What the preload keeps per thread, in the thread's record (memory the
//! profiler maps itself, see `mwrap_core::threads`): the recursion guard,
//! the quiet sections, the caches that turn a Ruby line or a return
//! address into a site id without a lock, and frees deferred by a signal
//! handler. Only the owning thread touches it.

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

use mwrap_core::mem::ZeroInit;
use mwrap_core::LiveAllocation;

const RUBY_CACHE_SLOTS: usize = 128;
const NATIVE_CACHE_SLOTS: usize = 256;
/// Fibers of one thread that can be quiet at once; beyond, the whole
/// thread is quiet until they leave.
const QUIET_FIBERS: usize = 8;
/// Frees a signal handler can defer while this thread holds a table lock.
const DEFERRED_FREES: usize = 32;

/// A Ruby frame key (see `ruby::RubyFrame`) seen on this thread, and its
/// location. Valid only in the code epoch it was made in
/// (`state::code_epoch`): the pc points into a block of compiled code that
/// the preload watches, and freeing that block (the only way its address,
/// or its iseq's, could come to name another line) ends the epoch. Not
/// the GC generation: Ruby frees objects, and their addresses are reused,
/// while `GC.count` stays the same.
#[derive(Clone, Copy)]
struct RubyCacheEntry {
    key: (usize, usize, usize),
    epoch: u64,
    site: u32,
}

#[derive(Clone, Copy)]
struct NativeCacheEntry {
    address: usize,
    site: u32,
}

/// One quiet fiber: its execution context (0 for a thread without Ruby)
/// and depth.
#[derive(Clone, Copy)]
struct QuietFiber {
    ec: usize,
    depth: u32,
}

/// [`ThreadData::state`]: start-up was seen done on this thread.
pub const READY: u32 = 1;
/// The thread is inside the profiler: nested allocations (from dlsym, Ruby
/// lookups, libc) are not tracked.
pub const BUSY: u32 = 2;
/// Some fiber of this thread is in a quiet section.
pub const QUIET: u32 = 4;
/// A signal handler deferred frees that wait to be done.
pub const DEFERRED: u32 = 8;

pub struct ThreadData {
    /// `READY` | `BUSY` | `QUIET` | `DEFERRED`: the hot path checks one
    /// word, `READY` alone, and takes the slow path otherwise.
    pub state: Cell<u32>,
    /// 1 + this thread's shard of every site (0: not assigned yet).
    shard: Cell<u8>,
    /// This thread's `&ruby_current_ec` (a TLS variable of libruby), once
    /// looked up.
    pub ruby_ec_slot: Cell<*const *const c_void>,
    /// Quiet fibers in use (0: nothing is quiet, the common case).
    quiet_used: Cell<u32>,
    /// Quiet sections entered beyond [`QUIET_FIBERS`] fibers.
    quiet_overflow: Cell<u32>,
    quiet: UnsafeCell<[QuietFiber; QUIET_FIBERS]>,
    deferred_len: Cell<u32>,
    /// The header of this thread's newest tracked allocation: freed before
    /// the thread allocates again, it was a temporary one (see
    /// `state::TEMPORARY`); 0 once freed.
    pub last_block: Cell<usize>,
    deferred: UnsafeCell<[usize; DEFERRED_FREES]>,
    ruby_cache: UnsafeCell<[RubyCacheEntry; RUBY_CACHE_SLOTS]>,
    native_cache: UnsafeCell<[NativeCacheEntry; NATIVE_CACHE_SLOTS]>,
    /// While this thread runs without the GVL (`rb_nogvl` and friends,
    /// see `nogvl`): the site of the Ruby line it released the GVL from
    /// (0: none, or not interned yet), that line as a `RubyFrame` until
    /// its site is interned (0: none; the site is made by the first
    /// allocation charged to it, so a release that allocates nothing
    /// leaves no empty location), and the Ruby frames then (a stack id,
    /// 0: none).
    pub nogvl_site: Cell<u32>,
    pub nogvl_line: Cell<u64>,
    pub nogvl_stack: Cell<u32>,
    /// This thread has taken over its record's frame caches (see `frames`).
    pub frame_caches_owned: Cell<bool>,
}

// SAFETY: cells of integers, raw pointers and arrays of plain structs of
// integers: all-zero bytes are the state of a fresh thread.
unsafe impl ZeroInit for ThreadData {}

/// Frees a signal handler could not defer (every slot taken): those blocks
/// stay allocated.
pub static DEFERRED_DROPPED: AtomicUsize = AtomicUsize::new(0);

impl ThreadData {
    /// This thread's shard of every site: threads take shards in turn, so
    /// two threads allocating from one place lock different mutexes.
    #[inline]
    pub fn shard(&self) -> usize {
        match self.shard.get() {
            0 => {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed) % mwrap_core::sites::SHARDS;
                self.shard.set(n as u8 + 1);
                n
            }
            n => n as usize - 1,
        }
    }

    #[inline]
    fn ruby_slot(key: (usize, usize, usize)) -> usize {
        let h = (key.0 as u64 ^ (key.1 as u64).rotate_left(29) ^ (key.2 as u64).rotate_left(47))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 57) as usize & (RUBY_CACHE_SLOTS - 1)
    }

    #[inline]
    fn native_slot(address: usize) -> usize {
        let h = (address as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 56) as usize & (NATIVE_CACHE_SLOTS - 1)
    }

    #[inline]
    pub fn cached_ruby_site(&self, key: (usize, usize, usize), epoch: u64) -> Option<u32> {
        // SAFETY: the caches are only touched by their own thread, and no
        // reference into them outlives the call.
        let e = unsafe { &(*self.ruby_cache.get())[Self::ruby_slot(key)] };
        (e.key == key && e.epoch == epoch && e.site != 0).then_some(e.site)
    }

    #[inline]
    pub fn cache_ruby_site(&self, key: (usize, usize, usize), epoch: u64, site: u32) {
        // SAFETY: as in `cached_ruby_site`.
        let e = unsafe { &mut (*self.ruby_cache.get())[Self::ruby_slot(key)] };
        *e = RubyCacheEntry { key, epoch, site };
    }

    #[inline]
    pub fn cached_native_site(&self, address: usize) -> Option<u32> {
        // SAFETY: as in `cached_ruby_site`.
        let e = unsafe { &(*self.native_cache.get())[Self::native_slot(address)] };
        (e.address == address && e.site != 0).then_some(e.site)
    }

    #[inline]
    pub fn cache_native_site(&self, address: usize, site: u32) {
        // SAFETY: as in `cached_ruby_site`.
        let e = unsafe { &mut (*self.native_cache.get())[Self::native_slot(address)] };
        *e = NativeCacheEntry { address, site };
    }

    fn set_flag(&self, flag: u32, on: bool) {
        let s = self.state.get();
        self.state.set(if on { s | flag } else { s & !flag });
    }

    /// Sets `BUSY`; false if it was set already.
    #[inline]
    pub fn enter_busy(&self) -> bool {
        let s = self.state.get();
        self.state.set(s | BUSY);
        s & BUSY == 0
    }

    #[inline]
    pub fn leave_busy(&self) {
        self.set_flag(BUSY, false);
    }

    fn update_quiet_flag(&self) {
        self.set_flag(
            QUIET,
            self.quiet_used.get() != 0 || self.quiet_overflow.get() != 0,
        );
    }

    /// Whether the fiber running `ec` (0 without Ruby) is quiet.
    pub fn is_quiet(&self, ec: usize) -> bool {
        if self.quiet_overflow.get() != 0 {
            return true;
        }
        // SAFETY: owner-only, no reference outlives the call.
        let fibers = unsafe { &*self.quiet.get() };
        fibers[..self.quiet_used.get() as usize]
            .iter()
            .any(|f| f.ec == ec && f.depth > 0)
    }

    /// Enters one quiet level for the fiber running `ec`; the new depth.
    pub fn quiet_enter(&self, ec: usize) -> u32 {
        // SAFETY: owner-only, no other reference is live.
        let fibers = unsafe { &mut *self.quiet.get() };
        let used = self.quiet_used.get() as usize;
        let depth = if let Some(f) = fibers[..used].iter_mut().find(|f| f.ec == ec) {
            f.depth += 1;
            f.depth
        } else if used < QUIET_FIBERS {
            fibers[used] = QuietFiber { ec, depth: 1 };
            self.quiet_used.set(used as u32 + 1);
            1
        } else {
            self.quiet_overflow.set(self.quiet_overflow.get() + 1);
            self.quiet_overflow.get()
        };
        self.update_quiet_flag();
        depth
    }

    /// Leaves one quiet level for the fiber running `ec`; the new depth.
    pub fn quiet_exit(&self, ec: usize) -> u32 {
        // SAFETY: owner-only, no other reference is live.
        let fibers = unsafe { &mut *self.quiet.get() };
        let used = self.quiet_used.get() as usize;
        let depth = if let Some(i) = fibers[..used].iter().position(|f| f.ec == ec) {
            fibers[i].depth -= 1;
            let depth = fibers[i].depth;
            if depth == 0 {
                fibers[i] = fibers[used - 1];
                self.quiet_used.set(used as u32 - 1);
            }
            depth
        } else {
            let n = self.quiet_overflow.get().saturating_sub(1);
            self.quiet_overflow.set(n);
            n
        };
        self.update_quiet_flag();
        depth
    }

    /// Keeps a tracked block whose free a signal handler could not count
    /// (this thread holds a table lock); false when every slot is taken.
    pub fn defer_free(&self, hdr: *mut LiveAllocation) -> bool {
        let n = self.deferred_len.get() as usize;
        if n == DEFERRED_FREES {
            DEFERRED_DROPPED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // SAFETY: owner-only; a handler nested inside this call would see
        // `n` unchanged and overwrite the same slot at worst (a leak).
        unsafe { (*self.deferred.get())[n] = hdr as usize };
        self.deferred_len.set(n as u32 + 1);
        self.set_flag(DEFERRED, true);
        true
    }

    /// Takes the last deferred block, if any.
    pub fn pop_deferred(&self) -> Option<*mut LiveAllocation> {
        let n = self.deferred_len.get() as usize;
        if n == 0 {
            self.set_flag(DEFERRED, false);
            return None;
        }
        self.deferred_len.set(n as u32 - 1);
        // SAFETY: owner-only; slot n - 1 was written by `defer_free`.
        Some(unsafe { (*self.deferred.get())[n - 1] } as *mut LiveAllocation)
    }
}
