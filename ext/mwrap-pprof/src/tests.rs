use std::io::Read as _;

use mwrap_core::abi::SiteFilter;
use mwrap_core::format::{ByteWriter, TextOut};
use mwrap_core::lock::{ForkGate, LockCx, LockSlot};
use mwrap_core::read::{self, NativeNamer};
use mwrap_core::stacks::{RubyFrame, Stack, StackTable};
use mwrap_core::{LiveAllocation, SiteKey, SiteTable};
use prost::Message as _;

use super::*;

static GATE: ForkGate = ForkGate::new();

/// Raw blocks for headers (boxed: headers must not move).
#[allow(clippy::vec_box)]
#[derive(Default)]
struct Blocks(Vec<Box<[u128; 4]>>);

impl Blocks {
    fn header(&mut self, size: usize) -> *mut LiveAllocation {
        let mut b = Box::new([0u128; 4]);
        let p = b.as_mut_ptr() as *mut LiveAllocation;
        // SAFETY: 64 writable bytes aligned to 16.
        unsafe { LiveAllocation::init(p, size, 0) };
        self.0.push(b);
        p
    }
}

/// Names addresses as the symbolizer would: 0x1000.. in `/lib/libx.so`
/// (`grow` with a DWARF line for frames), 0x5000 in no object.
struct Names;

impl Names {
    fn name(address: usize, with_line: bool, out: &mut ByteWriter<'_>) {
        let text = match (address, with_line) {
            (0x1010, true) => "/lib/libx.so(grow+0x10) [0x1010] at grow.c:12".to_string(),
            (0x1010, false) => "/lib/libx.so(grow+0x10) [0x1010]".to_string(),
            (0x1020, _) => "/lib/libx.so(+0x20) [0x1020]".to_string(),
            (0x7000, _) => "/gone/libz.so(zap+0x4) [0x7000]".to_string(),
            (a, _) => format!("[{a:#x}]"),
        };
        out.push(text.as_bytes());
    }
}

impl NativeNamer for Names {
    fn name_native(&self, address: usize, out: &mut ByteWriter<'_>) {
        Self::name(address, false, out);
    }

    fn name_frame(&self, address: usize, _epoch: u32, out: &mut ByteWriter<'_>) {
        Self::name(address, true, out);
    }
}

const EXEC: [ExecMapping<'static>; 2] = [
    ExecMapping {
        start: 0x400,
        limit: 0x800,
        file_offset: 0,
        path: b"/usr/bin/ruby",
    },
    ExecMapping {
        start: 0x1000,
        limit: 0x2000,
        file_offset: 0x1000,
        path: b"/usr/lib/libx.so",
    },
];

struct Table {
    sites: SiteTable,
    stacks: StackTable,
    blocks: Blocks,
    slot: LockSlot,
}

impl Table {
    fn new() -> Box<Self> {
        let t = Box::new(Table {
            sites: SiteTable::new(),
            stacks: StackTable::new(),
            blocks: Blocks::default(),
            slot: LockSlot::new(),
        });
        t.slot.bind(&GATE, 1);
        t
    }

    fn cx(&self) -> LockCx<'_> {
        LockCx::new(&self.slot)
    }

    /// Charges blocks of `sizes` to `site`; frees the first `freed`.
    fn charge(&mut self, site: u32, sizes: &[usize], freed: usize) {
        let headers: Vec<_> = sizes.iter().map(|&s| self.blocks.header(s)).collect();
        let cx = LockCx::new(&self.slot);
        for &h in &headers {
            // SAFETY: fresh test headers.
            unsafe { assert!(self.sites.record_alloc(&cx, site, 0, h, 0)) };
        }
        for &h in &headers[..freed] {
            // SAFETY: charged above.
            unsafe { self.sites.record_free(&cx, h, 1) };
        }
    }

    fn rows(&self) -> StackRows {
        read::stacks(
            &self.sites,
            &self.stacks,
            &self.cx(),
            &SiteFilter::default(),
            None,
            &Names,
        )
        .unwrap()
    }
}

