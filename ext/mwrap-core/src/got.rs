//! GOT rewriting in the current process: groundwork for attaching to a
//! running process, where the injected library redirects every loaded
//! object's malloc family to its hooks (memray's attach does the same).
//!
//! The ELF dynamic-section walk is written by hand: no crate parses an
//! in-memory link map's relocations without allocating, and nothing here
//! may allocate, since the malloc family is being redirected mid-walk.
//! Linux with glibc, x86_64 and aarch64 (aarch64 differs only in the
//! relocation numbers and is untested).
//!
//! A rewritten page's protection is not read back from /proc/self/maps
//! (that would mean parsing text mid-walk); it is assumed: read-only
//! inside the object's PT_GNU_RELRO (rounded to pages as glibc does),
//! read-write elsewhere, where a GOT otherwise lives. The tables are
//! trusted as the loader left them: symbol indices are not bounds-checked.

use core::ffi::{c_int, c_void};

/// One entry of a dynamic section (`Elf64_Dyn`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Elf64Dyn {
    pub d_tag: i64,
    pub d_val: u64,
}

#[repr(C)]
struct Elf64Sym {
    st_name: u32,
    st_info: u8,
    st_other: u8,
    st_shndx: u16,
    st_value: u64,
    st_size: u64,
}

#[repr(C)]
struct Elf64Rela {
    r_offset: u64,
    r_info: u64,
    r_addend: i64,
}

const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_STRSZ: i64 = 10;
const DT_JMPREL: i64 = 23;

#[cfg(target_arch = "x86_64")]
const R_GLOB_DAT: u32 = 6;
#[cfg(target_arch = "x86_64")]
const R_JUMP_SLOT: u32 = 7;
#[cfg(target_arch = "aarch64")]
const R_GLOB_DAT: u32 = 1025;
#[cfg(target_arch = "aarch64")]
const R_JUMP_SLOT: u32 = 1026;

/// A symbol name (without NUL) and the address its GOT entries should hold.
#[derive(Clone, Copy, Debug)]
pub struct Redirect {
    pub name: &'static [u8],
    pub replacement: usize,
}

/// One rewritten GOT entry and the value it held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedSlot {
    pub slot: usize,
    pub original: usize,
}

use crate::mem::page_size;

/// Page range `[start, end)` the loader made read-only after relocation
/// (it rounds both ends of PT_GNU_RELRO down to pages, as glibc does).
#[derive(Clone, Copy)]
struct Relro {
    start: usize,
    end: usize,
}

