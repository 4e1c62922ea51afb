//! `prepare` end to end: read → parse → normalize/validate → dedup → split → render → tokenize +
//! mask → store. Records move in bounded chunks, are processed in parallel and merged in input
//! order, so memory stays flat and the output is byte-identical for any number of threads.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::conversation::Record;
use crate::decontam::EvalNgrams;
use crate::dedup::{fingerprint, Dedup};
use crate::encode::{Encoded, Encoder};
use crate::error::{Error, Result};
use crate::formats::{normalize, Format, FormatOptions};
use crate::manifest;
use crate::neardup::{record_words, Index, MinHasher, Params, Signature, Verdict};
use crate::options::{num_threads, LengthPolicy, PrepareOptions};
use crate::reader::{read_input, RawKind, RawRecord, MAX_RECORD_BYTES};
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

/// What one worker made of one record.
struct Processed {
    source: u32,
    line: u64,
    offset: u64,
    is_chat: bool,
    outcome: std::result::Result<Accepted, Rejected>,
}

struct Accepted {
    fp: u128,
    split: Split,
    encoded: Encoded,
    truncated: bool,
    /// With near-dedup: the signature (none for a record without words) and the raw bytes, for
    /// the reject should it be a near duplicate.
    near: Option<(Option<Signature>, Vec<u8>)>,
}

struct Rejected {
    reject: Reject,
    bytes: Vec<u8>,
    link: Link,
}

/// The other record a reject names: the kept one of a near duplicate, the evaluation record a
/// contaminated one shares n-grams with.
#[derive(Debug, Default, Serialize)]
struct Link {
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

/// Everything a worker needs, shared read-only across threads.
struct Engine {
    encoder: Encoder,
    template: Option<ChatTemplate>,
    template_label: String,
    format_opts: FormatOptions,
    seed: u64,
    splitter: Splitter,
    near: Option<MinHasher>,
    eval: Option<EvalNgrams>,
    opts: PrepareOptions,
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ftx-worker-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start worker threads: {e}")))?;

    let (encoder, files, tokenizer_path) = crate::model::load(&opts)?;
    let (template, template_label) = crate::model::template(&opts, &files)?;
    let provenance = manifest::provenance(&opts, &files, &tokenizer_path, template.as_ref())?;

    if !opts.force {
        if let Some(cached) = manifest::cached(&opts.out_dir, &provenance.hash)? {
            return Ok(manifest::Report {
                manifest: cached,
                run: manifest::Run {
                    cached: true,
                    seconds: started.elapsed().as_secs_f64(),
                    threads,
                    records_per_s: None,
                    tokens_per_s: None,
                    out_dir: opts.out_dir.display().to_string(),
                },
            });
        }
    }

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
    // The evaluation files are inputs too: --out may not hold or replace one.
    let inputs: Vec<PathBuf> = opts
        .inputs
        .iter()
        .map(|i| i.origin.clone())
        .chain(opts.settings.decontaminate.iter().cloned())
        .collect();
    // Held until the artifact is published: a second prepare of this --out fails at once.
    let _claim = crate::output::claim(&opts.out_dir, &inputs, opts.force)?;

