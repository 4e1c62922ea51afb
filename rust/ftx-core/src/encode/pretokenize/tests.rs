// One thing: the tests of ftx's pre-tokenizer, which must split exactly as the library's does
// (every real tokenizer and dataset beside the repo, llama.cpp's test vectors, edge cases).
// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::conversation::Record;
use crate::encode::model_files::{read_maybe_gz, token_string};
use crate::encode::{Direct, Tokenizer};
use crate::formats::{normalize, FormatOptions};
use crate::template::tests::data_dir;
use crate::template::{ChatTemplate, SpecialTokens};
use serde_json::Value as Json;

const PATTERNS: [&str; 2] = [LLAMA3_PATTERN, QWEN2_PATTERN];

/// The matched pieces, as the library's regex splits them.
fn by_regex(pattern: &str, text: &str) -> Vec<(Offsets, bool)> {
    let regex = SysRegex::new(pattern).unwrap();
    (&regex).find_matches(text).unwrap()
}

fn by_scanner(split: &Gpt4Split, text: &str) -> Vec<(Offsets, bool)> {
    split.find_matches(text).unwrap()
}

fn pieces(pattern: &str, text: &str) -> Vec<String> {
    let split = Gpt4Split::new(pattern).unwrap();
    by_scanner(&split, text)
        .into_iter()
        .map(|((a, b), _)| text[a..b].to_string())
        .collect()
}

/// Every string of `len` characters over `alphabet`, each checked against the regex.
fn check_all(split: &Gpt4Split, pattern: &str, alphabet: &[char], len: u32) {
    let regex = SysRegex::new(pattern).unwrap();
    let mut text = String::new();
    for mut n in 0..alphabet.len().pow(len) {
        text.clear();
        for _ in 0..len {
            text.push(alphabet[n % alphabet.len()]);
            n /= alphabet.len();
        }
        let want = (&regex).find_matches(&text).unwrap();
        assert_eq!(by_scanner(split, &text), want, "{pattern}\n{text:?}");
    }
}

#[test]
fn splits_as_the_regex_on_tricky_strings() {
    let cases = [
        "",
        "'sun",
        "'S'T'Re'VE'm'LL'D'x'l'",
        "don't I'll we've they're she'd",
        "'ſ 'K 'ſx 'St 're'rÉ",
        "hello  world",
        "a   \n\n  b",
        "x \r\n\r\n y",
        "\n\n\n",
        "  ",
        " \t x",
        "end   ",
        "a\x0B\x0Cb \x0Bc",
        "!!!\n\n?? ...\r\nz",
        " !x",
        "  !x",
        "\t!",
        "(x)",
        "1234567 12 3",
        "v2.0.1-rc3",
        "$100,000.00",
        "café naïve ſtraße",
        "中文，测试。 Mixed 中English",
        "  中",
        "a\u{a0}b \u{a0} c",
        "x\u{85}\ny",
        "a\u{2028}\nb",
        "\u{3000}\n",
        "٣٤٥٦ ²³ 1²",
        "emoji 🎉🎉 ok!🎉",
        "tabs\t\tand\t\n\tnewlines",
        "https://example.com/path?q=1&r=2",
        "def f(x):\n    return x**2\n\n\n",
        "\u{1F600}'s",
        "'\u{301}s",
        "é'sé",
    ];
    for pattern in PATTERNS {
        let split = Gpt4Split::new(pattern).unwrap();
        for text in cases {
            assert_eq!(
                by_scanner(&split, text),
                by_regex(pattern, text),
                "{pattern}\n{text:?}"
            );
        }
    }
}

