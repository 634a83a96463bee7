//! What the endpoint's pages need of the web: HTML escaping, and the
//! percent-encoding of paths and queries (the `percent-encoding` crate).

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Appends `text` escaped for HTML text and attribute values. Names are
/// bytes: those that are not UTF-8 are shown with U+FFFD.
pub fn html_escape(out: &mut Vec<u8>, text: &[u8]) {
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '&' => out.extend_from_slice(b"&amp;"),
                '<' => out.extend_from_slice(b"&lt;"),
                '>' => out.extend_from_slice(b"&gt;"),
                '"' => out.extend_from_slice(b"&quot;"),
                '\'' => out.extend_from_slice(b"&#39;"),
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

/// Every byte but `A-Z a-z 0-9 - . _ ~` is encoded, `/` too: one path
/// segment (as Ruby's `ERB::Util.url_encode`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends `bytes` percent-encoded as one path segment or query value.
pub fn percent_encode(out: &mut Vec<u8>, bytes: &[u8]) {
    // Bytes that are not UTF-8 are encoded byte by byte all the same.
    for chunk in bytes.utf8_chunks() {
        for piece in utf8_percent_encode(chunk.valid(), SEGMENT) {
            out.extend_from_slice(piece.as_bytes());
        }
        for &b in chunk.invalid() {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// Percent-decodes `bytes` (a `%` not followed by two hex digits stays).
pub fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    percent_decode(bytes).collect()
}

/// The value of `name` in a query string (`a=1&b=2`, `+` a space), the
/// last one when it is repeated.
pub fn query_value(query: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    query.split(|&c| c == b'&').rev().find_map(|pair| {
        let mut kv = pair.splitn(2, |&c| c == b'=');
        let key = kv.next()?;
        let value = kv.next().unwrap_or(b"");
        let plus = |b: &[u8]| -> Vec<u8> {
            b.iter()
                .map(|&c| if c == b'+' { b' ' } else { c })
                .collect()
        };
        (percent_decoded(&plus(key)) == name).then(|| percent_decoded(&plus(value)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html_and_replaces_bytes_that_are_not_utf8() {
        let mut out = Vec::new();
        html_escape(&mut out, b"a<b>&\"c'\xff.rb");
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&#39;\u{fffd}.rb".as_bytes());
    }

    #[test]
    fn percent_round_trip_of_a_location() {
        let name = b"/app/a b+c%/\xff.rb:12";
        let mut out = Vec::new();
        percent_encode(&mut out, name);
        assert_eq!(out, b"%2Fapp%2Fa%20b%2Bc%25%2F%FF.rb%3A12");
        assert_eq!(percent_decoded(&out), name);
        assert_eq!(percent_decoded(b"100%-x%4"), b"100%-x%4");
    }

    #[test]
    fn query_values() {
        let q = b"min=10&sort=live_bytes&min=20&x&name=a+b%2Bc";
        assert_eq!(query_value(q, b"min"), Some(b"20".to_vec()));
        assert_eq!(query_value(q, b"sort"), Some(b"live_bytes".to_vec()));
        assert_eq!(query_value(q, b"x"), Some(Vec::new()));
        assert_eq!(query_value(q, b"name"), Some(b"a b+c".to_vec()));
        assert_eq!(query_value(q, b"none"), None);
        assert_eq!(query_value(b"", b"min"), None);
    }
}
