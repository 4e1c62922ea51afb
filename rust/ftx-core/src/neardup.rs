//! Near-duplicate detection (MinHash + LSH), and the words and n-grams that decontamination
//! reads the same way.
//!
//! A record's text (message contents, reasoning and tool calls; not tool definitions) is cut
//! into words: lowercase runs of letters and digits, everything else a separator, as GPT-3's
//! and datatrove's normalization strips punctuation. Its shingles are the n-grams of consecutive
//! words (a text with fewer words is one shingle of all of them). The signature is the minimum
//! over the shingles of each of `permutations` hash functions; LSH cuts it into `bands` bands of
//! `rows` values and two records are candidates when one band is equal. A candidate is a near
//! duplicate when the signatures agree on at least `threshold` of their values (the estimate of
//! the Jaccard similarity of the shingle sets).
//!
//! Records are offered to an [`Index`] in input order and each is compared with the records
//! kept before it, so the earliest record of a cluster is kept and a near duplicate names it:
//! the outcome depends only on the input order, never on the threads that computed signatures.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::conversation::Record;

/// The settings of near-dedup (validated by `options::Settings`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub ngram: usize,
    pub permutations: usize,
    pub bands: usize,
    pub rows: usize,
    pub threshold: f64,
}

impl Params {
    /// The near-dedup settings of `prepare`'s settings.
    pub fn of(s: &crate::options::Settings) -> Self {
        Params::new(
            s.near_dedup_ngram,
            s.near_dedup_permutations,
            s.near_dedup_bands,
            s.near_dedup_threshold,
        )
    }

    /// `bands: None` takes datasketch's choice for the threshold: the bands and rows
    /// (`bands * rows <= permutations`) that minimize the equally weighted probabilities of a
    /// false positive and a false negative under the banding curve.
    pub fn new(ngram: usize, permutations: usize, bands: Option<usize>, threshold: f64) -> Self {
        let (bands, rows) = match bands {
            Some(b) => {
                let b = b.clamp(1, permutations.max(1));
                (b, permutations / b)
            }
            None => optimal_bands(threshold, permutations),
        };
        Params {
            ngram,
            permutations,
            bands,
            rows,
            threshold,
        }
    }
}

/// datasketch's `_optimal_param` with weights 0.5/0.5, integrated by Simpson's rule.
pub fn optimal_bands(threshold: f64, permutations: usize) -> (usize, usize) {
    let integrate = |f: &dyn Fn(f64) -> f64, a: f64, b: f64| {
        let n = 200;
        let h = (b - a) / n as f64;
        let mut sum = f(a) + f(b);
        for i in 1..n {
            sum += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        sum * h / 3.0
    };
    let mut best = (1, permutations.max(1));
    let mut min_error = f64::INFINITY;
    for b in 1..=permutations {
        for r in 1..=permutations / b {
            let (bf, rf) = (b as f64, r as f64);
            let candidate = |s: f64| 1.0 - (1.0 - s.powf(rf)).powf(bf);
            let false_pos = integrate(&candidate, 0.0, threshold);
            let false_neg = integrate(&|s| 1.0 - candidate(s), threshold, 1.0);
            let error = 0.5 * false_pos + 0.5 * false_neg;
            if error < min_error {
                min_error = error;
                best = (b, r);
            }
        }
    }
    best
}

/// The pieces of a record's text that near-dedup and decontamination read.
pub fn record_pieces(record: &Record, mut piece: impl FnMut(&str)) {
    match record {
        Record::Text { text } => piece(text),
        Record::Chat { messages, .. } => {
            for m in messages {
                piece(&m.content);
                if let Some(r) = &m.reasoning {
                    piece(r);
                }
                for call in &m.tool_calls {
                    piece(&call.name);
                    piece(&call.arguments.to_string());
                }
            }
        }
    }
}

/// Appends the hash of every word of `text` to `out` (words as the module says).
pub fn push_words(text: &str, out: &mut Vec<u64>) {
    let mut lower: Vec<u8> = Vec::new();
    if text.is_ascii() {
        // Words are hashed where they lie in the text; only one with capitals is copied.
        let words = text.as_bytes().split(|c| !c.is_ascii_alphanumeric());
        for w in words.filter(|w| !w.is_empty()) {
            if w.iter().any(u8::is_ascii_uppercase) {
                lower.clear();
                lower.extend(w.iter().map(u8::to_ascii_lowercase));
                out.push(xxh3_64(&lower));
            } else {
                out.push(xxh3_64(w));
            }
        }
        return;
    }
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                lower.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
            }
        } else if !lower.is_empty() {
            out.push(xxh3_64(&lower));
            lower.clear();
        }
    }
    if !lower.is_empty() {
        out.push(xxh3_64(&lower));
    }
}

