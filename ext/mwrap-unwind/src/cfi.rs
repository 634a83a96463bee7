//! The miss path: from a pc to its compact [`Rule`], through
//! `_dl_find_object`, the object's `.eh_frame_hdr` search table and gimli.
//! Nothing here allocates; the CFI evaluation runs in fixed storage on the
//! stack, sized for x86_64 code (see [`FixedStorage`]).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EhFrameOffset, EndianSlice, LittleEndian,
    ParsedEhFrameHdr, Pointer, Register, RegisterRule, UnwindContext, UnwindContextStorage,
    UnwindSection, UnwindTableRow, X86_64,
};

use crate::cache::Rule;

/// glibc's `struct dl_find_object` on x86_64 (dlfcn.h of glibc 2.35–2.36:
/// no `dlfo_eh_dbase`, no `dlfo_eh_count` on this target). glibc writes the
/// whole struct, reserved words included, so they must be there.
#[repr(C)]
struct DlFindObject {
    dlfo_flags: u64,
    dlfo_map_start: *mut c_void,
    dlfo_map_end: *mut c_void,
    dlfo_link_map: *mut c_void,
    /// The PT_GNU_EH_FRAME segment, i.e. `.eh_frame_hdr`; null if none.
    dlfo_eh_frame: *mut c_void,
    dlfo_reserved: [u64; 7],
}

type FindObject = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;

/// `_dl_find_object`, or 0 before [`init`] (or where glibc lacks it).
static FIND_OBJECT: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn init() -> bool {
    if FIND_OBJECT.load(Ordering::Acquire) != 0 {
        return true;
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the
    // global scope. Its result is the function or null.
    let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
    FIND_OBJECT.store(found as usize, Ordering::Release);
    !found.is_null()
}

pub(crate) fn available() -> bool {
    FIND_OBJECT.load(Ordering::Relaxed) != 0
}

/// What the CFI says about a return address.
pub(crate) enum Lookup {
    /// A rule, to cache: the object stays mapped until a `dlclose`, which
    /// invalidates every cache.
    Found(Rule),
    /// In no object: not cached, since a later `dlopen` (which does not
    /// invalidate) may map an object there.
    NoObject,
}

/// Register rules an x86_64 row can need: rbx, rbp, r12–r15 and the return
/// address (7), and one spare. Signal trampolines have 17, but are
/// recognized from their CIE before any row is evaluated. The test
/// `every_fde_fits_the_fixed_storage` counts the FDEs of libc, libruby,
/// libstdc++ and libgcc_s that need more: they end the unwind there.
const MAX_RULES: usize = 8;
/// Rows on gimli's stack: the current row and one DW_CFA_remember_state
/// (the CIE's initial rule is kept aside when there is only one, as on
/// x86_64, where the CIE only says where the return address is).
const MAX_ROWS: usize = 2;

/// gimli's storage for one CFI evaluation, in place (no `Box`): about
/// `ROWS × (RULES × 32 + 64)` bytes on the miss path's stack.
struct FixedStorage<const RULES: usize, const ROWS: usize>;

impl<const RULES: usize, const ROWS: usize> UnwindContextStorage<usize>
    for FixedStorage<RULES, ROWS>
{
    type Rules = [(Register, RegisterRule<usize>); RULES];
    type Stack = [UnwindTableRow<usize, Self>; ROWS];
}

type Storage = FixedStorage<MAX_RULES, MAX_ROWS>;
type Slice = EndianSlice<'static, LittleEndian>;

/// An object's CFI sections, as gimli reads them.
struct Sections {
    /// `.eh_frame_hdr`'s bytes, up to the end of its segment.
    hdr_bytes: &'static [u8],
    hdr: ParsedEhFrameHdr<Slice>,
    eh_frame: EhFrame<Slice>,
    bases: BaseAddresses,
}

/// Looks up the rule for the return address `ra` (the row at `ra - 1`).
/// Kept out of line so the fast path's frame stays small.
#[inline(never)]
pub(crate) fn find_rule(ra: usize) -> Lookup {
    let pc = ra.wrapping_sub(1);
    // SAFETY: the objects on our stack stay mapped (the unwind's contract).
    match unsafe { find_object(pc) } {
        None => Lookup::NoObject,
        Some(object) => {
            // SAFETY: `object` describes a loaded object that stays mapped
            // while its code is on our stack.
            let rule = unsafe { sections(&object) }.and_then(|s| rule_at(&s, pc));
            Lookup::Found(rule.unwrap_or(Rule::stop(Rule::NO_INFO)))
        }
    }
}

/// `_dl_find_object`'s answer for `pc`.
///
/// # Safety
/// None beyond `_dl_find_object`'s: it reads the loader's lock-free table.
unsafe fn find_object(pc: usize) -> Option<DlFindObject> {
    let find: usize = FIND_OBJECT.load(Ordering::Relaxed);
    if find == 0 {
        return None;
    }
    // SAFETY: FIND_OBJECT only ever holds 0 or dlsym's address of
    // `_dl_find_object`, whose signature this is.
    let find: FindObject = unsafe { core::mem::transmute::<usize, FindObject>(find) };
    let mut object = DlFindObject {
        dlfo_flags: 0,
        dlfo_map_start: core::ptr::null_mut(),
        dlfo_map_end: core::ptr::null_mut(),
        dlfo_link_map: core::ptr::null_mut(),
        dlfo_eh_frame: core::ptr::null_mut(),
        dlfo_reserved: [0; 7],
    };
    // SAFETY: `_dl_find_object` only reads the loader's lock-free object
    // table and writes `object`; it is async-signal-safe and does not set
    // errno.
    (unsafe { find(pc as *mut c_void, &mut object) } == 0).then_some(object)
}

/// # Safety
/// `object` is `_dl_find_object`'s answer, for an object still mapped.
unsafe fn sections(object: &DlFindObject) -> Option<Sections> {
    let map_start = object.dlfo_map_start as usize;
    let hdr_addr = object.dlfo_eh_frame as usize;
    if hdr_addr == 0 {
        return None;
    }
    // SAFETY: map_start is the object's first mapped page.
    let hdr_end = unsafe { segment_end(map_start, hdr_addr) }?;
    // SAFETY: [hdr_addr, hdr_end) lies in a readable, file-backed load
    // segment of a mapped object, and stays mapped during the unwind.
    let hdr_bytes = unsafe { bytes(hdr_addr, hdr_end) };
    let mut bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr as u64);
    let hdr = EhFrameHdr::new(hdr_bytes, LittleEndian)
        .parse(&bases, 8)
        .ok()?;
    let Pointer::Direct(frame_addr) = hdr.eh_frame_ptr() else {
        return None;
    };
    let frame_addr = usize::try_from(frame_addr).ok()?;
    // Linkers put .eh_frame right after .eh_frame_hdr, in its segment.
    let frame_end = if hdr_addr < frame_addr && frame_addr < hdr_end {
        hdr_end
    } else {
        // SAFETY: as above.
        unsafe { segment_end(map_start, frame_addr) }?
    };
    // SAFETY: as for the header.
    let frame_bytes = unsafe { bytes(frame_addr, frame_end) };
    bases = bases.set_eh_frame(frame_addr as u64);
    Some(Sections {
        hdr_bytes,
        hdr,
        eh_frame: EhFrame::new(frame_bytes, LittleEndian),
        bases,
    })
}

