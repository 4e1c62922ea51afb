//! Byte-level BPE straight from the text to ids and byte offsets, for the tokenizers whose
//! pre-tokenizer is ftx's [`Gpt4Split`] scanner (Llama 3, Qwen 2 to 3).
//!
//! The library's `encode` gives every pre-tokenized piece its own `NormalizedString` (a copy
//! of the text and an alignment per byte), rewrites it byte by byte into ByteLevel characters,
//! gives every token a `String` of its own and collects an `Encoding` of nine vectors. Half of
//! `ftx prepare`'s time went into those allocations. This path splits off added tokens with
//! the same Aho-Corasick search, splits with the same scanner, maps bytes to ByteLevel
//! characters into one reused buffer, takes a whole piece from the vocabulary when the model
//! ignores merges (what the model itself does first) and hands any other piece to the model's
//! own `tokenize`. It is taken only for the shapes it reproduces (see [`Direct::new`]); tests
//! compare its ids and offsets with the library's on random strings and real datasets.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use tokenizers::tokenizer::pattern::Pattern;
use tokenizers::{Model, ModelWrapper, NormalizerWrapper, Offsets, PostProcessorWrapper};
use unicode_normalization_alignments::is_nfc;

use super::pretokenize::{FtxPreTokenizer, Gpt4Split};
use super::Tokenizer;

/// GPT-2's bytes-to-unicode table, as the library's ByteLevel builds it: printable bytes stand
/// for themselves, the others for the characters from U+0100 on, in byte order.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[usize::from(b)] = if printable {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    table
}

/// The direct path of one tokenizer.
#[derive(Debug)]
pub struct Direct {
    /// Added tokens, searched leftmost-longest as the library does; `ids[pattern]`.
    added: Option<AhoCorasick>,
    ids: Vec<u32>,
    /// Whether the model takes a piece found whole in its vocabulary as one token.
    whole_words: bool,
    /// The normalizer is NFC: the path then only takes texts already in NFC, which it leaves
    /// alone.
    nfc: bool,
    chars: [char; 256],
}

impl Direct {
    /// The direct path when the tokenizer has the shape it reproduces exactly, else `None`:
    /// - no normalizer, or NFC (then for texts already in NFC only);
    /// - the [`Gpt4Split`] pre-tokenizer (split, then ByteLevel without a prefix space);
    /// - a BPE model without dropout;
    /// - added tokens that strip nothing, need no word boundary and match the raw text;
    /// - no post-processor that trims offsets (`encode` without special tokens runs it).
    pub fn new(tokenizer: &Tokenizer) -> Option<Self> {
        let nfc = match tokenizer.get_normalizer() {
            None => false,
            Some(NormalizerWrapper::NFC(_)) => true,
            Some(_) => return None,
        };
        if !matches!(
            tokenizer.get_pre_tokenizer(),
            Some(FtxPreTokenizer::Gpt4 { .. })
        ) {
            return None;
        }
        let ModelWrapper::BPE(bpe) = tokenizer.get_model() else {
            return None;
        };
        if bpe.dropout.is_some_and(|p| p > 0.0) {
            return None;
        }
        if !tokenizer.get_post_processor().is_none_or(keeps_offsets) {
            return None;
        }
        if tokenizer.get_encode_special_tokens() {
            return None;
        }
        let mut added: Vec<_> = tokenizer.get_added_tokens_decoder().into_iter().collect();
        added.sort_by_key(|(id, _)| *id);
        if added.iter().any(|(_, t)| {
            t.single_word || t.lstrip || t.rstrip || t.normalized || t.content.is_empty()
        }) {
            return None;
        }
        let ids = added.iter().map(|(id, _)| *id).collect();
        let added = if added.is_empty() {
            None
        } else {
            let search = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(added.iter().map(|(_, t)| t.content.as_str()))
                .ok()?;
            Some(search)
        };
        Some(Self {
            added,
            ids,
            // Dropout above 0 was refused: the model takes its whole-word shortcut.
            whole_words: bpe.ignore_merges,
            nfc,
            chars: byte_chars(),
        })
    }

