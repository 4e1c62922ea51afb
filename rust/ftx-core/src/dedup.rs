//! Exact deduplication on the normalized record: the first occurrence wins.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_128;

/// Fingerprint of a normalized record. 128 bits make an accidental collision (which would drop
/// a distinct record) negligible at any realistic corpus size.
pub fn fingerprint(canonical: &[u8]) -> u128 {
    xxh3_128(canonical)
}

/// Where a record was read: its input's index and its line.
pub type Origin = (u32, u64);

/// Remembers fingerprints seen so far, with where each was first read (a repeat's reject names
/// the record that was kept). Memory is about 32 bytes per distinct record, the one part of the
/// pipeline that grows with the input (about 32 MB per million records).
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashMap<u128, Origin>,
    duplicates: u64,
}

impl Dedup {
    /// `None` the first time a fingerprint is offered; for every repeat, where the first was.
    pub fn kept(&mut self, fp: u128, at: Origin) -> Option<Origin> {
        match self.seen.entry(fp) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at);
                None
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                self.duplicates += 1;
                Some(*o.get())
            }
        }
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_wins_and_repeats_name_it() {
        let mut d = Dedup::default();
        let a = fingerprint(b"a");
        let b = fingerprint(b"b");
        assert_eq!(d.kept(a, (0, 1)), None);
        assert_eq!(d.kept(b, (0, 2)), None);
        assert_eq!(d.kept(a, (1, 7)), Some((0, 1)));
        assert_eq!(d.kept(a, (1, 9)), Some((0, 1)));
        assert_eq!(d.duplicates(), 2);
        assert_ne!(a, b);
    }
}
