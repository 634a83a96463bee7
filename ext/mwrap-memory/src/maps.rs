//! What the kernel says about this process's memory: `/proc/self/smaps`
//! (and `smaps_rollup`), `mincore` and page headers read back with
//! `process_vm_readv`. No Ruby here: [`crate::breakdown`] turns it
//! into the parts of RSS.
//!
//! Everything read from `/proc` goes into memory mapped here with `mmap`,
//! not `malloc`: a buffer of a megabyte through glibc would be an mmapped
//! chunk, and freeing it would raise glibc's mmap threshold for the rest
//! of the process (and count in the very statistics being measured).

use core::ffi::c_void;

/// The kernel's page size here (mincore's unit).
pub fn os_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// An anonymous private mapping used as a growable byte buffer.
struct MappedBuf {
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

impl MappedBuf {
    fn new(cap: usize) -> Option<Self> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(MappedBuf {
            ptr: ptr.cast(),
            cap,
            len: 0,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping were written by read(2).
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for MappedBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.cap) };
    }
}

/// The whole of `path` (a NUL-terminated /proc file), read into mapped
/// memory; None when it cannot be read.
fn read_proc(path: &core::ffi::CStr) -> Option<MappedBuf> {
    // Multiples of a megabyte: never twice a Ruby heap page size, which
    // the preload's mmap hook would take for a heap page.
    let mut buf = MappedBuf::new(1 << 20)?;
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let ok = loop {
        if buf.len == buf.cap {
            let Some(mut bigger) = MappedBuf::new(buf.cap * 2) else {
                break false;
            };
            // SAFETY: both mappings are ours, disjoint, and `bigger` has room.
            unsafe { core::ptr::copy_nonoverlapping(buf.ptr, bigger.ptr, buf.len) };
            bigger.len = buf.len;
            buf = bigger;
        }
        // SAFETY: reads into the unused tail of our mapping.
        let n = unsafe { libc::read(fd, buf.ptr.add(buf.len).cast::<c_void>(), buf.cap - buf.len) };
        match n {
            0 => break true,
            n if n > 0 => buf.len += n as usize,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => break false,
        }
    };
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    ok.then_some(buf)
}

/// One line of `/proc/self/smaps` (a mapping) and the fields we use.
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub readable: bool,
    pub writable: bool,
    /// No file behind it: no inode and no path (or a `[…]` name).
    pub anonymous: bool,
    pub kind: Special,
    /// Resident bytes.
    pub rss: u64,
    /// Resident bytes that belong to no file (anonymous or copy-on-write).
    pub anon_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Special {
    #[default]
    None,
    /// `[heap]`: the brk area, glibc's main arena.
    Heap,
    /// `[stack]`: the main thread's stack.
    Stack,
    /// `[vdso]`, `[vvar]` and other kernel-provided names.
    Kernel,
}

impl Mapping {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn contains(&self, address: usize) -> bool {
        (self.start..self.end).contains(&address)
    }
}

/// Totals of the whole address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollup {
    pub rss: u64,
    pub anon_bytes: u64,
}

/// "Name:   123 kB" → bytes.
fn kb_field(line: &[u8], name: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    let text = std::str::from_utf8(rest).ok()?;
    let mut words = text.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(n * 1024),
        None => Some(n),
        _ => None,
    }
}

fn parse_header(line: &[u8]) -> Option<Mapping> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.splitn(6, ' ');
    let range = words.next()?;
    let perms = words.next()?.as_bytes();
    let _offset = words.next()?;
    let _dev = words.next()?;
    let inode: u64 = words.next()?.parse().ok()?;
    let path = words.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    if perms.len() < 4 || end < start {
        return None;
    }
    let kind = match path {
        "[heap]" => Special::Heap,
        "[stack]" => Special::Stack,
        p if p.starts_with("[anon") || p.is_empty() => Special::None,
        p if p.starts_with('[') => Special::Kernel,
        _ => Special::None,
    };
    Some(Mapping {
        start,
        end,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        anonymous: inode == 0 && !path.starts_with('/') && kind != Special::Kernel,
        kind,
        rss: 0,
        anon_bytes: 0,
    })
}

