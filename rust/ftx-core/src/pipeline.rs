//! `prepare` end to end: read → parse → normalize/validate → dedup → split → render → tokenize +
//! mask → store. Records move in bounded chunks, are processed in parallel and merged in input
//! order, so memory stays flat and the output is byte-identical for any number of threads.
//! `inspect` of raw files runs the same pass into memory ([`collect`]): nothing is written.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::conversation::{Record, Role};
use crate::decontam::EvalNgrams;
use crate::dedup::{fingerprint, Dedup};
use crate::encode::{Encoded, Encoder, ModelFiles};
use crate::error::{Error, Result};
use crate::formats::{normalize, Format, FormatOptions};
use crate::manifest;
use crate::neardup::{record_words, Index, MinHasher, Params, Signature, Verdict};
use crate::options::{num_threads, LengthPolicy, PrepareOptions};
use crate::reader::{read_input, read_range, RawKind, RawRecord, Region, MAX_RECORD_BYTES};
use crate::reject::{Reject, RejectCode};
use crate::split::{unit, Split, SplitSize, Splitter};
use crate::stats::SplitStats;
use crate::store::{NpyWriter, StagingDir};
use crate::template::ChatTemplate;

/// Records per chunk handed to a worker: large enough to amortize scheduling, small enough that
/// a few chunks in flight per thread keep memory flat.
const CHUNK_RECORDS: usize = 256;
/// Rejected records larger than this are stored as an excerpt.
const MAX_REJECT_RECORD: usize = 64 * 1024;
/// Once this many chat records were seen, a template failing on most of them stops the run.
const TEMPLATE_CHECK_AFTER: u64 = 256;

/// Live counters for a progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub records: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub tokens: u64,
    pub elapsed_s: f64,
}

/// What one worker made of one record. The raw bytes move along (never copied): a reject or a
/// duplicate quotes them.
pub(crate) struct Processed {
    pub(crate) source: u32,
    pub(crate) line: u64,
    pub(crate) offset: u64,
    pub(crate) is_chat: bool,
    /// The record's bytes, or (read back from a shard) as many of them as its excerpt needs.
    pub(crate) bytes: Vec<u8>,
    /// How many bytes the record has.
    pub(crate) len: usize,
    /// What dedup and the split read, for a record that parsed and is not contaminated.
    pub(crate) parsed: Option<Parsed>,
    pub(crate) outcome: std::result::Result<Accepted, Reject>,
    /// The other record a reject names, where it names one.
    pub(crate) link: Link,
}

/// What dedup and the split know of a record once it parsed, before it is rendered.
pub(crate) struct Parsed {
    pub(crate) fp: u128,
    /// The record's point in [0, 1) that decides its split.
    pub(crate) unit: f64,
    /// With near-dedup, its signature (none for a record without words).
    pub(crate) near: Option<Signature>,
}

/// The other record a reject names: the kept one of a duplicate or near duplicate, the
/// evaluation record a contaminated one shares n-grams with.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct Link {
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_line: Option<u64>,
    /// The estimated Jaccard similarity to the kept record.
    #[serde(skip_serializing_if = "Option::is_none")]
    similarity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_line: Option<u64>,
    /// How many distinct evaluation n-grams the record shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_ngrams: Option<usize>,
}

pub(crate) struct Accepted {
    pub(crate) encoded: Encoded,
    pub(crate) truncated: bool,
    pub(crate) format: Format,
    pub(crate) turns: u64,
}

/// Everything a worker needs, shared read-only across threads.
pub(crate) struct Engine {
    pub(crate) encoder: Encoder,
    pub(crate) template: Option<ChatTemplate>,
    pub(crate) template_label: String,
    pub(crate) format_opts: FormatOptions,
    pub(crate) seed: u64,
    pub(crate) splitter: Splitter,
    pub(crate) near: Option<MinHasher>,
    pub(crate) eval: Option<EvalNgrams>,
    pub(crate) opts: PrepareOptions,
}

