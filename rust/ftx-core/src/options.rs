//! Everything `prepare` can be told, in one place, with the defaults users get.

use std::path::PathBuf;

use serde::Serialize;

use crate::encode::TrainOn;
use crate::formats::Format;
use crate::reader::{Input, TextUnit};
use crate::split::SplitSize;

/// What to do with a record longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthPolicy {
    /// Reject it (code `too_long`).
    #[default]
    Drop,
    /// Keep the first `max_length` tokens (the prompt comes first, so the completion is cut),
    /// as long as at least one trained token is left.
    Truncate,
    /// Stop the run, naming the record.
    Error,
}

impl LengthPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "drop" => Some(Self::Drop),
            "truncate" => Some(Self::Truncate),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub inputs: Vec<Input>,
    pub out_dir: PathBuf,
    /// A Hugging Face / mlx-lm model folder (tokenizer.json, tokenizer_config.json, ...).
    pub model_dir: Option<PathBuf>,
    /// A tokenizer.json that overrides the model folder's.
    pub tokenizer: Option<PathBuf>,
    /// A template file, or the name of a template shipped with ftx.
    pub chat_template: Option<String>,
    pub format: Option<Format>,
    pub columns: Option<String>,
    pub text_unit: TextUnit,
    pub dedup: bool,
    pub valid: SplitSize,
    pub test: SplitSize,
    pub seed: u64,
    pub max_length: Option<usize>,
    pub length_policy: LengthPolicy,
    pub train_on: TrainOn,
    /// Fail (and publish nothing) when more than this fraction of records is rejected.
    pub max_reject_ratio: Option<f64>,
    /// Worker threads; `None` reads `FTX_NUM_THREADS`, else all cores.
    pub threads: Option<usize>,
    /// Rebuild even when the artifact on disk has the same provenance.
    pub force: bool,
}

impl PrepareOptions {
    pub fn new(inputs: Vec<Input>, out_dir: PathBuf) -> Self {
        PrepareOptions {
            inputs,
            out_dir,
            model_dir: None,
            tokenizer: None,
            chat_template: None,
            format: None,
            columns: None,
            text_unit: TextUnit::Line,
            dedup: true,
            valid: SplitSize::Ratio(0.0),
            test: SplitSize::Ratio(0.0),
            seed: 0,
            max_length: None,
            length_policy: LengthPolicy::Drop,
            train_on: TrainOn::Assistant,
            max_reject_ratio: None,
            threads: None,
            force: false,
        }
    }
}

/// The size of the worker pool: the explicit option, else `FTX_NUM_THREADS`, else all cores.
pub fn num_threads(explicit: Option<usize>) -> usize {
    explicit
        .or_else(|| {
            std::env::var("FTX_NUM_THREADS")
                .ok()
                .and_then(|v| v.trim().parse().ok())
        })
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
