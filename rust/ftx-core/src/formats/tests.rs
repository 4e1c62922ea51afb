// One thing: the tests of input-format detection and normalization, a few per format and one
// per reject rule; long because there are many formats, each with its own edge cases.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::{json, Value};

use super::*;

fn norm(v: Value) -> Result<(Format, Record), Reject> {
    normalize(v, &FormatOptions::default())
}

/// The messages of an accepted chat record, with the format it was detected as.
fn ok_chat(v: Value) -> (Format, Vec<Message>, Vec<Value>) {
    match norm(v.clone()) {
        Ok((f, Record::Chat { messages, tools })) => (f, messages, tools),
        other => panic!("expected a chat record from {v}, got {other:?}"),
    }
}

fn msgs(v: Value) -> Vec<Message> {
    ok_chat(v).1
}

fn rejected(v: Value) -> Reject {
    match norm(v.clone()) {
        Err(r) => r,
        Ok(rec) => panic!("expected a reject for {v}, got {rec:?}"),
    }
}

fn assert_reject(v: Value, code: RejectCode, needle: &str) {
    let r = rejected(v);
    assert_eq!(r.code, code, "{}", r.message);
    assert!(
        r.message.contains(needle),
        "{:?} lacks {needle:?}",
        r.message
    );
}

fn m(role: Role, content: &str) -> Message {
    Message::new(role, content)
}

fn call(name: &str, args: Value) -> ToolCall {
    ToolCall {
        id: None,
        name: name.into(),
        arguments: args,
        arguments_text: None,
    }
}

// ---------------------------------------------------------------- options

#[test]
fn format_names_round_trip() {
    use Format::*;
    for f in [Messages, Sharegpt, Alpaca, PromptCompletion, Text, Bfcl] {
        assert_eq!(Format::parse(f.as_str()), Some(f));
        assert_eq!(serde_json::to_value(f).unwrap(), json!(f.as_str()));
    }
    assert_eq!(
        Format::parse("prompt-completion"),
        Some(Format::PromptCompletion)
    );
    assert_eq!(Format::parse("ShareGPT"), Some(Format::Sharegpt));
    assert_eq!(Format::parse("xml"), None);
}

#[test]
fn columns_parse() {
    let c = Columns::parse(" instruction = question, output=answer,").unwrap();
    assert_eq!(c.key(Col::Instruction), "question");
    assert_eq!(c.key(Col::Output), "answer");
    assert_eq!(c.key(Col::Input), "input");
    assert!(Columns::parse("").unwrap() == Columns::default());
    assert!(Columns::parse("question")
        .unwrap_err()
        .contains("canonical=source"));
    assert!(Columns::parse("answer=output")
        .unwrap_err()
        .contains("unknown column"));
    assert!(Columns::parse("output=a,output=b")
        .unwrap_err()
        .contains("twice"));
    assert!(Columns::parse("output=").unwrap_err().contains("empty"));
}

#[test]
fn columns_rename_keys() {
    let opts = FormatOptions {
        columns: Columns::parse("instruction=question,output=answer").unwrap(),
        ..Default::default()
    };
    let (f, rec) = normalize(json!({"question": "Q", "answer": "A"}), &opts).unwrap();
    assert_eq!(f, Format::Alpaca);
    let expected = Record::Chat {
        messages: vec![m(Role::User, "Q"), m(Role::Assistant, "A")],
        tools: vec![],
    };
    assert_eq!(rec, expected);
    let opts = FormatOptions {
        columns: Columns::parse("messages=turns,role=speaker,content=body").unwrap(),
        ..Default::default()
    };
    let v =
        json!({"turns": [{"speaker": "user", "body": "Q"}, {"speaker": "assistant", "body": "A"}]});
    assert_eq!(normalize(v, &opts).unwrap().1, expected);
}

