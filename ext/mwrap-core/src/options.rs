//! Parsing of the `MWRAP` environment variable: comma-separated `key:value`
//! pairs. Bad entries are collected as problems (printed as one stderr line
//! by the preload) and otherwise ignored, so a typo never changes the
//! profiled program.

use std::fmt::Write as _;

/// Keys the preload understands, in the order the help text lists them.
pub const KNOWN_KEYS: &[&str] = &[
    "dump_path",
    "dump_fd",
    "dump_min",
    "dump_heap",
    "dump_format",
    "dump_leaks",
    "bt",
    "ruby_bt",
    "app_root",
    "socket_dir",
    "interval_ms",
    "snapshot_interval",
];

/// What the exit dump is written as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DumpFormat {
    /// mwrap 2.x's `total allocations location` lines.
    #[default]
    Text,
    /// One line per stack with live bytes, for flame graphs.
    Folded,
    /// One JSON document: locations with their stacks.
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// File the exit dump is appended to (opened O_APPEND|O_CREAT), as
    /// given: `%p` stands for the pid, `%t` for the time in Unix seconds
    /// (see [`expand_dump_path`]).
    pub dump_path: Option<Vec<u8>>,
    /// Descriptor the exit dump is written to.
    pub dump_fd: Option<i32>,
    /// Only locations whose total is strictly above this are dumped.
    pub dump_min: u64,
    /// Heap page output at exit: [`DUMP_HEAP_STATS`] | [`DUMP_HEAP_PAGES`]
    /// | [`DUMP_HEAP_ONLY`].
    pub dump_heap: u32,
    pub dump_format: DumpFormat,
    /// Adds the leaked blocks of each location (see `Mwrap.leaks`) to the
    /// exit dump.
    pub dump_leaks: bool,
    /// Native return addresses recorded per allocation (0 to [`MAX_BT`]).
    pub bt: u8,
    /// Ruby frames recorded per allocation made under the GVL.
    pub ruby_bt: u8,
    /// Allocations are charged to the innermost Ruby frame whose file is
    /// under this directory, as given (the preload checks it exists).
    pub app_root: Option<Vec<u8>>,
    /// The directory of the per-process endpoint: the preload listens on
    /// `DIR/PID.sock` (see [`socket_dir_fits`]).
    pub socket_dir: Option<Vec<u8>>,
    /// Milliseconds between the samples of RSS and live bytes that the
    /// endpoint's thread takes for `/timeline` and `/peak`.
    pub interval_ms: u32,
    /// Seconds between the JSON snapshots that replace `dump_path`
    /// (None: no snapshots, the exit dump appends as ever).
    pub snapshot_interval: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dump_path: None,
            dump_fd: None,
            dump_min: 0,
            dump_heap: 0,
            dump_format: DumpFormat::default(),
            dump_leaks: false,
            bt: 0,
            ruby_bt: 0,
            app_root: None,
            socket_dir: None,
            interval_ms: DEFAULT_INTERVAL_MS,
            snapshot_interval: None,
        }
    }
}

/// `interval_ms` unless given, and its range: samples closer than 10 ms
/// would cost the program more than they show; more than an hour apart,
/// a bounded ring of them would span months.
pub const DEFAULT_INTERVAL_MS: u32 = 1000;
pub const INTERVAL_MS_RANGE: (u32, u32) = (10, 3_600_000);
/// `snapshot_interval`'s range, in seconds (up to a day).
pub const SNAPSHOT_INTERVAL_RANGE: (u32, u32) = (1, 86_400);

/// Most frames `bt` and `ruby_bt` take.
pub const MAX_BT: u64 = 64;

/// `dump_heap` bit: summary statistics of Ruby's heap pages.
pub const DUMP_HEAP_STATS: u32 = 1;
/// `dump_heap` bit: every live heap page (address and birth generation).
pub const DUMP_HEAP_PAGES: u32 = 2;
/// `dump_heap` bit: only the heap output, no location lines.
pub const DUMP_HEAP_ONLY: u32 = 4;

impl Options {
    pub fn wants_dump(&self) -> bool {
        self.dump_path.is_some() || self.dump_fd.is_some() || self.dump_heap != 0
    }
}

