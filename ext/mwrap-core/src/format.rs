//! Text formatting that need not allocate: dump lines, location names and
//! the escaping every output shares. Everything writes into a [`TextOut`]:
//! a [`ByteWriter`] on borrowed memory (inside a hook, at exit) or a `Vec`.

/// Somewhere text goes.
pub trait TextOut {
    fn push(&mut self, bytes: &[u8]);

    fn push_byte(&mut self, b: u8) {
        self.push(&[b]);
    }

    /// Decimal, right-aligned in `width` columns (like `%*zu`).
    fn push_decimal(&mut self, value: u64, width: usize) {
        let mut digits = [0u8; 20];
        let n = decimal_digits(value, &mut digits);
        for _ in n..width {
            self.push_byte(b' ');
        }
        self.push(&digits[20 - n..]);
    }

    /// Lower-case hexadecimal with a `0x` prefix (like `%p`).
    fn push_hex(&mut self, value: u64) {
        let mut digits = [0u8; 16];
        let mut n = 0;
        let mut v = value;
        loop {
            digits[15 - n] = b"0123456789abcdef"[(v & 0xf) as usize];
            n += 1;
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[16 - n..]);
    }

    /// `bytes` with control bytes, DEL and the backslash escaped (see
    /// [`escape_byte`]), so that a name never forges a line or a field.
    fn push_escaped(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if needs_escape(b) {
                self.push(&bytes[start..i]);
                let mut buf = [0u8; 4];
                let n = escape_byte(b, &mut buf);
                self.push(&buf[..n]);
                start = i + 1;
            }
        }
        self.push(&bytes[start..]);
    }
}

impl TextOut for Vec<u8> {
    fn push(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Whether `b` is printed escaped in a location name.
#[inline]
pub fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b'\\'
}

/// Writes the escape of `b` (`\n`, `\t`, `\\` or `\xNN`) into `out`;
/// returns its length.
pub fn escape_byte(b: u8, out: &mut [u8; 4]) -> usize {
    match b {
        b'\n' => {
            out[..2].copy_from_slice(b"\\n");
            2
        }
        b'\t' => {
            out[..2].copy_from_slice(b"\\t");
            2
        }
        b'\\' => {
            out[..2].copy_from_slice(b"\\\\");
            2
        }
        _ => {
            out[0] = b'\\';
            out[1] = b'x';
            out[2] = b"0123456789abcdef"[(b >> 4) as usize];
            out[3] = b"0123456789abcdef"[(b & 0xf) as usize];
            4
        }
    }
}

/// The bytes an escaped name stands for; None when `text` holds a
/// backslash that starts no escape we write.
pub fn unescape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            out.push(text[i]);
            i += 1;
            continue;
        }
        match text.get(i + 1)? {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = text.get(i + 2..i + 4)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(out)
}

/// A bounded byte buffer on borrowed memory. Writes past the end are
/// dropped and remembered, never a panic.
pub struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl<'a> ByteWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        ByteWriter {
            buf,
            len: 0,
            truncated: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// True when some write did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }
}

impl TextOut for ByteWriter<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.remaining());
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            self.truncated = true;
        }
    }
}

/// Writes the decimal digits of `value` right-aligned into `out`; returns how many.
fn decimal_digits(mut value: u64, out: &mut [u8; 20]) -> usize {
    let mut n = 0;
    loop {
        out[19 - n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            return n;
        }
    }
}

/// One line of the dump, in mwrap 2.x's `"%16zu %12zu %s\n"` format:
/// total bytes, allocations, location (already printed and escaped).
pub fn dump_line(out: &mut impl TextOut, total: u64, allocations: u64, location: &[u8]) {
    out.push_decimal(total, 16);
    out.push_byte(b' ');
    out.push_decimal(allocations, 12);
    out.push_byte(b' ');
    out.push(location);
    out.push_byte(b'\n');
}

/// A Ruby location: `path/to/file.rb:LINE`, the path escaped.
pub fn ruby_location(out: &mut impl TextOut, file: &[u8], line: u32) {
    out.push_escaped(file);
    out.push_byte(b':');
    out.push_decimal(line as u64, 0);
}

