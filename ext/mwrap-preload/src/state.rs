//! The process's one set of globals: every table, the fork gate, the
//! thread records and the configuration. Nothing else in the preload holds
//! state that outlives a call (besides the real allocator's entry points
//! in `real` and the loader counters in `loader`).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use mwrap_core::app_root::AppRoot;
use mwrap_core::files::FileId;
use mwrap_core::heap::HeapPageTable;
use mwrap_core::live::HeaderList;
use mwrap_core::lock::ForkGate;
use mwrap_core::mem::ChunkedArray;
use mwrap_core::stacks::StackTable;
use mwrap_core::threads::ThreadRegistry;
use mwrap_core::SiteTable;

use crate::config::ConfigCell;
use crate::symbolize::{ClosedModules, SymbolizerCell};
use crate::thread_data::ThreadData;

/// How live allocations are known: a header in front of every block.
pub type Live = HeaderList;

/// Every location of this process.
pub static SITES: SiteTable<Live> = SiteTable::new();

/// Every distinct stack (`MWRAP=bt`, `ruby_bt`).
pub static STACKS: StackTable = StackTable::new();

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

/// Bumped whenever a block of Ruby's compiled code that a per-thread
/// cache points into is freed: such a cache entry is only valid in the
/// epoch it was made in. (The GC generation is not enough: Ruby frees
/// objects, and reuses their addresses, while `GC.count` stays the same.)
static CODE_EPOCH: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
pub fn code_epoch() -> u64 {
    CODE_EPOCH.load(Ordering::Relaxed)
}

/// A watched code block is being freed: every cache entry made before is
/// stale.
#[cold]
pub fn code_freed() {
    CODE_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// What an allocation records besides its location: native frames
/// (`bt`) and Ruby frames (`ruby_bt`), set at start-up, and the directory
/// whose frames it is charged to (`app_root`), which `Mwrap.app_root=`
/// may change.
static BT: AtomicU8 = AtomicU8::new(0);
static RUBY_BT: AtomicU8 = AtomicU8::new(0);
static APP_ROOT: AtomicPtr<AppRoot> = AtomicPtr::new(core::ptr::null_mut());
/// Any of the three is on: the one word the hot path checks.
static STACKED: AtomicBool = AtomicBool::new(false);
/// Bumped with every new `app_root`.
static APP_ROOT_GENERATION: AtomicU32 = AtomicU32::new(0);
/// Per Ruby file (by `FileId`): whether it is under the app root, as
/// `generation << 2 | KNOWN | UNDER`, decided once per file and root.
static FILE_UNDER_ROOT: ChunkedArray<AtomicU32, 1024, 1024> = ChunkedArray::new();
const KNOWN: u32 = 2;
const UNDER: u32 = 1;

/// What allocations record now.
#[derive(Clone, Copy)]
pub struct Recording {
    pub bt: usize,
    pub ruby_bt: usize,
    pub app_root: Option<&'static AppRoot>,
}

#[inline(always)]
pub fn stacked() -> bool {
    STACKED.load(Ordering::Relaxed)
}

#[inline]
pub fn recording() -> Recording {
    let root = APP_ROOT.load(Ordering::Acquire);
    Recording {
        bt: BT.load(Ordering::Relaxed) as usize,
        ruby_bt: RUBY_BT.load(Ordering::Relaxed) as usize,
        // SAFETY: a published root is leaked, never freed.
        app_root: unsafe { root.as_ref() },
    }
}

/// Start-up: the frame counts of `MWRAP`.
pub fn set_frame_counts(bt: u8, ruby_bt: u8) {
    BT.store(bt, Ordering::Relaxed);
    RUBY_BT.store(ruby_bt, Ordering::Relaxed);
    update_stacked();
}

/// A new `app_root` (None: off). The old one is leaked (a reader may still
/// hold it); every cached frame decision ends with the code epoch.
pub fn set_app_root(root: Option<AppRoot>) {
    let p = root.map_or(core::ptr::null_mut(), |r| Box::into_raw(Box::new(r)));
    APP_ROOT_GENERATION.fetch_add(1, Ordering::AcqRel);
    APP_ROOT.store(p, Ordering::Release);
    update_stacked();
    code_freed();
}

/// Whether Ruby file `file` is under `root` (the current app root),
/// decided by `decide` once per file and root.
pub fn file_under_root(file: FileId, decide: impl FnOnce() -> bool) -> bool {
    let generation = APP_ROOT_GENERATION.load(Ordering::Acquire) & (u32::MAX >> 2);
    let Some(slot) = FILE_UNDER_ROOT.get_or_map(file.0 as usize) else {
        return decide();
    };
    let v = slot.load(Ordering::Relaxed);
    if v & KNOWN != 0 && v >> 2 == generation {
        return v & UNDER != 0;
    }
    let under = decide();
    slot.store(generation << 2 | KNOWN | under as u32, Ordering::Relaxed);
    under
}

fn update_stacked() {
    let r = recording();
    STACKED.store(
        r.bt > 0 || r.ruby_bt > 0 || r.app_root.is_some(),
        Ordering::Relaxed,
    );
}

/// The symbolizer of native frames (read side only).
pub static SYMBOLIZER: SymbolizerCell = SymbolizerCell::new();

/// Objects closed so far, as the `dlclose` hook captured them.
pub static CLOSED_MODULES: ClosedModules = ClosedModules::new();

/// Objects `dlclose`d so far: a stack's native frames are named after the
/// objects loaded when it was first seen (see `mwrap_core::stacks`).
static DLCLOSE_EPOCH: AtomicU32 = AtomicU32::new(0);

#[inline]
pub fn dlclose_epoch() -> u32 {
    DLCLOSE_EPOCH.load(Ordering::Acquire)
}

/// A `dlclose` begins: its number.
pub fn next_dlclose() -> u32 {
    DLCLOSE_EPOCH.fetch_add(1, Ordering::AcqRel) + 1
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

/// Per site id: its allocations freed before their thread's next
/// allocation (temporary ones), counted by the free that finds it so.
pub static TEMPORARY: ChunkedArray<AtomicU64, 1024, 1024> = ChunkedArray::new();

/// The temporary allocations of location `id` (its stacks' included).
pub fn temporary_of(id: u32) -> u64 {
    let own = |i: u32| {
        TEMPORARY
            .get(i as usize)
            .map_or(0, |t| t.load(Ordering::Relaxed))
    };
    own(id) + SITES.stacks_of(id).map(own).sum::<u64>()
}

/// A reset zeroes them with the other counters.
pub fn reset_temporary() {
    for id in 1..=SITES.site_count() {
        if let Some(t) = TEMPORARY.get(id as usize) {
            t.store(0, Ordering::Relaxed);
        }
    }
}

/// The endpoint's `POST /mark`: each location's live bytes then, by site
/// id (a location born since reads 0), and when (`CLOCK_MONOTONIC`
/// nanoseconds; 0: no mark yet).
pub static MARK: ChunkedArray<AtomicU64, 1024, 1024> = ChunkedArray::new();
pub static MARKED_AT: AtomicU64 = AtomicU64::new(0);

/// Time spent in the fork handlers, for the benchmark (see `api.rs`).
pub static FORK_HANDLER_NANOS: AtomicU64 = AtomicU64::new(0);
pub static FORKS: AtomicU64 = AtomicU64::new(0);
