//! The merging end of a pass ([`Sink`]): records arrive in input order, dedup decides on each,
//! the counters add up, and the accepted records and the rejects go to a [`Store`] (the
//! artifact's files, or memory for `inspect`). `prepare` and `merge` feed the same sink, which is
//! why a merged artifact is the one machine's.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::dedup::Dedup;
use crate::error::{Error, Result};
use crate::formats::Format;
use crate::manifest;
use crate::neardup::{Index, Params, Verdict};
use crate::options::LengthPolicy;
use crate::pipeline::{Engine, Link, Parsed, Processed, Progress, SplitArrays, Taker};
use crate::reject::{Reject, RejectCode};
use crate::split::{Split, Splitter};
use crate::stats::SplitStats;
use crate::store::NpyWriter;

/// Rejected records larger than this are stored as an excerpt.
const MAX_REJECT_RECORD: usize = 64 * 1024;

/// Where accepted records and rejects go: the artifact's files ([`ArtifactStore`]) or memory
/// ([`MemoryStore`], for `inspect`).
pub(crate) trait Store {
    /// One accepted record: its tokens, mask and [`manifest::RECORD_COLUMNS`] row.
    fn record(&mut self, split: Split, ids: &[u32], mask: &[u8], row: &[u64]) -> Result<()>;
    fn reject(&mut self, line: &RejectLine) -> Result<()>;
    /// When the run fails, keeps the rejects beside `out_dir`; where they were kept.
    fn keep_rejects(&mut self, out_dir: &Path) -> Option<PathBuf>;
}

/// What the merging end needs of the run, whichever pass feeds it (`prepare`'s workers, or
/// `merge` reading shards).
pub(crate) struct Rules {
    /// Each input's name, as rejects quote it.
    pub(crate) files: Vec<String>,
    pub(crate) length_error: bool,
    pub(crate) splitter: Splitter,
    pub(crate) template_label: String,
}

impl Rules {
    pub(crate) fn of(engine: &Engine) -> Self {
        Rules {
            files: engine
                .opts
                .inputs
                .iter()
                .map(|i| i.origin.display().to_string())
                .collect(),
            length_error: engine.opts.settings.length_policy == LengthPolicy::Error,
            splitter: engine.splitter,
            template_label: engine.template_label.clone(),
        }
    }
}

/// Where a record was read: its input and line.
pub(crate) type Origin = (u32, u64);

/// What dedup makes of an accepted record.
pub(crate) enum Verdict3 {
    Unique,
    /// An exact copy of the record kept there.
    Duplicate(Origin),
    /// A near duplicate of the record kept there, with the estimated similarity.
    Near(Origin, f64),
}

/// Decides on each accepted record in input order: in memory (`prepare`), or from what the
/// merge resolved on disk beforehand ([`crate::resolve::Decider`]). Both give the same answers.
pub(crate) enum Judge {
    Memory {
        dedup: Option<Dedup>,
        /// With near-dedup: the index, and where each record it kept was read.
        near: Option<(Index, Vec<Origin>)>,
    },
    Resolved(crate::resolve::Decider),
}

impl Judge {
    pub(crate) fn memory(settings: &crate::options::Settings) -> Self {
        Judge::Memory {
            dedup: settings.dedup.then(Dedup::default),
            near: settings
                .near_dedup
                .then(|| (Index::new(&Params::of(settings)), Vec::new())),
        }
    }

    /// `idx` counts every record of the pass (accepted or not), in input order.
    fn judge(&mut self, idx: u64, parsed: &mut Parsed, at: Origin) -> Result<Verdict3> {
        match self {
            Judge::Memory { dedup, near } => {
                if let Some(first) = dedup.as_mut().and_then(|d| d.kept(parsed.fp, at)) {
                    return Ok(Verdict3::Duplicate(first));
                }
                let (Some((index, kept)), Some(sig)) = (near.as_mut(), parsed.near.take()) else {
                    return Ok(Verdict3::Unique);
                };
                Ok(match index.offer(sig) {
                    Verdict::Kept(_) => {
                        kept.push(at);
                        Verdict3::Unique
                    }
                    Verdict::Duplicate { of, similarity } => Verdict3::Near(kept[of], similarity),
                })
            }
            Judge::Resolved(decider) => decider.decide(idx, parsed.near.is_some()),
        }
    }
}

/// The merging end: the counters, dedup, and the store records and rejects go to.
pub(crate) struct Sink<S> {
    pub(crate) store: S,
    rules: Rules,
    judge: Judge,
    stats: BTreeMap<Split, SplitStats>,
    pub(crate) reject_counts: BTreeMap<&'static str, u64>,
    pub(crate) duplicates: u64,
    /// Records taken so far.
    taken: u64,
}

