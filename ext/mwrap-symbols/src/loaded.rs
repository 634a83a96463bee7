//! What the dynamic loader and the mapped ELF headers say about an object
//! loaded in this process. Everything is read through [`crate::memory`]
//! (the object may be unmapped meanwhile) and nothing allocates, so that
//! [`crate::ModuleRecord::capture`] may run inside a `dlclose` hook.

use core::ffi::{c_int, c_void};

use crate::memory::{self, Plain};

/// The public head of glibc's `struct link_map` (`<link.h>`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LinkMap {
    /// Load bias: the object's addresses are its ELF addresses plus this.
    pub l_addr: usize,
    /// Path the object was loaded from; "" for the main program.
    pub l_name: usize,
    /// Its dynamic section, in memory.
    pub l_ld: usize,
    pub l_next: usize,
    pub l_prev: usize,
}

// SAFETY: a struct of integers.
unsafe impl Plain for LinkMap {
    fn zeroed() -> Self {
        LinkMap {
            l_addr: 0,
            l_name: 0,
            l_ld: 0,
            l_next: 0,
            l_prev: 0,
        }
    }
}

/// glibc's `struct dl_find_object` (`<dlfcn.h>`, glibc 2.35): the fields
/// read here come first on every architecture; the tail is room for the
/// architecture-specific and reserved fields.
#[repr(C)]
pub struct DlFindObject {
    flags: u64,
    map_start: usize,
    map_end: usize,
    link_map: usize,
    eh_frame: usize,
    rest: [u64; 16],
}

impl DlFindObject {
    fn zeroed() -> Self {
        DlFindObject {
            flags: 0,
            map_start: 0,
            map_end: 0,
            link_map: 0,
            eh_frame: 0,
            rest: [0; 16],
        }
    }
}

/// glibc's `_dl_find_object`: lock-free, async-signal-safe, allocates nothing.
pub type DlFindObjectFn = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;

/// `_dl_find_object` when this glibc has it (2.35 and later). It is looked
/// up rather than linked, which would make the library need glibc 2.35.
/// Call it outside hooks: `dlsym` takes the loader's lock.
pub fn resolve_dl_find_object() -> Option<DlFindObjectFn> {
    // SAFETY: dlsym with NUL-terminated names.
    let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
    if found.is_null() {
        // A lookup that succeeds clears the failed one's dlerror() message,
        // which the program could otherwise read as its own.
        // SAFETY: as above.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"dlsym".as_ptr()) };
        return None;
    }
    // SAFETY: `_dl_find_object` has this signature in every glibc that has it.
    Some(unsafe { core::mem::transmute::<*mut c_void, DlFindObjectFn>(found) })
}

/// Where `_dl_find_object` puts `address`: `(map_start, map_end, link_map,
/// eh_frame)`, which together tell one loaded object from another.
pub(crate) fn find_object(find: DlFindObjectFn, address: usize) -> Option<[usize; 4]> {
    let mut result = DlFindObject::zeroed();
    // SAFETY: `_dl_find_object` only reads the loader's tables and fills
    // `result`, which is at least as large as glibc's struct.
    let rc = unsafe { find(address as *mut c_void, &mut result) };
    (rc == 0).then_some([
        result.map_start,
        result.map_end,
        result.link_map,
        result.eh_frame,
    ])
}

/// Longest build-id kept (GNU ld writes 20 bytes; `--build-id=0x…` may be
/// longer, and such an id is not kept).
pub const BUILD_ID_MAX: usize = 32;

