//! `prepare --shard I/N`: one machine's share of the inputs, processed as `prepare` does up to
//! dedup, and written as a shard for [`crate::merge`]. A share is a byte range of all inputs
//! laid end to end, so one huge JSON-lines file splits too; a record belongs to the shard its
//! first byte is in (a file that cannot be read in ranges, to the shard its first byte is in).
//!
//! A shard folder: `manifest.json` ([`ShardManifest`]), and in input order one fixed-size
//! [`Row`] per record read (`rows.bin`), the tokens and mask of the accepted ones (`tokens.bin`,
//! `mask.bin`), the near-dedup signatures (`signatures.bin`), what a reject would quote of each
//! record (`quotes.bin`) and the reasons of the rejected ones (`rejects.jsonl`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::encode::Encoded;
use crate::error::{Error, Result};
use crate::formats::Format;
use crate::manifest::{self, FileCheck, ProvenanceBody};
use crate::neardup::{Params, Signature};
use crate::options::{num_threads, PrepareOptions};
use crate::pipeline::{
    run_pass, worker_pool, Accepted, Engine, Link, Parsed, Part, Processed, Progress, Taker,
};
use crate::reader::{splittable, Region};
use crate::reject::{Reject, RejectCode};
use crate::sink::quote_len;
use crate::store::StagingDir;

/// The `format` of a shard's manifest.
pub const SHARD: &str = "ftx-shard";
/// Bumped whenever the shard layout changes: a merge refuses shards of another layout.
pub const SHARD_VERSION: u32 = 1;
/// The files of a shard besides its manifest.
pub const SHARD_FILES: [&str; 6] = [
    "rows.bin",
    "tokens.bin",
    "mask.bin",
    "signatures.bin",
    "quotes.bin",
    "rejects.jsonl",
];

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: u32,
    pub count: u32,
}

impl ShardSpec {
    /// Parses `I/N`, `0 <= I < N`.
    pub fn parse(s: &str) -> std::result::Result<ShardSpec, String> {
        let bad = || format!("--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }
}

/// What one shard read of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRead {
    pub source: u32,
    /// The bytes and lines read, for an input read in ranges; `None` when read whole.
    pub region: Option<Region>,
}

/// A shard's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    pub format: String,
    pub shard_version: u32,
    pub shard: u32,
    pub shards: u32,
    /// The artifact's provenance, but for the sha256 of the inputs this shard did not hash
    /// (empty): each input is hashed by the shard its first byte is in.
    pub provenance: ProvenanceBody,
    /// The inputs this shard hashed.
    pub hashed: Vec<u32>,
    pub template: String,
    pub parts: Vec<PartRead>,
    pub rows: u64,
    pub accepted: u64,
    pub tokens: u64,
    pub signatures: u64,
    pub rejects: u64,
    pub quote_bytes: u64,
    pub files: BTreeMap<String, FileCheck>,
}

/// The inputs laid end to end, and which shard reads what of them.
struct Plan {
    parts: Vec<Part>,
    hashed: Vec<u32>,
}

fn plan(engine: &Engine, spec: ShardSpec) -> Result<Plan> {
    let inputs = &engine.opts.inputs;
    let sizes: Vec<u64> = inputs
        .iter()
        .map(|i| Ok(fs_err::metadata(&i.path)?.len()))
        .collect::<Result<_>>()?;
    let total: u64 = sizes.iter().sum();
    let n = u128::from(spec.count);
    let lo = |i: u32| -> u64 { (u128::from(total) * u128::from(i) / n) as u64 };
    // The shard a global byte position is in: the last whose range starts at or before it.
    let owner = |at: u64| -> u32 {
        (0..spec.count)
            .collect::<Vec<_>>()
            .partition_point(|&i| lo(i) <= at)
            .saturating_sub(1) as u32
    };
    let (mine_lo, mine_hi) = (lo(spec.index), lo(spec.index + 1));
    let mut plan = Plan {
        parts: Vec::new(),
        hashed: Vec::new(),
    };
    let mut start = 0u64;
    for (source, (input, &size)) in inputs.iter().zip(&sizes).enumerate() {
        let source = source as u32;
        let (a, b) = (start, start + size);
        start = b;
        let owned = owner(a) == spec.index;
        if owned {
            plan.hashed.push(source);
        }
        if splittable(input, engine.opts.settings.text_unit)? {
            let (from, to) = (a.max(mine_lo), b.min(mine_hi));
            if from < to {
                plan.parts.push(Part {
                    source,
                    range: Some((from - a, to - a)),
                });
            }
        } else if owned {
            plan.parts.push(Part {
                source,
                range: None,
            });
        }
    }
    Ok(plan)
}

