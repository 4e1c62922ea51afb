//! Conversions for `prepare`: Python arguments in, the report out as a dict.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use ftx_core::options::{Issue, PrepareOptions, Settings};
use ftx_core::reader::Input;
use ftx_core::Error;
use pyo3::prelude::*;

use crate::{convert, errors};

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

/// One setting of ``prepare`` as the CLI and the Python API present it.
#[pyclass(frozen, get_all, module = "ftx._core")]
pub struct Setting {
    name: &'static str,
    /// ``flag``, ``int``, ``ratio``, ``split``, ``choice``, ``text`` or ``paths``.
    kind: &'static str,
    help: &'static str,
    choices: Vec<&'static str>,
    /// The default (``None``, ``True``, ``0``, ``"line"``, ``[]``).
    default: Py<PyAny>,
}

/// Every setting of ``prepare`` (what its flags, ``--config`` keys and keywords are made from).
#[pyfunction]
pub fn prepare_settings(py: Python<'_>) -> PyResult<Vec<Setting>> {
    ftx_core::options::Settings::describe()
        .into_iter()
        .map(|s| {
            Ok(Setting {
                name: s.name,
                kind: s.kind,
                help: s.help,
                choices: s.choices,
                default: convert::to_py(py, &s.default)?.unbind(),
            })
        })
        .collect()
}

/// The problems of a mapping of settings (JSON text), each ``(key, value given, allowed)``;
/// empty when it is valid.
#[pyfunction]
pub fn check_settings<'py>(
    py: Python<'py>,
    settings: String,
) -> PyResult<Vec<(String, Bound<'py, PyAny>, String)>> {
    let issues = errors::run(py, move || {
        Ok(settings_from(&settings).err().unwrap_or_default())
    })?;
    issues
        .into_iter()
        .map(|i| Ok((i.key, convert::to_py(py, &i.value)?, i.allowed)))
        .collect()
}

fn settings_from(text: &str) -> Result<Settings, Vec<Issue>> {
    let keys: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| {
            vec![Issue {
                key: String::new(),
                value: serde_json::Value::Null,
                allowed: format!("settings must be a JSON object ({e})"),
            }]
        })?;
    Settings::from_keys(&keys)
}

/// The options of a run over `inputs` (``(path_to_read, original_path, line_offset)`` triples)
/// with `settings` (a JSON object of settings).
pub fn options(
    inputs: Vec<(PathBuf, PathBuf, u64)>,
    out_dir: PathBuf,
    settings: &str,
    model_dir: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    chat_template: Option<String>,
    threads: Option<usize>,
) -> ftx_core::Result<PrepareOptions> {
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
    o.settings = settings_from(settings).map_err(|issues| {
        let lines: Vec<String> = issues
            .iter()
            .map(|i| format!("{} = {}: {}", i.key, i.value, i.allowed))
            .collect();
        Error::Config(format!("settings: {}", lines.join("; ")))
    })?;
    o.threads = threads;
    Ok(o)
}

/// The progress callback of a pass: calls `progress` with a dict of counters after every batch
/// and sets `cancel` on Ctrl-C, so the run stops cleanly and raises ``KeyboardInterrupt``.
pub fn reporter<'a>(
    progress: &'a Option<Py<PyAny>>,
    cancel: &'a AtomicBool,
) -> impl Fn(&ftx_core::pipeline::Progress) + Sync + 'a {
    move |p: &ftx_core::pipeline::Progress| {
        Python::attach(|py| {
            if py.check_signals().is_err() {
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            if let Some(cb) = progress {
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
    }
}

/// Runs the whole prepare pipeline with the interpreter released and returns the report: the
/// manifest written (``manifest.json``'s keys, in its order) and ``run``, how it ran. ``inputs`` holds ``(path_to_read, original_path, line_offset)`` triples,
/// ``settings`` a JSON object of settings (``prepare_settings``; unknown keys are refused).
/// ``progress`` is called with a dict of counters after every batch; Ctrl-C stops the run
/// cleanly (nothing is published) and raises ``KeyboardInterrupt``.
#[pyfunction]
#[pyo3(signature = (
    inputs, out_dir, settings="{}", *, model_dir=None, tokenizer=None, chat_template=None,
    threads=None, force=false, progress=None
))]
#[allow(clippy::too_many_arguments)]
pub fn prepare<'py>(
    py: Python<'py>,
    inputs: Vec<(PathBuf, PathBuf, u64)>,
    out_dir: PathBuf,
    settings: &str,
    model_dir: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    chat_template: Option<String>,
    threads: Option<usize>,
    force: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut opts = options(
        inputs,
        out_dir,
        settings,
        model_dir,
        tokenizer,
        chat_template,
        threads,
    )
    .map_err(errors::to_py)?;
    opts.force = force;
    let cancel = AtomicBool::new(false);
    let on_progress = reporter(&progress, &cancel);
    let report = errors::run(py, || {
        ftx_core::pipeline::prepare(opts, &on_progress, &cancel).and_then(|r| convert::tree(&r))
    })?;
    convert::to_py(py, &report)
}

