// One thing: the tests of the encoder (ids equal transformers', masks from spans, end-of-turn
// rules, plain text, model folders), on the real tokenizers beside the repo.
// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::conversation::ToolCall;
use crate::template::tests::{conversations, data_dir, specials};
use crate::template::{builtin, ChatTemplate, SpecialTokens};
use serde_json::Value as Json;
use std::path::PathBuf;

/// The trained stretches of a record, decoded, e.g. `["Hello!<|eot_id|>"]`.
fn trained(enc: &Encoder, e: &Encoded) -> Vec<String> {
    let mut runs = Vec::new();
    let mut run: Vec<u32> = Vec::new();
    for (&id, &m) in e.ids.iter().zip(&e.mask).chain([(&0, &0)]) {
        if m == 1 {
            run.push(id);
        } else if !run.is_empty() {
            runs.push(enc.tokenizer().decode(&run, false).unwrap());
            run.clear();
        }
    }
    runs
}

fn model(name: &str) -> Option<(Encoder, ModelFiles, PathBuf)> {
    let dir = data_dir()?.join("tokenizers").join(name);
    let (enc, files) = Encoder::from_model_dir(&dir).unwrap();
    Some((enc, files, dir))
}

fn chat(
    enc: &Encoder,
    t: &ChatTemplate,
    msgs: &[Message],
    tools: &[Json],
    on: TrainOn,
) -> Result<Encoded, Reject> {
    let r = t.render(msgs, tools, false)?;
    enc.encode_chat(&r, msgs, on)
}

#[allow(dead_code)]
fn show(enc: &Encoder, e: &Encoded) -> String {
    let mut out = String::new();
    let mut cur = 2u8;
    for (&id, &m) in e.ids.iter().zip(&e.mask) {
        if m != cur {
            out.push_str(if m == 1 { "[[" } else { "]]" });
            cur = m;
        }
        out.push_str(&enc.tokenizer().decode(&[id], false).unwrap());
    }
    if cur == 1 {
        out.push_str("]]");
    }
    out
}

/// Writes ids and masks for the real tokenizers to `$FTX_ENCODE_DUMP`, for comparison with
/// transformers during development.
#[test]
#[ignore]
fn dump_encodings() {
    let Ok(out) = std::env::var("FTX_ENCODE_DUMP") else {
        return;
    };
    let Some(data) = data_dir() else { return };
    let mut lines = String::new();
    let ct = data.join("chat_templates");
    let cases = [
        ("qwen3", None),
        ("qwen3", Some(ct.join("trl/qwen3_training.jinja"))),
        (
            "qwen3",
            Some(data.join("tokenizers/qwen2_5/chat_template.jinja")),
        ),
        ("qwen3", Some(ct.join("trl/qwen2_5_training.jinja"))),
        ("llama3", None),
        ("llama3", Some(ct.join("trl/llama3_training.jinja"))),
        (
            "llama3",
            Some(data.join("tokenizers/llama3/chat_template.llama-3.1-8b-instruct.jinja")),
        ),
        (
            "llama3",
            Some(data.join("tokenizers/llama3/chat_template.llama-3.2-3b-instruct.jinja")),
        ),
    ];
    for (model, file) in cases {
        let dir = data.join("tokenizers").join(model);
        let (enc, files) = Encoder::from_model_dir(&dir).unwrap();
        let src = match &file {
            Some(f) => fs_err::read_to_string(f).unwrap(),
            None => files.template.clone().unwrap(),
        };
        let t = ChatTemplate::new(model, &src, files.specials.clone()).unwrap();
        let convs = conversations()
            .into_iter()
            .chain(crate::template::tests::extra_conversations());
        for (name, msgs, tools) in convs {
            let plain: Vec<serde_json::Value> = msgs
                .iter()
                .map(|m| crate::template::message_json(m, None, Default::default()))
                .collect();
            let res = t
                .render(&msgs, &tools, false)
                .and_then(|r| enc.encode_chat(&r, &msgs, TrainOn::Assistant));
            let (ids, mask, error) = match res {
                Ok(e) => (Some(e.ids), Some(e.mask), None),
                Err(e) => (None, None, Some(e.message)),
            };
            let row = serde_json::json!({"model": model, "file": file, "template": src, "conv": name,
                "messages": plain, "tools": tools, "ids": ids, "mask": mask, "error": error});
            lines.push_str(&row.to_string());
            lines.push('\n');
        }
    }
    fs_err::write(out, lines).unwrap();
}

