//! Input formats: detect which one a record is in, normalize it to a [`Record`], validate it.
//!
//! One JSON value in, `Result<(Format, Record), Reject>` out; no I/O. Detection is per record,
//! so a file mixing formats works. Every format lands on the same [`Record`] shape with no
//! format-specific residue, so that exact dedup sees the same conversation as the same record
//! whichever format it came in. Role order is not checked here: the chat template decides that.

use std::fmt;

use serde_json::{Map, Value};

use crate::conversation::{Message, Record, Role, ToolCall};
use crate::reject::{Reject, RejectCode};

#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Format {
    /// OpenAI `messages` (also LLaMA-Factory kto rows and v1 `chosen_messages`).
    Messages,
    /// ShareGPT `conversations` with `from`/`value`.
    Sharegpt,
    /// `instruction` / `input` / `output` (also stanford_alpaca seed tasks with `instances`).
    Alpaca,
    /// `prompt` + `completion`, each a string or a list of messages.
    PromptCompletion,
    /// `{"text": ...}` for continued pretraining.
    Text,
    /// Berkeley Function Calling Leaderboard: `question` (list of turns) + `function`.
    Bfcl,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Messages => "messages",
            Format::Sharegpt => "sharegpt",
            Format::Alpaca => "alpaca",
            Format::PromptCompletion => "prompt_completion",
            Format::Text => "text",
            Format::Bfcl => "bfcl",
        }
    }

    /// Every format, in a fixed order: an artifact's `record_info.formats`, whose index each
    /// record's `format` column holds.
    pub const ALL: [Format; 6] = [
        Format::Messages,
        Format::Sharegpt,
        Format::Alpaca,
        Format::PromptCompletion,
        Format::Text,
        Format::Bfcl,
    ];

    /// The `as_str` names, plus a few spellings users type for them: the one list the CLI's
    /// choices come from.
    pub const NAMES: &'static [(&'static str, Format)] = &[
        ("messages", Format::Messages),
        ("openai", Format::Messages),
        ("chatml", Format::Messages),
        ("sharegpt", Format::Sharegpt),
        ("conversations", Format::Sharegpt),
        ("alpaca", Format::Alpaca),
        ("prompt_completion", Format::PromptCompletion),
        ("completion", Format::PromptCompletion),
        ("text", Format::Text),
        ("bfcl", Format::Bfcl),
    ];

    pub fn parse(s: &str) -> Option<Format> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, f)| *f)
    }
}

impl TryFrom<String> for Format {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Format::parse(&s).ok_or_else(|| {
            let names: Vec<&str> = Format::NAMES.iter().map(|(n, _)| *n).collect();
            format!("unknown format {s:?}; one of {}", names.join(", "))
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// One list makes both the key enum and its names, so the two cannot drift apart.
macro_rules! columns {
    ($($col:ident = $name:literal),* $(,)?) => {
        #[derive(Debug, Clone, Copy)]
        enum Col { $($col),* }
        const CANONICAL: &[&str] = &[$($name),*];
    };
}

columns! {
    Messages = "messages", Conversations = "conversations", Role = "role", Content = "content",
    From = "from", Value = "value", Instruction = "instruction", Input = "input",
    Output = "output", System = "system", History = "history", Prompt = "prompt",
    Completion = "completion", Text = "text", Tools = "tools",
}

/// Renames of input keys: `instruction=question` means the source key `question` plays the role
/// of `instruction`. Canonical names: messages, conversations, role, content, from, value,
/// instruction, input, output, system, history, prompt, completion, text, tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    // A fixed array rather than a map: looked up for every field of every record.
    renames: [Option<Box<str>>; CANONICAL.len()],
}

impl Columns {
    /// Parses `"instruction=question,output=answer"` (spaces around names are ignored).
    pub fn parse(spec: &str) -> Result<Columns, String> {
        let mut cols = Columns::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((canonical, source)) = pair.split_once('=') else {
                return Err(format!(
                    "column mapping {pair:?} is not of the form canonical=source_key"
                ));
            };
            cols.set(canonical.trim(), source.trim())?;
        }
        Ok(cols)
    }

    /// Makes the source key `source` play the role of the canonical key `canonical`.
    pub fn set(&mut self, canonical: &str, source: &str) -> Result<(), String> {
        let Some(i) = CANONICAL.iter().position(|c| *c == canonical) else {
            return Err(format!(
                "unknown column {canonical:?}; known columns: {}",
                CANONICAL.join(", ")
            ));
        };
        if source.is_empty() {
            return Err(format!("column {canonical:?} is mapped to an empty key"));
        }
        if self.renames[i].is_some() {
            return Err(format!("column {canonical:?} is mapped twice"));
        }
        self.renames[i] = Some(source.into());
        Ok(())
    }

    fn key(&self, c: Col) -> &str {
        let i = c as usize;
        self.renames[i].as_deref().unwrap_or(CANONICAL[i])
    }
}

#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// Skip detection and read every record as this format.
    pub forced: Option<Format>,
    pub columns: Columns,
}

