//! Which location an allocation is charged to: the Ruby line running on
//! this thread when Ruby may be asked (see `ruby`), the Ruby line it
//! released the GVL from (see `nogvl`), else the native caller (the return
//! address of the `malloc` call). With stacks on (`MWRAP=bt`, `ruby_bt`,
//! `app_root`), also which stack: the site of the (location, stack) pair.

use mwrap_core::stacks::{RubyFrame, Stack, StackId};
use mwrap_core::SiteKey;

use crate::caller::Caller;
use crate::frames::{self, FrameCaches};
use crate::per_thread::{lock_cx, Record};
use crate::real;
use crate::ruby::{self, RawFrame};
use crate::state::{
    code_epoch, current_generation, dlclose_epoch, recording, saw_generation, SITES, STACKS,
};
use crate::thread_data::ThreadData;
use crate::unwind;
use mwrap_core::LiveAllocation;

/// Where an allocation made now on this thread goes, and the GC generation
/// it is born in. Interning can fail (a signal handler inside the table):
/// the site is then untracked (0), and callers leave the block so.
#[inline(always)]
pub fn locate(record: &'static Record, data: &ThreadData, caller: usize) -> (u32, u64) {
    if !ruby::attached() {
        return (native_site(record, data, caller), current_generation());
    }
    if let Some(frame) = ruby::current_frame(data) {
        let generation = frame.generation;
        saw_generation(generation);
        let epoch = code_epoch();
        if let Some(site) = data.cached_ruby_site(frame.key, epoch) {
            return (site, generation);
        }
        if let Some((file, line)) = frame.location() {
            // SAFETY: Ruby returned a NUL-terminated file name.
            let name = unsafe { core::ffi::CStr::from_ptr(file) }.to_bytes();
            if let Some(file) = SITES.files().intern(&lock_cx(record), name) {
                let site = SITES.intern(&lock_cx(record), SiteKey::Ruby { file, line });
                if watch_code(&frame) {
                    data.cache_ruby_site(frame.key, epoch, site);
                }
                return (site, generation);
            }
        }
    }
    if let Some(site) = released_gvl_site(record, data) {
        return (site, current_generation());
    }
    (native_site(record, data, caller), current_generation())
}

/// The site of the Ruby line this thread released the GVL from, while it
/// runs without it; interned by the first allocation charged to it.
#[inline]
fn released_gvl_site(record: &'static Record, data: &ThreadData) -> Option<u32> {
    let site = data.nogvl_site.get();
    if site != 0 {
        return Some(site);
    }
    let line = RubyFrame(data.nogvl_line.get());
    if line.0 == 0 {
        return None;
    }
    let site = SITES.intern(
        &lock_cx(record),
        SiteKey::Ruby {
            file: line.file(),
            line: line.line(),
        },
    );
    data.nogvl_site.set(site);
    Some(site)
}

/// What a thread notes before it releases the GVL (see `nogvl`): the
/// site of its Ruby line if it has one already, else the line, and its
/// Ruby frames as a stack (0: none).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGvlNote {
    pub site: u32,
    pub line: RubyFrame,
    pub stack: u32,
}

impl NoGvlNote {
    /// The note `data` holds now.
    pub fn of(data: &ThreadData) -> NoGvlNote {
        NoGvlNote {
            site: data.nogvl_site.get(),
            line: RubyFrame(data.nogvl_line.get()),
            stack: data.nogvl_stack.get(),
        }
    }

    pub fn set(self, data: &ThreadData) {
        data.nogvl_site.set(self.site);
        data.nogvl_line.set(self.line.0);
        data.nogvl_stack.set(self.stack);
    }
}

/// [`locate`] with stacks on: the site of the allocation's (location,
/// stack) pair, or of the location alone when there are no frames or the
/// tables are full (so that per-location numbers never depend on stacks).
#[inline(never)]
pub fn locate_stacked(record: &'static Record, data: &ThreadData, caller: Caller) -> (u32, u64) {
    let Some(fc) = frames::caches(record, data) else {
        return locate(record, data, caller.pc);
    };
    let rec = recording();
    let mut ruby_n = 0;
    let mut located = None;
    if ruby::attached() {
        if (rec.ruby_bt > 0 || rec.app_root.is_some()) && ruby::can_walk_frames() {
            if let Some((site, generation, n)) = walked_location(record, data, fc, rec.ruby_bt) {
                ruby_n = n;
                located = Some((site, generation));
            } else if let Some(site) = released_gvl_site(record, data) {
                ruby_n = noted_frames(data, fc, rec.ruby_bt);
                located = Some((site, current_generation()));
            }
        } else {
            located = Some(locate(record, data, caller.pc));
        }
    }
    let (location, generation) =
        located.unwrap_or_else(|| (native_site(record, data, caller.pc), current_generation()));
    let native_n = if rec.bt > 0 {
        unwind::capture(caller, &mut fc.rules, &mut fc.native[..rec.bt])
    } else {
        0
    };
    let stack = Stack {
        native: &fc.native[..native_n],
        ruby: &fc.ruby[..ruby_n],
    };
    if stack.is_empty() || location == mwrap_core::abi::UNTRACKED_SITE {
        return (location, generation);
    }
    let site = stack_site(record, &mut fc.stack_sites, location, &stack);
    (site.unwrap_or(location), generation)
}