impl Engine {
    /// The model's encoder and template and the format options; the splitter is set by
    /// [`splitter`] once the caller knows the run goes ahead.
    pub(crate) fn load(opts: PrepareOptions) -> Result<(Self, ModelFiles, PathBuf)> {
        let (encoder, files, tokenizer_path) = crate::model::load(&opts)?;
        let (template, template_label) = crate::model::template(&opts, &files)?;
        let format_opts = FormatOptions {
            forced: opts.settings.format,
            columns: match &opts.settings.columns {
                Some(spec) => crate::formats::Columns::parse(spec)
                    .map_err(|e| Error::Config(format!("--columns: {e}")))?,
                None => Default::default(),
            },
        };
        let near = opts
            .settings
            .near_dedup
            .then(|| MinHasher::new(Params::of(&opts.settings)));
        // Read before anything is claimed or written: a bad evaluation file stops the run here.
        let eval = match opts.settings.decontaminate.is_empty() {
            true => None,
            false => Some(crate::decontam::load(
                &opts.settings.decontaminate,
                opts.settings.decontaminate_ngram,
            )?),
        };
        let engine = Engine {
            encoder,
            template,
            template_label,
            format_opts,
            seed: opts.settings.seed,
            splitter: Splitter {
                valid: 0.0,
                test: 0.0,
            },
            near,
            eval,
            opts,
        };
        Ok((engine, files, tokenizer_path))
    }
}

pub(crate) fn worker_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ftx-worker-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start worker threads: {e}")))
}

/// Runs `prepare`. Returns the report (the manifest plus how it ran), so every front end prints
/// the same numbers.
pub fn prepare(
    opts: PrepareOptions,
    progress: &(dyn Fn(&Progress) + Sync),
    cancel: &AtomicBool,
) -> Result<manifest::Report> {
    let started = Instant::now();
    let threads = num_threads(opts.threads);
    let pool = worker_pool(threads)?;

    let (mut engine, files, tokenizer_path) = Engine::load(opts)?;
    let provenance = manifest::provenance(
        &engine.opts,
        &files,
        &tokenizer_path,
        engine.template.as_ref(),
    )?;
    let out_dir = engine.opts.out_dir.clone();
    if !engine.opts.force {
        if let Some(report) = cached_report(&out_dir, &provenance.hash, started, threads)? {
            return Ok(report);
        }
    }
    // Held until the artifact is published: a second prepare of this --out fails at once.
    let _claim = crate::output::claim(&out_dir, &engine.protected(), engine.opts.force)?;
    engine.splitter = pool.install(|| splitter(&engine, cancel))?;

    let staging = StagingDir::new(&out_dir)?;
    let mut sink = Sink::in_memory(ArtifactStore::create(staging.path())?, &engine);
    let (prog, _) = run_pass(
        &engine,
        &whole(&engine),
        threads,
        cancel,
        &pool,
        &mut sink,
        started,
        progress,
        true,
    )
    .inspect_err(|_| {
        sink.salvage_rejects(&out_dir);
    })?;
    let max_reject_ratio = engine.opts.settings.max_reject_ratio;
    let manifest = publish(
        sink,
        prog.records,
        &provenance,
        staging,
        max_reject_ratio,
        &out_dir,
    )?;
    Ok(ran(manifest, started, threads, prog.tokens, &out_dir))
}

impl Engine {
    /// What `--out` may not hold or replace: the inputs, and the evaluation files, inputs too.
    pub(crate) fn protected(&self) -> Vec<PathBuf> {
        self.opts
            .inputs
            .iter()
            .map(|i| i.origin.clone())
            .chain(self.opts.settings.decontaminate.iter().cloned())
            .collect()
    }
}

/// The report of a run that found its artifact already made.
pub(crate) fn cached_report(
    out_dir: &Path,
    hash: &str,
    started: Instant,
    threads: usize,
) -> Result<Option<manifest::Report>> {
    Ok(
        manifest::cached(out_dir, hash)?.map(|manifest| manifest::Report {
            manifest,
            run: manifest::Run {
                cached: true,
                seconds: started.elapsed().as_secs_f64(),
                threads,
                records_per_s: None,
                tokens_per_s: None,
                out_dir: out_dir.display().to_string(),
            },
        }),
    )
}