impl<S: Store> Taker for Sink<S> {
    fn take(&mut self, p: Processed) -> Result<()> {
        let idx = self.taken;
        self.taken += 1;
        let file = &self.rules.files[p.source as usize];
        let (reject, link) = match (p.outcome, p.parsed) {
            (Err(reject), _) => {
                if reject.code == RejectCode::TooLong && self.rules.length_error {
                    return Err(Error::Data(format!(
                        "{file}:{}: {} (--length-policy error)",
                        p.line, reject.message
                    )));
                }
                *self.reject_counts.entry(reject.code.as_str()).or_default() += 1;
                (reject, p.link)
            }
            (Ok(_), None) => {
                return Err(Error::Internal(format!(
                    "{file}:{}: an accepted record without its fingerprint",
                    p.line
                )))
            }
            (Ok(a), Some(mut parsed)) => {
                match self.judge.judge(idx, &mut parsed, (p.source, p.line))? {
                    // Counted in `duplicates`, not among the rejects: a copy is no bad record.
                    Verdict3::Duplicate((source, line)) => {
                        self.duplicates += 1;
                        let kept = self.rules.files[source as usize].clone();
                        let reject = Reject::new(
                            RejectCode::Duplicate,
                            format!("an exact copy of the record at {kept}:{line}, which was kept"),
                        );
                        let link = Link {
                            kept_file: Some(kept),
                            kept_line: Some(line),
                            ..Link::default()
                        };
                        (reject, link)
                    }
                    Verdict3::Near((source, line), similarity) => {
                        let kept_file = self.rules.files[source as usize].clone();
                        let reject = Reject::new(
                            RejectCode::NearDuplicate,
                            format!(
                                "a near duplicate (estimated Jaccard similarity {similarity:.3}) \
                                 of {kept_file}:{line}, which was kept"
                            ),
                        );
                        *self.reject_counts.entry(reject.code.as_str()).or_default() += 1;
                        let link = Link {
                            kept_file: Some(kept_file),
                            kept_line: Some(line),
                            similarity: Some(similarity),
                            ..Link::default()
                        };
                        (reject, link)
                    }
                    Verdict3::Unique => {
                        let split = self.rules.splitter.assign(parsed.unit);
                        let trained = a.encoded.mask.iter().filter(|&&m| m != 0).count();
                        let row = [
                            u64::from(p.source),
                            p.line,
                            Format::ALL.iter().position(|&f| f == a.format).unwrap_or(0) as u64,
                            a.turns,
                        ];
                        self.store
                            .record(split, &a.encoded.ids, &a.encoded.mask, &row)?;
                        if let Some(s) = self.stats.get_mut(&split) {
                            s.add(a.encoded.ids.len(), trained, a.truncated);
                        }
                        return Ok(());
                    }
                }
            }
        };
        let (record, record_bytes) = record_excerpt(&p.bytes, p.len);
        self.store.reject(&RejectLine {
            file: file.clone(),
            line: p.line,
            offset: p.offset,
            code: reject.code.as_str(),
            message: &reject.message,
            link,
            record_truncated: record_bytes.map(|_| true),
            record_bytes,
            record,
        })
    }

    fn count(&self, prog: &mut Progress) {
        prog.accepted = self.accepted();
        prog.rejected = self.rejected_total();
        prog.duplicates = self.duplicates;
        prog.tokens = self.tokens();
    }

    fn salvage_rejects(&mut self, out_dir: &Path) -> Option<PathBuf> {
        if self.rejected_total() == 0 {
            return None;
        }
        self.store.keep_rejects(out_dir)
    }
}

impl<S: Store> Sink<S> {
    /// The merging end of one machine's pass: dedup decided in memory as records arrive.
    pub(crate) fn in_memory(store: S, engine: &Engine) -> Self {
        Sink::new(
            store,
            Rules::of(engine),
            Judge::memory(&engine.opts.settings),
        )
    }

    pub(crate) fn new(store: S, rules: Rules, judge: Judge) -> Self {
        Sink {
            store,
            rules,
            judge,
            stats: Split::ALL
                .into_iter()
                .map(|s| (s, SplitStats::default()))
                .collect(),
            reject_counts: BTreeMap::new(),
            duplicates: 0,
            taken: 0,
        }
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.stats.values().map(|s| s.records).sum()
    }

    pub(crate) fn tokens(&self) -> u64 {
        self.stats.values().map(|s| s.tokens).sum()
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        self.reject_counts.values().sum()
    }

    /// The rejects of near-dedup and decontamination.
    pub(crate) fn filtered(&self) -> u64 {
        [RejectCode::NearDuplicate, RejectCode::Contaminated]
            .iter()
            .filter_map(|c| self.reject_counts.get(c.as_str()))
            .sum()
    }

