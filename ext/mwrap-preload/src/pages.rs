//! The pages of the per-process endpoint (`MWRAP=socket_dir`), rendered
//! in Rust from the tables with no Ruby call, so a page answers while a
//! Ruby thread spins holding the GVL. The server (`server`) parses the
//! request and hands it here; a page writes its head once, then its body
//! in pieces, so no page needs the whole of a large table in memory at
//! once.
//!
//! Runs on the server's thread, whose allocations are never recorded.

use core::sync::atomic::Ordering;

use mwrap_core::abi::{RENDER_FOLDED, RENDER_JSON, RENDER_TEXT};
use mwrap_core::lock::LockCx;
use mwrap_core::page::{Candidate, Column, PagePicker};
use mwrap_core::read;
use mwrap_core::render::LineSink;
use mwrap_core::web::{html_escape, percent_decoded, percent_encode, query_value};

use crate::formats::{render_format, DumpExtras};
use crate::names::Symbols;
use crate::per_thread::{self, lock_cx};
use crate::state::{MARK, MARKED_AT, SITES, STACKS};

/// One request, as the server parsed it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a [u8],
    /// The path, percent-encoded as sent, without the query.
    pub path: &'a [u8],
    /// What follows `?`, or empty.
    pub query: &'a [u8],
    /// Put before every link (a Rack mount point such as `/mwrap`), or
    /// empty (the endpoint).
    pub base: &'a [u8],
}

