//! `prepare` end to end: read → parse → normalize/validate → dedup → split → render → tokenize +
//! mask → store. Records move in bounded chunks, are processed in parallel and merged in input
//! order, so memory stays flat and the output is byte-identical for any number of threads.
//! The merging end (dedup, counters, the store) is [`crate::sink`].
//! `inspect` of raw files runs the same pass into memory ([`collect`]): nothing is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::conversation::{Record, Role};
use crate::decontam::EvalNgrams;
use crate::dedup::fingerprint;
use crate::encode::{Encoded, Encoder, ModelFiles};
use crate::error::{Error, Result};
use crate::formats::{normalize, Format, FormatOptions};
use crate::manifest;
use crate::neardup::{record_words, Index, MinHasher, Params, Signature, Verdict};
use crate::options::{num_threads, LengthPolicy, PrepareOptions};
use crate::reader::{read_input, read_range, RawKind, RawRecord, Region, MAX_RECORD_BYTES};
use crate::reject::{Reject, RejectCode};
use crate::sink::{ArtifactStore, MemoryStore, Sink};
use crate::split::{unit, Split, SplitSize, Splitter};
use crate::store::StagingDir;
use crate::template::ChatTemplate;

/// Records per chunk handed to a worker: large enough to amortize scheduling, small enough that
/// a few chunks in flight per thread keep memory flat.
const CHUNK_RECORDS: usize = 256;
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
    pub(crate) kept_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kept_line: Option<u64>,
    /// The estimated Jaccard similarity to the kept record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) similarity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) eval_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) eval_line: Option<u64>,
    /// How many distinct evaluation n-grams the record shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shared_ngrams: Option<usize>,
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

/// What a pass hands its records to, in input order: the merging end ([`Sink`]) or a shard's
/// files ([`crate::shard::ShardWriter`]).
pub(crate) trait Taker {
    fn take(&mut self, p: Processed) -> Result<()>;
    /// The counters shown while the pass runs.
    fn count(&self, prog: &mut Progress);
    /// When the run fails, keeps the rejects beside `out_dir`; where they were kept.
    fn salvage_rejects(&mut self, out_dir: &Path) -> Option<PathBuf>;
}
