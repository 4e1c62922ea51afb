//! `ftx merge SHARD_DIR... --out OUT`: the shards of one `prepare --shard I/N` set into the
//! artifact `prepare` writes on one machine for the same inputs and options, byte for byte.
//!
//! The shards hold every record read, in input order, processed up to dedup. The merge checks
//! the set (each of 0..N once, one provenance, the byte ranges tiling each input), resolves
//! exact and near duplicates on disk in bounded memory ([`crate::resolve`]), and feeds the
//! records in input order to the same merging end (`sink::Sink`) `prepare` uses, so dedup
//! winners, splits, order, rejects and counts are the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::manifest::{self, Provenance};
use crate::neardup::Params;
use crate::pipeline::{cached_report, publish, ran, ratio_splitter, Progress, Taker};
use crate::resolve::{Candidate, Resolution, Resolver};
use crate::shard::{read_manifest, verify, ShardManifest, ShardReader, ACCEPTED, PARSED};
use crate::sink::{ArtifactStore, Judge, Rules, Sink, Verdict3};
use crate::split::Splitter;
use crate::store::StagingDir;

/// How a merge runs.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub shards: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub force: bool,
    /// The most one dedup partition holds in memory, in bytes.
    pub memory: u64,
    pub threads: Option<usize>,
}

/// The default of [`MergeOptions::memory`]: 256 MiB.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// A checked shard set, in shard order.
struct Set {
    shards: Vec<(PathBuf, ShardManifest)>,
    provenance: Provenance,
    /// For each shard and input, the lines of that input before the shard's region.
    line_base: Vec<BTreeMap<u32, u64>>,
    rows: u64,
    params: Option<Params>,
}

fn check_set(dirs: &[PathBuf]) -> Result<Set> {
    if dirs.is_empty() {
        return Err(Error::Config("ftx merge: no shard folders given".into()));
    }
    let mut read: Vec<(PathBuf, ShardManifest)> = dirs
        .iter()
        .map(|d| Ok((d.clone(), read_manifest(d)?)))
        .collect::<Result<_>>()?;
    let count = read[0].1.shards;
    if let Some((d, m)) = read.iter().find(|(_, m)| m.shards != count) {
        return Err(Error::Data(format!(
            "{} is shard {}/{} but {} is one of {count}: these are not one shard set",
            d.display(),
            m.shard,
            m.shards,
            read[0].0.display()
        )));
    }
    read.sort_by_key(|(_, m)| m.shard);
    let mut seen: BTreeMap<u32, Vec<&Path>> = BTreeMap::new();
    for (d, m) in &read {
        seen.entry(m.shard).or_default().push(d);
    }
    if let Some((i, ds)) = seen.iter().find(|(_, ds)| ds.len() > 1) {
        let names: Vec<String> = ds.iter().map(|d| d.display().to_string()).collect();
        return Err(Error::Data(format!(
            "shard {i}/{count} is given twice ({}): each shard is merged once",
            names.join(", ")
        )));
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Data(format!(
            "the shard set is missing {}: prepare {} with --shard and merge all {count}",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        )));
    }
    // One provenance across the set, but for the input hashes each shard made of its own.
    let mut body = read[0].1.provenance.clone();
    body.inputs.iter_mut().for_each(|i| i.sha256.clear());
    for (d, m) in &read {
        let mut b = m.provenance.clone();
        b.inputs.iter_mut().for_each(|i| i.sha256.clear());
        if b != body || m.template != read[0].1.template {
            return Err(Error::Data(format!(
                "{} was prepared from other inputs, options, tokenizer, template or ftx version \
                 than {}: a shard set is prepared with one command line",
                d.display(),
                read[0].0.display()
            )));
        }
    }
    for (source, input) in body.inputs.iter_mut().enumerate() {
        let by: Vec<&(PathBuf, ShardManifest)> = read
            .iter()
            .filter(|(_, m)| m.hashed.contains(&(source as u32)))
            .collect();
        match by[..] {
            [(_, m)] => input.sha256 = m.provenance.inputs[source].sha256.clone(),
            _ => {
                return Err(Error::Data(format!(
                    "{}: hashed by {} shards where one should have: the shards are not one set",
                    input.path,
                    by.len()
                )))
            }
        }
    }
    let params = body.options.near_dedup.then(|| Params::of(&body.options));
    let mut line_base = vec![BTreeMap::new(); read.len()];
    for (source, input) in body.inputs.iter().enumerate() {
        let source = source as u32;
        let mut whole = 0;
        let mut at = 0u64;
        let mut lines = 0u64;
        for (k, (d, m)) in read.iter().enumerate() {
            for part in m.parts.iter().filter(|p| p.source == source) {
                match part.region {
                    None => whole += 1,
                    Some(r) => {
                        if r.start != at {
                            return Err(Error::Data(format!(
                                "{}: {} read {} from byte {} where the shard before stopped at \
                                 {at}: the shards are not one set",
                                input.path,
                                d.display(),
                                r.end - r.start,
                                r.start
                            )));
                        }
                        line_base[k].insert(source, lines);
                        at = r.end;
                        lines += r.lines;
                    }
                }
            }
        }
        let ranged = at > 0;
        if (whole > 1) || (whole == 1 && ranged) || (whole == 0 && at != input.size) {
            return Err(Error::Data(format!(
                "{}: the shards read {at} of its {} bytes ({whole} whole): the shards are not \
                 one set",
                input.path, input.size
            )));
        }
    }
    for (d, m) in &read {
        verify(d, m, params.as_ref())?;
    }
    let rows = read.iter().map(|(_, m)| m.rows).sum();
    Ok(Set {
        shards: read,
        provenance: Provenance::of(body),
        line_base,
        rows,
        params,
    })
}

