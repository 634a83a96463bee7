//! The heap as a gzip'd pprof profile (`mwrap_pprof`): served as
//! `/heap.pb.gz` by the endpoint's pages and handed to `Mwrap.pprof`
//! through the ABI's `render_pprof`. Read side only.

use mwrap_core::abi::SiteFilter;
use mwrap_core::lock::LockCx;
use mwrap_core::read;

use crate::names::Symbols;
use crate::state::{SITES, STACKS};

/// Every (location, stack) row with an allocation, as profile.proto
/// gzip'd; native frames mapped to the executable mappings of
/// `/proc/self/maps` (none when it cannot be read). Err when memory ran
/// out.
pub fn heap_profile(cx: &LockCx<'_>) -> Result<Vec<u8>, ()> {
    let rows = read::stacks(&SITES, &STACKS, cx, &SiteFilter::default(), None, &Symbols)
        .map_err(|_| ())?;
    // Read after the rows: every object a frame was named in is mapped
    // (or was closed, and is then named by its path alone).
    let maps = std::fs::read("/proc/self/maps").unwrap_or_default();
    let exec = mwrap_pprof::exec_mappings(&maps).map_err(|_| ())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(0));
    mwrap_pprof::heap_pb_gz(&rows, &exec, now).map_err(|_| ())
}