/// The rule of the row covering `pc`, or None if there is none or it does
/// not fit a [`Rule`].
fn rule_at(sections: &Sections, pc: usize) -> Option<Rule> {
    let fde = match fde_offset_in_usual_table(sections, pc) {
        Some(offset) => sections
            .eh_frame
            .fde_from_offset(&sections.bases, offset, EhFrame::cie_from_offset)
            .ok()
            .filter(|fde| fde.contains(pc as u64))?,
        None => sections
            .hdr
            .table()?
            .fde_for_address(
                &sections.eh_frame,
                &sections.bases,
                pc as u64,
                EhFrame::cie_from_offset,
            )
            .ok()?,
    };
    if fde.is_signal_trampoline() {
        return Some(Rule::stop(Rule::SIGNAL));
    }
    let mut context = UnwindContext::<usize, Storage>::new_in();
    let row = fde
        .unwind_info_for_address(&sections.eh_frame, &sections.bases, &mut context, pc as u64)
        .ok()?;
    compact_rule(row)
}

/// The `.eh_frame` offset of the FDE that may cover `pc`, found by binary
/// search of the `.eh_frame_hdr` table in the encoding every Linux linker
/// writes (eh_frame_ptr pcrel|sdata4, fde_count udata4, table entries
/// datarel|sdata4 pairs relative to the header), read directly: twice as
/// fast as gimli's general decoder, which is the fallback for any other
/// encoding (None here).
fn fde_offset_in_usual_table(sections: &Sections, pc: usize) -> Option<EhFrameOffset<usize>> {
    const PCREL_SDATA4: u8 = 0x1b;
    const UDATA4: u8 = 0x03;
    const DATAREL_SDATA4: u8 = 0x3b;
    let bytes = sections.hdr_bytes;
    if bytes.get(..4)? != [1, PCREL_SDATA4, UDATA4, DATAREL_SDATA4] {
        return None;
    }
    let word = |at: usize| -> Option<i32> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(i32::from_le_bytes([
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ]))
    };
    let hdr_addr = bytes.as_ptr() as usize;
    let frame_addr = (hdr_addr + 4).checked_add_signed(word(4)? as isize)?;
    let count = word(8)? as u32 as usize;
    const TABLE: usize = 12;
    if count == 0 || TABLE.checked_add(count.checked_mul(8)?)? > bytes.len() {
        return None;
    }
    // Addresses in one process differ by less than isize::MAX.
    let rel_pc = pc.wrapping_sub(hdr_addr) as isize;
    // The last entry whose initial location is <= pc.
    let (mut lo, mut hi) = (0usize, count);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if (word(TABLE + mid * 8)? as isize) <= rel_pc {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let fde_addr = hdr_addr.checked_add_signed(word(TABLE + lo * 8 + 4)? as isize)?;
    Some(EhFrameOffset(fde_addr.checked_sub(frame_addr)?))
}