#[test]
fn forced_format_overrides_detection() {
    let opts = FormatOptions {
        forced: Some(Format::Text),
        ..Default::default()
    };
    let v = json!({"instruction": "i", "output": "o", "text": "t"});
    assert_eq!(detect(v.as_object().unwrap(), &opts), Some(Format::Text));
    let (f, rec) = normalize(v, &opts).unwrap();
    assert_eq!((f, rec), (Format::Text, Record::Text { text: "t".into() }));
    let opts = FormatOptions {
        forced: Some(Format::Sharegpt),
        ..Default::default()
    };
    let r = normalize(json!({"messages": []}), &opts).unwrap_err();
    assert_eq!(r.code, RejectCode::MissingField);
    assert!(r.message.contains("conversations"), "{}", r.message);
}

// ---------------------------------------------------------------- messages

#[test]
fn messages_plain_and_role_aliases() {
    let (f, got, tools) = ok_chat(json!({"messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": " hi \n", "name": "bob"},
        {"role": "assistant", "content": "hello"},
        {"role": "function", "content": "{}", "name": "f"},
        {"role": "ipython", "content": "42"},
        {"role": "Assistant", "content": "done"},
    ]}));
    assert_eq!(f, Format::Messages);
    assert!(tools.is_empty());
    let roles: Vec<Role> = got.iter().map(|m| m.role).collect();
    use Role::*;
    assert_eq!(roles, [System, User, Assistant, Tool, Tool, Assistant]);
    assert_eq!(got[1].content, " hi \n", "content is never trimmed");
    assert_eq!(got[1].name.as_deref(), Some("bob"));
    assert_eq!(got[3].name.as_deref(), Some("f"));
}

#[test]
fn messages_tool_calls() {
    let got = msgs(json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Oslo\"}"}},
            {"type": "function", "function": {"name": "t", "arguments": {"tz": 1}}},
            {"name": "bare", "arguments": ""}
        ]},
        {"role": "tool", "content": "cold", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is cold."}
    ]}));
    let mut w = call("w", json!({"city": "Oslo"}));
    w.id = Some("c1".into());
    // the text the record gave, for templates that join arguments as a string
    w.arguments_text = Some("{\"city\": \"Oslo\"}".into());
    let expected = vec![w, call("t", json!({"tz": 1})), call("bare", json!({}))];
    assert_eq!(got[1].tool_calls, expected);
    assert_eq!(got[1].content, "");
    assert_eq!(got[2].tool_call_id.as_deref(), Some("c1"));
}

#[test]
fn messages_tool_call_rejects() {
    let with_calls = |calls: Value| {
        json!({"messages": [{"role": "user", "content": "q"},
                            {"role": "assistant", "content": null, "tool_calls": calls}]})
    };
    let bad_args = with_calls(json!([{"function": {"name": "f", "arguments": "{oops"}}]));
    assert_reject(
        bad_args,
        RejectCode::WrongType,
        "messages[1].tool_calls[0].arguments",
    );
    let list_args = with_calls(json!([{"function": {"name": "f", "arguments": "[1]"}}]));
    assert_reject(
        list_args,
        RejectCode::WrongType,
        "expected object, got array",
    );
    let no_name = with_calls(json!([{"function": {"arguments": {}}}]));
    assert_reject(no_name, RejectCode::MissingField, "tool_calls[0].name");
    let not_list = with_calls(json!({"name": "f"}));
    assert_reject(not_list, RejectCode::WrongType, "messages[1].tool_calls");
}

#[test]
fn messages_content_parts() {
    let got = msgs(json!({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "value": "b"}]},
        {"role": "assistant", "content": [
            {"type": "reasoning", "value": "think"},
            {"type": "tool_call", "value": "{\"name\": \"f\", \"arguments\": {\"x\": 1}}"}
        ]},
        {"role": "tool", "content": [{"type": "text", "value": "r"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "ok"}]}
    ]}));
    assert_eq!(got[0].content, "ab");
    assert_eq!(got[1].reasoning.as_deref(), Some("think"));
    assert_eq!(got[1].tool_calls, vec![call("f", json!({"x": 1}))]);
    assert_eq!(got[3].reasoning.as_deref(), Some("hm"));
    assert_eq!(got[3].content, "ok");
}

#[test]
fn messages_media_part_rejected() {
    let v = json!({"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": "a cat"}]});
    assert_reject(
        v,
        RejectCode::WrongType,
        "messages[0].content[0]: content part type \"image_url\"",
    );
}

