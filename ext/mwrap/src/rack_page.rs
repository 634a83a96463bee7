//! `Mwrap.render_page(method, path, query, base)`: one page of the
//! endpoint (`MWRAP=socket_dir`), rendered by the preload from its tables,
//! for `Mwrap::RackApp`, so that the Rack app serves the same pages, with
//! the same paging, as the endpoint (and does not build them in Ruby).

use magnus::{function, prelude::*, Error, RArray, RHash, RString, Ruby};

use crate::args::{no_memory, string_arg};
use crate::preload;

pub fn init(ruby: &Ruby) -> Result<(), Error> {
    let module = ruby.define_module("Mwrap")?;
    module.define_module_function("render_page", function!(render_page, 4))?;
    Ok(())
}

/// `[status, headers, body]` (headers a Hash of lowercase names, body a
/// String, UTF-8 for a text page, binary otherwise), or nil without the
/// preload.
fn render_page(
    ruby: &Ruby,
    method: magnus::Value,
    path: magnus::Value,
    query: magnus::Value,
    base: magnus::Value,
) -> Result<Option<RArray>, Error> {
    let copy = |what: &str, v: magnus::Value| -> Result<Vec<u8>, Error> {
        let s = string_arg(ruby, what, v)?;
        // SAFETY: copied before any Ruby code can run.
        Ok(unsafe { s.as_slice() }.to_vec())
    };
    let (method, path, query, base) = (
        copy("method", method)?,
        copy("path", path)?,
        copy("query", query)?,
        copy("base", base)?,
    );
    let Some(preload) = preload::get() else {
        return Ok(None);
    };
    let page = preload
        .render_page(&method, &path, &query, &base)
        .map_err(|_| no_memory(ruby, "Mwrap.render_page"))?;
    let headers = RHash::new();
    headers.aset("content-type", ruby.str_from_slice(&page.content_type))?;
    for line in page
        .headers
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
    {
        if let Some(colon) = line.iter().position(|&c| c == b':') {
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            headers.aset(
                ruby.str_from_slice(&line[..colon]),
                ruby.str_from_slice(value),
            )?;
        }
    }
    let body = RString::from_slice(&page.body);
    if page.content_type.ends_with(b"charset=utf-8") {
        let _: magnus::Value = body.funcall("force_encoding", ("UTF-8",))?;
    }
    let out = ruby.ary_new_capa(3);
    out.push(page.status)?;
    out.push(headers)?;
    out.push(body)?;
    Ok(Some(out))
}
