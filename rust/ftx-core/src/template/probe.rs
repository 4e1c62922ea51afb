//! What ftx learns about a template once, when it is compiled, by rendering small probe
//! conversations: where an assistant turn starts, and how the template closes a tool call. Both
//! come from the template's own output, so no family needs a rule of its own.

use serde_json::json;

use super::spans::{common_prefix, leading_ws, Kind};
use super::{ChatTemplate, Tail};
use crate::conversation::{Message, Role, ToolCall};

#[derive(Debug, Default)]
pub(super) struct Learned {
    header: Option<Header>,
    /// The text that ends an assistant's tool call(s) (`</tool_call><|im_end|>`, `<|eot_id|>`,
    /// `<|call|>`, `</s>`), without the call's own JSON.
    tool_end: Option<String>,
    /// Texts that open a turn (`<|im_start|>`, `<|start_header_id|>user<|end_header_id|>`,
    /// `<｜User｜>`, `[INST]`): an assistant's trained tail never reaches one, so the token that
    /// opens the next turn is not trained even where the template writes no end token before it.
    openers: Vec<String>,
}

#[derive(Debug)]
struct Header {
    text: String,
    /// It is the generation prompt (or its start): everything after it is the model's output.
    /// Otherwise it is template text seen between a user message and the reply, and only tool
    /// calls (whose preamble the template writes) are extended back to it.
    exact: bool,
}

impl Learned {
    pub(super) fn header(&self) -> Option<&str> {
        self.header.as_ref().map(|h| h.text.as_str())
    }

    pub(super) fn tool_end(&self) -> Option<&str> {
        self.tool_end.as_deref()
    }

    /// Where an assistant message's first run starts: right after the nearest header between the
    /// previous message's output (`prev`) and the run's first sentinel, else `start` unchanged.
    pub(super) fn turn_start(
        &self,
        text: &str,
        prev: usize,
        first: usize,
        kind: Kind,
        start: usize,
    ) -> usize {
        let Some(h) = &self.header else { return start };
        if !h.exact && !kind.is_tool_call() {
            return start;
        }
        match text[prev..first].rfind(h.text.as_str()) {
            Some(k) if h.exact => prev + k + h.text.len(),
            Some(k) => {
                let after = prev + k + h.text.len();
                after + leading_ws(&text[after..first])
            }
            None => start,
        }
    }

    /// Where the first turn opener after `from` starts, before `next`.
    pub(super) fn next_opener(&self, text: &str, from: usize, next: usize) -> Option<usize> {
        let window = text.get(from..next)?;
        self.openers
            .iter()
            .filter_map(|o| window.find(o.as_str()))
            .min()
            .map(|k| from + k)
    }

    /// The end of the learned tool-call closing, searched after a run that ends in a tool call
    /// and before the next message's output.
    pub(super) fn tool_call_end(&self, text: &str, from: usize, next: usize) -> Option<usize> {
        let end = self.tool_end.as_deref()?;
        let k = text.get(from..next)?.find(end)?;
        Some(from + k + end.len())
    }
}

pub(super) fn learn(t: &ChatTemplate) -> Learned {
    Learned {
        header: header(t),
        tool_end: tool_end(t),
        openers: openers(t),
    }
}

fn user(c: &str) -> Message {
    Message::new(Role::User, c)
}

/// Two user/assistant exchanges, tried in turn: without a system message, then with one for
/// templates that need it.
fn two_turns() -> [Vec<Message>; 2] {
    let a = |c: &str| Message::new(Role::Assistant, c);
    let turns = || vec![user("Hi"), a("Hello"), user("Bye"), a("Ok")];
    let mut with_system = vec![Message::new(Role::System, "Sys")];
    with_system.extend(turns());
    [turns(), with_system]
}

/// The generation prompt (what `add_generation_prompt` adds), cut to the part history turns
/// also start with: Qwen3 adds `<think>` only to some turns, DeepSeek-R1 adds it to the prompt
/// only. Templates without a generation prompt (Mistral `[INST]`) use the text between a user
/// message and the reply (`[/INST]`), trimmed.
fn header(t: &ChatTemplate) -> Option<Header> {
    for conv in &two_turns() {
        let u = conv.len() - 4;
        let prompt = &conv[..=u];
        // What follows the user message, with and without the prompt. Not always one a prefix
        // of the other: Phi-3 writes EOS when there is no prompt (and `<|assistant|>` and `</s>`
        // share their `<`, hence `boundary`).
        let after_user = |gen: bool| {
            let r = t.render(prompt, &[], gen).ok()?;
            let end = r.spans.iter().rfind(|s| s.message == u)?.end;
            Some(r.text[end..].to_string())
        };
        let (Some(with), Some(without)) = (after_user(true), after_user(false)) else {
            continue;
        };
        let gen = &with[boundary(&with, common_prefix(&with, &without))..];
        let between = t.render(conv, &[], false).ok().and_then(|r| {
            let user_end = r.spans.iter().find(|s| s.message == u)?.end;
            let reply = r.spans.iter().find(|s| s.message == u + 1)?.start;
            Some(r.text.get(user_end..reply)?.to_string())
        });
        if gen.trim().is_empty() {
            let text = between?.trim().to_string();
            return (!text.is_empty()).then_some(Header { text, exact: false });
        }
        // The longest start of the prompt that a history turn also writes.
        let shared = between.as_deref().map_or(gen.len(), |b| {
            let n = b
                .char_indices()
                .map(|(i, _)| common_prefix(&b[i..], gen))
                .max()
                .unwrap_or(0);
            boundary(gen, n)
        });
        let text = if gen[..shared].trim().chars().count() >= 3 {
            &gen[..shared]
        } else {
            gen
        };
        return Some(Header {
            text: text.to_string(),
            exact: true,
        });
    }
    None
}

