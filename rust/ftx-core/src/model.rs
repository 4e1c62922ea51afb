//! Which tokenizer and which chat template a run uses, from the model folder and the overrides.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::encode::{Encoder, ModelFiles};
use crate::error::{Error, Result};
use crate::manifest::sha256_bytes;
use crate::options::PrepareOptions;
use crate::template::{builtin, builtin_names, ChatTemplate};

/// Loads the tokenizer: `--tokenizer` if given, else the model folder's. Returns the encoder, what
/// the model folder says (template, special tokens) and the tokenizer's path for the manifest.
pub fn load(opts: &PrepareOptions) -> Result<(Encoder, ModelFiles, PathBuf)> {
    match (&opts.model_dir, &opts.tokenizer) {
        (Some(dir), None) => {
            if !dir.is_dir() {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such model folder"),
                ));
            }
            let (encoder, files) = Encoder::from_model_dir(dir)?;
            Ok((encoder, files, dir.clone()))
        }
        (dir, Some(tok)) => {
            let encoder = Encoder::from_file(tok)?;
            let mut files = match dir {
                Some(dir) if has_tokenizer(dir) => Encoder::from_model_dir(dir)?.1,
                _ => ModelFiles::default(),
            };
            files.tokenizer_sha256 = sha256_bytes(&read_decompressed(tok)?);
            Ok((encoder, files, tok.clone()))
        }
        (None, None) => Err(Error::Config(
            "no tokenizer: give a model folder (--model) or a tokenizer.json (--tokenizer)".into(),
        )),
    }
}

fn has_tokenizer(dir: &Path) -> bool {
    dir.join("tokenizer.json").exists() || dir.join("tokenizer.json.gz").exists()
}

fn read_decompressed(path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    crate::reader::open(path)?
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    Ok(out)
}

/// The chat template: `--chat-template` (a file, or a template shipped with ftx), else the
/// model's own. Returns it with a label saying which one was used.
pub fn template(
    opts: &PrepareOptions,
    files: &ModelFiles,
) -> Result<(Option<ChatTemplate>, String)> {
    let specials = files.specials.clone();
    if let Some(choice) = &opts.chat_template {
        let path = Path::new(choice);
        let (label, source) = if path.is_file() {
            (choice.clone(), fs_err::read_to_string(path)?)
        } else if let Some(src) = builtin(choice) {
            (format!("{choice} (shipped with ftx)"), src.to_string())
        } else {
            return Err(Error::Config(format!(
                "--chat-template {choice:?} is neither a file nor a shipped template ({})",
                builtin_names().join(", ")
            )));
        };
        return Ok((Some(ChatTemplate::new(&label, &source, specials)?), label));
    }
    match &files.template {
        Some(source) => {
            let label = match &opts.model_dir {
                Some(dir) => format!("the model's own ({})", dir.display()),
                None => "the model's own".to_string(),
            };
            Ok((Some(ChatTemplate::new(&label, source, specials)?), label))
        }
        None => Ok((None, "none (plain text only)".to_string())),
    }
}
