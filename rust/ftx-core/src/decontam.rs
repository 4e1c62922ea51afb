//! Decontamination: training records that share long word n-grams with evaluation prompts or
//! answers are dropped (13-grams by default, as GPT-3's and datatrove's). Words are those of
//! near-dedup ([`crate::neardup::push_words`]): lowercase letters and digits, punctuation
//! stripped.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::neardup::{ngram_hash, push_words, Identity};
use crate::reader::{read_input, Input, RawKind, TextUnit};

/// The eval n-grams that decontamination looks for, each with the eval record it came from
/// first (its file's index among the eval files and its line).
#[derive(Debug, Default)]
pub struct EvalNgrams {
    pub n: usize,
    seen: HashMap<u64, (u32, u64), BuildHasherDefault<Identity>>,
}

impl EvalNgrams {
    pub fn new(n: usize) -> Self {
        EvalNgrams {
            n,
            seen: HashMap::default(),
        }
    }

    /// Adds the n-grams of one eval record; returns how many it had.
    pub fn add(&mut self, words: &[u64], file: u32, line: u64) -> usize {
        if words.len() < self.n {
            return 0;
        }
        for w in words.windows(self.n) {
            self.seen.entry(ngram_hash(w)).or_insert((file, line));
        }
        words.len() + 1 - self.n
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// How many distinct eval n-grams `words` contains, and the eval record of the first one.
    pub fn matches(&self, words: &[u64]) -> (usize, Option<(u32, u64)>) {
        if words.len() < self.n || self.seen.is_empty() {
            return (0, None);
        }
        let mut found: Vec<u64> = Vec::new();
        let mut first = None;
        for w in words.windows(self.n) {
            let h = ngram_hash(w);
            if let Some(&at) = self.seen.get(&h) {
                first.get_or_insert(at);
                found.push(h);
            }
        }
        found.sort_unstable();
        found.dedup();
        (found.len(), first)
    }
}

/// Reads every evaluation file (JSON lines, a JSON array, or `.txt` lines; gzip or zstd too):
/// each record's n-grams are those of all its string values in order (prompts, answers,
/// choices), keys left out. A record that is not valid JSON, or a file with no record of `n`
/// words, is an error naming the file and line.
pub fn load(files: &[PathBuf], n: usize) -> Result<EvalNgrams> {
    let mut eval = EvalNgrams::new(n);
    for (i, path) in files.iter().enumerate() {
        let mut problem: Option<String> = None;
        let mut found = 0usize;
        let mut words = Vec::new();
        read_input(&Input::plain(path), i as u32, TextUnit::Line, &mut |raw| {
            let at = |what: String| format!("{}:{}: {what}", path.display(), raw.line);
            let text = match std::str::from_utf8(&raw.bytes) {
                Ok(t) => t,
                Err(e) => {
                    problem = Some(at(format!("invalid UTF-8 at byte {}", e.valid_up_to())));
                    return false;
                }
            };
            words.clear();
            match raw.kind {
                RawKind::Oversized { bytes } => {
                    problem = Some(at(format!("a record of {bytes} bytes, too large to read")));
                    return false;
                }
                RawKind::Text => push_words(text, &mut words),
                RawKind::JsonLine { .. } | RawKind::JsonElement { .. } => {
                    match serde_json::from_str::<Value>(text) {
                        Ok(v) => strings(&v, &mut |s| push_words(s, &mut words)),
                        Err(e) => {
                            problem = Some(at(format!("not valid JSON ({e})")));
                            return false;
                        }
                    }
                }
            }
            found += eval.add(&words, i as u32, raw.line);
            true
        })?;
        if let Some(p) = problem {
            return Err(Error::Data(format!(
                "--decontaminate {p}; an evaluation file is JSON lines, a JSON array or text lines"
            )));
        }
        if found == 0 {
            return Err(Error::Data(format!(
                "--decontaminate {}: no record has {n} words, so nothing could match it; is it \
                 the evaluation file (or should --decontaminate-ngram be smaller)?",
                path.display()
            )));
        }
    }
    Ok(eval)
}

/// Every string value of a JSON value, in order (object keys left out).
fn strings(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| strings(x, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize, salt: &str) -> String {
        (0..n).map(|i| format!("w{i}{salt} ")).collect()
    }

    #[test]
    fn eval_ngrams_match_shared_thirteen_grams() {
        let mut eval = EvalNgrams::new(13);
        let mut q = Vec::new();
        push_words(&words(20, "q"), &mut q);
        assert_eq!(eval.add(&q, 0, 7), 8);
        let mut short = Vec::new();
        push_words("too short to count", &mut short);
        assert_eq!(eval.add(&short, 0, 8), 0);
        let mut train = Vec::new();
        push_words(&format!("Intro. {} outro", words(14, "q")), &mut train);
        assert_eq!(eval.matches(&train), (2, Some((0, 7))));
        let mut clean = Vec::new();
        push_words(&words(40, "z"), &mut clean);
        assert_eq!(eval.matches(&clean), (0, None));
    }

    #[test]
    fn an_eval_file_is_read_or_refused_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("eval.jsonl");
        let q = words(15, "q");
        fs_err::write(
            &good,
            format!(
                "{{\"id\": 1, \"turns\": [\"short\"]}}\n{{\"question\": \"{q}\", \"answer\": 4}}\n"
            ),
        )
        .unwrap();
        let eval = load(std::slice::from_ref(&good), 13).unwrap();
        assert_eq!(eval.len(), 3);
        let mut train = Vec::new();
        push_words(&q, &mut train);
        assert_eq!(eval.matches(&train), (3, Some((0, 2))));
        let bad = dir.path().join("bad.jsonl");
        fs_err::write(&bad, format!("{{\"q\": \"{q}\"}}\n{{oops\n")).unwrap();
        let err = load(&[good.clone(), bad.clone()], 13)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{}:2: not valid JSON", bad.display())),
            "{err}"
        );
        let short = dir.path().join("short.jsonl");
        fs_err::write(&short, "{\"q\": \"a few words\"}\n").unwrap();
        let err = load(&[short], 13).unwrap_err().to_string();
        assert!(err.contains("no record has 13 words"), "{err}");
        assert!(load(&[dir.path().join("missing.jsonl")], 13).is_err());
    }
}