#[test]
fn the_matches_are_gpt4s() {
    let p = LLAMA3_PATTERN;
    assert_eq!(pieces(p, "'sun"), ["'s", "un"]);
    assert_eq!(pieces(p, "a  b"), ["a", " ", " b"]);
    assert_eq!(pieces(p, "a \n\n  b"), ["a", " \n\n", " ", " b"]);
    assert_eq!(pieces(p, "x!!\n\ny"), ["x", "!!\n\n", "y"]);
    assert_eq!(pieces(p, "1234567"), ["123", "456", "7"]);
    assert_eq!(pieces(QWEN2_PATTERN, "123"), ["1", "2", "3"]);
    assert_eq!(pieces(p, "\tx ?!"), ["\tx", " ?!"]);
    assert_eq!(pieces(p, "end  "), ["end", "  "]);
}

#[test]
fn every_short_ascii_string() {
    let ascii: Vec<char> = (0u8..128).map(char::from).collect();
    for pattern in PATTERNS {
        let split = Gpt4Split::new(pattern).unwrap();
        for len in 1..=2 {
            check_all(&split, pattern, &ascii, len);
        }
    }
}

/// Characters where the alternatives interact, and non-ASCII ones of each class (a letter that
/// folds to `s`, a digit, spaces that are not ASCII, a CJK letter, a mark, an emoji).
const EDGES: &[char] = &[
    '\'', 's', 'S', 't', 'r', 'e', 'l', 'd', 'x', '1', ' ', '\t', '\n', '\r', '\x0B', '!', '.',
    '\u{17F}', 'é', '\u{663}', '\u{a0}', '\u{85}', '\u{2028}', '中', '\u{301}', '🎉',
];

#[test]
fn every_short_string_of_edge_characters() {
    for pattern in PATTERNS {
        let split = Gpt4Split::new(pattern).unwrap();
        for len in 1..=4 {
            check_all(&split, pattern, EDGES, len);
        }
    }
}

/// A small deterministic generator (SplitMix64): no extra crate, the same cases every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const RICH: &[char] = &[
    '\'', '\'', 's', 'S', 't', 'T', 'r', 'R', 'e', 'E', 'v', 'V', 'm', 'M', 'l', 'L', 'd', 'D',
    'a', 'z', 'Q', '0', '1', '5', '9', ' ', ' ', ' ', '\t', '\r', '\n', '\n', '\x0B', '\x0C', '!',
    '"', '#', '(', ')', ',', '-', '.', '/', ':', ';', '?', '@', '[', '_', '`', '{', '~', '\x00',
    '\x1F', '\x7F', 'é', '\u{17F}', '中', '文', '，', '😀', '\u{a0}', '\u{85}', '\u{2028}',
    '\u{663}', '²', '\u{301}', 'K', '\u{212A}', 'ß',
];

fn random_text(rng: &mut Rng) -> String {
    let len = rng.below(48);
    (0..len).map(|_| RICH[rng.below(RICH.len())]).collect()
}

#[test]
fn random_strings_split_as_the_regex() {
    let mut rng = Rng(7);
    for pattern in PATTERNS {
        let split = Gpt4Split::new(pattern).unwrap();
        let regex = SysRegex::new(pattern).unwrap();
        for _ in 0..20_000 {
            let text = random_text(&mut rng);
            let want = (&regex).find_matches(&text).unwrap();
            assert_eq!(by_scanner(&split, &text), want, "{pattern}\n{text:?}");
        }
    }
}

/// The ftx tokenizer (with its direct path) and the library's, loaded from the same
/// tokenizer.json.
struct Both {
    fast: Tokenizer,
    direct: Direct,
    library: tokenizers::Tokenizer,
}

fn both(name: &str) -> Option<Both> {
    let dir = data_dir()?.join("tokenizers").join(name);
    let bytes = read_maybe_gz(&dir.join("tokenizer.json.gz")).unwrap();
    let fast = Tokenizer::from_bytes(&bytes).unwrap();
    let library = tokenizers::Tokenizer::from_bytes(&bytes).unwrap();
    assert!(fast.get_pre_tokenizer().unwrap().is_fast(), "{name}");
    let direct = Direct::new(&fast).unwrap_or_else(|| panic!("{name}: no direct path"));
    Some(Both {
        fast,
        direct,
        library,
    })
}