// Expected ids from transformers 5.23 (`AutoTokenizer.apply_chat_template(tokenize=True)`), and
// the `assistant_masks` it computes with TRL's `llama3_training.jinja` (`{% generation %}`).
const LLAMA3_SINGLE: [u32; 36] = [
    128000, 128006, 9125, 128007, 271, 2675, 527, 264, 11190, 18328, 13, 128009, 128006, 882,
    128007, 271, 3923, 374, 220, 17, 10, 17, 30, 128009, 128006, 78191, 128007, 271, 17, 10, 17,
    17239, 220, 19, 13, 128009,
];
const LLAMA3_SINGLE_HF_MASK_FROM: usize = 28;
const QWEN3_MULTI: [u32; 54] = [
    151644, 872, 198, 13048, 1052, 0, 151645, 198, 151644, 77091, 198, 9707, 0, 2585, 646, 358,
    1492, 30, 151645, 198, 151644, 872, 198, 40451, 752, 264, 21646, 13, 151645, 198, 151644,
    77091, 198, 151667, 271, 151668, 271, 10234, 1521, 279, 16158, 5312, 279, 5636, 5267, 1249,
    633, 311, 279, 1008, 3108, 13, 151645, 198,
];
const MISTRAL_MULTI: [u32; 50] = [
    1, 28705, 733, 16289, 28793, 15359, 736, 28808, 733, 28748, 16289, 28793, 22557, 28808, 1602,
    541, 315, 1316, 28804, 2, 28705, 733, 16289, 28793, 15259, 528, 264, 13015, 28723, 733, 28748,
    16289, 28793, 4315, 863, 272, 13088, 3893, 272, 3878, 28804, 13, 1551, 625, 298, 272, 799,
    2081, 28723, 2,
];

#[test]
fn llama3_ids_and_mask_match_transformers() {
    let Some((enc, files, dir)) = model("llama3") else {
        return;
    };
    assert_eq!(files.specials.bos.as_deref(), Some("<|begin_of_text|>"));
    assert_eq!(files.specials.eos.as_deref(), Some("<|eot_id|>"));
    let (_, single, _) = conversations().remove(0);
    let t = ChatTemplate::new(
        "llama3",
        files.template.as_deref().unwrap(),
        files.specials.clone(),
    )
    .unwrap();
    let e = chat(&enc, &t, &single, &[], TrainOn::Assistant).unwrap();
    assert_eq!(e.ids, LLAMA3_SINGLE);
    // One BOS: the template writes it, the tokenizer adds none.
    assert_eq!(e.ids.iter().filter(|&&i| i == 128000).count(), 1);
    let hf_mask: Vec<u8> = (0..e.ids.len())
        .map(|i| u8::from(i >= LLAMA3_SINGLE_HF_MASK_FROM))
        .collect();
    assert_eq!(e.mask, hf_mask);
    let training = data_dir()
        .unwrap()
        .join("chat_templates/trl/llama3_training.jinja");
    let t2 = ChatTemplate::new(
        "t",
        &fs_err::read_to_string(training).unwrap(),
        files.specials,
    )
    .unwrap();
    assert_eq!(
        chat(&enc, &t2, &single, &[], TrainOn::Assistant).unwrap(),
        e
    );
    assert_eq!(files.tokenizer_sha256.len(), 64);
    let _ = dir;
}

