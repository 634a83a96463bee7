//! RSS and live bytes over time (`MWRAP=interval_ms`), for `/timeline`
//! and `/peak`: the preload's own thread (see `server`) samples every
//! `interval_ms` into a bounded ring, and keeps the highest live bytes it
//! sampled with the top locations at that moment.
//!
//! Sampled, not tracked: a peak between two samples is missed. Exact
//! tracking would put a compare-and-store on every allocation, and the
//! hot path must not get slower.
//!
//! RSS is `/proc/self/statm`'s resident pages times the page size: one
//! small read, where `smaps_rollup` walks every mapping. Live bytes are
//! the tables' allocated minus freed (as `read::totals`), in the same walk
//! that finds the top locations.
//!
//! Everything is in fixed-size statics (no allocation while sampling),
//! behind a spin lock held only to copy in or out: the sampler is the one
//! writer; readers are a page on the endpoint's thread or on the Rack
//! app's. A fork child starts both afresh (its thread is a new one).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mwrap_core::read;
use mwrap_core::web::html_escape;

use crate::copy::monotonic_nanos;
use crate::names::Symbols;
use crate::per_thread::{self, lock_cx};
use crate::state::SITES;

/// Samples kept: an hour at the default second; when full, each new
/// sample replaces the oldest.
pub const RING_SAMPLES: usize = 3600;
/// Locations kept with the peak, and the bytes of each one's name kept
/// (a longer name is cut).
pub const PEAK_SITES: usize = 10;
const NAME_BYTES: usize = 240;
/// Rows of the table under the chart.
const TABLE_ROWS: usize = 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Nanoseconds since the clock's start (see [`restart_clock`]).
    pub at_nanos: u64,
    pub rss_bytes: u64,
    pub live_bytes: u64,
}

struct Ring {
    samples: [Sample; RING_SAMPLES],
    /// Where the next sample goes.
    next: usize,
    len: usize,
}

#[derive(Clone, Copy)]
struct PeakSite {
    name: [u8; NAME_BYTES],
    name_len: usize,
    live_bytes: u64,
}

const NO_SITE: PeakSite = PeakSite {
    name: [0; NAME_BYTES],
    name_len: 0,
    live_bytes: 0,
};

#[derive(Clone, Copy)]
struct Peak {
    /// None before the first sample.
    sample: Option<Sample>,
    /// Wall time of that sample, milliseconds since the Unix epoch.
    unix_millis: u64,
    sites: [PeakSite; PEAK_SITES],
    site_count: usize,
}

/// A value behind a spin lock: never held across anything that waits.
struct Guarded<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through `with`, under the lock.
unsafe impl<T: Send> Sync for Guarded<T> {}