/// What an object's mapped program headers say.
#[derive(Clone, Copy)]
pub(crate) struct MappedImage {
    /// Start of the first `PT_LOAD`, page-aligned: glibc's `l_map_start`.
    pub map_start: usize,
    /// End of the last `PT_LOAD`: glibc's `l_map_end`.
    pub map_end: usize,
    pub build_id: [u8; BUILD_ID_MAX],
    pub build_id_len: usize,
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
const ELF_HEADER_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// More program headers than any linker writes: a sign of garbage.
const MAX_PHDRS: usize = 256;

/// The page size the loader aligns segments to.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf reads a constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Reads the 64-bit native ELF headers mapped at `header` of an object
/// loaded with bias `bias`; None when `header` holds no such header.
pub(crate) fn read_mapped_image(header: usize, bias: usize) -> Option<MappedImage> {
    if usize::BITS != 64 {
        return None;
    }
    let mut ehdr = [0u8; ELF_HEADER_SIZE];
    if !memory::read_exact(header, &mut ehdr) {
        return None;
    }
    let native = if cfg!(target_endian = "little") { 1 } else { 2 };
    if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != native {
        return None;
    }
    let phoff = u64_at(&ehdr, 32) as usize;
    let phentsize = u16_at(&ehdr, 54) as usize;
    let phnum = u16_at(&ehdr, 56) as usize;
    if phentsize != PHDR_SIZE || phnum > MAX_PHDRS {
        return None;
    }
    let page = page_size();
    let mut image = MappedImage {
        map_start: usize::MAX,
        map_end: 0,
        build_id: [0; BUILD_ID_MAX],
        build_id_len: 0,
    };
    for i in 0..phnum {
        let mut ph = [0u8; PHDR_SIZE];
        let at = header.checked_add(phoff)?.checked_add(i * PHDR_SIZE)?;
        if !memory::read_exact(at, &mut ph) {
            return None;
        }
        let p_type = u32_at(&ph, 0);
        let vaddr = u64_at(&ph, 16) as usize;
        let memsz = u64_at(&ph, 40) as usize;
        let align = u64_at(&ph, 48) as usize;
        match p_type {
            PT_LOAD => {
                let start = bias.wrapping_add(vaddr & !(page - 1));
                let end = bias.wrapping_add(vaddr).wrapping_add(memsz);
                image.map_start = image.map_start.min(start);
                image.map_end = image.map_end.max(end);
            }
            PT_NOTE if image.build_id_len == 0 => {
                let notes = bias.wrapping_add(vaddr);
                image.build_id_len = read_build_id(notes, memsz, align, &mut image.build_id);
            }
            _ => {}
        }
    }
    (image.map_start < image.map_end).then_some(image)
}

/// Looks for the GNU build-id note among the notes at `at..at + size`;
/// copies it into `out` and returns its length (0: none, or too long).
fn read_build_id(at: usize, size: usize, align: usize, out: &mut [u8; BUILD_ID_MAX]) -> usize {
    // Notes in an 8-aligned segment are padded to 8 bytes, others to 4.
    let pad = if align == 8 { 8 } else { 4 };
    let round = |n: usize| n.div_ceil(pad).saturating_mul(pad);
    let mut offset = 0usize;
    while offset.checked_add(12).is_some_and(|end| end <= size) {
        let mut head = [0u8; 12];
        if !memory::read_exact(at.wrapping_add(offset), &mut head) {
            return 0;
        }
        let namesz = u32_at(&head, 0) as usize;
        let descsz = u32_at(&head, 4) as usize;
        let kind = u32_at(&head, 8);
        let name_at = offset + 12;
        let Some(desc_at) = name_at.checked_add(round(namesz)) else {
            return 0;
        };
        if desc_at.checked_add(descsz).is_none_or(|end| end > size) {
            return 0;
        }
        if kind == NT_GNU_BUILD_ID && namesz == 4 {
            let mut name = [0u8; 4];
            if memory::read_exact(at.wrapping_add(name_at), &mut name) && name == *b"GNU\0" {
                if descsz == 0 || descsz > BUILD_ID_MAX {
                    return 0;
                }
                return if memory::read_exact(at.wrapping_add(desc_at), &mut out[..descsz]) {
                    descsz
                } else {
                    0
                };
            }
        }
        offset = desc_at.saturating_add(round(descsz));
    }
    0
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(v)
}

/// `dladdr1(address, RTLD_DL_LINKMAP)`: the `Dl_info` and the object's
/// `link_map` address, or None when no loaded object holds `address`.
/// The strings in the result belong to the object: read them only
/// through [`memory::copy_cstr`].
pub(crate) fn dladdr_with_link_map(address: usize) -> Option<(libc::Dl_info, usize)> {
    const RTLD_DL_LINKMAP: c_int = 2;
    let mut info = libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    };
    let mut link_map: *mut c_void = core::ptr::null_mut();
    // SAFETY: dladdr1 fills `info` and `link_map`; it reads the loader's
    // lists under the loader's lock.
    let rc = unsafe {
        libc::dladdr1(
            address as *const c_void,
            &mut info,
            (&mut link_map as *mut *mut c_void).cast(),
            RTLD_DL_LINKMAP,
        )
    };
    (rc != 0).then_some((info, link_map as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libc_and_reads_its_mapped_headers() {
        let malloc = libc::malloc as *const () as usize;
        let (info, link_map) = dladdr_with_link_map(malloc).unwrap();
        let map = memory::read_value::<LinkMap>(link_map).unwrap();
        let image = read_mapped_image(info.dli_fbase as usize, map.l_addr).unwrap();
        assert_eq!(image.map_start, info.dli_fbase as usize);
        assert!(image.map_start <= malloc && malloc < image.map_end);
        // Debian's libc has a 20-byte GNU build-id.
        assert_eq!(image.build_id_len, 20);
        if let Some(find) = resolve_dl_find_object() {
            let [start, end, found_map, _] = find_object(find, malloc).unwrap();
            assert_eq!(
                (start, end, found_map),
                (image.map_start, image.map_end, link_map)
            );
        }
    }

    #[test]
    fn garbage_is_no_image() {
        let bytes = [0u8; 128];
        assert!(read_mapped_image(bytes.as_ptr() as usize, 0).is_none());
        assert!(read_mapped_image(8, 0).is_none());
    }
}
