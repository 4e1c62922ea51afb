// One thing: the tests of template rendering and spans (real templates of many families, the
// learned headers and closings, Python-compatible methods, fuel).
// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::conversation::{Role, ToolCall};
use std::path::{Path, PathBuf};

pub(crate) fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        eprintln!("skipped: no shared data at {}", dir.display());
        None
    }
}

fn msg(role: Role, content: &str) -> Message {
    Message::new(role, content)
}

pub(crate) fn weather_tool() -> Json {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object",
            "properties": {"location": {"type": "string", "description": "City name"}},
            "required": ["location"]}}})
}

/// (name, messages, tools): single turn with system, multi-turn, tool call with result.
pub(crate) fn conversations() -> Vec<(&'static str, Vec<Message>, Vec<Json>)> {
    let mut call = msg(Role::Assistant, "");
    call.tool_calls.push(ToolCall {
        id: Some("call_1".into()),
        name: "get_weather".into(),
        arguments: json!({"location": "Paris"}),
        arguments_text: None,
    });
    let mut result = msg(Role::Tool, "{\"temperature\": 22}");
    result.tool_call_id = Some("call_1".into());
    result.name = Some("get_weather".into());
    vec![
        (
            "single",
            vec![
                msg(Role::System, "You are a helpful assistant."),
                msg(Role::User, "What is 2+2?"),
                msg(Role::Assistant, "2+2 equals 4."),
            ],
            vec![],
        ),
        (
            "multi",
            vec![
                msg(Role::User, "Hi there!"),
                msg(Role::Assistant, "Hello! How can I help?"),
                msg(Role::User, "Tell me a joke."),
                msg(
                    Role::Assistant,
                    "Why did the chicken cross the road?\nTo get to the other side.",
                ),
            ],
            vec![],
        ),
        (
            "tools",
            vec![
                msg(Role::User, "What's the weather in Paris?"),
                call,
                result,
                msg(Role::Assistant, "It is 22 degrees in Paris."),
            ],
            vec![weather_tool()],
        ),
    ]
}

fn jinja_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            jinja_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "jinja") {
            out.push(p);
        }
    }
}

pub(crate) fn specials() -> SpecialTokens {
    SpecialTokens {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        pad: None,
        unk: Some("<unk>".into()),
    }
}

/// Extra conversations for the jinja2 comparison: reasoning, odd characters, parallel calls with
/// non-string arguments.
pub(crate) fn extra_conversations() -> Vec<(&'static str, Vec<Message>, Vec<Json>)> {
    let mut reasoned = msg(Role::Assistant, "The answer is 4.");
    reasoned.reasoning = Some("2+2 is 4.".into());
    let mut calls = msg(Role::Assistant, "Let me check both.");
    for (i, city) in ["Paris", "Tōkyō \"東京\""].iter().enumerate() {
        calls.tool_calls.push(ToolCall {
            id: Some(format!("call{i:05}xx")),
            name: "get_weather".into(),
            arguments: json!({"location": city, "days": 3, "metric": true, "ratio": 0.5, "x": null}),
            arguments_text: None,
        });
    }
    let mut r1 = msg(Role::Tool, "{\"temperature\": 22}");
    r1.tool_call_id = Some("call00000xx".into());
    let mut r2 = msg(Role::Tool, "sunny\n");
    r2.tool_call_id = Some("call00001xx".into());
    vec![
        (
            "reasoning",
            vec![
                msg(Role::User, "What is 2+2?"),
                reasoned,
                msg(Role::User, "And 3+3?"),
                msg(Role::Assistant, "<think>\nAdd them.\n</think>\n\nIt is 6."),
            ],
            vec![],
        ),
        (
            "odd",
            vec![
                msg(Role::System, "  Be <b>brief</b> & 'exact'.  \n"),
                msg(Role::User, "\tQuote: \"hi\" — naïve café 🎉\n\n"),
                msg(Role::Assistant, "  Sure: {\"a\": [1, 2]} \\ done.\n"),
            ],
            vec![],
        ),
        (
            "parallel",
            vec![
                msg(Role::User, "Weather in Paris and Tokyo?"),
                calls,
                r1,
                r2,
                msg(Role::Assistant, "Both fine."),
            ],
            vec![weather_tool()],
        ),
    ]
}