impl Both {
    fn direct(&self, text: &str) -> (Vec<u32>, Vec<Offsets>) {
        let (mut ids, mut offsets) = (Vec::new(), Vec::new());
        self.direct
            .encode(&self.fast, text, &mut ids, Some(&mut offsets))
            .unwrap();
        (ids, offsets)
    }
}

/// The scanner's tokenizer and, where it takes the text, the direct path give the library's
/// ids and offsets.
fn assert_same_ids(t: &Both, text: &str) {
    let a = t.fast.encode(text, false).unwrap();
    let b = t.library.encode(text, false).unwrap();
    assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
    assert_eq!(a.get_offsets(), b.get_offsets(), "{text:?}");
    if t.direct.takes(text) {
        let (ids, offsets) = t.direct(text);
        assert_eq!(ids, b.get_ids(), "direct: {text:?}");
        assert_eq!(offsets, b.get_offsets(), "direct: {text:?}");
    }
}

#[test]
fn random_strings_tokenize_as_the_library() {
    let mut rng = Rng(11);
    for name in ["llama3", "qwen3"] {
        let Some(t) = both(name) else {
            return;
        };
        for _ in 0..3_000 {
            assert_same_ids(&t, &random_text(&mut rng));
        }
        // Special tokens are split off before the pre-tokenizer sees the text.
        for text in [
            "<|im_start|>user\n'sup<|eot_id|> \n\n<|im_end|>  x",
            "<|im_start|><|im_start|>",
            "<|im_start",
            "",
            " <tool_call>{\"a\": 1}</tool_call>\n",
        ] {
            assert_same_ids(&t, text);
        }
    }
}

/// Every record of the files, rendered with the tokenizer's own chat template (text records
/// as they are).
fn records(data: &std::path::Path, name: &str, files: &[std::path::PathBuf]) -> Vec<String> {
    // The config alone: a second Encoder would parse the large tokenizer.json again.
    let config = data
        .join("tokenizers")
        .join(name)
        .join("tokenizer_config.json");
    let config: Json = serde_json::from_slice(&fs_err::read(config).unwrap()).unwrap();
    let specials = SpecialTokens {
        bos: token_string(config.get("bos_token")),
        eos: token_string(config.get("eos_token")),
        ..SpecialTokens::default()
    };
    let template = ChatTemplate::new(name, config["chat_template"].as_str().unwrap(), specials);
    let template = template.unwrap();
    let mut out = Vec::new();
    for path in files {
        let rows = read_rows(path);
        for row in rows {
            match normalize(row, &FormatOptions::default()) {
                Ok((_, Record::Text { text })) => out.push(text),
                Ok((_, Record::Chat { messages, tools })) => {
                    if let Ok(r) = template.render(&messages, &tools, false) {
                        out.push(r.text);
                    }
                }
                Err(_) => {}
            }
        }
    }
    out
}