/// Every mapping of `text` (the format of `/proc/PID/smaps`), by address.
pub fn parse_smaps(text: &[u8]) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let first = line.split(|&b| b == b' ').next().unwrap_or(b"");
        if first.is_empty() {
            continue;
        }
        if !first.ends_with(b":") {
            if let Some(m) = parse_header(line) {
                maps.push(m);
            }
            continue;
        }
        let Some(m) = maps.last_mut() else { continue };
        if let Some(n) = kb_field(line, b"Rss") {
            m.rss = n;
        } else if let Some(n) = kb_field(line, b"Anonymous") {
            m.anon_bytes = n;
        }
    }
    maps
}

/// `Rss` and `Anonymous` of `text` (the format of `smaps_rollup`).
pub fn parse_rollup(text: &[u8]) -> Option<Rollup> {
    let mut rss = None;
    let mut anon = None;
    for line in text.split(|&b| b == b'\n') {
        rss = rss.or_else(|| kb_field(line, b"Rss"));
        anon = anon.or_else(|| kb_field(line, b"Anonymous"));
    }
    Some(Rollup {
        rss: rss?,
        anon_bytes: anon?,
    })
}

/// Every mapping of this process, with the buffer their text was read
/// into. Keep it until done with the mappings: the kernel merges it with
/// its anonymous neighbours, so unmapping it would cut a hole in a
/// mapping listed here.
pub struct Smaps {
    pub maps: Vec<Mapping>,
    buf: MappedBuf,
}

impl Smaps {
    /// Resident bytes of the buffer, which smaps counts: not the program's.
    pub fn own_resident(&self) -> u64 {
        resident_bytes(self.buf.ptr as usize, self.buf.cap).unwrap_or(0)
    }
}

/// This process's mappings; None when /proc cannot be read.
pub fn smaps() -> Option<Smaps> {
    let buf = read_proc(c"/proc/self/smaps")?;
    let maps = parse_smaps(buf.bytes());
    (!maps.is_empty()).then_some(Smaps { maps, buf })
}

/// This process's resident totals: `smaps_rollup`, or the sum over
/// `smaps` on kernels without it (before 4.14).
pub fn rollup() -> Option<Rollup> {
    if let Some(r) = read_proc(c"/proc/self/smaps_rollup").and_then(|b| parse_rollup(b.bytes())) {
        return Some(r);
    }
    let maps = smaps()?.maps;
    Some(Rollup {
        rss: maps.iter().map(|m| m.rss).sum(),
        anon_bytes: maps.iter().map(|m| m.anon_bytes).sum(),
    })
}

/// Resident bytes of `[start, start + len)` by `mincore` (whole OS pages);
/// None when the range is not mapped.
pub fn resident_bytes(start: usize, len: usize) -> Option<u64> {
    let page = os_page_size();
    let mut vec = [0u8; 4096];
    let mut resident = 0u64;
    let mut at = start & !(page - 1);
    let end = start + len;
    while at < end {
        let pages = (end - at).div_ceil(page).min(vec.len());
        // SAFETY: `vec` has room for `pages` entries; mincore only reads the
        // page tables of the range.
        let rc = unsafe { libc::mincore(at as *mut c_void, pages * page, vec.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        resident += vec[..pages].iter().filter(|&&v| v & 1 != 0).count() as u64 * page as u64;
        at += pages * page;
    }
    Some(resident)
}

/// glibc's non-main arena heaps are this large and aligned to it
/// (`HEAP_MAX_SIZE`: 2 × `DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit).
pub const GLIBC_HEAP_MAX: usize = 64 << 20;
/// glibc's chunk flag for a chunk that has a mapping of its own.
const IS_MMAPPED: usize = 2;

/// What a resident page of an anonymous mapping turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageOwner {
    /// glibc's: an mmapped chunk or a non-main arena heap.
    Malloc,
    /// One of Ruby's heap pages (counted apart, with mincore).
    RubyHeap,
    Other,
}

/// Resident bytes of the anonymous mappings walked by [`Walker`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    /// In glibc's own mappings (mmapped chunks, arena heaps).
    pub malloc: u64,
    /// In none of glibc's, Ruby's heap pages or a stack.
    pub other: u64,
}

/// Walks the resident pages of anonymous mappings, telling glibc's
/// mappings by their headers: an mmapped chunk starts with `prev_size`
/// 0 and `size` = its length | IS_MMAPPED; a non-main arena heap is
/// 64 MiB-aligned and starts with a `heap_info` (`ar_ptr`, `prev`, `size`,
/// `mprotect_size`). Mappings the kernel merged are walked chunk by chunk.
/// Headers are read with `process_vm_readv`, which fails (EFAULT) rather
/// than faults if another thread unmaps a page meanwhile.
pub struct Walker<'a> {
    /// Ruby's heap pages (sorted addresses) when the preload knows them.
    pub ruby_pages: &'a [u64],
    pub ruby_page_size: usize,
    /// Look for glibc's headers (false when another allocator is underneath).
    pub glibc: bool,
}