/// The tokenizer, template and settings of a shard set, loaded once, to run any of its shards:
/// what one worker of a cluster holds. The arguments are ``prepare``'s.
#[pyclass(frozen, module = "ftx._core")]
#[derive(Debug)]
pub struct ShardEngine {
    inner: ftx_core::shard::ShardEngine,
}

#[pymethods]
impl ShardEngine {
    #[new]
    #[pyo3(signature = (
        inputs, settings="{}", *, model_dir=None, tokenizer=None, chat_template=None, threads=None
    ))]
    fn new(
        py: Python<'_>,
        inputs: Vec<(PathBuf, PathBuf, u64)>,
        settings: &str,
        model_dir: Option<PathBuf>,
        tokenizer: Option<PathBuf>,
        chat_template: Option<String>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let opts = options(
            inputs,
            PathBuf::new(),
            settings,
            model_dir,
            tokenizer,
            chat_template,
            threads,
        )
        .map_err(errors::to_py)?;
        let inner = errors::run(py, move || ftx_core::shard::ShardEngine::load(opts))?;
        Ok(ShardEngine { inner })
    }

    /// Writes shard ``index`` of ``count`` (0-based) to ``out_dir``: that share of the inputs,
    /// processed up to dedup, for ``merge``. Returns the shard's manifest.
    #[pyo3(signature = (index, count, out_dir, *, force=false, progress=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        index: u32,
        count: u32,
        out_dir: PathBuf,
        force: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = ftx_core::shard::ShardSpec::parse(&format!("{index}/{count}"))
            .map_err(|e| errors::to_py(Error::Config(e)))?;
        let cancel = AtomicBool::new(false);
        let on_progress = reporter(&progress, &cancel);
        let report = errors::run(py, || {
            self.inner
                .run(spec, &out_dir, force, &on_progress, &cancel)
                .and_then(|r| convert::tree(&r))
        })?;
        convert::to_py(py, &report)
    }
}

/// Merges the shards of one ``prepare_shard`` set into the artifact ``prepare`` writes for the
/// same inputs and settings, byte for byte. ``memory`` bounds what one dedup partition holds
/// (bytes). Returns the report ``prepare`` returns.
#[pyfunction]
#[pyo3(signature = (shards, out_dir, *, memory=None, threads=None, force=false, progress=None))]
pub fn merge<'py>(
    py: Python<'py>,
    shards: Vec<PathBuf>,
    out_dir: PathBuf,
    memory: Option<u64>,
    threads: Option<usize>,
    force: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = ftx_core::merge::MergeOptions {
        shards,
        out_dir,
        force,
        memory: memory.unwrap_or(ftx_core::merge::DEFAULT_MEMORY),
        threads,
    };
    let cancel = AtomicBool::new(false);
    let on_progress = reporter(&progress, &cancel);
    let report = errors::run(py, || {
        let _bounded = crate::allocator::ReturnFreedPages::new();
        ftx_core::merge::merge(opts, &on_progress, &cancel).and_then(|r| convert::tree(&r))
    })?;
    convert::to_py(py, &report)
}