impl<T> Guarded<T> {
    const fn new(value: T) -> Self {
        Guarded {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is ours until the store below.
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        r
    }

    /// In a fork child: a thread that held the lock in the parent does
    /// not exist here, so the lock is free whatever it says.
    fn unlock_in_fork_child(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

static RING: Guarded<Ring> = Guarded::new(Ring {
    samples: [Sample {
        at_nanos: 0,
        rss_bytes: 0,
        live_bytes: 0,
    }; RING_SAMPLES],
    next: 0,
    len: 0,
});

static PEAK: Guarded<Peak> = Guarded::new(Peak {
    sample: None,
    unix_millis: 0,
    sites: [NO_SITE; PEAK_SITES],
    site_count: 0,
});

/// The monotonic time that "seconds since start" counts from, and the
/// wall time then (milliseconds since the Unix epoch).
static START_NANOS: AtomicU64 = AtomicU64::new(0);
static START_UNIX_MILLIS: AtomicU64 = AtomicU64::new(0);
/// The sampling interval, for the pages to say.
static INTERVAL_MS: AtomicU64 = AtomicU64::new(0);

/// Starts the clock (start-up, or a fork child, whose timeline starts at
/// the fork) with the interval the sampler uses.
pub fn restart_clock(interval_ms: u32) {
    START_NANOS.store(monotonic_nanos(), Ordering::Relaxed);
    START_UNIX_MILLIS.store(crate::config::unix_millis(), Ordering::Relaxed);
    INTERVAL_MS.store(interval_ms as u64, Ordering::Relaxed);
}

/// In a fork child: the parent's samples and peak are not the child's.
pub fn in_fork_child() {
    RING.unlock_in_fork_child();
    PEAK.unlock_in_fork_child();
    RING.with(|ring| {
        ring.next = 0;
        ring.len = 0;
    });
    PEAK.with(|peak| {
        peak.sample = None;
        peak.site_count = 0;
    });
}

/// Resident bytes from `/proc/self/statm` (its second field, in pages),
/// 0 when it cannot be read.
fn rss_bytes() -> u64 {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return 0;
    }
    // SAFETY: reads into `buf`, within its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return 0;
    }
    let resident_pages = buf[..n as usize]
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(mwrap_core::options::parse_decimal)
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    resident_pages * page
}

/// Takes one sample (on the endpoint's thread, whose allocations are not
/// recorded); a new peak of live bytes also keeps the top locations now.
pub fn sample() {
    let Some(record) = per_thread::current() else {
        return;
    };
    let cx = lock_cx(record);
    let (mut allocated, mut freed) = (0u64, 0u64);
    // (live bytes, id), largest first.
    let mut top = [(0u64, 0u32); PEAK_SITES];
    for id in 1..=SITES.site_count() {
        let Some(s) = SITES.snapshot(&cx, id) else {
            continue; // a stack site: its location sums it
        };
        allocated += s.total;
        freed += s.freed_bytes;
        if s.live_bytes > top[PEAK_SITES - 1].0 {
            let at = top.iter().position(|t| s.live_bytes > t.0).unwrap_or(0);
            top.copy_within(at..PEAK_SITES - 1, at + 1);
            top[at] = (s.live_bytes, id);
        }
    }
    let now = Sample {
        at_nanos: monotonic_nanos().saturating_sub(START_NANOS.load(Ordering::Relaxed)),
        rss_bytes: rss_bytes(),
        live_bytes: allocated.saturating_sub(freed),
    };
    RING.with(|ring| {
        ring.samples[ring.next] = now;
        ring.next = (ring.next + 1) % RING_SAMPLES;
        ring.len = (ring.len + 1).min(RING_SAMPLES);
    });
    let higher = PEAK.with(|peak| peak.sample.is_none_or(|p| now.live_bytes > p.live_bytes));
    if !higher {
        return;
    }
    // Named outside the lock (naming a native address may take a while).
    let mut sites = [NO_SITE; PEAK_SITES];
    let mut site_count = 0;
    let mut name = Vec::new();
    for &(live_bytes, id) in top.iter().take_while(|t| t.1 != 0) {
        name.clear();
        if let Some(key) = SITES.key(id) {
            let _ = read::name_key(key, SITES.files(), &Symbols, &mut name);
        }
        let kept = &mut sites[site_count];
        kept.name_len = name.len().min(NAME_BYTES);
        kept.name[..kept.name_len].copy_from_slice(&name[..kept.name_len]);
        kept.live_bytes = live_bytes;
        site_count += 1;
    }
    let unix = crate::config::unix_millis();
    PEAK.with(|peak| {
        peak.sample = Some(now);
        peak.unix_millis = unix;
        peak.sites = sites;
        peak.site_count = site_count;
    });
}

/// The ring's samples, oldest first.
pub fn samples() -> Vec<Sample> {
    let mut out = Vec::new();
    if out.try_reserve_exact(RING_SAMPLES).is_err() {
        return out;
    }
    RING.with(|ring| {
        let oldest = (ring.next + RING_SAMPLES - ring.len) % RING_SAMPLES;
        out.extend((0..ring.len).map(|i| ring.samples[(oldest + i) % RING_SAMPLES]));
    });
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// What the pages say about how samples are taken.
fn sampling_note() -> String {
    match INTERVAL_MS.load(Ordering::Relaxed) {
        0 => {
            "no samples: the preload's thread runs only with MWRAP=socket_dir or snapshot_interval"
                .to_string()
        }
        ms => format!(
            "sampled every {ms} ms (MWRAP=interval_ms); the last {RING_SAMPLES} samples are kept, \
             the oldest dropped first"
        ),
    }
}

/// One line of the chart: its class (for tests and styles), its legend,
/// its colour and its value in a sample.
type Series = (&'static str, &'static str, &'static str, fn(&Sample) -> u64);

const CHART_WIDTH: f64 = 800.0;
const CHART_HEIGHT: f64 = 300.0;
/// Room for the axes' labels: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (70.0, 20.0, 20.0, 45.0);
const RSS_COLOUR: &str = "#1f77b4";
const LIVE_COLOUR: &str = "#d62728";

/// `/timeline`'s body (between the page's start and end): the chart of
/// RSS and live bytes, then the last samples, newest first.
pub fn timeline_body() -> Vec<u8> {
    let samples = samples();
    let mut html = format!("<p>{}.</p>\n", sampling_note()).into_bytes();
    if samples.is_empty() {
        html.extend_from_slice(b"<p>No sample yet.</p>\n");
        return html;
    }
    let first = samples[0].at_nanos;
    let last = samples[samples.len() - 1].at_nanos;
    let span = (last - first).max(1);
    let top = samples
        .iter()
        .map(|s| s.rss_bytes.max(s.live_bytes))
        .max()
        .unwrap_or(0)
        .max(1 << 20);
    let (left, right, up, down) = MARGIN;
    let plot_w = CHART_WIDTH - left - right;
    let plot_h = CHART_HEIGHT - up - down;
    let x = |at: u64| left + (at - first) as f64 / span as f64 * plot_w;
    let y = |bytes: u64| up + plot_h - bytes as f64 / top as f64 * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\" \
         viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <line x1=\"{left}\" y1=\"{up}\" x2=\"{left}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n",
        b = up + plot_h,
        r = left + plot_w,
    );
    const TICKS: u64 = 4;
    for i in 0..=TICKS {
        let bytes = top * i / TICKS;
        let at = first + span * i / TICKS;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.1}</text>\n\
             <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.1}</text>\n",
            left - 6.0,
            y(bytes) + 4.0,
            mib(bytes),
            x(at),
            up + plot_h + 16.0,
            seconds(at),
        ));
    }
    svg.push_str(&format!(
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">MiB</text>\n\
         <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">seconds since start</text>\n",
        up + plot_h / 2.0,
        up + plot_h / 2.0,
        left + plot_w / 2.0,
        CHART_HEIGHT - 8.0,
    ));
    let series: [Series; 2] = [
        ("rss", "RSS", RSS_COLOUR, |s| s.rss_bytes),
        ("live", "live bytes", LIVE_COLOUR, |s| s.live_bytes),
    ];
    for (class, label, colour, value) in series {
        svg.push_str(&format!(
            "<polyline class=\"{class}\" fill=\"none\" stroke=\"{colour}\" points=\""
        ));
        for s in &samples {
            svg.push_str(&format!("{:.1},{:.1} ", x(s.at_nanos), y(value(s))));
        }
        svg.push_str("\"/>\n");
        for s in &samples {
            svg.push_str(&format!(
                "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{colour}\">\
                 <title>{:.2} s: {label} {:.2} MiB</title></circle>\n",
                x(s.at_nanos),
                y(value(s)),
                seconds(s.at_nanos),
                mib(value(s)),
            ));
        }
    }
    for (i, (_, label, colour, _)) in series.iter().enumerate() {
        let ly = up + 4.0 + 16.0 * i as f64;
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{ly:.1}\" width=\"12\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{label}</text>\n",
            left + 10.0,
            left + 28.0,
            ly + 5.0,
        ));
    }
    svg.push_str("</svg>\n");
    html.extend_from_slice(svg.as_bytes());
    html.extend_from_slice(
        b"<table>\n<tr><th>seconds since start</th><th>RSS (MiB)</th><th>live (MiB)</th>\
          <th>RSS (bytes)</th><th>live bytes</th></tr>\n",
    );
    for s in samples.iter().rev().take(TABLE_ROWS) {
        html.extend_from_slice(
            format!(
                "<tr><td>{:.3}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>\n",
                seconds(s.at_nanos),
                mib(s.rss_bytes),
                mib(s.live_bytes),
                s.rss_bytes,
                s.live_bytes
            )
            .as_bytes(),
        );
    }
    html.extend_from_slice(b"</table>\n");
    html
}

