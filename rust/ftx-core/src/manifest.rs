//! `manifest.json`: what an artifact holds, what made it, and a provenance hash over all of it
//! that decides whether a later run may reuse it. The file is [`Manifest`] serialized; its
//! fields are declared in the order they are written.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::encode::ModelFiles;
use crate::error::Result;
use crate::options::{PrepareOptions, Settings};
use crate::split::Split;
use crate::stats::LengthSummary;
use crate::store::write_synced;
use crate::template::{ChatTemplate, SpecialTokens};

/// Bumped whenever the artifact layout changes incompatibly.
/// 2: `{split}.records.npy` and `record_info` (where each record came from, its format and
/// turns) and exact duplicates in `rejects.jsonl`.
pub const ARTIFACT_VERSION: u32 = 2;
pub const MANIFEST: &str = "manifest.json";
/// The `format` of every manifest `prepare` writes.
pub const FORMAT: &str = crate::output::PREPARED;

/// One input file as it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDigest {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The tokenizer, and what `tokenizer_config.json` changes in the output: the special tokens
/// templates write and the BOS/EOS that plain text gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerDigest {
    pub path: String,
    pub sha256: String,
    pub specials: SpecialTokens,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    /// `generation_config.json`'s EOS ids, which the mask trains right after a turn's end token.
    /// Left out when there are none, so the keys of artifacts made without them stay as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generation_eos: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateDigest {
    pub sha256: String,
}

/// Every input of an artifact, in a fixed order: the provenance hash is the sha256 of this
/// serialized as compact JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvenanceBody {
    pub ftx_version: String,
    pub artifact_version: u32,
    pub inputs: Vec<InputDigest>,
    /// The `--decontaminate` files: what they hold decides which records are dropped. Left out
    /// when there are none, so the keys of artifacts made without them stay as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval_files: Vec<InputDigest>,
    pub tokenizer: TokenizerDigest,
    pub template: Option<TemplateDigest>,
    pub options: Settings,
}

/// The inputs to an artifact, and their hash.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub hash: String,
    pub body: ProvenanceBody,
}

/// One value for each array of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerArray<T> {
    pub tokens: T,
    pub mask: T,
    pub offsets: T,
    /// One row of [`RECORD_COLUMNS`] per record.
    pub records: T,
}

impl<T> PerArray<T> {
    pub fn iter(&self) -> [(&'static str, &T); 4] {
        [
            ("tokens", &self.tokens),
            ("mask", &self.mask),
            ("offsets", &self.offsets),
            ("records", &self.records),
        ]
    }
}

/// The columns of `{split}.records.npy` (u64): the input's index in `inputs`, the record's line
/// in it, its format's index in `record_info.formats`, and its turns (assistant messages; 0 for
/// plain text).
pub const RECORD_COLUMNS: [&str; 4] = ["source", "line", "format", "turns"];

/// What the columns of `{split}.records.npy` mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordInfo {
    pub columns: Vec<String>,
    pub formats: Vec<String>,
}

impl Default for RecordInfo {
    fn default() -> Self {
        RecordInfo {
            columns: RECORD_COLUMNS.iter().map(|c| c.to_string()).collect(),
            formats: crate::formats::Format::ALL
                .iter()
                .map(|f| f.as_str().to_string())
                .collect(),
        }
    }
}

/// What a file was when written: a later read refuses one that changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCheck {
    pub bytes: u64,
    pub xxh3: String,
}

/// One split of the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitEntry {
    pub records: u64,
    pub tokens: u64,
    pub trained_tokens: u64,
    pub truncated: u64,
    /// `None` for an empty split.
    pub lengths: Option<LengthSummary>,
    pub files: PerArray<String>,
    pub checks: PerArray<FileCheck>,
}

/// What `prepare` made of its inputs, besides the provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub records_read: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub rejects: BTreeMap<String, u64>,
    pub rejects_file: String,
    /// The template's label (its digest is in the provenance).
    pub template: String,
    pub splits: BTreeMap<Split, SplitEntry>,
}

