//! [`Symbolizer`]: printed frames of return addresses, with caches.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mwrap_core::format::{self, NativeSymbol, TextOut};

use crate::dwarf::{self, DebugFile, Lines};
use crate::elf::{self, ElfFacts, FileIdentity, Table};
use crate::loaded::{self, DlFindObjectFn, LinkMap, MappedImage};
use crate::memory;
use crate::module::{ModuleRecord, MODULE_PATH_MAX};
use crate::symbols::SymbolTable;

/// Longest object path or symbol name copied from the loader (as the
/// preload's `dladdr` namer: longer ones are printed cut).
const MAX_NAME: usize = 1024;

/// Frames kept per cache; a full cache is emptied (a bound, not an LRU:
/// the same few thousand frames come back again and again).
const MAX_FRAMES: usize = 1 << 16;

/// Loaded objects' facts, and closed modules, kept; a full table is emptied.
const MAX_MODULES: usize = 4096;

/// Where separate debug files live unless [`Symbolizer::set_debug_root`]
/// says otherwise.
pub const DEFAULT_DEBUG_ROOT: &str = "/usr/lib/debug";

/// Counters, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames computed (cache misses).
    pub frames_rendered: u64,
    /// Frames answered from a cache.
    pub frames_cached: u64,
    /// ELF files read (headers and symbol table), counted per read.
    pub objects_read: u64,
    /// DWARF line information loaded (from an object or its debug file).
    pub debug_info_loaded: u64,
}

/// Names return addresses of this process as printed frames.
///
/// A plain value with no global state and no threads: make one, keep it
/// behind whatever lock its users share, call it outside hooks (it takes
/// the loader's lock through `dladdr`, reads files and allocates). After
/// `fork` the child's copy stays valid: the same objects are mapped at the
/// same addresses.
pub struct Symbolizer {
    debug_root: PathBuf,
    find_object: Option<DlFindObjectFn>,
    loader_trusted: fn() -> bool,
    /// Loaded frames by return address, each with the identity of the
    /// object that held the address then (an object unloaded and another
    /// loaded in its place gives another identity).
    loaded_frames: HashMap<usize, (Option<[usize; 4]>, Frame)>,
    closed_modules: HashMap<ModuleRecord, u32>,
    closed_frames: HashMap<(usize, u32), Frame>,
    modules: HashMap<[usize; 4], Module>,
    objects: HashMap<PathBuf, ObjectEntry>,
    stats: Stats,
}

/// One printed frame; `text[..function_len]` is it without ` at file:line`.
struct Frame {
    text: Box<[u8]>,
    function_len: usize,
}

impl Frame {
    fn write(&self, out: &mut Vec<u8>, function_only: bool) {
        let end = if function_only {
            self.function_len
        } else {
            self.text.len()
        };
        out.extend_from_slice(&self.text[..end]);
    }
}

/// A loaded object as its link map and mapped headers describe it.
#[derive(Clone)]
struct Module {
    bias: usize,
    /// The file to read: its path, `/proc/self/exe` for the main program,
    /// None when there is no file to trust (vdso, a cut path).
    file: Option<PathBuf>,
    image: Option<MappedImage>,
}

struct ObjectEntry {
    identity: FileIdentity,
    /// None: not an ELF file we can read.
    object: Option<ObjectInfo>,
}

/// An object file on disk, read once per identity.
struct ObjectInfo {
    path: PathBuf,
    identity: FileIdentity,
    /// `facts.symbols` is the `.symtab`.
    facts: ElfFacts,
    /// `.dynsym`, read when first needed (objects that were closed).
    dynamic: Option<Option<SymbolTable>>,
    /// Debug information, looked for when first needed.
    debug: Option<DebugInfo>,
}

struct DebugInfo {
    file: Option<DebugFile>,
    lines: Option<Lines>,
}

