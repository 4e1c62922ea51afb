//! Deterministic train/valid/test assignment by a seeded hash of the normalized record, so a
//! record's split depends on nothing but its own content and the seed.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// How much goes to a held-out split: a fraction of the records, or a number of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitSize {
    Ratio(f64),
    Count(u64),
}

impl SplitSize {
    /// Parses `0.1` (a ratio, below 1) or `500` (a count).
    pub fn parse(s: &str) -> Result<SplitSize, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(SplitSize::Count(n));
        }
        match s.parse::<f64>() {
            Ok(r) if (0.0..1.0).contains(&r) => Ok(SplitSize::Ratio(r)),
            _ => Err(format!(
                "{s:?} is neither a ratio in [0, 1) nor a whole number of records"
            )),
        }
    }
}

/// A point in [0, 1) drawn from the record's fingerprint and the seed.
pub fn unit(canonical: &[u8], seed: u64) -> f64 {
    // The top 53 bits give a uniformly spaced double in [0, 1).
    (xxh3_64_with_seed(canonical, seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// Thresholds on [`unit`]: below `valid` → valid, below `valid + test` → test, else train.
/// Fixed ratios mean adding records never moves an existing record between splits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Splitter {
    pub valid: f64,
    pub test: f64,
}

impl Splitter {
    pub fn assign(&self, u: f64) -> Split {
        if u < self.valid {
            Split::Valid
        } else if u < self.valid + self.test {
            Split::Test
        } else {
            Split::Train
        }
    }

    /// Turns counts into thresholds from the sorted units of all distinct records (a first pass
    /// over the data): the `n` lowest units go to valid, the next `m` to test.
    pub fn from_counts(valid: SplitSize, test: SplitSize, sorted_units: &[f64]) -> Splitter {
        let threshold = |k: u64| -> f64 {
            let k = k as usize;
            if k == 0 {
                0.0
            } else if k >= sorted_units.len() {
                1.0
            } else {
                // Everything strictly below the k-th unit is inside.
                sorted_units[k]
            }
        };
        let v = match valid {
            SplitSize::Ratio(r) => r,
            SplitSize::Count(n) => threshold(n),
        };
        let t_end = match test {
            SplitSize::Ratio(r) => v + r,
            SplitSize::Count(m) => {
                let below_v = sorted_units.partition_point(|&u| u < v) as u64;
                threshold(below_v + m).max(v)
            }
        };
        Splitter {
            valid: v,
            test: (t_end - v).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ratio_and_count() {
        assert_eq!(SplitSize::parse("0.1"), Ok(SplitSize::Ratio(0.1)));
        assert_eq!(SplitSize::parse("500"), Ok(SplitSize::Count(500)));
        assert_eq!(SplitSize::parse("0"), Ok(SplitSize::Count(0)));
        assert!(SplitSize::parse("1.5").is_err());
        assert!(SplitSize::parse("abc").is_err());
    }

    #[test]
    fn ratios_are_close_and_stable() {
        let s = Splitter {
            valid: 0.1,
            test: 0.05,
        };
        let mut counts = [0usize; 3];
        for i in 0..20_000 {
            let u = unit(format!("record {i}").as_bytes(), 7);
            counts[s.assign(u) as usize] += 1;
            assert_eq!(
                s.assign(u),
                s.assign(unit(format!("record {i}").as_bytes(), 7))
            );
        }
        assert!(
            (counts[1] as f64 / 20_000.0 - 0.1).abs() < 0.01,
            "{counts:?}"
        );
        assert!(
            (counts[2] as f64 / 20_000.0 - 0.05).abs() < 0.01,
            "{counts:?}"
        );
        assert_ne!(unit(b"x", 1), unit(b"x", 2), "the seed matters");
    }

    #[test]
    fn counts_select_exactly_that_many() {
        let mut units: Vec<f64> = (0..1000)
            .map(|i| unit(&[i as u8, (i >> 8) as u8], 0))
            .collect();
        units.sort_by(f64::total_cmp);
        let s = Splitter::from_counts(SplitSize::Count(30), SplitSize::Count(20), &units);
        let mut counts = [0usize; 3];
        for &u in &units {
            counts[s.assign(u) as usize] += 1;
        }
        assert_eq!(counts, [950, 30, 20]);
    }
}