/// `manifest.json`. Unknown fields are ignored when it is read and a missing one makes it
/// unreadable, so the manifest of another ftx is rebuilt, never misread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub provenance: String,
    pub ftx_version: String,
    pub artifact_version: u32,
    pub inputs: Vec<InputDigest>,
    pub tokenizer: TokenizerDigest,
    /// The template's label, where the provenance has its digest.
    pub template: String,
    pub options: Settings,
    pub records_read: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub rejects: BTreeMap<String, u64>,
    pub rejects_file: String,
    pub splits: BTreeMap<Split, SplitEntry>,
    pub record_info: RecordInfo,
}

/// How one `prepare` call ran (never written to disk).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub cached: bool,
    pub seconds: f64,
    pub threads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    pub out_dir: String,
}

/// What `prepare` returns: the manifest with `run` after its last field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub manifest: Manifest,
    pub run: Run,
}

pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut h = Sha256::new();
    let size = crate::store::read_chunks(path, |chunk| h.update(chunk))?;
    Ok((size, hex(&h.finalize())))
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every option that changes the output, in a fixed order.
pub fn provenance(
    opts: &PrepareOptions,
    files: &ModelFiles,
    tokenizer_path: &Path,
    template: Option<&ChatTemplate>,
) -> Result<Provenance> {
    provenance_hashing(opts, files, tokenizer_path, template, &|_| true)
}

/// [`provenance`], hashing only the inputs `hash` picks (a shard hashes its own); the others
/// have an empty sha256, filled in by the merge.
pub fn provenance_hashing(
    opts: &PrepareOptions,
    files: &ModelFiles,
    tokenizer_path: &Path,
    template: Option<&ChatTemplate>,
    hash: &dyn Fn(usize) -> bool,
) -> Result<Provenance> {
    let inputs = opts
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            // The user's file; for a URL, the copy fetched of it.
            let path = match input.origin.is_file() {
                true => input.origin.as_path(),
                false => input.path.as_path(),
            };
            let (size, sha256) = match hash(i) {
                true => sha256_file(path)?,
                false => (fs_err::metadata(path)?.len(), String::new()),
            };
            Ok(InputDigest {
                path: input.origin.display().to_string(),
                size,
                sha256,
            })
        })
        .collect::<Result<_>>()?;
    let digests = |paths: &mut dyn Iterator<Item = &Path>| -> Result<Vec<InputDigest>> {
        paths
            .map(|path| {
                let (size, sha256) = sha256_file(path)?;
                Ok(InputDigest {
                    path: path.display().to_string(),
                    size,
                    sha256,
                })
            })
            .collect()
    };
    let body = ProvenanceBody {
        ftx_version: crate::version().to_string(),
        artifact_version: ARTIFACT_VERSION,
        inputs,
        eval_files: digests(&mut opts.settings.decontaminate.iter().map(|p| p.as_path()))?,
        tokenizer: TokenizerDigest {
            path: tokenizer_path.display().to_string(),
            sha256: files.tokenizer_sha256.clone(),
            specials: files.specials.clone(),
            add_bos_token: files.add_bos_token,
            add_eos_token: files.add_eos_token,
            generation_eos: files.generation_eos.clone(),
        },
        template: template.map(|t| TemplateDigest {
            sha256: sha256_bytes(t.source().as_bytes()),
        }),
        options: opts.settings.clone(),
    };
    Ok(Provenance::of(body))
}

impl Provenance {
    pub fn of(body: ProvenanceBody) -> Self {
        let hash = sha256_bytes(&serde_json::to_vec(&body).unwrap_or_default());
        Provenance { hash, body }
    }
}

