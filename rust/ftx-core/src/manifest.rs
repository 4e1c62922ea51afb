//! `manifest.json`: what an artifact holds, what made it, and a provenance hash over all of it
//! that decides whether a later run may reuse it.

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::encode::ModelFiles;
use crate::error::Result;
use crate::options::PrepareOptions;
use crate::store::write_synced;
use crate::template::ChatTemplate;

/// Bumped whenever the artifact layout changes incompatibly.
pub const ARTIFACT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";

/// The inputs to an artifact, and their hash.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub hash: String,
    pub body: Value,
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
    let mut inputs = Vec::new();
    for input in &opts.inputs {
        let (size, sha) = sha256_file(&input.origin)?;
        inputs.push(json!({
            "path": input.origin.display().to_string(),
            "size": size,
            "sha256": sha,
        }));
    }
    let body = json!({
        "ftx_version": crate::version(),
        "artifact_version": ARTIFACT_VERSION,
        "inputs": inputs,
        // What tokenizer_config.json changes in the output is part of the key: the special
        // tokens templates write and the BOS/EOS that plain text gets.
        "tokenizer": {
            "path": tokenizer_path.display().to_string(),
            "sha256": files.tokenizer_sha256,
            "specials": files.specials,
            "add_bos_token": files.add_bos_token,
            "add_eos_token": files.add_eos_token,
        },
        "template": template.map(|t| json!({
            "sha256": sha256_bytes(t.source().as_bytes()),
        })),
        "options": opts.settings,
    });
    let hash = sha256_bytes(&serde_json::to_vec(&body).unwrap_or_default());
    Ok(Provenance { hash, body })
}

/// The manifest of a complete artifact at `out_dir` whose provenance equals `hash`, if any.
pub fn cached(out_dir: &Path, hash: &str) -> Result<Option<Value>> {
    let path = out_dir.join(MANIFEST);
    let Ok(text) = fs_err::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_str::<Value>(&text) else {
        return Ok(None);
    };
    if manifest["provenance"] != hash {
        return Ok(None);
    }
    // Every array the manifest names must still be there, byte for byte as it was written: a
    // truncated or edited file is rebuilt, never a cache hit.
    let splits = manifest["splits"].as_object().cloned().unwrap_or_default();
    for split in splits.values() {
        for name in ["tokens", "mask", "offsets"] {
            let (Some(file), Some(bytes), Some(xxh3)) = (
                split["files"][name].as_str(),
                split["checks"][name]["bytes"].as_u64(),
                split["checks"][name]["xxh3"].as_str(),
            ) else {
                return Ok(None);
            };
            let path = out_dir.join(file);
            let same_size = fs_err::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == bytes);
            if !same_size
                || crate::store::digest(&path)
                    .ok()
                    .as_ref()
                    .map(|d| d.1.as_str())
                    != Some(xxh3)
            {
                return Ok(None);
            }
        }
    }
    Ok(Some(manifest))
}

pub fn build(p: &Provenance, results: Value) -> Value {
    let mut m = json!({
        "format": "ftx-prepared",
        "provenance": p.hash,
    });
    for (k, v) in p.body.as_object().into_iter().flatten() {
        m[k] = v.clone();
    }
    for (k, v) in results.as_object().into_iter().flatten() {
        m[k] = v.clone();
    }
    m
}

pub fn write(dir: &Path, manifest: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(manifest).unwrap_or_default();
    text.push('\n');
    write_synced(&dir.join(MANIFEST), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn cache_needs_same_hash_and_every_file_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let names = [("tokens", "t.npy"), ("mask", "m.npy"), ("offsets", "o.npy")];
        let mut checks = serde_json::Map::new();
        for (key, f) in names {
            let path = dir.path().join(f);
            fs_err::write(&path, b"xy").unwrap();
            let (bytes, xxh3) = crate::store::digest(&path).unwrap();
            checks.insert(key.into(), json!({"bytes": bytes, "xxh3": xxh3}));
            fs_err::remove_file(&path).unwrap();
        }
        let m = json!({"provenance": "h1", "splits": {"train": {"files": {
            "tokens": "t.npy", "mask": "m.npy", "offsets": "o.npy"}, "checks": checks}}});
        write(dir.path(), &m).unwrap();
        assert!(cached(dir.path(), "h1").unwrap().is_none(), "files missing");
        for (_, f) in names {
            fs_err::write(dir.path().join(f), b"xy").unwrap();
        }
        assert!(cached(dir.path(), "h1").unwrap().is_some());
        assert!(cached(dir.path(), "h2").unwrap().is_none());
        fs_err::write(dir.path().join("m.npy"), b"x").unwrap();
        assert!(cached(dir.path(), "h1").unwrap().is_none(), "truncated");
        fs_err::write(dir.path().join("m.npy"), b"xz").unwrap();
        assert!(
            cached(dir.path(), "h1").unwrap().is_none(),
            "same size, other bytes"
        );
    }
}