/// Which format a record is in (`forced` wins). Chat formats are tried before `text`, because
/// some files (torchtune alpaca) carry both a chat form and a pre-rendered `text`.
pub fn detect(obj: &Map<String, Value>, opts: &FormatOptions) -> Option<Format> {
    if opts.forced.is_some() {
        return opts.forced;
    }
    let cols = &opts.columns;
    let has = |c: Col| obj.contains_key(cols.key(c));
    if has(Col::Messages) || obj.contains_key("chosen_messages") {
        Some(Format::Messages)
    } else if has(Col::Conversations) {
        Some(Format::Sharegpt)
    } else if has(Col::Instruction) {
        Some(Format::Alpaca)
    } else if has(Col::Prompt) && (has(Col::Completion) || obj.contains_key("chosen")) {
        Some(Format::PromptCompletion)
    } else if is_bfcl(obj) {
        Some(Format::Bfcl)
    } else if has(Col::Text) {
        Some(Format::Text)
    } else {
        None
    }
}

fn is_bfcl(obj: &Map<String, Value>) -> bool {
    // A plain QA `question` string is not BFCL; a list of turns is.
    match obj.get("question") {
        Some(Value::Array(turns)) => {
            matches!(turns.first(), Some(Value::Array(_))) || obj.contains_key("function")
        }
        _ => false,
    }
}

/// Detects, normalizes and validates one record.
pub fn normalize(value: Value, opts: &FormatOptions) -> Result<(Format, Record), Reject> {
    match read(value, opts)? {
        (format, Read::Text(record)) => Ok((format, record)),
        (format, Read::Chat(chat)) => Ok((format, finish(chat, format)?)),
    }
}

/// Detects and normalizes one record as a prompt to generate from: a conversation that needs
/// no assistant turn to train on.
pub fn normalize_prompt(value: Value, opts: &FormatOptions) -> Result<Record, Reject> {
    Ok(match read(value, opts)?.1 {
        Read::Text(record) => record,
        Read::Chat(chat) => Record::Chat {
            messages: chat.messages,
            tools: chat.tools,
        },
    })
}

enum Read {
    Text(Record),
    Chat(Chat),
}

fn read(value: Value, opts: &FormatOptions) -> Result<(Format, Read), Reject> {
    let Value::Object(mut obj) = value else {
        let msg = format!("record is a JSON {}, not an object", type_name(&value));
        return Err(Reject::new(RejectCode::UnknownFormat, msg));
    };
    let Some(format) = detect(&obj, opts) else {
        return Err(unknown_format(&obj));
    };
    let cols = &opts.columns;
    let chat = match format {
        Format::Text => return Ok((format, Read::Text(text(&mut obj, cols)?))),
        Format::Messages => messages(&mut obj, cols)?,
        Format::Sharegpt => sharegpt(&mut obj, cols)?,
        Format::Alpaca => alpaca(&mut obj, cols)?,
        Format::PromptCompletion => prompt_completion(&mut obj, cols)?,
        Format::Bfcl => bfcl(&mut obj)?,
    };
    Ok((format, Read::Chat(chat)))
}