/// Where a page writes its answer: its head once, then its body.
pub trait Respond {
    fn head(&mut self, status: u16, content_type: &str, extra: &[(&str, &str)]);
    fn body(&mut self, bytes: &[u8]);
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
const TSV: &str = "text/tab-separated-values; charset=utf-8";

/// Answers `req`.
pub fn respond(req: &Request<'_>, out: &mut impl Respond) {
    let get = req.method == b"GET" || req.method == b"HEAD";
    let post = req.method == b"POST";
    match req.path {
        b"/" | b"" if get => index(req.base, out),
        b"/each" if get => each(req.base, req.query, out),
        b"/json" | b"/folded" | b"/dump" if get => {
            let (format, content_type) = match req.path {
                b"/json" => (RENDER_JSON, JSON),
                b"/folded" => (RENDER_FOLDED, TEXT),
                _ => (RENDER_TEXT, TEXT),
            };
            out.head(200, content_type, &[]);
            rendered(format, out);
        }
        b"/mark" if post => mark(out),
        b"/reset" if post => reset(out),
        b"/mark" | b"/reset" => not_allowed(out, "POST"),
        b"/" | b"" | b"/each" | b"/json" | b"/folded" | b"/dump" => not_allowed(out, "GET, HEAD"),
        path if path.starts_with(b"/at/") && get => at(req.base, &path[4..], out),
        path if path.starts_with(b"/at/") => not_allowed(out, "GET, HEAD"),
        b"/timeline" | b"/peak" if get => {
            let (title, body) = match req.path {
                b"/timeline" => (
                    "RSS and live bytes over time",
                    crate::timeline::timeline_body(),
                ),
                _ => ("peak of live bytes", crate::timeline::peak_body()),
            };
            out.head(200, HTML, &[]);
            out.body(&page_start(title));
            out.body(&body);
            out.body(PAGE_END);
        }
        b"/timeline" | b"/peak" => not_allowed(out, "GET, HEAD"),
        b"/heap.pb.gz" if get => heap_pprof(out),
        b"/heap.pb.gz" => not_allowed(out, "GET, HEAD"),
        b"/breakdown" if get => breakdown_page(out),
        b"/leaks" if get => leaks_page(req.base, req.query, out),
        b"/breakdown" | b"/leaks" => not_allowed(out, "GET, HEAD"),
        _ => {
            let mut msg = b"not found: ".to_vec();
            msg.extend_from_slice(req.path);
            error(req.base, out, 404, &msg);
        }
    }
}

fn not_allowed(out: &mut impl Respond, allow: &str) {
    let msg = format!("method not allowed (only {allow})");
    out.head(405, HTML, &[("allow", allow)]);
    out.body(&page_start(&msg));
    out.body(PAGE_END);
}

/// An error page naming the problem.
fn error(base: &[u8], out: &mut impl Respond, status: u16, message: &[u8]) {
    out.head(status, HTML, &[]);
    let mut html = page_start_bytes(message);
    html.extend_from_slice(b"<p><a href=\"");
    html_escape(&mut html, base);
    html.extend_from_slice(b"/\">index</a></p>\n");
    out.body(&html);
    out.body(PAGE_END);
}

const PAGE_END: &[u8] = b"</body></html>\n";

fn page_start(title: &str) -> Vec<u8> {
    page_start_bytes(title.as_bytes())
}

fn page_start_bytes(title: &[u8]) -> Vec<u8> {
    let mut html = b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>".to_vec();
    html_escape(&mut html, title);
    html.extend_from_slice(
        b"</title><style>table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}\
          td:last-child,th:last-child{text-align:left}</style></head>\n<body><h1>",
    );
    html_escape(&mut html, title);
    html.extend_from_slice(b"</h1>\n");
    html
}

/// Runs `f` with this thread's lock context (the server's thread has a
/// record: it is busy for life, so what a page allocates is untracked).
fn with_cx<R>(f: impl FnOnce(&LockCx<'static>) -> R) -> Option<R> {
    per_thread::current().map(|record| f(&lock_cx(record)))
}

fn index(base: &[u8], out: &mut impl Respond) {
    let mut html = page_start("mwrap");
    let pid = std::process::id();
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let cmdline: Vec<u8> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(&cmdline)
        .iter()
        .map(|&c| if c == 0 { b' ' } else { c })
        .collect();
    let totals = with_cx(|cx| mwrap_core::read::totals(&SITES, cx)).unwrap_or_default();
    let rss = mwrap_memory::maps::rollup().map(|r| r.rss);
    html.extend_from_slice(b"<table>\n");
    let mut row = |key: &str, value: &[u8]| {
        html.extend_from_slice(b"<tr><th>");
        html.extend_from_slice(key.as_bytes());
        html.extend_from_slice(b"</th><td>");
        html_escape(&mut html, value);
        html.extend_from_slice(b"</td></tr>\n");
    };
    row("pid", pid.to_string().as_bytes());
    row("command", &cmdline);
    row(
        "uptime",
        uptime_seconds()
            .map_or("unknown".into(), |s| format!("{s:.1} s"))
            .as_bytes(),
    );
    row(
        "rss",
        rss.map_or("unknown".into(), |r| r.to_string()).as_bytes(),
    );
    row("allocated", totals.allocated.to_string().as_bytes());
    row("freed", totals.freed.to_string().as_bytes());
    row(
        "live",
        totals
            .allocated
            .saturating_sub(totals.freed)
            .to_string()
            .as_bytes(),
    );
    row("locations", SITES.site_count().to_string().as_bytes());
    html.extend_from_slice(b"</table>\n<ul>\n");
    let mut b = Vec::new();
    html_escape(&mut b, base);
    let b = String::from_utf8_lossy(&b);
    html.extend_from_slice(
        format!(
            "<li><a href=\"{b}/each\">locations by live bytes</a></li>\n\
             <li><a href=\"{b}/each?sort=total\">locations by total</a></li>\n\
             <li><a href=\"{b}/timeline\">/timeline</a>: RSS and live bytes over time</li>\n\
             <li><a href=\"{b}/peak\">/peak</a>: the peak of live bytes sampled, and its top locations</li>\n\
             <li><a href=\"{b}/json\">/json</a>: the whole state (the JSON dump)</li>\n\
             <li><a href=\"{b}/folded\">/folded</a>: folded stacks of live bytes</li>\n\
             <li><a href=\"{b}/dump\">/dump</a>: the 2.x text dump</li>\n\
             <li><a href=\"{b}/breakdown\">/breakdown</a>: where the resident memory is</li>\n\
             <li><a href=\"{b}/leaks\">/leaks</a>: leaked memory (runs a leak scan: copies the process)</li>\n</ul>\n\
             <form method=\"post\" action=\"{b}/mark\"><button type=\"submit\">mark (baseline of the growth column)</button></form>\n\
             <form method=\"post\" action=\"{b}/reset\"><button type=\"submit\">reset (Mwrap.reset)</button></form>\n"
        )
        .as_bytes(),
    );
    out.head(200, HTML, &[]);
    out.body(&html);
    out.body(PAGE_END);
}

/// Seconds since this process started (`/proc/self/stat`'s start time
/// against `/proc/uptime`).
fn uptime_seconds() -> Option<f64> {
    let stat = std::fs::read("/proc/self/stat").ok()?;
    // After the command's ")": field 3 onwards; start time is field 22.
    let rest = &stat[stat.iter().rposition(|&c| c == b')')? + 2..];
    let start: f64 = std::str::from_utf8(rest.split(|&c| c == b' ').nth(19)?)
        .ok()?
        .parse()
        .ok()?;
    let up = std::fs::read_to_string("/proc/uptime").ok()?;
    let up: f64 = up.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| up - start / ticks as f64)
}

/// Rows per page of `/each` unless `limit` says otherwise, and the most
/// it may say.
const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 10_000;

/// A number from the query, `default` when absent, or the error page's
/// message.
fn number(query: &[u8], name: &str, default: u64, max: u64) -> Result<u64, Vec<u8>> {
    let Some(text) = query_value(query, name.as_bytes()) else {
        return Ok(default);
    };
    match std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
    {
        Some(n) if n <= max => Ok(n),
        _ => {
            let mut msg = format!("bad {name} ").into_bytes();
            msg.push(b'"');
            msg.extend_from_slice(&text);
            msg.extend_from_slice(format!("\": expected an integer from 0 to {max}").as_bytes());
            Err(msg)
        }
    }
}

/// `/each?min=&sort=&limit=&offset=`: the locations whose total is above
/// `min`, sorted by `sort` (default `live_bytes`), `limit` rows (default
/// 200) from `offset`.
fn each(base: &[u8], query: &[u8], out: &mut impl Respond) {
    let params = (|| {
        let min = number(query, "min", 0, u64::MAX)?;
        let limit = number(query, "limit", DEFAULT_LIMIT as u64, MAX_LIMIT as u64)? as usize;
        let offset = number(query, "offset", 0, u32::MAX as u64)? as usize;
        let sort = match query_value(query, b"sort") {
            None => Column::LiveBytes,
            Some(name) => Column::from_name(&name).ok_or_else(|| {
                let mut msg = b"bad sort column \"".to_vec();
                msg.extend_from_slice(&name);
                msg.extend_from_slice(b"\": expected one of ");
                let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
                msg.extend_from_slice(names.join(", ").as_bytes());
                msg
            })?,
        };
        Ok::<_, Vec<u8>>((min, limit, offset, sort))
    })();
    let (min, limit, offset, sort) = match params {
        Ok(p) => p,
        Err(msg) => return error(base, out, 400, &msg),
    };
    let marked = MARKED_AT.load(Ordering::Acquire) != 0;
    let picked = with_cx(|cx| {
        let mut picker = PagePicker::new(sort, offset, limit);
        for id in 1..=SITES.site_count() {
            let Some(snapshot) = SITES.snapshot(cx, id) else {
                continue; // a stack site: its location sums it
            };
            if snapshot.total <= min {
                continue;
            }
            let growth = marked.then(|| {
                let then = MARK
                    .get(id as usize)
                    .map_or(0, |m| m.load(Ordering::Relaxed));
                snapshot.live_bytes as i64 - then as i64
            });
            let mut name = Vec::new();
            if sort == Column::Location {
                if let Some(key) = SITES.key(id) {
                    let _ = read::name_key(key, SITES.files(), &Symbols, &mut name);
                }
            }
            picker.offer(Candidate {
                id,
                snapshot,
                growth,
                temporary: crate::state::temporary_of(id),
                name,
            });
        }
        let total = picker.offered;
        (picker.rows(), total)
    });
    let Some((rows, table_size)) = picked else {
        return error(base, out, 500, b"this thread has no record");
    };
    if query_value(query, b"format").as_deref() == Some(b"tsv") {
        return each_tsv(&rows, table_size, out);
    }
    out.head(200, HTML, &[]);
    let mut html = page_start(&format!("locations above {min} bytes, by {}", sort.name()));
    html.extend_from_slice(
        format!(
            "<p>{table_size} locations with a total above {min} bytes; rows {}\u{2013}{} by {}. \
             GC generation {}. {}</p>\n",
            (offset + 1).min(table_size),
            (offset + rows.len()).min(table_size),
            sort.name(),
            crate::state::current_generation(),
            if marked {
                "growth: live bytes since the mark."
            } else {
                "growth: no mark yet (POST /mark)."
            }
        )
        .as_bytes(),
    );
    let link = |html: &mut Vec<u8>, sort: Column, offset: usize, text: &str| {
        html.extend_from_slice(b"<a href=\"");
        html_escape(html, base);
        html.extend_from_slice(
            format!(
                "/each?min={min}&amp;sort={}&amp;limit={limit}&amp;offset={offset}\">{text}</a>",
                sort.name()
            )
            .as_bytes(),
        );
    };
    html.extend_from_slice(b"<p>");
    if offset > 0 {
        link(
            &mut html,
            sort,
            offset.saturating_sub(limit),
            "previous page",
        );
        html.extend_from_slice(b" ");
    }
    if offset + rows.len() < table_size {
        link(&mut html, sort, offset + limit, "next page");
    }
    html.extend_from_slice(b" <a href=\"");
    html_escape(&mut html, base);
    html.extend_from_slice(b"/\">index</a></p>\n<table>\n<tr>");
    for c in Column::ALL {
        html.extend_from_slice(b"<th>");
        if c == sort {
            html.extend_from_slice(c.name().as_bytes());
        } else {
            link(&mut html, c, 0, c.name());
        }
        html.extend_from_slice(b"</th>");
    }
    html.extend_from_slice(b"</tr>\n");
    out.body(&html);
    // Rows in pieces: names only for the rows shown.
    for row in &rows {
        html.clear();
        let s = &row.snapshot;
        html.extend_from_slice(b"<tr>");
        for value in [s.total, s.allocations, s.frees, s.live_bytes, s.live_count] {
            html.extend_from_slice(format!("<td>{value}</td>").as_bytes());
        }
        match row.growth {
            Some(g) => html.extend_from_slice(format!("<td>{g}</td>").as_bytes()),
            None => html.extend_from_slice(b"<td>-</td>"),
        }
        let life = row.mean_life();
        html.extend_from_slice(
            if life.is_finite() {
                format!("<td>{life:.3}</td><td>{}</td>", s.max_lifespan)
            } else {
                format!("<td>Infinity</td><td>{}</td>", s.max_lifespan)
            }
            .as_bytes(),
        );
        html.extend_from_slice(format!("<td>{}</td>", row.temporary).as_bytes());
        let mut name = row.name.clone();
        if name.is_empty() {
            if let Some(key) = SITES.key(row.id) {
                let _ = read::name_key(key, SITES.files(), &Symbols, &mut name);
            }
        }
        html.extend_from_slice(b"<td><a href=\"");
        html_escape(&mut html, base);
        html.extend_from_slice(b"/at/");
        percent_encode(&mut html, &name);
        html.extend_from_slice(b"\">");
        html_escape(&mut html, &name);
        html.extend_from_slice(b"</a></td></tr>\n");
        out.body(&html);
    }
    out.body(b"</table>\n");
    out.body(PAGE_END);
}

/// `/each?format=tsv`: the same rows as tab-separated text for programs
/// (`mwrapctl top`): a `#` line with the table's size, a header line, a
/// line per row; names as every output prints them (no tab or newline).
fn each_tsv(rows: &[Candidate], table_size: usize, out: &mut impl Respond) {
    out.head(200, TSV, &[]);
    let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
    out.body(format!("# {table_size} locations\n{}\n", names.join("\t")).as_bytes());
    let mut line = Vec::new();
    for row in rows {
        line.clear();
        let s = &row.snapshot;
        let growth = row.growth.map_or("-".to_string(), |g| g.to_string());
        let life = row.mean_life();
        let life = if life.is_finite() {
            format!("{life:.3}")
        } else {
            "Infinity".to_string()
        };
        line.extend_from_slice(
            format!(
                "{}\t{}\t{}\t{}\t{}\t{growth}\t{life}\t{}\t{}\t",
                s.total,
                s.allocations,
                s.frees,
                s.live_bytes,
                s.live_count,
                s.max_lifespan,
                row.temporary
            )
            .as_bytes(),
        );
        if row.name.is_empty() {
            if let Some(key) = SITES.key(row.id) {
                let _ = read::name_key(key, SITES.files(), &Symbols, &mut line);
            }
        } else {
            line.extend_from_slice(&row.name);
        }
        line.push(b'\n');
        out.body(&line);
    }
}

/// `/at/LOCATION`: one location's counters, its live allocations by the
/// GC generation they were born in, and its stacks if recorded.
fn at(base: &[u8], encoded: &[u8], out: &mut impl Respond) {
    let name = percent_decoded(encoded);
    let found = with_cx(|cx| {
        let id = read::lookup(&SITES, cx, &name)?;
        let snapshot = SITES.snapshot(cx, id)?;
        let mut by_generation: Vec<(u64, u64, u64)> = Vec::new(); // generation, count, bytes
        let mut live = Vec::new();
        let _ = SITES.live(cx, id, crate::state::current_generation(), &mut live);
        live.sort_unstable_by_key(|l| l.generation);
        for l in &live {
            match by_generation.last_mut() {
                Some(g) if g.0 == l.generation => {
                    g.1 += 1;
                    g.2 += l.size;
                }
                _ => by_generation.push((l.generation, 1, l.size)),
            }
        }
        drop(live);
        let stacks = read::stacks(
            &SITES,
            &STACKS,
            cx,
            &mwrap_core::abi::SiteFilter::default(),
            Some(id),
            &Symbols,
        )
        .ok();
        let mut printed = Vec::new();
        let _ = read::name_key(SITES.key(id)?, SITES.files(), &Symbols, &mut printed);
        Some((printed, snapshot, by_generation, stacks))
    })
    .flatten();
    let Some((printed, s, by_generation, stacks)) = found else {
        let mut msg = b"no allocation was ever made at ".to_vec();
        msg.extend_from_slice(&name);
        return error(base, out, 404, &msg);
    };
    out.head(200, HTML, &[]);
    let mut title = b"live allocations at ".to_vec();
    title.extend_from_slice(&printed);
    let mut html = page_start_bytes(&title);
    html.extend_from_slice(b"<p><a href=\"");
    html_escape(&mut html, base);
    html.extend_from_slice(b"/each\">every location</a></p>\n<table>\n");
    for (k, v) in [
        ("total", s.total),
        ("allocations", s.allocations),
        ("frees", s.frees),
        ("live_bytes", s.live_bytes),
        ("live_count", s.live_count),
    ] {
        html.extend_from_slice(format!("<tr><th>{k}</th><td>{v}</td></tr>\n").as_bytes());
    }
    let mean = if s.frees == 0 {
        "Infinity".to_string()
    } else {
        format!("{:.3}", s.age_total as f64 / s.frees as f64)
    };
    html.extend_from_slice(
        format!(
            "<tr><th>mean_lifespan</th><td>{mean}</td></tr>\n\
             <tr><th>max_lifespan</th><td>{}</td></tr>\n",
            s.max_lifespan
        )
        .as_bytes(),
    );
    html.extend_from_slice(
        b"</table>\n<h2>live allocations by birth generation</h2>\n<table>\n\
          <tr><th>generation</th><th>count</th><th>bytes</th></tr>\n",
    );
    for (generation, count, bytes) in &by_generation {
        html.extend_from_slice(
            format!("<tr><td>{generation}</td><td>{count}</td><td>{bytes}</td></tr>\n").as_bytes(),
        );
    }
    html.extend_from_slice(b"</table>\n");
    out.body(&html);
    let Some(stacks) = stacks.filter(|st| {
        st.rows()
            .iter()
            .any(|r| r.ruby_frames + r.native_frames > 0)
    }) else {
        out.body(b"<p>No stacks recorded (MWRAP=bt:N, ruby_bt:N).</p>\n");
        out.body(PAGE_END);
        return;
    };
    out.body(
        b"<h2>stacks</h2>\n<table>\n<tr><th>total</th><th>allocations</th><th>live_bytes</th>\
          <th>live_count</th><th>frames, innermost first</th></tr>\n",
    );
    for r in stacks.rows() {
        html.clear();
        let s = &r.snapshot;
        html.extend_from_slice(
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
                s.total, s.allocations, s.live_bytes, s.live_count
            )
            .as_bytes(),
        );
        for (i, f) in stacks
            .ruby_frames(r)
            .chain(stacks.native_frames(r))
            .enumerate()
        {
            if i > 0 {
                html.extend_from_slice(b"<br>");
            }
            html_escape(&mut html, f);
        }
        html.extend_from_slice(b"</td></tr>\n");
        out.body(&html);
    }
    out.body(b"</table>\n");
    out.body(PAGE_END);
}