/// Reduces a row to a [`Rule`], or None if it needs more than one.
fn compact_rule<S: UnwindContextStorage<usize>>(row: &UnwindTableRow<usize, S>) -> Option<Rule> {
    let mut flags = 0;
    match row.register(X86_64::RA) {
        Some(RegisterRule::Undefined) => return Some(Rule::stop(Rule::OUTERMOST)),
        Some(RegisterRule::Offset(-8)) => {}
        _ => return None,
    }
    let cfa_offset = match *row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            if register == X86_64::RBP {
                flags |= Rule::CFA_FROM_RBP;
            } else if register != X86_64::RSP {
                return None;
            }
            i32::try_from(offset).ok()?
        }
        CfaRule::Expression(_) => return None,
    };
    let mut rbp_offset = 0;
    match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => {}
        Some(RegisterRule::Offset(offset)) => {
            rbp_offset = i16::try_from(offset).ok()?;
            flags |= Rule::RBP_SAVED;
        }
        Some(_) => flags |= Rule::RBP_LOST,
    }
    Some(Rule::new(cfa_offset, rbp_offset, flags))
}

/// `[start, end)` as a byte slice.
///
/// # Safety
/// The range is readable and stays mapped for `'static` as far as the
/// caller uses the slice (the unwind's duration).
unsafe fn bytes(start: usize, end: usize) -> &'static [u8] {
    // SAFETY: the caller's contract; end > start is checked by segment_end.
    unsafe { core::slice::from_raw_parts(start as *const u8, end - start) }
}

