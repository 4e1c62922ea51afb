//! Tokenize a rendered record and build its loss mask from the template's spans. The rules are in
//! `docs/masking.md`.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::{
    DecoderWrapper, ModelWrapper, NormalizerWrapper, Offsets, PostProcessorWrapper, TokenizerImpl,
};

use crate::conversation::{Message, Role};
use crate::reject::{Reject, RejectCode};
use crate::template::{Rendered, Span, Tail};
use crate::{Error, Result};

mod direct;
mod model_files;
mod pretokenize;
#[cfg(test)]
mod tests;

use direct::Direct;
use model_files::read_maybe_gz;

pub use model_files::ModelFiles;
pub use pretokenize::FtxPreTokenizer;

/// The library's `Tokenizer` with ftx's pre-tokenizer, loaded from the same tokenizer.json.
pub type Tokenizer = TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    FtxPreTokenizer,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Distinct words whose merges the tokenizer keeps.
const WORD_CACHE: usize = 200_000;

/// A tokenizer plus what masking needs to know about its special tokens.
#[derive(Debug)]
pub struct Encoder {
    tokenizer: Tokenizer,
    /// The tokenizer's direct path, when it has one.
    direct: Option<Direct>,
    /// Ids of added tokens marked `special` (`<|im_end|>`, `<|eot_id|>`, `</s>`…), sorted.
    special_ids: Vec<u32>,
    /// The config's `eos_token` and `generation_config.json`'s `eos_token_id`s that are special
    /// tokens, sorted: what makes generation stop.
    stop_ids: Vec<u32>,
    /// What the post-processor puts around a text (`[<|begin_of_text|>]`, `[]`), after the
    /// config's `add_bos_token`/`add_eos_token` were applied.
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    /// Bytes of the longest token (how much text one token can cover), or `usize::MAX` where a
    /// normalizer may delete text, so no length in bytes bounds the count of tokens.
    max_token_bytes: usize,
}

/// Which tokens of a chat record are trained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    /// Every assistant message whose `train` flag is set.
    #[default]
    Assistant,
    /// Only the last assistant message (and only if its `train` flag is set).
    Last,
    /// Every token, prompt included.
    All,
}

impl TrainOn {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainOn::Assistant => "assistant",
            TrainOn::Last => "last",
            TrainOn::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "assistant" => Some(TrainOn::Assistant),
            "last" => Some(TrainOn::Last),
            "all" => Some(TrainOn::All),
            _ => None,
        }
    }
}

/// Token ids and their loss mask (1 = trained), of equal length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
}

