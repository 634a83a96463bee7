//! Location names given back by users (`Mwrap[name]`, the Rack app's
//! `/at/` page): the strings `each` and `dump` print, escaped, or the raw
//! name a user typed. Everything else crosses the ABI as ids and keys.

use crate::format::unescape;
use crate::key::{NO_MEMORY_NAME, OVERFLOW_NAME};

/// One reading of a user-given name, to be looked up in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// A Ruby location: the raw file name and the line.
    Ruby { file: Vec<u8>, line: u32 },
    /// A native return address.
    Native { address: usize },
    /// The overflow bucket.
    Overflow,
    /// The no-memory bucket.
    NoMemory,
}

/// Every location `name` may stand for, most likely first:
///
/// 1. a bucket's exact name;
/// 2. `FILE:LINE` (the last colon splits), FILE unescaped (as printed)
///    and then as given, so a Ruby file named `0x1.rb` or `x[0x2].rb` is
///    found as the Ruby file it is;
/// 3. an address in `[0xADDR]` (a native name as `backtrace_symbols`
///    prints it), then a bare `0xADDR`.
pub fn candidates(name: &[u8]) -> Vec<Candidate> {
    let mut out = Vec::new();
    if name == OVERFLOW_NAME {
        out.push(Candidate::Overflow);
    }
    if name == NO_MEMORY_NAME {
        out.push(Candidate::NoMemory);
    }
    if let Some((file, line)) = split_line(name) {
        if let Some(raw) = unescape(file) {
            if raw != file {
                out.push(Candidate::Ruby { file: raw, line });
            }
        }
        out.push(Candidate::Ruby {
            file: file.to_vec(),
            line,
        });
    }
    if let Some(start) = find(name, b"[0x") {
        let rest = &name[start + 3..];
        if let Some(address) = rest
            .iter()
            .position(|&b| b == b']')
            .and_then(|end| parse_hex(&rest[..end]))
        {
            out.push(Candidate::Native { address });
        }
    }
    if let Some(address) = name.strip_prefix(b"0x").and_then(parse_hex) {
        out.push(Candidate::Native { address });
    }
    out
}

/// `FILE:LINE` split at the last colon, with a non-empty FILE.
fn split_line(name: &[u8]) -> Option<(&[u8], u32)> {
    let colon = name.iter().rposition(|&b| b == b':')?;
    let line = crate::options::parse_decimal(&name[colon + 1..])?;
    if colon == 0 || line > u32::MAX as u64 {
        return None;
    }
    Some((&name[..colon], line as u32))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut n: usize = 0;
    for &b in s {
        let d = (b as char).to_digit(16)? as usize;
        n = (n << 4) | d;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruby(file: &[u8], line: u32) -> Candidate {
        Candidate::Ruby {
            file: file.to_vec(),
            line,
        }
    }

    fn native(address: usize) -> Candidate {
        Candidate::Native { address }
    }

    #[test]
    fn the_decision_table() {
        let table: &[(&[u8], Vec<Candidate>)] = &[
            (b"/app/x.rb:12", vec![ruby(b"/app/x.rb", 12)]),
            (b"C:/x.rb:3", vec![ruby(b"C:/x.rb", 3)]),
            // an escaped name stands for its raw bytes first
            (
                b"a\\nb.rb:1",
                vec![ruby(b"a\nb.rb", 1), ruby(b"a\\nb.rb", 1)],
            ),
            // a backslash that is no escape is kept as typed
            (b"a\\q.rb:1", vec![ruby(b"a\\q.rb", 1)]),
            // Ruby files that look like addresses are Ruby files first
            (b"0x1f.rb:4", vec![ruby(b"0x1f.rb", 4)]),
            (b"x[0x2].rb:5", vec![ruby(b"x[0x2].rb", 5), native(2)]),
            // native names
            (
                b"/lib/libc.so.6(malloc+0x1c) [0x7f00aa]",
                vec![native(0x7f00aa)],
            ),
            (b"[0xdeadBEEF]", vec![native(0xdead_beef)]),
            (b"0x1234", vec![native(0x1234)]),
            (
                b"lib.so(+0x9a) [0x7f:1",
                vec![ruby(b"lib.so(+0x9a) [0x7f", 1)],
            ),
            (b"lib.so(+0x9a) [0x7f:1]", vec![]),
            // buckets
            (OVERFLOW_NAME, vec![Candidate::Overflow]),
            (NO_MEMORY_NAME, vec![Candidate::NoMemory]),
            // nothing
            (b"x.rb", vec![]),
            (b":3", vec![]),
            (b"x.rb:-1", vec![]),
            (b"x.rb:99999999999", vec![]),
            (b"[0xzz]", vec![]),
            (b"0x", vec![]),
            (b"", vec![]),
        ];
        for (name, want) in table {
            assert_eq!(&candidates(name), want, "{}", String::from_utf8_lossy(name));
        }
    }
}