/// Walks this thread's Ruby frames (when Ruby may be asked): the site of
/// the location (the innermost frame, or with `app_root` the innermost
/// one under it), the GC generation, and how many frames (at most
/// `keep`) are resolved into `fc.ruby`.
fn walked_location(
    record: &'static Record,
    data: &ThreadData,
    fc: &mut FrameCaches,
    keep: usize,
) -> Option<(u32, u64, usize)> {
    let epoch = code_epoch();
    let (i, generation, n) = walked_frame(record, data, fc, keep, epoch)?;
    let site = frame_site(record, data, &fc.raw[i], fc.ruby[i], epoch)?;
    Some((site, generation, n))
}

/// The walk of [`walked_location`] without the site: which frame the
/// allocation is charged to (an index into `fc.raw` and `fc.ruby`), the
/// GC generation, and how many frames are resolved into `fc.ruby`
/// (resolved lines are valid for code epoch `epoch`).
fn walked_frame(
    record: &'static Record,
    data: &ThreadData,
    fc: &mut FrameCaches,
    keep: usize,
    epoch: u64,
) -> Option<(usize, u64, usize)> {
    let root = recording().app_root;
    let depth = if root.is_some() { fc.raw.len() } else { keep };
    let walk = ruby::walk_frames(data, &mut fc.raw[..depth.max(1)])?;
    let (n, generation) = (walk.frames, walk.generation);
    saw_generation(generation);
    if n == 0 {
        return None;
    }
    let keep = keep.min(walk.shown);
    let mut chosen = None;
    let mut resolved = 0;
    for i in 0..n {
        // Frame 0 is always needed: it is the location without app_root.
        if i >= keep.max(1) && (root.is_none() || chosen.is_some()) {
            break;
        }
        let raw = fc.raw[i];
        let Some(frame) = resolve(record, fc, &raw, epoch) else {
            break;
        };
        fc.ruby[i] = frame;
        resolved = i + 1;
        if chosen.is_none() && root.is_some_and(|r| under_root(r, frame)) {
            chosen = Some(i);
        }
    }
    if resolved == 0 {
        return None;
    }
    Some((chosen.unwrap_or(0), generation, resolved.min(keep)))
}

/// The `file:line` of a walked frame, from this thread's cache or Ruby.
fn resolve(
    record: &'static Record,
    fc: &mut FrameCaches,
    raw: &RawFrame,
    epoch: u64,
) -> Option<RubyFrame> {
    if let Some(f) = fc.cached_line(raw, epoch) {
        return Some(f);
    }
    // SAFETY: `raw` was just walked on this thread, which still holds the
    // GVL with no GC running.
    let (file, line) = unsafe { ruby::frame_location(raw) }?;
    // SAFETY: Ruby returned a NUL-terminated file name.
    let name = unsafe { core::ffi::CStr::from_ptr(file) }.to_bytes();
    let file = SITES.files().intern(&lock_cx(record), name)?;
    let frame = RubyFrame::new(file, line);
    // SAFETY: as above.
    if watch(unsafe { ruby::frame_code(raw) }) {
        fc.cache_line(raw, epoch, frame);
    }
    Some(frame)
}

/// Whether `frame`'s file is under the application's root.
fn under_root(root: &mwrap_core::app_root::AppRoot, frame: RubyFrame) -> bool {
    crate::state::file_under_root(frame.file(), || {
        SITES
            .files()
            .get(frame.file())
            .is_some_and(|name| root.contains(name))
    })
}

/// The site of a walked frame's line (cached like [`locate`]'s).
fn frame_site(
    record: &'static Record,
    data: &ThreadData,
    raw: &RawFrame,
    frame: RubyFrame,
    epoch: u64,
) -> Option<u32> {
    let key = (raw.iseq, raw.pc, raw.path);
    if let Some(site) = data.cached_ruby_site(key, epoch) {
        return Some(site);
    }
    let site = SITES.intern(
        &lock_cx(record),
        SiteKey::Ruby {
            file: frame.file(),
            line: frame.line(),
        },
    );
    // SAFETY: as in `resolve`.
    if watch(unsafe { ruby::frame_code(raw) }) {
        data.cache_ruby_site(key, epoch, site);
    }
    Some(site)
}