/// Writes every template's render of every conversation to `$FTX_RENDER_DUMP` (JSON lines), for
/// `scripts`-free comparison with transformers' jinja2 environment during development.
#[test]
#[ignore]
fn dump_renders() {
    let Ok(out) = std::env::var("FTX_RENDER_DUMP") else {
        return;
    };
    let Some(data) = data_dir() else { return };
    let mut files = Vec::new();
    jinja_files(&data.join("chat_templates"), &mut files);
    jinja_files(&data.join("tokenizers"), &mut files);
    let mut lines = String::new();
    for f in files {
        let src = fs_err::read_to_string(&f).unwrap();
        let Ok(t) = ChatTemplate::new("t", &src, specials()) else {
            continue;
        };
        for (name, msgs, tools) in conversations().into_iter().chain(extra_conversations()) {
            for gen in [false, true] {
                let plain: Vec<Json> = msgs
                    .iter()
                    .map(|m| message_json(m, None, Default::default()))
                    .collect();
                let (text, error) = match t.render(&msgs, &tools, gen) {
                    Ok(r) => (Some(r.text), None),
                    Err(e) => (None, Some(e.message)),
                };
                let row = json!({"file": f, "conv": name, "gen": gen, "messages": plain,
                    "tools": tools, "text": text, "error": error});
                lines.push_str(&row.to_string());
                lines.push('\n');
            }
        }
    }
    fs_err::write(out, lines).unwrap();
}

fn core(s: &str) -> &str {
    s.trim()
}

fn compile(src: &str) -> ChatTemplate {
    ChatTemplate::new("test", src, specials()).unwrap()
}

/// Renders with and without sentinels and checks they agree, reject included.
fn render_checked(
    t: &ChatTemplate,
    msgs: &[Message],
    tools: &[Json],
    gen: bool,
) -> Result<Rendered, Reject> {
    let marked = t.render(msgs, tools, gen);
    let plain = t.render_plain(msgs, tools, gen);
    match (&marked, &plain) {
        (Ok(r), Ok(p)) => assert_eq!(&r.text, p, "sentinels changed the render of {}", t.name()),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("{}: marked {marked:?} vs plain {plain:?}", t.name()),
    }
    marked
}

fn span_texts(r: &Rendered, message: usize) -> Vec<&str> {
    r.spans
        .iter()
        .filter(|s| s.message == message)
        .map(|s| &r.text[s.start..s.end])
        .collect()
}