/// Writes `value` into the word at `slot`, making its page writable for
/// the store and giving it back its protection afterwards: read-only
/// inside RELRO, read-write elsewhere (where a GOT otherwise lives).
///
/// # Safety
/// `slot` must be an aligned GOT entry of a loaded object, and nothing
/// may be calling through it in a way that cannot tolerate the change.
unsafe fn write_slot(
    slot: usize,
    value: usize,
    relro: Option<Relro>,
    page: usize,
) -> Result<(), i32> {
    let start = slot & !(page - 1);
    let ro = relro.is_some_and(|r| start >= r.start && start < r.end);
    let prot = if ro {
        libc::PROT_READ
    } else {
        libc::PROT_READ | libc::PROT_WRITE
    };
    // SAFETY: the page belongs to a loaded object; making it writable
    // changes no data.
    if unsafe {
        libc::mprotect(
            start as *mut c_void,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    } != 0
    {
        return Err(crate::errno::get());
    }
    // SAFETY: the caller passes an aligned GOT entry; the page is now
    // writable. Volatile so the store is not reordered past mprotect.
    unsafe { core::ptr::write_volatile(slot as *mut usize, value) };
    // SAFETY: as above; this puts the page's protection back.
    if unsafe { libc::mprotect(start as *mut c_void, page, prot) } != 0 {
        return Err(crate::errno::get());
    }
    Ok(())
}

/// Compares the NUL-terminated name at `strtab + off` with `name`,
/// reading no further than `strsz`.
///
/// # Safety
/// `strtab..strtab + strsz` must be readable.
unsafe fn name_is(strtab: usize, strsz: usize, off: usize, name: &[u8]) -> bool {
    if off >= strsz || strsz - off <= name.len() {
        return false;
    }
    // SAFETY: off + name.len() + 1 <= strsz, inside the string table.
    let s = unsafe { core::slice::from_raw_parts((strtab + off) as *const u8, name.len() + 1) };
    &s[..name.len()] == name && s[name.len()] == 0
}

/// The PT_GNU_RELRO page range of the object loaded at `base`, from its
/// program headers.
///
/// # Safety
/// `phdr` must point at `phnum` program headers of that object.
unsafe fn relro_of(
    base: usize,
    phdr: *const libc::Elf64_Phdr,
    phnum: usize,
    page: usize,
) -> Option<Relro> {
    for i in 0..phnum {
        // SAFETY: i < phnum, inside the loader's program headers.
        let ph = unsafe { &*phdr.add(i) };
        if ph.p_type == libc::PT_GNU_RELRO {
            let start = base.wrapping_add(ph.p_vaddr as usize);
            let end = start.wrapping_add(ph.p_memsz as usize);
            return Some(Relro {
                start: start & !(page - 1),
                end: end & !(page - 1),
            });
        }
    }
    None
}

/// The PT_DYNAMIC address of the object loaded at `base`.
///
/// # Safety
/// As for [`relro_of`].
unsafe fn dynamic_of(
    base: usize,
    phdr: *const libc::Elf64_Phdr,
    phnum: usize,
) -> Option<*const Elf64Dyn> {
    for i in 0..phnum {
        // SAFETY: i < phnum, inside the loader's program headers.
        let ph = unsafe { &*phdr.add(i) };
        if ph.p_type == libc::PT_DYNAMIC {
            return Some(base.wrapping_add(ph.p_vaddr as usize) as *const Elf64Dyn);
        }
    }
    None
}

/// Rewrites the GOT entries of one object (load base `base`, dynamic
/// section `dynamic`) that bind a symbol named in `redirects`: every
/// JUMP_SLOT and GLOB_DAT relocation of that name. Each slot goes through
/// `save` first and is skipped if it returns false. Returns the number of
/// slots rewritten, or the errno of a failed mprotect.
///
/// The page protection restored after each write comes from the object's
/// PT_GNU_RELRO, found with `dl_iterate_phdr`; [`redirect_all`] passes it
/// directly.
///
/// # Safety
/// `base` and `dynamic` must describe an object currently loaded in this
/// process, and every replacement must be a function callable wherever
/// the symbol it replaces was.
pub unsafe fn redirect_object(
    base: usize,
    dynamic: *const Elf64Dyn,
    redirects: &[Redirect],
    save: impl FnMut(SavedSlot) -> bool,
) -> Result<usize, i32> {
    let relro = find_relro(&mut |b, _| b == base);
    // SAFETY: the caller's contract.
    unsafe { redirect_in(base, dynamic, relro, page_size(), redirects, save) }
}

/// [`redirect_object`] with the RELRO range already known.
///
/// # Safety
/// As for [`redirect_object`].
unsafe fn redirect_in(
    base: usize,
    dynamic: *const Elf64Dyn,
    relro: Option<Relro>,
    page: usize,
    redirects: &[Redirect],
    mut save: impl FnMut(SavedSlot) -> bool,
) -> Result<usize, i32> {
    if dynamic.is_null() || redirects.is_empty() {
        return Ok(0);
    }
    let (mut symtab, mut strtab, mut strsz) = (0usize, 0usize, 0usize);
    let (mut jmprel, mut pltrelsz, mut rela, mut relasz) = (0usize, 0usize, 0usize, 0usize);
    // Most objects' pointers were relocated by the loader; some (the
    // vdso) still hold offsets from the base.
    let abs = |v: u64| {
        let v = v as usize;
        if v < base {
            v.wrapping_add(base)
        } else {
            v
        }
    };
    let mut d = dynamic;
    loop {
        // SAFETY: the dynamic section is terminated by DT_NULL.
        let e = unsafe { *d };
        match e.d_tag {
            DT_NULL => break,
            DT_SYMTAB => symtab = abs(e.d_val),
            DT_STRTAB => strtab = abs(e.d_val),
            DT_STRSZ => strsz = e.d_val as usize,
            DT_JMPREL => jmprel = abs(e.d_val),
            DT_PLTRELSZ => pltrelsz = e.d_val as usize,
            DT_RELA => rela = abs(e.d_val),
            DT_RELASZ => relasz = e.d_val as usize,
            _ => {}
        }
        // SAFETY: not past DT_NULL yet.
        d = unsafe { d.add(1) };
    }
    if symtab == 0 || strtab == 0 {
        return Ok(0);
    }
    let mut count = 0;
    for (table, size) in [(jmprel, pltrelsz), (rela, relasz)] {
        if table == 0 {
            continue;
        }
        let n = size / core::mem::size_of::<Elf64Rela>();
        for i in 0..n {
            // SAFETY: i < n entries of the object's relocation table.
            let r = unsafe { &*(table as *const Elf64Rela).add(i) };
            let kind = (r.r_info & 0xffff_ffff) as u32;
            if kind != R_JUMP_SLOT && kind != R_GLOB_DAT {
                continue;
            }
            let sym = (r.r_info >> 32) as usize;
            if sym == 0 {
                continue;
            }
            // SAFETY: the relocation's symbol index is inside the symbol table.
            let st_name = unsafe { (*(symtab as *const Elf64Sym).add(sym)).st_name } as usize;
            // SAFETY: the string table spans strsz bytes.
            let Some(to) = redirects
                .iter()
                .find(|x| unsafe { name_is(strtab, strsz, st_name, x.name) })
            else {
                continue;
            };
            let slot = base.wrapping_add(r.r_offset as usize);
            // SAFETY: a GOT entry of a loaded object, aligned by the ABI.
            let original = unsafe { core::ptr::read_volatile(slot as *const usize) };
            if !save(SavedSlot { slot, original }) {
                continue;
            }
            // SAFETY: the caller's contract on replacements.
            unsafe { write_slot(slot, to.replacement, relro, page) }?;
            count += 1;
        }
    }
    Ok(count)
}

struct Walk<'a, D, S> {
    skip_base: usize,
    done: D,
    redirects: &'a [Redirect],
    save: S,
    count: usize,
    err: i32,
}