#[test]
fn messages_reasoning_fields() {
    for key in ["reasoning_content", "reasoning", "thinking"] {
        let got = msgs(json!({"messages": [{"role": "user", "content": "q"},
                                           {"role": "assistant", "content": "a", key: "r"}]}));
        assert_eq!(got[1].reasoning.as_deref(), Some("r"), "{key}");
    }
    let got = msgs(json!({"messages": [{"role": "user", "content": "q"},
                                       {"role": "assistant", "content": "a", "reasoning_content": " "}]}));
    assert_eq!(
        got[1].reasoning, None,
        "whitespace-only reasoning is dropped"
    );
}

#[test]
fn messages_train_opt_out() {
    let conv = |flag: Value| {
        let mut a0 = json!({"role": "assistant", "content": "a0"});
        a0.as_object_mut()
            .unwrap()
            .extend(flag.as_object().unwrap().clone());
        json!({"messages": [{"role": "user", "content": "q", "loss_weight": 0.0}, a0,
                            {"role": "user", "content": "q2"},
                            {"role": "assistant", "content": "a1", "weight": 1}]})
    };
    for flag in [
        json!({"train": false}),
        json!({"weight": 0}),
        json!({"loss_weight": 0.0}),
    ] {
        let got = msgs(conv(flag.clone()));
        assert!(!got[1].train, "{flag}");
        assert!(got[3].train && got[0].train, "{flag}");
    }
    let all_off = json!({"messages": [{"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "a", "train": false}]});
    assert_reject(all_off, RejectCode::NothingToTrain, "opted out");
    let bad = json!({"messages": [{"role": "user", "content": "q"},
                                  {"role": "assistant", "content": "a", "weight": "0"}]});
    assert_reject(
        bad,
        RejectCode::WrongType,
        "messages[1].weight: expected number",
    );
}

#[test]
fn messages_tools_and_llama_factory_variants() {
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {}}});
    let bare = json!({"name": "g", "description": "d", "parameters": {}});
    let base = json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]);
    let (_, _, tools) = ok_chat(json!({"messages": base, "tools": [tool, bare]}));
    assert_eq!(tools, vec![tool.clone(), bare.clone()]);
    let as_string = serde_json::to_string(&json!([tool])).unwrap();
    let (_, _, tools) = ok_chat(json!({"messages": base, "tools": as_string}));
    assert_eq!(tools, vec![tool]);
    assert_reject(
        json!({"messages": base, "tools": "{not json"}),
        RejectCode::WrongType,
        "tools",
    );
    assert_reject(
        json!({"messages": base, "tools": [1]}),
        RejectCode::WrongType,
        "tools[0]",
    );
    // kto: the label is ignored; v1 dpo: the chosen side is the conversation.
    let kto = norm(json!({"messages": base, "label": false})).unwrap();
    let dpo = norm(json!({"chosen_messages": base, "rejected_messages": []})).unwrap();
    assert_eq!(kto, dpo);
    assert_eq!(kto.0, Format::Messages);
}

// ---------------------------------------------------------------- sharegpt

