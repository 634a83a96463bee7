//! The calling thread's `errno`. The profiler runs inside `malloc`, `free`
//! and Ruby methods whose callers may be reading errno, so whatever system
//! calls it makes for itself must leave errno as it found it.

#[inline]
pub fn get() -> i32 {
    // SAFETY: errno is thread-local and always addressable.
    unsafe { *libc::__errno_location() }
}

#[inline]
pub fn set(e: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e };
}

/// Runs `f` (which may make system calls) and restores errno afterwards.
#[inline]
pub fn preserved<R>(f: impl FnOnce() -> R) -> R {
    let saved = get();
    let r = f();
    set(saved);
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn preserved_restores_errno() {
        super::set(libc::EINTR);
        let r = super::preserved(|| {
            super::set(libc::ENOMEM);
            7
        });
        assert_eq!((r, super::get()), (7, libc::EINTR));
    }
}