/// Applies [`redirect_object`] to every loaded object except the one
/// loaded at `skip_base` (our own library) and the vdso. Returns the sum
/// of the slots rewritten, or the first mprotect errno.
///
/// # Safety
/// As for [`redirect_object`].
pub unsafe fn redirect_all(
    skip_base: usize,
    redirects: &[Redirect],
    save: impl FnMut(SavedSlot) -> bool,
) -> Result<usize, i32> {
    // SAFETY: the caller's contract.
    unsafe { redirect_new(skip_base, |_| false, redirects, save) }
}

/// [`redirect_all`] visiting only the objects whose base `done` rejects,
/// so objects loaded later by dlopen can be processed once.
///
/// # Safety
/// As for [`redirect_object`].
pub unsafe fn redirect_new<D: Fn(usize) -> bool, S: FnMut(SavedSlot) -> bool>(
    skip_base: usize,
    done: D,
    redirects: &[Redirect],
    save: S,
) -> Result<usize, i32> {
    unsafe extern "C" fn each<D: Fn(usize) -> bool, S: FnMut(SavedSlot) -> bool>(
        info: *mut libc::dl_phdr_info,
        _: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid record; data is our Walk.
        let (info, w) = unsafe { (&*info, &mut *(data as *mut Walk<'_, D, S>)) };
        let base = info.dlpi_addr as usize;
        if base == w.skip_base || (w.done)(base) {
            return 0;
        }
        // The vdso: named linux-vdso, or empty (as is the main program's).
        let name: &[u8] = if info.dlpi_name.is_null() {
            b""
        } else {
            // SAFETY: the loader's NUL-terminated name.
            unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes()
        };
        if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") || base == vdso_base()
        {
            return 0;
        }
        let (phdr, phnum, page) = (info.dlpi_phdr, info.dlpi_phnum as usize, page_size());
        // SAFETY: the record's program headers.
        let Some(dynamic) = (unsafe { dynamic_of(base, phdr, phnum) }) else {
            return 0;
        };
        // SAFETY: as above.
        let relro = unsafe { relro_of(base, phdr, phnum, page) };
        // SAFETY: a loaded object, described by the loader.
        match unsafe { redirect_in(base, dynamic, relro, page, w.redirects, &mut w.save) } {
            Ok(n) => {
                w.count += n;
                0
            }
            Err(e) => {
                w.err = e;
                1
            }
        }
    }
    let mut w = Walk {
        skip_base,
        done,
        redirects,
        save,
        count: 0,
        err: 0,
    };
    // SAFETY: the callback matches Walk's type parameters.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each::<D, S>),
            &mut w as *mut Walk<'_, D, S> as *mut c_void,
        )
    };
    if w.err != 0 {
        Err(w.err)
    } else {
        Ok(w.count)
    }
}

/// Where the kernel mapped the vdso (whose name may be empty, like the
/// main program's): it has no GOT worth rewriting.
fn vdso_base() -> usize {
    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if vdso == 0 {
        usize::MAX
    } else {
        vdso
    }
}

/// The RELRO range of the first loaded object for which `wanted(base,
/// relro)` holds (None if no object matches or it has none). One walk of
/// `dl_iterate_phdr`; nothing is allocated.
fn find_relro(wanted: &mut dyn FnMut(usize, Option<Relro>) -> bool) -> Option<Relro> {
    struct Search<'a> {
        wanted: &'a mut dyn FnMut(usize, Option<Relro>) -> bool,
        found: Option<Relro>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid record; data is our Search.
        let (info, search) = unsafe { (&*info, &mut *(data as *mut Search<'_>)) };
        let base = info.dlpi_addr as usize;
        // SAFETY: the record's program headers, as the loader gives them.
        let relro =
            unsafe { relro_of(base, info.dlpi_phdr, info.dlpi_phnum as usize, page_size()) };
        if (search.wanted)(base, relro) {
            search.found = relro;
            return 1;
        }
        0
    }
    let mut search = Search {
        wanted,
        found: None,
    };
    // SAFETY: the callback only reads the records and writes `search`.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut _ as *mut c_void) };
    search.found
}

/// Writes every saved slot's original value back, with the same page
/// protection handling as the redirect.
///
/// # Safety
/// Every slot must come from a redirect in this process whose object is
/// still loaded.
pub unsafe fn restore(slots: &[SavedSlot]) -> Result<(), i32> {
    let page = page_size();
    for s in slots {
        let p = s.slot & !(page - 1);
        let relro = find_relro(&mut |_, r| r.is_some_and(|r| p >= r.start && p < r.end));
        // SAFETY: the caller's contract: a GOT entry we rewrote.
        unsafe { write_slot(s.slot, s.original, relro, page) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENTINEL: libc::pid_t = 0x5eed;

    extern "C" fn fake_getppid() -> libc::pid_t {
        SENTINEL
    }

    /// The protection of the mapping holding `addr`, from /proc/self/maps.
    fn prot_of(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for line in maps.lines() {
            let (range, rest) = line.split_once(' ').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            if addr >= a && addr < b {
                return rest[..4].to_string();
            }
        }
        panic!("no mapping for {addr:#x}");
    }

    #[test]
    fn got_redirects_and_restores_getppid() {
        // SAFETY: getppid has no preconditions.
        let real = unsafe { libc::getppid() };
        assert_ne!(real, SENTINEL);
        let redirects = [Redirect {
            name: b"getppid",
            replacement: fake_getppid as *const () as usize,
        }];
        let mut saved = Vec::new();
        // SAFETY: fake_getppid has getppid's signature; only this test
        // calls getppid.
        let n = unsafe {
            redirect_all(usize::MAX, &redirects, |s| {
                saved.push(s);
                true
            })
        }
        .unwrap();
        assert!(n >= 1, "{n}");
        assert_eq!(n, saved.len());
        let prots: Vec<String> = saved.iter().map(|s| prot_of(s.slot)).collect();
        // SAFETY: as above.
        let got = unsafe { libc::getppid() };
        // SAFETY: slots from the redirect above.
        unsafe { restore(&saved) }.unwrap();
        assert_eq!(got, SENTINEL);
        // SAFETY: getppid has no preconditions.
        assert_eq!(unsafe { libc::getppid() }, real);
        // Rust links the test binary with -z relro -z now: its getppid
        // slot is a GLOB_DAT in the read-only RELRO pages.
        assert!(prots.iter().any(|p| p == "r--p"), "{prots:?}");
        // Each page keeps its protection.
        for (s, p) in saved.iter().zip(&prots) {
            assert_eq!(&prot_of(s.slot), p);
            // SAFETY: a GOT entry of a loaded object.
            assert_eq!(unsafe { *(s.slot as *const usize) }, s.original);
        }
    }

    #[test]
    fn got_unknown_name_and_refusing_save_rewrite_nothing() {
        let redirects = [Redirect {
            name: b"mwrap_no_such_symbol_anywhere",
            replacement: 1,
        }];
        // SAFETY: no slot matches, nothing is written.
        let n = unsafe { redirect_all(usize::MAX, &redirects, |_| true) };
        assert_eq!(n, Ok(0));
        let redirects = [Redirect {
            name: b"getppid",
            replacement: 1,
        }];
        let mut seen = 0;
        // SAFETY: save refuses every slot, so nothing is written.
        let n = unsafe {
            redirect_all(usize::MAX, &redirects, |_| {
                seen += 1;
                false
            })
        };
        assert_eq!(n, Ok(0));
        assert!(seen >= 1);
        // SAFETY: done claims every object, so none is visited.
        let n = unsafe { redirect_new(usize::MAX, |_| true, &redirects, |_| true) };
        assert_eq!(n, Ok(0));
    }

    #[test]
    fn got_relro_slot_keeps_read_only() {
        // libc.so.6 imports _dl_rtld_di_serinfo from ld.so (only dlinfo's
        // RTLD_DI_SERINFO calls it). Point its slot at the value it holds
        // already, so nothing changes for a concurrent caller, and check
        // the page keeps its protection.
        let mut first = None;
        let probe = [Redirect {
            name: b"_dl_rtld_di_serinfo",
            replacement: 0,
        }];
        // SAFETY: save refuses, nothing is written.
        unsafe {
            redirect_all(usize::MAX, &probe, |s| {
                first.get_or_insert(s);
                false
            })
        }
        .unwrap();
        let Some(slot) = first else {
            return; // not imported by this libc
        };
        let before = prot_of(slot.slot);
        let same = [Redirect {
            name: b"_dl_rtld_di_serinfo",
            replacement: slot.original,
        }];
        let mut saved = Vec::new();
        // SAFETY: every slot gets the value it holds (only one is bound).
        unsafe {
            redirect_all(usize::MAX, &same, |s| {
                let ok = s.original == slot.original;
                if ok {
                    saved.push(s);
                }
                ok
            })
        }
        .unwrap();
        assert_eq!(prot_of(slot.slot), before);
        // SAFETY: slots from the redirect above.
        unsafe { restore(&saved) }.unwrap();
        assert_eq!(prot_of(slot.slot), before);
    }
}
