//! Exact deduplication on the normalized record: the first occurrence wins.

use std::collections::HashSet;

use xxhash_rust::xxh3::xxh3_128;

/// Fingerprint of a normalized record. 128 bits make an accidental collision (which would drop
/// a distinct record) negligible at any realistic corpus size.
pub fn fingerprint(canonical: &[u8]) -> u128 {
    xxh3_128(canonical)
}

/// Remembers fingerprints seen so far. Memory is 16 bytes per distinct record, the one part of
/// the pipeline that grows with the input (about 16 MB per million records).
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashSet<u128>,
    duplicates: u64,
}

impl Dedup {
    /// Returns true the first time a fingerprint is offered, false for every repeat.
    pub fn first(&mut self, fp: u128) -> bool {
        let new = self.seen.insert(fp);
        if !new {
            self.duplicates += 1;
        }
        new
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_wins_and_repeats_are_counted() {
        let mut d = Dedup::default();
        let a = fingerprint(b"a");
        let b = fingerprint(b"b");
        assert!(d.first(a));
        assert!(d.first(b));
        assert!(!d.first(a));
        assert!(!d.first(a));
        assert_eq!(d.duplicates(), 2);
        assert_ne!(a, b);
    }
}
