//! A faster pre-tokenizer for the GPT-4 style split regex of the Llama-3 and Qwen tokenizers.
//!
//! Oniguruma's search is about a fifth of Llama-3 encoding time. [`Gpt4Split`] finds the
//! same matches with a byte scanner wherever the answer depends on ASCII characters only, and
//! asks the tokenizer's own regex for every match that needs a non-ASCII character's Unicode
//! class (`\p{L}`, `\p{N}`, `\s` and case folding would otherwise have to match Oniguruma's
//! tables exactly). Splitting, ByteLevel and BPE stay the library's.

use serde::Deserialize;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::tokenizer::pattern::Pattern;
use tokenizers::utils::SysRegex;
use tokenizers::{
    Offsets, PreTokenizedString, PreTokenizer, PreTokenizerWrapper, SplitDelimiterBehavior,
};

#[cfg(test)]
mod tests;

/// Llama 3's pattern (tiktoken's cl100k_base): digits in runs of up to three.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2, 2.5 and 3: the same with one digit per match.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer of an ftx tokenizer: the fast path when tokenizer.json holds exactly the
/// recognized `Sequence[Split, ByteLevel]`, else the library's pre-tokenizer unchanged.
#[derive(Debug, Deserialize)]
#[serde(from = "PreTokenizerWrapper")]
pub enum FtxPreTokenizer {
    Gpt4 {
        split: Gpt4Split,
        byte_level: ByteLevel,
    },
    Library(PreTokenizerWrapper),
}

impl From<PreTokenizerWrapper> for FtxPreTokenizer {
    fn from(wrapper: PreTokenizerWrapper) -> Self {
        let PreTokenizerWrapper::Sequence(seq) = wrapper else {
            return Self::Library(wrapper);
        };
        let parts: Vec<PreTokenizerWrapper> = seq.into_iter().collect();
        let library = |parts: Vec<PreTokenizerWrapper>| {
            Self::Library(PreTokenizerWrapper::Sequence(Sequence::new(parts)))
        };
        match <[PreTokenizerWrapper; 2]>::try_from(parts) {
            Ok([PreTokenizerWrapper::Split(split), PreTokenizerWrapper::ByteLevel(byte_level)]) => {
                match Gpt4Split::recognize(&split, &byte_level) {
                    Some(max_digits) => Self::Gpt4 {
                        split: Gpt4Split {
                            max_digits,
                            regex: split.regex,
                        },
                        byte_level,
                    },
                    None => library(vec![
                        PreTokenizerWrapper::Split(split),
                        PreTokenizerWrapper::ByteLevel(byte_level),
                    ]),
                }
            }
            Ok(parts) => library(parts.into()),
            Err(parts) => library(parts),
        }
    }
}

impl FtxPreTokenizer {
    #[cfg(test)]
    pub(crate) fn is_fast(&self) -> bool {
        matches!(self, Self::Gpt4 { .. })
    }
}

impl PreTokenizer for FtxPreTokenizer {
    fn pre_tokenize(&self, pretokenized: &mut PreTokenizedString) -> tokenizers::Result<()> {
        match self {
            // What the library's Sequence does with its Split and ByteLevel.
            Self::Gpt4 { split, byte_level } => {
                pretokenized.split(|_, normalized| {
                    normalized.split(split, SplitDelimiterBehavior::Isolated)
                })?;
                byte_level.pre_tokenize(pretokenized)
            }
            Self::Library(p) => p.pre_tokenize(pretokenized),
        }
    }
}

/// The split pattern as a scanner, with the tokenizer's compiled regex for what the scanner
/// leaves to it.
#[derive(Debug)]
pub struct Gpt4Split {
    /// 3 for `\p{N}{1,3}`, 1 for `\p{N}`.
    max_digits: usize,
    regex: SysRegex,
}

impl Gpt4Split {
    /// The digit-run length of a known pattern, compared as text: any other pattern, however
    /// close, keeps the regex.
    fn max_digits(pattern: &str) -> Option<usize> {
        match pattern {
            LLAMA3_PATTERN => Some(3),
            QWEN2_PATTERN => Some(1),
            _ => None,
        }
    }

