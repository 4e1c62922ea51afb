//! Sentinels: how message strings are marked before rendering, and how the marks are turned into
//! spans afterwards. The rules are explained in `docs/masking.md`.

use serde_json::Value as Json;

use super::probe::Learned;
use super::{Span, Tail};
use crate::conversation::{Message, Role};

/// The strings we wrap in sentinels: a message's content, its reasoning, and the name of each
/// tool call (numbered, so that a template that writes a call's name again, in the tool result's
/// header, can be told from the call itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Content,
    Reasoning,
    ToolName(u32),
}

impl Kind {
    pub(super) fn is_tool_call(self) -> bool {
        matches!(self, Kind::ToolName(_))
    }

    fn index(self) -> u32 {
        match self {
            Kind::Content => 0,
            Kind::Reasoning => 1,
            Kind::ToolName(call) => 2 + call.min(KINDS - 3),
        }
    }

    fn from_index(i: u32) -> Kind {
        match i {
            0 => Kind::Content,
            1 => Kind::Reasoning,
            n => Kind::ToolName(n - 2),
        }
    }
}

/// Sentinels are code points of Supplementary Private Use Area-B (plane 16): U+100000 +
/// (message * KINDS + kind) * 2 + (0 = start, 1 = end). Plane 16 is almost never in text (unlike
/// plane 15, where icon fonts live), and every plane-16 code point starts with the UTF-8 byte
/// 0xF4, so checking the input is one `memchr`. Tool calls past the sixth of a message share the
/// last kind: only the first of those is seen, the tail rule covers the rest.
const SENTINEL_BASE: u32 = 0x10_0000;
const KINDS: u32 = 8;
const MAX_SLOT: u32 = 0xFFFD; // U+10FFFE and U+10FFFF are noncharacters.
pub(super) const MAX_MESSAGES: usize = ((MAX_SLOT + 1) / (KINDS * 2)) as usize;

pub(super) fn is_sentinel(c: char) -> bool {
    (c as u32) >= SENTINEL_BASE
}

fn sentinel(message: usize, kind: Kind, end: bool) -> char {
    let slot = (message as u32 * KINDS + kind.index()) * 2 + u32::from(end);
    char::from_u32(SENTINEL_BASE + slot).unwrap_or(char::REPLACEMENT_CHARACTER)
}

pub(super) fn has_reserved(s: &str) -> bool {
    memchr::memchr(0xF4, s.as_bytes()).is_some()
}

pub(super) fn json_has_reserved(v: &Json) -> bool {
    match v {
        Json::String(s) => has_reserved(s),
        Json::Array(a) => a.iter().any(json_has_reserved),
        Json::Object(o) => o
            .iter()
            .any(|(k, v)| has_reserved(k) || json_has_reserved(v)),
        _ => false,
    }
}

/// `s` with the sentinels of (message, kind) around its non-whitespace core, so that templates
/// that `trim` or `strip` it keep both sentinels. Blank strings are left alone: templates test
/// them for emptiness.
pub(super) fn wrap(s: &str, message: usize, kind: Kind) -> String {
    let core = s.trim();
    if core.is_empty() {
        return s.to_string();
    }
    let lead = s.len() - s.trim_start().len();
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..lead]);
    out.push(sentinel(message, kind, false));
    out.push_str(core);
    out.push(sentinel(message, kind, true));
    out.push_str(&s[lead + core.len()..]);
    out
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Event {
    /// Byte offset in the stripped text.
    pos: usize,
    message: usize,
    kind: Kind,
    end: bool,
}

/// Removes the sentinels from `out` and says where each one was.
pub(super) fn strip_sentinels(out: &str, n_messages: usize) -> (String, Vec<Event>) {
    let mut text = String::with_capacity(out.len());
    let mut events = Vec::new();
    let mut copied = 0;
    let mut seen = vec![false; n_messages * (KINDS * 2) as usize];
    for at in memchr::memchr_iter(0xF4, out.as_bytes()) {
        let Some(c) = out.get(at..).and_then(|s| s.chars().next()) else {
            continue;
        };
        let slot = (c as u32).wrapping_sub(SENTINEL_BASE);
        let message = (slot / (KINDS * 2)) as usize;
        if message >= n_messages {
            continue; // Plane-16 text of the template itself: keep it.
        }
        text.push_str(&out[copied..at]);
        copied = at + c.len_utf8();
        // Only the first rendering of a string counts: a second one is the template quoting it
        // (a call's name again in the tool result's header), not the message's own output.
        if std::mem::replace(&mut seen[slot as usize], true) {
            continue;
        }
        let kind = Kind::from_index((slot / 2) % KINDS);
        events.push(Event {
            pos: text.len(),
            message,
            kind,
            end: slot % 2 == 1,
        });
    }
    text.push_str(&out[copied..]);
    (text, events)
}

/// Turns sentinel positions into spans: one per run of consecutive sentinels of the same message.
pub(super) fn spans(
    text: &str,
    events: &[Event],
    messages: &[Message],
    learned: &Learned,
) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut seen = vec![false; messages.len()];
    let mut i = 0;
    while i < events.len() {
        let m = events[i].message;
        let mut j = i;
        while j + 1 < events.len() && events[j + 1].message == m {
            j += 1;
        }
        let (first, last) = (events[i], events[j]);
        let prev = if i == 0 { 0 } else { events[i - 1].pos };
        let next = events.get(j + 1).map_or(text.len(), |e| e.pos);
        i = j + 1;
        let msg = &messages[m];
        let mut start = first.pos;
        if first.end {
            // The start sentinel was cut off (`content.split('</think>')[-1]`): what was rendered
            // is a suffix of the string, so align it from the end.
            start -= common_suffix(&text[prev..first.pos], core_of(msg, first.kind));
            start += leading_ws(&text[start..first.pos]);
        }
        let mut end = last.pos;
        if !last.end {
            end += common_prefix(&text[last.pos..next], core_of(msg, last.kind));
            end -= trailing_ws(&text[last.pos..end]);
        }
        let is_call = last.kind.is_tool_call();
        let mut tail = if is_call { Tail::ToolCall } else { Tail::Turn };
        // Nothing of the message reaches past the next turn's opening: a closing learned from a
        // probe, or the tail the encoder finishes, ends there.
        let limit = match msg.role {
            Role::Assistant => learned.next_opener(text, end, next).unwrap_or(next),
            _ => next,
        };
        if msg.role == Role::Assistant {
            if !std::mem::replace(&mut seen[m], true) {
                start = learned.turn_start(text, prev, first.pos, first.kind, start);
            }
            if let Some(close) = learned.tool_call_end(text, end, limit).filter(|_| is_call) {
                end = close;
                tail = Tail::Complete;
            }
        }
        if start < end {
            spans.push(Span {
                message: m,
                start,
                end,
                tail,
                limit,
            });
        }
    }
    spans
}

fn core_of(m: &Message, kind: Kind) -> &str {
    match kind {
        Kind::Content => m.content.trim(),
        Kind::Reasoning => m.reasoning.as_deref().unwrap_or("").trim(),
        // Names are rendered verbatim; there is nothing to align.
        Kind::ToolName(_) => "",
    }
}

pub(super) fn leading_ws(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

fn trailing_ws(s: &str) -> usize {
    s.len() - s.trim_end().len()
}

/// Length in bytes of the longest common suffix of `a` and `b`.
fn common_suffix(a: &str, b: &str) -> usize {
    a.chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

/// Length in bytes of the longest common prefix of `a` and `b`.
pub(super) fn common_prefix(a: &str, b: &str) -> usize {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}