/// The Ruby frames noted when this thread released the GVL, into
/// `fc.ruby` (at most `keep`); how many.
fn noted_frames(data: &ThreadData, fc: &mut FrameCaches, keep: usize) -> usize {
    let Some(stored) = STACKS.get(StackId(data.nogvl_stack.get())) else {
        return 0;
    };
    let mut n = 0;
    for (slot, frame) in fc.ruby[..keep].iter_mut().zip(stored.ruby()) {
        *slot = frame;
        n += 1;
    }
    n
}

/// The site of `stack` at `location`, from this thread's cache (checked
/// against the tables) or interned; None when the tables are full.
fn stack_site(
    record: &'static Record,
    cache: &mut frames::StackSites,
    location: u32,
    stack: &Stack<'_>,
) -> Option<u32> {
    let hash = stack.hash();
    if let Some(site) = cache.get(hash, location) {
        if let Some(SiteKey::Stack {
            location: l,
            stack: id,
        }) = SITES.key(site)
        {
            if l == location && STACKS.holds(id, stack) {
                return Some(site);
            }
        }
    }
    let cx = lock_cx(record);
    let id = STACKS.intern(&cx, stack, dlclose_epoch())?;
    let site = SITES.intern_stack(&cx, location, id)?;
    cache.set(hash, location, site);
    Some(site)
}

/// The location (and, with `ruby_bt`, the Ruby frames as a stack) this
/// thread runs at now, for a note before it releases the GVL; None when
/// Ruby may not be asked.
pub fn ruby_location_now(record: &'static Record, data: &ThreadData) -> Option<NoGvlNote> {
    if !ruby::attached() {
        return None;
    }
    let rec = recording();
    let epoch = code_epoch();
    if (rec.ruby_bt > 0 || rec.app_root.is_some()) && ruby::can_walk_frames() {
        let fc = frames::caches(record, data)?;
        let (i, _, n) = walked_frame(record, data, fc, rec.ruby_bt, epoch)?;
        let raw = fc.raw[i];
        let stack = Stack {
            native: &[],
            ruby: &fc.ruby[..n],
        };
        let id = STACKS
            .intern(&lock_cx(record), &stack, dlclose_epoch())
            .map_or(0, |s| s.0);
        return Some(NoGvlNote {
            site: data
                .cached_ruby_site((raw.iseq, raw.pc, raw.path), epoch)
                .unwrap_or(0),
            line: fc.ruby[i],
            stack: id,
        });
    }
    let frame = ruby::current_frame(data)?;
    if let Some(site) = data.cached_ruby_site(frame.key, epoch) {
        return Some(NoGvlNote {
            site,
            ..NoGvlNote::default()
        });
    }
    let (file, line) = frame.location()?;
    // SAFETY: Ruby returned a NUL-terminated file name.
    let name = unsafe { core::ffi::CStr::from_ptr(file) }.to_bytes();
    let file = SITES.files().intern(&lock_cx(record), name)?;
    Some(NoGvlNote {
        line: RubyFrame::new(file, line),
        ..NoGvlNote::default()
    })
}

/// Marks the frame's compiled code so that freeing it ends the epoch of the
/// cache entries that point into it. False when the code is not a block
/// of ours (the frame is then not cached).
#[cold]
fn watch_code(frame: &ruby::RubyFrame) -> bool {
    watch(frame.code())
}

/// [`watch_code`] for a block of compiled code and its size.
fn watch(code: Option<(*const u8, usize)>) -> bool {
    let Some((code, size)) = code else {
        return false;
    };
    if real::boot_owns(code) {
        return false;
    }
    let hdr = LiveAllocation::from_user(code as *mut u8);
    // SAFETY: Ruby allocates compiled code with ALLOC_N (our malloc), so
    // a header of ours precedes it; its size confirms it before use.
    let h = unsafe { &*hdr };
    // Only tracked blocks are watched: their frees are the ones counted.
    if h.size() != size || h.site() == mwrap_core::abi::UNTRACKED_SITE {
        return false;
    }
    h.watch();
    true
}

#[inline]
fn native_site(record: &'static Record, data: &ThreadData, caller: usize) -> u32 {
    if let Some(site) = data.cached_native_site(caller) {
        return site;
    }
    let site = SITES.intern(&lock_cx(record), SiteKey::Native { address: caller });
    data.cache_native_site(caller, site);
    site
}