#[test]
fn sharegpt_with_function_calls() {
    let (f, got, tools) = ok_chat(json!({
    "system": "sys",
    "tools": "[{\"name\": \"f\"}]",
    "conversations": [
        {"from": "human", "value": "q"},
        {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {\"a\": 1}}"},
        {"from": "observation", "value": "{\"r\": 2}"},
        {"from": "function_call", "value": "[{\"name\": \"f\", \"arguments\": \"{}\"}, {\"name\": \"g\"}]"},
        {"from": "tool", "value": "x"},
        {"from": "gpt", "value": "answer"}
    ]}));
    assert_eq!(f, Format::Sharegpt);
    assert_eq!(tools, vec![json!({"name": "f"})]);
    assert_eq!(got[0], m(Role::System, "sys"));
    assert_eq!(got[2].role, Role::Assistant);
    assert_eq!(got[2].content, "");
    assert_eq!(got[2].tool_calls, vec![call("f", json!({"a": 1}))]);
    assert_eq!(got[3], m(Role::Tool, "{\"r\": 2}"));
    let mut f = call("f", json!({}));
    f.arguments_text = Some("{}".into());
    assert_eq!(got[4].tool_calls, vec![f, call("g", json!({}))]);
    assert_eq!(got.len(), 7);
}

#[test]
fn sharegpt_bad_function_call() {
    let v = json!({"conversations": [{"from": "human", "value": "q"},
                                     {"from": "function_call", "value": "f(1)"}]});
    assert_reject(
        v,
        RejectCode::WrongType,
        "conversations[1].value: function call is not valid JSON",
    );
}

#[test]
fn sharegpt_tolerates_role_content_and_aliases() {
    let got = msgs(json!({"conversations": [
        {"role": "user", "content": "q"}, {"from": "bot", "value": "a"},
        {"from": "user", "value": "q"}, {"from": "model", "value": "a"},
        {"from": "human", "value": "q"}, {"from": "chatgpt", "value": "a"}]}));
    assert!(got.iter().step_by(2).all(|m| m.role == Role::User));
    assert!(got
        .iter()
        .skip(1)
        .step_by(2)
        .all(|m| m.role == Role::Assistant));
}

#[test]
fn sharegpt_dpo_uses_chosen() {
    for chosen in [
        json!({"from": "gpt", "value": "good"}),
        json!("good"),
        json!({"value": "good"}),
    ] {
        let got = msgs(json!({"conversations": [{"from": "human", "value": "q"}],
                              "chosen": chosen, "rejected": "bad"}));
        assert_eq!(got, vec![m(Role::User, "q"), m(Role::Assistant, "good")]);
    }
}

// ---------------------------------------------------------------- alpaca, prompt/completion, text

#[test]
fn alpaca_variants() {
    let got = msgs(json!({"instruction": "Sum", "input": "1, 2", "output": "3"}));
    assert_eq!(
        got,
        vec![m(Role::User, "Sum\n\n1, 2"), m(Role::Assistant, "3")]
    );
    let got = msgs(json!({"instruction": "Hi", "input": "  ", "output": "Yo", "system": ""}));
    assert_eq!(got, vec![m(Role::User, "Hi"), m(Role::Assistant, "Yo")]);
    let got = msgs(json!({"instruction": "i", "output": "o", "system": "s",
                          "history": [["u1", "a1"], ["u2", "a2"]]}));
    let want: Vec<(Role, &str)> = vec![
        (Role::System, "s"),
        (Role::User, "u1"),
        (Role::Assistant, "a1"),
        (Role::User, "u2"),
        (Role::Assistant, "a2"),
        (Role::User, "i"),
        (Role::Assistant, "o"),
    ];
    let have: Vec<(Role, &str)> = got.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(have, want);
    assert_reject(
        json!({"instruction": "i", "output": "o", "history": [["u"]]}),
        RejectCode::WrongType,
        "history[0]: expected [user, assistant] pair, got array",
    );
    assert_reject(
        json!({"instruction": "i"}),
        RejectCode::MissingField,
        "missing field output",
    );
    assert_reject(
        json!({"instruction": "i", "output": 3}),
        RejectCode::WrongType,
        "output",
    );
    assert_reject(
        json!({"instruction": " ", "output": "o"}),
        RejectCode::EmptyContent,
        "instruction",
    );
    assert_reject(
        json!({"instruction": "i", "output": "\n"}),
        RejectCode::EmptyContent,
        "output",
    );
}

#[test]
fn alpaca_seed_task_uses_first_instance() {
    let got = msgs(
        json!({"id": "t", "instruction": "Convert.", "is_classification": false,
                          "instances": [{"input": "3 ft", "output": "36 in"}, {"input": "x", "output": "y"}]}),
    );
    assert_eq!(
        got,
        vec![
            m(Role::User, "Convert.\n\n3 ft"),
            m(Role::Assistant, "36 in")
        ]
    );
}

#[test]
fn prompt_completion_strings_and_lists() {
    let (f, got, _) = ok_chat(json!({"prompt": "q", "completion": "a"}));
    assert_eq!(f, Format::PromptCompletion);
    assert_eq!(got, vec![m(Role::User, "q"), m(Role::Assistant, "a")]);
    let got = msgs(json!({
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}]}));
    assert_eq!(
        got,
        vec![
            m(Role::System, "s"),
            m(Role::User, "q"),
            m(Role::Assistant, "a")
        ]
    );
    // TRL preference rows: the chosen side is the completion.
    let got = msgs(json!({"prompt": "q", "chosen": "a", "rejected": "b"}));
    assert_eq!(got, vec![m(Role::User, "q"), m(Role::Assistant, "a")]);
    let forced = FormatOptions {
        forced: Some(Format::PromptCompletion),
        ..Default::default()
    };
    let r = normalize(json!({"prompt": "q"}), &forced).unwrap_err();
    assert_eq!(r.code, RejectCode::MissingField);
    assert_reject(
        json!({"prompt": 1, "completion": "a"}),
        RejectCode::WrongType,
        "prompt",
    );
}

