//! Parsing of location names given back by users (`Mwrap[loc]`): the exact
//! strings `each` and `dump` print.

use crate::key::KeyRef;

/// The key a printed location names, or None when it names nothing we could
/// have printed.
///
/// - any string holding `[0xADDR]` (a native name as `backtrace_symbols`
///   prints it) is that address;
/// - else a bare `0xADDR` is that address;
/// - else `FILE:LINE` is a Ruby location (the last colon splits).
pub fn parse_location(name: &[u8]) -> Option<KeyRef<'_>> {
    if let Some(start) = find(name, b"[0x") {
        let rest = &name[start + 3..];
        let end = rest.iter().position(|&b| b == b']')?;
        return parse_hex(&rest[..end]).map(|address| KeyRef::Native { address });
    }
    if let Some(hex) = name.strip_prefix(b"0x") {
        return parse_hex(hex).map(|address| KeyRef::Native { address });
    }
    let colon = name.iter().rposition(|&b| b == b':')?;
    let line = crate::options::parse_decimal(&name[colon + 1..])?;
    if colon == 0 || line > u32::MAX as u64 {
        return None;
    }
    Some(KeyRef::Ruby {
        file: &name[..colon],
        line: line as u32,
    })
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

    #[test]
    fn ruby_locations() {
        assert_eq!(
            parse_location(b"/app/x.rb:12"),
            Some(KeyRef::Ruby {
                file: b"/app/x.rb",
                line: 12
            })
        );
        assert_eq!(
            parse_location(b"C:/x.rb:3"),
            Some(KeyRef::Ruby {
                file: b"C:/x.rb",
                line: 3
            })
        );
        assert_eq!(parse_location(b"x.rb"), None);
        assert_eq!(parse_location(b":3"), None);
        assert_eq!(parse_location(b"x.rb:-1"), None);
        assert_eq!(parse_location(b"x.rb:99999999999"), None);
        assert_eq!(parse_location(b""), None);
    }

    #[test]
    fn native_locations() {
        let n = |a| Some(KeyRef::Native { address: a });
        assert_eq!(
            parse_location(b"/lib/libc.so.6(malloc+0x1c) [0x7f00aa]"),
            n(0x7f00aa)
        );
        assert_eq!(parse_location(b"[0xdeadBEEF]"), n(0xdeadbeef));
        assert_eq!(parse_location(b"0x1234"), n(0x1234));
        assert_eq!(parse_location(b"[0xzz]"), None);
        assert_eq!(parse_location(b"0x"), None);
    }
}