/// app.rb:3 with a stack (two native frames, Ruby app.rb:3 < app.rb:9),
/// app.rb:5 with none, the native location 0x5000 with none, and a frame
/// of a closed object.
fn sample_table() -> Box<Table> {
    let mut t = Table::new();
    let cx = t.cx();
    let app = t.sites.files().intern(&cx, b"app.rb").unwrap();
    let leak = t.sites.intern(&cx, SiteKey::Ruby { file: app, line: 3 });
    let quiet = t.sites.intern(&cx, SiteKey::Ruby { file: app, line: 5 });
    let native = t.sites.intern(&cx, SiteKey::Native { address: 0x5000 });
    let stack = t
        .stacks
        .intern(
            &cx,
            &Stack {
                native: &[0x1010, 0x1020],
                ruby: &[RubyFrame::new(app, 3), RubyFrame::new(app, 9)],
            },
            0,
        )
        .unwrap();
    let closed = t
        .stacks
        .intern(
            &cx,
            &Stack {
                native: &[0x7000],
                ruby: &[],
            },
            0,
        )
        .unwrap();
    let with_stack = t.sites.intern_stack(&cx, leak, stack).unwrap();
    let with_closed = t.sites.intern_stack(&cx, quiet, closed).unwrap();
    t.charge(with_stack, &[1000, 1000, 1000], 1);
    t.charge(quiet, &[7], 1);
    t.charge(with_closed, &[30], 0);
    t.charge(native, &[50, 50], 0);
    t
}

fn decode(bytes: &[u8]) -> Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .expect("gzip");
    Profile::decode(&raw[..]).expect("profile.proto")
}

fn text(p: &Profile, index: i64) -> &str {
    &p.string_table[index as usize]
}

/// A location's (function name, filename, line, address, mapping file).
fn frame(p: &Profile, id: u64) -> (String, String, i64, u64, String) {
    let l = &p.location[id as usize - 1];
    assert_eq!(l.id, id);
    assert_eq!(l.line.len(), 1);
    let f = &p.function[l.line[0].function_id as usize - 1];
    assert_eq!(f.id, l.line[0].function_id);
    let mapping = match l.mapping_id {
        0 => String::new(),
        m => text(p, p.mapping[m as usize - 1].filename).to_string(),
    };
    (
        text(p, f.name).to_string(),
        text(p, f.filename).to_string(),
        l.line[0].line,
        l.address,
        mapping,
    )
}

fn sample_frames(p: &Profile, s: &Sample) -> Vec<String> {
    s.location_id
        .iter()
        .map(|&id| frame(p, id).0)
        .collect::<Vec<_>>()
}

