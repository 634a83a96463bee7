//! The one place every output (the ABI's `render`, the exit dump, the
//! endpoint's pages) turns a format into lines.

use mwrap_core::abi::{SiteFilter, RENDER_FOLDED, RENDER_JSON};
use mwrap_core::lock::LockCx;
use mwrap_core::read;
use mwrap_core::render::{self, LineSink};

use crate::names::Symbols;
use crate::state::{SITES, STACKS};

/// Renders `format` (a `RENDER_*`) of what is above `min` (the total for
/// text and JSON, live bytes for folded) into `out`: the one place every
/// output (this ABI and the exit dump) turns a format into lines, with
/// what only the exit dump adds (see [`DumpExtras`]).
pub fn render_format(
    cx: &LockCx<'_>,
    format: u32,
    min: u64,
    extras: &DumpExtras<'_>,
    out: &mut impl LineSink,
) -> Result<(), ()> {
    let leaks = extras.leaks;
    let filter = SiteFilter {
        min_total: min,
        ..Default::default()
    };
    let all = SiteFilter::default();
    let site_rows = |f: &SiteFilter| read::sites(&SITES, cx, f, &Symbols).map_err(|_| ());
    let stack_rows = || read::stacks(&SITES, &STACKS, cx, &all, None, &Symbols).map_err(|_| ());
    match format {
        RENDER_FOLDED => render::folded(&stack_rows()?, min, out),
        RENDER_JSON => {
            let by_location = match leaks {
                Some(report) => report.by_location().map_err(|_| ())?,
                None => Vec::new(),
            };
            let leaks = leaks.map(|report| render::Leaks {
                summary: report.summary,
                by_location: &by_location,
            });
            render::json(
                &site_rows(&filter)?,
                &stack_rows()?,
                leaks.as_ref(),
                extras.pid,
                extras.memory,
                Some(&crate::state::temporary_of),
                out,
            )
        }
        _ => {
            render::text(&site_rows(&filter)?, out);
            if let Some(report) = leaks {
                let lines = report
                    .lines
                    .iter()
                    .map(|l| (report.name(l), l.bytes, l.count));
                render::leaks_text(&report.summary, lines, min, out);
            }
        }
    }
    Ok(())
}

/// What the exit dump adds to a format: the leak scan of `dump_leaks:1`
/// (leak lines after the text's 2.x ones, per location in JSON) and the
/// memory breakdown (JSON).
#[derive(Default)]
pub struct DumpExtras<'a> {
    pub leaks: Option<&'a crate::leak_scan::LeakReport>,
    pub memory: Option<&'a [(&'static str, Option<i128>)]>,
    /// This process's pid, in the JSON document.
    pub pid: Option<u32>,
}