/// `/breakdown`: where the resident memory is, part by part (the report
/// of `Mwrap.memory_report`; `iseq` unknown: the endpoint never asks Ruby).
fn breakdown_page(out: &mut impl Respond) {
    let Some(b) = with_cx(|cx| crate::dump::measure_memory(cx)) else {
        return error(b"", out, 500, b"this thread has no record");
    };
    let report = mwrap_memory::breakdown::report(&b);
    let mut html = page_start("memory breakdown");
    html.extend_from_slice(b"<table>\n");
    // The report's columns are separated by two spaces or more.
    let row = |html: &mut Vec<u8>, line: &str, cell: &str| {
        html.extend_from_slice(b"<tr>");
        for text in line.split("  ").map(str::trim).filter(|c| !c.is_empty()) {
            html.extend_from_slice(format!("<{cell}>").as_bytes());
            html_escape(html, text.as_bytes());
            html.extend_from_slice(format!("</{cell}>").as_bytes());
        }
        html.extend_from_slice(b"</tr>\n");
    };
    let mut lines = report.lines();
    row(&mut html, lines.next().unwrap_or(""), "th");
    let mut advice = Vec::new();
    for line in lines {
        if line.starts_with("advice:") {
            advice.push(line);
        } else {
            row(&mut html, line, "td");
        }
    }
    html.extend_from_slice(b"</table>\n");
    for a in advice {
        html.extend_from_slice(b"<p>");
        html_escape(&mut html, a.as_bytes());
        html.extend_from_slice(b"</p>\n");
    }
    html.extend_from_slice(
        b"<p>Page-level parts are resident pages (smaps, mincore); the malloc parts are the \
          allocator's byte counts. Indented rows are part of another or for information.</p>\n",
    );
    out.head(200, HTML, &[]);
    out.body(&html);
    out.body(PAGE_END);
}

