//! Everything `prepare` can be told, in one place, with the defaults users get.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::encode::TrainOn;
use crate::formats::Format;
use crate::reader::{Input, TextUnit};
use crate::split::SplitSize;

/// What to do with a record longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

/// What `prepare` makes of its inputs: the settings a user gives as flags, in a `--config` file
/// or as Python keywords, with the defaults they get. Each one changes the artifact, and the
/// provenance key is this structure serialized (`manifest::provenance`), so a setting added here
/// is in the key with no other edit. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub format: Option<Format>,
    pub columns: Option<String>,
    pub text_unit: TextUnit,
    pub dedup: bool,
    pub near_dedup: bool,
    pub near_dedup_ngram: usize,
    pub near_dedup_permutations: usize,
    /// `None`: the bands that suit the threshold (`neardup::optimal_bands`).
    pub near_dedup_bands: Option<usize>,
    pub near_dedup_threshold: f64,
    /// Evaluation files whose long n-grams a training record must not share.
    pub decontaminate: Vec<PathBuf>,
    pub decontaminate_ngram: usize,
    pub decontaminate_threshold: usize,
    #[serde(deserialize_with = "split_size")]
    pub valid: SplitSize,
    #[serde(deserialize_with = "split_size")]
    pub test: SplitSize,
    pub seed: u64,
    pub max_length: Option<usize>,
    pub length_policy: LengthPolicy,
    pub train_on: TrainOn,
    /// Fail (and publish nothing) when more than this fraction of records is rejected.
    pub max_reject_ratio: Option<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            format: None,
            columns: None,
            text_unit: TextUnit::Line,
            dedup: true,
            near_dedup: false,
            near_dedup_ngram: 5,
            near_dedup_permutations: 128,
            near_dedup_bands: None,
            near_dedup_threshold: 0.8,
            decontaminate: Vec::new(),
            decontaminate_ngram: 13,
            decontaminate_threshold: 1,
            valid: SplitSize::Count(0),
            test: SplitSize::Count(0),
            seed: 0,
            max_length: None,
            length_policy: LengthPolicy::Drop,
            train_on: TrainOn::Assistant,
            max_reject_ratio: None,
        }
    }
}

/// A split size as users write it, `0.05` or `500` as a number or as text, or as the manifest
/// records it (`{"count": 500}`).
fn split_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SplitSize, D::Error> {
    let text = match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        v @ serde_json::Value::Object(_) => {
            return serde_json::from_value(v).map_err(serde::de::Error::custom)
        }
        other => {
            return Err(serde::de::Error::custom(format!(
                "{other} is neither a ratio in [0, 1) nor a whole number of records"
            )))
        }
    };
    SplitSize::parse(&text).map_err(serde::de::Error::custom)
}

/// One setting as the CLI and the Python API present it; the kinds are `flag` (a bool), `int`,
/// `ratio` (a float in [0, 1]), `split` (a ratio or a count), `choice`, `text` and `paths` (a
/// list of files; the flag is given once per file).
#[derive(Debug, Clone, Serialize)]
pub struct SettingInfo {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub choices: Vec<&'static str>,
    pub default: serde_json::Value,
}

/// The help text and kind of every field of `Settings`, in its order (a test checks they match).
const DESCRIPTIONS: &[(&str, &str, &str)] = &[
    (
        "format",
        "choice",
        "Force one input format (default: detected per record).",
    ),
    (
        "columns",
        "text",
        "Map other column names, e.g. instruction=question,output=answer.",
    ),
    (
        "text_unit",
        "choice",
        "A .txt input is one document per line, or per file.",
    ),
    (
        "dedup",
        "flag",
        "Exact-duplicate removal (the first copy is kept).",
    ),
    (
        "near_dedup",
        "flag",
        "Near-duplicate removal: MinHash LSH over word n-grams; the earliest record of a \
         cluster is kept, the others rejected as near_duplicate.",
    ),
    (
        "near_dedup_ngram",
        "int",
        "Words per shingle of near-dedup (lowercase letters and digits).",
    ),
    (
        "near_dedup_permutations",
        "int",
        "MinHash permutations of near-dedup (signature values per record).",
    ),
    (
        "near_dedup_bands",
        "int",
        "LSH bands of near-dedup (default: datasketch's choice for the threshold, 9 at 0.8).",
    ),
    (
        "near_dedup_threshold",
        "ratio",
        "Estimated Jaccard similarity from which a record is a near duplicate.",
    ),
    (
        "decontaminate",
        "paths",
        "Evaluation JSONL file(s): drop training records sharing long n-grams with them \
         (repeat the flag for more files).",
    ),
    (
        "decontaminate_ngram",
        "int",
        "Words per n-gram of decontamination (13, as GPT-3 and datatrove).",
    ),
    (
        "decontaminate_threshold",
        "int",
        "Distinct eval n-grams a record must share to be rejected as contaminated.",
    ),
    (
        "valid",
        "split",
        "Validation split: a ratio (0.05) or a count (500).",
    ),
    (
        "test",
        "split",
        "Test split: a ratio (0.05) or a count (500).",
    ),
    ("seed", "int", "Seed of the split."),
    ("max_length", "int", "Token limit per record."),
    (
        "length_policy",
        "choice",
        "What happens to a record over max_length.",
    ),
    ("train_on", "choice", "Which tokens carry loss."),
    (
        "max_reject_ratio",
        "ratio",
        "Fail, publishing nothing, above this ratio of rejects (near duplicates and \
         contaminated records not counted).",
    ),
];