#[test]
fn text_records_and_chat_preference() {
    assert_eq!(
        norm(json!({"text": " body ", "meta": 1})).unwrap(),
        (
            Format::Text,
            Record::Text {
                text: " body ".into()
            }
        )
    );
    assert_reject(
        json!({"text": " \n"}),
        RejectCode::EmptyContent,
        "text is empty",
    );
    assert_reject(
        json!({"text": ["a"]}),
        RejectCode::WrongType,
        "text: expected string, got array",
    );
    let (f, _, _) =
        ok_chat(json!({"instruction": "i", "input": "", "output": "o", "text": "rendered"}));
    assert_eq!(f, Format::Alpaca);
}

#[test]
fn bfcl_flattens_turns_and_has_nothing_to_train() {
    let v = json!({"id": "x", "question": [[{"role": "user", "content": "a"}],
                                              [{"role": "user", "content": "b"}]],
                       "function": [{"name": "f", "parameters": {}}]});
    let chat = bfcl(&mut v.as_object().unwrap().clone()).unwrap();
    assert_eq!(chat.messages, vec![m(Role::User, "a"), m(Role::User, "b")]);
    assert_eq!(chat.tools.len(), 1);
    let r = rejected(v);
    assert_eq!(r.code, RejectCode::NothingToTrain);
    assert!(r.message.contains("no assistant turn"), "{}", r.message);
    // A QA-style string question is not BFCL.
    assert_reject(
        json!({"question": "q", "answer": "a"}),
        RejectCode::UnknownFormat,
        "question, answer",
    );
}

// ---------------------------------------------------------------- shared rejects

#[test]
fn generic_rejects() {
    use RejectCode::*;
    assert_reject(json!([1, 2]), UnknownFormat, "JSON array, not an object");
    assert_reject(
        json!({"foo": 1, "bar": 2}),
        UnknownFormat,
        "keys seen: foo, bar",
    );
    assert_reject(json!({}), UnknownFormat, "empty object");
    assert_reject(
        json!({"messages": "hi"}),
        WrongType,
        "messages: expected array of messages, got string",
    );
    assert_reject(
        json!({"messages": []}),
        EmptyContent,
        "messages has no messages",
    );
    assert_reject(
        json!({"messages": [1]}),
        WrongType,
        "messages[0]: expected object, got number",
    );
    let one = |m: Value| json!({"messages": [m, {"role": "assistant", "content": "a"}]});
    assert_reject(
        one(json!({"content": "x"})),
        MissingField,
        "messages[0].role",
    );
    assert_reject(
        one(json!({"role": 1, "content": "x"})),
        WrongType,
        "messages[0].role",
    );
    assert_reject(
        one(json!({"role": "narrator", "content": "x"})),
        UnknownRole,
        "\"narrator\"",
    );
    assert_reject(
        one(json!({"role": "user", "content": 5})),
        WrongType,
        "messages[0].content",
    );
    assert_reject(
        one(json!({"role": "user"})),
        EmptyContent,
        "messages[0] (user): content is missing",
    );
    assert_reject(
        one(json!({"role": "user", "content": null})),
        EmptyContent,
        "missing or null",
    );
    assert_reject(
        one(json!({"role": "system", "content": " \t"})),
        EmptyContent,
        "messages[0] (system): content is empty",
    );
    assert_reject(
        one(json!({"role": "user", "content": "q", "name": 3})),
        WrongType,
        "messages[0].name",
    );
    let no_answer = json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]});
    assert_reject(
        no_answer,
        EmptyContent,
        "messages[1] (assistant): content is empty",
    );
    let no_assistant = json!({"conversations": [{"from": "human", "value": "q"}]});
    assert_reject(no_assistant, NothingToTrain, "no assistant message");
}