/// The checks every real template must pass on every conversation it accepts: user spans are the
/// user's text, an assistant's span ends with its text (after at most an empty think block the
/// template writes), and a tool call's span holds the call.
fn check_spans(t: &ChatTemplate, msgs: &[Message], r: &Rendered) {
    let name = t.name();
    for (i, m) in msgs.iter().enumerate() {
        let spans = span_texts(r, i);
        match m.role {
            Role::User => assert_eq!(spans, [core(&m.content)], "{name}: user {i}"),
            Role::Assistant if m.tool_calls.is_empty() => {
                assert_eq!(spans.len(), 1, "{name}: assistant {i}: {spans:?}");
                // Whitespace the template leaves before the text is output too.
                let prefix = spans[0].strip_suffix(core(&m.content)).map(str::trim_end);
                assert!(
                    matches!(prefix, Some("" | "<think>\n\n</think>")),
                    "{name}: assistant {i}: {:?}",
                    spans[0]
                );
            }
            Role::Assistant => {
                for s in r.spans.iter().filter(|s| s.message == i) {
                    let text = &r.text[s.start..s.end];
                    assert!(
                        text.contains("get_weather") && text.contains("Paris"),
                        "{name}: {text:?}"
                    );
                    if s.tail == Tail::Complete {
                        assert!(
                            text.ends_with(t.tool_call_end().unwrap_or("?")),
                            "{name}: {text:?}"
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

fn real_templates(data: &Path) -> Vec<(String, String)> {
    let tok = data.join("tokenizers");
    let config = |m: &str| {
        let v: Json = serde_json::from_str(
            &fs_err::read_to_string(tok.join(m).join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        (
            format!("{m} config"),
            v["chat_template"].as_str().unwrap().to_string(),
        )
    };
    let mut out = vec![config("qwen3"), config("llama3")];
    for f in [
        "llama3/chat_template.llama-3.1-8b-instruct.jinja",
        "llama3/chat_template.llama-3.2-3b-instruct.jinja",
        "qwen2_5/chat_template.jinja",
        "gemma2/chat_template.jinja",
        "mistral/chat_template.axolotl_mistral_v1.jinja",
        "mistral/chat_template.axolotl_mistral_v2v3.jinja",
        "mistral/chat_template.chujiezheng_mistral-instruct.jinja",
        "phi3/chat_template.phi-3.5-mini-instruct.jinja",
        "phi3/chat_template.phi-3-mini-from-gguf.jinja",
        "smollm2/chat_template.jinja",
        "tinyllama_zephyr/chat_template.chujiezheng_zephyr.jinja",
    ] {
        out.push((f.to_string(), fs_err::read_to_string(tok.join(f)).unwrap()));
    }
    let chatml = data.join("chat_templates/axolotl/chatml.jinja");
    out.push((
        "axolotl chatml".into(),
        fs_err::read_to_string(chatml).unwrap(),
    ));
    out
}

#[test]
fn every_shared_template_compiles_and_renders_like_without_sentinels() {
    let Some(data) = data_dir() else { return };
    let mut files = Vec::new();
    jinja_files(&data.join("chat_templates"), &mut files);
    jinja_files(&data.join("tokenizers"), &mut files);
    assert!(files.len() > 150, "{}", files.len());
    let mut rendered = 0;
    for f in &files {
        let src = fs_err::read_to_string(f).unwrap();
        let t = ChatTemplate::new(&f.display().to_string(), &src, specials())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (_, msgs, tools) in conversations().into_iter().chain(extra_conversations()) {
            for gen in [false, true] {
                rendered += usize::from(render_checked(&t, &msgs, &tools, gen).is_ok());
            }
        }
    }
    // Most templates accept most conversations; the rest reject them on purpose (roles, tools).
    assert!(rendered > files.len() * 8, "{rendered}");
}

#[test]
fn real_templates_span_the_assistant_text() {
    let Some(data) = data_dir() else { return };
    for (name, src) in real_templates(&data) {
        let t = ChatTemplate::new(&name, &src, specials()).unwrap();
        let mut accepted = 0;
        for (conv, msgs, tools) in conversations() {
            match render_checked(&t, &msgs, &tools, false) {
                Ok(r) => {
                    accepted += 1;
                    check_spans(&t, &msgs, &r);
                }
                Err(e) => {
                    // Templates without a system role or tool support say so.
                    assert!(conv != "multi", "{name}: {e:?}");
                    assert!(matches!(
                        e.code,
                        RejectCode::BadRoleOrder | RejectCode::TemplateError
                    ));
                }
            }
        }
        assert!(accepted >= 1, "{name}");
    }
}

#[test]
fn tool_calls_are_spanned_to_the_templates_closing() {
    let Some(data) = data_dir() else { return };
    let templates: Vec<_> = real_templates(&data).into_iter().collect();
    let find = |n: &str| {
        templates
            .iter()
            .find(|(name, _)| name.starts_with(n))
            .unwrap()
            .1
            .clone()
    };
    let (_, msgs, tools) = conversations().remove(2);
    let cases = [
        ("qwen3 config", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call><|im_end|>"),
        ("qwen2_5", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call><|im_end|>"),
        ("llama3/chat_template.llama-3.1", "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"Paris\"}}<|eot_id|>"),
        ("llama3/chat_template.llama-3.2", "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"Paris\"}}<|eot_id|>"),
    ];
    for (name, expected) in cases {
        let t = ChatTemplate::new(name, &find(name), specials()).unwrap();
        let r = render_checked(&t, &msgs, &tools, false).unwrap();
        let call: Vec<_> = r.spans.iter().filter(|s| s.message == 1).collect();
        assert_eq!(call.len(), 1, "{name}");
        assert_eq!(&r.text[call[0].start..call[0].end], expected, "{name}");
        assert_eq!(call[0].tail, Tail::Complete, "{name}");
        let last = &r.spans.iter().rfind(|s| s.message == 3).unwrap();
        assert_eq!(last.tail, Tail::Turn);
    }
}

#[test]
fn qwen3_reasoning_is_spanned_with_its_think_block() {
    let Some(data) = data_dir() else { return };
    let src = real_templates(&data).remove(0).1;
    let t = compile(&src);
    let (_, msgs, _) = extra_conversations().remove(0);
    let r = render_checked(&t, &msgs, &[], false).unwrap();
    // History turn: the template drops the reasoning; the last turn keeps its inline think block,
    // whose start sentinel the template's `split('</think>')` cut off.
    assert_eq!(span_texts(&r, 1), ["The answer is 4."]);
    assert_eq!(
        span_texts(&r, 3),
        ["<think>\nAdd them.\n</think>\n\nIt is 6."]
    );
}

#[test]
fn exact_renders_of_real_templates() {
    let Some(data) = data_dir() else { return };
    let templates = real_templates(&data);
    let (_, single, _) = conversations().remove(0);
    let llama3 = ChatTemplate::new("llama3", &templates[1].1, specials()).unwrap();
    assert_eq!(
        llama3.render(&single, &[], true).unwrap().text,
        "<s><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n2+2 equals 4.<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let l31 = &templates.iter().find(|(n, _)| n.contains("3.1")).unwrap().1;
    let text = compile(l31).render(&single, &[], false).unwrap().text;
    assert!(
        text.contains("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"),
        "{text}"
    );
}

#[test]
fn headers_and_closings_are_learned_from_the_template() {
    let Some(data) = data_dir() else { return };
    let t = real_templates(&data);
    let get = |n: &str| compile(&t.iter().find(|(name, _)| name.starts_with(n)).unwrap().1);
    let qwen3 = get("qwen3 config");
    assert_eq!(qwen3.assistant_header(), Some("<|im_start|>assistant\n"));
    assert_eq!(qwen3.tool_call_end(), Some("</tool_call><|im_end|>"));
    assert_eq!(
        get("llama3 config").assistant_header(),
        Some("<|start_header_id|>assistant<|end_header_id|>\n\n")
    );
    assert_eq!(
        get("gemma2").assistant_header(),
        Some("<start_of_turn>model\n")
    );
    // Phi-3 writes EOS instead of the prompt; `<|assistant|>` and `</s>` share a `<`.
    assert_eq!(
        get("phi3/chat_template.phi-3.5").assistant_header(),
        Some("<|assistant|>\n")
    );
    // No generation prompt: the text between the turns.
    assert_eq!(
        get("mistral/chat_template.axolotl_mistral_v1").assistant_header(),
        Some("[/INST]")
    );
}

#[test]
fn builtin_templates_render_and_span() {
    for name in builtin_names() {
        let src = builtin(name).unwrap();
        assert!(src.contains("ftx's own"), "{name}");
        let t = ChatTemplate::new(name, src, specials()).unwrap();
        for (conv, msgs, tools) in conversations().into_iter().chain(extra_conversations()) {
            match render_checked(&t, &msgs, &tools, false) {
                Ok(r) if conv != "reasoning" && conv != "parallel" => check_spans(&t, &msgs, &r),
                Ok(_) => {}
                Err(e) => assert!(
                    matches!(*name, "alpaca" | "zephyr") && tools.len() + msgs.len() > 4,
                    "{name} {conv}: {e:?}"
                ),
            }
        }
    }
    assert!(builtin("nope").is_none());
    let chatml = ChatTemplate::new("chatml", builtin("chatml").unwrap(), specials()).unwrap();
    assert_eq!(chatml.tool_call_end(), Some("</tool_call><|im_end|>"));
    let (_, msgs, tools) = conversations().remove(2);
    let r = chatml.render(&msgs, &tools, false).unwrap();
    assert_eq!(
        span_texts(&r, 1),
        ["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call><|im_end|>"]
    );
    let llama3 = ChatTemplate::new("llama3", builtin("llama3").unwrap(), specials()).unwrap();
    let r = llama3.render(&msgs, &tools, true).unwrap();
    assert_eq!(
        span_texts(&r, 1),
        ["{\"name\": \"get_weather\", \"parameters\": {\"location\": \"Paris\"}}<|eot_id|>"]
    );
    assert!(r
        .text
        .ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
}

#[test]
fn sentinels_hug_the_non_whitespace_core() {
    let w = wrap("  hi \n", 0, Kind::Content);
    let chars: Vec<char> = w.chars().collect();
    assert_eq!(chars.len(), 8);
    assert!(spans::is_sentinel(chars[2]) && spans::is_sentinel(chars[5]));
    assert_eq!(wrap(" \n", 3, Kind::Content), " \n");
    let (text, events) = spans::strip_sentinels(&format!("<{w}>"), 1);
    assert_eq!(text, "<  hi \n>");
    assert_eq!(events.len(), 2);
}

#[test]
fn templates_that_strip_or_split_keep_the_sentinels() {
    let t = compile(
        "{% for m in messages %}[{{ m.content.strip('\"') }}|{{ m.content | trim }}|{{ m.content.startswith('<a>') }}]{% endfor %}",
    );
    let msgs = [
        Message::new(Role::User, "\"quoted\""),
        Message::new(Role::Assistant, "<a>x</a>"),
    ];
    let r = render_checked(&t, &msgs, &[], false).unwrap();
    assert_eq!(r.text, "[quoted|\"quoted\"|False][<a>x</a>|<a>x</a>|True]");
}

#[test]
fn unmatched_sentinels_are_aligned_on_the_content() {
    // Start cut off: only what follows "</think>" is rendered.
    let t = compile(
        "{% for m in messages %}<{{ m.role }}>\n{{ m.content.split('</think>')[-1] }}{% endfor %}",
    );
    let msgs = [
        Message::new(Role::User, "q"),
        Message::new(Role::Assistant, "<think>r</think>answer"),
    ];
    let r = render_checked(&t, &msgs, &[], false).unwrap();
    assert_eq!(span_texts(&r, 1), ["answer"]);
    // End cut off: only what precedes "</think>".
    let t = compile(
        "{% for m in messages %}<{{ m.role }}>{{ m.content.split('</think>')[0] }}.{% endfor %}",
    );
    let r = render_checked(&t, &msgs, &[], false).unwrap();
    assert_eq!(span_texts(&r, 1), ["<think>r"]);
}

#[test]
fn a_name_written_again_is_not_the_call() {
    // gpt-oss and Gemma 4 write the call's name again in the tool result's header.
    let t = compile(
        "{% for m in messages %}{% if m.tool_calls %}<call>{{ m.tool_calls[0].function.name }}</call>\
         {% elif m.role == 'tool' %}<result of {{ messages[loop.index0 - 1].tool_calls[0].function.name }}>{{ m.content }}\
         {% else %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}",
    );
    let (_, msgs, tools) = conversations().remove(2);
    let r = render_checked(&t, &msgs, &tools, false).unwrap();
    // The closing learned from the template is "</call>", not the result's header.
    assert_eq!(t.tool_call_end(), Some("</call>"));
    assert_eq!(span_texts(&r, 1), ["get_weather</call>"]);
    assert_eq!(
        r.spans.iter().find(|s| s.message == 1).unwrap().tail,
        Tail::Complete
    );
}

#[test]
fn python_behaviour_of_the_environment() {
    let t = compile(concat!(
        "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'é' | tojson(ensure_ascii=True) }}|",
        "{{ x | tojson(separators=(',', ':'), sort_keys=true) }}|{{ x }}|{{ true }}|{{ none }}|",
        "{{ y | string }}|{{ none is iterable }}|{{ 'ab' is sequence }}|{{ strftime_now('%d %b %Y %A') }}",
    ));
    let mut ctx = serde_json::Map::new();
    ctx.insert(
        "x".into(),
        json!({"b": [1, 2.5, "<&'>"], "a": null, "c": 1e20, "d": 1.0}),
    );
    ctx.insert("y".into(), json!([true, "it's", {"k": 0.0001}]));
    let out = t
        .env
        .get_template("chat")
        .unwrap()
        .render(Value::from_serialize(&ctx))
        .unwrap();
    assert_eq!(
        out,
        concat!(
            r#"{"b": [1, 2.5, "<&'>"], "a": null, "c": 1e+20, "d": 1.0}|"#,
            "{\n  \"b\": [\n    1,\n    2.5,\n    \"<&'>\"\n  ],\n  \"a\": null,\n  \"c\": 1e+20,\n  \"d\": 1.0\n}|",
            r#""\u00e9"|{"a":null,"b":[1,2.5,"<&'>"],"c":1e+20,"d":1.0}|"#,
            r#"{'b': [1, 2.5, "<&'>"], 'a': None, 'c': 1e+20, 'd': 1.0}|True|None|"#,
            r#"[True, "it's", {'k': 0.0001}]|False|True|26 Jul 2024 Friday"#,
        )
    );
    assert_eq!(pyjinja::py_float(1.5e-5), "1.5e-05");
    assert_eq!(
        pyjinja::py_float(123456789012345680.0),
        "1.2345678901234568e+17"
    );
    assert_eq!(pyjinja::py_float(-0.0), "-0.0");
}

#[test]
fn raise_exception_becomes_a_reject() {
    let t = compile("{{ raise_exception('Conversation roles must alternate user/assistant') }}");
    let e = t
        .render(&[Message::new(Role::User, "x")], &[], false)
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            RejectCode::BadRoleOrder,
            "Conversation roles must alternate user/assistant"
        )
    );
    let t = compile("{{ raise_exception('Tool call IDs should be alphanumeric') }}");
    let e = t
        .render(&[Message::new(Role::User, "x")], &[], false)
        .unwrap_err();
    assert_eq!(e.code, RejectCode::TemplateError);
    let t = compile("{{ messages[0].content.nope() }}");
    let e = t
        .render(&[Message::new(Role::User, "x")], &[], false)
        .unwrap_err();
    assert_eq!(e.code, RejectCode::TemplateError);
    assert!(matches!(
        ChatTemplate::new("bad", "{% if %}", specials()),
        Err(Error::Template(_))
    ));
}

#[test]
fn reserved_code_points_in_the_data_are_rejected() {
    let t = compile("{{ messages[0].content }}");
    let e = t
        .render(&[Message::new(Role::User, "a\u{10ABCD}b")], &[], false)
        .unwrap_err();
    assert_eq!(e.code, RejectCode::TemplateError);
    // Plane 15 (icon fonts) is fine.
    assert!(t
        .render(&[Message::new(Role::User, "a\u{F0001}b")], &[], false)
        .is_ok());
}

#[test]
fn generation_tags_and_crlf_templates() {
    // Expected outputs from transformers' jinja2 environment.
    let t = compile("{%- for m in messages %}\r\n{%- generation -%}\r\n{{ m.content }}\r\n{%- endgeneration %}\r\n{% endfor %}");
    let r = render_checked(&t, &[Message::new(Role::Assistant, "hi")], &[], false).unwrap();
    assert_eq!(r.text, "hi");
    let t = compile("{%- for m in messages %}\r\n{% generation %}\r\n{{ m.content }}\r\n{% endgeneration %}\r\n{% endfor %}|");
    let r = render_checked(&t, &[Message::new(Role::Assistant, "hi")], &[], false).unwrap();
    assert_eq!(r.text, "hi\n|");
    assert_eq!(
        replace_generation_tags("{% generation %}x{%- endgeneration -%}"),
        "{% if true %}x{%- endif -%}"
    );
}

#[test]
fn a_template_that_never_ends_is_rejected_within_its_budget() {
    // 10^12 iterations unless the fuel stops it (minijinja caps one range at 10,000).
    let source = "{% for i in range(9999) %}{% for j in range(9999) %}{% for k in range(9999) %}\
                  {{ '' }}{% endfor %}{% endfor %}{% endfor %}\
                  {% for m in messages %}{{ m.content }}{% endfor %}";
    let t = ChatTemplate::new("endless", source, specials()).unwrap();
    let started = std::time::Instant::now();
    let err = t
        .render_plain(&[msg(Role::User, "hi")], &[], false)
        .unwrap_err();
    assert_eq!(err.code, RejectCode::TemplateBudget, "{}", err.message);
    assert!(
        started.elapsed().as_secs_f64() < 10.0,
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn arguments_given_as_text_reach_a_template_that_joins_them_as_text() {
    let source = "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}\
                  {{ c.function.name + ' ' + c.function.arguments }}{% endfor %}\
                  {% else %}{{ m.content }}{% endif %}{% endfor %}";
    let t = ChatTemplate::new("joins", source, specials()).unwrap();
    let mut call = msg(Role::Assistant, "");
    call.tool_calls.push(ToolCall {
        id: None,
        name: "f".into(),
        arguments: json!({"a": 1}),
        arguments_text: Some("{\"a\": 1}".into()),
    });
    let msgs = [msg(Role::User, "hi"), call.clone()];
    assert_eq!(t.render_plain(&msgs, &[], false).unwrap(), "hif {\"a\": 1}");
    let rendered = t.render(&msgs, &[], false).unwrap();
    assert_eq!(rendered.text, "hif {\"a\": 1}");
    // the object alone cannot be joined to a string: the record's own text made the difference
    call.tool_calls[0].arguments_text = None;
    let err = t
        .render_plain(&[msg(Role::User, "hi"), call], &[], false)
        .unwrap_err();
    assert_eq!(err.code, RejectCode::TemplateError);
}