/// `/peak`'s body: the highest live bytes sampled, when, and the top
/// locations then.
pub fn peak_body() -> Vec<u8> {
    let peak = PEAK.with(|peak| *peak);
    let mut html = format!(
        "<p>The highest live bytes <em>as sampled</em>: {}. Between two samples a higher peak \
         can be missed (tracking it exactly would cost every allocation).</p>\n",
        sampling_note()
    )
    .into_bytes();
    let Some(sample) = peak.sample else {
        html.extend_from_slice(b"<p>No sample yet.</p>\n");
        return html;
    };
    html.extend_from_slice(
        format!(
            "<table>\n<tr><th>live bytes</th><td>{} ({:.2} MiB)</td></tr>\n\
             <tr><th>RSS then</th><td>{} ({:.2} MiB)</td></tr>\n\
             <tr><th>seconds since start</th><td>{:.3}</td></tr>\n\
             <tr><th>wall time</th><td>{}</td></tr>\n</table>\n\
             <h2>top {} locations by live bytes then</h2>\n\
             <table>\n<tr><th>live bytes</th><th>location</th></tr>\n",
            sample.live_bytes,
            mib(sample.live_bytes),
            sample.rss_bytes,
            mib(sample.rss_bytes),
            seconds(sample.at_nanos),
            utc(peak.unix_millis),
            PEAK_SITES,
        )
        .as_bytes(),
    );
    for site in &peak.sites[..peak.site_count] {
        html.extend_from_slice(format!("<tr><td>{}</td><td>", site.live_bytes).as_bytes());
        html_escape(&mut html, &site.name[..site.name_len]);
        html.extend_from_slice(b"</td></tr>\n");
    }
    html.extend_from_slice(b"</table>\n");
    html
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC` of milliseconds since the Unix epoch.
fn utc(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let days = (secs / 86_400) as i64;
    let day_secs = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        unix_millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_of_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(951_782_400_123), "2000-02-29 00:00:00.123 UTC");
        assert_eq!(utc(1_796_225_514_000), "2026-12-02 15:31:54.000 UTC");
    }

    #[test]
    fn statm_gives_a_resident_size() {
        assert!(rss_bytes() > 0);
    }
}
