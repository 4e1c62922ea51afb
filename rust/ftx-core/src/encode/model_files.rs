//! What a model folder says besides the tokenizer itself: the chat template, the special
//! tokens and the BOS/EOS settings, read as transformers reads them.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::Encoder;
use crate::template::SpecialTokens;
use crate::{Error, Result};

/// What a model folder says besides the tokenizer itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFiles {
    /// The chat template, from `chat_template.jinja`, else `chat_template.json`, else
    /// `tokenizer_config.json` (transformers' order).
    pub template: Option<String>,
    pub specials: SpecialTokens,
    /// sha256 of the (decompressed) tokenizer.json: the same tokenizer hashes the same whether
    /// it is stored gzipped or not.
    pub tokenizer_sha256: String,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    /// `eos_token_id` of `generation_config.json`, one id or a list (Llama 3's three, Qwen's
    /// two), sorted: generation stops at each, so each is an EOS the mask may train.
    pub generation_eos: Vec<u32>,
}

fn config_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {what}", path.display()))
}

/// Reads `path`, gunzipping it when it is gzipped (by content, not by name).
pub(super) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs_err::read(path)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    Ok(out)
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = fs_err::read(path)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| config_error(path, e))
}

/// A token in a config: `"<s>"` or `{"content": "<s>", ...}` (a serialized `AddedToken`).
pub(super) fn token_string(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` as a string, or as a list of `{name, template}` of which transformers uses
/// "default".
fn template_value(v: &Json, path: &Path) -> Result<Option<String>> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        Json::Array(items) => {
            let named = |n: &str| {
                items
                    .iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some(n))
            };
            match named("default")
                .and_then(|t| t.get("template"))
                .and_then(Json::as_str)
            {
                Some(s) => Ok(Some(s.to_string())),
                None => {
                    let names: Vec<&str> = items
                        .iter()
                        .filter_map(|t| t.get("name")?.as_str())
                        .collect();
                    Err(config_error(
                        path,
                        format!("several chat templates {names:?} and none named \"default\""),
                    ))
                }
            }
        }
        _ => Err(config_error(
            path,
            "chat_template is neither a string nor a list",
        )),
    }
}

/// `eos_token_id` of generation_config.json: an id or a list of ids (absent or null: none).
fn eos_ids(v: Option<&Json>, path: &Path) -> Result<Vec<u32>> {
    let items: Vec<&Json> = match v {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    let mut ids = items
        .into_iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| config_error(path, format!("eos_token_id {v} is not a token id")))
        })
        .collect::<Result<Vec<u32>>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

impl Encoder {
    /// Loads a model folder: `tokenizer.json` (or `.json.gz`), `tokenizer_config.json`,
    /// `special_tokens_map.json`, `chat_template.json`, `chat_template.jinja` and
    /// `generation_config.json`, each when present.
    pub fn from_model_dir(dir: &Path) -> Result<(Self, ModelFiles)> {
        let tok_path = ["tokenizer.json", "tokenizer.json.gz"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .ok_or_else(|| config_error(dir, "no tokenizer.json or tokenizer.json.gz"))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?.unwrap_or(Json::Null);
        let map = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Json::Null);
        let special =
            |key: &str| token_string(config.get(key)).or_else(|| token_string(map.get(key)));
        let specials = SpecialTokens {
            bos: special("bos_token"),
            eos: special("eos_token"),
            pad: special("pad_token"),
            unk: special("unk_token"),
        };
        let mut template = match config.get("chat_template") {
            Some(v) => template_value(v, &config_path)?,
            None => None,
        };
        let json_path = dir.join("chat_template.json");
        if let Some(v) = read_json(&json_path)? {
            if let Some(t) = v.get("chat_template") {
                template = template_value(t, &json_path)?.or(template);
            }
        }
        let jinja_path: PathBuf = dir.join("chat_template.jinja");
        if jinja_path.exists() {
            template = Some(fs_err::read_to_string(&jinja_path)?);
        }
        let generation_path = dir.join("generation_config.json");
        let generation_eos = match read_json(&generation_path)? {
            Some(v) => eos_ids(v.get("eos_token_id"), &generation_path)?,
            None => Vec::new(),
        };
        let add_bos_token = config.get("add_bos_token").and_then(Json::as_bool);
        let add_eos_token = config.get("add_eos_token").and_then(Json::as_bool);
        let bos = specials.bos.as_deref().zip(add_bos_token);
        let eos = specials.eos.as_deref().zip(add_eos_token);
        let (mut encoder, sha) = Self::load(&tok_path, bos, eos)?;
        let config_eos = specials
            .eos
            .as_deref()
            .and_then(|t| encoder.tokenizer.token_to_id(t));
        let mut stop: Vec<u32> = config_eos
            .into_iter()
            .chain(generation_eos.iter().copied())
            .filter(|&id| encoder.is_special(id))
            .collect();
        stop.sort_unstable();
        stop.dedup();
        encoder.stop_ids = stop;
        let files = ModelFiles {
            template,
            specials,
            tokenizer_sha256: sha,
            add_bos_token,
            add_eos_token,
            generation_eos,
        };
        Ok((encoder, files))
    }
}