type Res<T> = Result<T, Reject>;

struct Chat {
    messages: Vec<Message>,
    tools: Vec<Value>,
}

fn finish(chat: Chat, format: Format) -> Res<Record> {
    let mut assistants = chat.messages.iter().filter(|m| m.role == Role::Assistant);
    let Some(first) = assistants.next() else {
        let why = if format == Format::Bfcl {
            "the record has no assistant turn (BFCL questions carry no answer to train on)"
        } else {
            "the record has no assistant message to train on"
        };
        return Err(Reject::new(RejectCode::NothingToTrain, why));
    };
    if !first.train && assistants.all(|m| !m.train) {
        let why = "every assistant message is opted out of training (train=false / weight 0)";
        return Err(Reject::new(RejectCode::NothingToTrain, why));
    }
    Ok(Record::Chat {
        messages: chat.messages,
        tools: chat.tools,
    })
}

// ---------------------------------------------------------------- formats

fn text(obj: &mut Map<String, Value>, cols: &Columns) -> Res<Record> {
    let key = cols.key(Col::Text);
    let text = req_string(obj, key)?;
    if text.trim().is_empty() {
        return Err(empty(format!("{key} is empty")));
    }
    Ok(Record::Text { text })
}

fn messages(obj: &mut Map<String, Value>, cols: &Columns) -> Res<Chat> {
    let key = cols.key(Col::Messages);
    let (field, list) = match obj.remove(key) {
        Some(v) => (key, v),
        None => match obj.remove("chosen_messages") {
            Some(v) => ("chosen_messages", v),
            None => return Err(missing(key)),
        },
    };
    let messages = message_list(list, field, &keys(cols, false))?;
    nonempty(&messages, field)?;
    let tools = take_tools(obj, cols.key(Col::Tools))?;
    Ok(Chat { messages, tools })
}

fn sharegpt(obj: &mut Map<String, Value>, cols: &Columns) -> Res<Chat> {
    let key = cols.key(Col::Conversations);
    let list = obj.remove(key).ok_or_else(|| missing(key))?;
    let keys = keys(cols, true);
    let mut messages = take_system(obj, cols)?;
    messages.extend(message_list(list, key, &keys)?);
    // DPO rows: the preferred answer is the final assistant turn.
    if let Some(chosen) = obj.remove("chosen") {
        append(&mut messages, chosen, "chosen", &keys, Role::Assistant)?;
    }
    nonempty(&messages, key)?;
    let tools = take_tools(obj, cols.key(Col::Tools))?;
    Ok(Chat { messages, tools })
}

fn alpaca(obj: &mut Map<String, Value>, cols: &Columns) -> Res<Chat> {
    let ikey = cols.key(Col::Instruction);
    let instruction = req_string(obj, ikey)?;
    let okey = cols.key(Col::Output);
    let mut input = opt_string(obj, cols.key(Col::Input))?;
    let mut output = obj.remove(okey);
    // stanford_alpaca seed tasks keep input/output in `instances`; the first one is the example.
    if output.is_none() {
        if let Some(instances) = obj.remove("instances") {
            let Value::Array(list) = instances else {
                return Err(wrong_type("instances", "array", &instances));
            };
            let Some(Value::Object(mut first)) = list.into_iter().next() else {
                return Err(missing("instances[0] (an object with input and output)"));
            };
            input = opt_string(&mut first, "input")?;
            output = first.remove("output");
            if output.is_none() {
                return Err(missing("instances[0].output"));
            }
        }
    }
    let mut messages = take_system(obj, cols)?;
    if let Some(history) = obj.remove(cols.key(Col::History)) {
        history_pairs(&mut messages, history, cols.key(Col::History))?;
    }
    let user = match input {
        Some(input) if input.trim().is_empty() => instruction,
        Some(input) if instruction.trim().is_empty() => input,
        Some(input) => format!("{instruction}\n\n{input}"),
        None => instruction,
    };
    if user.trim().is_empty() {
        return Err(empty(format!("{ikey} is empty")));
    }
    messages.push(Message::new(Role::User, user));
    let (field, output) = match output {
        Some(v) => (okey, v),
        None => ("chosen", obj.remove("chosen").ok_or_else(|| missing(okey))?),
    };
    append(
        &mut messages,
        output,
        field,
        &keys(cols, false),
        Role::Assistant,
    )?;
    let tools = take_tools(obj, cols.key(Col::Tools))?;
    Ok(Chat { messages, tools })
}