/// `/leaks?min=`: one leak scan (`Mwrap.leaks`) from the endpoint's
/// thread. It runs without the GVL: a GC or compaction that is under way
/// when the process is copied can make a block look anchored or leaked
/// (`Mwrap.leaks`, which copies with the GVL held, cannot).
fn leaks_page(base: &[u8], query: &[u8], out: &mut impl Respond) {
    let min = match number(query, "min", 0, u64::MAX) {
        Ok(n) => n,
        Err(msg) => return error(base, out, 400, &msg),
    };
    let report = match crate::leak_scan::scan(0) {
        Ok(r) => r,
        Err(e) => return error(base, out, 503, e.describe().as_bytes()),
    };
    let s = &report.summary;
    let mut html = page_start("leaked memory");
    html.extend_from_slice(
        format!(
            "<p>Leak scan: {} of {} live blocks ({} of {} bytes) are reached by no pointer; the \
             process stood still {:.1} ms for the copy, which scanned for {:.1} ms. Scanned \
             without the GVL: a GC under way at the copy can make a block look leaked \
             (Mwrap.leaks cannot).</p>\n<table>\n\
             <tr><th>leaked_bytes</th><th>leaked_count</th><th>location</th></tr>\n",
            s.leaked_blocks,
            s.blocks,
            s.leaked_bytes,
            s.bytes,
            s.pause_nanos as f64 / 1e6,
            s.scan_nanos as f64 / 1e6
        )
        .as_bytes(),
    );
    for line in report.lines.iter().filter(|l| l.bytes > min) {
        let name = report.name(line);
        html.extend_from_slice(
            format!(
                "<tr><td>{}</td><td>{}</td><td><a href=\"",
                line.bytes, line.count
            )
            .as_bytes(),
        );
        html_escape(&mut html, base);
        html.extend_from_slice(b"/at/");
        percent_encode(&mut html, name);
        html.extend_from_slice(b"\">");
        html_escape(&mut html, name);
        html.extend_from_slice(b"</a></td></tr>\n");
    }
    html.extend_from_slice(b"</table>\n");
    out.head(200, HTML, &[]);
    out.body(&html);
    out.body(PAGE_END);
}

