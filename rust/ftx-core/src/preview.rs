//! A few records at a time, nothing written: what a record becomes for the template, what the
//! template renders, and which characters of the render are trained. `ftx prepare
//! --check-template` shows this to a person, and the parity tests compare it with transformers.

use serde::Serialize;
use serde_json::Value as Json;

use crate::conversation::Record;
use crate::formats::{normalize, normalize_prompt, FormatOptions};
use crate::model;
use crate::options::PrepareOptions;
use crate::reject::Reject;
use crate::template::{message_json, ChatTemplate, SpecialTokens};
use crate::Result;

/// A reject's `{"code", "message"}`, as the rejects file writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectInfo {
    pub code: &'static str,
    pub message: String,
}

/// One record's answer: what was made of it, or `{"reject": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Item<T> {
    Done(T),
    Rejected { reject: RejectInfo },
}

impl<T> Item<T> {
    fn rejected(r: &Reject) -> Self {
        Item::Rejected {
            reject: RejectInfo {
                code: r.code.as_str(),
                message: r.message.clone(),
            },
        }
    }
}

impl<T> From<std::result::Result<T, Reject>> for Item<T> {
    fn from(r: std::result::Result<T, Reject>) -> Self {
        match r {
            Ok(t) => Item::Done(t),
            Err(r) => Item::rejected(&r),
        }
    }
}

/// What a template sees of one record, with messages in the OpenAI shape of `docs/masking.md`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Normalized {
    Chat {
        format: &'static str,
        messages: Vec<Json>,
        tools: Vec<Json>,
    },
    /// `format` is `"text"`.
    Text { format: &'static str, text: String },
}

/// A render: `{"text"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub text: String,
}

/// A generation prompt, rendered and tokenized: `{"text", "ids"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
}

/// A record encoded as `prepare` encodes it: `{"text", "trained", "ids", "mask"}`, `trained`
/// the `[start, end)` character ranges of `text` covered by trained tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Encoded {
    pub text: String,
    pub trained: Vec<(usize, usize)>,
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
}

/// The answer for a batch of records: `{"template": label, "items": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batch<T> {
    pub template: String,
    pub items: Vec<Item<T>>,
}

/// What a template sees of one record: `{"format", "messages", "tools"}`, or
/// `{"format": "text", "text"}`, or `{"reject": …}`.
pub fn normalized(record: Json, opts: &FormatOptions) -> Item<Normalized> {
    normalize(record, opts)
        .map(|(format, record)| match record {
            Record::Text { text } => Normalized::Text {
                format: format.as_str(),
                text,
            },
            Record::Chat { messages, tools } => Normalized::Chat {
                format: format.as_str(),
                messages: messages
                    .iter()
                    .map(|m| message_json(m, None, Default::default()))
                    .collect(),
                tools,
            },
        })
        .into()
}

/// Renders one record with `source` (no tokenizer involved): `{"text"}` or `{"reject": …}`.
pub fn render(
    source: &str,
    specials: SpecialTokens,
    record: Json,
    add_generation_prompt: bool,
) -> Result<Item<Rendered>> {
    let template = ChatTemplate::new("template", source, specials)?;
    Ok(normalize(record, &FormatOptions::default())
        .and_then(|(_, r)| match r {
            Record::Text { .. } => Err(Reject::new(
                crate::reject::RejectCode::UnknownFormat,
                "a plain-text record has nothing to render",
            )),
            Record::Chat { messages, tools } => template
                .render(&messages, &tools, add_generation_prompt)
                .map(|r| Rendered { text: r.text }),
        })
        .into())
}

/// What `preview` and `prompts` work with: the model's encoder and chat template, as `prepare`
/// loads them, and its template's label.
struct Engine {
    encoder: crate::encode::Encoder,
    template: Option<ChatTemplate>,
    label: String,
    format_opts: FormatOptions,
}

impl Engine {
    fn load(opts: &PrepareOptions) -> Result<Self> {
        let (encoder, files, _) = model::load(opts)?;
        let (template, label) = model::template(opts, &files)?;
        let format_opts = FormatOptions {
            forced: opts.settings.format,
            ..FormatOptions::default()
        };
        Ok(Engine {
            encoder,
            template,
            label,
            format_opts,
        })
    }

    fn template(&self) -> std::result::Result<&ChatTemplate, Reject> {
        self.template.as_ref().ok_or_else(|| {
            Reject::new(
                crate::reject::RejectCode::TemplateError,
                "the model has no chat template",
            )
        })
    }

    fn answer<T>(&self, items: Vec<Item<T>>) -> Batch<T> {
        Batch {
            template: self.label.clone(),
            items,
        }
    }
}

