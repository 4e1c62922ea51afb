//! Counters that the run reports and the manifest records. Memory is bounded by the number of
//! distinct lengths, never by the number of records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Token statistics of one split.
#[derive(Debug, Default, Clone)]
pub struct SplitStats {
    pub records: u64,
    pub tokens: u64,
    pub trained_tokens: u64,
    pub truncated: u64,
    lengths: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LengthSummary {
    pub min: u32,
    pub mean: f64,
    pub p50: u32,
    pub p95: u32,
    pub max: u32,
}

impl SplitStats {
    pub fn add(&mut self, tokens: usize, trained: usize, truncated: bool) {
        self.records += 1;
        self.tokens += tokens as u64;
        self.trained_tokens += trained as u64;
        self.truncated += u64::from(truncated);
        *self.lengths.entry(tokens as u32).or_default() += 1;
    }

    fn percentile(&self, q: f64) -> u32 {
        let rank = ((self.records as f64 - 1.0) * q).round() as u64;
        let mut seen = 0;
        for (&len, &n) in &self.lengths {
            seen += n;
            if seen > rank {
                return len;
            }
        }
        0
    }

    pub fn lengths(&self) -> Option<LengthSummary> {
        if self.records == 0 {
            return None;
        }
        Some(LengthSummary {
            min: *self.lengths.keys().next().unwrap_or(&0),
            mean: self.tokens as f64 / self.records as f64,
            p50: self.percentile(0.5),
            p95: self.percentile(0.95),
            max: *self.lengths.keys().next_back().unwrap_or(&0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_lengths() {
        let mut s = SplitStats::default();
        for n in 1..=100 {
            s.add(n, 1, n == 100);
        }
        let l = s.lengths().unwrap();
        assert_eq!((l.min, l.p50, l.p95, l.max), (1, 51, 95, 100));
        assert!((l.mean - 50.5).abs() < 1e-9);
        assert_eq!(
            (s.records, s.tokens, s.trained_tokens, s.truncated),
            (100, 5050, 100, 1)
        );
        assert!(SplitStats::default().lengths().is_none());
    }
}