/// `POST /mark`: every location's live bytes now become the baseline of
/// `/each`'s growth column.
fn mark(out: &mut impl Respond) {
    let marked = with_cx(|cx| {
        let mut n = 0u32;
        for id in 1..=SITES.site_count() {
            if let (Some(s), Some(slot)) = (SITES.snapshot(cx, id), MARK.get_or_map(id as usize)) {
                slot.store(s.live_bytes, Ordering::Relaxed);
                n += 1;
            }
        }
        MARKED_AT.store(crate::copy::monotonic_nanos().max(1), Ordering::Release);
        n
    });
    out.head(200, TEXT, &[]);
    out.body(format!("marked {} locations\n", marked.unwrap_or(0)).as_bytes());
}

/// `POST /reset`: `Mwrap.reset`.
fn reset(out: &mut impl Respond) {
    with_cx(|cx| SITES.reset(cx));
    crate::state::reset_temporary();
    crate::state::code_freed();
    out.head(200, TEXT, &[]);
    out.body(b"reset\n");
}

/// `/heap.pb.gz`: the heap as a gzip'd pprof profile, whole (gzip has
/// no lines to send in pieces).
fn heap_pprof(out: &mut impl Respond) {
    let bytes =
        per_thread::current().map(|record| crate::pprof_export::heap_profile(&lock_cx(record)));
    match bytes {
        Some(Ok(bytes)) => {
            out.head(
                200,
                "application/octet-stream",
                &[("content-disposition", "attachment; filename=\"heap.pb.gz\"")],
            );
            out.body(&bytes);
        }
        _ => {
            out.head(503, TEXT, &[]);
            out.body(b"mwrap: no memory to render the profile\n");
        }
    }
}