/// A record of `rows.bin`: 72 bytes, little-endian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Row {
    pub(crate) source: u32,
    pub(crate) flags: u8,
    pub(crate) format: u8,
    /// The line within the region the shard read (the merge adds the lines before it).
    pub(crate) line: u64,
    pub(crate) offset: u64,
    pub(crate) fp: u128,
    pub(crate) unit: f64,
    pub(crate) turns: u64,
    pub(crate) tokens: u64,
    pub(crate) quote: u32,
    pub(crate) len: u32,
}

pub(crate) const ACCEPTED: u8 = 1;
pub(crate) const PARSED: u8 = 2;
pub(crate) const SIGNED: u8 = 4;
pub(crate) const TRUNCATED: u8 = 8;
const ROW: usize = 72;

impl Row {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.source.to_le_bytes());
        out.extend_from_slice(&[self.flags, self.format, 0, 0]);
        out.extend_from_slice(&self.line.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.fp.to_le_bytes());
        out.extend_from_slice(&self.unit.to_le_bytes());
        out.extend_from_slice(&self.turns.to_le_bytes());
        out.extend_from_slice(&self.tokens.to_le_bytes());
        out.extend_from_slice(&self.quote.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    fn get(b: &[u8; ROW]) -> Row {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
        Row {
            source: u32_at(0),
            flags: b[4],
            format: b[5],
            line: u64_at(8),
            offset: u64_at(16),
            fp: u128::from(u64_at(24)) | (u128::from(u64_at(32)) << 64),
            unit: f64::from_bits(u64_at(40)),
            turns: u64_at(48),
            tokens: u64_at(56),
            quote: u32_at(64),
            len: u32_at(68),
        }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A rejected record's reason, as the shard keeps it (its location is in its row).
#[derive(Serialize, Deserialize)]
struct StoredReject {
    code: RejectCode,
    message: String,
    #[serde(flatten)]
    link: Link,
}

struct Out {
    path: PathBuf,
    file: BufWriter<File>,
}

impl Out {
    fn create(dir: &Path, name: &str) -> Result<Out> {
        let path = dir.join(name);
        let file = BufWriter::with_capacity(
            1 << 20,
            File::create(&path).map_err(|e| Error::io(&path, e))?,
        );
        Ok(Out { path, file })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn finish(self) -> Result<()> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

/// Writes every record of the pass, accepted or not, in input order.
pub(crate) struct ShardWriter {
    outs: Vec<Out>,
    buf: Vec<u8>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    rows: u64,
    accepted: u64,
    tokens: u64,
    signatures: u64,
    rejects: u64,
    quote_bytes: u64,
}

impl ShardWriter {
    fn create(dir: &Path) -> Result<Self> {
        Ok(ShardWriter {
            outs: SHARD_FILES
                .iter()
                .map(|name| Out::create(dir, name))
                .collect::<Result<_>>()?,
            buf: Vec::new(),
            counts: Counts::default(),
        })
    }

    fn finish(self) -> Result<Counts> {
        for out in self.outs {
            out.finish()?;
        }
        Ok(self.counts)
    }
}

impl Taker for ShardWriter {
    fn take(&mut self, p: Processed) -> Result<()> {
        let [rows, tokens, mask, signatures, quotes, rejects] = &mut self.outs[..] else {
            return Err(Error::Internal("a shard writer without its files".into()));
        };
        let mut row = Row {
            source: p.source,
            flags: 0,
            format: 0,
            line: p.line,
            offset: p.offset,
            fp: 0,
            unit: 0.0,
            turns: 0,
            tokens: 0,
            quote: 0,
            len: p.len as u32,
        };
        if let Some(parsed) = &p.parsed {
            row.flags |= PARSED;
            row.fp = parsed.fp;
            row.unit = parsed.unit;
            if let Some(sig) = &parsed.near {
                row.flags |= SIGNED;
                self.buf.clear();
                sig.values
                    .iter()
                    .for_each(|v| self.buf.extend_from_slice(&v.to_le_bytes()));
                sig.bands
                    .iter()
                    .for_each(|v| self.buf.extend_from_slice(&v.to_le_bytes()));
                signatures.put(&self.buf)?;
                self.counts.signatures += 1;
            }
        }
        match &p.outcome {
            Ok(a) => {
                row.flags |= ACCEPTED | if a.truncated { TRUNCATED } else { 0 };
                row.format = Format::ALL.iter().position(|&f| f == a.format).unwrap_or(0) as u8;
                row.turns = a.turns;
                row.tokens = a.encoded.ids.len() as u64;
                self.buf.clear();
                a.encoded
                    .ids
                    .iter()
                    .for_each(|v| self.buf.extend_from_slice(&v.to_le_bytes()));
                tokens.put(&self.buf)?;
                mask.put(&a.encoded.mask)?;
                self.counts.accepted += 1;
                self.counts.tokens += row.tokens;
            }
            Err(reject) => {
                let stored = StoredReject {
                    code: reject.code,
                    message: reject.message.clone(),
                    link: p.link,
                };
                let mut line = serde_json::to_vec(&stored)
                    .map_err(|e| Error::Internal(format!("a shard's reject: {e}")))?;
                line.push(b'\n');
                rejects.put(&line)?;
                self.counts.rejects += 1;
            }
        }
        let quote = &p.bytes[..quote_len(p.len).min(p.bytes.len())];
        row.quote = quote.len() as u32;
        quotes.put(quote)?;
        self.counts.quote_bytes += quote.len() as u64;
        self.buf.clear();
        row.put(&mut self.buf);
        rows.put(&self.buf)?;
        self.counts.rows += 1;
        Ok(())
    }

    fn count(&self, prog: &mut Progress) {
        prog.accepted = self.counts.accepted;
        prog.rejected = self.counts.rejects;
        prog.tokens = self.counts.tokens;
    }

    fn salvage_rejects(&mut self, _: &Path) -> Option<PathBuf> {
        None
    }
}

/// Runs `prepare --shard`: this shard's records, processed, written to `opts.out_dir`.
pub fn prepare_shard(
    opts: PrepareOptions,
    spec: ShardSpec,
    progress: &(dyn Fn(&Progress) + Sync),
    cancel: &AtomicBool,
) -> Result<ShardManifest> {
    let (out_dir, force) = (opts.out_dir.clone(), opts.force);
    ShardEngine::load(opts)?.run(spec, &out_dir, force, progress, cancel)
}

/// The tokenizer, template and settings of a shard set, loaded once: a worker that runs many
/// shards (a Ray actor) loads them one time.
pub struct ShardEngine {
    engine: Engine,
    files: crate::encode::ModelFiles,
    tokenizer_path: PathBuf,
}

impl std::fmt::Debug for ShardEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardEngine")
            .field("tokenizer", &self.tokenizer_path)
            .field("inputs", &self.engine.opts.inputs.len())
            .finish()
    }
}

impl ShardEngine {
    pub fn load(opts: PrepareOptions) -> Result<Self> {
        let (engine, files, tokenizer_path) = Engine::load(opts)?;
        // The split needs every shard's records; the ratios are checked here all the same.
        crate::pipeline::ratio_splitter(&engine.opts.settings)?;
        Ok(ShardEngine {
            engine,
            files,
            tokenizer_path,
        })
    }

    /// Writes shard `spec` to `out_dir` (replacing only a shard or artifact of ftx's, or with
    /// `force`).
    pub fn run(
        &self,
        spec: ShardSpec,
        out_dir: &Path,
        force: bool,
        progress: &(dyn Fn(&Progress) + Sync),
        cancel: &AtomicBool,
    ) -> Result<ShardManifest> {
        let started = Instant::now();
        let engine = &self.engine;
        let threads = num_threads(engine.opts.threads);
        let pool = worker_pool(threads)?;
        let (files, tokenizer_path) = (&self.files, &self.tokenizer_path);
        let plan = plan(engine, spec)?;
        let provenance = manifest::provenance_hashing(
            &engine.opts,
            files,
            tokenizer_path,
            engine.template.as_ref(),
            &|source| plan.hashed.contains(&(source as u32)),
        )?;
        let _claim = crate::output::claim(out_dir, &engine.protected(), force)?;
        let staging = StagingDir::new(out_dir)?;
        let mut writer = ShardWriter::create(staging.path())?;
        let (_, regions) = run_pass(
            engine,
            &plan.parts,
            threads,
            cancel,
            &pool,
            &mut writer,
            started,
            progress,
            true,
        )?;
        let counts = writer.finish()?;
        let mut regions = regions.into_iter();
        let parts = plan
            .parts
            .iter()
            .map(|p| PartRead {
                source: p.source,
                region: p.range.and_then(|_| regions.next()),
            })
            .collect();
        let mut checks = BTreeMap::new();
        for name in SHARD_FILES {
            let (bytes, xxh3) = crate::store::digest(&staging.path().join(name))?;
            checks.insert(name.to_string(), FileCheck { bytes, xxh3 });
        }
        let manifest = ShardManifest {
            format: SHARD.into(),
            shard_version: SHARD_VERSION,
            shard: spec.index,
            shards: spec.count,
            provenance: provenance.body,
            hashed: plan.hashed,
            template: engine.template_label.clone(),
            parts,
            rows: counts.rows,
            accepted: counts.accepted,
            tokens: counts.tokens,
            signatures: counts.signatures,
            rejects: counts.rejects,
            quote_bytes: counts.quote_bytes,
            files: checks,
        };
        let mut text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("shard manifest: {e}")))?;
        text.push('\n');
        crate::store::write_synced(&staging.path().join(manifest::MANIFEST), text.as_bytes())?;
        staging.publish()?;
        Ok(manifest)
    }
}

