//! [`ModuleRecord`]: what is needed to name an object's addresses after it
//! was `dlclose`d, captured just before.

use core::ffi::c_void;
use core::fmt;
use core::hash::{Hash, Hasher};

use crate::loaded::{self, DlFindObjectFn, LinkMap, BUILD_ID_MAX};
use crate::memory;

/// Longest object path kept (the preload's `dladdr` namer cuts paths at
/// the same length). A longer path is kept cut, for printing only: its
/// file is never opened.
pub const MODULE_PATH_MAX: usize = 1024;

/// A loaded object as it was when captured: path, load bias, mapped range
/// and build-id. Fixed size (1088 bytes on 64-bit targets), no heap, so a
/// `dlclose` hook can fill one on its stack.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ModuleRecord {
    map_start: usize,
    map_end: usize,
    bias: usize,
    path_len: u16,
    path_truncated: bool,
    build_id_len: u8,
    build_id: [u8; BUILD_ID_MAX],
    path: [u8; MODULE_PATH_MAX],
}

impl ModuleRecord {
    /// Captures the object behind `handle` (a `dlopen` handle), before the
    /// real `dlclose` runs. Reads the loader's `link_map`
    /// (`dlinfo(RTLD_DI_LINKMAP)`) and the object's mapped ELF headers, all
    /// through the kernel (`process_vm_readv`), allocates nothing and takes
    /// no lock, so it may run inside a hook. errno is left as it was.
    ///
    /// The mapped range is the loader's `[l_map_start, l_map_end)`, computed
    /// from the program headers; [`Self::capture_with`] asks
    /// `_dl_find_object` instead. None when the handle names no file (the
    /// main program) or its headers cannot be read.
    ///
    /// # Safety
    /// `handle` is a handle `dlopen` returned and that is still open.
    pub unsafe fn capture(handle: *mut c_void) -> Option<Self> {
        // SAFETY: the caller's promise, passed on.
        unsafe { Self::capture_with(handle, None) }
    }

    /// [`Self::capture`], taking the mapped range from `_dl_find_object`
    /// (lock-free; see [`crate::resolve_dl_find_object`], to be looked up
    /// once, outside hooks) when it is given.
    ///
    /// # Safety
    /// As for [`Self::capture`]; `find_object` is glibc's `_dl_find_object`.
    pub unsafe fn capture_with(
        handle: *mut c_void,
        find_object: Option<DlFindObjectFn>,
    ) -> Option<Self> {
        mwrap_core::errno::preserved(|| {
            if handle.is_null() {
                return None;
            }
            let mut link_map: *mut c_void = core::ptr::null_mut();
            // SAFETY: RTLD_DI_LINKMAP stores the handle's link_map pointer
            // into `link_map`; glibc's dlinfo takes no lock for it and
            // allocates nothing when it succeeds.
            let rc = unsafe {
                libc::dlinfo(
                    handle,
                    libc::RTLD_DI_LINKMAP,
                    (&mut link_map as *mut *mut c_void).cast(),
                )
            };
            if rc != 0 || link_map.is_null() {
                return None;
            }
            let map = memory::read_value::<LinkMap>(link_map as usize)?;
            let found = find_object
                .filter(|_| map.l_ld != 0)
                .and_then(|find| loaded::find_object(find, map.l_ld));
            let mut record = Self::empty();
            let (path, cut) = memory::copy_cstr(map.l_name, &mut record.path)?;
            if path.is_empty() {
                return None;
            }
            record.path_len = path.len() as u16;
            record.path_truncated = cut;
            record.bias = map.l_addr;
            // The ELF header sits at the start of the first mapping; without
            // `_dl_find_object`, that is the bias (first PT_LOAD at 0, as
            // linkers lay out shared objects).
            let header = found.map_or(map.l_addr, |[start, ..]| start);
            let image = loaded::read_mapped_image(header, map.l_addr);
            match (found, image) {
                (Some([start, end, ..]), _) => (record.map_start, record.map_end) = (start, end),
                (None, Some(image)) => {
                    (record.map_start, record.map_end) = (image.map_start, image.map_end)
                }
                (None, None) => return None,
            }
            if let Some(image) = image {
                record.build_id = image.build_id;
                record.build_id_len = image.build_id_len as u8;
            }
            Some(record)
        })
    }

    fn empty() -> Self {
        ModuleRecord {
            map_start: 0,
            map_end: 0,
            bias: 0,
            path_len: 0,
            path_truncated: false,
            build_id_len: 0,
            build_id: [0; BUILD_ID_MAX],
            path: [0; MODULE_PATH_MAX],
        }
    }