/// Encodes `records` as `prepare` would with `opts` (model, template, `train_on`) and returns
/// a [`Batch`] of [`Encoded`] items.
pub fn preview(opts: &PrepareOptions, records: Vec<Json>) -> Result<Batch<Encoded>> {
    let engine = Engine::load(opts)?;
    let encoder = &engine.encoder;
    let items = records
        .into_iter()
        .map(|rec| {
            let (messages, tools) = match normalize(rec, &engine.format_opts) {
                Err(r) => return Err(r),
                Ok((_, Record::Text { text })) => {
                    return encoder
                        .encode_text(&text)
                        .map(|e| item(encoder, text, e.ids, e.mask));
                }
                Ok((_, Record::Chat { messages, tools })) => (messages, tools),
            };
            engine
                .template()?
                .render(&messages, &tools, false)
                .and_then(|r| {
                    encoder
                        .encode_chat(&r, &messages, opts.settings.train_on)
                        .map(|e| item(encoder, r.text, e.ids, e.mask))
                })
        })
        .map(Item::from)
        .collect();
    Ok(engine.answer(items))
}

/// The prompts of `records` for generation, rendered by the same template and tokenized by the
/// same tokenizer as `prepare` uses, with the generation prompt: a [`Batch`] of [`Prompt`]
/// items. Evaluation prompts therefore equal the training render of the same conversation up to
/// the reply.
pub fn prompts(opts: &PrepareOptions, records: Vec<Json>) -> Result<Batch<Prompt>> {
    let engine = Engine::load(opts)?;
    let items = records
        .into_iter()
        .map(|rec| {
            let (messages, tools) = match normalize_prompt(rec, &engine.format_opts)? {
                Record::Text { text } => (
                    vec![crate::conversation::Message::new(
                        crate::conversation::Role::User,
                        &text,
                    )],
                    Vec::new(),
                ),
                Record::Chat { messages, tools } => (messages, tools),
            };
            let text = engine.template()?.render_plain(&messages, &tools, true)?;
            let ids = engine.encoder.encode_prompt(&text)?;
            Ok(Prompt { text, ids })
        })
        .map(Item::from)
        .collect();
    Ok(engine.answer(items))
}

fn item(encoder: &crate::encode::Encoder, text: String, ids: Vec<u32>, mask: Vec<u8>) -> Encoded {
    // Offsets come from a second tokenization: a preview is not on the hot path.
    let offsets = encoder
        .tokenizer()
        .encode(text.as_str(), false)
        .map(|e| e.get_offsets().to_vec())
        .unwrap_or_default();
    Encoded {
        trained: trained_chars(&text, &offsets, &mask),
        text,
        ids,
        mask,
    }
}

/// Character ranges of `text` covered by trained tokens (`offsets` in bytes, one per token),
/// merged where they touch.
fn trained_chars(text: &str, offsets: &[(usize, usize)], mask: &[u8]) -> Vec<(usize, usize)> {
    let mut byte_ranges: Vec<(usize, usize)> = Vec::new();
    for (&(s, e), &m) in offsets.iter().zip(mask) {
        if m == 0 || s >= e {
            continue;
        }
        match byte_ranges.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => byte_ranges.push((s, e)),
        }
    }
    let char_at = |b: usize| text[..floor_boundary(text, b)].chars().count();
    byte_ranges
        .into_iter()
        .map(|(s, e)| (char_at(s), char_at(ceil_boundary(text, e))))
        .collect()
}

fn floor_boundary(text: &str, mut b: usize) -> usize {
    b = b.min(text.len());
    while !text.is_char_boundary(b) {
        b -= 1;
    }
    b
}

fn ceil_boundary(text: &str, mut b: usize) -> usize {
    b = b.min(text.len());
    while !text.is_char_boundary(b) {
        b += 1;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trained_ranges_are_in_characters_and_merged() {
        let text = "é ab";
        // "é" is 2 bytes; tokens: [0,2) "é", [2,3) " ", [3,5) "ab".
        let offsets = [(0, 2), (2, 3), (3, 5)];
        assert_eq!(trained_chars(text, &offsets, &[0, 1, 1]), vec![(1, 4)]);
        assert_eq!(
            trained_chars(text, &offsets, &[1, 0, 1]),
            vec![(0, 1), (2, 4)]
        );
        // A byte-level token ending inside a character covers all of it.
        assert_eq!(
            trained_chars(text, &[(0, 1), (1, 2)], &[0, 1]),
            vec![(0, 1)]
        );
    }

    #[test]
    fn render_reports_the_template_s_refusal_as_a_reject() {
        let src = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}{% endif %}[{{ m.content }}]{% endfor %}";
        let ok = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]});
        let out = render(src, SpecialTokens::default(), ok, false).unwrap();
        assert_eq!(
            serde_json::to_value(out).unwrap(),
            json!({"text": "[hi][yo]"})
        );
        let bad = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]});
        let out = render(src, SpecialTokens::default(), bad, false).unwrap();
        let out = serde_json::to_value(out).unwrap();
        assert_eq!(out["reject"]["code"], "bad_role_order");
    }

    #[test]
    fn normalized_gives_the_openai_shape_templates_see() {
        let rec = json!({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]});
        let out = serde_json::to_value(normalized(rec, &FormatOptions::default())).unwrap();
        assert_eq!(out["format"], "sharegpt");
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
        );
        let out = serde_json::to_value(normalized(json!([1]), &FormatOptions::default())).unwrap();
        assert_eq!(out["reject"]["code"], "unknown_format");
        let text = serde_json::to_string(&normalized(json!({"text": "t"}), &Default::default()));
        assert_eq!(text.unwrap(), r#"{"format":"text","text":"t"}"#);
    }
}
