//! Hugging Face chat templates, rendered with minijinja, with the byte span of every message's
//! content in the rendered text. How spans are found (sentinels, not marker search) is described
//! in `docs/masking.md`.

use minijinja::{Environment, Value};
use serde_json::{json, Map, Value as Json};

use crate::conversation::Message;
use crate::reject::{Reject, RejectCode};
use crate::{Error, Result};

mod builtin;
mod probe;
mod pyjinja;
mod spans;
#[cfg(test)]
pub(crate) mod tests;

pub use builtin::{builtin, builtin_names};
use spans::{has_reserved, json_has_reserved, wrap, Kind, MAX_MESSAGES};

/// Special tokens a template can refer to (`bos_token`, …). `None` leaves the variable undefined,
/// as transformers does for a token the tokenizer does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

/// One rendered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Exactly what the template renders for the record (no sentinel left).
    pub text: String,
    /// Where each message shows up in `text`, in text order. A message can have several spans (a
    /// template that renders it twice) or none (a template that drops it).
    pub spans: Vec<Span>,
}

/// A byte range of [`Rendered::text`] that belongs to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub message: usize,
    pub start: usize,
    pub end: usize,
    /// What follows the span that still belongs to the message (assistants only).
    pub tail: Tail,
    /// Where the message's tail must end: the next message's output, or before it the text that
    /// opens the next turn.
    pub limit: usize,
}

/// How an assistant span ends, which tells the encoder how to finish it (`docs/masking.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// With the message's text: the turn's end token follows, maybe after whitespace.
    Turn,
    /// With the template's closing of the message's tool call(s) (`</tool_call><|im_end|>`), as
    /// learned from the template: nothing more belongs to the message.
    Complete,
    /// Inside a tool call whose closing was not found: the rest of the call, up to the first
    /// special token, belongs to the message.
    ToolCall,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    name: String,
    source: String,
    specials: SpecialTokens,
    learned: probe::Learned,
}