/// Lines of a renderer straight into the response.
struct BodyLines<'a, R: Respond>(&'a mut R);

impl<R: Respond> LineSink for BodyLines<'_, R> {
    fn line(&mut self, line: &[u8]) {
        self.0.body(line);
    }
}

/// A whole format (`RENDER_*`), as the exit dump renders it (JSON with
/// the memory breakdown of now).
fn rendered(format: u32, out: &mut impl Respond) {
    let done = per_thread::current().map(|record| {
        let cx = lock_cx(record);
        let memory = (format == RENDER_JSON).then(|| crate::dump::memory_breakdown(&cx));
        let extras = DumpExtras {
            leaks: None,
            memory: memory.as_ref().map(|rows| &rows[..]),
            pid: Some(std::process::id()),
        };
        render_format(&cx, format, 0, &extras, &mut BodyLines(out))
    });
    if !matches!(done, Some(Ok(()))) {
        out.body(b"\nmwrap: no memory to render the rest\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorded {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Respond for Recorded {
        fn head(&mut self, status: u16, content_type: &str, extra: &[(&str, &str)]) {
            self.status = status;
            self.headers
                .push(("content-type".into(), content_type.into()));
            self.headers
                .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }

        fn body(&mut self, bytes: &[u8]) {
            self.body.extend_from_slice(bytes);
        }
    }

    fn get(method: &[u8], path: &[u8]) -> Recorded {
        get_query(method, path, b"")
    }

    fn get_query(method: &[u8], path: &[u8], query: &[u8]) -> Recorded {
        let mut out = Recorded::default();
        respond(
            &Request {
                method,
                path,
                query,
                base: b"",
            },
            &mut out,
        );
        out
    }

    #[test]
    fn bad_each_parameters_name_the_problem() {
        let r = get_query(b"GET", b"/each", b"sort=nope");
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains(
            "bad sort column &quot;nope&quot;: expected one of total, allocations, frees, live_bytes"
        ));
        let r = get_query(b"GET", b"/each", b"limit=10001");
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body)
            .contains("bad limit &quot;10001&quot;: expected an integer from 0 to 10000"));
        let r = get_query(b"GET", b"/each", b"min=-1");
        assert_eq!(r.status, 400);
    }

    #[test]
    fn unknown_paths_and_methods() {
        let r = get(b"GET", b"/nope");
        assert_eq!(r.status, 404);
        assert!(String::from_utf8_lossy(&r.body).contains("<h1>not found: /nope</h1>"));
        let r = get(b"POST", b"/json");
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow".into(), "GET, HEAD".into())));
        let r = get(b"GET", b"/mark");
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow".into(), "POST".into())));
        assert_eq!(get(b"PUT", b"/heap.pb.gz").status, 405);
    }
}