#[test]
fn same_conversation_is_the_same_record_in_every_format() {
    let want = norm(json!({"messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "i\n\nin"},
        {"role": "assistant", "content": "o"}]}))
    .unwrap()
    .1;
    let others = [
        json!({"instruction": "i", "input": "in", "output": "o", "system": "s"}),
        json!({"system": "s", "conversations": [{"from": "human", "value": "i\n\nin"}, {"from": "gpt", "value": "o"}]}),
        json!({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "i\n\nin"}],
               "chosen": {"from": "gpt", "value": "o"}}),
        json!({"system": "s", "prompt": "i\n\nin", "completion": "o"}),
        json!({"messages": [
            {"role": "system", "content": [{"type": "text", "value": "s"}], "loss_weight": 0.0},
            {"role": "user", "content": [{"type": "text", "text": "i\n\nin"}], "loss_weight": 0.0},
            {"role": "assistant", "content": [{"type": "text", "value": "o"}], "loss_weight": 1.0}]}),
    ];
    for v in others {
        let got = norm(v.clone()).unwrap().1;
        assert_eq!(got.canonical_bytes(), want.canonical_bytes(), "{v}");
    }
}

// ---------------------------------------------------------------- real datasets

fn data_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/datasets"
    ));
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "note: {} is missing; skipping real-data test",
            dir.display()
        );
        None
    }
}