impl ObjectInfo {
    /// Whether this file is the one that was mapped with `bias` at
    /// `map_start..map_end` (build-ids equal, or else the same load span).
    fn matches(
        &self,
        bias: usize,
        map_start: usize,
        map_end: usize,
        build_id: Option<&[u8]>,
    ) -> bool {
        if let Some(id) = build_id {
            return self.facts.build_id.as_deref() == Some(id);
        }
        match self.facts.load_span {
            Some((low, high)) => {
                let page = loaded::page_size() as u64;
                (bias as u64).wrapping_add(low & !(page - 1)) == map_start as u64
                    && (bias as u64).wrapping_add(high) == map_end as u64
            }
            None => true,
        }
    }

    fn debug(&mut self, root: &Path, stats: &mut Stats) -> &mut DebugInfo {
        self.debug.get_or_insert_with(|| {
            let file = if self.facts.has_dwarf {
                None
            } else {
                dwarf::find_debug_file(&self.path, self.identity, &self.facts, root)
            };
            let (path, identity) = match &file {
                Some(debug) => (&debug.path, debug.identity),
                None => (&self.path, self.identity),
            };
            let lines = if file.is_some() || self.facts.has_dwarf {
                elf::open(path, Some(identity)).and_then(|(f, _)| Lines::load(f))
            } else {
                None
            };
            if lines.is_some() {
                stats.debug_info_loaded += 1;
            }
            DebugInfo { file, lines }
        })
    }

    fn location(&mut self, address: u64, root: &Path, stats: &mut Stats) -> Option<(String, u32)> {
        self.debug(root, stats).lines.as_mut()?.location(address)
    }

    /// The `.symtab` symbol (the object's, else its debug file's) holding
    /// ELF address `address`.
    fn full_symbol(
        &mut self,
        address: u64,
        root: &Path,
        stats: &mut Stats,
    ) -> Option<(Vec<u8>, u64)> {
        if let Some(found) = self
            .facts
            .symbols
            .as_ref()
            .and_then(|t| t.containing(address))
        {
            return Some((found.0.to_vec(), found.1));
        }
        if self.facts.symbols.is_some() {
            return None;
        }
        let debug = self.debug(root, stats).file.as_ref()?;
        let (name, start) = debug.facts.symbols.as_ref()?.containing(address)?;
        Some((name.to_vec(), start))
    }

    /// [`Self::full_symbol`], else the `.dynsym` symbol.
    fn any_symbol(
        &mut self,
        address: u64,
        root: &Path,
        stats: &mut Stats,
    ) -> Option<(Vec<u8>, u64)> {
        if let Some(found) = self.full_symbol(address, root, stats) {
            return Some(found);
        }
        let dynamic = self.dynamic.get_or_insert_with(|| {
            let (file, _) = elf::open(&self.path, Some(self.identity))?;
            elf::read_facts(file, Table::Dynamic)?.symbols
        });
        let (name, start) = dynamic.as_ref()?.containing(address)?;
        Some((name.to_vec(), start))
    }

    fn heap_bytes(&self) -> usize {
        let table = |t: &Option<SymbolTable>| t.as_ref().map_or(0, SymbolTable::heap_bytes);
        let debug = self.debug.as_ref().map_or(0, |d| {
            d.file.as_ref().map_or(0, |f| table(&f.facts.symbols))
                + d.lines.as_ref().map_or(0, Lines::section_bytes)
        });
        table(&self.facts.symbols) + self.dynamic.as_ref().map_or(0, table) + debug
    }
}

/// The object at `path`, read again when the file there changed.
fn object_at<'a>(
    objects: &'a mut HashMap<PathBuf, ObjectEntry>,
    stats: &mut Stats,
    path: &Path,
) -> Option<&'a mut ObjectInfo> {
    let identity = FileIdentity::at(path)?;
    if objects
        .get(path)
        .is_none_or(|entry| entry.identity != identity)
    {
        stats.objects_read += 1;
        let object = elf::open(path, Some(identity)).and_then(|(file, identity)| {
            Some(ObjectInfo {
                path: path.to_path_buf(),
                identity,
                facts: elf::read_facts(file, Table::Full)?,
                dynamic: None,
                debug: None,
            })
        });
        objects.insert(path.to_path_buf(), ObjectEntry { identity, object });
    }
    objects.get_mut(path)?.object.as_mut()
}

