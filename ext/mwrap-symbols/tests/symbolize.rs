//! The symbolizer against real objects: tests/helper.c built with gcc in
//! the ways the symbolizer must handle, loaded with dlopen into this
//! process, then named.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mwrap_core::format::{self, NativeSymbol};
use mwrap_symbols::{resolve_dl_find_object, ModuleRecord, Stats, Symbolizer};

const HELPER_SOURCE: &str = include_str!("helper.c");

/// The line of the call whose return address the helper hands out.
fn call_line() -> usize {
    line_of("/* THE CALL */")
}

fn line_of(marker: &str) -> usize {
    HELPER_SOURCE
        .lines()
        .position(|l| l.contains(marker))
        .unwrap()
        + 1
}

/// A fresh directory for one test, removed when the test ends.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("mwrap-symbols-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        status.success(),
        "{program} {args:?} failed in {}",
        dir.display()
    );
}

/// Writes helper.c into `dir` and builds `dir/out` with `flags`, compiling
/// it as `helper.c` from `dir` (so DWARF names it so, under comp dir `dir`).
fn build(dir: &Path, out: &str, flags: &[&str]) -> PathBuf {
    std::fs::write(dir.join("helper.c"), HELPER_SOURCE).unwrap();
    let mut args = vec!["-O0", "-fPIC", "-shared", "-o", out, "helper.c"];
    args.splice(0..0, flags.iter().copied());
    run(dir, "gcc", &args);
    dir.join(out)
}

/// An object opened with dlopen, closed on drop unless closed by hand.
struct Loaded {
    handle: *mut c_void,
    path: PathBuf,
}

impl Loaded {
    fn open(path: &Path) -> Loaded {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: dlopen with a NUL-terminated path.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(
            !handle.is_null(),
            "dlopen {}: {}",
            path.display(),
            dlerror()
        );
        Loaded {
            handle,
            path: path.to_path_buf(),
        }
    }

    fn symbol(&self, name: &str) -> usize {
        let c = CString::new(name).unwrap();
        // SAFETY: dlsym on an open handle.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        assert!(!p.is_null(), "{name} not in {}", self.path.display());
        p as usize
    }

    /// Calls an exported `void *f(void)` of the helper.
    fn call(&self, name: &str) -> usize {
        let f = self.symbol(name);
        // SAFETY: the helper's exported functions are `void *f(void)`.
        let f = unsafe { core::mem::transmute::<usize, extern "C" fn() -> *mut c_void>(f) };
        f() as usize
    }

    /// The return address inside static_caller, and that function's start.
    fn static_frame(&self) -> (usize, usize) {
        (
            self.call("helper_return_address"),
            self.call("helper_static_caller"),
        )
    }

    fn close(mut self) {
        // SAFETY: the handle is open and nothing of it is used after.
        assert_eq!(unsafe { libc::dlclose(self.handle) }, 0);
        self.handle = core::ptr::null_mut();
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: as in close.
            unsafe { libc::dlclose(self.handle) };
        }
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        String::new()
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// What mwrap prints today for `address`: `dladdr` and `native_location`.
fn dladdr_name(address: usize) -> String {
    // SAFETY: dladdr fills a plain struct; its strings belong to objects
    // this test keeps loaded.
    let sym = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(address as *const c_void, &mut info) == 0 {
            NativeSymbol::default()
        } else {
            let text = |p: *const libc::c_char| {
                (!p.is_null())
                    .then(|| CStr::from_ptr(p).to_bytes())
                    .filter(|s| !s.is_empty())
            };
            NativeSymbol {
                object: text(info.dli_fname),
                object_base: info.dli_fbase as usize,
                symbol: text(info.dli_sname),
                symbol_address: info.dli_saddr as usize,
            }
        }
    };
    let mut out = Vec::new();
    format::native_location(&mut out, address, &sym);
    String::from_utf8(out).unwrap()
}