/// The word hashes of a record, in order.
pub fn record_words(record: &Record) -> Vec<u64> {
    let mut words = Vec::new();
    record_pieces(record, |p| push_words(p, &mut words));
    words
}

/// The hash of an n-gram from the hashes of its words (order matters).
pub fn ngram_hash(words: &[u64]) -> u64 {
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    for &w in words {
        h = (h.rotate_left(27) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fmix64(h ^ words.len() as u64)
}

/// MurmurHash3's finalizer: every input bit reaches every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One record's MinHash signature and its LSH band hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub values: Vec<u32>,
    pub bands: Vec<u64>,
}

impl Signature {
    /// The fraction of equal values: the estimate of the shingle sets' Jaccard similarity.
    pub fn similarity(&self, other: &Signature) -> f64 {
        let same = self
            .values
            .iter()
            .zip(&other.values)
            .filter(|(a, b)| a == b)
            .count();
        same as f64 / self.values.len().max(1) as f64
    }
}

/// The hash functions of the signatures: `(a·x + b) mod 2^64`, its high 32 bits, for fixed
/// random odd `a` and random `b` (the multiply-add-shift family), so signatures are the same in
/// every run.
#[derive(Debug, Clone)]
pub struct MinHasher {
    params: Params,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(params: Params) -> Self {
        let mut state: u64 = 0x5EED_F7C0_DEDB_u64;
        let mut next = || {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            fmix64(state)
        };
        let (a, b): (Vec<u64>, Vec<u64>) = (0..params.permutations)
            .map(|_| (next() | 1, next()))
            .unzip();
        MinHasher { params, a, b }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The signature of a word sequence; `None` when it has no word (such a record is never a
    /// near duplicate).
    pub fn signature(&self, words: &[u64]) -> Option<Signature> {
        if words.is_empty() {
            return None;
        }
        let n = self.params.ngram.clamp(1, words.len());
        let shingles: Vec<u64> = words.windows(n).map(ngram_hash).collect();
        let mut values = Vec::with_capacity(self.params.permutations);
        // A few hash functions at a time over all shingles: their constants and minima stay in
        // registers and their multiplications are independent.
        let (mut a, mut b) = (self.a.chunks_exact(LANES), self.b.chunks_exact(LANES));
        for (a4, b4) in (&mut a).zip(&mut b) {
            let mut mins = [u32::MAX; LANES];
            for &x in &shingles {
                for ((m, &a), &b) in mins.iter_mut().zip(a4).zip(b4) {
                    *m = (*m).min(permute(a, b, x));
                }
            }
            values.extend_from_slice(&mins);
        }
        for (&a, &b) in a.remainder().iter().zip(b.remainder()) {
            let min = shingles.iter().map(|&x| permute(a, b, x)).min();
            values.push(min.unwrap_or(u32::MAX));
        }
        let rows = self.params.rows;
        let bands = (0..self.params.bands)
            .map(|band| {
                let mut h = band as u64;
                for &v in &values[band * rows..(band + 1) * rows] {
                    h = (h.rotate_left(29) ^ u64::from(v)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                }
                fmix64(h)
            })
            .collect();
        Some(Signature { values, bands })
    }

    pub fn signature_of_text(&self, text: &str) -> Option<Signature> {
        let mut words = Vec::new();
        push_words(text, &mut words);
        self.signature(&words)
    }
}

/// Hash functions computed together in [`MinHasher::signature`].
const LANES: usize = 4;

/// One hash function of the family: the high 32 bits of `a·x + b` mod 2^64.
#[inline(always)]
fn permute(a: u64, b: u64, x: u64) -> u32 {
    (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32
}

/// Band hashes are already uniform: they index the maps as they are.
#[derive(Debug, Default)]
pub(crate) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type BandMap = HashMap<u64, u32, BuildHasherDefault<Identity>>;
const NONE: u32 = u32::MAX;

/// What [`Index::offer`] decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The record is kept; its number among the kept ones.
    Kept(usize),
    /// A near duplicate of kept record `of` (the earliest whose similarity reaches the
    /// threshold), with that similarity.
    Duplicate { of: usize, similarity: f64 },
}

/// The kept records' signatures and band buckets. Memory per kept record: its signature (4 bytes
/// per permutation) and about 16 bytes per band, about 0.7 KB at the defaults.
#[derive(Debug)]
pub struct Index {
    threshold: f64,
    bands: usize,
    heads: Vec<BandMap>,
    /// For kept record `k` and band `b`, `next[k * bands + b]`: the previous kept record in the
    /// same bucket (a chain per bucket, newest first).
    next: Vec<u32>,
    kept: Vec<Vec<u32>>,
    /// The last query that looked at each kept record, so a candidate found in several bands is
    /// compared once.
    stamp: Vec<u32>,
    queries: u32,
    duplicates: u64,
}

impl Index {
    pub fn new(params: &Params) -> Self {
        Index {
            threshold: params.threshold,
            bands: params.bands,
            heads: (0..params.bands).map(|_| BandMap::default()).collect(),
            next: Vec::new(),
            kept: Vec::new(),
            stamp: Vec::new(),
            queries: 0,
            duplicates: 0,
        }
    }

    /// Decides on the next record in input order: a near duplicate of an earlier kept record, or
    /// kept (and then remembered).
    pub fn offer(&mut self, sig: Signature) -> Verdict {
        self.queries = self.queries.wrapping_add(1);
        if self.queries == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.queries = 1;
        }
        let mut best: Option<(usize, f64)> = None;
        for (band, h) in sig.bands.iter().enumerate() {
            let mut k = self.heads[band].get(h).copied().unwrap_or(NONE);
            while k != NONE {
                let ku = k as usize;
                // Only a record older than the best found so far can change the answer.
                if self.stamp[ku] != self.queries {
                    self.stamp[ku] = self.queries;
                    if best.is_none_or(|(b, _)| ku < b) {
                        let s = similarity(&sig.values, &self.kept[ku]);
                        if s >= self.threshold {
                            best = Some((ku, s));
                        }
                    }
                }
                k = self.next[ku * self.bands + band];
            }
        }
        if let Some((of, similarity)) = best {
            self.duplicates += 1;
            return Verdict::Duplicate { of, similarity };
        }
        let id = self.kept.len();
        for (band, &h) in sig.bands.iter().enumerate() {
            let prev = self.heads[band].insert(h, id as u32).unwrap_or(NONE);
            self.next.push(prev);
            debug_assert_eq!(self.next.len(), id * self.bands + band + 1);
        }
        self.kept.push(sig.values);
        self.stamp.push(0);
        Verdict::Kept(id)
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

pub(crate) fn similarity(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// A near-duplicate cluster: the record kept and the records dropped as its near duplicates,
/// each with its estimated similarity to the kept one. Records are numbered by their position
/// in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub kept: usize,
    pub members: Vec<(usize, f64)>,
}

/// The near-duplicate clusters of `texts` (clusters of one record left out), in the order of
/// their kept records. Signatures are computed on the current rayon pool; the result is the
/// same for any number of threads.
pub fn clusters<S: AsRef<str> + Sync>(texts: &[S], params: &Params) -> Vec<Cluster> {
    let hasher = MinHasher::new(*params);
    let sigs: Vec<Option<Signature>> = texts
        .par_iter()
        .map(|t| hasher.signature_of_text(t.as_ref()))
        .collect();
    let mut index = Index::new(params);
    let mut kept_at: Vec<usize> = Vec::new();
    let mut members: HashMap<usize, Vec<(usize, f64)>> = HashMap::new();
    for (i, sig) in sigs.into_iter().enumerate() {
        let Some(sig) = sig else { continue };
        match index.offer(sig) {
            Verdict::Kept(_) => kept_at.push(i),
            Verdict::Duplicate { of, similarity } => {
                members.entry(of).or_default().push((i, similarity));
            }
        }
    }
    let mut out: Vec<Cluster> = members
        .into_iter()
        .map(|(k, members)| Cluster {
            kept: kept_at[k],
            members,
        })
        .collect();
    out.sort_by_key(|c| c.kept);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params::new(5, 128, None, 0.8)
    }

    fn words(n: usize, salt: &str) -> String {
        (0..n).map(|i| format!("w{i}{salt} ")).collect()
    }

    #[test]
    fn words_are_lowercase_alphanumeric_runs() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push_words("Hello, WORLD!  it's Ünïcode 42", &mut a);
        push_words("hello world it s ünïcode 42", &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), 6);
        // The ASCII path and the general one agree.
        let (mut ascii, mut mixed) = (Vec::new(), Vec::new());
        push_words("Hello, WORLD_it's 42", &mut ascii);
        push_words("Hello, WORLD_it's 42 é", &mut mixed);
        assert_eq!(ascii.len(), 5);
        assert_eq!(ascii[..], mixed[..5]);
        assert_eq!(ascii[..2], a[..2]);
        let mut none = Vec::new();
        push_words(" ,.;!? ", &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn signatures_are_deterministic_and_estimate_jaccard() {
        let h = MinHasher::new(params());
        let text = words(400, "");
        let a = h.signature_of_text(&text).unwrap();
        assert_eq!(
            a,
            MinHasher::new(params()).signature_of_text(&text).unwrap()
        );
        assert_eq!(a.values.len(), 128);
        assert_eq!(a.bands.len(), params().bands);
        // 400 words, 396 shingles; changing the last 20 words leaves 376 of 416 distinct
        // shingles shared: Jaccard 0.904.
        let edited = format!("{}{}", words(380, ""), words(20, "x"));
        let b = h.signature_of_text(&edited).unwrap();
        let s = a.similarity(&b);
        assert!((s - 0.904).abs() < 0.1, "{s}");
        let other = h.signature_of_text(&words(400, "y")).unwrap();
        assert!(a.similarity(&other) < 0.05);
        assert!(h.signature_of_text("!!").is_none());
        // Fewer words than the n-gram: one shingle of all of them.
        assert_eq!(
            h.signature_of_text("two words"),
            h.signature_of_text("Two, words.")
        );
    }

    #[test]
    fn the_default_bands_are_datasketchs_for_the_threshold() {
        // datasketch.MinHashLSH(threshold=0.8, num_perm=128).b, .r
        assert_eq!(optimal_bands(0.8, 128), (9, 13));
        assert_eq!(optimal_bands(0.5, 128), (25, 5));
        assert_eq!(optimal_bands(0.9, 128), (5, 25));
        assert_eq!(Params::new(5, 128, Some(16), 0.8).rows, 8);
    }

    #[test]
    fn near_duplicates_name_the_earliest_kept_record() {
        let base = words(300, "");
        let texts = vec![
            words(300, "a"),                            // 0: kept, alone
            base.clone(),                               // 1: kept
            format!("{base} one more sentence here"),   // 2: near 1
            words(300, "b"),                            // 3: kept, alone
            format!("{} tail", words(298, "")),         // 4: near 1
            format!("{base} and another ending to it"), // 5: near 1
        ];
        let found = clusters(&texts, &params());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kept, 1);
        let ids: Vec<usize> = found[0].members.iter().map(|m| m.0).collect();
        assert_eq!(ids, [2, 4, 5]);
        assert!(found[0].members.iter().all(|m| m.1 >= 0.8));
    }

    #[test]
    fn candidates_are_only_records_sharing_a_band() {
        let p = params();
        let h = MinHasher::new(p);
        let mut index = Index::new(&p);
        let a = h.signature_of_text(&words(200, "")).unwrap();
        assert_eq!(index.offer(a.clone()), Verdict::Kept(0));
        // A signature equal to `a` except in one value of every band: similarity is high but no
        // band matches, so LSH never proposes it.
        let mut far = a.clone();
        for band in 0..p.bands {
            far.values[band * p.rows] ^= 1;
            far.bands[band] ^= 1;
        }
        assert!(far.similarity(&a) > 0.9);
        assert_eq!(index.offer(far), Verdict::Kept(1));
        assert!(matches!(
            index.offer(a),
            Verdict::Duplicate { of: 0, similarity } if similarity == 1.0
        ));
        assert_eq!(index.duplicates(), 1);
    }

    #[test]
    fn clusters_do_not_depend_on_the_threads() {
        let texts: Vec<String> = (0..400)
            .map(|i| format!("{} {}", words(120, &(i % 37).to_string()), i % 3))
            .collect();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| clusters(&texts, &params()))
        };
        let one = run(1);
        assert_eq!(one.len(), 37);
        assert!(one.iter().all(|c| c.kept < 37 && c.members.len() >= 9));
        assert_eq!(one, run(4));
    }
}