fn read_rows(path: &std::path::Path) -> Vec<Json> {
    let raw = fs_err::read_to_string(path).unwrap();
    if path.extension().is_some_and(|e| e == "txt") {
        raw.lines()
            .map(|l| serde_json::json!({"text": l}))
            .collect()
    } else if raw.trim_start().starts_with('[') {
        serde_json::from_str(&raw).unwrap()
    } else {
        raw.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn check_datasets(files: &[&str], at_least: usize) {
    let Some(data) = data_dir() else { return };
    for name in ["llama3", "qwen3"] {
        let Some(t) = both(name) else {
            return;
        };
        let dir = data.join("datasets/llama_factory");
        let paths: Vec<_> = files.iter().map(|f| dir.join(f)).collect();
        let texts = records(&data, name, &paths);
        assert!(texts.len() >= at_least, "{name}: {} records", texts.len());
        for text in &texts {
            assert_same_ids(&t, text);
        }
    }
}

/// English and Chinese tool-calling chats: JSON, code, CJK text and full-width punctuation.
#[test]
fn real_datasets_tokenize_as_the_library() {
    check_datasets(
        &[
            "glaive_toolcall_en_demo.json",
            "glaive_toolcall_zh_demo.json",
        ],
        600,
    );
}

/// All the LLaMA-Factory demo files; slow unoptimized
/// (`cargo test --release -p ftx-core --lib all_real_datasets -- --ignored`).
#[test]
#[ignore]
fn all_real_datasets_tokenize_as_the_library() {
    check_datasets(
        &[
            "alpaca_en_demo.json",
            "alpaca_zh_demo.json",
            "c4_demo.jsonl",
            "dpo_en_demo.json",
            "glaive_toolcall_en_demo.json",
            "glaive_toolcall_zh_demo.json",
            "identity.json",
            "kto_en_demo.json",
            "reason_tool_use_demo_50.jsonl",
            "v1_dpo_demo.jsonl",
            "v1_sft_demo.jsonl",
            "wiki_demo.txt",
        ],
        4000,
    );
}

#[test]
fn only_the_known_shape_takes_the_fast_path() {
    let load = |json: Json| -> FtxPreTokenizer { serde_json::from_value(json).unwrap() };
    let shape = |pattern: &str, behavior: &str, prefix: bool| {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior, "invert": false},
            {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": false},
        ]})
    };
    assert!(load(shape(LLAMA3_PATTERN, "Isolated", false)).is_fast());
    assert!(load(shape(QWEN2_PATTERN, "Isolated", false)).is_fast());
    assert!(!load(shape(LLAMA3_PATTERN, "Removed", false)).is_fast());
    assert!(!load(shape(LLAMA3_PATTERN, "Isolated", true)).is_fast());
    let close = LLAMA3_PATTERN.replace("{1,3}", "{1,2}");
    assert!(!load(shape(&close, "Isolated", false)).is_fast());
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": true, "use_regex": true});
    let library: PreTokenizerWrapper = serde_json::from_value(byte_level.clone()).unwrap();
    match load(byte_level) {
        FtxPreTokenizer::Library(p) => assert_eq!(p, library),
        FtxPreTokenizer::Gpt4 { .. } => panic!("fast path for a plain ByteLevel"),
    }
}

/// Any tokenizer.json setting the direct path does not reproduce sends every text to the
/// library.
#[test]
fn only_the_shapes_it_reproduces_take_the_direct_path() {
    let Some(data) = data_dir() else { return };
    let dir = data.join("tokenizers");
    // The shape without the large vocabulary, which only slows each load down.
    let json = |name: &str| -> Json {
        let bytes = read_maybe_gz(&dir.join(name).join("tokenizer.json.gz")).unwrap();
        let mut json: Json = serde_json::from_slice(&bytes).unwrap();
        let vocab = json["model"]["vocab"].as_object_mut().unwrap();
        vocab.retain(|_, id| id.as_u64().unwrap() < 1000);
        json["model"]["merges"] = serde_json::json!([]);
        json
    };
    let direct = |json: &Json| {
        let tokenizer = Tokenizer::from_bytes(serde_json::to_vec(json).unwrap()).unwrap();
        Direct::new(&tokenizer)
    };
    let llama3 = json("llama3");
    assert!(direct(&llama3).is_some());
    let changed = |edit: &dyn Fn(&mut Json)| {
        let mut j = llama3.clone();
        edit(&mut j);
        direct(&j)
    };
    assert!(
        changed(&|j| j["post_processor"]["processors"][0]["trim_offsets"] = true.into()).is_none()
    );
    assert!(changed(&|j| j["added_tokens"][3]["lstrip"] = true.into()).is_none());
    assert!(changed(&|j| j["added_tokens"][3]["normalized"] = true.into()).is_none());
    assert!(changed(&|j| j["model"]["dropout"] = 0.1.into()).is_none());
    assert!(changed(&|j| j["normalizer"] = serde_json::json!({"type": "Lowercase"})).is_none());
    assert!(
        changed(&|j| j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true.into())
            .is_none()
    );
    // Qwen's NFC normalizer: texts already in NFC only.
    let qwen3 = direct(&json("qwen3")).unwrap();
    assert!(qwen3.takes("plain") && qwen3.takes("caf\u{e9} \u{4e2d}\u{6587}"));
    assert!(!qwen3.takes("cafe\u{301}") && !qwen3.takes("\u{212a}"));
    assert!(direct(&llama3).unwrap().takes("cafe\u{301}"));
}

