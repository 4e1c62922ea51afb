//! Conversions for the one-record-at-a-time calls of `ftx_core::preview`: records as JSON text
//! in, the engine's typed answers out as dicts and lists.

use std::path::PathBuf;

use ftx_core::formats::{Format, FormatOptions};
use ftx_core::options::PrepareOptions;
use ftx_core::template::SpecialTokens;
use ftx_core::Error;
use pyo3::prelude::*;

use crate::{convert, errors};

fn parse(text: &str) -> ftx_core::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Data(format!("record: {e}")))
}

fn format_option(format: Option<String>) -> ftx_core::Result<Option<Format>> {
    format
        .map(|f| {
            Format::parse(&f).ok_or_else(|| Error::Config(format!("format: unknown format {f:?}")))
        })
        .transpose()
}

/// What a template sees of one record (JSON): ``{"format", "messages", "tools"}``,
/// ``{"format": "text", "text"}`` or ``{"reject": {"code", "message"}}``.
#[pyfunction]
#[pyo3(signature = (record, *, format=None))]
pub fn normalize(
    py: Python<'_>,
    record: String,
    format: Option<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let out = errors::run(py, move || {
        let opts = FormatOptions {
            forced: format_option(format)?,
            ..FormatOptions::default()
        };
        convert::tree(&ftx_core::preview::normalized(parse(&record)?, &opts))
    })?;
    convert::to_py(py, &out)
}

/// Renders one record (JSON) with a chat template's source: ``{"text"}`` or ``{"reject"}``.
#[pyfunction]
#[pyo3(signature = (template, record, *, add_generation_prompt=false, bos_token=None, eos_token=None))]
pub fn render_chat(
    py: Python<'_>,
    template: String,
    record: String,
    add_generation_prompt: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let out = errors::run(py, move || {
        let specials = SpecialTokens {
            bos: bos_token,
            eos: eos_token,
            ..SpecialTokens::default()
        };
        ftx_core::preview::render(&template, specials, parse(&record)?, add_generation_prompt)
            .and_then(|v| convert::tree(&v))
    })?;
    convert::to_py(py, &out)
}

/// The generation prompts of records (JSON texts), rendered and tokenized as ``prepare`` renders
/// and tokenizes them, with the generation prompt; returns ``{"template", "items"}``, each item
/// ``{"text", "ids"}`` or ``{"reject"}``.
#[pyfunction]
#[pyo3(signature = (records, *, model_dir=None, tokenizer=None, chat_template=None))]
pub fn prompts(
    py: Python<'_>,
    records: Vec<String>,
    model_dir: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    chat_template: Option<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let out = errors::run(py, move || {
        let mut o = PrepareOptions::new(Vec::new(), PathBuf::new());
        o.model_dir = model_dir;
        o.tokenizer = tokenizer;
        o.chat_template = chat_template;
        let values = records
            .iter()
            .map(|r| parse(r))
            .collect::<ftx_core::Result<Vec<_>>>()?;
        ftx_core::preview::prompts(&o, values).and_then(|v| convert::tree(&v))
    })?;
    convert::to_py(py, &out)
}

/// Encodes records (JSON texts) as ``prepare`` would; returns ``{"template", "items"}``, each
/// item ``{"text", "trained", "ids", "mask"}`` or ``{"reject"}``.
#[pyfunction]
#[pyo3(signature = (records, *, model_dir=None, tokenizer=None, chat_template=None, format=None, train_on="assistant"))]
pub fn preview<'py>(
    py: Python<'py>,
    records: Vec<String>,
    model_dir: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    chat_template: Option<String>,
    format: Option<String>,
    train_on: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let train_on = train_on.to_string();
    let out = errors::run(py, move || {
        let mut o = PrepareOptions::new(Vec::new(), PathBuf::new());
        o.model_dir = model_dir;
        o.tokenizer = tokenizer;
        o.chat_template = chat_template;
        o.settings.format = format_option(format)?;
        o.settings.train_on = ftx_core::encode::TrainOn::parse(&train_on).ok_or_else(|| {
            Error::Config(format!(
                "train_on: {train_on:?} is not assistant, last or all"
            ))
        })?;
        let values = records
            .iter()
            .map(|r| parse(r))
            .collect::<ftx_core::Result<Vec<_>>>()?;
        ftx_core::preview::preview(&o, values).and_then(|v| convert::tree(&v))
    })?;
    convert::to_py(py, &out)
}