/// The manifest of a complete artifact at `out_dir` whose provenance equals `hash`, if any. A
/// manifest that does not read as this ftx writes it is no hit: the artifact is rebuilt.
pub fn cached(out_dir: &Path, hash: &str) -> Result<Option<Manifest>> {
    let path = out_dir.join(MANIFEST);
    let Ok(text) = fs_err::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_str::<Manifest>(&text) else {
        return Ok(None);
    };
    if manifest.format != FORMAT || manifest.provenance != hash {
        return Ok(None);
    }
    // Every array the manifest names must still be there, byte for byte as it was written: a
    // truncated or edited file is rebuilt, never a cache hit.
    for split in manifest.splits.values() {
        for ((_, file), (_, check)) in split.files.iter().into_iter().zip(split.checks.iter()) {
            let path = out_dir.join(file);
            let same_size =
                fs_err::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == check.bytes);
            if !same_size
                || crate::store::digest(&path)
                    .ok()
                    .as_ref()
                    .map(|d| d.1.as_str())
                    != Some(check.xxh3.as_str())
            {
                return Ok(None);
            }
        }
    }
    Ok(Some(manifest))
}

pub fn build(p: &Provenance, results: Results) -> Manifest {
    let b = p.body.clone();
    Manifest {
        format: FORMAT.to_string(),
        provenance: p.hash.clone(),
        ftx_version: b.ftx_version,
        artifact_version: b.artifact_version,
        inputs: b.inputs,
        tokenizer: b.tokenizer,
        template: results.template,
        options: b.options,
        records_read: results.records_read,
        duplicates: results.duplicates,
        rejected: results.rejected,
        rejects: results.rejects,
        rejects_file: results.rejects_file,
        splits: results.splits,
        record_info: RecordInfo::default(),
    }
}

