//! What `ftx inspect` asks of the tokenizer: a record's tokens back to text in spans that are
//! trained or not, and the lines of text repeated across records. The statistics themselves
//! are counts over the artifact's arrays (Python, NumPy); the raw-files path is
//! [`crate::pipeline::collect`].

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::options::PrepareOptions;
use rayon::prelude::*;
use serde::Serialize;

/// A stretch of a record's text, `trained` when its tokens are (mask 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub text: String,
    pub trained: bool,
}

/// A line of text and the number of records it occurs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineCount {
    pub line: String,
    pub records: u64,
}

/// The tokenizer `prepare` used, for turning ids back into text.
#[derive(Debug)]
pub struct Decoder {
    encoder: crate::encode::Encoder,
}

impl Decoder {
    /// The tokenizer of `opts`' model folder or `tokenizer.json`, loaded as `prepare` loads it.
    pub fn load(opts: &PrepareOptions) -> Result<Self> {
        let (encoder, _, _) = crate::model::load(opts)?;
        Ok(Decoder { encoder })
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.encoder
            .tokenizer()
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(format!("cannot decode token ids: {e}")))
    }

    /// The text of one record, cut where its mask changes. Each stretch is the growth of the
    /// decoded prefix, so a decoder that treats the first token apart (SentencePiece's leading
    /// space) reads every stretch as in the whole text; where a cut falls inside a character
    /// the stretch is decoded alone.
    pub fn segments(&self, ids: &[u32], mask: &[u8]) -> Result<Vec<Segment>> {
        if ids.len() != mask.len() {
            return Err(Error::Data(format!(
                "{} token ids but {} mask values",
                ids.len(),
                mask.len()
            )));
        }
        let mut out: Vec<Segment> = Vec::new();
        let mut prefix = String::new();
        let mut start = 0;
        while start < ids.len() {
            let trained = mask[start] != 0;
            let end = mask[start..]
                .iter()
                .position(|&m| (m != 0) != trained)
                .map_or(ids.len(), |n| start + n);
            let upto = self.decode(&ids[..end])?;
            let text = match upto.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.to_string(),
                None => self.decode(&ids[start..end])?,
            };
            prefix = upto;
            out.push(Segment { text, trained });
            start = end;
        }
        Ok(out)
    }

    /// The `top` lines (trimmed, not empty) that occur in the most records, each counted once
    /// per record and only when in two or more; special tokens end a line and are not part of
    /// one (`<|im_end|>` would glue itself to every reply's last line); ties by the line's text, so the answer is the
    /// same on any number of threads. Each part is a split's `(tokens, offsets)`: its records
    /// are `tokens[offsets[i]..offsets[i + 1]]`.
    pub fn repeated_lines(&self, parts: &[(&[u32], &[u64])], top: usize) -> Result<Vec<LineCount>> {
        let mut records = Vec::new();
        for (p, &(tokens, offsets)) in parts.iter().enumerate() {
            for (i, w) in offsets.windows(2).enumerate() {
                let (a, b) = (w[0] as usize, w[1] as usize);
                if a > b || b > tokens.len() {
                    return Err(Error::Data(format!(
                        "part {p}, record {i}: offsets {a}..{b} outside {} tokens",
                        tokens.len()
                    )));
                }
                records.push(&tokens[a..b]);
            }
        }
        let counts = records
            .into_par_iter()
            .map(|ids| -> Result<HashMap<String, u64>> {
                let mut pieces = Vec::new();
                for piece in ids.split(|&id| self.encoder.is_special(id)) {
                    if !piece.is_empty() {
                        pieces.push(self.decode(piece)?);
                    }
                }
                let lines: HashSet<&str> = pieces
                    .iter()
                    .flat_map(|p| p.lines())
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                Ok(lines.into_iter().map(|l| (l.to_string(), 1)).collect())
            })
            .try_reduce(HashMap::new, |mut a, b| {
                for (l, c) in b {
                    *a.entry(l).or_default() += c;
                }
                Ok(a)
            })?;
        let mut lines: Vec<LineCount> = counts
            .into_iter()
            .filter(|&(_, c)| c >= 2)
            .map(|(line, records)| LineCount { line, records })
            .collect();
        lines.sort_by(|x, y| y.records.cmp(&x.records).then_with(|| x.line.cmp(&y.line)));
        lines.truncate(top);
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn decoder(name: &str) -> Option<Decoder> {
        let dir = crate::template::tests::data_dir()?
            .join("tokenizers")
            .join(name);
        let mut opts = PrepareOptions::new(Vec::new(), PathBuf::new());
        opts.model_dir = Some(dir);
        Some(Decoder::load(&opts).unwrap())
    }

    fn ids(d: &Decoder, text: &str) -> Vec<u32> {
        d.encoder
            .tokenizer()
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec()
    }

    #[test]
    fn segments_cut_where_the_mask_changes_and_join_to_the_text() {
        let Some(d) = decoder("qwen3") else { return };
        let text = "<|im_start|>user\nQuelle heure? 日本<|im_end|>\n<|im_start|>assistant\nMidi é.<|im_end|>\n";
        let tokens = ids(&d, text);
        let reply = ids(
            &d,
            "<|im_start|>user\nQuelle heure? 日本<|im_end|>\n<|im_start|>assistant\n",
        )
        .len();
        let mut mask = vec![0u8; tokens.len()];
        mask[reply..tokens.len() - 1].fill(1);
        let segs = d.segments(&tokens, &mask).unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(
            (segs[1].text.as_str(), segs[1].trained),
            ("Midi é.<|im_end|>", true)
        );
        assert!(!segs[0].trained && !segs[2].trained);
        let joined: String = segs.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(joined, text);
        assert!(d.segments(&tokens, &mask[1..]).is_err());
        assert_eq!(d.segments(&[], &[]).unwrap(), vec![]);
    }

    #[test]
    fn a_sentencepiece_stretch_keeps_its_leading_space() {
        let Some(d) = decoder("mistral/hf_mistral_7b_v0.1") else {
            return;
        };
        let tokens = ids(&d, "Hello there world");
        let mut mask = vec![0u8; tokens.len()];
        mask[tokens.len() - 1] = 1;
        let segs = d.segments(&tokens, &mask).unwrap();
        let joined: String = segs.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(joined, d.decode(&tokens).unwrap());
        assert_eq!(segs.last().unwrap().text, " world");
    }

    #[test]
    fn repeated_lines_count_records_not_occurrences() {
        let Some(d) = decoder("qwen3") else { return };
        let records = [
            "Be brief.<|im_end|>\nWhat is 2+2?\nBe brief.",
            "Be brief.\nName a colour.",
            "  Be brief.  \n<|im_start|>What is 2+2?\n\n",
            "Once.\nBe brief.",
        ];
        let mut tokens = Vec::new();
        let mut offsets = vec![0u64];
        for r in &records[..3] {
            tokens.extend(ids(&d, r));
            offsets.push(tokens.len() as u64);
        }
        // The last record in a second split: counts add up across parts.
        let other = ids(&d, records[3]);
        let other_offsets = [0u64, other.len() as u64];
        let parts = [
            (&tokens[..], &offsets[..]),
            (&other[..], &other_offsets[..]),
        ];
        let lines = d.repeated_lines(&parts, 10).unwrap();
        let got: Vec<(&str, u64)> = lines.iter().map(|l| (l.line.as_str(), l.records)).collect();
        assert_eq!(got, [("Be brief.", 4), ("What is 2+2?", 2)]);
        assert_eq!(d.repeated_lines(&parts, 1).unwrap().len(), 1);
        assert!(d
            .repeated_lines(&[(&tokens[..], &[0, 999][..])], 1)
            .is_err());
    }
}