/// Parses `MWRAP`. Returns the options and a list of problems, each naming
/// the offending entry. Later duplicates of a key win.
pub fn parse(value: &[u8]) -> (Options, Vec<String>) {
    let mut opts = Options::default();
    let mut problems = Vec::new();
    let mut unknown_keys = false;
    for item in value.split(|&b| b == b',') {
        let item = trim(item);
        if item.is_empty() {
            continue;
        }
        let Some(colon) = item.iter().position(|&b| b == b':') else {
            problems.push(format!("{} is not key:value", quoted(item)));
            continue;
        };
        let (key, val) = (trim(&item[..colon]), trim(&item[colon + 1..]));
        match key {
            b"dump_path" => {
                if val.is_empty() {
                    problems.push("dump_path is empty".to_string());
                } else if val.contains(&0) {
                    problems.push("dump_path holds a NUL byte".to_string());
                } else if let Err(seq) = check_dump_path(val) {
                    problems.push(format!(
                        "dump_path {} has an unknown % sequence {} (%p is the pid, %t the time in Unix seconds, %% a %)",
                        quoted(val),
                        quoted(seq)
                    ));
                } else {
                    opts.dump_path = Some(val.to_vec());
                }
            }
            b"dump_fd" => match parse_decimal(val) {
                Some(n) if n <= i32::MAX as u64 => opts.dump_fd = Some(n as i32),
                _ => problems.push(format!(
                    "dump_fd {} is not a file descriptor number",
                    quoted(val)
                )),
            },
            b"dump_min" => match parse_decimal(val) {
                Some(n) => opts.dump_min = n,
                None => problems.push(format!(
                    "dump_min {} is not a byte count (0 to {})",
                    quoted(val),
                    u64::MAX
                )),
            },
            b"dump_heap" => match parse_decimal(val) {
                Some(n) if n <= 7 => opts.dump_heap = n as u32,
                _ => problems.push(format!(
                    "dump_heap {} is not a mask from 0 to 7 (1 stats, 2 pages, 4 heap only)",
                    quoted(val)
                )),
            },
            b"dump_format" => match val {
                b"text" => opts.dump_format = DumpFormat::Text,
                b"folded" => opts.dump_format = DumpFormat::Folded,
                b"json" => opts.dump_format = DumpFormat::Json,
                _ => problems.push(format!(
                    "dump_format {} is not text, folded or json",
                    quoted(val)
                )),
            },
            b"dump_leaks" => match val {
                b"0" => opts.dump_leaks = false,
                b"1" => opts.dump_leaks = true,
                _ => problems.push(format!("dump_leaks {} is not 0 or 1", quoted(val))),
            },
            b"bt" | b"ruby_bt" => match parse_decimal(val) {
                Some(n) if n <= MAX_BT => {
                    if key == b"bt" {
                        opts.bt = n as u8;
                    } else {
                        opts.ruby_bt = n as u8;
                    }
                }
                _ => problems.push(format!(
                    "{} {} is not a frame count (0 to {MAX_BT})",
                    String::from_utf8_lossy(key),
                    quoted(val)
                )),
            },
            b"app_root" => {
                if val.is_empty() {
                    problems.push("app_root is empty".to_string());
                } else if val.contains(&0) {
                    problems.push("app_root holds a NUL byte".to_string());
                } else {
                    opts.app_root = Some(val.to_vec());
                }
            }
            b"socket_dir" => {
                if val.is_empty() {
                    problems.push("socket_dir is empty".to_string());
                } else if val.contains(&0) {
                    problems.push("socket_dir holds a NUL byte".to_string());
                } else if !socket_dir_fits(val) {
                    problems.push(socket_dir_too_long(val));
                } else {
                    opts.socket_dir = Some(val.to_vec());
                }
            }
            b"interval_ms" => match parse_decimal(val) {
                Some(n) if in_range(n, INTERVAL_MS_RANGE) => opts.interval_ms = n as u32,
                _ => problems.push(format!(
                    "interval_ms {} is not a number of milliseconds from {} to {}",
                    quoted(val),
                    INTERVAL_MS_RANGE.0,
                    INTERVAL_MS_RANGE.1
                )),
            },
            b"snapshot_interval" => match parse_decimal(val) {
                Some(n) if in_range(n, SNAPSHOT_INTERVAL_RANGE) => {
                    opts.snapshot_interval = Some(n as u32)
                }
                _ => problems.push(format!(
                    "snapshot_interval {} is not a number of seconds from {} to {}",
                    quoted(val),
                    SNAPSHOT_INTERVAL_RANGE.0,
                    SNAPSHOT_INTERVAL_RANGE.1
                )),
            },
            _ => {
                problems.push(format!("unknown key {}", quoted(key)));
                unknown_keys = true;
            }
        }
    }
    if unknown_keys {
        // Once, however many keys were unknown: the line stays short.
        problems.push(format!("known keys: {}", KNOWN_KEYS.join(", ")));
    }
    if opts.dump_heap != 0 && opts.dump_format != DumpFormat::Text {
        problems.push(format!(
            "dump_heap goes with dump_format:text only (the heap part is text); dump_heap {} ignored",
            opts.dump_heap
        ));
        opts.dump_heap = 0;
    }
    if opts.dump_leaks && opts.dump_format == DumpFormat::Folded {
        problems.push(
            "dump_leaks goes with dump_format:text or json (folded stacks have no place for it); \
             dump_leaks ignored"
                .to_string(),
        );
        opts.dump_leaks = false;
    }
    if let Some(seconds) = opts.snapshot_interval {
        // Each snapshot replaces one file: without one there is nowhere to
        // put them, and a name with the time in it would be a new file
        // every time, never replaced.
        let problem = match &opts.dump_path {
            None => Some("needs dump_path (the file each snapshot replaces)"),
            Some(path) if dump_path_has_time(path) => {
                Some("needs a dump_path without %t (each snapshot replaces the same file)")
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            problems.push(format!(
                "snapshot_interval {seconds} {problem}; no snapshots"
            ));
            opts.snapshot_interval = None;
        }
    }
    (opts, problems)
}

fn in_range(n: u64, (low, high): (u32, u32)) -> bool {
    (low as u64..=high as u64).contains(&n)
}

/// `sun_path` of a unix socket address: the socket's path and its NUL.
pub const SUN_PATH_BYTES: usize = 108;

/// The longest `/PID.sock` a socket_dir must leave room for: Linux pids
/// are at most 4194304 (`pid_max`'s ceiling), 7 digits.
pub const SOCKET_NAME_BYTES: usize = "/4194304.sock".len();

/// Whether `DIR/PID.sock` fits a unix socket address for every pid.
pub fn socket_dir_fits(dir: &[u8]) -> bool {
    dir.len() + SOCKET_NAME_BYTES < SUN_PATH_BYTES
}

/// The problem of a socket_dir too long for a unix socket path.
pub fn socket_dir_too_long(dir: &[u8]) -> String {
    format!(
        "socket_dir {} is too long for a unix socket: {} bytes, at most {} (DIR/PID.sock must fit in {} bytes)",
        quoted(dir),
        dir.len(),
        SUN_PATH_BYTES - 1 - SOCKET_NAME_BYTES,
        SUN_PATH_BYTES
    )
}

/// Checks the `%` sequences of a dump_path: `%p` and `%%`; the bad
/// sequence otherwise (a lone `%` at the end included).
fn check_dump_path(template: &[u8]) -> Result<(), &[u8]> {
    let mut i = 0;
    while i < template.len() {
        if template[i] == b'%' {
            match template.get(i + 1) {
                Some(b'p') | Some(b't') | Some(b'%') => i += 2,
                Some(_) => return Err(&template[i..i + 2]),
                None => return Err(&template[i..]),
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Whether a dump_path template names a file by the time it is written
/// (`%t`), so that checking it at start-up names another file.
pub fn dump_path_has_time(template: &[u8]) -> bool {
    let mut i = 0;
    while i + 1 < template.len() {
        match (template[i], template[i + 1]) {
            (b'%', b't') => return true,
            (b'%', _) => i += 2,
            _ => i += 1,
        }
    }
    false
}

/// A dump_path template with `%p` replaced by `pid`, `%t` by
/// `unix_seconds` and `%%` by `%` (the template was checked by [`parse`]).
pub fn expand_dump_path(template: &[u8], pid: u32, unix_seconds: u64, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < template.len() {
        match (template[i], template.get(i + 1)) {
            (b'%', Some(c @ (b'p' | b't'))) => {
                let n = if *c == b'p' { pid as u64 } else { unix_seconds };
                let mut digits = Vec::new();
                crate::format::TextOut::push_decimal(&mut digits, n, 0);
                out.extend_from_slice(&digits);
                i += 2;
            }
            (b'%', Some(b'%')) => {
                out.push(b'%');
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// The single stderr line for a list of problems, or None when there are none.
pub fn problems_line(problems: &[String]) -> Option<String> {
    if problems.is_empty() {
        return None;
    }
    let mut line = String::from("mwrap: ignoring bad MWRAP entries: ");
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            line.push_str("; ");
        }
        line.push_str(p);
    }
    line.push('\n');
    Some(line)
}

/// Plain decimal digits, no sign, no overflow.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// A printable, bounded rendering of user bytes: `"abc"`, escaping
/// non-printable and non-ASCII bytes, cut after 64 bytes.
pub fn quoted(s: &[u8]) -> String {
    const LIMIT: usize = 64;
    let mut out = String::with_capacity(s.len().min(LIMIT) + 8);
    out.push('"');
    for &b in s.iter().take(LIMIT) {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if s.len() > LIMIT {
        let _ = write!(out, "... ({} bytes)", s.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keys() {
        let (o, p) = parse(b"dump_path:/tmp/x.log,dump_fd:3,dump_min:100");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(o.dump_path.as_deref(), Some(&b"/tmp/x.log"[..]));
        assert_eq!(o.dump_fd, Some(3));
        assert_eq!(o.dump_min, 100);
        assert!(o.wants_dump());
    }

    #[test]
    fn empty_and_blank_entries_are_fine() {
        for v in [&b""[..], b",", b" , ,", b"dump_min:5,"] {
            let (_, p) = parse(v);
            assert!(p.is_empty(), "{v:?} gave {p:?}");
        }
        assert!(!parse(b"").0.wants_dump());
    }

    #[test]
    fn dump_leaks_is_0_or_1_and_not_for_folded() {
        assert!(parse(b"dump_leaks:1").0.dump_leaks);
        assert!(!parse(b"dump_leaks:1,dump_leaks:0").0.dump_leaks);
        let (o, p) = parse(b"dump_leaks:yes");
        assert!(!o.dump_leaks);
        assert_eq!(p, vec!["dump_leaks \"yes\" is not 0 or 1".to_string()]);
        let (o, p) = parse(b"dump_leaks:1,dump_format:json");
        assert!(o.dump_leaks && p.is_empty());
        let (o, p) = parse(b"dump_leaks:1,dump_format:folded");
        assert!(!o.dump_leaks);
        assert!(p[0].starts_with("dump_leaks goes with dump_format:text or json"));
    }

    #[test]
    fn dump_heap_is_a_mask() {
        let (o, p) = parse(b"dump_heap:5");
        assert!(p.is_empty());
        assert_eq!(o.dump_heap, DUMP_HEAP_STATS | DUMP_HEAP_ONLY);
        assert!(o.wants_dump());
        let (o, p) = parse(b"dump_heap:8");
        assert_eq!(o.dump_heap, 0);
        assert!(p[0].contains("dump_heap \"8\""));
    }

    #[test]
    fn later_duplicates_win() {
        let (o, p) = parse(b"dump_min:1,dump_min:2");
        assert!(p.is_empty());
        assert_eq!(o.dump_min, 2);
    }

    #[test]
    fn bad_entries_are_named_and_ignored() {
        let (o, p) = parse(b"foo:1,dump_fd:-1,dump_min:12x,dump_min:99999999999999999999999,nocolon,dump_path:,dump_fd:4");
        assert_eq!(o.dump_fd, Some(4));
        assert_eq!(o.dump_min, 0);
        assert_eq!(p.len(), 7, "{p:?}");
        assert!(p[0].contains("unknown key \"foo\""));
        assert!(p[6].starts_with("known keys: dump_path, dump_fd"), "{p:?}");
        assert!(p[1].contains("dump_fd \"-1\""));
        assert!(p[2].contains("dump_min \"12x\""));
        assert!(p[3].contains("dump_min \"99999999999999999999999\""));
        assert!(p[4].contains("\"nocolon\" is not key:value"));
        assert!(p[5].contains("dump_path is empty"));
        let line = problems_line(&p).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.starts_with("mwrap: "));
    }

    #[test]
    fn hostile_bytes_are_escaped_and_bounded() {
        let mut v = b"\xff\xfe:1,".to_vec();
        v.extend(std::iter::repeat_n(b'k', 10_000));
        v.extend_from_slice(b":2");
        let (_, p) = parse(&v);
        assert_eq!(p.len(), 3);
        assert!(p[0].contains("\\xff\\xfe"));
        assert!(p[1].len() < 300, "{}", p[1]);
        assert!(p[1].contains("(10000 bytes)"));
    }

    #[test]
    fn dump_path_takes_pid_and_percent_sequences() {
        let (o, p) = parse(b"dump_path:/tmp/w.%p.%%.log");
        assert!(p.is_empty(), "{p:?}");
        let mut out = Vec::new();
        expand_dump_path(o.dump_path.as_deref().unwrap(), 4242, 1, &mut out);
        assert_eq!(out, b"/tmp/w.4242.%.log");
        assert!(!dump_path_has_time(o.dump_path.as_deref().unwrap()));
        let (o, p) = parse(b"dump_path:/tmp/w.%p.%t.log");
        assert!(p.is_empty(), "{p:?}");
        out.clear();
        expand_dump_path(o.dump_path.as_deref().unwrap(), 7, 1764687600, &mut out);
        assert_eq!(out, b"/tmp/w.7.1764687600.log");
        assert!(dump_path_has_time(b"/x/%t"));
        assert!(!dump_path_has_time(b"/x/%%t"));
        for bad in [
            &b"dump_path:/tmp/%q"[..],
            b"dump_path:/tmp/x%",
            b"dump_path:%s%p",
        ] {
            let (o, p) = parse(bad);
            assert_eq!(o.dump_path, None);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains("unknown % sequence"), "{p:?}");
        }
    }

    #[test]
    fn decimal_rejects_signs_and_overflow() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b""), None);
    }

    #[test]
    fn stack_keys_and_dump_format() {
        let (o, p) = parse(b"bt:16,ruby_bt:64,app_root:/srv/app,dump_format:folded");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!((o.bt, o.ruby_bt), (16, 64));
        assert_eq!(o.app_root.as_deref(), Some(&b"/srv/app"[..]));
        assert_eq!(o.dump_format, DumpFormat::Folded);
        assert_eq!(parse(b"dump_format:json").0.dump_format, DumpFormat::Json);
        assert_eq!(parse(b"").0.dump_format, DumpFormat::Text);
        let (o, p) = parse(b"bt:65,ruby_bt:-1,bt:x,app_root:,dump_format:xml");
        assert_eq!(
            (o.bt, o.ruby_bt, o.app_root, o.dump_format),
            (0, 0, None, DumpFormat::Text)
        );
        assert_eq!(p.len(), 5, "{p:?}");
        assert_eq!(p[0], "bt \"65\" is not a frame count (0 to 64)");
        assert!(p[1].starts_with("ruby_bt \"-1\""));
        assert!(p[3].contains("app_root is empty"));
        assert_eq!(p[4], "dump_format \"xml\" is not text, folded or json");
    }

    #[test]
    fn intervals_are_in_range_and_snapshots_need_a_fixed_dump_path() {
        let (o, p) = parse(b"interval_ms:50,snapshot_interval:1,dump_path:/tmp/d.%p");
        assert_eq!(
            (o.interval_ms, o.snapshot_interval, p.len()),
            (50, Some(1), 0)
        );
        assert_eq!(parse(b"").0.interval_ms, DEFAULT_INTERVAL_MS);
        let (o, p) = parse(b"interval_ms:5");
        assert_eq!(o.interval_ms, DEFAULT_INTERVAL_MS);
        assert_eq!(
            p,
            ["interval_ms \"5\" is not a number of milliseconds from 10 to 3600000"]
        );
        assert_eq!(parse(b"interval_ms:3600001").1.len(), 1);
        let (o, p) = parse(b"snapshot_interval:0,dump_path:/tmp/x");
        assert_eq!(o.snapshot_interval, None);
        assert_eq!(
            p,
            ["snapshot_interval \"0\" is not a number of seconds from 1 to 86400"]
        );
        let (o, p) = parse(b"snapshot_interval:5");
        assert_eq!(o.snapshot_interval, None);
        assert_eq!(
            p,
            ["snapshot_interval 5 needs dump_path (the file each snapshot replaces); no snapshots"]
        );
        let (o, p) = parse(b"snapshot_interval:5,dump_path:/tmp/x.%t");
        assert_eq!((o.snapshot_interval, p.len()), (None, 1));
    }

    #[test]
    fn socket_dir_is_a_short_enough_path() {
        let (o, p) = parse(b"socket_dir:/run/user/1000/mwrap");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(o.socket_dir.as_deref(), Some(&b"/run/user/1000/mwrap"[..]));
        assert!(!o.wants_dump());
        let longest = vec![b'd'; SUN_PATH_BYTES - 1 - SOCKET_NAME_BYTES];
        assert!(socket_dir_fits(&longest));
        let mut entry = b"socket_dir:".to_vec();
        entry.extend_from_slice(&longest);
        entry.push(b'd');
        let (o, p) = parse(&entry);
        assert_eq!(o.socket_dir, None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("socket_dir \"ddd")
                && p[0].contains("is too long for a unix socket: 95 bytes, at most 94"),
            "{p:?}"
        );
        let (o, p) = parse(b"socket_dir:");
        assert_eq!(
            (o.socket_dir, &p[..]),
            (None, &["socket_dir is empty".to_string()][..])
        );
    }
}