#[test]
fn llama3_masks_assistant_text_and_eot_only() {
    let Some((enc, files, dir)) = model("llama3") else {
        return;
    };
    let t = ChatTemplate::new(
        "l",
        files.template.as_deref().unwrap(),
        files.specials.clone(),
    )
    .unwrap();
    let (_, multi, _) = conversations().remove(1);
    let e = chat(&enc, &t, &multi, &[], TrainOn::Assistant).unwrap();
    assert_eq!(
        trained(&enc, &e),
        [
            "Hello! How can I help?<|eot_id|>",
            "Why did the chicken cross the road?\nTo get to the other side.<|eot_id|>"
        ]
    );
    let e = chat(&enc, &t, &multi, &[], TrainOn::Last).unwrap();
    assert_eq!(
        trained(&enc, &e),
        ["Why did the chicken cross the road?\nTo get to the other side.<|eot_id|>"]
    );
    let e = chat(&enc, &t, &multi, &[], TrainOn::All).unwrap();
    assert!(e.mask.iter().all(|&m| m == 1));
    let mut opted_out = multi.clone();
    opted_out[1].train = false;
    let e = chat(&enc, &t, &opted_out, &[], TrainOn::Assistant).unwrap();
    assert_eq!(
        trained(&enc, &e),
        ["Why did the chicken cross the road?\nTo get to the other side.<|eot_id|>"]
    );
    opted_out[3].train = false;
    let err = chat(&enc, &t, &opted_out, &[], TrainOn::Assistant).unwrap_err();
    assert_eq!(err.code, RejectCode::NothingToTrain);
    // The last assistant opted out: Last trains nothing.
    let err = chat(&enc, &t, &opted_out, &[], TrainOn::Last).unwrap_err();
    assert_eq!(err.code, RejectCode::NothingToTrain);
    // Llama 3.1 with a tool call: the call's JSON and <|eot_id|> are trained, the ipython result not.
    let l31 =
        fs_err::read_to_string(dir.join("chat_template.llama-3.1-8b-instruct.jinja")).unwrap();
    let t = ChatTemplate::new("l31", &l31, files.specials.clone()).unwrap();
    let (_, msgs, tools) = conversations().remove(2);
    let e = chat(&enc, &t, &msgs, &tools, TrainOn::Assistant).unwrap();
    assert_eq!(
        trained(&enc, &e),
        [
            "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"Paris\"}}<|eot_id|>",
            "It is 22 degrees in Paris.<|eot_id|>"
        ]
    );
    // The plain Llama 3 template has no tool calls: the call is not in the text.
    let t = ChatTemplate::new("l", files.template.as_deref().unwrap(), files.specials).unwrap();
    let err = chat(&enc, &t, &msgs, &tools, TrainOn::Assistant).unwrap_err();
    assert_eq!(err.code, RejectCode::MaskNotFound);
}

#[test]
fn qwen3_ids_and_masks() {
    let Some((enc, files, _)) = model("qwen3") else {
        return;
    };
    assert_eq!(files.add_bos_token, Some(false));
    assert_eq!(files.specials.bos, None);
    let t = ChatTemplate::new(
        "q",
        files.template.as_deref().unwrap(),
        files.specials.clone(),
    )
    .unwrap();
    let (_, multi, _) = conversations().remove(1);
    let e = chat(&enc, &t, &multi, &[], TrainOn::Assistant).unwrap();
    assert_eq!(e.ids, QWEN3_MULTI);
    assert_eq!(
        trained(&enc, &e),
        [
            "Hello! How can I help?<|im_end|>",
            "<think>\n\n</think>\n\nWhy did the chicken cross the road?\nTo get to the other side.<|im_end|>"
        ]
    );
    let (_, msgs, tools) = conversations().remove(2);
    let e = chat(&enc, &t, &msgs, &tools, TrainOn::Assistant).unwrap();
    assert_eq!(
        trained(&enc, &e),
        [
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call><|im_end|>",
            "<think>\n\n</think>\n\nIt is 22 degrees in Paris.<|im_end|>"
        ]
    );
    // Byte offsets, not chars: multi-byte text is masked exactly.
    let msgs = [
        Message::new(Role::User, "naïve café?"),
        Message::new(Role::Assistant, "Oui — très bien 🎉 東京"),
    ];
    let e = chat(&enc, &t, &msgs, &[], TrainOn::Assistant).unwrap();
    assert_eq!(
        trained(&enc, &e),
        ["<think>\n\n</think>\n\nOui — très bien 🎉 東京<|im_end|>"]
    );
}

#[test]
fn mistral_inst_template_trains_reply_and_eos() {
    let Some(data) = data_dir() else { return };
    let dir = data.join("tokenizers/mistral");
    let (enc, files) = Encoder::from_model_dir(&dir.join("hf_mistral_7b_v0.1")).unwrap();
    assert_eq!(files.template, None);
    let src = fs_err::read_to_string(dir.join("chat_template.axolotl_mistral_v1.jinja")).unwrap();
    let t = ChatTemplate::new("m", &src, files.specials).unwrap();
    let (_, multi, _) = conversations().remove(1);
    let e = chat(&enc, &t, &multi, &[], TrainOn::Assistant).unwrap();
    assert_eq!(e.ids, MISTRAL_MULTI);
    // "▁Hello" carries the space after [/INST]; </s> follows the reply directly.
    assert_eq!(
        trained(&enc, &e),
        [
            "Hello! How can I help?</s>",
            "Why did the chicken cross the road?\nTo get to the other side.</s>"
        ]
    );
}

