//! Per-record rejections: a stable code, a human message, and where the record came from.

use serde::{Deserialize, Serialize};

/// Stable, machine-readable reasons. The string form (`as_str`) is part of the artifact format:
/// never rename one, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The line or element is not valid JSON.
    BadJson,
    /// The last line of a file ends without a newline and does not parse: the file was cut off.
    TruncatedLine,
    /// The bytes are not valid UTF-8.
    InvalidUtf8,
    /// The record is JSON but not an object of a known format.
    UnknownFormat,
    /// A field has the wrong JSON type.
    WrongType,
    /// A required field is missing.
    MissingField,
    /// A message (or the text) is empty where content is required.
    EmptyContent,
    /// A role name that maps to none of system/user/assistant/tool.
    UnknownRole,
    /// The conversation's role order is not usable (for example the template raised an exception).
    BadRoleOrder,
    /// The chat template failed on this record.
    TemplateError,
    /// No token of the record would be trained.
    NothingToTrain,
    /// The assistant content could not be located in the rendered text.
    MaskNotFound,
    /// The record is longer than `max_length` tokens under the `drop` policy.
    TooLong,
    /// The tokenizer failed on the rendered text.
    TokenizerError,
    /// The chat template ran past its work budget on this record (a loop that does not end).
    TemplateBudget,
    /// The record is an exact copy (after normalization) of an earlier one, which was kept.
    Duplicate,
    /// The record is a near duplicate (MinHash estimate) of an earlier record, which was kept.
    NearDuplicate,
    /// The record shares long n-grams with an evaluation file given to `--decontaminate`.
    Contaminated,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::BadJson => "bad_json",
            RejectCode::TruncatedLine => "truncated_line",
            RejectCode::InvalidUtf8 => "invalid_utf8",
            RejectCode::UnknownFormat => "unknown_format",
            RejectCode::WrongType => "wrong_type",
            RejectCode::MissingField => "missing_field",
            RejectCode::EmptyContent => "empty_content",
            RejectCode::UnknownRole => "unknown_role",
            RejectCode::BadRoleOrder => "bad_role_order",
            RejectCode::TemplateError => "template_error",
            RejectCode::NothingToTrain => "nothing_to_train",
            RejectCode::MaskNotFound => "mask_not_found",
            RejectCode::TooLong => "too_long",
            RejectCode::TokenizerError => "tokenizer_error",
            RejectCode::TemplateBudget => "template_budget",
            RejectCode::Duplicate => "duplicate",
            RejectCode::NearDuplicate => "near_duplicate",
            RejectCode::Contaminated => "contaminated",
        }
    }
}

/// Why one record was not used. The location is filled in by the pipeline, which knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub code: RejectCode,
    pub message: String,
}

impl Reject {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Reject {
            code,
            message: message.into(),
        }
    }
}