impl Settings {
    /// Every setting with its default, help and choices: what the CLI flags, `--config` and the
    /// Python API are made from.
    pub fn describe() -> Vec<SettingInfo> {
        let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
        DESCRIPTIONS
            .iter()
            .map(|&(name, kind, help)| SettingInfo {
                name,
                kind,
                help,
                choices: match name {
                    "format" => Format::NAMES.iter().map(|(n, _)| *n).collect(),
                    "text_unit" => vec!["line", "file"],
                    "length_policy" => vec!["drop", "truncate", "error"],
                    "train_on" => vec!["assistant", "last", "all"],
                    _ => Vec::new(),
                },
                // A split size as users write it (`0.05`, `500`), not as the manifest does.
                default: match &defaults[name] {
                    serde_json::Value::Object(o) if kind == "split" => {
                        o.values().next().cloned().unwrap_or_default()
                    }
                    v => v.clone(),
                },
            })
            .collect()
    }

    /// The settings of `keys` laid over the defaults, or every problem found: each key alone
    /// (unknown, wrong type, not one of the choices, out of range), named with its value.
    pub fn from_keys(
        keys: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, Vec<Issue>> {
        let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
        let mut issues = Vec::new();
        for (key, value) in keys {
            let mut one = defaults.clone();
            one[key.as_str()] = value.clone();
            let problem = match serde_json::from_value::<Settings>(one) {
                Err(e) => Some(describe_error(key, &e.to_string())),
                Ok(s) => s.range_problem(key),
            };
            if let Some(allowed) = problem {
                issues.push(Issue {
                    key: key.clone(),
                    value: value.clone(),
                    allowed,
                });
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut all = defaults;
        for (key, value) in keys {
            all[key.as_str()] = value.clone();
        }
        let settings: Settings = serde_json::from_value(all).map_err(|e| {
            vec![Issue {
                key: String::new(),
                value: serde_json::Value::Null,
                allowed: e.to_string(),
            }]
        })?;
        // The one rule between two keys: the bands must fit in the permutations given.
        if let Some(allowed) = settings.range_problem("near_dedup_bands") {
            return Err(vec![Issue {
                key: "near_dedup_bands".into(),
                value: keys.get("near_dedup_bands").cloned().unwrap_or_default(),
                allowed,
            }]);
        }
        Ok(settings)
    }

    fn range_problem(&self, key: &str) -> Option<String> {
        match key {
            "max_length" if self.max_length == Some(0) => Some("a token count, 1 or more".into()),
            "near_dedup_ngram" | "decontaminate_ngram" | "decontaminate_threshold"
                if self.near_dedup_ngram == 0
                    || self.decontaminate_ngram == 0
                    || self.decontaminate_threshold == 0 =>
            {
                Some("a whole number, 1 or more".into())
            }
            "near_dedup_permutations" if !(1..=1024).contains(&self.near_dedup_permutations) => {
                Some("a number of permutations from 1 to 1024".into())
            }
            "near_dedup_bands"
                if self
                    .near_dedup_bands
                    .is_some_and(|b| b == 0 || b > self.near_dedup_permutations) =>
            {
                Some(format!(
                    "a number of bands from 1 to near_dedup_permutations ({})",
                    self.near_dedup_permutations
                ))
            }
            "near_dedup_threshold"
                if !(self.near_dedup_threshold > 0.0 && self.near_dedup_threshold <= 1.0) =>
            {
                Some("a similarity above 0, at most 1".into())
            }
            "max_reject_ratio"
                if self
                    .max_reject_ratio
                    .is_some_and(|r| !(0.0..=1.0).contains(&r)) =>
            {
                Some("a ratio from 0 to 1".into())
            }
            _ => None,
        }
    }
}

/// serde's message for one key, said as what the key allows.
fn describe_error(key: &str, message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    match message.starts_with("unknown field ") {
        true => {
            let known: Vec<&str> = DESCRIPTIONS.iter().map(|d| d.0).collect();
            let near = known
                .iter()
                .map(|k| (k, edit_distance(k, key)))
                .min_by_key(|&(_, d)| d)
                .filter(|&(_, d)| d <= 3);
            let hint = near.map_or(String::new(), |(k, _)| format!("did you mean {k:?}? "));
            format!("unknown key; {hint}known keys: {}", known.join(", "))
        }
        // serde's Rust type names, said as numbers.
        false if message.ends_with("expected u64") || message.ends_with("expected usize") => {
            format!("{message}: a whole number, 0 or more")
        }
        false if message.ends_with("expected f64") => format!("{message}: a number"),
        false => message.to_string(),
    }
}

/// Edit distance, for "did you mean" (keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// One configuration problem: which key, what was given, what is allowed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub key: String,
    pub value: serde_json::Value,
    pub allowed: String,
}

/// A prepare run: its inputs and output, where the tokenizer and template come from, how it
/// runs (none of which changes the artifact's bytes), and its `settings`.
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
    pub settings: Settings,
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
            settings: Settings::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    fn keys(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn every_field_is_described_in_order_and_every_choice_is_accepted() {
        let fields: Vec<String> = keys(serde_json::to_value(Settings::default()).unwrap())
            .keys()
            .cloned()
            .collect();
        let described: Vec<&str> = Settings::describe().iter().map(|s| s.name).collect();
        assert_eq!(fields, described);
        for s in Settings::describe() {
            for choice in &s.choices {
                let one = keys(json!({ s.name: choice }));
                assert!(Settings::from_keys(&one).is_ok(), "{} = {choice}", s.name);
            }
            // serde names what the enum allows when refused: exactly the listed choices.
            if !s.choices.is_empty() && s.name != "format" {
                let err = Settings::from_keys(&keys(json!({ s.name: "nope" }))).unwrap_err();
                for choice in &s.choices {
                    assert!(err[0].allowed.contains(&format!("`{choice}`")), "{err:?}");
                }
                assert_eq!(err[0].allowed.matches('`').count(), 2 * s.choices.len() + 2);
            }
        }
    }

    #[test]
    fn the_defaults_round_trip_and_are_what_users_get() {
        let s = Settings::from_keys(&Map::new()).unwrap();
        assert_eq!(s, Settings::default());
        let back: Settings = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let given = Settings::from_keys(&keys(json!({
            "format": "openai", "valid": 0.05, "test": "500", "dedup": false, "seed": 3,
        })))
        .unwrap();
        assert_eq!(given.format, Some(Format::Messages));
        assert_eq!(given.valid, SplitSize::Ratio(0.05));
        assert_eq!(given.test, SplitSize::Count(500));
        assert!(!given.dedup);
    }

    #[test]
    fn every_problem_is_named_at_once_with_its_key_and_value() {
        let err = Settings::from_keys(&keys(json!({
            "max_lenght": 5, "seed": -1, "valid": 1.5, "train_on": "user",
            "max_length": 0, "max_reject_ratio": 2.0, "format": "csv",
        })))
        .unwrap_err();
        let by_key = |k: &str| err.iter().find(|i| i.key == k).unwrap().allowed.clone();
        assert_eq!(err.len(), 7, "{err:?}");
        assert!(by_key("max_lenght").contains("did you mean \"max_length\""));
        assert!(by_key("seed").contains("-1"));
        assert!(by_key("valid").contains("ratio in [0, 1)"));
        assert!(by_key("train_on").contains("`assistant`"));
        assert!(by_key("max_length").contains("1 or more"));
        assert!(by_key("max_reject_ratio").contains("from 0 to 1"));
        assert!(by_key("format").contains("sharegpt"));
        assert_eq!(
            err.iter().find(|i| i.key == "seed").unwrap().value,
            json!(-1)
        );
    }
}