#[test]
fn builtin_chatml_with_a_base_tokenizer() {
    let Some((enc, _, _)) = model("qwen3") else {
        return;
    };
    let t = ChatTemplate::new("chatml", builtin("chatml").unwrap(), specials()).unwrap();
    let (_, msgs, tools) = conversations().remove(2);
    let e = chat(&enc, &t, &msgs, &tools, TrainOn::Last).unwrap();
    assert_eq!(trained(&enc, &e), ["It is 22 degrees in Paris.<|im_end|>"]);
}

#[test]
fn an_eos_right_after_the_end_token_is_trained_too() {
    // Command R7B ends a reply with `<|END_RESPONSE|><|END_OF_TURN_TOKEN|>` and stops on the
    // second (its EOS); Qwen3's tokenizer stands in, with `<|im_end|>` as the EOS.
    let Some((enc, _, _)) = model("qwen3") else {
        return;
    };
    let src = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% if m.role == 'assistant' %}<|endoftext|>{% endif %}<|im_end|>\n{% endfor %}";
    let t = ChatTemplate::new("t", src, specials()).unwrap();
    let msgs = [
        Message::new(Role::User, "hi"),
        Message::new(Role::Assistant, "yo"),
        Message::new(Role::User, "again"),
        Message::new(Role::Assistant, "ok"),
    ];
    let e = chat(&enc, &t, &msgs, &[], TrainOn::Assistant).unwrap();
    assert_eq!(
        trained(&enc, &e),
        ["yo<|endoftext|><|im_end|>", "ok<|endoftext|><|im_end|>"]
    );
    // Without an EOS in the config, the turn ends at the first special token, as before.
    let plain = Encoder::from_file(
        &data_dir()
            .unwrap()
            .join("tokenizers/qwen3/tokenizer.json.gz"),
    )
    .unwrap();
    let e = chat(&plain, &t, &msgs, &[], TrainOn::Assistant).unwrap();
    assert_eq!(trained(&plain, &e), ["yo<|endoftext|>", "ok<|endoftext|>"]);
}