/// The texts that open a user turn and an assistant turn, and the start both share
/// (`<|im_start|>`, which also opens `tool` and `system` turns). A turn's opener is what the
/// template writes between the previous message and it, less what it writes after that message
/// when it ends the conversation (the previous turn's end).
fn openers(t: &ChatTemplate) -> Vec<String> {
    let found = two_turns().iter().find_map(|conv| {
        let n = conv.len();
        let full = t.render(conv, &[], false).ok()?;
        let cut = t.render(&conv[..n - 1], &[], false).ok()?;
        let end =
            |r: &super::Rendered, m: usize| Some(r.spans.iter().find(|s| s.message == m)?.end);
        let start = |m: usize| Some(full.spans.iter().find(|s| s.message == m)?.start);
        // What opens message `m`: the text before it, less the end the previous message has
        // when it is the last one (in `last`, from `from`).
        let opener = |m: usize, last: &str| -> Option<String> {
            let between = full.text.get(end(&full, m - 1)?..start(m)?)?;
            let turn_end = boundary(between, common_prefix(between, last));
            let o = between[turn_end..].trim();
            (!o.is_empty()).then(|| o.to_string())
        };
        let after_ok = full.text.get(end(&full, n - 1)?..)?;
        let after_bye = cut.text.get(end(&cut, n - 2)?..)?;
        Some((opener(n - 1, after_bye), opener(n - 2, after_ok)))
    });
    let Some((assistant, user)) = found else {
        return Vec::new();
    };
    let (Some(a), Some(u)) = (&assistant, &user) else {
        return assistant.into_iter().chain(user).collect();
    };
    // The end of a turn that is not the last can differ from the last one's (gpt-oss: `<|end|>`,
    // where the last has `<|return|>`) and so stay in front of the opener: both openers start
    // where the start they share does.
    match shared_start(a, u).or_else(|| shared_start(u, a)) {
        Some(shared) => [a, u]
            .iter()
            .filter_map(|o| o.find(shared).map(|k| o[k..].to_string()))
            .chain([shared.to_string()])
            .collect(),
        None => vec![a.clone(), u.clone()],
    }
}

/// The longest start of `a`, cut after a space or a closing bracket and at least 3 characters,
/// that `b` also writes.
fn shared_start<'a>(a: &'a str, b: &str) -> Option<&'a str> {
    let mut len = a.len();
    loop {
        let cut = boundary(a, len);
        let start = a[..cut].trim();
        if start.chars().count() < 3 {
            return None;
        }
        if b.contains(start) {
            return Some(start);
        }
        // Before the character that ended the cut, which may be a wide space.
        len = cut - a[..cut].chars().next_back().map_or(1, char::len_utf8);
    }
}

/// Renders a tool call as the last message, and followed by its result: the text both renders
/// share after the call's name is the rest of the call plus the template's closing. The part
/// after the call's arguments (after the last `}`, `]`, `"` or argument value) is the closing,
/// the same whatever the arguments are.
fn tool_end(t: &ChatTemplate) -> Option<String> {
    const VALUE: &str = "ftx_probe_value";
    let tools = [json!({"type": "function", "function": {
        "name": "ftx_probe", "description": "Probe.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}})];
    let mut call = Message::new(Role::Assistant, "");
    call.content_null = true;
    call.tool_calls.push(ToolCall {
        id: Some("ftxprobe1".into()), // Mistral wants 9 alphanumerics.
        name: "ftx_probe".into(),
        arguments: json!({"q": VALUE}),
        arguments_text: None,
    });
    let mut result = Message::new(Role::Tool, "ftx_probe_result");
    result.tool_call_id = Some("ftxprobe1".into());
    result.name = Some("ftx_probe".into());
    let convs = [
        vec![user("Hi"), call.clone(), result.clone()],
        vec![Message::new(Role::System, "Sys"), user("Hi"), call, result],
    ];
    for conv in &convs {
        let n = conv.len();
        let (Ok(last), Ok(followed)) = (
            t.render(&conv[..n - 1], &tools, false),
            t.render(conv, &tools, false),
        ) else {
            continue;
        };
        let tail = |r: &super::Rendered| {
            let k = r
                .spans
                .iter()
                .position(|s| s.message == n - 2 && s.tail == Tail::ToolCall)?;
            let until = r.spans.get(k + 1).map_or(r.text.len(), |s| s.start);
            Some(r.text[r.spans[k].end..until].to_string())
        };
        let (a, b) = (tail(&last)?, tail(&followed)?);
        let shared = &a[..boundary(&a, common_prefix(&a, &b))];
        let after_args = [
            shared.rfind(VALUE).map(|i| i + VALUE.len()),
            shared.rfind(['}', ']', '"']).map(|i| i + 1),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        let end = shared[after_args..].trim();
        return (!end.is_empty()).then(|| end.to_string());
    }
    None
}

/// `len` itself when it is the whole of `s`, else moved back to just after the last whitespace or
/// closing bracket, so that two texts that part in the middle of a token (`<|assistant|>` and
/// `</s>` both start with `<`) are not cut there.
fn boundary(s: &str, len: usize) -> usize {
    if len >= s.len() {
        return s.len();
    }
    s[..len]
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace() || matches!(c, '>' | ']' | '}' | ')'))
        .map_or(0, |(i, c)| i + c.len_utf8())
}