    let format_opts = FormatOptions {
        forced: opts.settings.format,
        columns: match &opts.settings.columns {
            Some(spec) => crate::formats::Columns::parse(spec)
                .map_err(|e| Error::Config(format!("--columns: {e}")))?,
            None => Default::default(),
        },
    };
    let mut engine = Engine {
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
    engine.splitter = pool.install(|| splitter(&engine, cancel))?;

    let staging = StagingDir::new(&engine.opts.out_dir)?;
    let mut sink = Sink::create(staging.path(), &engine)?;
    let mut prog = Progress::default();
    let mut chat_seen = 0u64;
    let mut chat_failed = 0u64;

    for_each_batch(&engine, threads, cancel, &pool, |batch| {
        for p in batch {
            prog.records += 1;
            if p.is_chat {
                chat_seen += 1;
                if let Err(r) = &p.outcome {
                    if matches!(
                        r.reject.code,
                        RejectCode::TemplateError | RejectCode::MaskNotFound
                    ) {
                        chat_failed += 1;
                    }
                }
            }
            sink.take(&engine, p)?;
        }
        prog.accepted = sink.accepted();
        prog.rejected = sink.rejected_total();
        prog.duplicates = sink.dedup.duplicates();
        prog.tokens = sink.tokens();
        prog.elapsed_s = started.elapsed().as_secs_f64();
        progress(&prog);
        if chat_seen >= TEMPLATE_CHECK_AFTER && chat_failed * 2 > chat_seen {
            let kept = sink.salvage_rejects(&engine.opts.out_dir);
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
    })
    .inspect_err(|_| {
        sink.salvage_rejects(&engine.opts.out_dir);
    })?;

    let total = prog.records;
    // Near duplicates and contaminated records were asked to be dropped: they are not bad data.
    let rejected = sink.rejected_total() - sink.filtered();
    if let Some(max) = engine.opts.settings.max_reject_ratio {
        if total > 0 && rejected as f64 / total as f64 > max {
            let kept = sink.salvage_rejects(&engine.opts.out_dir);
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
        let kept = sink.salvage_rejects(&engine.opts.out_dir);
        return Err(Error::Data(format!(
            "no usable record in {total} read ({}); rejected records: {}",
            sink.reject_summary(),
            kept.map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none)".into()),
        )));
    }

    let results = sink.finish(&engine, total)?;
    let manifest = manifest::build(&provenance, results);
    manifest::write(staging.path(), &manifest)?;
    staging.publish()?;
    let secs = started.elapsed().as_secs_f64();
    Ok(manifest::Report {
        manifest,
        run: manifest::Run {
            cached: false,
            seconds: secs,
            threads,
            records_per_s: Some(total as f64 / secs.max(1e-9)),
            tokens_per_s: Some(prog.tokens as f64 / secs.max(1e-9)),
            out_dir: engine.opts.out_dir.display().to_string(),
        },
    })
}

/// Reads all inputs on one thread and processes them on the pool in batches of chunks, calling
/// `merge` with each batch's results in input order.
fn for_each_batch(
    engine: &Engine,
    threads: usize,
    cancel: &AtomicBool,
    pool: &rayon::ThreadPool,
    mut merge: impl FnMut(Vec<Processed>) -> Result<()>,
) -> Result<()> {
    let batch_chunks = threads * 2;
    let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<RawRecord>>>(batch_chunks * 2);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK_RECORDS);
            for (i, input) in engine.opts.inputs.iter().enumerate() {
                let mut alive = true;
                let r = read_input(
                    input,
                    i as u32,
                    engine.opts.settings.text_unit,
                    &mut |raw| {
                        chunk.push(raw);
                        if chunk.len() == CHUNK_RECORDS {
                            let full =
                                std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_RECORDS));
                            alive = tx.send(Ok(full)).is_ok();
                        }
                        alive
                    },
                );
                if let Err(e) = r {
                    let _ = tx.send(Err(e));
                    return;
                }
                if !alive {
                    return;
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk));
            }
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
                        .par_iter()
                        .map(|c| c.iter().map(|r| process(engine, r)).collect())
                        .collect()
                });
                merge(results.into_iter().flatten().collect())?;
            }
            Ok(())
        })();
        // Unblock the reader if we stopped early, then wait for it.
        drop(rx);
        let _ = reader.join();
        result
    })
}