/// Reads a shard's manifest, refusing a folder that is not a shard of this layout.
pub fn read_manifest(dir: &Path) -> Result<ShardManifest> {
    let path = dir.join(manifest::MANIFEST);
    if !path.is_file() {
        return Err(Error::Data(format!(
            "{}: not a shard (no {}); ftx merge reads the folders `ftx prepare --shard` writes",
            dir.display(),
            manifest::MANIFEST
        )));
    }
    let text = fs_err::read_to_string(&path)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Data(format!("{}: not valid JSON: {e}", path.display())))?;
    if value["format"] != SHARD {
        return Err(Error::Data(format!(
            "{}: not a shard (format {}); ftx merge reads the folders `ftx prepare --shard` writes",
            dir.display(),
            value["format"]
        )));
    }
    if value["shard_version"] != SHARD_VERSION {
        return Err(Error::Data(format!(
            "{}: shard layout {} where this ftx reads {SHARD_VERSION}: prepare the shards again \
             with this version",
            dir.display(),
            value["shard_version"]
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::Data(format!("{}: a damaged shard manifest: {e}", path.display())))
}

/// Checks every file of a shard is as its manifest recorded and its counts agree with the sizes.
pub fn verify(dir: &Path, m: &ShardManifest, params: Option<&Params>) -> Result<()> {
    for name in SHARD_FILES {
        let path = dir.join(name);
        let check = m.files.get(name).ok_or_else(|| {
            Error::Data(format!(
                "{}: the manifest does not list {name}",
                dir.display()
            ))
        })?;
        let (bytes, xxh3) = crate::store::digest(&path)?;
        if bytes != check.bytes || xxh3 != check.xxh3 {
            return Err(Error::Data(format!(
                "{}: changed since the shard was written ({bytes} bytes, {} recorded): prepare \
                 this shard again",
                path.display(),
                check.bytes
            )));
        }
    }
    let width = params.map_or(0, |p| p.permutations as u64 * 4 + p.bands as u64 * 8);
    let expect = [
        ("rows.bin", m.rows * ROW as u64),
        ("tokens.bin", m.tokens * 4),
        ("mask.bin", m.tokens),
        ("signatures.bin", m.signatures * width),
        ("quotes.bin", m.quote_bytes),
    ];
    for (name, bytes) in expect {
        if m.files[name].bytes != bytes {
            return Err(Error::Data(format!(
                "{}: {name} has {} bytes where the manifest's counts make {bytes}",
                dir.display(),
                m.files[name].bytes
            )));
        }
    }
    Ok(())
}

/// A shard's records read back in order. With `full`, everything the artifact needs; without,
/// only what dedup reads (rows and signatures).
pub(crate) struct ShardReader {
    dir: PathBuf,
    rows: BufReader<File>,
    signatures: BufReader<File>,
    rest: Option<[BufReader<File>; 4]>,
    inputs: u32,
    width: (usize, usize),
    left: u64,
}

/// One record read back: its row, signature and (when read in full) the rest.
pub(crate) struct Read1 {
    pub(crate) row: Row,
    pub(crate) sig: Option<Signature>,
    pub(crate) processed: Option<Processed>,
}

fn damaged(dir: &Path, name: &str, why: impl std::fmt::Display) -> Error {
    Error::Data(format!(
        "{}: {name} {why}: prepare this shard again",
        dir.display()
    ))
}

fn exact(dir: &Path, r: &mut BufReader<File>, name: &str, n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)
        .map_err(|e| damaged(dir, name, format!("ends early ({e})")))?;
    Ok(b)
}

fn open(dir: &Path, name: &str) -> Result<BufReader<File>> {
    let path = dir.join(name);
    Ok(BufReader::with_capacity(
        1 << 20,
        File::open(&path).map_err(|e| Error::io(&path, e))?,
    ))
}

impl ShardReader {
    pub(crate) fn open(
        dir: &Path,
        m: &ShardManifest,
        params: Option<&Params>,
        full: bool,
    ) -> Result<Self> {
        let rest = match full {
            true => Some([
                open(dir, "tokens.bin")?,
                open(dir, "mask.bin")?,
                open(dir, "quotes.bin")?,
                open(dir, "rejects.jsonl")?,
            ]),
            false => None,
        };
        Ok(ShardReader {
            dir: dir.to_path_buf(),
            rows: open(dir, "rows.bin")?,
            signatures: open(dir, "signatures.bin")?,
            rest,
            inputs: m.provenance.inputs.len() as u32,
            width: params.map_or((0, 0), |p| (p.permutations, p.bands)),
            left: m.rows,
        })
    }

    fn damaged(&self, name: &str, why: impl std::fmt::Display) -> Error {
        damaged(&self.dir, name, why)
    }

    pub(crate) fn next(&mut self) -> Result<Option<Read1>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let bytes: [u8; ROW] = exact(&self.dir, &mut self.rows, "rows.bin", ROW)?
            .try_into()
            .map_err(|_| self.damaged("rows.bin", "is short"))?;
        let row = Row::get(&bytes);
        if row.source >= self.inputs || row.format as usize >= Format::ALL.len() {
            return Err(self.damaged("rows.bin", "names an input or format that is not there"));
        }
        let sig = match row.has(SIGNED) {
            false => None,
            true => {
                let (perms, bands) = self.width;
                let b = exact(
                    &self.dir,
                    &mut self.signatures,
                    "signatures.bin",
                    perms * 4 + bands * 8,
                )?;
                let (v, h) = b.split_at(perms * 4);
                Some(Signature {
                    values: v
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    bands: h
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                })
            }
        };
        let processed = match self.rest.take() {
            None => None,
            Some(mut rest) => {
                let p = self.rest_of(&row, &sig, &mut rest);
                self.rest = Some(rest);
                Some(p?)
            }
        };
        Ok(Some(Read1 {
            row,
            sig,
            processed,
        }))
    }

    fn rest_of(
        &self,
        row: &Row,
        sig: &Option<Signature>,
        rest: &mut [BufReader<File>; 4],
    ) -> Result<Processed> {
        let [tokens, mask, quotes, rejects] = rest;
        let quote = exact(&self.dir, quotes, "quotes.bin", row.quote as usize)?;
        let parsed = row.has(PARSED).then(|| Parsed {
            fp: row.fp,
            unit: row.unit,
            near: sig.clone(),
        });
        let (outcome, link) = match row.has(ACCEPTED) {
            true => {
                let n = row.tokens as usize;
                let ids = exact(&self.dir, tokens, "tokens.bin", n * 4)?
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let mask = exact(&self.dir, mask, "mask.bin", n)?;
                let accepted = Accepted {
                    encoded: Encoded { ids, mask },
                    truncated: row.has(TRUNCATED),
                    format: Format::ALL[row.format as usize],
                    turns: row.turns,
                };
                (Ok(accepted), Link::default())
            }
            false => {
                let mut line = Vec::new();
                rejects
                    .read_until(b'\n', &mut line)
                    .map_err(|e| self.damaged("rejects.jsonl", e))?;
                let stored: StoredReject = serde_json::from_slice(&line)
                    .map_err(|e| self.damaged("rejects.jsonl", format!("has a bad line ({e})")))?;
                (Err(Reject::new(stored.code, stored.message)), stored.link)
            }
        };
        Ok(Processed {
            source: row.source,
            line: row.line,
            offset: row.offset,
            is_chat: false,
            bytes: quote,
            len: row.len as usize,
            parsed,
            outcome,
            link,
        })
    }
}