/// `{% generation %}` blocks (transformers' assistant-mask extension, used by TRL's training
/// templates) become `{% if true %}` blocks: same output, same whitespace control, and minijinja
/// can parse them. Spans come from sentinels either way.
fn replace_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let tag = &rest[i..];
        let inner_start = 2 + usize::from(tag[2..].starts_with(['-', '+']));
        let body = tag[inner_start..].trim_start();
        let word_len = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .count();
        let replacement = match &body[..word_len] {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match (replacement, tag.find("%}")) {
            (Some(r), Some(close)) => {
                let lead = &tag[..inner_start];
                let trail = if tag[..close].ends_with(['-', '+']) {
                    &tag[close - 1..close]
                } else {
                    ""
                };
                out.push_str(lead);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(trail);
                out.push_str("%}");
                rest = &tag[close + 2..];
            }
            _ => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl ChatTemplate {
    /// Compiles `source`. `name` shows up in error messages.
    pub fn new(name: &str, source: &str, specials: SpecialTokens) -> Result<Self> {
        let mut env = Environment::new();
        pyjinja::install(&mut env);
        // Every render stops after this many template instructions, so no template can loop
        // forever or past Ctrl-C; real chat templates use thousands per conversation.
        env.set_fuel(Some(FUEL));
        // jinja2 turns every line break of the template into "\n" (and Python reads files with
        // universal newlines), so a template saved with CRLF renders LF.
        let normalized = source.replace("\r\n", "\n").replace('\r', "\n");
        env.add_template_owned("chat", replace_generation_tags(&normalized))
            .map_err(|e| Error::Template(format!("chat template {name:?}: {e:#}")))?;
        let mut t = ChatTemplate {
            env,
            name: name.to_string(),
            source: source.to_string(),
            specials,
            learned: probe::Learned::default(),
        };
        t.learned = probe::learn(&t);
        Ok(t)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text that opens an assistant turn, as learned from the template.
    pub fn assistant_header(&self) -> Option<&str> {
        self.learned.header()
    }

    /// The text that closes an assistant's tool calls, as learned from the template.
    pub fn tool_call_end(&self) -> Option<&str> {
        self.learned.tool_end()
    }

    /// Renders one record, and finds every message's content (and an assistant's tool calls) in
    /// the result.
    pub fn render(
        &self,
        messages: &[Message],
        tools: &[Json],
        add_generation_prompt: bool,
    ) -> Result<Rendered, Reject> {
        if messages.len() > MAX_MESSAGES {
            return Err(Reject::new(
                RejectCode::TemplateError,
                format!(
                    "{} messages; at most {MAX_MESSAGES} are supported",
                    messages.len()
                ),
            ));
        }
        if messages.iter().any(message_has_reserved) || tools.iter().any(json_has_reserved) {
            return Err(Reject::new(
                RejectCode::TemplateError,
                "the record contains characters U+100000..U+10FFFF, which ftx reserves for masking",
            ));
        }
        let out = self.render_either(messages, tools, add_generation_prompt, true)?;
        let (text, events) = spans::strip_sentinels(&out, messages.len());
        let spans = spans::spans(&text, &events, messages, &self.learned);
        Ok(Rendered { text, spans })
    }

    /// What the template renders for the record, without any sentinel: the reference `render`
    /// must reproduce byte for byte.
    pub fn render_plain(
        &self,
        messages: &[Message],
        tools: &[Json],
        add_generation_prompt: bool,
    ) -> Result<String, Reject> {
        self.render_either(messages, tools, add_generation_prompt, false)
    }

    /// Renders the record in the form it has (tool-call arguments as objects, what Hugging Face
    /// templates expect; call-only messages with `null` content); a template that fails on that
    /// gets what it can render: the arguments as the JSON text the record had, `""` content.
    fn render_either(
        &self,
        messages: &[Message],
        tools: &[Json],
        add_generation_prompt: bool,
        marked: bool,
    ) -> Result<String, Reject> {
        let has_text = messages
            .iter()
            .any(|m| m.tool_calls.iter().any(|c| c.arguments_text.is_some()));
        let has_null = messages.iter().any(|m| m.content_null);
        let shapes = [
            Shape::default(),
            Shape {
                blank_content: true,
                ..Shape::default()
            },
            Shape {
                text_arguments: true,
                ..Shape::default()
            },
            Shape {
                text_arguments: true,
                blank_content: true,
            },
        ];
        let mut first = None;
        for shape in shapes {
            if (shape.text_arguments && !has_text) || (shape.blank_content && !has_null) {
                continue;
            }
            match self.render_raw(messages, tools, add_generation_prompt, marked, shape) {
                Err(e) if e.code == RejectCode::TemplateError => {
                    first.get_or_insert(e);
                }
                other => return other,
            }
        }
        Err(first.unwrap_or_else(|| Reject::new(RejectCode::TemplateError, "nothing rendered")))
    }

    fn render_raw(
        &self,
        messages: &[Message],
        tools: &[Json],
        add_generation_prompt: bool,
        marked: bool,
        shape: Shape,
    ) -> Result<String, Reject> {
        let msgs: Vec<Json> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| message_json(m, marked.then_some(i), shape))
            .collect();
        let mut ctx = Map::new();
        ctx.insert("messages".into(), Json::Array(msgs));
        let tools = if tools.is_empty() {
            Json::Null
        } else {
            Json::Array(tools.to_vec())
        };
        ctx.insert("tools".into(), tools);
        ctx.insert("documents".into(), Json::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );
        let s = &self.specials;
        for (key, tok) in [
            ("bos_token", &s.bos),
            ("eos_token", &s.eos),
            ("pad_token", &s.pad),
            ("unk_token", &s.unk),
        ] {
            if let Some(tok) = tok {
                ctx.insert(key.into(), Json::String(tok.clone()));
            }
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Reject::new(RejectCode::TemplateError, e.to_string()))?;
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(render_error)
    }
}

fn message_has_reserved(m: &Message) -> bool {
    has_reserved(&m.content)
        || m.reasoning.as_deref().is_some_and(has_reserved)
        || m.name.as_deref().is_some_and(has_reserved)
        || m.tool_call_id.as_deref().is_some_and(has_reserved)
        || m.tool_calls.iter().any(|c| {
            has_reserved(&c.name)
                || c.id.as_deref().is_some_and(has_reserved)
                || json_has_reserved(&c.arguments)
        })
}

/// How a record's messages are given to a template, where a record can be given two ways.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Shape {
    /// Tool-call arguments the record wrote as a JSON string are that string (else an object).
    pub text_arguments: bool,
    /// Call-only messages have content `""` (else none, as transformers gives them).
    pub blank_content: bool,
}

/// The OpenAI message shape HF templates expect. With `marked`, strings are wrapped in the
/// sentinels of message `i`.
pub(crate) fn message_json(m: &Message, marked: Option<usize>, shape: Shape) -> Json {
    let mark = |s: &str, kind| match marked {
        Some(i) => wrap(s, i, kind),
        None => s.to_string(),
    };
    let mut o = Map::new();
    // transformers copies the reasoning to `thinking` (gpt-oss templates read that), first.
    let reasoning = m
        .reasoning
        .as_deref()
        .map(|r| Json::String(mark(r, Kind::Reasoning)));
    if let Some(r) = &reasoning {
        o.insert("thinking".into(), r.clone());
    }
    o.insert("role".into(), Json::String(m.role.as_str().into()));
    // transformers drops the keys whose value is `null` before rendering, so a call-only
    // message with `null` content reaches its templates with no content at all.
    if !(m.content_null && !shape.blank_content && m.content.is_empty()) {
        o.insert(
            "content".into(),
            Json::String(mark(&m.content, Kind::Content)),
        );
    }
    if !m.tool_calls.is_empty() {
        let calls = m.tool_calls.iter().zip(0..).map(|(c, k)| {
            let mut call = Map::new();
            call.insert("type".into(), json!("function"));
            let arguments = match (&c.arguments_text, shape.text_arguments) {
                (Some(text), true) => Json::String(text.clone()),
                _ => c.arguments.clone(),
            };
            call.insert(
                "function".into(),
                json!({"name": mark(&c.name, Kind::ToolName(k)), "arguments": arguments}),
            );
            if let Some(id) = &c.id {
                call.insert("id".into(), Json::String(id.clone()));
            }
            Json::Object(call)
        });
        o.insert("tool_calls".into(), Json::Array(calls.collect()));
    }
    if let Some(r) = reasoning {
        o.insert("reasoning_content".into(), r);
    }
    if let Some(n) = &m.name {
        o.insert("name".into(), Json::String(n.clone()));
    }
    if let Some(id) = &m.tool_call_id {
        o.insert("tool_call_id".into(), Json::String(id.clone()));
    }
    Json::Object(o)
}

/// Template instructions one render may run: about a second of work at most.
pub const FUEL: u64 = 20_000_000;

fn render_error(e: minijinja::Error) -> Reject {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return Reject::new(
            RejectCode::TemplateBudget,
            format!("the chat template ran more than {FUEL} instructions on this record"),
        );
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(raised) = err.downcast_ref::<pyjinja::Raised>() {
            let lower = raised.0.to_lowercase();
            let code = if lower.contains("role") || lower.contains("alternat") {
                RejectCode::BadRoleOrder
            } else {
                RejectCode::TemplateError
            };
            return Reject::new(code, raised.0.clone());
        }
        source = err.source();
    }
    Reject::new(RejectCode::TemplateError, e.to_string())
}
