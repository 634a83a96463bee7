//! What a location is made of. The table keys sites by an interned id over
//! these variable-length keys, so a location can later become a stack of
//! frames without changing the per-allocation header.

/// An owned location key, stored once per site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteKey {
    /// A Ruby source line: the file as Ruby reports it, and the line.
    Ruby { file: Box<[u8]>, line: u32 },
    /// A native return address.
    Native { address: usize },
    /// The bucket for new keys once the table is full.
    Overflow,
}

/// A borrowed key, used for lookups without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef<'a> {
    Ruby { file: &'a [u8], line: u32 },
    Native { address: usize },
    Overflow,
}

impl SiteKey {
    pub fn as_ref(&self) -> KeyRef<'_> {
        match self {
            SiteKey::Ruby { file, line } => KeyRef::Ruby { file, line: *line },
            SiteKey::Native { address } => KeyRef::Native { address: *address },
            SiteKey::Overflow => KeyRef::Overflow,
        }
    }

    pub fn matches(&self, other: &KeyRef<'_>) -> bool {
        self.as_ref() == *other
    }
}

impl KeyRef<'_> {
    pub fn to_owned(&self) -> SiteKey {
        match *self {
            KeyRef::Ruby { file, line } => SiteKey::Ruby {
                file: file.into(),
                line,
            },
            KeyRef::Native { address } => SiteKey::Native { address },
            KeyRef::Overflow => SiteKey::Overflow,
        }
    }

    pub fn hash(&self) -> u64 {
        match *self {
            KeyRef::Ruby { file, line } => mix(hash_bytes(file) ^ line as u64),
            KeyRef::Native { address } => mix(address as u64 ^ 0x9e37_79b9_7f4a_7c15),
            KeyRef::Overflow => 0,
        }
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
    h
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
    fn equal_keys_hash_equal_and_differ_otherwise() {
        let a = KeyRef::Ruby {
            file: b"a.rb",
            line: 1,
        };
        assert_eq!(a.hash(), a.to_owned().as_ref().hash());
        assert_ne!(
            a.hash(),
            KeyRef::Ruby {
                file: b"a.rb",
                line: 2
            }
            .hash()
        );
        assert_ne!(
            a.hash(),
            KeyRef::Ruby {
                file: b"b.rb",
                line: 1
            }
            .hash()
        );
        assert_ne!(hash_bytes(b"abcdefgh1"), hash_bytes(b"abcdefgh2"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
    }

    #[test]
    fn owned_key_matches_its_borrowed_form() {
        let k = SiteKey::Native { address: 42 };
        assert!(k.matches(&KeyRef::Native { address: 42 }));
        assert!(!k.matches(&KeyRef::Native { address: 43 }));
        assert!(!k.matches(&KeyRef::Ruby {
            file: b"x",
            line: 42
        }));
    }
}