/// The report of a run that wrote its artifact.
pub(crate) fn ran(
    manifest: manifest::Manifest,
    started: Instant,
    threads: usize,
    tokens: u64,
    out_dir: &Path,
) -> manifest::Report {
    let secs = started.elapsed().as_secs_f64();
    let records = manifest.records_read;
    manifest::Report {
        manifest,
        run: manifest::Run {
            cached: false,
            seconds: secs,
            threads,
            records_per_s: Some(records as f64 / secs.max(1e-9)),
            tokens_per_s: Some(tokens as f64 / secs.max(1e-9)),
            out_dir: out_dir.display().to_string(),
        },
    }
}

/// The end of `prepare` and `merge` alike, once every record was taken: the limits checked, the
/// manifest written and the artifact published in one rename. Nothing is published when a
/// limit stops it; the rejects are kept beside `out_dir`.
pub(crate) fn publish(
    mut sink: Sink<ArtifactStore>,
    total: u64,
    provenance: &manifest::Provenance,
    staging: StagingDir,
    max_reject_ratio: Option<f64>,
    out_dir: &Path,
) -> Result<manifest::Manifest> {
    // Near duplicates and contaminated records were asked to be dropped: they are not bad data.
    let rejected = sink.rejected_total() - sink.filtered();
    if let Some(max) = max_reject_ratio {
        if total > 0 && rejected as f64 / total as f64 > max {
            let kept = sink.salvage_rejects(out_dir);
            return Err(Error::Data(format!(
                "{rejected} of {total} records rejected ({:.1}%), above --max-reject-ratio {max}; \
                 nothing was written. Reasons: {}. Rejected records: {}",
                100.0 * rejected as f64 / total as f64,
                sink.reject_summary(),
                kept.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(could not be kept)".into()),
            )));
        }
    }
    if sink.accepted() == 0 {
        let kept = sink.salvage_rejects(out_dir);
        return Err(Error::Data(format!(
            "no usable record in {total} read ({}); rejected records: {}",
            sink.reject_summary(),
            kept.map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none)".into()),
        )));
    }
    let results = sink.finish(total)?;
    let manifest = manifest::build(provenance, results);
    manifest::write(staging.path(), &manifest)?;
    staging.publish()?;
    Ok(manifest)
}

/// One split's arrays, as `prepare` would write them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SplitArrays {
    pub tokens: Vec<u32>,
    pub mask: Vec<u8>,
    /// Starts with 0; record `i` is `tokens[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u64>,
    /// [`manifest::RECORD_COLUMNS`] of each record, row after row.
    pub records: Vec<u64>,
}

/// What `prepare` would have written for the same inputs and options, held in memory: the
/// manifest's counts, each split's arrays and the lines of `rejects.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Collected {
    /// The inputs, in the order `records`' `source` column indexes them.
    pub inputs: Vec<String>,
    pub template: String,
    pub records_read: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub rejects: BTreeMap<String, u64>,
    pub record_info: manifest::RecordInfo,
    pub splits: BTreeMap<Split, SplitArrays>,
    pub reject_lines: Vec<Value>,
}

/// `inspect` of raw files: the pass `prepare` makes, with the same options, into memory.
/// Nothing is written, and no limit (`--max-reject-ratio`, a failing template) stops it: the
/// rejects are part of what a person inspects.
pub fn collect(
    opts: PrepareOptions,
    progress: &(dyn Fn(&Progress) + Sync),
    cancel: &AtomicBool,
) -> Result<Collected> {
    let started = Instant::now();
    let threads = num_threads(opts.threads);
    let pool = worker_pool(threads)?;
    let (mut engine, _, _) = Engine::load(opts)?;
    engine.splitter = pool.install(|| splitter(&engine, cancel))?;
    let mut sink = Sink::in_memory(MemoryStore::default(), &engine);
    let (prog, _) = run_pass(
        &engine,
        &whole(&engine),
        threads,
        cancel,
        &pool,
        &mut sink,
        started,
        progress,
        false,
    )?;
    let Sink {
        store,
        reject_counts,
        duplicates,
        ..
    } = sink;
    Ok(Collected {
        inputs: engine
            .opts
            .inputs
            .iter()
            .map(|i| i.origin.display().to_string())
            .collect(),
        template: engine.template_label.clone(),
        records_read: prog.records,
        duplicates,
        rejected: reject_counts.values().sum(),
        rejects: reject_counts
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect(),
        record_info: manifest::RecordInfo::default(),
        splits: store.splits,
        reject_lines: store.rejects,
    })
}

