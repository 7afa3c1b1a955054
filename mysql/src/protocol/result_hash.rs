//! The result hash: SHA-256 over a command's result exactly as the client
//! received it, so that two runs of a statement can be compared without
//! storing every row.
//!
//! What is hashed, in order, across all result sets of the response: each
//! result set's column-count packet, its column definitions and its rows (text
//! or binary), each as a 4-byte little-endian length followed by the payload.
//! OK, EOF and ERR packets are not hashed: they carry status flags, warnings
//! counts and session-state changes that differ between identical results.
//! A response without a result set has no hash.

use sha2::{Digest, Sha256};

/// Accumulates the hash of one response.
#[derive(Debug, Clone, Default)]
pub struct ResultHash {
    hasher: Option<Sha256>,
}

impl ResultHash {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one result packet (column count, column definition or row).
    pub fn update(&mut self, payload: &[u8]) {
        let h = self.hasher.get_or_insert_with(Sha256::new);
        h.update((payload.len() as u32).to_le_bytes());
        h.update(payload);
    }

    /// The hex hash, or None when no result packet was seen.
    pub fn finish(self) -> Option<String> {
        self.hasher.map(|h| hex::encode(h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_order_count() {
        let hash = |packets: &[&[u8]]| {
            let mut h = ResultHash::new();
            packets.iter().for_each(|p| h.update(p));
            h.finish()
        };
        assert_eq!(ResultHash::new().finish(), None);
        assert_eq!(hash(&[b"ab", b"c"]), hash(&[b"ab", b"c"]));
        assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"a", b"bc"]));
        assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"c", b"ab"]));
        assert_eq!(hash(&[b""]).unwrap().len(), 64);
    }
}
