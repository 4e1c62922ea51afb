//! A few records at a time, nothing written: what a record becomes for the template, what the
//! template renders, and which characters of the render are trained. `ftx prepare
//! --check-template` shows this to a person, and the parity tests compare it with transformers.

use serde_json::{json, Value as Json};

use crate::conversation::Record;
use crate::formats::{normalize, normalize_prompt, FormatOptions};
use crate::model;
use crate::options::PrepareOptions;
use crate::reject::Reject;
use crate::template::{message_json, ChatTemplate, SpecialTokens};
use crate::Result;

/// `{"code", "message"}` of a reject, as the rejects file writes them.
fn reject_json(r: &Reject) -> Json {
    json!({"reject": {"code": r.code.as_str(), "message": r.message}})
}

/// What a template sees of one record: `{"format", "messages", "tools"}` with messages in the
/// OpenAI shape of `docs/masking.md`, or `{"format": "text", "text"}`, or `{"reject": …}`.
pub fn normalized(record: Json, opts: &FormatOptions) -> Json {
    match normalize(record, opts) {
        Err(r) => reject_json(&r),
        Ok((format, Record::Text { text })) => json!({"format": format.as_str(), "text": text}),
        Ok((format, Record::Chat { messages, tools })) => json!({
            "format": format.as_str(),
            "messages": messages.iter().map(|m| message_json(m, None, Default::default())).collect::<Vec<_>>(),
            "tools": tools,
        }),
    }
}

/// Renders one record with `source` (no tokenizer involved): `{"text"}` or `{"reject": …}`.
pub fn render(
    source: &str,
    specials: SpecialTokens,
    record: Json,
    add_generation_prompt: bool,
) -> Result<Json> {
    let template = ChatTemplate::new("template", source, specials)?;
    Ok(
        match normalize(record, &FormatOptions::default()).map(|(_, r)| r) {
            Err(r) => reject_json(&r),
            Ok(Record::Text { .. }) => reject_json(&Reject::new(
                crate::reject::RejectCode::UnknownFormat,
                "a plain-text record has nothing to render",
            )),
            Ok(Record::Chat { messages, tools }) => {
                match template.render(&messages, &tools, add_generation_prompt) {
                    Ok(r) => json!({"text": r.text}),
                    Err(r) => reject_json(&r),
                }
            }
        },
    )
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

    fn template(&self) -> std::result::Result<&ChatTemplate, Json> {
        self.template.as_ref().ok_or_else(|| {
            reject_json(&Reject::new(
                crate::reject::RejectCode::TemplateError,
                "the model has no chat template",
            ))
        })
    }

    fn answer(&self, items: Vec<Json>) -> Json {
        json!({"template": self.label, "items": items})
    }
}

/// Encodes `records` as `prepare` would with `opts` (model, template, `train_on`) and returns
/// `{"template": label, "items": [...]}`; each item is `{"text", "ids", "mask", "trained"}`
/// (`trained`: `[start, end)` character ranges of `text` covered by trained tokens) or
/// `{"reject": …}`.
pub fn preview(opts: &PrepareOptions, records: Vec<Json>) -> Result<Json> {
    let engine = Engine::load(opts)?;
    let encoder = &engine.encoder;
    let items = records
        .into_iter()
        .map(|rec| {
            let (messages, tools) = match normalize(rec, &engine.format_opts) {
                Err(r) => return reject_json(&r),
                Ok((_, Record::Text { text })) => {
                    return match encoder.encode_text(&text) {
                        Ok(e) => item(encoder, &text, e.ids, e.mask),
                        Err(r) => reject_json(&r),
                    }
                }
                Ok((_, Record::Chat { messages, tools })) => (messages, tools),
            };
            let t = match engine.template() {
                Ok(t) => t,
                Err(reject) => return reject,
            };
            match t.render(&messages, &tools, false).and_then(|r| {
                encoder
                    .encode_chat(&r, &messages, opts.settings.train_on)
                    .map(|e| (r.text, e))
            }) {
                Ok((text, e)) => item(encoder, &text, e.ids, e.mask),
                Err(r) => reject_json(&r),
            }
        })
        .collect::<Vec<_>>();
    Ok(engine.answer(items))
}

/// The prompts of `records` for generation, rendered by the same template and tokenized by the
/// same tokenizer as `prepare` uses, with the generation prompt: `{"template", "items"}`, each
/// item `{"text", "ids"}` or `{"reject": …}`. Evaluation prompts therefore equal the training
/// render of the same conversation up to the reply.
pub fn prompts(opts: &PrepareOptions, records: Vec<Json>) -> Result<Json> {
    let engine = Engine::load(opts)?;
    let items = records
        .into_iter()
        .map(|rec| {
            let (messages, tools) = match normalize_prompt(rec, &engine.format_opts) {
                Err(r) => return reject_json(&r),
                Ok(Record::Text { text }) => (
                    vec![crate::conversation::Message::new(
                        crate::conversation::Role::User,
                        &text,
                    )],
                    Vec::new(),
                ),
                Ok(Record::Chat { messages, tools }) => (messages, tools),
            };
            let t = match engine.template() {
                Ok(t) => t,
                Err(reject) => return reject,
            };
            match t
                .render_plain(&messages, &tools, true)
                .and_then(|text| engine.encoder.encode_prompt(&text).map(|ids| (text, ids)))
            {
                Ok((text, ids)) => json!({"text": text, "ids": ids}),
                Err(r) => reject_json(&r),
            }
        })
        .collect::<Vec<_>>();
    Ok(engine.answer(items))
}

fn item(encoder: &crate::encode::Encoder, text: &str, ids: Vec<u32>, mask: Vec<u8>) -> Json {
    // Offsets come from a second tokenization: a preview is not on the hot path.
    let offsets = encoder
        .tokenizer()
        .encode(text, false)
        .map(|e| e.get_offsets().to_vec())
        .unwrap_or_default();
    json!({
        "text": text,
        "trained": trained_chars(text, &offsets, &mask),
        "ids": ids,
        "mask": mask,
    })
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
        assert_eq!(out, json!({"text": "[hi][yo]"}));
        let bad = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]});
        let out = render(src, SpecialTokens::default(), bad, false).unwrap();
        assert_eq!(out["reject"]["code"], "bad_role_order");
    }

    #[test]
    fn normalized_gives_the_openai_shape_templates_see() {
        let rec = json!({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]});
        let out = normalized(rec, &FormatOptions::default());
        assert_eq!(out["format"], "sharegpt");
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
        );
        let out = normalized(json!([1]), &FormatOptions::default());
        assert_eq!(out["reject"]["code"], "unknown_format");
    }
}