fn located(
    raw: &RawRecord,
    is_chat: bool,
    outcome: std::result::Result<Accepted, Reject>,
) -> Processed {
    Processed {
        source: raw.source,
        line: raw.line,
        offset: raw.offset,
        is_chat,
        outcome: outcome.map_err(|reject| Rejected {
            reject,
            bytes: raw.bytes.clone(),
            link: Link::default(),
        }),
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

fn contaminated(engine: &Engine, raw: &RawRecord, at: (u32, u64), shared: usize) -> Processed {
    let settings = &engine.opts.settings;
    let file = settings.decontaminate[at.0 as usize].display().to_string();
    let mut p = located(
        raw,
        false,
        Err(Reject::new(
            RejectCode::Contaminated,
            format!(
                "shares {shared} {}-word n-gram(s) with the evaluation record {file}:{}",
                settings.decontaminate_ngram, at.1
            ),
        )),
    );
    if let Err(r) = &mut p.outcome {
        r.link = Link {
            eval_file: Some(file),
            eval_line: Some(at.1),
            shared_ngrams: Some(shared),
            ..Link::default()
        };
    }
    p
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
fn parse(engine: &Engine, raw: &RawRecord) -> std::result::Result<Record, Reject> {
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
        return Ok(Record::Text {
            text: text.to_string(),
        });
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
    normalize(value, &engine.format_opts).map(|(_, rec): (Format, Record)| rec)
}

fn process(engine: &Engine, raw: &RawRecord) -> Processed {
    let record = match parse(engine, raw) {
        Ok(r) => r,
        Err(rej) => return located(raw, false, Err(rej)),
    };
    let is_chat = matches!(record, Record::Chat { .. });
    let words = words(engine, &record);
    if let Some((at, shared)) = contamination(engine, &words) {
        return contaminated(engine, raw, at, shared);
    }
    let near = engine
        .near
        .as_ref()
        .map(|h| (h.signature(&words), raw.bytes.clone()));
    let canonical = record.canonical_bytes();
    let fp = fingerprint(&canonical);
    let split = engine.splitter.assign(unit(&canonical, engine.seed));
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
            fp,
            split,
            encoded,
            truncated,
            near,
        });
    located(raw, is_chat, outcome)
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

/// Decides the split thresholds. Ratios need nothing; counts need the units of every distinct
/// usable record first, from a quick parse-only pass.
fn splitter(engine: &Engine, cancel: &AtomicBool) -> Result<Splitter> {
    let (valid, test) = (engine.opts.settings.valid, engine.opts.settings.test);
    if let (SplitSize::Ratio(v), SplitSize::Ratio(t)) = (valid, test) {
        if v + t >= 1.0 {
            return Err(Error::Config(format!(
                "--valid {v} and --test {t} leave nothing to train on"
            )));
        }
        return Ok(Splitter { valid: v, test: t });
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
                    let rec = parse(engine, raw).ok()?;
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

/// The writing end: one set of arrays per split, the rejects file, and the counters.
struct Sink {
    dir: PathBuf,
    writers: BTreeMap<Split, SplitWriter>,
    rejects: BufWriter<fs_err::File>,
    rejects_path: PathBuf,
    reject_counts: BTreeMap<&'static str, u64>,
    dedup: Dedup,
    dedup_on: bool,
    /// With near-dedup: the index, and where each record it kept was read.
    near: Option<(Index, Vec<(u32, u64)>)>,
}

struct SplitWriter {
    tokens: NpyWriter,
    mask: NpyWriter,
    offsets: NpyWriter,
    stats: SplitStats,
}

impl Sink {
    fn create(dir: &Path, engine: &Engine) -> Result<Self> {
        let mut writers = BTreeMap::new();
        for split in Split::ALL {
            let name = split.as_str();
            let mut offsets = NpyWriter::create::<u64>(dir.join(format!("{name}.offsets.npy")))?;
            offsets.push(&[0u64])?;
            writers.insert(
                split,
                SplitWriter {
                    tokens: NpyWriter::create::<u32>(dir.join(format!("{name}.tokens.npy")))?,
                    mask: NpyWriter::create::<u8>(dir.join(format!("{name}.mask.npy")))?,
                    offsets,
                    stats: SplitStats::default(),
                },
            );
        }
        let rejects_path = dir.join("rejects.jsonl");
        let rejects = BufWriter::new(fs_err::File::create(&rejects_path)?);
        Ok(Sink {
            dir: dir.to_path_buf(),
            writers,
            rejects,
            rejects_path,
            reject_counts: BTreeMap::new(),
            dedup: Dedup::default(),
            dedup_on: engine.opts.settings.dedup,
            near: engine
                .near
                .as_ref()
                .map(|h| (Index::new(h.params()), Vec::new())),
        })
    }

    fn take(&mut self, engine: &Engine, p: Processed) -> Result<()> {
        let file = &engine.opts.inputs[p.source as usize].origin;
        match p.outcome {
            Err(Rejected {
                reject,
                bytes,
                link,
            }) => {
                if reject.code == RejectCode::TooLong
                    && engine.opts.settings.length_policy == LengthPolicy::Error
                {
                    return Err(Error::Data(format!(
                        "{}:{}: {} (--length-policy error)",
                        file.display(),
                        p.line,
                        reject.message
                    )));
                }
                self.reject(file, (p.line, p.offset), &reject, &bytes, link)?;
            }
            Ok(a) => {
                if self.dedup_on && !self.dedup.first(a.fp) {
                    return Ok(());
                }
                if let (Some((index, kept)), Some((Some(sig), bytes))) = (&mut self.near, a.near) {
                    match index.offer(sig) {
                        Verdict::Kept(_) => kept.push((p.source, p.line)),
                        Verdict::Duplicate { of, similarity } => {
                            let (source, line) = kept[of];
                            let kept_file = engine.opts.inputs[source as usize].origin.display();
                            let reject = Reject::new(
                                RejectCode::NearDuplicate,
                                format!(
                                    "a near duplicate (estimated Jaccard similarity \
                                     {similarity:.3}) of {kept_file}:{line}, which was kept"
                                ),
                            );
                            let link = Link {
                                kept_file: Some(kept_file.to_string()),
                                kept_line: Some(line),
                                similarity: Some(similarity),
                                ..Link::default()
                            };
                            return self.reject(file, (p.line, p.offset), &reject, &bytes, link);
                        }
                    }
                }
                let w = self.writers.get_mut(&a.split).ok_or_else(|| {
                    Error::Internal(format!("no writer for split {}", a.split.as_str()))
                })?;
                let trained = a.encoded.mask.iter().filter(|&&m| m != 0).count();
                w.tokens.push(&a.encoded.ids)?;
                w.mask.push(&a.encoded.mask)?;
                w.offsets.push(&[w.tokens.len()])?;
                w.stats.add(a.encoded.ids.len(), trained, a.truncated);
            }
        }
        Ok(())
    }

    /// Counts a reject and writes its line.
    fn reject(
        &mut self,
        file: &Path,
        (line, offset): (u64, u64),
        reject: &Reject,
        bytes: &[u8],
        link: Link,
    ) -> Result<()> {
        *self.reject_counts.entry(reject.code.as_str()).or_default() += 1;
        let (record, record_bytes) = record_excerpt(bytes);
        let entry = RejectLine {
            file: file.display().to_string(),
            line,
            offset,
            code: reject.code.as_str(),
            message: &reject.message,
            link,
            record_truncated: record_bytes.map(|_| true),
            record_bytes,
            record,
        };
        serde_json::to_writer(&mut self.rejects, &entry)
            .map_err(|e| Error::io(&self.rejects_path, e.into()))?;
        self.rejects
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.rejects_path, e))
    }

    fn accepted(&self) -> u64 {
        self.writers.values().map(|w| w.stats.records).sum()
    }

    fn tokens(&self) -> u64 {
        self.writers.values().map(|w| w.stats.tokens).sum()
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

    /// When the run fails, keeps the rejects next to where the artifact would have been, so the
    /// reasons are not lost with the staging folder.
    fn salvage_rejects(&mut self, out_dir: &Path) -> Option<PathBuf> {
        self.rejects.flush().ok()?;
        if self.rejected_total() == 0 {
            return None;
        }
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

    fn finish(self, engine: &Engine, records_read: u64) -> Result<manifest::Results> {
        let Sink {
            dir,
            writers,
            rejects,
            rejects_path,
            reject_counts,
            dedup,
            ..
        } = self;
        let file = rejects
            .into_inner()
            .map_err(|e| Error::io(&rejects_path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&rejects_path, e))?;
        let mut splits = BTreeMap::new();
        for (split, w) in writers {
            let name = split.as_str();
            w.tokens.finish()?;
            w.mask.finish()?;
            w.offsets.finish()?;
            let files = manifest::PerArray {
                tokens: format!("{name}.tokens.npy"),
                mask: format!("{name}.mask.npy"),
                offsets: format!("{name}.offsets.npy"),
            };
            // What each file was when written: a later read refuses one that changed since.
            let check = |file: &String| -> Result<manifest::FileCheck> {
                let (bytes, xxh3) = crate::store::digest(&dir.join(file))?;
                Ok(manifest::FileCheck { bytes, xxh3 })
            };
            let checks = manifest::PerArray {
                tokens: check(&files.tokens)?,
                mask: check(&files.mask)?,
                offsets: check(&files.offsets)?,
            };
            splits.insert(
                split,
                manifest::SplitEntry {
                    records: w.stats.records,
                    tokens: w.stats.tokens,
                    trained_tokens: w.stats.trained_tokens,
                    truncated: w.stats.truncated,
                    lengths: w.stats.lengths(),
                    files,
                    checks,
                },
            );
        }
        Ok(manifest::Results {
            records_read,
            duplicates: dedup.duplicates(),
            rejected: reject_counts.values().sum::<u64>(),
            rejects: reject_counts
                .into_iter()
                .map(|(code, n)| (code.to_string(), n))
                .collect(),
            rejects_file: "rejects.jsonl".into(),
            template: engine.template_label.clone(),
            splits,
        })
    }
}

/// One line of `rejects.jsonl`.
#[derive(Serialize)]
struct RejectLine<'a> {
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
/// record's size.
fn record_excerpt(bytes: &[u8]) -> (Value, Option<usize>) {
    if bytes.len() <= MAX_REJECT_RECORD {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return (v, None);
        }
        return (
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
            None,
        );
    }
    let mut cut = 4096;
    while cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    (
        Value::String(String::from_utf8_lossy(&bytes[..cut]).into_owned()),
        Some(bytes.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reject_line_names_an_excerpt_before_the_record() {
        let line = |bytes: &[u8]| {
            let (record, record_bytes) = record_excerpt(bytes);
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