fn prompt_completion(obj: &mut Map<String, Value>, cols: &Columns) -> Res<Chat> {
    let (pkey, ckey) = (cols.key(Col::Prompt), cols.key(Col::Completion));
    let keys = keys(cols, false);
    let mut messages = take_system(obj, cols)?;
    let prompt = obj.remove(pkey).ok_or_else(|| missing(pkey))?;
    append(&mut messages, prompt, pkey, &keys, Role::User)?;
    let (field, completion) = match obj.remove(ckey) {
        Some(v) => (ckey, v),
        None => ("chosen", obj.remove("chosen").ok_or_else(|| missing(ckey))?),
    };
    append(&mut messages, completion, field, &keys, Role::Assistant)?;
    let tools = take_tools(obj, cols.key(Col::Tools))?;
    Ok(Chat { messages, tools })
}

fn bfcl(obj: &mut Map<String, Value>) -> Res<Chat> {
    let turns = match obj.remove("question") {
        Some(Value::Array(turns)) => turns,
        Some(other) => return Err(wrong_type("question", "array of turns", &other)),
        None => return Err(missing("question")),
    };
    // BFCL files are not user-shaped, so column renames do not apply to them.
    let plain = Columns::default();
    let keys = keys(&plain, false);
    let mut messages = Vec::new();
    for (i, turn) in turns.into_iter().enumerate() {
        let Value::Array(list) = turn else {
            return Err(wrong_type(
                Loc("question", i, None),
                "array of messages",
                &turn,
            ));
        };
        for (j, m) in list.into_iter().enumerate() {
            messages.push(message(m, &Loc("question", i, Some(j)), &keys, None)?);
        }
    }
    nonempty(&messages, "question")?;
    let tools = take_tools(obj, "function")?;
    Ok(Chat { messages, tools })
}

// ---------------------------------------------------------------- messages

/// Which keys hold a message's role and content, each with an alternative that is tolerated,
/// so that ShareGPT files written with `role`/`content` (and the reverse) still read.
struct Keys<'a> {
    role: [&'a str; 2],
    content: [&'a str; 2],
}

fn keys(cols: &Columns, sharegpt: bool) -> Keys<'_> {
    let (role, from) = (cols.key(Col::Role), cols.key(Col::From));
    let (content, value) = (cols.key(Col::Content), cols.key(Col::Value));
    let (role, content) = match sharegpt {
        true => ([from, role], [value, content]),
        false => ([role, from], [content, value]),
    };
    Keys { role, content }
}

/// Where a message sits (`field[i]` or `field[i][j]`), formatted only when a reject needs it.
struct Loc<'a>(&'a str, usize, Option<usize>);

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)?;
        match self.2 {
            Some(j) => write!(f, "[{j}]"),
            None => Ok(()),
        }
    }
}

