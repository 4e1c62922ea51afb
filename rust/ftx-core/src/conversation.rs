//! The one normalized record type. Every input format is converted to this before anything else
//! (dedup, split, template, tokenizer) looks at a record.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A function call made by the assistant, in the OpenAI shape templates expect
/// (`{"type": "function", "function": {"name": ..., "arguments": {...}}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// Arguments as a JSON object (templates differ on whether they `tojson` them; an object is
    /// what Hugging Face templates expect).
    pub arguments: Value,
    /// The arguments as the record wrote them, when that was a JSON string (OpenAI's shape): a
    /// template that cannot render the object is given this text instead, as transformers
    /// would give it. Not part of the record's identity (dedup, split).
    #[serde(skip)]
    pub arguments_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The record wrote no text for this message (content null or absent, a ShareGPT
    /// `function_call`, parts that are only calls): a call-only assistant message, which
    /// templates get with no `content` key, as transformers gives them (it drops `null` keys;
    /// GLM-4.5's template prints a `null` as "None"). Not part of the record's identity (dedup,
    /// split).
    #[serde(skip)]
    pub content_null: bool,
    /// Reasoning text kept apart from the answer (`reasoning_content` for templates that know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Name of the tool that produced a `tool` message, when the source says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// `false` when the source opts this assistant message out of the loss
    /// (`"train": false`, `"weight": 0`, `"loss_weight": 0`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub train: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            content_null: false,
            reasoning: None,
            tool_calls: Vec::new(),
            name: None,
            tool_call_id: None,
            train: true,
        }
    }
}

/// One normalized training record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// A conversation rendered through the chat template.
    Chat {
        messages: Vec<Message>,
        /// Tool (function) definitions offered to the model, as JSON-schema objects.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tools: Vec<Value>,
    },
    /// Plain text for continued pretraining: every token is trained, no template.
    Text { text: String },
}

impl Record {
    /// A stable byte serialization used for exact dedup and split hashing: two records are the
    /// same when their normalized forms are the same, whatever the input format was.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // serde_json with preserve_order keeps the struct field order, so this is deterministic.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
