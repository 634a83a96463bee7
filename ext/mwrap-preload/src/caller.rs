//! Who called an allocator entry point, as the trampolines in
//! [`crate::api`] pass it: where it returns to (the location of a native
//! allocation), and its stack and frame pointers there (where the
//! unwinder starts for `MWRAP=bt`).

#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub pc: usize,
    pub sp: usize,
    pub bp: usize,
}
