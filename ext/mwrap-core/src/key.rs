//! What a location is made of. Sites are keyed by these small, copyable
//! keys (a Ruby line refers to its file by [`FileId`]); the table hands out
//! 32-bit ids, so the per-allocation header never depends on the key.

use crate::files::FileId;

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
            SiteKey::Unset => 0,
            SiteKey::Overflow => 1,
            SiteKey::NoMemory => 2,
        }
    }

    /// Whether the key names one place (not a bucket).
    pub fn is_place(&self) -> bool {
        matches!(self, SiteKey::Ruby { .. } | SiteKey::Native { .. })
    }
}

/// A fast non-cryptographic hash (FxHash-style, 8 bytes a step).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    mix(h)
}

/// Final avalanche so that low bits (used by hash tables) depend on all bits.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
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
        assert_ne!(hash_bytes(b"abcdefgh1"), hash_bytes(b"abcdefgh2"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
        // SAFETY: checking the ZeroInit promise.
        let zero: SiteKey = unsafe { core::mem::zeroed() };
        assert_eq!(zero, SiteKey::Unset);
        assert!(a.is_place() && !SiteKey::Overflow.is_place());
    }
}
