//! The process's one set of globals: every table, the fork gate, the
//! thread records and the configuration. Nothing else in the preload holds
//! state that outlives a call (besides the real allocator's entry points
//! in `real` and the loader counters in `loader`).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use mwrap_core::heap::HeapPageTable;
use mwrap_core::live::HeaderList;
use mwrap_core::lock::ForkGate;
use mwrap_core::threads::ThreadRegistry;
use mwrap_core::SiteTable;

use crate::config::ConfigCell;
use crate::thread_data::ThreadData;

/// How live allocations are known: a header in front of every block.
pub type Live = HeaderList;

/// Every location of this process.
pub static SITES: SiteTable<Live> = SiteTable::new();

/// Ruby's live heap pages.
pub static HEAP: HeapPageTable = HeapPageTable::new();

/// One record per thread that used the profiler.
pub static THREADS: ThreadRegistry<ThreadData> = ThreadRegistry::new(&GATE);

/// Closed while a thread forks (see `mwrap_core::lock`).
pub static GATE: ForkGate = ForkGate::new();

/// `MWRAP`, read once at start-up.
pub static CONFIG: ConfigCell = ConfigCell::new();

/// The newest GC generation seen by any thread holding the GVL. Frees and
/// native allocations use it instead of asking Ruby (which needs the GVL).
static LAST_GENERATION: AtomicU64 = AtomicU64::new(0);

pub fn current_generation() -> u64 {
    LAST_GENERATION.load(Ordering::Relaxed)
}

#[inline]
pub fn saw_generation(generation: u64) {
    if LAST_GENERATION.load(Ordering::Relaxed) != generation {
        LAST_GENERATION.store(generation, Ordering::Relaxed);
    }
}

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const STARTED: u8 = 2;
static START: AtomicU8 = AtomicU8::new(NOT_STARTED);

#[inline]
pub fn started() -> bool {
    START.load(Ordering::Acquire) == STARTED
}

/// True for the one caller that must run start-up.
pub fn begin_start() -> bool {
    START
        .compare_exchange(NOT_STARTED, STARTING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

pub fn finish_start() {
    START.store(STARTED, Ordering::Release);
}

/// Time spent in the fork handlers, for the benchmark (see `api.rs`).
pub static FORK_HANDLER_NANOS: AtomicU64 = AtomicU64::new(0);
pub static FORKS: AtomicU64 = AtomicU64::new(0);