fn message_list(list: Value, field: &str, keys: &Keys) -> Res<Vec<Message>> {
    let Value::Array(list) = list else {
        return Err(wrong_type(field, "array of messages", &list));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        out.push(message(m, &Loc(field, i, None), keys, None)?);
    }
    Ok(out)
}

/// Appends a turn given as a string (a message of `role`), one message object (whose role
/// defaults to `role`) or a list of messages.
fn append(messages: &mut Vec<Message>, v: Value, field: &str, keys: &Keys, role: Role) -> Res<()> {
    match v {
        Value::String(s) => {
            let m = Message::new(role, s);
            check(&m, field)?;
            messages.push(m);
        }
        m @ Value::Object(_) => messages.push(message(m, &Loc(field, 0, None), keys, Some(role))?),
        list @ Value::Array(_) => {
            let list = message_list(list, field, keys)?;
            nonempty(&list, field)?;
            messages.extend(list);
        }
        other => {
            return Err(wrong_type(
                field,
                "string, message or array of messages",
                &other,
            ))
        }
    }
    Ok(())
}

/// Maps a role name of any supported format; the flag marks ShareGPT `function_call`, whose
/// value is the call itself.
fn map_role(name: &str) -> Option<(Role, bool)> {
    let lower;
    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = name.to_ascii_lowercase();
        &lower
    } else {
        name
    };
    Some(match name {
        "user" | "human" => (Role::User, false),
        "assistant" | "gpt" | "bot" | "model" | "chatgpt" => (Role::Assistant, false),
        "function_call" => (Role::Assistant, true),
        "system" | "developer" => (Role::System, false),
        "tool" | "observation" | "function" | "ipython" | "tool_response" => (Role::Tool, false),
        _ => return None,
    })
}

fn message(v: Value, loc: &Loc, keys: &Keys, default_role: Option<Role>) -> Res<Message> {
    let Value::Object(mut m) = v else {
        return Err(wrong_type(loc, "object", &v));
    };
    let (rkey, ckey) = (keys.role[0], keys.content[0]);
    let (role, is_call) = match take(&mut m, keys.role) {
        Some(Value::String(name)) => map_role(&name).ok_or_else(|| {
            let msg = format!("{loc}: unknown role {name:?}");
            Reject::new(RejectCode::UnknownRole, msg)
        })?,
        Some(other) => return Err(wrong_type(format!("{loc}.{rkey}"), "string", &other)),
        None => match default_role {
            Some(r) => (r, false),
            None => return Err(missing(format!("{loc}.{rkey}"))),
        },
    };
    let mut msg = Message::new(role, String::new());
    let content = take(&mut m, keys.content);
    let has_content = matches!(content, Some(ref c) if !c.is_null());
    let wrote_text = matches!(content, Some(Value::String(_))) && !is_call;
    match content {
        Some(v @ (Value::String(_) | Value::Object(_) | Value::Array(_))) if is_call => {
            msg.tool_calls = calls_from_json(v, &format!("{loc}.{ckey}"))?;
        }
        Some(Value::String(s)) => msg.content = s,
        Some(Value::Array(parts)) => content_parts(&mut msg, parts, loc, ckey)?,
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(wrong_type(
                format!("{loc}.{ckey}"),
                "string or parts",
                &other,
            ))
        }
    }
    if let Some(calls) = m.remove("tool_calls") {
        openai_tool_calls(&mut msg.tool_calls, calls, loc)?;
    }
    for key in ["reasoning_content", "reasoning", "thinking"] {
        match m.remove(key) {
            Some(Value::String(s)) if msg.reasoning.is_none() => msg.reasoning = Some(s),
            None | Some(Value::String(_)) | Some(Value::Null) => {}
            Some(other) => return Err(wrong_type(format!("{loc}.{key}"), "string", &other)),
        }
    }
    // Whitespace-only reasoning carries nothing, and keeping it would split dedup.
    msg.reasoning = msg.reasoning.filter(|r| !r.trim().is_empty());
    msg.name = opt_string(&mut m, "name").map_err(|r| relocate(r, loc))?;
    msg.tool_call_id = opt_string(&mut m, "tool_call_id").map_err(|r| relocate(r, loc))?;
    // Only assistant tokens are ever trained. LLaMA-Factory v1 puts `loss_weight: 0` on every
    // user turn; keeping that would make the same chat differ across formats.
    msg.train = train_flag(&m, loc)? || role != Role::Assistant;
    let calls = role == Role::Assistant && !msg.tool_calls.is_empty();
    msg.content_null = calls && !wrote_text && msg.content.is_empty();
    if !calls && (!has_content || msg.content.trim().is_empty()) {
        let what = if has_content {
            "empty"
        } else {
            "missing or null"
        };
        return Err(empty(format!(
            "{loc} ({}): content is {what}",
            role.as_str()
        )));
    }
    Ok(msg)
}