/// The end of the file-backed part of the readable PT_LOAD segment holding
/// `addr`, from the program headers in the object's first page.
///
/// The loader maps an object's whole span and leaves holes between segments
/// inaccessible, so `dlfo_map_end` alone would not bound a readable slice.
///
/// # Safety
/// `map_start` is a mapped object's first page (`dlfo_map_start`).
unsafe fn segment_end(map_start: usize, addr: usize) -> Option<usize> {
    const PT_LOAD: u32 = 1;
    const PF_R: u32 = 4;
    const EHDR_SIZE: usize = 64;
    const PHDR_SIZE: usize = 56;
    const FIRST_PAGE: usize = crate::stack::PAGE;

    let word = |offset: usize| -> u64 {
        // SAFETY: callers keep offset + 8 within the first page, which is
        // mapped readable (every load segment is readable on x86_64).
        unsafe { core::ptr::read_unaligned((map_start + offset) as *const u64) }
    };
    let half = |offset: usize| -> u16 {
        // SAFETY: as above, for 2 bytes.
        unsafe { core::ptr::read_unaligned((map_start + offset) as *const u16) }
    };
    // e_ident: "\x7fELF", ELFCLASS64, little-endian.
    let ident = word(0);
    if ident & 0xffff_ffff_ffff != 0x01_02_46_4c_45_7f {
        return None;
    }
    let phoff = usize::try_from(word(32)).ok()?;
    let phentsize = usize::from(half(54));
    let phnum = usize::from(half(56));
    let phdrs_end = phnum.checked_mul(PHDR_SIZE)?.checked_add(phoff)?;
    if phentsize != PHDR_SIZE || phoff < EHDR_SIZE || phdrs_end > FIRST_PAGE {
        return None;
    }
    let mut bias = None;
    for i in 0..phnum {
        let ph = phoff + i * PHDR_SIZE;
        let p_type = word(ph) as u32;
        let p_flags = (word(ph) >> 32) as u32;
        let (p_offset, p_vaddr, p_filesz) = (word(ph + 8), word(ph + 16), word(ph + 32));
        if p_type != PT_LOAD {
            continue;
        }
        let bias = match bias {
            Some(bias) => bias,
            None => {
                // The first load segment maps the ELF header: it is what the
                // loader mapped at map_start, which gives the load bias.
                if p_offset != 0 {
                    return None;
                }
                let first = map_start.checked_sub(usize::try_from(p_vaddr).ok()?)?;
                bias = Some(first);
                first
            }
        };
        let start = bias.checked_add(usize::try_from(p_vaddr).ok()?)?;
        let end = start.checked_add(usize::try_from(p_filesz).ok()?)?;
        if p_flags & PF_R != 0 && start <= addr && addr < end {
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// FDEs of the object holding `addr` whose rows do not all evaluate in
    /// `FixedStorage<RULES, ROWS>`, and how many FDEs it has.
    fn fdes_not_fitting<const RULES: usize, const ROWS: usize>(addr: usize) -> (usize, usize) {
        // SAFETY: addr is in an object that stays loaded (libc, or one the
        // test dlopened and never closes).
        let object = unsafe { find_object(addr) }.expect("object found");
        // SAFETY: as above.
        let s = unsafe { sections(&object) }.expect("CFI sections found");
        let table = s.hdr.table().unwrap();
        let mut entries = table.iter(&s.bases);
        let (mut total, mut failed) = (0, 0);
        while let Some((start, fde_ptr)) = entries.next().unwrap() {
            let offset = table.pointer_to_offset(fde_ptr).unwrap();
            // The direct table search agrees with gimli's entries.
            let start = start.direct().unwrap() as usize;
            assert_eq!(fde_offset_in_usual_table(&s, start), Some(offset));
            let fde = s
                .eh_frame
                .fde_from_offset(&s.bases, offset, EhFrame::cie_from_offset)
                .unwrap();
            if fde.is_signal_trampoline() {
                continue;
            }
            total += 1;
            let mut context = UnwindContext::<usize, FixedStorage<RULES, ROWS>>::new_in();
            let mut rows = fde.rows(&s.eh_frame, &s.bases, &mut context).unwrap();
            loop {
                match rows.next_row() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        failed += 1;
                        break;
                    }
                }
            }
        }
        (failed, total)
    }

    fn loaded(name: &core::ffi::CStr, symbol: &core::ffi::CStr) -> Option<usize> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is
        // never closed, so the object stays loaded.
        unsafe {
            let handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return None;
            }
            let f = libc::dlsym(handle, symbol.as_ptr());
            (!f.is_null()).then_some(f as usize)
        }
    }

    #[test]
    fn every_fde_fits_the_fixed_storage() {
        assert!(init());
        let mut objects: Vec<(&str, usize)> = Vec::new();
        objects.push(("libc", libc::qsort as *const () as usize));
        for (name, lib, sym) in [
            ("libgcc_s", c"libgcc_s.so.1", c"_Unwind_Backtrace"),
            ("libstdc++", c"libstdc++.so.6", c"__cxa_throw"),
            ("libruby", c"libruby-3.1.so.3.1", c"ruby_init"),
        ] {
            match loaded(lib, sym) {
                Some(addr) => objects.push((name, addr)),
                None => std::eprintln!("{name} not installed, not checked"),
            }
        }
        for (name, addr) in objects {
            let fewer_rules = fdes_not_fitting::<{ MAX_RULES - 1 }, MAX_ROWS>(addr);
            let fewer_rows = fdes_not_fitting::<MAX_RULES, { MAX_ROWS - 1 }>(addr);
            let chosen = fdes_not_fitting::<MAX_RULES, MAX_ROWS>(addr);
            let large = fdes_not_fitting::<32, 8>(addr);
            std::eprintln!(
                "{name}: (failing, of) FDEs: {MAX_RULES} rules/{MAX_ROWS} rows {chosen:?}, one rule \
                 fewer {fewer_rules:?}, one row fewer {fewer_rows:?}, 32/8 {large:?}"
            );
            assert_eq!(large.0, 0, "{name}: some FDE fails even with large storage");
            // libgcc_s: the _Unwind_* entry points save every register for
            // __builtin_eh_return; they do not call malloc.
            let allowed = if name == "libgcc_s" { 7 } else { 0 };
            assert!(chosen.0 <= allowed, "{name}: {chosen:?}");
        }
    }
}