/// A JSON array or JSONL (BFCL uses JSONL under a .json name), by the first non-space byte.
fn load(rel: &str) -> Option<Vec<Value>> {
    let path = data_dir()?.join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if text.trim_start().starts_with('[') {
        return Some(serde_json::from_str(&text).unwrap());
    }
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

struct Outcome {
    records: Vec<Record>,
    formats: Vec<Format>,
    rejects: Vec<Reject>,
}

fn run_file(rel: &str) -> Option<Outcome> {
    let rows = load(rel)?;
    let mut out = Outcome {
        records: vec![],
        formats: vec![],
        rejects: vec![],
    };
    for row in rows {
        match norm(row) {
            Ok((f, r)) => {
                out.formats.push(f);
                out.records.push(r);
            }
            Err(r) => out.rejects.push(r),
        }
    }
    Some(out)
}

/// Every row accepted, all in `format`; returns the chat records' messages.
fn all_chat(rel: &str, n: usize, format: Format) -> Option<Vec<Vec<Message>>> {
    let out = run_file(rel)?;
    assert!(
        out.rejects.is_empty(),
        "{rel}: {:?}",
        &out.rejects[..out.rejects.len().min(3)]
    );
    assert_eq!(out.records.len(), n, "{rel}");
    assert!(out.formats.iter().all(|f| *f == format), "{rel}");
    let chats = out.records.into_iter().map(|r| match r {
        Record::Chat { messages, .. } => messages,
        Record::Text { .. } => panic!("{rel}: text record"),
    });
    Some(chats.collect())
}

fn contents(ms: &[Message]) -> Vec<(Role, &str)> {
    ms.iter().map(|m| (m.role, m.content.as_str())).collect()
}

#[test]
fn data_alpaca_en() {
    let Some(all) = all_chat("llama_factory/alpaca_en_demo.json", 999, Format::Alpaca) else {
        return;
    };
    assert_eq!(
        contents(&all[554]),
        [
            (Role::User, "Sum up the numbers.\n\n3, 2, 5"),
            (Role::Assistant, "The sum of the numbers is 10.")
        ]
    );
    assert!(all.iter().all(|c| c.len() == 2));
}

#[test]
fn data_alpaca_zh() {
    let Some(all) = all_chat("llama_factory/alpaca_zh_demo.json", 1000, Format::Alpaca) else {
        return;
    };
    assert_eq!(
        contents(&all[608]),
        [
            (Role::User, "回应：“早上好！”"),
            (Role::Assistant, "早上好！")
        ]
    );
}

#[test]
fn data_identity_matches_v1_sft() {
    let Some(identity) = all_chat("llama_factory/identity.json", 91, Format::Alpaca) else {
        return;
    };
    let Some(v1) = all_chat("llama_factory/v1_sft_demo.jsonl", 500, Format::Messages) else {
        return;
    };
    let hello = "Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?";
    assert_eq!(
        contents(&identity[0]),
        [(Role::User, "hi"), (Role::Assistant, hello)]
    );
    // The same chat in LLaMA-Factory v1 form (parts, loss_weight) normalizes identically.
    assert_eq!(v1[0], identity[0]);
}

#[test]
fn data_glaive_toolcall() {
    for (rel, with_calls, calls) in [
        ("llama_factory/glaive_toolcall_en_demo.json", 153, 211),
        ("llama_factory/glaive_toolcall_zh_demo.json", 157, 216),
    ] {
        let Some(out) = run_file(rel) else { return };
        assert!(out.rejects.is_empty(), "{rel}: {:?}", out.rejects.first());
        assert_eq!(out.records.len(), 300);
        let mut n_records = 0;
        let mut n_calls = 0;
        let mut n_tools = 0;
        for r in &out.records {
            let Record::Chat { messages, tools } = r else {
                panic!("{rel}")
            };
            let k: usize = messages.iter().map(|m| m.tool_calls.len()).sum();
            n_records += usize::from(k > 0);
            n_calls += k;
            n_tools += usize::from(!tools.is_empty());
        }
        assert_eq!((n_records, n_calls), (with_calls, calls), "{rel}");
        assert!(n_tools >= 190, "{rel}: {n_tools}");
    }
    let Some(out) = run_file("llama_factory/glaive_toolcall_en_demo.json") else {
        return;
    };
    let Record::Chat { messages, tools } = &out.records[0] else {
        panic!()
    };
    assert_eq!(tools[0]["name"], "search_recipes");
    assert_eq!(messages[3].role, Role::Assistant);
    assert_eq!(messages[3].content, "");
    let args = json!({"ingredients": ["chicken", "bell peppers", "rice"]});
    assert_eq!(messages[3].tool_calls, vec![call("search_recipes", args)]);
    assert_eq!(messages[4].role, Role::Tool);
}

#[test]
fn data_dpo_en_matches_v1_dpo() {
    let Some(dpo) = all_chat("llama_factory/dpo_en_demo.json", 300, Format::Sharegpt) else {
        return;
    };
    assert!(dpo
        .iter()
        .all(|c| c.last().map(|m| m.role) == Some(Role::Assistant)));
    assert_eq!(
        contents(&dpo[134]),
        [
            (Role::User, "Obtain the result by calculating 6778576-84834150134. Only respond with math and no words."),
            (Role::Assistant, "6778576 - 84834150134 = -84827371558")
        ]
    );
    let Some(v1) = all_chat("llama_factory/v1_dpo_demo.jsonl", 10, Format::Messages) else {
        return;
    };
    // The same preference pair in both files: the chosen conversations must dedup together.
    assert_eq!(dpo[43], v1[0]);
    assert_eq!(v1[0].len(), 3);
}

#[test]
fn data_kto_en() {
    let Some(all) = all_chat("llama_factory/kto_en_demo.json", 300, Format::Messages) else {
        return;
    };
    assert_eq!(
        contents(&all[147]),
        [
            (
                Role::User,
                "What is the result of 660-549695? Only respond with math and no words."
            ),
            (Role::Assistant, "660 - 549695 = -549035")
        ]
    );
}

#[test]
fn data_reason_tool_use() {
    let Some(out) = run_file("llama_factory/reason_tool_use_demo_50.jsonl") else {
        return;
    };
    assert!(out.rejects.is_empty(), "{:?}", out.rejects.first());
    assert_eq!(out.records.len(), 50);
    let (mut calls, mut reasoned, mut with_tools) = (0, 0, 0);
    for r in &out.records {
        let Record::Chat { messages, tools } = r else {
            panic!()
        };
        with_tools += usize::from(!tools.is_empty());
        calls += messages.iter().map(|m| m.tool_calls.len()).sum::<usize>();
        reasoned += messages.iter().filter(|m| m.reasoning.is_some()).count();
    }
    // Two rows carry `"tools": "[]"`.
    assert_eq!((calls, reasoned, with_tools), (68, 112, 48));
    let Record::Chat { messages, tools } = &out.records[1] else {
        panic!()
    };
    assert_eq!(tools[0]["function"]["name"], "get_movie_details");
    let a = &messages[2];
    assert_eq!((a.role, a.content.as_str()), (Role::Assistant, ""));
    assert!(a
        .reasoning
        .as_deref()
        .unwrap()
        .starts_with("Alright, the user wants information"));
    assert_eq!(
        a.tool_calls,
        vec![call("get_movie_details", json!({"title": "Inception"}))]
    );
}

#[test]
fn data_c4_text() {
    let Some(out) = run_file("llama_factory/c4_demo.jsonl") else {
        return;
    };
    assert!(out.rejects.is_empty());
    assert_eq!(out.records.len(), 300);
    assert!(out.formats.iter().all(|f| *f == Format::Text));
    let Record::Text { text } = &out.records[0] else {
        panic!()
    };
    assert!(text.starts_with("Don\u{2019}t think you need all the bells and whistles? No problem."));
}

#[test]
fn data_fastchat_dummy() {
    let Some(all) = all_chat("fastchat/dummy_conversation.json", 500, Format::Sharegpt) else {
        return;
    };
    assert_eq!(all.iter().map(Vec::len).sum::<usize>(), 2000);
    assert_eq!(contents(&all[0])[..2], [
        (Role::User, "Who are you?"),
        (Role::Assistant, "I am Vicuna, a language model trained by researchers from Large Model Systems Organization (LMSYS).")
    ]);
}

#[test]
fn data_torchtune() {
    // alpaca_tiny carries a pre-rendered `text` too: the chat form wins.
    let Some(all) = all_chat("torchtune/alpaca_tiny.json", 100, Format::Alpaca) else {
        return;
    };
    assert_eq!(all[0][0].content, "Give three tips for staying healthy.");
    let Some(chat) = all_chat("torchtune/chat_tiny.json", 1, Format::Sharegpt) else {
        return;
    };
    assert_eq!(
        contents(&chat[0]),
        [
            (Role::System, "You are an AI assistant."),
            (Role::User, "What is the meaning of life?"),
            (Role::Assistant, "The meaning of life is 42."),
            (Role::User, "That's ridiculous."),
            (Role::Assistant, "I agree.")
        ]
    );
}

#[test]
fn data_stanford_seed_tasks() {
    let Some(all) = all_chat("stanford_alpaca/seed_tasks.jsonl", 175, Format::Alpaca) else {
        return;
    };
    assert_eq!(
        contents(&all[58]),
        [
            (
                Role::User,
                "Convert the following measurement.\n\n3 ft = _____ in."
            ),
            (Role::Assistant, "3 ft = 36 in.")
        ]
    );
}

#[test]
fn data_bfcl() {
    for (rel, n, user_msgs) in [
        ("bfcl/BFCL_v4_simple_python.json", 400, 400),
        ("bfcl/BFCL_v4_multi_turn_base.json", 200, 734),
    ] {
        let Some(rows) = load(rel) else { return };
        assert_eq!(rows.len(), n, "{rel}");
        let mut flattened = 0;
        for mut row in rows {
            let obj = row.as_object_mut().unwrap();
            assert_eq!(
                detect(obj, &FormatOptions::default()),
                Some(Format::Bfcl),
                "{rel}"
            );
            flattened += bfcl(&mut obj.clone()).unwrap().messages.len();
            let r = norm(row).unwrap_err();
            assert_eq!(r.code, RejectCode::NothingToTrain, "{rel}: {}", r.message);
            assert!(r.message.contains("no assistant turn"));
        }
        assert_eq!(flattened, user_msgs, "{rel}");
    }
}