#[test]
fn samples_values_and_frames_decode_back() {
    let t = sample_table();
    let rows = t.rows();
    let p = decode(&heap_pb_gz(&rows, &EXEC, 1234).unwrap());
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|v| (text(&p, v.r#type), text(&p, v.unit)))
        .collect();
    assert_eq!(types, SAMPLE_TYPES);
    assert_eq!(text(&p, p.default_sample_type), "inuse_space");
    let period = p.period_type.unwrap();
    assert_eq!(
        (text(&p, period.r#type), text(&p, period.unit)),
        ("space", "bytes")
    );
    assert_eq!((p.period, p.time_nanos), (1, 1234));

    // The rows' order: total descending.
    let got: Vec<(Vec<i64>, Vec<String>)> = p
        .sample
        .iter()
        .map(|s| (s.value.clone(), sample_frames(&p, s)))
        .collect();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            (
                vec![3, 3000, 2, 2000],
                names(&["grow", "/lib/libx.so(+0x20)", "app.rb:3", "app.rb:9"])
            ),
            (vec![2, 100, 2, 100], names(&["[0x5000]"])),
            (vec![1, 30, 1, 30], names(&["zap", "app.rb:5"])),
            (vec![1, 7, 0, 0], names(&["app.rb:5"])),
        ]
    );

    let leak = &p.sample[0].location_id;
    assert_eq!(
        frame(&p, leak[0]),
        (
            "grow".into(),
            "grow.c".into(),
            12,
            0x1010,
            "/usr/lib/libx.so".into()
        )
    );
    assert_eq!(
        frame(&p, leak[1]),
        (
            "/lib/libx.so(+0x20)".into(),
            "".into(),
            0,
            0x1020,
            "/usr/lib/libx.so".into()
        )
    );
    assert_eq!(
        frame(&p, leak[2]),
        ("app.rb:3".into(), "app.rb".into(), 3, 0, "".into())
    );
    let f = &p.function[p.location[leak[3] as usize - 1].line[0].function_id as usize - 1];
    assert_eq!((text(&p, f.filename), f.start_line), ("app.rb", 9));
    // No object: no mapping; a closed object: one by name only.
    assert_eq!(frame(&p, p.sample[1].location_id[0]).3, 0x5000);
    assert_eq!(frame(&p, p.sample[1].location_id[0]).4, "");
    let closed = &p.location[p.sample[2].location_id[0] as usize - 1];
    let m = p.mapping[closed.mapping_id as usize - 1];
    assert_eq!(text(&p, m.filename), "/gone/libz.so");
    assert_eq!((m.memory_start, m.memory_limit, m.file_offset), (0, 0, 0));
    // The same Ruby line is one location in every sample.
    assert_eq!(p.sample[2].location_id[1], p.sample[3].location_id[0]);

    // Mappings: the main program first, then as met.
    let maps: Vec<(&str, u64, u64, u64, bool)> = p
        .mapping
        .iter()
        .enumerate()
        .map(|(i, m)| {
            assert_eq!(m.id, i as u64 + 1);
            let file = text(&p, m.filename);
            (
                file,
                m.memory_start,
                m.memory_limit,
                m.file_offset,
                m.has_line_numbers,
            )
        })
        .collect();
    assert_eq!(
        maps,
        vec![
            ("/usr/bin/ruby", 0x400, 0x800, 0, false),
            ("/usr/lib/libx.so", 0x1000, 0x2000, 0x1000, true),
            ("/gone/libz.so", 0, 0, 0, false),
        ]
    );
}

#[test]
fn string_table_starts_empty_and_holds_each_string_once() {
    let t = sample_table();
    let p = heap_profile(&t.rows(), &EXEC, 0).unwrap();
    assert_eq!(p.string_table[0], "");
    let mut seen = std::collections::HashSet::new();
    for s in &p.string_table {
        assert!(seen.insert(s.clone()), "{s:?} twice");
    }
    let n = p.string_table.len() as i64;
    let in_table = |i: i64| (0..n).contains(&i);
    assert!(p
        .function
        .iter()
        .all(|f| in_table(f.name) && in_table(f.filename)));
    assert!(p.mapping.iter().all(|m| in_table(m.filename)));
    // Functions and locations are deduplicated too.
    let mut functions = std::collections::HashSet::new();
    for f in &p.function {
        assert!(functions.insert((f.name, f.filename, f.start_line)));
    }
    assert_eq!(p.location.len(), 7);
}

#[test]
fn no_rows_is_a_valid_empty_profile() {
    let t = Table::new();
    let p = decode(&heap_pb_gz(&t.rows(), &[], 0).unwrap());
    assert!(p.sample.is_empty() && p.mapping.is_empty());
    assert_eq!(p.sample_type.len(), 4);
    assert_eq!(p.string_table[0], "");
}

#[test]
fn native_names_are_taken_apart() {
    let f = parse_native(b"/lib/a.so(fn+0x1c) [0x7f00] at src/a.c:42");
    assert_eq!(f.object, Some(&b"/lib/a.so"[..]));
    assert_eq!(f.symbol, Some(&b"fn"[..]));
    assert_eq!(f.function, b"/lib/a.so(fn+0x1c)");
    assert_eq!(f.address, Some(0x7f00));
    assert_eq!(f.source, Some((&b"src/a.c"[..], 42)));
    let f = parse_native(b"./a (b)(+0x10) [0x10]");
    assert_eq!((f.object, f.symbol), (Some(&b"./a (b)"[..]), None));
    let f = parse_native(b"[0xbeef]");
    assert_eq!(
        (f.object, f.function, f.address),
        (None, &b""[..], Some(0xbeef))
    );
    let f = parse_native(b"[overflow]");
    assert_eq!((f.function, f.address), (&b"[overflow]"[..], None));
    let f = parse_native(b"x(y-0x4) [0x1] at ../s.c:notanumber");
    assert_eq!(f.symbol, Some(&b"y"[..]));
    assert_eq!(f.source, Some((&b"../s.c:notanumber"[..], 0)));
}

#[test]
fn proc_maps_gives_executable_file_mappings() {
    let maps = b"55d0-55e0 r--p 00000000 08:01 1 /usr/bin/ruby\n\
55e0-5600 r-xp 00001000 08:01 1 /usr/bin/ruby\n\
7f00-7f10 rw-p 00000000 00:00 0 \n\
7f10-7f20 r-xp 00002000 08:01 2                  /lib/x y.so\n\
7ff0-7ff1 r-xp 00000000 00:00 0                  [vdso]\n\
garbage\n";
    let got = exec_mappings(maps).unwrap();
    assert_eq!(
        got,
        vec![
            ExecMapping {
                start: 0x55e0,
                limit: 0x5600,
                file_offset: 0x1000,
                path: b"/usr/bin/ruby"
            },
            ExecMapping {
                start: 0x7f10,
                limit: 0x7f20,
                file_offset: 0x2000,
                path: b"/lib/x y.so"
            },
            ExecMapping {
                start: 0x7ff0,
                limit: 0x7ff1,
                file_offset: 0,
                path: b"[vdso]"
            },
        ]
    );
}