impl Encoder {
    /// Loads a `tokenizer.json` (or a gzipped one).
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::load(path, None, None).map(|(enc, _)| enc)
    }

    fn load(
        path: &Path,
        bos: Option<(&str, bool)>,
        eos: Option<(&str, bool)>,
    ) -> Result<(Self, String)> {
        let bytes = read_maybe_gz(path)?;
        let sha = format!("{:x}", Sha256::digest(&bytes));
        let mut tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        // A tokenizer.json can carry truncation and padding settings; ftx does its own length
        // handling and must see every token.
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        // The library caches the merges of 10,000 distinct words, then stops adding, and later
        // words go through the merge loop each time they occur: on the 75,000-record benchmark
        // corpus a larger cache takes a fifth off Qwen3's CPU time (it has no whole-word
        // shortcut) and 5% off Llama 3's, with no change in peak RSS. Still bounded, so memory
        // does not grow with the input.
        let mut model = tokenizer.get_model().clone();
        model.resize_cache(WORD_CACHE);
        tokenizer.with_model(model);
        let mut special_ids: Vec<u32> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        special_ids.sort_unstable();
        let (mut prefix, mut suffix) = post_processor_tokens(&tokenizer)?;
        for (tok, list, at_start) in [(bos, &mut prefix, true), (eos, &mut suffix, false)] {
            let Some((tok, wanted)) = tok else { continue };
            let Some(id) = tokenizer.token_to_id(tok) else {
                continue;
            };
            let present = list.contains(&id);
            if wanted && !present {
                if at_start {
                    list.insert(0, id);
                } else {
                    list.push(id);
                }
            } else if !wanted {
                list.retain(|t| *t != id);
            }
        }
        let max_token_bytes = if normalizer_may_delete(&tokenizer) {
            usize::MAX
        } else {
            tokenizer
                .get_vocab(true)
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(1)
        };
        Ok((
            Encoder {
                max_token_bytes,
                direct: Direct::new(&tokenizer),
                tokenizer,
                special_ids,
                stop_ids: Vec::new(),
                prefix,
                suffix,
            },
            sha,
        ))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The most text bytes one token covers (`usize::MAX`: no bound).
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Whether `id` is an added token marked special (`<|im_end|>`, `</s>`).
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok()
    }

    /// Tokenizes a rendered chat record as transformers' `apply_chat_template(tokenize=True)`
    /// does (no special tokens added: the template writes its own BOS; special tokens in the
    /// text are parsed as such) and masks the messages `train_on` selects.
    pub fn encode_chat(
        &self,
        rendered: &Rendered,
        messages: &[Message],
        train_on: TrainOn,
    ) -> Result<Encoded, Reject> {
        let text = rendered.text.as_str();
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut offsets = Vec::with_capacity(text.len() / 3);
        self.encode_into(text, &mut ids, Some(&mut offsets))?;
        let offsets = offsets.as_slice();
        let mut mask = vec![0u8; ids.len()];
        let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
        let trained = |i: usize| {
            let m = &messages[i];
            m.role == Role::Assistant
                && m.train
                && (train_on == TrainOn::Assistant || Some(i) == last_assistant)
        };
        if train_on == TrainOn::All {
            mask.fill(1);
        } else {
            let mut found = vec![false; messages.len()];
            for (k, span) in rendered.spans.iter().enumerate() {
                if span.message >= messages.len() || !trained(span.message) {
                    continue;
                }
                found[span.message] = true;
                let next = rendered.spans.get(k + 1).map_or(text.len(), |s| s.start);
                let bound = next.min(span.limit);
                self.mark_span(text, &ids, offsets, span, bound, &mut mask);
            }
            if let Some(i) = (0..messages.len()).find(|&i| trained(i) && !found[i]) {
                return Err(Reject::new(
                    RejectCode::MaskNotFound,
                    format!(
                        "assistant message {i} is not in the rendered text \
                         (the template dropped or rewrote it)"
                    ),
                ));
            }
        }
        if !mask.contains(&1) {
            return Err(Reject::new(
                RejectCode::NothingToTrain,
                "no token is trained",
            ));
        }
        Ok(Encoded { ids, mask })
    }

    /// Appends what the library's `encode(text, false)` gives: the ids and, when asked, their
    /// byte offsets; through the direct path when it takes the text.
    fn encode_into(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        offsets: Option<&mut Vec<Offsets>>,
    ) -> Result<(), Reject> {
        if let Some(direct) = self.direct.as_ref().filter(|d| d.takes(text)) {
            return direct
                .encode(&self.tokenizer, text, ids, offsets)
                .map_err(tokenizer_reject);
        }
        match offsets {
            Some(o) => {
                let enc = self
                    .tokenizer
                    .encode(text, false)
                    .map_err(tokenizer_reject)?;
                ids.extend_from_slice(enc.get_ids());
                o.extend_from_slice(enc.get_offsets());
            }
            None => ids.extend_from_slice(
                self.tokenizer
                    .encode_fast(text, false)
                    .map_err(tokenizer_reject)?
                    .get_ids(),
            ),
        }
        Ok(())
    }

    /// Trains the tokens that overlap the span (as transformers' `char_to_token` does: from the
    /// token holding its first byte to the one holding its last), then the end of the turn.
    fn mark_span(
        &self,
        text: &str,
        ids: &[u32],
        offsets: &[(usize, usize)],
        span: &Span,
        bound: usize,
        mask: &mut [u8],
    ) {
        let first = offsets.partition_point(|o| o.1 <= span.start);
        let end = offsets.partition_point(|o| o.0 < span.end);
        if first >= end {
            return;
        }
        mask[first..end].fill(1);
        if span.tail == Tail::Complete {
            return;
        }
        // End of turn: up to and including the first special token after the span (and the EOS
        // right after it), over whitespace only (after an unclosed tool call, over the rest of
        // the call too), and never into the next message. Anything else first means the turn
        // has no end token.
        let blank = |j: usize| {
            let (a, b) = offsets[j];
            text.get(a..b).is_none_or(|s| s.trim().is_empty())
        };
        for j in end..ids.len() {
            let (a, _) = offsets[j];
            if a >= bound {
                // A call the template does not close before the next turn opens: the rest of
                // the call, up to that opening, is the message's.
                if span.tail == Tail::ToolCall {
                    if let Some(last) = (end..j).rev().find(|&k| !blank(k)) {
                        mask[end..=last].fill(1);
                    }
                }
                return;
            }
            if self.is_special(ids[j]) {
                // A turn that ends with two special tokens, the second being EOS
                // (`<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`, Phi-3's `<|end|><|endoftext|>`): the
                // model must also write the EOS, or it never learns to stop.
                let eos_next = ids
                    .get(j + 1)
                    .is_some_and(|n| self.stop_ids.binary_search(n).is_ok())
                    && ids[j] != ids[j + 1]
                    && offsets[j + 1].0 < bound;
                mask[end..=j + usize::from(eos_next)].fill(1);
                return;
            }
            if !blank(j) && span.tail != Tail::ToolCall {
                return;
            }
        }
    }

    /// Tokenizes a rendered prompt as `encode_chat` tokenizes a record (special tokens in the
    /// text parsed as such, none added): what generation starts from.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, Reject> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        self.encode_into(text, &mut ids, None)?;
        Ok(ids)
    }

    /// Tokenizes plain text for continued pretraining: every token is trained, and BOS/EOS are
    /// added as the tokenizer's post-processor does, corrected by the config's
    /// `add_bos_token`/`add_eos_token`.
    pub fn encode_text(&self, text: &str) -> Result<Encoded, Reject> {
        let mut ids = Vec::with_capacity(text.len() / 3 + self.prefix.len() + self.suffix.len());
        ids.extend_from_slice(&self.prefix);
        self.encode_into(text, &mut ids, None)?;
        if ids.len() == self.prefix.len() {
            return Err(Reject::new(
                RejectCode::NothingToTrain,
                "the text has no token",
            ));
        }
        ids.extend_from_slice(&self.suffix);
        let mask = vec![1; ids.len()];
        Ok(Encoded { ids, mask })
    }
}

