//! Finding the preload library's API table and a safe wrapper around it.
//!
//! The extension links no preload code: at load time it looks up
//! [`PRELOAD_API_SYMBOL`] with `dlsym(RTLD_DEFAULT, …)`. When the symbol is
//! absent (the process was not started under the preload) every query
//! reports nothing. When the preload speaks another ABI version, a warning
//! naming both versions goes to stderr once and the extension behaves as if
//! the preload were absent.
//!
//! The API's sinks only copy into Rust vectors; no Ruby object is created and
//! no Ruby code runs while the preload is calling back into us.

use core::ffi::c_void;
use std::mem::size_of;
use std::sync::OnceLock;

use mwrap_core::abi::{
    HeapPageInfo, HeapPageStats, LiveAllocationInfo, PreloadApi, SiteSnapshot, ABI_VERSION,
    PRELOAD_API_SYMBOL, UNTRACKED_SITE,
};

/// Signature of the exported `mwrap_preload_api` function.
type ApiGetter = unsafe extern "C" fn() -> *const PreloadApi;

static PRELOAD: OnceLock<Option<Preload>> = OnceLock::new();

/// A validated handle on the preload's API table.
#[derive(Clone, Copy)]
pub struct Preload {
    api: &'static PreloadApi,
}

/// Why the preload cannot be used.
enum Unusable {
    Absent,
    Mismatch { version: u32, struct_size: u32 },
}

/// The preload, when this process runs under a compatible one. Looked up
/// once; the version-mismatch warning is therefore printed at most once.
pub fn get() -> Option<Preload> {
    *PRELOAD.get_or_init(|| match locate() {
        Ok(preload) => Some(preload),
        Err(Unusable::Absent) => None,
        Err(Unusable::Mismatch {
            version,
            struct_size,
        }) => {
            eprintln!(
                "mwrap: ignoring the preloaded libmwrap_preload.so: it speaks ABI version {version} \
                 (table of {struct_size} bytes) but this mwrap extension needs ABI version \
                 {ABI_VERSION} (table of {} bytes); a stale copy is probably first in LD_PRELOAD. \
                 Mwrap will report nothing.",
                size_of::<PreloadApi>()
            );
            None
        }
    })
}

fn locate() -> Result<Preload, Unusable> {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the
    // global scope, which holds every LD_PRELOAD object.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, PRELOAD_API_SYMBOL.as_ptr().cast()) };
    if sym.is_null() {
        return Err(Unusable::Absent);
    }
    // SAFETY: the ABI documents the symbol as `extern "C" fn() -> *const PreloadApi`.
    let getter: ApiGetter = unsafe { std::mem::transmute::<*mut c_void, ApiGetter>(sym) };
    // SAFETY: calling the documented getter; it takes no argument.
    let table = unsafe { getter() };
    if table.is_null() {
        return Err(Unusable::Absent);
    }
    // Only the two leading u32 fields have a fixed meaning in every ABI
    // version: read them before trusting the rest of the table.
    let header = table.cast::<u32>();
    // SAFETY: every version of the table starts with these two u32 fields.
    let (version, struct_size) = unsafe { (header.read(), header.add(1).read()) };
    if version != ABI_VERSION || (struct_size as usize) < size_of::<PreloadApi>() {
        return Err(Unusable::Mismatch {
            version,
            struct_size,
        });
    }
    // SAFETY: version and size checked; the table lives as long as the process.
    Ok(Preload {
        api: unsafe { &*table },
    })
}

/// One location's counters and printable name, copied out of the preload.
pub struct Site {
    pub snapshot: SiteSnapshot,
    pub name: Vec<u8>,
}

/// Keeps the calling thread quiet (its allocations untracked) while alive.
pub struct QuietGuard {
    api: &'static PreloadApi,
}

impl QuietGuard {
    fn enter(api: &'static PreloadApi) -> Self {
        // SAFETY: plain call into the validated table.
        unsafe { (api.quiet_enter)() };
        QuietGuard { api }
    }
}

impl Drop for QuietGuard {
    fn drop(&mut self) {
        // SAFETY: balances the quiet_enter in `enter`.
        unsafe { (self.api.quiet_exit)() };
    }
}

/// Appends a batch of `T` handed over by the preload to the `Vec<T>` at `ctx`.
///
/// # Safety
/// `ctx` must be a `&mut Vec<T>` and `items` must point at `n` valid `T`s
/// (or be null with any `n`) for the duration of the call.
unsafe extern "C" fn vec_sink<T: Copy>(ctx: *mut c_void, items: *const T, n: usize) {
    if items.is_null() || n == 0 {
        return;
    }
    // SAFETY: see the function's contract.
    let out = unsafe { &mut *ctx.cast::<Vec<T>>() };
    out.extend_from_slice(unsafe { std::slice::from_raw_parts(items, n) });
}

fn vec_ctx<T>(v: &mut Vec<T>) -> *mut c_void {
    (v as *mut Vec<T>).cast()
}

impl Preload {
    /// Every location whose total is strictly above `min`, with its name,
    /// sorted by total descending (then by name, for a stable order).
    /// Locations whose name the preload no longer knows are skipped.
    pub fn sites(self, min: u64) -> Vec<Site> {
        self.sites_where(min, |_| true)
    }

