//! Which location an allocation is charged to: the Ruby line running on
//! this thread when Ruby may be asked (see `ruby`), else the native caller
//! (the return address of the `malloc` call).

use mwrap_core::SiteKey;

use crate::per_thread::{lock_cx, Record};
use crate::ruby;
use crate::state::{current_generation, saw_generation, SITES};
use crate::thread_data::ThreadData;

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
        if let Some(site) = data.cached_ruby_site(frame.key, generation) {
            return (site, generation);
        }
        if let Some((file, line)) = frame.location() {
            // SAFETY: Ruby returned a NUL-terminated file name.
            let name = unsafe { core::ffi::CStr::from_ptr(file) }.to_bytes();
            if let Some(file) = SITES.files().intern(&lock_cx(record), name) {
                let site = SITES.intern(&lock_cx(record), SiteKey::Ruby { file, line });
                data.cache_ruby_site(frame.key, generation, site);
                return (site, generation);
            }
        }
    }
    (native_site(record, data, caller), current_generation())
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