/// Pages looked at per mincore call and headers read per process_vm_readv.
const WINDOW: usize = 256;

impl Walker<'_> {
    fn in_ruby_page(&self, address: usize) -> Option<usize> {
        if self.ruby_page_size == 0 {
            return None;
        }
        let i = self.ruby_pages.partition_point(|&p| p as usize <= address);
        let page = *self.ruby_pages.get(i.checked_sub(1)?)? as usize;
        (address < page + self.ruby_page_size).then_some(page + self.ruby_page_size)
    }

    /// Adds the resident pages of `map` to `out`.
    pub fn walk(&self, map: &Mapping, out: &mut Walked) {
        let page = os_page_size();
        let mut resident = [0u8; WINDOW];
        let mut headers = [[0usize; 4]; WINDOW];
        let mut owner = PageOwner::Other;
        let mut owned_until = map.start;
        let mut at = map.start;
        while at < map.end {
            let pages = ((map.end - at) / page).min(WINDOW);
            if pages == 0 {
                break;
            }
            // SAFETY: `resident` has room for `pages` entries.
            let rc =
                unsafe { libc::mincore(at as *mut c_void, pages * page, resident.as_mut_ptr()) };
            if rc != 0 {
                // Part of the window was unmapped meanwhile (another
                // thread): look at its pages one by one.
                for (i, r) in resident[..pages].iter_mut().enumerate() {
                    let address = (at + i * page) as *mut c_void;
                    // SAFETY: as above, for one page.
                    if unsafe { libc::mincore(address, page, r) } != 0 {
                        *r = 0;
                    }
                }
            }
            read_headers(at, page, &resident[..pages], &mut headers[..pages]);
            for i in 0..pages {
                let address = at + i * page;
                if resident[i] & 1 == 0 {
                    continue;
                }
                if address >= owned_until {
                    (owner, owned_until) = self.owner_at(address, page, &headers[i], map.end);
                }
                match owner {
                    PageOwner::Malloc => out.malloc += page as u64,
                    PageOwner::Other => out.other += page as u64,
                    PageOwner::RubyHeap => {}
                }
            }
            at += pages * page;
        }
    }

    /// Who owns the resident page at `address` (whose first words are
    /// `header`), and up to where that owner continues.
    fn owner_at(
        &self,
        address: usize,
        page: usize,
        header: &[usize; 4],
        end: usize,
    ) -> (PageOwner, usize) {
        if let Some(until) = self.in_ruby_page(address) {
            return (PageOwner::RubyHeap, until);
        }
        if self.glibc {
            let [prev_size, size, third, fourth] = *header;
            let len = size & !7;
            if prev_size == 0
                && size & 7 == IS_MMAPPED
                && len >= page
                && len.is_multiple_of(page)
                && len <= end - address
            {
                return (PageOwner::Malloc, address + len);
            }
            // heap_info: ar_ptr, prev, size, mprotect_size.
            let (ar_ptr, prev, heap_size, mprotect_size) = (prev_size, size, third, fourth);
            if address.is_multiple_of(GLIBC_HEAP_MAX)
                && ar_ptr != 0
                && prev.is_multiple_of(GLIBC_HEAP_MAX)
                && heap_size > 0
                && heap_size <= GLIBC_HEAP_MAX
                && mprotect_size <= GLIBC_HEAP_MAX
                && heap_size.is_multiple_of(page)
            {
                return (PageOwner::Malloc, address + GLIBC_HEAP_MAX);
            }
        }
        (PageOwner::Other, address + page)
    }
}