    /// The digit-run length when `split` + `byte_level` are the known pre-tokenizer.
    fn recognize(split: &Split, byte_level: &ByteLevel) -> Option<usize> {
        if split.behavior != SplitDelimiterBehavior::Isolated
            || split.invert
            || byte_level.add_prefix_space
            || byte_level.use_regex
        {
            return None;
        }
        match &split.pattern {
            SplitPattern::Regex(p) => Self::max_digits(p),
            SplitPattern::String(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn new(pattern: &str) -> Option<Self> {
        let max_digits = Self::max_digits(pattern)?;
        let regex = SysRegex::new(pattern).ok()?;
        Some(Gpt4Split { max_digits, regex })
    }

    /// The end of the match that starts at `p`, or `None` when it depends on a non-ASCII
    /// character. Every character starts a match (it is a letter, a digit, a space or none of
    /// these), so matches tile the text and the match at `p` depends only on `s[p..]`.
    fn scan(&self, s: &[u8], p: usize) -> Option<usize> {
        let c0 = s[p];
        match class(s, p) {
            // `[^\r\n\p{L}\p{N}]?\p{L}+`: a letter cannot be the optional prefix.
            Class::Letter => letters(s, p),
            // `\p{N}{1,3}` or `\p{N}`.
            Class::Digit => {
                let mut e = p + 1;
                while e < p + self.max_digits {
                    match class(s, e) {
                        Class::Digit => e += 1,
                        Class::NonAscii => return None,
                        _ => break,
                    }
                }
                Some(e)
            }
            Class::Other => {
                if c0 == b'\'' {
                    if let Some(end) = contraction(s, p)? {
                        return Some(end);
                    }
                }
                match class(s, p + 1) {
                    Class::Letter => letters(s, p + 1),
                    Class::NonAscii => None,
                    // ` ?[^\s\p{L}\p{N}]+[\r\n]*` without the space.
                    _ => punctuation(s, p),
                }
            }
            Class::Space => {
                if c0 != b'\r' && c0 != b'\n' {
                    match class(s, p + 1) {
                        Class::Letter => return letters(s, p + 1),
                        Class::NonAscii => return None,
                        Class::Other if c0 == b' ' => return punctuation(s, p + 1),
                        _ => {}
                    }
                }
                whitespace(s, p)
            }
            Class::NonAscii | Class::End => None,
        }
    }
}

impl Pattern for &Gpt4Split {
    /// Matches as `&SysRegex` does: covering, contiguous, `((0, 0), false)` for an empty text.
    fn find_matches(&self, inside: &str) -> tokenizers::Result<Vec<(Offsets, bool)>> {
        if inside.is_empty() {
            return Ok(vec![((0, 0), false)]);
        }
        let s = inside.as_bytes();
        let mut out = Vec::with_capacity(s.len() / 3 + 1);
        // The regex search for what the scanner leaves, started at `base`; kept while such
        // matches follow each other (a run of CJK text), since each new search allocates.
        let mut regex = None;
        let mut regex_next = usize::MAX;
        let mut p = 0;
        while p < s.len() {
            if let Some(end) = self.scan(s, p) {
                out.push(((p, end), true));
                p = end;
                continue;
            }
            if regex_next != p {
                regex = None;
            }
            let (base, matches) =
                regex.get_or_insert_with(|| (p, self.regex.find_iter(&inside[p..])));
            // As `&SysRegex` handles a gap or the end; neither occurs with this pattern.
            let Some((start, end)) = matches.next() else {
                out.push(((p, s.len()), false));
                break;
            };
            let (start, end) = (*base + start, *base + end);
            if start > p {
                out.push(((p, start), false));
            }
            out.push(((start, end), true));
            p = end;
            regex_next = end;
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
    NonAscii,
    End,
}

/// The class of `s[i]` as Oniguruma sees ASCII: `\p{L}` is `[A-Za-z]`, `\p{N}` is `[0-9]`, `\s`
/// is `[\t\n\x0B\x0C\r ]`.
fn class(s: &[u8], i: usize) -> Class {
    match s.get(i) {
        None => Class::End,
        Some(b) if b.is_ascii_alphabetic() => Class::Letter,
        Some(b) if b.is_ascii_digit() => Class::Digit,
        Some(b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ') => Class::Space,
        Some(b) if b.is_ascii() => Class::Other,
        Some(_) => Class::NonAscii,
    }
}

/// `\p{L}+` from the letter at `i`, greedy: the whole run.
fn letters(s: &[u8], i: usize) -> Option<usize> {
    let mut e = i + 1;
    loop {
        match class(s, e) {
            Class::Letter => e += 1,
            Class::NonAscii => return None,
            _ => return Some(e),
        }
    }
}

/// `[^\s\p{L}\p{N}]+[\r\n]*` from the punctuation at `i`; nothing after it can make the greedy
/// runs give back.
fn punctuation(s: &[u8], i: usize) -> Option<usize> {
    let mut e = i + 1;
    loop {
        match class(s, e) {
            Class::Other => e += 1,
            Class::NonAscii => return None,
            _ => break,
        }
    }
    // A literal test: no other character is `\r` or `\n`.
    while matches!(s.get(e), Some(b'\r' | b'\n')) {
        e += 1;
    }
    Some(e)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at the apostrophe at `p`: `Some(None)` when it does not
/// match; `None` when a non-ASCII character would decide (U+017F folds to `s`).
fn contraction(s: &[u8], p: usize) -> Option<Option<usize>> {
    let lower = |i: usize| match s.get(i) {
        Some(b) if !b.is_ascii() => None,
        b => Some(b.map(u8::to_ascii_lowercase)),
    };
    let second = match lower(p + 1)? {
        Some(b's' | b't' | b'm' | b'd') => return Some(Some(p + 2)),
        Some(b'r' | b'v') => b'e',
        Some(b'l') => b'l',
        _ => return Some(None),
    };
    Some((lower(p + 2)? == Some(second)).then_some(p + 3))
}

/// The whitespace alternatives from the space at `p`, once the letter and punctuation ones
/// failed. The run is `[p, q)`:
/// - `\s*[\r\n]+` backtracks to the last `\r` or `\n` of the run and ends right after it;
/// - else `\s+(?!\S)` backtracks one character when a non-space follows (a run of one fails);
/// - else `\s+` takes that single character.
fn whitespace(s: &[u8], p: usize) -> Option<usize> {
    let mut q = p;
    let mut after_newline = None;
    loop {
        match class(s, q) {
            Class::Space => {
                if matches!(s[q], b'\r' | b'\n') {
                    after_newline = Some(q + 1);
                }
                q += 1;
            }
            // U+0085, U+00A0, U+2028... are `\s` too, and would extend the run.
            Class::NonAscii => return None,
            _ => break,
        }
    }
    Some(match after_newline {
        Some(e) => e,
        None if q == s.len() || q - p == 1 => q,
        None => q - 1,
    })
}