fn describe(s: &mut Symbolizer, address: usize) -> String {
    let mut out = Vec::new();
    s.describe(address, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn describe_closed(s: &mut Symbolizer, address: usize, module: &ModuleRecord) -> String {
    let mut out = Vec::new();
    s.describe_closed(address, module, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn static_name(path: &Path, address: usize, start: usize) -> String {
    format!(
        "{}(static_caller+{:#x}) [{address:#x}]",
        path.display(),
        address - start
    )
}

#[test]
fn debug_build_names_the_static_function_and_the_line() {
    let dir = scratch("debug");
    let lib = Loaded::open(&build(&dir, "libdebug.so", &["-g"]));
    let (address, start) = lib.static_frame();
    let mut s = Symbolizer::new();
    let expected = format!(
        "{} at helper.c:{}",
        static_name(&lib.path, address, start),
        call_line()
    );
    assert_eq!(describe(&mut s, address), expected);
    let mut function = Vec::new();
    s.describe_function(address, &mut function);
    assert_eq!(function, static_name(&lib.path, address, start).as_bytes());
    // Without _dl_find_object (glibc 2.34), dladdr checks the cache.
    s.set_dl_find_object(None);
    assert_eq!(describe(&mut s, address), expected);
    assert_eq!(describe(&mut s, address), expected);
}

#[test]
fn a_call_that_ends_its_function_is_named_by_its_caller() {
    let dir = scratch("tail");
    let lib = Loaded::open(&build(&dir, "libtail.so", &["-g"]));
    let address = lib.call("helper_tail_return_address");
    let start = lib.call("helper_ends_in_call");
    let next = lib.symbol("helper_tail_return_address");
    // The return address is the next function's first byte: the address
    // itself names that function, address - 1 the caller.
    assert_eq!(address, next, "gcc -O0 laid the helper out differently");
    assert!(dladdr_name(address).contains("(helper_tail_return_address+0x0) ["));
    let mut s = Symbolizer::new();
    assert_eq!(
        describe(&mut s, address),
        format!(
            "{}(ends_in_call+{:#x}) [{address:#x}] at helper.c:{}",
            lib.path.display(),
            address - start,
            line_of("/* THE LAST CALL */")
        )
    );
}

#[test]
fn symtab_build_names_the_static_function_without_a_line() {
    let dir = scratch("symtab");
    let lib = Loaded::open(&build(&dir, "libsymtab.so", &[]));
    let (address, start) = lib.static_frame();
    assert!(
        dladdr_name(address).contains("(+0x"),
        "dladdr cannot name it"
    );
    let mut s = Symbolizer::new();
    assert_eq!(
        describe(&mut s, address),
        static_name(&lib.path, address, start)
    );
}

#[test]
fn stripped_build_prints_what_dladdr_prints() {
    let dir = scratch("stripped");
    let path = build(&dir, "libstripped.so", &["-g"]);
    run(&dir, "strip", &["--strip-unneeded", "libstripped.so"]);
    let lib = Loaded::open(&path);
    let (address, _) = lib.static_frame();
    let exported = lib.symbol("helper_return_address") + 1;
    let mut s = Symbolizer::new();
    let name = describe(&mut s, address);
    assert_eq!(name, dladdr_name(address));
    assert!(
        name.starts_with(&format!("{}(+0x", path.display())),
        "{name}"
    );
    assert_eq!(describe(&mut s, exported), dladdr_name(exported));
    assert!(describe(&mut s, exported).contains("(helper_return_address+0x1) "));
}

#[test]
fn separate_debug_file_found_by_debuglink_next_to_the_object() {
    let dir = scratch("debuglink");
    let path = build(&dir, "liblink.so", &["-g"]);
    run(
        &dir,
        "objcopy",
        &["--only-keep-debug", "liblink.so", "liblink.debug"],
    );
    // --strip-all: the static name must come from the debug file's .symtab.
    run(
        &dir,
        "objcopy",
        &[
            "--strip-all",
            "--add-gnu-debuglink=liblink.debug",
            "liblink.so",
        ],
    );
    let lib = Loaded::open(&path);
    let (address, start) = lib.static_frame();
    let mut s = Symbolizer::new();
    s.set_debug_root(dir.join("no-root"));
    let expected = format!(
        "{} at helper.c:{}",
        static_name(&path, address, start),
        call_line()
    );
    assert_eq!(describe(&mut s, address), expected);
    // In .debug/ too.
    let dot_debug = dir.join(".debug");
    std::fs::create_dir(&dot_debug).unwrap();
    std::fs::rename(dir.join("liblink.debug"), dot_debug.join("liblink.debug")).unwrap();
    let mut s = Symbolizer::new();
    s.set_debug_root(dir.join("no-root"));
    assert_eq!(describe(&mut s, address), expected);
    // And under the debug root + the object's directory.
    let root = dir.join("root");
    let under = root.join(dir.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&under).unwrap();
    std::fs::rename(dot_debug.join("liblink.debug"), under.join("liblink.debug")).unwrap();
    let mut s = Symbolizer::new();
    s.set_debug_root(&root);
    assert_eq!(describe(&mut s, address), expected);
}

#[test]
fn debuglink_without_build_id_is_checked_by_crc() {
    let dir = scratch("crc");
    let path = build(&dir, "libcrc.so", &["-g", "-Wl,--build-id=none"]);
    run(
        &dir,
        "objcopy",
        &["--only-keep-debug", "libcrc.so", "libcrc.debug"],
    );
    run(
        &dir,
        "objcopy",
        &[
            "--strip-debug",
            "--add-gnu-debuglink=libcrc.debug",
            "libcrc.so",
        ],
    );
    let lib = Loaded::open(&path);
    let (address, start) = lib.static_frame();
    let mut s = Symbolizer::new();
    let name = describe(&mut s, address);
    assert_eq!(
        name,
        format!(
            "{} at helper.c:{}",
            static_name(&path, address, start),
            call_line()
        )
    );
    // A debug file whose CRC differs is not this object's.
    let mut bytes = std::fs::read(dir.join("libcrc.debug")).unwrap();
    bytes.push(0);
    std::fs::write(dir.join("libcrc.debug"), bytes).unwrap();
    let mut s = Symbolizer::new();
    assert_eq!(
        describe(&mut s, address),
        static_name(&path, address, start)
    );
}

#[test]
fn separate_debug_file_found_by_build_id_under_the_debug_root() {
    let dir = scratch("buildid");
    let path = build(&dir, "libid.so", &["-g", "-Wl,--build-id=sha1"]);
    run(
        &dir,
        "objcopy",
        &["--only-keep-debug", "libid.so", "libid.debug"],
    );
    run(&dir, "objcopy", &["--strip-debug", "libid.so"]);
    let id = build_id_hex(&path);
    let root = dir.join("root");
    let link_dir = root.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&link_dir).unwrap();
    let lib = Loaded::open(&path);
    let (address, start) = lib.static_frame();
    let without = static_name(&path, address, start);
    let with = format!("{without} at helper.c:{}", call_line());

    let mut s = Symbolizer::new();
    s.set_debug_root(&root);
    assert_eq!(
        describe(&mut s, address),
        without,
        "nothing under the root yet"
    );

    std::fs::rename(
        dir.join("libid.debug"),
        link_dir.join(format!("{}.debug", &id[2..])),
    )
    .unwrap();
    let mut s = Symbolizer::new();
    s.set_debug_root(&root);
    assert_eq!(describe(&mut s, address), with);

    // Another build's debug file under this build-id's name is refused.
    let other = scratch("buildid-other");
    build(&other, "libother.so", &["-g", "-DVARIANT=2"]);
    run(
        &other,
        "objcopy",
        &["--only-keep-debug", "libother.so", "libother.debug"],
    );
    std::fs::rename(
        other.join("libother.debug"),
        link_dir.join(format!("{}.debug", &id[2..])),
    )
    .unwrap();
    let mut s = Symbolizer::new();
    s.set_debug_root(&root);
    assert_eq!(describe(&mut s, address), without);
}

/// The build-id of the ELF file at `path`, in hex, read with `object`.
fn build_id_hex(path: &Path) -> String {
    use object::Object;
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let id = file.build_id().unwrap().unwrap();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn closed_module_is_named_from_its_file_until_the_file_goes() {
    let dir = scratch("closed");
    let path = build(&dir, "libclosed.so", &["-g"]);
    let lib = Loaded::open(&path);
    let (address, start) = lib.static_frame();
    let mut s = Symbolizer::new();
    let loaded = describe(&mut s, address);

    // SAFETY: the handle is open.
    let record = unsafe { ModuleRecord::capture(lib.handle) }.unwrap();
    // SAFETY: as above; `_dl_find_object` is glibc's.
    let with_find = unsafe { ModuleRecord::capture_with(lib.handle, resolve_dl_find_object()) };
    assert_eq!(with_find.unwrap(), record);
    assert_eq!(record.path(), path.as_os_str().as_bytes());
    assert!(record.contains(address) && record.contains(start));
    assert_eq!(record.build_id().map(<[u8]>::len), Some(20));
    lib.close();
    assert!(
        dladdr_name(address).starts_with('['),
        "the helper is unmapped"
    );

    let expected = format!(
        "{} at helper.c:{}",
        static_name(&path, address, start),
        call_line()
    );
    assert_eq!(loaded, expected);
    let mut fresh = Symbolizer::new();
    assert_eq!(describe_closed(&mut fresh, address, &record), expected);
    let mut function = Vec::new();
    fresh.describe_closed_function(address, &record, &mut function);
    assert_eq!(function, static_name(&path, address, start).as_bytes());
    // The closed object's address is no longer a loaded one.
    assert_eq!(describe(&mut fresh, address), format!("[{address:#x}]"));

    let bare = format!(
        "{}(+{:#x}) [{address:#x}]",
        path.display(),
        address - record.map_start()
    );
    // Another build at the same path: its build-id differs.
    build(&dir, "libclosed.so", &["-g", "-DVARIANT=3"]);
    assert_eq!(
        describe_closed(&mut Symbolizer::new(), address, &record),
        bare
    );
    // No file at all.
    std::fs::rename(&path, dir.join("moved.so")).unwrap();
    assert_eq!(
        describe_closed(&mut Symbolizer::new(), address, &record),
        bare
    );
    // An address outside the module.
    assert_eq!(
        describe_closed(&mut Symbolizer::new(), record.map_end(), &record),
        format!("[{:#x}]", record.map_end())
    );
}

#[test]
fn closed_module_without_build_id_is_checked_by_its_load_span() {
    let dir = scratch("span");
    let path = build(&dir, "libspan.so", &["-g", "-Wl,--build-id=none"]);
    let lib = Loaded::open(&path);
    let (address, start) = lib.static_frame();
    // SAFETY: the handle is open.
    let record = unsafe { ModuleRecord::capture(lib.handle) }.unwrap();
    assert_eq!(record.build_id(), None);
    lib.close();
    let named = describe_closed(&mut Symbolizer::new(), address, &record);
    assert!(
        named.starts_with(&static_name(&path, address, start)),
        "{named}"
    );
    // A record whose range the file's segments do not fit.
    let shifted = ModuleRecord::from_parts(
        record.path(),
        record.bias(),
        record.map_start(),
        record.map_end() + 0x10000,
        None,
    );
    assert_eq!(
        describe_closed(&mut Symbolizer::new(), address, &shifted),
        format!(
            "{}(+{:#x}) [{address:#x}]",
            path.display(),
            address - record.map_start()
        )
    );
}

#[test]
fn the_same_address_is_read_and_parsed_once() {
    let dir = scratch("cache");
    let lib = Loaded::open(&build(&dir, "libcache.so", &["-g"]));
    let (address, _) = lib.static_frame();
    let other = lib.symbol("helper_static_caller") + 4;
    let mut s = Symbolizer::new();
    let first = describe(&mut s, address);
    assert_eq!(describe(&mut s, address), first);
    let after_two = s.stats();
    assert_eq!(
        after_two,
        Stats {
            frames_rendered: 1,
            frames_cached: 1,
            objects_read: 1,
            debug_info_loaded: 1,
        }
    );
    // Another address of the same object: a new frame, the same parse.
    describe(&mut s, other);
    let stats = s.stats();
    assert_eq!(
        (
            stats.frames_rendered,
            stats.objects_read,
            stats.debug_info_loaded
        ),
        (2, 1, 1)
    );
    assert!(s.table_bytes() > 0);
}

#[test]
fn libc_and_libruby_frames_match_dladdr() {
    // With no debug files (an empty debug root), Debian's libc and libruby
    // have only .dynsym: the whole frame is what dladdr gives today.
    let empty_root = scratch("no-debug-root");
    let mut bare = Symbolizer::new();
    bare.set_debug_root(&*empty_root);
    let mut s = Symbolizer::new();
    // SAFETY: dlsym with a NUL-terminated name.
    let malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as usize + 1;
    assert!(dladdr_name(malloc).contains("(malloc+0x1) ["));
    assert_eq!(describe(&mut bare, malloc), dladdr_name(malloc));
    // With the machine's debug files (libc6-dbg), a line may follow.
    let mut function = Vec::new();
    s.describe_function(malloc, &mut function);
    assert_eq!(String::from_utf8(function).unwrap(), dladdr_name(malloc));
    let full = describe(&mut s, malloc);
    assert!(full.starts_with(&dladdr_name(malloc)), "{full}");
    eprintln!("libc: {full}");

    let libruby = Path::new("/lib/x86_64-linux-gnu/libruby-3.1.so.3.1");
    if !libruby.exists() {
        eprintln!("no {}: libruby part skipped", libruby.display());
        return;
    }
    let ruby = Loaded::open(libruby);
    let rb_str_new = ruby.symbol("rb_str_new") + 1;
    assert!(dladdr_name(rb_str_new).contains("(rb_str_new+0x1) ["));
    assert_eq!(describe(&mut bare, rb_str_new), dladdr_name(rb_str_new));
    let mut function = Vec::new();
    s.describe_function(rb_str_new, &mut function);
    assert_eq!(
        String::from_utf8(function).unwrap(),
        dladdr_name(rb_str_new)
    );
}

#[test]
fn odd_bytes_in_paths_are_escaped() {
    let dir = scratch("odd");
    // The source's own name holds a backslash: DWARF records it.
    std::fs::write(dir.join("hel\\per.c"), HELPER_SOURCE).unwrap();
    run(
        &dir,
        "gcc",
        &[
            "-g",
            "-O0",
            "-fPIC",
            "-shared",
            "-o",
            "libodd.so",
            "hel\\per.c",
        ],
    );
    let odd = dir.join("we\nird;lib\x7f.so");
    std::fs::rename(dir.join("libodd.so"), &odd).unwrap();
    let lib = Loaded::open(&odd);
    let (address, start) = lib.static_frame();
    let mut s = Symbolizer::new();
    let escaped_dir = dir.display().to_string();
    assert_eq!(
        describe(&mut s, address),
        format!(
            "{escaped_dir}/we\\nird;lib\\x7f.so(static_caller+{:#x}) [{address:#x}] at hel\\\\per.c:{}",
            address - start,
            call_line()
        )
    );
}

#[test]
fn addresses_in_no_object_and_an_untrusted_loader_print_bare() {
    let mut s = Symbolizer::new();
    let on_stack = 0u64;
    let address = &on_stack as *const u64 as usize;
    assert_eq!(describe(&mut s, address), format!("[{address:#x}]"));
    assert_eq!(describe(&mut s, 0), "[0x0]");
    // SAFETY: dlsym with a NUL-terminated name.
    let malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as usize;
    s.set_loader_check(|| false);
    assert_eq!(describe(&mut s, malloc + 1), format!("[{:#x}]", malloc + 1));
}

#[test]
fn corrupt_files_never_panic_and_fall_back() {
    let dir = scratch("corrupt");
    let path = build(&dir, "libgood.so", &["-g"]);
    let lib = Loaded::open(&path);
    let (address, _) = lib.static_frame();
    // SAFETY: the handle is open.
    let record = unsafe { ModuleRecord::capture(lib.handle) }.unwrap();
    let good = std::fs::read(&path).unwrap();

    // Garbage DWARF in a loaded object: the name stays, no line or a line.
    let junk = vec![0xffu8; 4096];
    std::fs::write(dir.join("junk"), &junk).unwrap();
    run(
        &dir,
        "objcopy",
        &[
            "--update-section",
            ".debug_info=junk",
            "--update-section",
            ".debug_line=junk",
            "--update-section",
            ".debug_abbrev=junk",
            "libgood.so",
            "libjunk.so",
        ],
    );
    let junk_lib = Loaded::open(&dir.join("libjunk.so"));
    let (junk_address, junk_start) = junk_lib.static_frame();
    let name = describe(&mut Symbolizer::new(), junk_address);
    assert!(
        name.starts_with(&static_name(&junk_lib.path, junk_address, junk_start)),
        "{name}"
    );

    // Mutated copies read as the closed module's file: 200 files, each with
    // bytes overwritten at pseudo-random places (headers, tables, DWARF).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // MWRAP_SYMBOLS_FUZZ=N runs N files instead.
    let files = std::env::var("MWRAP_SYMBOLS_FUZZ")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    for i in 0..files {
        let mut bytes = good.clone();
        let hits = 1 + next() % 16;
        for _ in 0..hits {
            // Half the hits land in the first 4 KiB (ELF and program
            // headers), the rest anywhere.
            let span = if next() % 2 == 0 { 4096 } else { bytes.len() };
            let at = (next() as usize) % span.min(bytes.len());
            bytes[at] = next() as u8;
        }
        if i % 10 == 0 {
            bytes.truncate((next() as usize) % good.len());
        }
        let mutated = dir.join(format!("m{i}.so"));
        std::fs::write(&mutated, &bytes).unwrap();
        let module = ModuleRecord::from_parts(
            mutated.as_os_str().as_bytes(),
            record.bias(),
            record.map_start(),
            record.map_end(),
            None,
        );
        let mut s = Symbolizer::new();
        let name = describe_closed(&mut s, address, &module);
        assert!(name.starts_with(&mutated.display().to_string()), "{name}");
        assert!(name.contains(&format!(" [{address:#x}]")), "{name}");
        std::fs::remove_file(&mutated).unwrap();
    }
}