fn tokenizer_reject(e: tokenizers::Error) -> Reject {
    Reject::new(RejectCode::TokenizerError, e.to_string())
}

/// The ids the post-processor adds before and after a single sequence, found by encoding one
/// probe text with and without special tokens.
fn post_processor_tokens(tok: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    let probe = "a";
    let err = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
    let with = tok.encode_fast(probe, true).map_err(err)?;
    let without = tok.encode_fast(probe, false).map_err(err)?;
    let (with, without) = (with.get_ids(), without.get_ids());
    let at = (0..=with.len().saturating_sub(without.len()))
        .find(|&k| with[k..].starts_with(without))
        .ok_or_else(|| Error::Tokenizer("the post-processor rewrites the text's tokens".into()))?;
    Ok((with[..at].to_vec(), with[at + without.len()..].to_vec()))
}

/// Whether the tokenizer's normalizer can delete text (strip, strip accents, BERT's cleaning, a
/// replacement by nothing), which would let many bytes make few tokens.
fn normalizer_may_delete(tokenizer: &Tokenizer) -> bool {
    let Some(normalizer) = tokenizer.get_normalizer() else {
        return false;
    };
    let Ok(json) = serde_json::to_value(normalizer) else {
        return true;
    };
    fn deletes(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(o) => {
                let kind = o.get("type").and_then(|t| t.as_str()).unwrap_or("");
                matches!(
                    kind,
                    "Strip" | "StripAccents" | "BertNormalizer" | "Precompiled"
                ) || (kind == "Replace" && o.get("content").and_then(|c| c.as_str()) == Some(""))
                    || o.values().any(deletes)
            }
            serde_json::Value::Array(a) => a.iter().any(deletes),
            _ => false,
        }
    }
    deletes(&json)
}
