//! Conversions for `prepare`: Python arguments in, the report out as a JSON string.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use ftx_core::options::{LengthPolicy, PrepareOptions};
use ftx_core::reader::{Input, TextUnit};
use ftx_core::split::SplitSize;
use ftx_core::Error;
use pyo3::prelude::*;

use crate::errors;

fn config(msg: String) -> Error {
    Error::Config(msg)
}

/// Expands globs and checks that every input exists; returns paths in the order given.
#[pyfunction]
pub fn expand_inputs(py: Python<'_>, patterns: Vec<String>) -> PyResult<Vec<PathBuf>> {
    errors::run(py, move || ftx_core::reader::expand(&patterns))
}

/// Names of the chat templates shipped with ftx (for ``--chat-template NAME``).
#[pyfunction]
pub fn builtin_templates() -> Vec<&'static str> {
    ftx_core::template::builtin_names().to_vec()
}

/// Runs the whole prepare pipeline with the interpreter released and returns the report as a
/// JSON string. ``inputs`` holds ``(path_to_read, original_path, line_offset)`` triples.
/// ``progress`` is called with a dict of counters after every batch; Ctrl-C stops the run
/// cleanly (nothing is published) and raises ``KeyboardInterrupt``.
#[pyfunction]
#[pyo3(signature = (
    inputs, out_dir, *, model_dir=None, tokenizer=None, chat_template=None, format=None,
    columns=None, text_unit="line", dedup=true, valid="0", test="0", seed=0, max_length=None,
    length_policy="drop", train_on="assistant", max_reject_ratio=None, threads=None,
    force=false, progress=None
))]
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    py: Python<'_>,
    inputs: Vec<(PathBuf, PathBuf, u64)>,
    out_dir: PathBuf,
    model_dir: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    chat_template: Option<String>,
    format: Option<String>,
    columns: Option<String>,
    text_unit: &str,
    dedup: bool,
    valid: &str,
    test: &str,
    seed: u64,
    max_length: Option<usize>,
    length_policy: &str,
    train_on: &str,
    max_reject_ratio: Option<f64>,
    threads: Option<usize>,
    force: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let build = || -> ftx_core::Result<PrepareOptions> {
        let inputs = inputs
            .into_iter()
            .map(|(path, origin, line_offset)| Input {
                path,
                origin,
                line_offset,
            })
            .collect();
        let mut o = PrepareOptions::new(inputs, out_dir);
        o.model_dir = model_dir;
        o.tokenizer = tokenizer;
        o.chat_template = chat_template;
        o.format = match format {
            Some(f) => Some(
                ftx_core::formats::Format::parse(&f)
                    .ok_or_else(|| config(format!("format: unknown format {f:?}")))?,
            ),
            None => None,
        };
        o.columns = columns;
        o.text_unit = match text_unit {
            "line" => TextUnit::Line,
            "file" => TextUnit::File,
            other => return Err(config(format!("text_unit: {other:?} is not line or file"))),
        };
        o.dedup = dedup;
        o.valid = SplitSize::parse(valid).map_err(|e| config(format!("valid: {e}")))?;
        o.test = SplitSize::parse(test).map_err(|e| config(format!("test: {e}")))?;
        o.seed = seed;
        o.max_length = max_length;
        o.length_policy = LengthPolicy::parse(length_policy).ok_or_else(|| {
            config(format!(
                "length_policy: {length_policy:?} is not drop, truncate or error"
            ))
        })?;
        o.train_on = ftx_core::encode::TrainOn::parse(train_on).ok_or_else(|| {
            config(format!(
                "train_on: {train_on:?} is not assistant, last or all"
            ))
        })?;
        o.max_reject_ratio = max_reject_ratio;
        o.threads = threads;
        o.force = force;
        Ok(o)
    };
    let opts = build().map_err(|e| errors::to_py(py, e))?;
    let cancel = AtomicBool::new(false);
    let interrupted = AtomicBool::new(false);
    let on_progress = |p: &ftx_core::pipeline::Progress| {
        Python::attach(|py| {
            if let Err(err) = py.check_signals() {
                if err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                    interrupted.store(true, Ordering::Relaxed);
                }
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            if let Some(cb) = &progress {
                let args = [
                    ("records", p.records as f64),
                    ("accepted", p.accepted as f64),
                    ("rejected", p.rejected as f64),
                    ("duplicates", p.duplicates as f64),
                    ("tokens", p.tokens as f64),
                    ("elapsed_s", p.elapsed_s),
                ];
                let dict = pyo3::types::PyDict::new(py);
                for (k, v) in args {
                    let _ = dict.set_item(k, v);
                }
                // A failing progress display must not fail the run.
                let _ = cb.call1(py, (dict,));
            }
        })
    };
    let report = errors::run(py, || {
        ftx_core::pipeline::prepare(opts, &on_progress, &cancel)
    })?;
    Ok(report.to_string())
}