    pub(crate) fn reject_summary(&self) -> String {
        if self.reject_counts.is_empty() {
            return "no rejects".into();
        }
        self.reject_counts
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Sink<ArtifactStore> {
    pub(crate) fn finish(self, records_read: u64) -> Result<manifest::Results> {
        let Sink {
            store,
            rules,
            stats,
            reject_counts,
            duplicates,
            ..
        } = self;
        let mut files = store.finish()?;
        let mut splits = BTreeMap::new();
        for (split, s) in stats {
            let (files, checks) = files
                .remove(&split)
                .ok_or_else(|| Error::Internal(format!("no files for split {}", split.as_str())))?;
            splits.insert(
                split,
                manifest::SplitEntry {
                    records: s.records,
                    tokens: s.tokens,
                    trained_tokens: s.trained_tokens,
                    truncated: s.truncated,
                    lengths: s.lengths(),
                    files,
                    checks,
                },
            );
        }
        Ok(manifest::Results {
            records_read,
            duplicates,
            rejected: reject_counts.values().sum::<u64>(),
            rejects: reject_counts
                .into_iter()
                .map(|(code, n)| (code.to_string(), n))
                .collect(),
            rejects_file: "rejects.jsonl".into(),
            template: rules.template_label,
            splits,
        })
    }
}

/// The artifact's files: one set of arrays per split and the rejects file.
pub(crate) struct ArtifactStore {
    dir: PathBuf,
    writers: BTreeMap<Split, manifest::PerArray<NpyWriter>>,
    rejects: BufWriter<fs_err::File>,
    rejects_path: PathBuf,
}

impl ArtifactStore {
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        let mut writers = BTreeMap::new();
        for split in Split::ALL {
            let file = |array: &str| dir.join(format!("{}.{array}.npy", split.as_str()));
            let mut offsets = NpyWriter::create::<u64>(file("offsets"))?;
            offsets.push(&[0u64])?;
            writers.insert(
                split,
                manifest::PerArray {
                    tokens: NpyWriter::create::<u32>(file("tokens"))?,
                    mask: NpyWriter::create::<u8>(file("mask"))?,
                    offsets,
                    records: NpyWriter::create_rows::<u64>(
                        file("records"),
                        manifest::RECORD_COLUMNS.len() as u64,
                    )?,
                },
            );
        }
        let rejects_path = dir.join("rejects.jsonl");
        let rejects = BufWriter::new(fs_err::File::create(&rejects_path)?);
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
            writers,
            rejects,
            rejects_path,
        })
    }

    /// Each split's file names and what each file was when written (a later read refuses one
    /// that changed since).
    #[allow(clippy::type_complexity)]
    fn finish(
        self,
    ) -> Result<
        BTreeMap<
            Split,
            (
                manifest::PerArray<String>,
                manifest::PerArray<manifest::FileCheck>,
            ),
        >,
    > {
        let ArtifactStore {
            dir,
            writers,
            rejects,
            rejects_path,
        } = self;
        let file = rejects
            .into_inner()
            .map_err(|e| Error::io(&rejects_path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&rejects_path, e))?;
        let mut out = BTreeMap::new();
        for (split, w) in writers {
            let name = split.as_str();
            for writer in [w.tokens, w.mask, w.offsets, w.records] {
                writer.finish()?;
            }
            let files = manifest::PerArray {
                tokens: format!("{name}.tokens.npy"),
                mask: format!("{name}.mask.npy"),
                offsets: format!("{name}.offsets.npy"),
                records: format!("{name}.records.npy"),
            };
            let check = |file: &String| -> Result<manifest::FileCheck> {
                let (bytes, xxh3) = crate::store::digest(&dir.join(file))?;
                Ok(manifest::FileCheck { bytes, xxh3 })
            };
            let checks = manifest::PerArray {
                tokens: check(&files.tokens)?,
                mask: check(&files.mask)?,
                offsets: check(&files.offsets)?,
                records: check(&files.records)?,
            };
            out.insert(split, (files, checks));
        }
        Ok(out)
    }
}

impl Store for ArtifactStore {
    fn record(&mut self, split: Split, ids: &[u32], mask: &[u8], row: &[u64]) -> Result<()> {
        let w = self
            .writers
            .get_mut(&split)
            .ok_or_else(|| Error::Internal(format!("no writer for split {}", split.as_str())))?;
        w.tokens.push(ids)?;
        w.mask.push(mask)?;
        w.offsets.push(&[w.tokens.len()])?;
        w.records.push(row)
    }

