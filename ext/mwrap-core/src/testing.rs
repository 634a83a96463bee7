//! Helpers for the unit tests: a thread's lock context and owned headers.

use crate::header::LiveAllocation;
use crate::lock::{ForkGate, LockCx, LockSlot};

static GATE: ForkGate = ForkGate::new();

/// Stands for one thread of the profiler: its bound slot.
pub struct TestThread {
    slot: LockSlot,
}

pub fn cx() -> TestThread {
    let slot = LockSlot::new();
    slot.bind(&GATE, 1);
    TestThread { slot }
}

impl TestThread {
    pub fn cx(&self) -> LockCx<'_> {
        LockCx::new(&self.slot)
    }
}
/// Owns raw blocks for headers in tests (boxed: headers must not move).
#[allow(clippy::vec_box)]
pub struct Blocks(Vec<Box<[u128; 4]>>);

impl Blocks {
    pub fn new() -> Self {
        Blocks(Vec::new())
    }

    pub fn header(&mut self, size: usize) -> *mut LiveAllocation {
        let mut b = Box::new([0u128; 4]);
        let p = b.as_mut_ptr() as *mut LiveAllocation;
        // SAFETY: 64 writable bytes aligned to 16.
        unsafe { LiveAllocation::init(p, size, 0) };
        self.0.push(b);
        p
    }
}