/// `[0x…]`: an address no object is known to hold.
fn address_only(out: &mut Vec<u8>, address: usize) {
    format::native_location(out, address, &NativeSymbol::default());
}

/// The printed frame: `native_location`'s text, then ` at file:LINE`.
fn frame(address: usize, symbol: &NativeSymbol<'_>, location: Option<(String, u32)>) -> Frame {
    let mut text = Vec::new();
    format::native_location(&mut text, address, symbol);
    let function_len = text.len();
    if let Some((file, line)) = location {
        text.extend_from_slice(b" at ");
        text.push_escaped(file.as_bytes());
        text.push_byte(b':');
        text.push_decimal(line.into(), 0);
    }
    Frame {
        text: text.into_boxed_slice(),
        function_len,
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer with empty caches, debug files under
    /// [`DEFAULT_DEBUG_ROOT`], and `_dl_find_object` when glibc has it.
    /// Takes the loader's lock (`dlsym`): make it outside hooks.
    pub fn new() -> Self {
        Symbolizer {
            debug_root: PathBuf::from(DEFAULT_DEBUG_ROOT),
            find_object: loaded::resolve_dl_find_object(),
            loader_trusted: || true,
            loaded_frames: HashMap::new(),
            closed_modules: HashMap::new(),
            closed_frames: HashMap::new(),
            modules: HashMap::new(),
            objects: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Looks for separate debug files under `root` instead of
    /// `/usr/lib/debug` (build-id links and the debug-link tree).
    pub fn set_debug_root(&mut self, root: impl Into<PathBuf>) {
        self.debug_root = root.into();
    }

    /// `trusted` says, at each call, whether the loader's lists may be
    /// read (the preload's `dladdr_is_safe`: false in a child forked during
    /// a `dlclose`). When it says no, loaded addresses print as `[0x…]`.
    pub fn set_loader_check(&mut self, trusted: fn() -> bool) {
        self.loader_trusted = trusted;
    }

    /// Uses `find` (or, with None, `dladdr` alone) to tell whether a cached
    /// frame's object is still the one loaded there.
    pub fn set_dl_find_object(&mut self, find: Option<DlFindObjectFn>) {
        self.find_object = find;
        self.loaded_frames.clear();
        self.modules.clear();
    }

    /// Counters since [`Symbolizer::new`].
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Heap bytes held by symbol tables and DWARF sections (addr2line's
    /// parsed line tables and the frame caches come on top).
    pub fn table_bytes(&self) -> usize {
        self.objects
            .values()
            .filter_map(|e| e.object.as_ref())
            .map(ObjectInfo::heap_bytes)
            .sum()
    }

    /// Appends the printed frame of return address `address` of this
    /// process: `backtrace_symbols`' `/lib/libfoo.so(func+0x1c) [0x7f…]`,
    /// `obj(+0xOFFSET) [0x…]` or `[0x…]` as
    /// [`mwrap_core::format::native_location`] prints it, static functions
    /// named from the object's `.symtab`, then ` at file.c:LINE` when the
    /// object or its debug file has DWARF lines. Symbol and line are those
    /// of `address - 1`, inside the call; the address printed is `address`.
    pub fn describe(&mut self, address: usize, out: &mut Vec<u8>) {
        self.describe_loaded(address, false, out);
    }

    /// [`Self::describe`] without ` at file:LINE`.
    pub fn describe_function(&mut self, address: usize, out: &mut Vec<u8>) {
        self.describe_loaded(address, true, out);
    }

    /// The printed frame of `address`, which belonged to `module` before
    /// it was `dlclose`d: named from the file at the module's path, read
    /// with the module's bias. When that file is gone or is another file
    /// (build-id, or else load span, differs), or its path was cut, the
    /// frame is `path(+0xOFFSET) [0x…]`; an address outside the module, or
    /// a module without a path, gives `[0x…]`.
    pub fn describe_closed(&mut self, address: usize, module: &ModuleRecord, out: &mut Vec<u8>) {
        self.describe_in_closed(address, module, false, out);
    }

    /// [`Self::describe_closed`] without ` at file:LINE`.
    pub fn describe_closed_function(
        &mut self,
        address: usize,
        module: &ModuleRecord,
        out: &mut Vec<u8>,
    ) {
        self.describe_in_closed(address, module, true, out);
    }

    fn describe_loaded(&mut self, address: usize, function_only: bool, out: &mut Vec<u8>) {
        mwrap_core::errno::preserved(|| {
            if address == 0 || !(self.loader_trusted)() {
                return address_only(out, address);
            }
            let probe = address - 1;
            // With `_dl_find_object`, a cached frame is checked without the
            // loader's lock; without it, `dladdr` tells the object apart.
            let found = self
                .find_object
                .map(|find| loaded::find_object(find, probe));
            if let (Some(key), Some((cached_key, cached))) =
                (found, self.loaded_frames.get(&address))
            {
                if *cached_key == key {
                    self.stats.frames_cached += 1;
                    return cached.write(out, function_only);
                }
            }
            let dl = loaded::dladdr_with_link_map(probe);
            let key = found.unwrap_or_else(|| {
                dl.map(|(info, link_map)| [link_map, info.dli_fbase as usize, 0, 0])
            });
            if found.is_none() {
                if let Some((cached_key, cached)) = self.loaded_frames.get(&address) {
                    if *cached_key == key {
                        self.stats.frames_cached += 1;
                        return cached.write(out, function_only);
                    }
                }
            }
            self.stats.frames_rendered += 1;
            let frame = self.render_loaded(address, key, dl);
            frame.write(out, function_only);
            if self.loaded_frames.len() >= MAX_FRAMES {
                self.loaded_frames.clear();
            }
            self.loaded_frames.insert(address, (key, frame));
        })
    }

    fn render_loaded(
        &mut self,
        address: usize,
        key: Option<[usize; 4]>,
        dl: Option<(libc::Dl_info, usize)>,
    ) -> Frame {
        let probe = address - 1;
        let Some((info, link_map)) = dl else {
            return frame(address, &NativeSymbol::default(), None);
        };
        let mut object_buf = [0u8; MAX_NAME];
        let mut symbol_buf = [0u8; MAX_NAME];
        let object = memory::copy_cstr(info.dli_fname as usize, &mut object_buf)
            .map(|(s, _)| s)
            .filter(|s| !s.is_empty());
        let mut symbol = NativeSymbol {
            object,
            object_base: info.dli_fbase as usize,
            symbol: memory::copy_cstr(info.dli_sname as usize, &mut symbol_buf)
                .map(|(s, _)| s)
                .filter(|s| !s.is_empty()),
            symbol_address: info.dli_saddr as usize,
        };
        if object.is_none() {
            return frame(address, &symbol, None);
        }
        let module = self.module(key, link_map, symbol.object_base);
        let Some(path) = module.file.as_deref() else {
            return frame(address, &symbol, None);
        };
        let Some(object) = object_at(&mut self.objects, &mut self.stats, path) else {
            return frame(address, &symbol, None);
        };
        let fits = match &module.image {
            Some(image) => object.matches(
                module.bias,
                image.map_start,
                image.map_end,
                (image.build_id_len > 0).then(|| &image.build_id[..image.build_id_len]),
            ),
            None => true,
        };
        if !fits {
            return frame(address, &symbol, None);
        }
        let elf_address = probe.wrapping_sub(module.bias) as u64;
        let location = object.location(elf_address, &self.debug_root, &mut self.stats);
        let static_name;
        if symbol.symbol.is_none() {
            if let Some((name, start)) =
                object.full_symbol(elf_address, &self.debug_root, &mut self.stats)
            {
                static_name = name;
                symbol.symbol = Some(&static_name);
                symbol.symbol_address = module.bias.wrapping_add(start as usize);
            }
        }
        frame(address, &symbol, location)
    }

    /// The loaded object behind `link_map`, read once per identity `key`.
    fn module(&mut self, key: Option<[usize; 4]>, link_map: usize, base: usize) -> Module {
        if let Some(module) = key.and_then(|k| self.modules.get(&k)) {
            return module.clone();
        }
        let module = match memory::read_value::<LinkMap>(link_map) {
            None => Module {
                bias: base,
                file: None,
                image: None,
            },
            Some(map) => {
                let mut name_buf = [0u8; MODULE_PATH_MAX];
                let file = match memory::copy_cstr(map.l_name, &mut name_buf) {
                    Some(([], _)) => Some(PathBuf::from("/proc/self/exe")),
                    // A name without a slash is no file (the vdso's).
                    Some((name, false)) if name.contains(&b'/') => {
                        Some(PathBuf::from(OsStr::from_bytes(name)))
                    }
                    _ => None,
                };
                Module {
                    bias: map.l_addr,
                    file,
                    image: loaded::read_mapped_image(base, map.l_addr),
                }
            }
        };
        if let Some(k) = key {
            if self.modules.len() >= MAX_MODULES {
                self.modules.clear();
            }
            self.modules.insert(k, module.clone());
        }
        module
    }

    fn describe_in_closed(
        &mut self,
        address: usize,
        module: &ModuleRecord,
        function_only: bool,
        out: &mut Vec<u8>,
    ) {
        mwrap_core::errno::preserved(|| {
            if self.closed_modules.len() >= MAX_MODULES && !self.closed_modules.contains_key(module)
            {
                self.closed_modules.clear();
                self.closed_frames.clear();
            }
            let next_id = self.closed_modules.len() as u32;
            let id = *self.closed_modules.entry(*module).or_insert(next_id);
            if let Some(cached) = self.closed_frames.get(&(address, id)) {
                self.stats.frames_cached += 1;
                return cached.write(out, function_only);
            }
            self.stats.frames_rendered += 1;
            let frame = self.render_closed(address, module);
            frame.write(out, function_only);
            if self.closed_frames.len() >= MAX_FRAMES {
                self.closed_frames.clear();
            }
            self.closed_frames.insert((address, id), frame);
        })
    }

    fn render_closed(&mut self, address: usize, module: &ModuleRecord) -> Frame {
        if address == 0 || !module.contains(address) || module.path().is_empty() {
            return frame(address, &NativeSymbol::default(), None);
        }
        let mut symbol = NativeSymbol {
            object: Some(module.path()),
            object_base: module.map_start(),
            symbol: None,
            symbol_address: 0,
        };
        if module.path_truncated() {
            return frame(address, &symbol, None);
        }
        let path = Path::new(OsStr::from_bytes(module.path()));
        let Some(object) = object_at(&mut self.objects, &mut self.stats, path) else {
            return frame(address, &symbol, None);
        };
        if !object.matches(
            module.bias(),
            module.map_start(),
            module.map_end(),
            module.build_id(),
        ) {
            return frame(address, &symbol, None);
        }
        let elf_address = (address - 1).wrapping_sub(module.bias()) as u64;
        let location = object.location(elf_address, &self.debug_root, &mut self.stats);
        let name;
        if let Some((found, start)) =
            object.any_symbol(elf_address, &self.debug_root, &mut self.stats)
        {
            name = found;
            symbol.symbol = Some(&name);
            symbol.symbol_address = module.bias().wrapping_add(start as usize);
        }
        frame(address, &symbol, location)
    }
}
