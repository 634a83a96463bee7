//! What a location is made of. Sites are keyed by these small, copyable
//! keys (a Ruby line refers to its file by [`FileId`]); the table hands out
//! 32-bit ids, so the per-allocation header never depends on the key.

use crate::files::FileId;
use crate::hash::mix;
use crate::stacks::StackId;

/// A location key, stored once per site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C, u32)]
pub enum SiteKey {
    /// Not a location: the zeroed key of a site slot not handed out.
    #[default]
    Unset,
    /// A Ruby source line: the file as Ruby reports it, and the line.
    Ruby { file: FileId, line: u32 },
    /// A native return address.
    Native { address: usize },
    /// One stack of a location (`MWRAP=bt:N` / `ruby_bt:N`): the
    /// location's site id and the stack. Not a location of its own: the
    /// location's counters sum its stacks' (see `sites`).
    Stack { location: u32, stack: StackId },
    /// The bucket for new keys once the table is full.
    Overflow,
    /// The bucket for new keys the profiler had no memory to record.
    NoMemory,
}

// SAFETY: all-zero bytes are `SiteKey::Unset` (discriminant 0, no fields).
unsafe impl crate::mem::ZeroInit for SiteKey {}

/// Printed names of the two buckets.
pub const OVERFLOW_NAME: &[u8] = b"[mwrap: location table full]";
pub const NO_MEMORY_NAME: &[u8] = b"[mwrap: no memory to record a new location]";

impl SiteKey {
    pub fn hash(&self) -> u64 {
        match *self {
            SiteKey::Ruby { file, line } => mix(((file.0 as u64) << 32) | line as u64),
            SiteKey::Native { address } => mix(address as u64 ^ 0x9e37_79b9_7f4a_7c15),
            SiteKey::Stack { location, stack } => {
                mix(((location as u64) << 32 | stack.0 as u64) ^ 0x2545_f491_4f6c_dd1d)
            }
            SiteKey::Unset => 0,
            SiteKey::Overflow => 1,
            SiteKey::NoMemory => 2,
        }
    }

    /// Whether the key names one place (not a bucket, not a stack).
    pub fn is_place(&self) -> bool {
        matches!(self, SiteKey::Ruby { .. } | SiteKey::Native { .. })
    }

    /// Whether the key is a location (what `Mwrap.each` lists): anything
    /// but a stack of one.
    pub fn is_location(&self) -> bool {
        !matches!(self, SiteKey::Stack { .. } | SiteKey::Unset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_apart_and_zero_is_unset() {
        let a = SiteKey::Ruby {
            file: FileId(1),
            line: 1,
        };
        let b = SiteKey::Ruby {
            file: FileId(1),
            line: 2,
        };
        let c = SiteKey::Ruby {
            file: FileId(2),
            line: 1,
        };
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        // SAFETY: checking the ZeroInit promise.
        let zero: SiteKey = unsafe { core::mem::zeroed() };
        assert_eq!(zero, SiteKey::Unset);
        assert!(a.is_place() && !SiteKey::Overflow.is_place());
    }
}