/// Whitespace-only content is rejected where content is required; it is never trimmed.
fn check(m: &Message, what: impl fmt::Display) -> Res<()> {
    let needs_content = m.role != Role::Assistant || m.tool_calls.is_empty();
    if needs_content && m.content.trim().is_empty() {
        return Err(empty(format!("{what} is empty")));
    }
    Ok(())
}

fn train_flag(m: &Map<String, Value>, loc: &Loc) -> Res<bool> {
    let mut train = true;
    if let Some(v) = m.get("train") {
        match v {
            Value::Bool(b) => train &= *b,
            Value::Null => {}
            other => return Err(wrong_type(format!("{loc}.train"), "boolean", other)),
        }
    }
    for key in ["weight", "loss_weight"] {
        match m.get(key) {
            Some(Value::Number(n)) => train &= n.as_f64() != Some(0.0),
            None | Some(Value::Null) => {}
            Some(other) => return Err(wrong_type(format!("{loc}.{key}"), "number", other)),
        }
    }
    Ok(train)
}

/// Content given as parts (OpenAI, LLaMA-Factory v1). Text parts are concatenated as they are,
/// as Hugging Face templates do when they loop over parts.
fn content_parts(msg: &mut Message, parts: Vec<Value>, loc: &Loc, ckey: &str) -> Res<()> {
    let mut reasoning: Option<String> = None;
    for (j, part) in parts.into_iter().enumerate() {
        let at = || format!("{loc}.{ckey}[{j}]");
        let mut part = match part {
            Value::String(s) => {
                msg.content.push_str(&s);
                continue;
            }
            Value::Object(p) => p,
            other => return Err(wrong_type(at(), "object or string", &other)),
        };
        let kind = match part.remove("type") {
            Some(Value::String(t)) => t,
            Some(other) => return Err(wrong_type(format!("{}.type", at()), "string", &other)),
            None => return Err(missing(format!("{}.type", at()))),
        };
        let is_text = matches!(kind.as_str(), "text" | "input_text" | "output_text");
        let is_reasoning = matches!(kind.as_str(), "reasoning" | "thinking");
        if !is_text && !is_reasoning && kind != "tool_call" {
            return Err(wrong(format!(
                "{}: content part type {kind:?} is not supported (only text, reasoning/thinking \
                 and tool_call parts are; images and other media cannot be trained as text)",
                at()
            )));
        }
        // OpenAI puts the body under `text`, LLaMA-Factory v1 under `value`, Anthropic under
        // the type's own name (`thinking`).
        let body = ["text", "value", kind.as_str()]
            .iter()
            .find_map(|k| part.remove(*k))
            .ok_or_else(|| missing(format!("{} (a {kind:?} part needs text or value)", at())))?;
        match body {
            body if kind == "tool_call" => msg.tool_calls.extend(calls_from_json(body, &at())?),
            Value::String(s) if is_text => msg.content.push_str(&s),
            Value::String(s) => reasoning.get_or_insert_with(String::new).push_str(&s),
            other => return Err(wrong_type(at(), "string", &other)),
        }
    }
    if msg.reasoning.is_none() {
        msg.reasoning = reasoning;
    }
    Ok(())
}

