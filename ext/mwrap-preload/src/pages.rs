//! The pages of the per-process endpoint (`MWRAP=socket_dir`), rendered
//! in Rust from the tables with no Ruby call, so a page answers while a
//! Ruby thread spins holding the GVL. The server (`server`) parses the
//! request and hands it here; a page writes its head once, then its body
//! in pieces, so no page needs the whole of a large table in memory at
//! once.
//!
//! Runs on the server's thread, whose allocations are never recorded.

use mwrap_core::abi::{RENDER_FOLDED, RENDER_JSON, RENDER_TEXT};
use mwrap_core::render::LineSink;

use crate::per_thread::{self, lock_cx};
use crate::query::{render_format, DumpExtras};

/// One request, as the server parsed it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a [u8],
    /// The path, percent-encoded as sent, without the query.
    pub path: &'a [u8],
    /// What follows `?`, or empty.
    pub query: &'a [u8],
}

/// Where a page writes its answer: its head once, then its body.
pub trait Respond {
    fn head(&mut self, status: u16, content_type: &str, extra: &[(&str, &str)]);
    fn body(&mut self, bytes: &[u8]);
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Answers `req`.
pub fn respond(req: &Request<'_>, out: &mut impl Respond) {
    let get = req.method == b"GET" || req.method == b"HEAD";
    match req.path {
        b"/json" | b"/folded" | b"/dump" if get => {
            let (format, content_type) = match req.path {
                b"/json" => (RENDER_JSON, JSON),
                b"/folded" => (RENDER_FOLDED, TEXT),
                _ => (RENDER_TEXT, TEXT),
            };
            out.head(200, content_type, &[]);
            rendered(format, out);
        }
        b"/heap.pb.gz" if get => heap_pprof(out),
        b"/json" | b"/folded" | b"/dump" | b"/heap.pb.gz" => not_allowed(out, "GET, HEAD"),
        _ => {
            out.head(404, TEXT, &[]);
            out.body(b"not found: ");
            out.body(req.path);
            out.body(b"\n");
        }
    }
}

fn not_allowed(out: &mut impl Respond, allow: &str) {
    out.head(405, TEXT, &[("allow", allow)]);
    out.body(b"method not allowed\n");
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
        let mut out = Recorded::default();
        respond(
            &Request {
                method,
                path,
                query: b"",
            },
            &mut out,
        );
        out
    }

    #[test]
    fn unknown_paths_and_methods() {
        let r = get(b"GET", b"/nope");
        assert_eq!((r.status, &r.body[..]), (404, &b"not found: /nope\n"[..]));
        let r = get(b"POST", b"/json");
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow".into(), "GET, HEAD".into())));
        assert_eq!(get(b"PUT", b"/heap.pb.gz").status, 405);
    }
}