impl Set {
    /// Offers the candidates of one pass, every record for which `eligible` holds, in order.
    fn offer(
        &self,
        eligible: u8,
        cancel: &AtomicBool,
        f: &mut dyn FnMut(Candidate) -> Result<()>,
    ) -> Result<()> {
        let mut idx = 0u64;
        for (k, (dir, m)) in self.shards.iter().enumerate() {
            let mut reader = ShardReader::open(dir, m, self.params.as_ref(), false)?;
            while let Some(r) = reader.next()? {
                if r.row.has(eligible) {
                    let line =
                        r.row.line + self.line_base[k].get(&r.row.source).copied().unwrap_or(0);
                    f(Candidate {
                        idx,
                        fp: r.row.fp,
                        unit: r.row.unit,
                        at: (r.row.source, line),
                        sig: r.sig.as_ref().map(|s| (&s.values[..], &s.bands[..])),
                    })?;
                }
                idx += 1;
                if idx.is_multiple_of(65536) && cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
            }
        }
        Ok(())
    }

    /// The splitter: ratios at once; counts from the records `prepare`'s first pass would keep
    /// (those that parse, deduplicated the same way).
    fn splitter(&self, resolver: &Resolver, cancel: &AtomicBool) -> Result<Splitter> {
        let settings = &self.provenance.body.options;
        if let Some(s) = ratio_splitter(settings)? {
            return Ok(s);
        }
        let parsed = resolver.resolve("parsed", self.rows, |f| self.offer(PARSED, cancel, f))?;
        let mut decider = parsed.decider()?;
        let mut units = Vec::new();
        self.offer(PARSED, cancel, &mut |c| {
            if let Verdict3::Unique = decider.decide(c.idx, c.sig.is_some())? {
                units.push(c.unit);
            }
            Ok(())
        })?;
        units.sort_by(f64::total_cmp);
        Ok(Splitter::from_counts(settings.valid, settings.test, &units))
    }
}

/// Runs `merge`. Returns the same report `prepare` does.
pub fn merge(
    opts: MergeOptions,
    progress: &(dyn Fn(&Progress) + Sync),
    cancel: &AtomicBool,
) -> Result<manifest::Report> {
    let started = Instant::now();
    let threads = crate::options::num_threads(opts.threads);
    let pool = crate::pipeline::worker_pool(threads)?;
    let set = check_set(&opts.shards)?;
    let out_dir = &opts.out_dir;
    if !opts.force {
        if let Some(report) = cached_report(out_dir, &set.provenance.hash, started, threads)? {
            return Ok(report);
        }
    }
    let settings = set.provenance.body.options.clone();
    let protected: Vec<PathBuf> = opts
        .shards
        .iter()
        .cloned()
        .chain(
            set.provenance
                .body
                .inputs
                .iter()
                .map(|i| PathBuf::from(&i.path)),
        )
        .chain(settings.decontaminate.iter().cloned())
        .collect();
    let _claim = crate::output::claim(out_dir, &protected, opts.force)?;
    // The spill files live beside the artifact, in a staging folder never published.
    let scratch = StagingDir::new(out_dir)?;
    let resolver = Resolver {
        dir: scratch.path(),
        budget: opts.memory,
        dedup: settings.dedup,
        near: set.params,
    };
    let (splitter, accepted): (Splitter, Resolution) = pool.install(|| -> Result<_> {
        let splitter = set.splitter(&resolver, cancel)?;
        let accepted =
            resolver.resolve("accepted", set.rows, |f| set.offer(ACCEPTED, cancel, f))?;
        Ok((splitter, accepted))
    })?;

    let rules = Rules {
        files: set
            .provenance
            .body
            .inputs
            .iter()
            .map(|i| i.path.clone())
            .collect(),
        length_error: settings.length_policy == crate::options::LengthPolicy::Error,
        splitter,
        template_label: set.shards[0].1.template.clone(),
    };
    let staging = StagingDir::new(out_dir)?;
    let mut sink = Sink::new(
        ArtifactStore::create(staging.path())?,
        rules,
        Judge::Resolved(accepted.decider()?),
    );
    let mut prog = Progress::default();
    for (k, (dir, m)) in set.shards.iter().enumerate() {
        let mut reader = ShardReader::open(dir, m, set.params.as_ref(), true)?;
        while let Some(r) = reader.next()? {
            let Some(mut p) = r.processed else {
                return Err(Error::Internal(
                    "a shard record read without its data".into(),
                ));
            };
            p.line += set.line_base[k].get(&p.source).copied().unwrap_or(0);
            sink.take(p)?;
            prog.records += 1;
            if prog.records.is_multiple_of(8192) {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                sink.count(&mut prog);
                prog.elapsed_s = started.elapsed().as_secs_f64();
                progress(&prog);
            }
        }
    }
    sink.count(&mut prog);
    prog.elapsed_s = started.elapsed().as_secs_f64();
    progress(&prog);
    drop(scratch);
    let manifest = publish(
        sink,
        prog.records,
        &set.provenance,
        staging,
        settings.max_reject_ratio,
        out_dir,
    )?;
    Ok(ran(manifest, started, threads, prog.tokens, out_dir))
}