/// What `dladdr` found for a native address.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeSymbol<'a> {
    /// Path of the object holding the address (`dli_fname`).
    pub object: Option<&'a [u8]>,
    /// Load base of that object (`dli_fbase`).
    pub object_base: usize,
    /// Nearest symbol at or below the address (`dli_sname`).
    pub symbol: Option<&'a [u8]>,
    /// Address of that symbol (`dli_saddr`).
    pub symbol_address: usize,
}

/// A native location, printed as glibc's `backtrace_symbols` does:
/// `/lib/libfoo.so(func+0x1c) [0x7f…]`, `./prog(+0x1234) [0x55…]` when no
/// symbol is known, and `[0x…]` when the address is in no known object.
/// The object path and symbol are escaped.
pub fn native_location(out: &mut impl TextOut, address: usize, sym: &NativeSymbol<'_>) {
    if let Some(object) = sym.object {
        out.push_escaped(object);
        out.push_byte(b'(');
        match sym.symbol {
            Some(name) if !name.is_empty() => {
                out.push_escaped(name);
                push_offset(out, address, sym.symbol_address);
            }
            _ => push_offset(out, address, sym.object_base),
        }
        out.push(b") ");
    }
    out.push_byte(b'[');
    out.push_hex(address as u64);
    out.push_byte(b']');
}

fn push_offset(out: &mut impl TextOut, address: usize, base: usize) {
    if address >= base {
        out.push_byte(b'+');
        out.push_hex((address - base) as u64);
    } else {
        out.push_byte(b'-');
        out.push_hex((base - address) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn dump_line_matches_mwrap_2x_printf_format() {
        let s = text(|w| dump_line(w, 10001, 1, b"/tmp/a.rb:3"));
        assert_eq!(s, format!("{:>16} {:>12} {}\n", 10001, 1, "/tmp/a.rb:3"));
        let s = text(|w| dump_line(w, u64::MAX, 0, b"x"));
        assert_eq!(s, format!("{:>16} {:>12} x\n", u64::MAX, 0));
    }

    #[test]
    fn ruby_location_is_file_colon_line() {
        assert_eq!(text(|w| ruby_location(w, b"app.rb", 42)), "app.rb:42");
        assert_eq!(text(|w| ruby_location(w, b"-e", 0)), "-e:0");
    }

    #[test]
    fn names_are_escaped_and_unescape_back() {
        let raw = b"a\nb\tc\\d\x01\x7f\xff.rb";
        let mut s = Vec::new();
        ruby_location(&mut s, raw, 3);
        assert_eq!(s, b"a\\nb\\tc\\\\d\\x01\\x7f\xff.rb:3");
        assert_eq!(unescape(&s[..s.len() - 2]).unwrap(), raw);
        assert_eq!(unescape(b"plain"), Some(b"plain".to_vec()));
        assert_eq!(unescape(b"bad\\q"), None);
        assert_eq!(unescape(b"cut\\x4"), None);
        assert_eq!(unescape(b"end\\"), None);
    }

    #[test]
    fn native_location_with_symbol_matches_backtrace_symbols() {
        let sym = NativeSymbol {
            object: Some(b"/usr/lib/libfoo.so"),
            object_base: 0x7f00_0000_0000,
            symbol: Some(b"func"),
            symbol_address: 0x7f00_0000_1000,
        };
        let s = text(|w| native_location(w, 0x7f00_0000_101c, &sym));
        assert_eq!(s, "/usr/lib/libfoo.so(func+0x1c) [0x7f000000101c]");
    }

    #[test]
    fn native_location_without_symbol_uses_object_offset() {
        let sym = NativeSymbol {
            object: Some(b"./pr\nog"),
            object_base: 0x5500_0000_0000,
            symbol: None,
            symbol_address: 0,
        };
        let s = text(|w| native_location(w, 0x5500_0000_1234, &sym));
        assert_eq!(s, "./pr\\nog(+0x1234) [0x550000001234]");
        let s = text(|w| native_location(w, 0xdead, &NativeSymbol::default()));
        assert_eq!(s, "[0xdead]");
    }

    #[test]
    fn writer_truncates_instead_of_panicking() {
        let mut buf = [0u8; 4];
        let mut w = ByteWriter::new(&mut buf);
        w.push(b"abcdef");
        assert_eq!(w.as_bytes(), b"abcd");
        assert!(w.truncated());
        w.push_decimal(12345, 10);
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn hex_of_zero() {
        assert_eq!(text(|w| w.push_hex(0)), "0x0");
    }
}