/// Bytes of `text` whose match the scanner found, and bytes left to the regex.
fn coverage(split: &Gpt4Split, text: &str) -> (usize, usize) {
    let s = text.as_bytes();
    let (mut scanned, mut p) = (0, 0);
    while p < s.len() {
        p = match split.scan(s, p) {
            Some(end) => {
                scanned += end - p;
                end
            }
            None => p + split.regex.find_iter(&text[p..]).next().unwrap().1,
        };
    }
    (scanned, s.len() - scanned)
}

/// Library against ftx tokenization of the same rendered chats (the scanner inside the
/// library's pipeline, and the direct path where it takes the text), one thread:
/// `FTX_BENCH_CORPUS=chat.jsonl [FTX_BENCH_RECORDS=5000] cargo test --release -p ftx-core --lib
/// speed_against_library -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_against_library() {
    let Some(data) = data_dir() else { return };
    let Ok(corpus) = std::env::var("FTX_BENCH_CORPUS") else {
        eprintln!("skipped: FTX_BENCH_CORPUS is not set");
        return;
    };
    let n: usize = std::env::var("FTX_BENCH_RECORDS").map_or(5000, |v| v.parse().unwrap());
    let rounds = 5;
    for name in ["llama3", "qwen3"] {
        let Some(t) = both(name) else {
            return;
        };
        let mut texts = records(&data, name, &[corpus.clone().into()]);
        texts.truncate(n);
        let bytes: usize = texts.iter().map(String::len).sum();
        let Some(FtxPreTokenizer::Gpt4 { split, .. }) = t.fast.get_pre_tokenizer() else {
            panic!("{name}: no fast path");
        };
        let (scanned, left) = texts
            .iter()
            .map(|t| coverage(split, t))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let direct = texts.iter().filter(|s| t.direct.takes(s)).count();
        // Record by record, in turns, so that a neighbour's load on a shared machine falls on
        // all sides alike.
        let mut rounds_s = vec![[0.0; 3]; rounds];
        for round in &mut rounds_s {
            for (i, text) in texts.iter().enumerate() {
                for k in 0..3 {
                    let side = (i + k) % 3;
                    let start = std::time::Instant::now();
                    match side {
                        0 => drop(std::hint::black_box(t.library.encode(text.as_str(), false))),
                        1 => drop(std::hint::black_box(t.fast.encode(text.as_str(), false))),
                        _ if t.direct.takes(text) => drop(std::hint::black_box(t.direct(text))),
                        _ => drop(std::hint::black_box(t.fast.encode(text.as_str(), false))),
                    }
                    round[side] += start.elapsed().as_secs_f64();
                }
            }
        }
        let best = |k: usize| rounds_s.iter().map(|r| r[k]).fold(f64::INFINITY, f64::min);
        let (l, f, d) = (best(0), best(1), best(2));
        let mb = bytes as f64 / 1e6;
        println!(
            "{name}: {} records, {mb:.1} MB, {:.1}% of bytes scanned ({:.1}% left to the regex), \
             {:.1}% of records on the direct path\n  encode: library {l:.3} s ({:.1} MB/s), \
             scanner {f:.3} s ({:.1} MB/s, {:.2}x), direct {d:.3} s ({:.1} MB/s, {:.2}x)",
            texts.len(),
            100.0 * scanned as f64 / bytes as f64,
            100.0 * left as f64 / bytes as f64,
            100.0 * direct as f64 / texts.len() as f64,
            mb / l,
            mb / f,
            l / f,
            mb / d,
            l / d,
        );
    }
}
