//! Dedup across shards in bounded memory, for `merge`: the same answers as `prepare`'s in-memory
//! [`crate::dedup::Dedup`] and [`crate::neardup::Index`], worked out on disk beforehand.
//!
//! Exact duplicates: (fingerprint, position) pairs go to hash partitions; each partition, sorted,
//! names every repeat's first occurrence. Near duplicates: each LSH band of each signature goes
//! to a partition by its bucket; each bucket's members are compared pairwise, and the pairs at
//! or above the threshold are kept as edges, sorted by the later record. One pass in input order
//! then decides as the index does: a record is a near duplicate of the earliest *kept* record it
//! has an edge to. That pass holds one bit per record (which ones were kept) and one cursor per
//! partition; a partition is sized to the memory budget, so memory does not grow with the corpus
//! beyond that bit.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::neardup::{similarity, Params};
use crate::sink::{Origin, Verdict3};

/// A record of a spill file: fixed size, little-endian, ordered by `key` in a sorted file.
trait Fixed: Sized + Send {
    const SIZE: usize;
    fn key(&self) -> u64;
    fn put(&self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// One accepted record's fingerprint, for the exact partitions.
struct Print {
    fp: u128,
    idx: u64,
    at: Origin,
}

impl Fixed for Print {
    const SIZE: usize = 36;
    fn key(&self) -> u64 {
        self.idx
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fp.to_le_bytes());
        out.extend_from_slice(&self.idx.to_le_bytes());
        out.extend_from_slice(&self.at.0.to_le_bytes());
        out.extend_from_slice(&self.at.1.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let fp = u128::from(u64_at(b, 0)) | (u128::from(u64_at(b, 8)) << 64);
        Print {
            fp,
            idx: u64_at(b, 16),
            at: (u32_at(b, 24), u64_at(b, 28)),
        }
    }
}

/// A repeat at `idx` of the record kept at `at`.
struct Dup {
    idx: u64,
    at: Origin,
}

impl Fixed for Dup {
    const SIZE: usize = 20;
    fn key(&self) -> u64 {
        self.idx
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.idx.to_le_bytes());
        out.extend_from_slice(&self.at.0.to_le_bytes());
        out.extend_from_slice(&self.at.1.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        Dup {
            idx: u64_at(b, 0),
            at: (u32_at(b, 8), u64_at(b, 12)),
        }
    }
}

/// One band of one signature: its bucket, and where the signature's values are.
struct Band {
    hash: u64,
    band: u32,
    idx: u64,
    rank: u64,
    at: Origin,
}

impl Fixed for Band {
    const SIZE: usize = 40;
    fn key(&self) -> u64 {
        self.idx
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&self.band.to_le_bytes());
        out.extend_from_slice(&self.idx.to_le_bytes());
        out.extend_from_slice(&self.rank.to_le_bytes());
        out.extend_from_slice(&self.at.0.to_le_bytes());
        out.extend_from_slice(&self.at.1.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        Band {
            hash: u64_at(b, 0),
            band: u32_at(b, 8),
            idx: u64_at(b, 12),
            rank: u64_at(b, 20),
            at: (u32_at(b, 28), u64_at(b, 32)),
        }
    }
}

/// A bucket's signatures, held while it is compared when they fit a quarter of the budget; read from
/// the signature file at each comparison when not.
struct Bucket {
    cached: Option<Vec<Vec<u32>>>,
}

/// The later record `j` shares a bucket with the earlier `i` (read at `at`) at `similarity`.
#[derive(Clone, Copy)]
struct Edge {
    j: u64,
    i: u64,
    similarity: f64,
    at: Origin,
}

impl Fixed for Edge {
    const SIZE: usize = 36;
    fn key(&self) -> u64 {
        self.j
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.j.to_le_bytes());
        out.extend_from_slice(&self.i.to_le_bytes());
        out.extend_from_slice(&self.similarity.to_le_bytes());
        out.extend_from_slice(&self.at.0.to_le_bytes());
        out.extend_from_slice(&self.at.1.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        Edge {
            j: u64_at(b, 0),
            i: u64_at(b, 8),
            similarity: f64::from_bits(u64_at(b, 16)),
            at: (u32_at(b, 24), u64_at(b, 28)),
        }
    }
}

/// The buffer of each of `files` open together: an eighth of the budget shared among them, so
/// that many partitions or runs do not add up to more than the budget allows.
fn buffer(files: usize, budget: u64) -> usize {
    (budget as usize / 8 / files.max(1)).clamp(4 << 10, 64 << 10)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Writers of `n` partition files `{stem}.{p}`.
struct Spill<T> {
    paths: Vec<PathBuf>,
    files: Vec<BufWriter<File>>,
    buf: Vec<u8>,
    _kind: std::marker::PhantomData<T>,
}

impl<T: Fixed> Spill<T> {
    fn create(dir: &Path, stem: &str, n: usize, budget: u64) -> Result<Self> {
        let paths: Vec<PathBuf> = (0..n).map(|p| dir.join(format!("{stem}.{p}"))).collect();
        let files = paths
            .iter()
            .map(|p| {
                Ok(BufWriter::with_capacity(
                    buffer(n, budget),
                    File::create(p).map_err(io(p))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Spill {
            paths,
            files,
            buf: Vec::with_capacity(T::SIZE),
            _kind: std::marker::PhantomData,
        })
    }

    fn push(&mut self, partition: usize, item: &T) -> Result<()> {
        self.buf.clear();
        item.put(&mut self.buf);
        self.files[partition]
            .write_all(&self.buf)
            .map_err(io(&self.paths[partition]))
    }

    fn finish(self) -> Result<Vec<PathBuf>> {
        for (f, p) in self.files.into_iter().zip(&self.paths) {
            f.into_inner().map_err(|e| Error::io(p, e.into_error()))?;
        }
        Ok(self.paths)
    }
}

/// A spill file's records, decoded as they are read (the file's bytes are never all held).
fn read_all<T: Fixed>(path: &Path) -> Result<Vec<T>> {
    let len = fs_err::metadata(path)?.len() as usize;
    if !len.is_multiple_of(T::SIZE) {
        return Err(Error::Internal(format!(
            "{}: a spill file of {len} bytes, not whole records",
            path.display()
        )));
    }
    let mut items = Vec::with_capacity(len / T::SIZE);
    let mut reader = BufReader::with_capacity(64 << 10, File::open(path).map_err(io(path))?);
    let mut buf = vec![0u8; T::SIZE];
    for _ in 0..len / T::SIZE {
        reader.read_exact(&mut buf).map_err(io(path))?;
        items.push(T::get(&buf));
    }
    Ok(items)
}

fn write_all<T: Fixed>(path: &Path, items: &[T]) -> Result<()> {
    let mut out = BufWriter::with_capacity(64 << 10, File::create(path).map_err(io(path))?);
    let mut buf = Vec::with_capacity(T::SIZE);
    for item in items {
        buf.clear();
        item.put(&mut buf);
        out.write_all(&buf).map_err(io(path))?;
    }
    out.into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    Ok(())
}

/// Sorted files read together in key order.
struct Merged<T> {
    readers: Vec<(BufReader<File>, PathBuf)>,
    heads: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    items: Vec<Option<T>>,
    buf: Vec<u8>,
}

impl<T: Fixed> Merged<T> {
    fn open(paths: &[PathBuf], budget: u64) -> Result<Self> {
        let mut m = Merged {
            readers: Vec::new(),
            heads: BinaryHeap::new(),
            items: Vec::new(),
            buf: vec![0; T::SIZE],
        };
        for p in paths {
            let file = File::open(p).map_err(io(p))?;
            m.readers.push((
                BufReader::with_capacity(buffer(paths.len(), budget), file),
                p.clone(),
            ));
            m.items.push(None);
            m.advance(m.readers.len() - 1)?;
        }
        Ok(m)
    }

    fn advance(&mut self, r: usize) -> Result<()> {
        let (reader, path) = &mut self.readers[r];
        match reader.read_exact(&mut self.buf) {
            Ok(()) => {
                let item = T::get(&self.buf);
                self.heads.push(std::cmp::Reverse((item.key(), r)));
                self.items[r] = Some(item);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.items[r] = None;
                Ok(())
            }
            Err(e) => Err(Error::io(path.clone(), e)),
        }
    }

    /// The next item if its key is `key`. Keys are asked for in increasing order; one left
    /// behind means a record was skipped, which is a bug.
    fn take(&mut self, key: u64) -> Result<Option<T>> {
        let Some(&std::cmp::Reverse((k, r))) = self.heads.peek() else {
            return Ok(None);
        };
        if k > key {
            return Ok(None);
        }
        if k < key {
            return Err(Error::Internal(format!(
                "merge: a dedup decision for record {k} was not used (now at {key})"
            )));
        }
        self.heads.pop();
        let item = self.items[r].take();
        self.advance(r)?;
        Ok(item)
    }
}

/// One record offered to the resolution, in input order.
pub(crate) struct Candidate<'a> {
    pub(crate) idx: u64,
    pub(crate) fp: u128,
    /// Its point in [0, 1) for the split.
    pub(crate) unit: f64,
    pub(crate) at: Origin,
    /// With near-dedup: the signature's values and band hashes.
    pub(crate) sig: Option<(&'a [u32], &'a [u64])>,
}

/// How a resolution is made: where it spills and how much one partition may hold.
pub(crate) struct Resolver<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) budget: u64,
    pub(crate) dedup: bool,
    pub(crate) near: Option<Params>,
}

/// The decisions, on disk, for one pass over the same candidates.
pub(crate) struct Resolution {
    budget: u64,
    dups: Vec<PathBuf>,
    edges: Option<Vec<PathBuf>>,
    rows: u64,
}

fn partitions(bytes: u64, budget: u64) -> usize {
    (bytes.div_ceil(budget.max(1)) as usize).clamp(1, 4096)
}

/// The partition of a 64-bit hash (its high bits are as uniform as the low ones).
fn part_of(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

impl Resolver<'_> {
    /// Resolves the candidates `feed` offers (it is called once per pass it needs, and must offer
    /// the same ones each time). `rows` bounds the positions.
    pub(crate) fn resolve(
        &self,
        tag: &str,
        rows: u64,
        mut feed: impl FnMut(&mut dyn FnMut(Candidate) -> Result<()>) -> Result<()>,
    ) -> Result<Resolution> {
        let dups = match self.dedup {
            true => self.exact(tag, rows, &mut feed)?,
            false => Vec::new(),
        };
        let edges = match &self.near {
            Some(params) => Some(self.near(tag, rows, params, &dups, &mut feed)?),
            None => None,
        };
        Ok(Resolution {
            budget: self.budget,
            dups,
            edges,
            rows,
        })
    }

    fn exact(
        &self,
        tag: &str,
        rows: u64,
        feed: &mut impl FnMut(&mut dyn FnMut(Candidate) -> Result<()>) -> Result<()>,
    ) -> Result<Vec<PathBuf>> {
        let n = partitions(rows * std::mem::size_of::<Print>() as u64, self.budget);
        let mut spill = Spill::<Print>::create(self.dir, &format!("{tag}.prints"), n, self.budget)?;
        feed(&mut |c| {
            let p = part_of((c.fp >> 64) as u64, n);
            spill.push(
                p,
                &Print {
                    fp: c.fp,
                    idx: c.idx,
                    at: c.at,
                },
            )
        })?;
        let mut out = Vec::new();
        for (p, path) in spill.finish()?.into_iter().enumerate() {
            let mut prints = read_all::<Print>(&path)?;
            fs_err::remove_file(&path)?;
            prints.par_sort_unstable_by_key(|x| (x.fp, x.idx));
            let mut dups = Vec::new();
            for group in prints.chunk_by(|a, b| a.fp == b.fp) {
                let kept = group[0].at;
                dups.extend(group[1..].iter().map(|x| Dup {
                    idx: x.idx,
                    at: kept,
                }));
            }
            dups.par_sort_unstable_by_key(|d| d.idx);
            let dest = self.dir.join(format!("{tag}.dups.{p}"));
            write_all(&dest, &dups)?;
            out.push(dest);
        }
        Ok(out)
    }

    fn near(
        &self,
        tag: &str,
        rows: u64,
        params: &Params,
        dups: &[PathBuf],
        feed: &mut impl FnMut(&mut dyn FnMut(Candidate) -> Result<()>) -> Result<()>,
    ) -> Result<Vec<PathBuf>> {
        let n = partitions(
            rows * params.bands as u64 * std::mem::size_of::<Band>() as u64,
            self.budget,
        );
        let mut spill = Spill::<Band>::create(self.dir, &format!("{tag}.bands"), n, self.budget)?;
        let sigs_path = self.dir.join(format!("{tag}.signatures"));
        let mut sigs =
            BufWriter::with_capacity(1 << 20, File::create(&sigs_path).map_err(io(&sigs_path))?);
        let mut exact = Merged::<Dup>::open(dups, self.budget)?;
        let mut rank = 0u64;
        feed(&mut |c| {
            let Some((values, bands)) = c.sig else {
                exact.take(c.idx)?;
                return Ok(());
            };
            if exact.take(c.idx)?.is_some() {
                return Ok(());
            }
            if values.len() != params.permutations || bands.len() != params.bands {
                return Err(Error::Internal(format!(
                    "merge: a signature of {} values and {} bands where the settings say {} and {}",
                    values.len(),
                    bands.len(),
                    params.permutations,
                    params.bands
                )));
            }
            for v in values {
                sigs.write_all(&v.to_le_bytes()).map_err(io(&sigs_path))?;
            }
            for (band, &hash) in bands.iter().enumerate() {
                let bucket = hash ^ (band as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                spill.push(
                    part_of(bucket.wrapping_mul(0xD6E8_FEB8_6659_FD93), n),
                    &Band {
                        hash,
                        band: band as u32,
                        idx: c.idx,
                        rank,
                        at: c.at,
                    },
                )?;
            }
            rank += 1;
            Ok(())
        })?;
        sigs.into_inner()
            .map_err(|e| Error::io(&sigs_path, e.into_error()))?;
        let sigs = File::open(&sigs_path).map_err(io(&sigs_path))?;
        let width = params.permutations * 4;
        let values_of = |rank: u64| -> Result<Vec<u32>> {
            let mut b = vec![0u8; width];
            sigs.read_exact_at(&mut b, rank * width as u64)
                .map_err(io(&sigs_path))?;
            Ok(b.chunks_exact(4).map(|c| u32_at(c, 0)).collect())
        };
        let parts = spill.finish()?;
        let sorted = |path: &Path| -> Result<Vec<Band>> {
            let mut bands = read_all::<Band>(path)?;
            bands.par_sort_unstable_by_key(|b| (b.band, b.hash, b.idx));
            Ok(bands)
        };
        let buckets = |bands: &[Band]| -> Vec<std::ops::Range<usize>> {
            let mut out = Vec::new();
            let mut start = 0;
            for (k, pair) in bands.windows(2).enumerate() {
                if (pair[0].band, pair[0].hash) != (pair[1].band, pair[1].hash) {
                    if k + 1 - start >= 2 {
                        out.push(start..k + 1);
                    }
                    start = k + 1;
                }
            }
            if bands.len() - start >= 2 {
                out.push(start..bands.len());
            }
            out
        };
        // Besides a partition (at most the budget): a bucket's signatures and a run of edges,
        // a quarter of it each.
        let cache_limit = (self.budget / 4) as usize;
        let open = |members: &[Band]| -> Result<Bucket> {
            let cached = match members.len() * width <= cache_limit {
                true => Some(
                    members
                        .iter()
                        .map(|b| values_of(b.rank))
                        .collect::<Result<_>>()?,
                ),
                false => None,
            };
            Ok(Bucket { cached })
        };
        let sim = |bucket: &Bucket, members: &[Band], x: usize, y: usize| -> Result<f64> {
            Ok(match &bucket.cached {
                Some(v) => similarity(&v[x], &v[y]),
                None => similarity(&values_of(members[x].rank)?, &values_of(members[y].rank)?),
            })
        };
        // Pass 1: which records have an earlier record at or above the threshold in a bucket.
        // One without is kept whatever else happens (the index keeps a record nothing matches),
        // so a later record's candidates need not go past it: that keeps a cluster of k near
        // copies at k edges, not k^2 / 2.
        let mut matched = vec![0u64; (rows as usize).div_ceil(64)];
        let bit = |set: &[u64], idx: u64| set[(idx / 64) as usize] >> (idx % 64) & 1 == 1;
        for path in &parts {
            let bands = sorted(path)?;
            for range in buckets(&bands) {
                let members = &bands[range];
                let bucket = open(members)?;
                for later in 1..members.len() {
                    let j = members[later].idx;
                    if bit(&matched, j) {
                        continue;
                    }
                    for earlier in 0..later {
                        if sim(&bucket, members, later, earlier)? >= params.threshold {
                            matched[(j / 64) as usize] |= 1 << (j % 64);
                            break;
                        }
                    }
                }
            }
        }
        // Pass 2: each record's candidates in order, up to the first that is surely kept;
        // written in sorted runs of at most the budget.
        let mut out = Vec::new();
        let run_cap = (self.budget as usize / 4 / std::mem::size_of::<Edge>()).max(1024);
        let mut edges: Vec<Edge> = Vec::new();
        let flush = |edges: &mut Vec<Edge>, out: &mut Vec<PathBuf>| -> Result<()> {
            edges.par_sort_unstable_by_key(|e| (e.j, e.i));
            edges.dedup_by_key(|e| (e.j, e.i));
            let dest = self.dir.join(format!("{tag}.edges.{}", out.len()));
            write_all(&dest, edges)?;
            out.push(dest);
            edges.clear();
            Ok(())
        };
        for path in &parts {
            let bands = sorted(path)?;
            fs_err::remove_file(path)?;
            for range in buckets(&bands) {
                let members = &bands[range];
                let bucket = open(members)?;
                for later in 1..members.len() {
                    let b = &members[later];
                    if !bit(&matched, b.idx) {
                        continue;
                    }
                    for earlier in 0..later {
                        let s = sim(&bucket, members, later, earlier)?;
                        if s < params.threshold {
                            continue;
                        }
                        let a = &members[earlier];
                        edges.push(Edge {
                            j: b.idx,
                            i: a.idx,
                            similarity: s,
                            at: a.at,
                        });
                        if !bit(&matched, a.idx) {
                            break;
                        }
                    }
                    if edges.len() >= run_cap {
                        flush(&mut edges, &mut out)?;
                    }
                }
            }
        }
        flush(&mut edges, &mut out)?;
        drop(sigs);
        fs_err::remove_file(&sigs_path)?;
        Ok(out)
    }
}

impl Resolution {
    /// The cursor that hands out the decisions in input order.
    pub(crate) fn decider(&self) -> Result<Decider> {
        Ok(Decider {
            exact: Merged::open(&self.dups, self.budget)?,
            near: match &self.edges {
                Some(paths) => Some((
                    Merged::open(paths, self.budget)?,
                    vec![0u64; (self.rows as usize).div_ceil(64)],
                )),
                None => None,
            },
        })
    }
}

/// The decisions of a [`Resolution`], asked for record by record in input order.
pub(crate) struct Decider {
    exact: Merged<Dup>,
    /// The edges, and one bit per record: kept by near-dedup.
    near: Option<(Merged<Edge>, Vec<u64>)>,
}

impl Decider {
    /// The verdict on the candidate at `idx` (every candidate the resolution was fed, in order).
    pub(crate) fn decide(&mut self, idx: u64, has_sig: bool) -> Result<Verdict3> {
        if let Some(dup) = self.exact.take(idx)? {
            return Ok(Verdict3::Duplicate(dup.at));
        }
        let Some((edges, kept)) = self.near.as_mut() else {
            return Ok(Verdict3::Unique);
        };
        let mut best: Option<Edge> = None;
        while let Some(e) = edges.take(idx)? {
            let is_kept = kept
                .get((e.i / 64) as usize)
                .is_some_and(|w| w >> (e.i % 64) & 1 == 1);
            if is_kept && best.is_none_or(|b| e.i < b.i) {
                best = Some(e);
            }
        }
        if let Some(e) = best {
            return Ok(Verdict3::Near(e.at, e.similarity));
        }
        if has_sig {
            let word = kept
                .get_mut((idx / 64) as usize)
                .ok_or_else(|| Error::Internal(format!("merge: record {idx} past the end")))?;
            *word |= 1 << (idx % 64);
        }
        Ok(Verdict3::Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::Dedup;
    use crate::neardup::{Index, MinHasher, Verdict};

    /// Records of shared and own words: clusters of near copies, chains (each close to the
    /// next, not to the one two back), exact copies, and records without words.
    fn records() -> Vec<Vec<u64>> {
        let mut out: Vec<Vec<u64>> = Vec::new();
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for c in 0..60u64 {
            let base: Vec<u64> = (0..60).map(|k| c * 1000 + k).collect();
            for _ in 0..(1 + next() % 6) {
                let mut words = base.clone();
                let cut = (next() % 4) as usize;
                words.truncate(60 - cut);
                words.push(900_000 + next() % 3);
                out.push(words);
            }
            if c % 5 == 0 {
                // a chain: each step shifts the window by 8 words
                for step in 0..6u64 {
                    out.push((0..60).map(|k| 500_000 + c * 100 + step * 8 + k).collect());
                }
            }
            // a record whose first candidate was dropped and whose second was kept
            for shift in [0u64, 6, 14, 10] {
                out.push((0..60).map(|k| 700_000 + c * 200 + shift + k).collect());
            }
            if c % 7 == 0 {
                out.push(base.clone());
                out.push(Vec::new());
            }
        }
        out
    }

    #[test]
    fn the_disk_resolution_decides_as_the_index_does() {
        let params = Params::new(5, 64, None, 0.7);
        let hasher = MinHasher::new(params);
        let recs = records();
        let sigs: Vec<_> = recs.iter().map(|w| hasher.signature(w)).collect();
        let fps: Vec<u128> = recs
            .iter()
            .map(|w| {
                crate::dedup::fingerprint(
                    &w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
                )
            })
            .collect();
        // in memory, as prepare decides
        let mut dedup = Dedup::default();
        let mut index = Index::new(&params);
        let mut kept_at = Vec::new();
        let mut want = Vec::new();
        for (i, sig) in sigs.iter().enumerate() {
            let at = (0u32, i as u64 + 1);
            if let Some(first) = dedup.kept(fps[i], at) {
                want.push(format!("dup {first:?}"));
                continue;
            }
            match sig.clone().map(|s| index.offer(s)) {
                Some(Verdict::Duplicate { of, similarity }) => {
                    want.push(format!("near {:?} {similarity}", kept_at[of]))
                }
                Some(Verdict::Kept(_)) => {
                    kept_at.push(at);
                    want.push("unique".into())
                }
                None => want.push("unique".into()),
            }
        }
        assert!(want.iter().filter(|v| v.starts_with("near")).count() > 50);
        assert!(want.iter().any(|v| v.starts_with("dup")));
        // on disk, with partitions of a few KiB
        for budget in [2048, 1 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let resolver = Resolver {
                dir: dir.path(),
                budget,
                dedup: true,
                near: Some(params),
            };
            let n = sigs.len() as u64;
            let feed = |f: &mut dyn FnMut(Candidate) -> Result<()>| -> Result<()> {
                for (i, sig) in sigs.iter().enumerate() {
                    f(Candidate {
                        idx: i as u64,
                        fp: fps[i],
                        unit: 0.0,
                        at: (0, i as u64 + 1),
                        sig: sig.as_ref().map(|s| (&s.values[..], &s.bands[..])),
                    })?;
                }
                Ok(())
            };
            let mut decider = resolver.resolve("t", n, feed).unwrap().decider().unwrap();
            let got: Vec<String> = sigs
                .iter()
                .enumerate()
                .map(
                    |(i, sig)| match decider.decide(i as u64, sig.is_some()).unwrap() {
                        Verdict3::Duplicate(at) => format!("dup {at:?}"),
                        Verdict3::Near(at, s) => format!("near {at:?} {s}"),
                        Verdict3::Unique => "unique".into(),
                    },
                )
                .collect();
            assert_eq!(got, want, "budget {budget}");
        }
    }
}