#[test]
fn every_eos_of_the_generation_config_is_trained_after_the_end_token() {
    // A reply closed by `<|im_end|><|endoftext|>`: the config's EOS is `<|im_end|>`, so the
    // second token is trained only where generation_config.json lists it (and the model must
    // learn to write it to stop there).
    let Some(data) = data_dir() else { return };
    let src = data.join("tokenizers/qwen3");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for name in ["tokenizer.json.gz", "tokenizer_config.json"] {
        fs_err::copy(src.join(name), dir.join(name)).unwrap();
    }
    let tpl = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% if m.role == 'assistant' %}<|endoftext|>{% endif %}\n{% endfor %}";
    let t = ChatTemplate::new("t", tpl, specials()).unwrap();
    let msgs = [
        Message::new(Role::User, "hi"),
        Message::new(Role::Assistant, "yo"),
    ];
    let replies = |dir: &Path| {
        let (enc, files) = Encoder::from_model_dir(dir).unwrap();
        let e = chat(&enc, &t, &msgs, &[], TrainOn::Assistant).unwrap();
        (trained(&enc, &e), files.generation_eos)
    };
    assert_eq!(replies(dir), (vec!["yo<|im_end|>".to_string()], vec![]));
    let generation = dir.join("generation_config.json");
    fs_err::write(&generation, r#"{"eos_token_id": [151645, 151643]}"#).unwrap();
    assert_eq!(
        replies(dir),
        (
            vec!["yo<|im_end|><|endoftext|>".to_string()],
            vec![151643, 151645]
        )
    );
    fs_err::write(&generation, r#"{"eos_token_id": 151643}"#).unwrap();
    assert_eq!(replies(dir).1, [151643]);
    fs_err::write(&generation, r#"{"eos_token_id": ["</s>"]}"#).unwrap();
    let err = Encoder::from_model_dir(dir).unwrap_err().to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("is not a token id"),
        "{err}"
    );
}

#[test]
fn unclosed_tool_calls_extend_to_the_first_special_token() {
    let Some((enc, _, _)) = model("qwen3") else {
        return;
    };
    // A template whose closing cannot be learned: it refuses tool results, so the probe fails.
    let src = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no') }}{% endif %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}CALL {{ m.tool_calls[0].function.name }}({{ m.tool_calls[0].function.arguments | tojson }}){% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}";
    let t = ChatTemplate::new("t", src, specials()).unwrap();
    let mut call = Message::new(Role::Assistant, "");
    call.tool_calls.push(ToolCall {
        id: None,
        name: "f".into(),
        arguments: serde_json::json!({"x": 1}),
        arguments_text: None,
    });
    let msgs = [Message::new(Role::User, "go"), call];
    let r = t.render(&msgs, &[], false).unwrap();
    assert_eq!(
        r.spans.last().unwrap().tail,
        crate::template::Tail::ToolCall
    );
    let e = enc.encode_chat(&r, &msgs, TrainOn::Assistant).unwrap();
    assert_eq!(trained(&enc, &e), ["CALL f({\"x\": 1})<|im_end|>"]);
}

#[test]
fn text_gets_the_post_processors_specials() {
    let Some((l3, _, _)) = model("llama3") else {
        return;
    };
    let Some((q3, _, _)) = model("qwen3") else {
        return;
    };
    let e = l3.encode_text("Hello world").unwrap();
    assert_eq!(e.ids, [128000, 9906, 1917]);
    assert_eq!(e.mask, [1, 1, 1]);
    assert_eq!(q3.encode_text("Hello world").unwrap().ids, [9707, 1879]);
    assert_eq!(
        q3.encode_text("").unwrap_err().code,
        RejectCode::NothingToTrain
    );
}

#[test]
fn model_dir_files_and_overrides() {
    let Some(data) = data_dir() else { return };
    let src = data.join("tokenizers/mistral/hf_mistral_7b_v0.1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let json = fs_err::read(src.join("tokenizer.json")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &json).unwrap();
    fs_err::write(dir.join("tokenizer.json.gz"), gz.finish().unwrap()).unwrap();
    let config = serde_json::json!({
        "add_bos_token": true, "add_eos_token": true,
        "bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>",
        "unk_token": {"content": "<unk>"}, "pad_token": null,
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
    });
    fs_err::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let (enc, files) = Encoder::from_model_dir(dir).unwrap();
    let plain = Encoder::from_file(&src.join("tokenizer.json")).unwrap();
    assert_eq!(files.template.as_deref(), Some("D"));
    assert_eq!(
        files.specials,
        SpecialTokens {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
            pad: None,
            unk: Some("<unk>".into())
        }
    );
    assert_eq!(
        (files.add_bos_token, files.add_eos_token),
        (Some(true), Some(true))
    );
    let digest = format!("{:x}", Sha256::digest(&json));
    assert_eq!(files.tokenizer_sha256, digest);
    // add_eos_token appends </s> to pretraining text; the tokenizer file alone only adds <s>.
    assert_eq!(
        enc.encode_text("Hello world").unwrap().ids,
        [1, 22557, 1526, 2]
    );
    assert_eq!(
        plain.encode_text("Hello world").unwrap().ids,
        [1, 22557, 1526]
    );
    fs_err::write(dir.join("chat_template.json"), r#"{"chat_template": "J"}"#).unwrap();
    assert_eq!(
        Encoder::from_model_dir(dir).unwrap().1.template.as_deref(),
        Some("J")
    );
    fs_err::write(dir.join("chat_template.jinja"), "K").unwrap();
    assert_eq!(
        Encoder::from_model_dir(dir).unwrap().1.template.as_deref(),
        Some("K")
    );
    let no_default = serde_json::json!({"chat_template": [{"name": "a", "template": "A"}]});
    fs_err::write(dir.join("tokenizer_config.json"), no_default.to_string()).unwrap();
    assert!(matches!(
        Encoder::from_model_dir(dir),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Encoder::from_model_dir(&dir.join("nope")),
        Err(Error::Config(_))
    ));
}

/// Rough throughput of render + encode against tokenization alone
/// (`cargo test --release -p ftx-core --lib speed -- --ignored --nocapture`).
#[test]
#[ignore]
fn speed() {
    let Some((enc, files, _)) = model("qwen3") else {
        return;
    };
    let t = ChatTemplate::new("q", files.template.as_deref().unwrap(), files.specials).unwrap();
    let convs: Vec<_> = conversations()
        .into_iter()
        .chain(crate::template::tests::extra_conversations())
        .collect();
    let n = 3000;
    let start = std::time::Instant::now();
    let rendered: Vec<_> = (0..n)
        .map(|i| {
            let (_, m, tools) = &convs[i % convs.len()];
            t.render(m, tools, false).unwrap()
        })
        .collect();
    let render = start.elapsed();
    let start = std::time::Instant::now();
    for (i, r) in rendered.iter().enumerate() {
        let (_, m, _) = &convs[i % convs.len()];
        enc.encode_chat(r, m, TrainOn::Assistant).unwrap();
    }
    let encode = start.elapsed();
    let start = std::time::Instant::now();
    for r in &rendered {
        enc.tokenizer().encode_fast(r.text.as_str(), false).unwrap();
    }
    let tokenize = start.elapsed();
    let bytes: usize = rendered.iter().map(|r| r.text.len()).sum();
    println!("{n} records, {bytes} bytes: render {render:?}, encode_chat {encode:?}, encode_fast alone {tokenize:?}");
}

#[test]
fn shared_across_threads() {
    fn check<T: Send + Sync>() {}
    check::<Encoder>();
    check::<ChatTemplate>();
}

fn call(name: &str) -> Message {
    let mut call = Message::new(Role::Assistant, "");
    call.tool_calls.push(ToolCall {
        id: Some("call12345".into()),
        name: name.into(),
        arguments: serde_json::json!({"city": "Paris"}),
        arguments_text: None,
    });
    call
}

fn tool_result(content: &str) -> Message {
    let mut m = Message::new(Role::Tool, content);
    m.tool_call_id = Some("call12345".into());
    m
}

#[test]
fn the_token_that_opens_the_next_turn_is_never_trained() {
    let Some((enc, _, _)) = model("qwen3") else {
        return;
    };
    // Turns open with a special token and a tool-call turn has no end token; the probe cannot
    // learn the closing (the template refuses a tool result after a call as the last message),
    // so the tail runs to the first special token: the one that opens the tool's turn.
    let src = "{% for m in messages %}{% if loop.last and m.role == 'tool' %}{{ raise_exception('no') }}{% endif %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}CALL {{ m.tool_calls[0].function.name }}({{ m.tool_calls[0].function.arguments | tojson }})\n{% elif m.role == 'assistant' %}{{ m.content }}\n{% else %}{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}";
    let t = ChatTemplate::new("t", src, specials()).unwrap();
    let msgs = [
        Message::new(Role::User, "go"),
        call("f"),
        tool_result("sunny"),
        Message::new(Role::Assistant, "It is sunny."),
        Message::new(Role::User, "thanks"),
    ];
    let e = chat(&enc, &t, &msgs, &[], TrainOn::Assistant).unwrap();
    // Neither the call nor the reply (which has no end token either) trains `<|im_start|>`.
    assert_eq!(
        trained(&enc, &e),
        ["CALL f({\"city\": \"Paris\"})\n", "It is sunny.\n"]
    );
}

#[test]
fn a_call_only_turn_trains_no_second_assistant_header() {
    let Some(data) = data_dir() else { return };
    let Some((enc, _, _)) = model("qwen3") else {
        return;
    };
    // DeepSeek-R1-Distill writes the calls and `<｜end▁of▁sentence｜>`, then, for content that
    // `is not none`, `<｜Assistant｜>` + content + `<｜end▁of▁sentence｜>` again.
    let path = data.join("chat_templates/llama_cpp/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja");
    let t = ChatTemplate::new("r1", &std::fs::read_to_string(path).unwrap(), specials()).unwrap();
    let end = "<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
    for null in [true, false] {
        let mut c = call("get_weather");
        c.content_null = null;
        let msgs = [
            Message::new(Role::User, "Weather in Paris?"),
            c,
            tool_result("sunny"),
            Message::new(Role::Assistant, "It is sunny."),
        ];
        let r = t.render(&msgs, &[], false).unwrap();
        // Both the record's `null` (which transformers drops, leaving content undefined, so
        // `is not none`) and its `""` render the second turn; it is not trained.
        assert!(
            r.text.contains(&format!("{end}<｜Assistant｜>")),
            "{}",
            r.text
        );
        // Qwen3's BPE stands in, so the markers are several tokens each, the last `<` of one
        // shared with the next marker's first: compare text.
        let e = enc.encode_chat(&r, &msgs, TrainOn::Assistant).unwrap();
        let got = trained(&enc, &e);
        assert!(got[0].contains(end), "{got:?}");
        assert!(!got.iter().any(|s| s.contains("Assistant")), "{got:?}");
    }
}