    /// Like [`Preload::sites`], keeping only the snapshots `keep` accepts
    /// (names are only fetched for those). One `snapshot_sites` call.
    pub fn sites_where(self, min: u64, keep: impl Fn(&SiteSnapshot) -> bool) -> Vec<Site> {
        let api = self.api;
        let mut sites = {
            let _quiet = QuietGuard::enter(api);
            let mut snapshots: Vec<SiteSnapshot> = Vec::new();
            // SAFETY: the sink matches `SnapshotSink` and ctx points at `snapshots`.
            unsafe { (api.snapshot_sites)(min, vec_sink::<SiteSnapshot>, vec_ctx(&mut snapshots)) };
            let mut sites = Vec::with_capacity(snapshots.len());
            for snapshot in snapshots {
                if snapshot.total <= min || !keep(&snapshot) {
                    continue;
                }
                if let Some(name) = self.name_unquiet(snapshot.id) {
                    sites.push(Site { snapshot, name });
                }
            }
            sites
        };
        sites.sort_unstable_by(|a, b| {
            b.snapshot
                .total
                .cmp(&a.snapshot.total)
                .then_with(|| a.name.cmp(&b.name))
        });
        sites
    }

    /// Enters a quiet section on this thread until the guard is dropped.
    pub fn quiet(self) -> QuietGuard {
        QuietGuard::enter(self.api)
    }

    /// Enters a quiet section on this thread (see `Mwrap.quiet`); the
    /// caller must balance it with [`Preload::quiet_exit`].
    pub fn quiet_enter(self) -> u32 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.quiet_enter)() }
    }

    pub fn quiet_exit(self) -> u32 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.quiet_exit)() }
    }

    /// The id of the location printed as `name`; None when never seen.
    pub fn lookup(self, name: &[u8]) -> Option<u32> {
        let _quiet = self.quiet();
        // SAFETY: `name` is valid for `name.len()` bytes during the call.
        let id = unsafe { (self.api.site_lookup)(name.as_ptr(), name.len()) };
        (id != UNTRACKED_SITE).then_some(id)
    }

    /// The counters of location `id`; None when the preload does not know it.
    pub fn snapshot(self, id: u32) -> Option<SiteSnapshot> {
        let mut out = SiteSnapshot::default();
        // SAFETY: `out` is a valid, writable SiteSnapshot.
        let known = unsafe { (self.api.site_snapshot)(id, &mut out) };
        known.then_some(out)
    }

    /// The printable name of location `id`.
    pub fn name(self, id: u32) -> Option<Vec<u8>> {
        let _quiet = self.quiet();
        self.name_unquiet(id)
    }

    fn name_unquiet(self, id: u32) -> Option<Vec<u8>> {
        let mut name = Vec::new();
        // SAFETY: the sink matches `BytesSink` and ctx points at `name`.
        let known = unsafe { (self.api.site_name)(id, vec_sink::<u8>, vec_ctx(&mut name)) };
        known.then_some(name)
    }

    /// A copy of the allocations from location `id` that are still live.
    pub fn live(self, id: u32) -> Option<Vec<LiveAllocationInfo>> {
        let _quiet = self.quiet();
        let mut live: Vec<LiveAllocationInfo> = Vec::new();
        // SAFETY: the sink matches `LiveSink` and ctx points at `live`.
        let known =
            unsafe { (self.api.site_live)(id, vec_sink::<LiveAllocationInfo>, vec_ctx(&mut live)) };
        known.then_some(live)
    }

    /// A copy of every live Ruby heap page, by address.
    pub fn heap_pages(self) -> Vec<HeapPageInfo> {
        let _quiet = self.quiet();
        let mut pages: Vec<HeapPageInfo> = Vec::new();
        // SAFETY: the sink matches `HeapPageSink` and ctx points at `pages`.
        unsafe { (self.api.heap_pages)(vec_sink::<HeapPageInfo>, vec_ctx(&mut pages)) };
        pages.sort_unstable_by_key(|p| p.address);
        pages
    }

    pub fn heap_stats(self) -> HeapPageStats {
        let _quiet = self.quiet();
        let mut out = HeapPageStats::default();
        // SAFETY: `out` is a valid, writable HeapPageStats.
        unsafe { (self.api.heap_stats)(&mut out) };
        out
    }

    pub fn heap_page_size(self) -> u64 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.heap_page_size)() }
    }

    /// Zeroes every counter.
    pub fn reset(self) {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.reset)() }
    }

    pub fn total_bytes_allocated(self) -> u64 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.total_bytes_allocated)() }
    }

    pub fn total_bytes_freed(self) -> u64 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.total_bytes_freed)() }
    }

    pub fn current_generation(self) -> u64 {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.current_generation)() }
    }

    /// Lets the preload find Ruby's symbols if libruby was loaded after it
    /// initialised (an embedding program that dlopens libruby).
    pub fn attach_ruby(self) {
        // SAFETY: plain call into the validated table.
        unsafe { (self.api.attach_ruby)() }
    }
}