    fn reject(&mut self, line: &RejectLine) -> Result<()> {
        serde_json::to_writer(&mut self.rejects, line)
            .map_err(|e| Error::io(&self.rejects_path, e.into()))?;
        self.rejects
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.rejects_path, e))
    }

    /// Keeps the rejects next to where the artifact would have been, so the reasons are not
    /// lost with the staging folder.
    fn keep_rejects(&mut self, out_dir: &Path) -> Option<PathBuf> {
        self.rejects.flush().ok()?;
        let dest = PathBuf::from(format!("{}.rejects.jsonl", out_dir.display()));
        // Copied beside it and renamed over: a link at `dest` is replaced, never written through.
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::NamedTempFile::new_in(parent).ok()?;
        fs_err::copy(&self.rejects_path, tmp.path()).ok()?;
        tmp.persist(&dest).ok()?;
        Some(dest)
    }
}

/// The arrays and rejects file of an artifact, in memory.
pub(crate) struct MemoryStore {
    pub(crate) splits: BTreeMap<Split, SplitArrays>,
    pub(crate) rejects: Vec<Value>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        let empty = SplitArrays {
            offsets: vec![0],
            ..SplitArrays::default()
        };
        MemoryStore {
            splits: Split::ALL.into_iter().map(|s| (s, empty.clone())).collect(),
            rejects: Vec::new(),
        }
    }
}

impl Store for MemoryStore {
    fn record(&mut self, split: Split, ids: &[u32], mask: &[u8], row: &[u64]) -> Result<()> {
        let a = self
            .splits
            .get_mut(&split)
            .ok_or_else(|| Error::Internal(format!("no arrays for split {}", split.as_str())))?;
        a.tokens.extend_from_slice(ids);
        a.mask.extend_from_slice(mask);
        a.offsets.push(a.tokens.len() as u64);
        a.records.extend_from_slice(row);
        Ok(())
    }

    fn reject(&mut self, line: &RejectLine) -> Result<()> {
        self.rejects.push(
            serde_json::to_value(line)
                .map_err(|e| Error::Internal(format!("cannot keep a reject: {e}")))?,
        );
        Ok(())
    }

    fn keep_rejects(&mut self, _: &Path) -> Option<PathBuf> {
        None
    }
}

/// One line of `rejects.jsonl`.
#[derive(Serialize)]
pub(crate) struct RejectLine<'a> {
    file: String,
    line: u64,
    offset: u64,
    code: &'static str,
    message: &'a str,
    #[serde(flatten)]
    link: Link,
    /// `true` when `record` is an excerpt of the `record_bytes` the record has.
    #[serde(skip_serializing_if = "Option::is_none")]
    record_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_bytes: Option<usize>,
    record: Value,
}

/// The record as JSON when it parses and is small; otherwise a bounded string excerpt and the
/// record's size. `bytes` is the record, or the first [`quote_len`] bytes of its `len`.
fn record_excerpt(bytes: &[u8], len: usize) -> (Value, Option<usize>) {
    if len <= MAX_REJECT_RECORD {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return (v, None);
        }
        return (
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
            None,
        );
    }
    let mut cut = EXCERPT_CUT.min(bytes.len());
    while cut > 0 && bytes.get(cut).is_some_and(|b| (b & 0xC0) == 0x80) {
        cut -= 1;
    }
    (
        Value::String(String::from_utf8_lossy(&bytes[..cut]).into_owned()),
        Some(len),
    )
}

/// Where a long record's excerpt is cut (moved back to a character boundary).
const EXCERPT_CUT: usize = 4096;

/// How many of a record's `len` bytes its excerpt reads: all of a small record, the cut and
/// the byte after it of a large one.
pub(crate) fn quote_len(len: usize) -> usize {
    match len <= MAX_REJECT_RECORD {
        true => len,
        false => EXCERPT_CUT + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reject_line_names_an_excerpt_before_the_record() {
        let line = |bytes: &[u8]| {
            let (record, record_bytes) = record_excerpt(bytes, bytes.len());
            serde_json::to_string(&RejectLine {
                file: "f".into(),
                line: 2,
                offset: 3,
                code: "bad_json",
                message: "m",
                link: Link::default(),
                record_truncated: record_bytes.map(|_| true),
                record_bytes,
                record,
            })
            .unwrap()
        };
        assert_eq!(
            line(br#"{"a": 1}"#),
            r#"{"file":"f","line":2,"offset":3,"code":"bad_json","message":"m","record":{"a":1}}"#
        );
        let big = vec![b'x'; MAX_REJECT_RECORD + 1];
        let text = line(&big);
        let head = r#"{"file":"f","line":2,"offset":3,"code":"bad_json","message":"m","record_truncated":true,"record_bytes":65537,"record":"xxx"#;
        assert!(text.starts_with(head), "{text:.200}");
        assert_eq!(text.len(), head.len() - 3 + 4096 + 2);
    }
}