/// What one pass reads of one input: all of it, or the records that start in a byte range
/// (see [`crate::reader::read_range`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) source: u32,
    pub(crate) range: Option<(u64, u64)>,
}

/// Every input, whole: what one machine reads.
pub(crate) fn whole(engine: &Engine) -> Vec<Part> {
    (0..engine.opts.inputs.len() as u32)
        .map(|source| Part {
            source,
            range: None,
        })
        .collect()
}

/// The one pass over the inputs: every record of `parts` read, processed on the pool and handed
/// to `taker` in input order. With `limits`, a template failing on most conversations stops it.
/// Returns the counters and, for each ranged part, the region it read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_pass<T: Taker>(
    engine: &Engine,
    parts: &[Part],
    threads: usize,
    cancel: &AtomicBool,
    pool: &rayon::ThreadPool,
    taker: &mut T,
    started: Instant,
    progress: &(dyn Fn(&Progress) + Sync),
    limits: bool,
) -> Result<(Progress, Vec<Region>)> {
    let mut prog = Progress::default();
    let mut chat_seen = 0u64;
    let mut chat_failed = 0u64;
    let regions = for_each_batch(engine, parts, threads, cancel, pool, |batch| {
        for p in batch {
            prog.records += 1;
            if p.is_chat {
                chat_seen += 1;
                if let Err(r) = &p.outcome {
                    if matches!(r.code, RejectCode::TemplateError | RejectCode::MaskNotFound) {
                        chat_failed += 1;
                    }
                }
            }
            taker.take(p)?;
        }
        taker.count(&mut prog);
        prog.elapsed_s = started.elapsed().as_secs_f64();
        progress(&prog);
        if limits && chat_seen >= TEMPLATE_CHECK_AFTER && chat_failed * 2 > chat_seen {
            let kept = taker.salvage_rejects(&engine.opts.out_dir);
            return Err(Error::Template(format!(
                "chat template {} failed on {chat_failed} of the first {chat_seen} conversations \
                 (template error or assistant content not found in the render); examples in {}; \
                 a template that supports these conversations can be given with --chat-template",
                engine.template_label,
                kept.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(could not be kept)".into()),
            )));
        }
        Ok(())
    })?;
    Ok((prog, regions))
}

/// Reads `parts` on one thread and processes them on the pool in batches of chunks, calling
/// `merge` with each batch's results in input order. Returns the regions of the ranged parts.
fn for_each_batch(
    engine: &Engine,
    parts: &[Part],
    threads: usize,
    cancel: &AtomicBool,
    pool: &rayon::ThreadPool,
    mut merge: impl FnMut(Vec<Processed>) -> Result<()>,
) -> Result<Vec<Region>> {
    let batch_chunks = threads * 2;
    let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<RawRecord>>>(batch_chunks * 2);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut regions = Vec::new();
            let mut chunk = Vec::with_capacity(CHUNK_RECORDS);
            for part in parts {
                let input = &engine.opts.inputs[part.source as usize];
                let mut alive = true;
                let mut emit = |raw| {
                    chunk.push(raw);
                    if chunk.len() == CHUNK_RECORDS {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_RECORDS));
                        alive = tx.send(Ok(full)).is_ok();
                    }
                    alive
                };
                let r = match part.range {
                    None => read_input(
                        input,
                        part.source,
                        engine.opts.settings.text_unit,
                        &mut emit,
                    ),
                    Some(range) => read_range(input, part.source, range, &mut emit)
                        .map(|region| regions.push(region)),
                };
                if let Err(e) = r {
                    let _ = tx.send(Err(e));
                    return regions;
                }
                if !alive {
                    return regions;
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk));
            }
            regions
        });
        let result = (|| {
            let mut done = false;
            while !done {
                let mut chunks = Vec::with_capacity(batch_chunks);
                while chunks.len() < batch_chunks {
                    match rx.recv() {
                        Ok(c) => chunks.push(c?),
                        Err(_) => {
                            done = true;
                            break;
                        }
                    }
                }
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                let results: Vec<Vec<Processed>> = pool.install(|| {
                    chunks
                        .into_par_iter()
                        .map(|c| c.into_iter().map(|r| process(engine, r)).collect())
                        .collect()
                });
                merge(results.into_iter().flatten().collect())?;
            }
            Ok(())
        })();
        // Unblock the reader if we stopped early, then wait for it.
        drop(rx);
        let regions = reader
            .join()
            .map_err(|_| Error::Internal("the reader thread panicked".into()));
        result?;
        regions
    })
}