    /// A record from its parts, for objects described some other way (and
    /// tests). `path` longer than [`MODULE_PATH_MAX`] is kept cut; a
    /// `build_id` longer than 32 bytes is not kept.
    pub fn from_parts(
        path: &[u8],
        bias: usize,
        map_start: usize,
        map_end: usize,
        build_id: Option<&[u8]>,
    ) -> Self {
        let mut record = Self::empty();
        let n = path.len().min(MODULE_PATH_MAX);
        record.path[..n].copy_from_slice(&path[..n]);
        record.path_len = n as u16;
        record.path_truncated = n < path.len();
        record.bias = bias;
        record.map_start = map_start;
        record.map_end = map_end;
        if let Some(id) = build_id.filter(|id| id.len() <= BUILD_ID_MAX) {
            record.build_id[..id.len()].copy_from_slice(id);
            record.build_id_len = id.len() as u8;
        }
        record
    }

    /// Whether `address` lay in the object's mapping.
    pub fn contains(&self, address: usize) -> bool {
        self.map_start <= address && address < self.map_end
    }

    /// The object's path as the loader had it (cut at [`MODULE_PATH_MAX`]).
    pub fn path(&self) -> &[u8] {
        &self.path[..self.path_len as usize]
    }

    /// True when the path was longer than [`MODULE_PATH_MAX`].
    pub fn path_truncated(&self) -> bool {
        self.path_truncated
    }

    /// The load bias (`l_addr`): an address minus this is the ELF address.
    pub fn bias(&self) -> usize {
        self.bias
    }

    /// Start of the mapping (`dladdr`'s `dli_fbase`: offsets are printed
    /// from here, as for a loaded object).
    pub fn map_start(&self) -> usize {
        self.map_start
    }

    /// End of the mapping (exclusive).
    pub fn map_end(&self) -> usize {
        self.map_end
    }

    /// The GNU build-id, when the object had one of at most 32 bytes.
    pub fn build_id(&self) -> Option<&[u8]> {
        (self.build_id_len > 0).then(|| &self.build_id[..self.build_id_len as usize])
    }

    /// The fields that say which object this was (all but padding).
    fn identity(&self) -> (usize, usize, usize, bool, &[u8], &[u8]) {
        (
            self.map_start,
            self.map_end,
            self.bias,
            self.path_truncated,
            self.build_id().unwrap_or(&[]),
            self.path(),
        )
    }
}

impl PartialEq for ModuleRecord {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for ModuleRecord {}

impl Hash for ModuleRecord {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl fmt::Debug for ModuleRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleRecord")
            .field("path", &String::from_utf8_lossy(self.path()))
            .field("path_truncated", &self.path_truncated)
            .field("bias", &format_args!("{:#x}", self.bias))
            .field("map_start", &format_args!("{:#x}", self.map_start))
            .field("map_end", &format_args!("{:#x}", self.map_end))
            .field("build_id", &self.build_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_fixed_size_and_keeps_parts() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(size_of::<ModuleRecord>(), 1088);
        let r = ModuleRecord::from_parts(b"/x/lib.so", 0x1000, 0x1000, 0x3000, Some(&[1, 2]));
        assert_eq!(r.path(), b"/x/lib.so");
        assert!(r.contains(0x1000) && r.contains(0x2fff));
        assert!(!r.contains(0x3000) && !r.contains(0xfff));
        assert_eq!(r.build_id(), Some(&[1u8, 2][..]));
        let long = vec![b'a'; MODULE_PATH_MAX + 1];
        let cut = ModuleRecord::from_parts(&long, 0, 0, 1, Some(&[7; 33]));
        assert!(cut.path_truncated() && cut.path().len() == MODULE_PATH_MAX);
        assert_eq!(cut.build_id(), None);
        assert_ne!(r, cut);
        let copy = r;
        assert_eq!(r, copy);
    }

    #[test]
    fn a_null_or_main_program_handle_is_no_record() {
        // SAFETY: a null handle is refused before use; the main program's
        // handle is valid and stays open.
        unsafe {
            assert!(ModuleRecord::capture(core::ptr::null_mut()).is_none());
            let main = libc::dlopen(core::ptr::null(), libc::RTLD_NOW);
            assert!(!main.is_null());
            assert!(ModuleRecord::capture(main).is_none());
            libc::dlclose(main);
        }
    }
}