/// A call given as JSON `{"name", "arguments"}` or a list of them, as a string (ShareGPT
/// `function_call`, LLaMA-Factory `tool_call` parts) or already parsed.
fn calls_from_json(v: Value, what: &str) -> Res<Vec<ToolCall>> {
    let v = match v {
        Value::String(s) => serde_json::from_str(&s)
            .map_err(|e| wrong(format!("{what}: function call is not valid JSON ({e})")))?,
        v => v,
    };
    match v {
        Value::Object(call) => Ok(vec![tool_call(call, None, what)?]),
        Value::Array(list) => list
            .into_iter()
            .map(|c| match c {
                Value::Object(call) => tool_call(call, None, what),
                other => Err(wrong_type(what, "function call object", &other)),
            })
            .collect(),
        other => Err(wrong_type(what, "function call object or array", &other)),
    }
}

/// OpenAI `tool_calls`: `[{"id", "type": "function", "function": {"name", "arguments"}}]`;
/// bare `{"name", "arguments"}` entries are accepted too.
fn openai_tool_calls(out: &mut Vec<ToolCall>, calls: Value, loc: &Loc) -> Res<()> {
    let list = match calls {
        Value::Array(list) => list,
        Value::Null => return Ok(()),
        other => return Err(wrong_type(format!("{loc}.tool_calls"), "array", &other)),
    };
    for (k, call) in list.into_iter().enumerate() {
        let what = format!("{loc}.tool_calls[{k}]");
        let Value::Object(mut call) = call else {
            return Err(wrong_type(&what, "object", &call));
        };
        let id = opt_string(&mut call, "id").map_err(|r| relocate(r, &what))?;
        let call = match call.remove("function") {
            Some(Value::Object(f)) => f,
            Some(other) => return Err(wrong_type(format!("{what}.function"), "object", &other)),
            None => call,
        };
        out.push(tool_call(call, id, &what)?);
    }
    Ok(())
}

fn tool_call(mut call: Map<String, Value>, id: Option<String>, what: &str) -> Res<ToolCall> {
    let name = match call.remove("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n,
        Some(Value::String(_)) => return Err(empty(format!("{what}: function name is empty"))),
        Some(other) => return Err(wrong_type(format!("{what}.name"), "string", &other)),
        None => return Err(missing(format!("{what}.name"))),
    };
    let given = take(&mut call, ["arguments", "parameters"]);
    let arguments_text = match &given {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    };
    let arguments = match given {
        Some(Value::Object(a)) => Value::Object(a),
        // OpenAI sends arguments as a JSON string; templates want the object.
        Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str(&s) {
            Ok(Value::Object(a)) => Value::Object(a),
            Ok(other) => return Err(wrong_type(format!("{what}.arguments"), "object", &other)),
            Err(e) => return Err(wrong(format!("{what}.arguments: not valid JSON ({e})"))),
        },
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(other) => return Err(wrong_type(format!("{what}.arguments"), "object", &other)),
    };
    let id = match id {
        Some(id) => Some(id),
        None => opt_string(&mut call, "id").map_err(|r| relocate(r, what))?,
    };
    Ok(ToolCall {
        id,
        name,
        arguments,
        arguments_text,
    })
}

// ---------------------------------------------------------------- shared fields

/// A top-level `system` string becomes a leading system message; an empty one is skipped,
/// since LLaMA-Factory files often carry `"system": ""`.
fn take_system(obj: &mut Map<String, Value>, cols: &Columns) -> Res<Vec<Message>> {
    let key = cols.key(Col::System);
    Ok(match opt_string(obj, key)? {
        Some(s) if !s.trim().is_empty() => vec![Message::new(Role::System, s)],
        _ => Vec::new(),
    })
}