fn located(
    raw: RawRecord,
    is_chat: bool,
    parsed: Option<Parsed>,
    outcome: std::result::Result<Accepted, Reject>,
) -> Processed {
    Processed {
        source: raw.source,
        line: raw.line,
        offset: raw.offset,
        is_chat,
        len: raw.bytes.len(),
        bytes: raw.bytes,
        parsed,
        outcome,
        link: Link::default(),
    }
}

/// The words of a record, when near-dedup or decontamination reads them.
fn words(engine: &Engine, record: &Record) -> Vec<u64> {
    match engine.eval.is_some() || engine.near.is_some() {
        true => record_words(record),
        false => Vec::new(),
    }
}

/// The evaluation record a training record shares enough n-grams with, and how many it shares.
fn contamination(engine: &Engine, words: &[u64]) -> Option<((u32, u64), usize)> {
    let (shared, first) = engine.eval.as_ref()?.matches(words);
    first
        .filter(|_| shared >= engine.opts.settings.decontaminate_threshold)
        .map(|at| (at, shared))
}

fn contaminated(engine: &Engine, raw: RawRecord, at: (u32, u64), shared: usize) -> Processed {
    let settings = &engine.opts.settings;
    let file = settings.decontaminate[at.0 as usize].display().to_string();
    let reject = Reject::new(
        RejectCode::Contaminated,
        format!(
            "shares {shared} {}-word n-gram(s) with the evaluation record {file}:{}",
            settings.decontaminate_ngram, at.1
        ),
    );
    Processed {
        link: Link {
            eval_file: Some(file),
            eval_line: Some(at.1),
            shared_ngrams: Some(shared),
            ..Link::default()
        },
        ..located(raw, false, None, Err(reject))
    }
}

/// Raw bytes beyond which a record cannot fit `--max-length` under the drop and error
/// policies, so it is rejected before it is parsed, rendered or tokenized in full: a token is
/// at most the tokenizer's longest token, and JSON escapes at most 6 bytes per byte.
fn early_limit(engine: &Engine) -> Option<usize> {
    let max_length = engine.opts.settings.max_length?;
    if engine.opts.settings.length_policy == LengthPolicy::Truncate {
        return None;
    }
    let per_token = engine.encoder.max_token_bytes().max(1);
    // The template adds text of its own: a generous allowance for it.
    Some(
        max_length
            .saturating_mul(per_token)
            .saturating_mul(6)
            .saturating_add(1 << 16),
    )
}

