//! `/proc/self/maps`, line by line, and which mappings a scan of the
//! process reads as roots (see [`crate::leaks`]).

/// One line of `/proc/PID/maps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub start: usize,
    pub end: usize,
    pub readable: bool,
    pub writable: bool,
    /// `s` rather than `p`: shared with other processes.
    pub shared: bool,
    /// The file or the kernel's name (`[heap]`, `[stack]`); empty for an
    /// anonymous mapping.
    pub path: &'a [u8],
}

fn hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0usize, |n, &c| {
        let d = (c as char).to_digit(16)?;
        Some(n << 4 | d as usize)
    })
}

/// Parses one line (without its newline); None when it is not one.
pub fn parse_line(line: &[u8]) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, |&c| c == b' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or(b"");
    let path = &path[path.iter().position(|&c| c != b' ').unwrap_or(path.len())..];
    let dash = range.iter().position(|&c| c == b'-')?;
    let (start, end) = (hex(&range[..dash])?, hex(&range[dash + 1..])?);
    if perms.len() != 4 || end < start {
        return None;
    }
    Some(Mapping {
        start,
        end,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        shared: perms[3] == b's',
        path,
    })
}

/// Whether a scan reads `m` as roots: every mapping the process can write
/// (data and bss, heaps, stacks, TLS, Ruby's heap pages, other anonymous
/// memory), but not the kernel's pages (`[vvar]`, `[vsyscall]`), devices,
/// or files shared with other processes (a read past a shared file's end
/// would fault; no pointer of this process's heap means anything there).
pub fn is_root(m: &Mapping<'_>) -> bool {
    if !(m.readable && m.writable) || m.end <= m.start {
        return false;
    }
    let path = m.path;
    if path.starts_with(b"[vvar") || path.starts_with(b"[vsyscall") || path.starts_with(b"[vdso") {
        return false;
    }
    let anonymous_shared = path.starts_with(b"/dev/zero") || path.starts_with(b"/SYSV");
    if path.starts_with(b"/dev/") && !anonymous_shared {
        return false;
    }
    !(m.shared && path.starts_with(b"/") && !anonymous_shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_each_kind_parse() {
        let m = parse_line(
            b"55d0c8a4d000-55d0c8a6e000 rw-p 00000000 00:00 0                          [heap]",
        )
        .unwrap();
        assert_eq!((m.start, m.end), (0x55d0c8a4d000, 0x55d0c8a6e000));
        assert!(m.readable && m.writable && !m.shared);
        assert_eq!(m.path, b"[heap]");
        let anon = parse_line(b"7f1c2e600000-7f1c2e800000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, b"");
        let file = parse_line(
            b"7f1c2f000000-7f1c2f022000 r--p 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert!(!file.writable);
        assert_eq!(file.path, b"/usr/lib/x86_64-linux-gnu/libc.so.6");
        let deleted = parse_line(b"7f00-8f00 rw-s 00000000 00:05 99 /dev/zero (deleted)").unwrap();
        assert!(deleted.shared);
        assert!(parse_line(b"").is_none());
        assert!(parse_line(b"zz-10 rw-p 0 0 0").is_none());
        assert!(parse_line(b"20-10 rw-p 0 0 0").is_none());
    }

    #[test]
    fn roots_are_private_or_anonymous_writable_memory() {
        let root = |line: &[u8]| is_root(&parse_line(line).unwrap());
        assert!(root(b"1000-2000 rw-p 00000000 00:00 0 [heap]"));
        assert!(root(b"1000-2000 rw-p 00000000 00:00 0 [stack]"));
        assert!(root(b"1000-2000 rw-p 00000000 00:00 0"));
        assert!(root(
            b"1000-2000 rw-p 0001c000 08:01 77 /usr/lib/libruby.so.3.1"
        ));
        assert!(root(b"1000-2000 rw-s 00000000 00:01 5 /dev/zero (deleted)"));
        assert!(!root(
            b"1000-2000 r--p 00000000 08:01 77 /usr/lib/libruby.so.3.1"
        ));
        assert!(!root(b"1000-2000 ---p 00000000 00:00 0"));
        assert!(!root(b"1000-2000 rw-p 00000000 00:00 0 [vvar]"));
        assert!(!root(b"1000-2000 rw-s 00000000 08:01 9 /tmp/shared.db"));
        assert!(!root(b"1000-2000 rw-s 00000000 00:06 9 /dev/dri/card0"));
    }
}