/// Alpaca `history`: `[[user, assistant], ...]`, the turns before the instruction.
fn history_pairs(messages: &mut Vec<Message>, history: Value, key: &str) -> Res<()> {
    let list = match history {
        Value::Array(list) => list,
        Value::Null => return Ok(()),
        other => return Err(wrong_type(key, "array of [user, assistant] pairs", &other)),
    };
    for (i, pair) in list.into_iter().enumerate() {
        let loc = Loc(key, i, None);
        let pair = match pair {
            Value::Array(pair) if pair.len() == 2 => pair,
            other => return Err(wrong_type(loc, "[user, assistant] pair", &other)),
        };
        let roles = [Role::User, Role::Assistant];
        for (j, (text, role)) in pair.into_iter().zip(roles).enumerate() {
            let loc = Loc(key, i, Some(j));
            let Value::String(text) = text else {
                return Err(wrong_type(loc, "string", &text));
            };
            let m = Message::new(role, text);
            check(&m, &loc)?;
            messages.push(m);
        }
    }
    Ok(())
}

/// Tools as a list of objects or a JSON string of one (glaive); kept as given.
fn take_tools(obj: &mut Map<String, Value>, key: &str) -> Res<Vec<Value>> {
    let v = match obj.remove(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => serde_json::from_str(&s)
            .map_err(|e| wrong(format!("{key}: not a JSON list of tools ({e})")))?,
        Some(v) => v,
    };
    let Value::Array(tools) = v else {
        return Err(wrong_type(key, "array of tool objects", &v));
    };
    if let Some((i, t)) = tools.iter().enumerate().find(|(_, t)| !t.is_object()) {
        return Err(wrong_type(Loc(key, i, None), "tool object", t));
    }
    Ok(tools)
}

fn nonempty(messages: &[Message], field: &str) -> Res<()> {
    if messages.is_empty() {
        return Err(empty(format!("{field} has no messages")));
    }
    Ok(())
}

/// The value under the first key that is present.
fn take(m: &mut Map<String, Value>, keys: [&str; 2]) -> Option<Value> {
    m.remove(keys[0]).or_else(|| m.remove(keys[1]))
}

fn req_string(obj: &mut Map<String, Value>, key: &str) -> Res<String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type(key, "string", &other)),
        None => Err(missing(key)),
    }
}

fn opt_string(obj: &mut Map<String, Value>, key: &str) -> Res<Option<String>> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err(wrong_type(key, "string", &other)),
    }
}

// ---------------------------------------------------------------- rejects

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong_type(what: impl fmt::Display, expected: &str, got: &Value) -> Reject {
    let got = type_name(got);
    wrong(format!("{what}: expected {expected}, got {got}"))
}

fn wrong(msg: String) -> Reject {
    Reject::new(RejectCode::WrongType, msg)
}

fn missing(what: impl fmt::Display) -> Reject {
    Reject::new(RejectCode::MissingField, format!("missing field {what}"))
}

fn empty(what: impl fmt::Display) -> Reject {
    Reject::new(RejectCode::EmptyContent, what.to_string())
}

/// Prefixes a reject raised on a nested field with where that field sits.
fn relocate(r: Reject, loc: impl fmt::Display) -> Reject {
    Reject::new(r.code, format!("{loc}.{}", r.message))
}

fn unknown_format(obj: &Map<String, Value>) -> Reject {
    const SHOWN: usize = 12;
    let mut keys: Vec<&str> = obj.keys().take(SHOWN).map(String::as_str).collect();
    if obj.len() > SHOWN {
        keys.push("...");
    }
    if keys.is_empty() {
        keys.push("none (empty object)");
    }
    let msg = format!(
        "no known format matches; keys seen: {} (expected one of messages, conversations, \
         instruction, prompt+completion, question (BFCL) or text)",
        keys.join(", ")
    );
    Reject::new(RejectCode::UnknownFormat, msg)
}