/// Parses and normalizes one raw record (shared by the split pre-pass and the main pass).
fn parse(engine: &Engine, raw: &RawRecord) -> std::result::Result<(Format, Record), Reject> {
    let text = std::str::from_utf8(&raw.bytes).map_err(|e| {
        Reject::new(
            RejectCode::InvalidUtf8,
            format!("invalid UTF-8 at byte {} of the record", e.valid_up_to()),
        )
    })?;
    if let RawKind::Oversized { bytes } = raw.kind {
        return Err(Reject::new(
            RejectCode::TooLong,
            format!(
                "the record is {bytes} bytes; ftx reads records of up to {} MiB",
                MAX_RECORD_BYTES >> 20
            ),
        ));
    }
    if let Some(limit) = early_limit(engine) {
        if raw.bytes.len() > limit {
            return Err(Reject::new(
                RejectCode::TooLong,
                format!(
                    "the record is {} bytes, too many for --max-length {} tokens however it \
                     tokenizes",
                    raw.bytes.len(),
                    engine.opts.settings.max_length.unwrap_or(0)
                ),
            ));
        }
    }
    if raw.kind == RawKind::Text {
        return Ok((
            Format::Text,
            Record::Text {
                text: text.to_string(),
            },
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let unterminated = matches!(
            raw.kind,
            RawKind::JsonLine { unterminated: true } | RawKind::JsonElement { unterminated: true }
        );
        if unterminated && e.is_eof() {
            Reject::new(
                RejectCode::TruncatedLine,
                format!("the file ends in the middle of this record ({e}): was it cut off?"),
            )
        } else {
            Reject::new(RejectCode::BadJson, format!("not valid JSON: {e}"))
        }
    })?;
    normalize(value, &engine.format_opts)
}

pub(crate) fn process(engine: &Engine, raw: RawRecord) -> Processed {
    let (format, record) = match parse(engine, &raw) {
        Ok(r) => r,
        Err(rej) => return located(raw, false, None, Err(rej)),
    };
    let is_chat = matches!(record, Record::Chat { .. });
    let turns = match &record {
        Record::Chat { messages, .. } => messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count() as u64,
        Record::Text { .. } => 0,
    };
    let words = words(engine, &record);
    if let Some((at, shared)) = contamination(engine, &words) {
        return contaminated(engine, raw, at, shared);
    }
    let canonical = record.canonical_bytes();
    let parsed = Parsed {
        fp: fingerprint(&canonical),
        unit: unit(&canonical, engine.seed),
        near: engine.near.as_ref().and_then(|h| h.signature(&words)),
    };
    let encoded = match &record {
        Record::Text { text } => engine.encoder.encode_text(text),
        Record::Chat { messages, tools } => match &engine.template {
            None => Err(Reject::new(
                RejectCode::TemplateError,
                "this is a conversation but the model has no chat template; pass --chat-template",
            )),
            Some(t) => t.render(messages, tools, false).and_then(|r| {
                engine
                    .encoder
                    .encode_chat(&r, messages, engine.opts.settings.train_on)
            }),
        },
    };
    let outcome = encoded
        .and_then(|enc| apply_length_policy(engine, enc))
        .map(|(encoded, truncated)| Accepted {
            encoded,
            truncated,
            format,
            turns,
        });
    located(raw, is_chat, Some(parsed), outcome)
}

fn apply_length_policy(
    engine: &Engine,
    mut enc: Encoded,
) -> std::result::Result<(Encoded, bool), Reject> {
    let Some(max) = engine.opts.settings.max_length else {
        return Ok((enc, false));
    };
    let n = enc.ids.len();
    if n <= max {
        return Ok((enc, false));
    }
    match engine.opts.settings.length_policy {
        // `error` is raised by the merge step, which knows the record's location.
        LengthPolicy::Drop | LengthPolicy::Error => Err(Reject::new(
            RejectCode::TooLong,
            format!("{n} tokens, longer than max_length {max}"),
        )),
        LengthPolicy::Truncate => {
            enc.ids.truncate(max);
            enc.mask.truncate(max);
            if enc.mask.iter().all(|&m| m == 0) {
                Err(Reject::new(
                    RejectCode::TooLong,
                    format!("{n} tokens; cut to max_length {max}, no trained token would be left"),
                ))
            } else {
                Ok((enc, true))
            }
        }
    }
}

/// The splitter of two ratios, which needs no pass over the data; `None` when a size is a count.
pub(crate) fn ratio_splitter(settings: &crate::options::Settings) -> Result<Option<Splitter>> {
    match (settings.valid, settings.test) {
        (SplitSize::Ratio(v), SplitSize::Ratio(t)) if v + t >= 1.0 => Err(Error::Config(format!(
            "--valid {v} and --test {t} leave nothing to train on"
        ))),
        (SplitSize::Ratio(v), SplitSize::Ratio(t)) => Ok(Some(Splitter { valid: v, test: t })),
        _ => Ok(None),
    }
}

/// Decides the split thresholds. Ratios need nothing; counts need the units of every distinct
/// usable record first, from a quick parse-only pass.
fn splitter(engine: &Engine, cancel: &AtomicBool) -> Result<Splitter> {
    let (valid, test) = (engine.opts.settings.valid, engine.opts.settings.test);
    if let Some(s) = ratio_splitter(&engine.opts.settings)? {
        return Ok(s);
    }
    // The records the main pass keeps, as far as it can be known before rendering: distinct,
    // not near duplicates, not contaminated.
    let mut seen = std::collections::HashSet::new();
    let mut near = engine.near.as_ref().map(|h| Index::new(h.params()));
    let mut units = Vec::new();
    for (i, input) in engine.opts.inputs.iter().enumerate() {
        let mut chunk = Vec::new();
        let mut flush = |chunk: &mut Vec<RawRecord>| {
            type Found = (u128, f64, Option<Signature>);
            let found: Vec<Option<Found>> = chunk
                .par_iter()
                .map(|raw| {
                    let (_, rec) = parse(engine, raw).ok()?;
                    let words = words(engine, &rec);
                    if contamination(engine, &words).is_some() {
                        return None;
                    }
                    let sig = engine.near.as_ref().and_then(|h| h.signature(&words));
                    let c = rec.canonical_bytes();
                    Some((fingerprint(&c), unit(&c, engine.seed), sig))
                })
                .collect();
            chunk.clear();
            for (fp, u, sig) in found.into_iter().flatten() {
                if engine.opts.settings.dedup && !seen.insert(fp) {
                    continue;
                }
                if let (Some(index), Some(sig)) = (near.as_mut(), sig) {
                    if matches!(index.offer(sig), Verdict::Duplicate { .. }) {
                        continue;
                    }
                }
                units.push(u);
            }
        };
        read_input(
            input,
            i as u32,
            engine.opts.settings.text_unit,
            &mut |raw| {
                chunk.push(raw);
                if chunk.len() >= CHUNK_RECORDS * 8 {
                    flush(&mut chunk);
                }
                !cancel.load(Ordering::Relaxed)
            },
        )?;
        flush(&mut chunk);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    units.sort_by(f64::total_cmp);
    Ok(Splitter::from_counts(valid, test, &units))
}

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

/// What a pass hands its records to, in input order: the merging end ([`Sink`]) or a shard's
/// files ([`crate::shard::ShardWriter`]).
pub(crate) trait Taker {
    fn take(&mut self, p: Processed) -> Result<()>;
    /// The counters shown while the pass runs.
    fn count(&self, prog: &mut Progress);
    /// When the run fails, keeps the rejects beside `out_dir`; where they were kept.
    fn salvage_rejects(&mut self, out_dir: &Path) -> Option<PathBuf>;
}

/// The merging end: the counters, dedup, and the store records and rejects go to.
pub(crate) struct Sink<S> {
    store: S,
    rules: Rules,
    judge: Judge,
    stats: BTreeMap<Split, SplitStats>,
    reject_counts: BTreeMap<&'static str, u64>,
    duplicates: u64,
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
    fn in_memory(store: S, engine: &Engine) -> Self {
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

    fn accepted(&self) -> u64 {
        self.stats.values().map(|s| s.records).sum()
    }

    fn tokens(&self) -> u64 {
        self.stats.values().map(|s| s.tokens).sum()
    }

    fn rejected_total(&self) -> u64 {
        self.reject_counts.values().sum()
    }

    /// The rejects of near-dedup and decontamination.
    fn filtered(&self) -> u64 {
        [RejectCode::NearDuplicate, RejectCode::Contaminated]
            .iter()
            .filter_map(|c| self.reject_counts.get(c.as_str()))
            .sum()
    }

    fn reject_summary(&self) -> String {
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
    fn finish(self, records_read: u64) -> Result<manifest::Results> {
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
struct MemoryStore {
    splits: BTreeMap<Split, SplitArrays>,
    rejects: Vec<Value>,
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