/// Reads the first four words of every resident page of the window at
/// `start` into `out` (zeros where a page is not resident or unreadable).
fn read_headers(start: usize, page: usize, resident: &[u8], out: &mut [[usize; 4]]) {
    let mut local: [libc::iovec; WINDOW] = [libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; WINDOW];
    let mut remote = local;
    let mut n = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = [0; 4];
        if resident[i] & 1 == 0 {
            continue;
        }
        local[n] = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: core::mem::size_of::<[usize; 4]>(),
        };
        remote[n] = libc::iovec {
            iov_base: (start + i * page) as *mut c_void,
            iov_len: core::mem::size_of::<[usize; 4]>(),
        };
        n += 1;
    }
    let mut done = 0;
    while done < n {
        // SAFETY: every local iovec points into `out`, every remote one at
        // our own address space; the kernel checks the remote ranges.
        let got = unsafe {
            libc::process_vm_readv(
                libc::getpid(),
                local[done..n].as_ptr(),
                (n - done) as libc::c_ulong,
                remote[done..n].as_ptr(),
                (n - done) as libc::c_ulong,
                0,
            )
        };
        if got < 0 {
            return; // Not allowed here (seccomp): every page reads as zeros.
        }
        // Reads stop at the first iovec that failed; skip it.
        let whole = got as usize / core::mem::size_of::<[usize; 4]>();
        done += whole + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &[u8] = b"\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  64 kB
Anonymous:            64 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000100000 r-xp 00001000 08:01 1234                       /usr/lib/libruby.so.3.1
Rss:                 800 kB
Anonymous:             4 kB
7f0000200000-7f0000201000 ---p 00000000 00:00 0 
Rss:                   0 kB
Anonymous:             0 kB
7f0000201000-7f0000301000 rw-p 00000000 00:00 0 
Rss:                  12 kB
Anonymous:            12 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  20 kB
Anonymous:            20 kB
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn smaps_lines_become_mappings() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 6);
        assert_eq!(maps[0].kind, Special::Heap);
        assert_eq!((maps[0].rss, maps[0].anon_bytes), (64 << 10, 64 << 10));
        assert!(!maps[1].anonymous && maps[1].readable && !maps[1].writable);
        assert_eq!(maps[1].anon_bytes, 4 << 10);
        assert!(maps[2].anonymous && !maps[2].readable);
        assert_eq!(maps[3].start, 0x7f0000201000);
        assert_eq!(maps[3].len(), 0x100000);
        assert_eq!(maps[4].kind, Special::Stack);
        assert_eq!(maps[5].kind, Special::Kernel);
        assert!(!maps[5].anonymous);
    }

    #[test]
    fn rollup_totals_are_read_in_bytes() {
        let text = b"55d0c0a00000-7ffd00102000 ---p 00000000 00:00 0    [rollup]\n\
Rss:               10240 kB\nPss:                9000 kB\nAnonymous:          6144 kB\n";
        assert_eq!(
            parse_rollup(text),
            Some(Rollup {
                rss: 10 << 20,
                anon_bytes: 6 << 20
            })
        );
        assert_eq!(parse_rollup(b"Rss: 1 kB\n"), None);
    }

    #[test]
    fn this_process_has_a_stack_and_resident_pages() {
        let smaps = smaps().expect("/proc/self/smaps");
        assert!(smaps.own_resident() > 0);
        let maps = &smaps.maps;
        let local = 0u8;
        let here = &local as *const u8 as usize;
        assert!(maps.iter().any(|m| m.contains(here)));
        let r = rollup().unwrap();
        assert!(r.rss >= r.anon_bytes && r.anon_bytes > 0);
        assert_eq!(resident_bytes(here & !4095, 4096), Some(4096));
    }

    #[test]
    fn a_walk_tells_a_glibc_mmapped_chunk_from_other_memory() {
        let page = os_page_size();
        // SAFETY: a fresh mapping of four pages, unmapped at the end.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                4 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as usize;
        let words = base as *mut usize;
        // SAFETY: inside the mapping: a fake chunk header over two pages,
        // then two pages of other data, every page touched.
        unsafe {
            words.write(0);
            words.add(1).write((2 * page) | IS_MMAPPED);
            for i in 1..4 {
                ((base + i * page) as *mut usize).write(7);
            }
        }
        let map = Mapping {
            start: base,
            end: base + 4 * page,
            readable: true,
            writable: true,
            anonymous: true,
            ..Default::default()
        };
        let mut out = Walked::default();
        let walker = Walker {
            ruby_pages: &[],
            ruby_page_size: 0,
            glibc: true,
        };
        walker.walk(&map, &mut out);
        assert_eq!(out.malloc, 2 * page as u64);
        assert_eq!(out.other, 2 * page as u64);
        let mut out = Walked::default();
        Walker {
            ruby_pages: &[(base + 2 * page) as u64],
            ruby_page_size: page,
            glibc: true,
        }
        .walk(&map, &mut out);
        assert_eq!(out.other, page as u64);
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(base as *mut c_void, 4 * page) };
    }
}