pub fn write(dir: &Path, manifest: &Manifest) -> Result<()> {
    let mut text = serde_json::to_string_pretty(manifest)
        .map_err(|e| crate::Error::Internal(format!("manifest: {e}")))?;
    text.push('\n');
    write_synced(&dir.join(MANIFEST), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sha256_matches_known_value() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs_err::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), (3, sha256_bytes(b"abc")));
    }

    fn tokenizer() -> TokenizerDigest {
        TokenizerDigest {
            path: "tok".into(),
            sha256: "t".into(),
            specials: SpecialTokens {
                eos: Some("</s>".into()),
                ..SpecialTokens::default()
            },
            add_bos_token: Some(true),
            add_eos_token: None,
            generation_eos: Vec::new(),
        }
    }

    #[test]
    fn provenance_body_serializes_as_the_hash_was_always_taken() {
        // The key of every artifact already written: the same bytes as the JSON literal that
        // built it before these structs.
        let body = ProvenanceBody {
            ftx_version: "0.1.0".into(),
            artifact_version: 1,
            inputs: vec![InputDigest {
                path: "a.jsonl".into(),
                size: 3,
                sha256: "s".into(),
            }],
            eval_files: Vec::new(),
            tokenizer: tokenizer(),
            template: Some(TemplateDigest { sha256: "x".into() }),
            options: Settings::default(),
        };
        let literal = json!({
            "ftx_version": "0.1.0",
            "artifact_version": 1,
            "inputs": [{"path": "a.jsonl", "size": 3, "sha256": "s"}],
            "tokenizer": {
                "path": "tok",
                "sha256": "t",
                "specials": {"bos": null, "eos": "</s>", "pad": null, "unk": null},
                "add_bos_token": true,
                "add_eos_token": null,
            },
            "template": {"sha256": "x"},
            "options": Settings::default(),
        });
        assert_eq!(
            serde_json::to_vec(&body).unwrap(),
            serde_json::to_vec(&literal).unwrap()
        );
        let none = ProvenanceBody {
            template: None,
            ..body
        };
        assert!(serde_json::to_string(&none)
            .unwrap()
            .contains(r#""template":null,"options""#));
    }

    fn manifest(dir: &Path) -> Manifest {
        let names = PerArray {
            tokens: "t.npy".to_string(),
            mask: "m.npy".to_string(),
            offsets: "o.npy".to_string(),
            records: "r.npy".to_string(),
        };
        let check = |f: &str| {
            let path = dir.join(f);
            fs_err::write(&path, b"xy").unwrap();
            let (bytes, xxh3) = crate::store::digest(&path).unwrap();
            fs_err::remove_file(&path).unwrap();
            FileCheck { bytes, xxh3 }
        };
        let checks = PerArray {
            tokens: check(&names.tokens),
            mask: check(&names.mask),
            offsets: check(&names.offsets),
            records: check(&names.records),
        };
        let split = SplitEntry {
            records: 1,
            tokens: 2,
            trained_tokens: 1,
            truncated: 0,
            lengths: None,
            files: names,
            checks,
        };
        let p = Provenance {
            hash: "h1".into(),
            body: ProvenanceBody {
                ftx_version: "0.1.0".into(),
                artifact_version: 1,
                inputs: Vec::new(),
                eval_files: Vec::new(),
                tokenizer: tokenizer(),
                template: None,
                options: Settings::default(),
            },
        };
        build(
            &p,
            Results {
                records_read: 1,
                duplicates: 0,
                rejected: 0,
                rejects: BTreeMap::new(),
                rejects_file: "rejects.jsonl".into(),
                template: "chatml".into(),
                splits: BTreeMap::from([(Split::Train, split)]),
            },
        )
    }

    #[test]
    fn manifest_fields_are_written_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_string(&manifest(dir.path())).unwrap();
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                .unwrap()
                .keys()
                .cloned()
                .collect();
        assert_eq!(
            keys,
            [
                "format",
                "provenance",
                "ftx_version",
                "artifact_version",
                "inputs",
                "tokenizer",
                "template",
                "options",
                "records_read",
                "duplicates",
                "rejected",
                "rejects",
                "rejects_file",
                "splits",
                "record_info"
            ]
        );
        assert!(text.contains(
            r#""train":{"records":1,"tokens":2,"trained_tokens":1,"truncated":0,"lengths":null,"files":{"tokens":"t.npy","mask":"m.npy","offsets":"o.npy","records":"r.npy"},"checks":{"tokens":{"bytes":2,"#
        ));
    }

    #[test]
    fn cache_needs_same_hash_and_every_file_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        write(dir.path(), &m).unwrap();
        assert!(cached(dir.path(), "h1").unwrap().is_none(), "files missing");
        for f in ["t.npy", "m.npy", "o.npy", "r.npy"] {
            fs_err::write(dir.path().join(f), b"xy").unwrap();
        }
        assert_eq!(cached(dir.path(), "h1").unwrap(), Some(m.clone()));
        assert!(cached(dir.path(), "h2").unwrap().is_none());
        fs_err::write(dir.path().join("m.npy"), b"x").unwrap();
        assert!(cached(dir.path(), "h1").unwrap().is_none(), "truncated");
        fs_err::write(dir.path().join("m.npy"), b"xz").unwrap();
        assert!(
            cached(dir.path(), "h1").unwrap().is_none(),
            "same size, other bytes"
        );
    }

    #[test]
    fn an_older_or_damaged_manifest_is_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        for f in ["t.npy", "m.npy", "o.npy", "r.npy"] {
            fs_err::write(dir.path().join(f), b"xy").unwrap();
        }
        let mut value = serde_json::to_value(&m).unwrap();
        value["added_by_a_later_ftx"] = json!(1);
        fs_err::write(dir.path().join(MANIFEST), value.to_string()).unwrap();
        assert_eq!(cached(dir.path(), "h1").unwrap(), Some(m), "unknown keys");
        let damaged = [
            ("splits", json!({"train": {"records": 1}})),
            ("splits", json!({"other": {}})),
            ("rejected", json!("three")),
            ("format", json!("something-else")),
        ];
        for (key, bad) in damaged {
            let mut v = value.clone();
            v[key] = bad;
            fs_err::write(dir.path().join(MANIFEST), v.to_string()).unwrap();
            assert!(cached(dir.path(), "h1").unwrap().is_none(), "{key}");
        }
        value.as_object_mut().unwrap().remove("checks");
        value["splits"]["train"]
            .as_object_mut()
            .unwrap()
            .remove("checks");
        fs_err::write(dir.path().join(MANIFEST), value.to_string()).unwrap();
        assert!(cached(dir.path(), "h1").unwrap().is_none(), "no checks");
        fs_err::write(dir.path().join(MANIFEST), "{\"provenance\": \"h1\"").unwrap();
        assert!(cached(dir.path(), "h1").unwrap().is_none(), "cut off");
    }
}