    /// Whether `text` takes this path.
    pub fn takes(&self, text: &str) -> bool {
        !self.nfc || text.is_ascii() || is_nfc(text)
    }

    /// Appends the ids of `text` and, when asked, their byte offsets in `text`: what the
    /// library's `encode(text, false)` gives. The caller checks [`Direct::takes`] first.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        text: &str,
        ids: &mut Vec<u32>,
        offsets: Option<&mut Vec<Offsets>>,
    ) -> tokenizers::Result<()> {
        let Some(FtxPreTokenizer::Gpt4 { split, .. }) = tokenizer.get_pre_tokenizer() else {
            return Err("the direct path needs ftx's split pre-tokenizer".into());
        };
        let mut out = Out {
            model: tokenizer.get_model(),
            text,
            ids,
            offsets,
            mapped: String::new(),
            back: Vec::new(),
        };
        let mut at = 0;
        if let Some(added) = &self.added {
            for m in added.find_iter(text) {
                self.stretch(split, &mut out, at, m.start())?;
                out.ids.push(self.ids[m.pattern().as_usize()]);
                if let Some(o) = out.offsets.as_deref_mut() {
                    o.push((m.start(), m.end()));
                }
                at = m.end();
            }
        }
        self.stretch(split, &mut out, at, text.len())
    }

    /// Tokens of `text[from..to]`, a stretch without added tokens.
    fn stretch(
        &self,
        split: &Gpt4Split,
        out: &mut Out<'_>,
        from: usize,
        to: usize,
    ) -> tokenizers::Result<()> {
        if from == to {
            return Ok(());
        }
        for ((a, b), _) in split.find_matches(&out.text[from..to])? {
            if a < b {
                self.piece(out, from + a, from + b)?;
            }
        }
        Ok(())
    }

    /// Tokens of the piece `text[a..b]`.
    fn piece(&self, out: &mut Out<'_>, a: usize, b: usize) -> tokenizers::Result<()> {
        let bytes = &out.text.as_bytes()[a..b];
        out.mapped.clear();
        out.mapped
            .extend(bytes.iter().map(|&byte| self.chars[usize::from(byte)]));
        if self.whole_words {
            if let Some(id) = out.model.token_to_id(&out.mapped) {
                out.ids.push(id);
                if let Some(o) = out.offsets.as_deref_mut() {
                    o.push((a, b));
                }
                return Ok(());
            }
        }
        let tokens = out.model.tokenize(&out.mapped)?;
        let Some(o) = out.offsets.as_deref_mut() else {
            out.ids.extend(tokens.iter().map(|t| t.id));
            return Ok(());
        };
        // Each mapped byte's original character, as ByteLevel's alignments give it: every
        // byte of a multi-byte character stands for the whole character.
        out.back.clear();
        for (start, c) in out.text[a..b].char_indices() {
            let (lo, hi) = (a + start, a + start + c.len_utf8());
            for &byte in &out.text.as_bytes()[lo..hi] {
                let width = self.chars[usize::from(byte)].len_utf8();
                out.back.extend(std::iter::repeat_n((lo, hi), width));
            }
        }
        for t in tokens {
            out.ids.push(t.id);
            let (s, e) = t.offsets;
            o.push((out.back[s].0, out.back[e - 1].1));
        }
        Ok(())
    }
}

/// One text being encoded: where its tokens go, and buffers reused across its pieces.
struct Out<'a> {
    model: &'a ModelWrapper,
    text: &'a str,
    ids: &'a mut Vec<u32>,
    offsets: Option<&'a mut Vec<Offsets>>,
    /// The piece in ByteLevel characters.
    mapped: String,
    /// The original character of each byte of `mapped`.
    back: Vec<Offsets>,
}

/// Whether a post-processor leaves the offsets of `encode(text, false)` as the model gave them.
fn keeps_offsets(p: &PostProcessorWrapper) -> bool {
    match p {
        PostProcessorWrapper::ByteLevel(b) => !b.trim_offsets,
        PostProcessorWrapper::Template(_) => true,
        PostProcessorWrapper::Sequence(s) => s.as_ref().iter().all(keeps_offsets),
        _ => false,
    }
}
