//! Conversions for `ftx inspect`: the in-memory pass over raw files (arrays out as NumPy arrays,
//! without a copy) and the tokenizer's decoding of records.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{convert, errors, prepare};

/// What ``prepare`` would write for these inputs and settings, kept in memory: the manifest's
/// counts (``inputs``, ``template``, ``records_read``, ``duplicates``, ``rejected``,
/// ``rejects``, ``record_info``), ``reject_lines`` (the lines of ``rejects.jsonl``) and
/// ``splits``, each ``{"tokens", "mask", "offsets", "records"}`` as NumPy arrays (``records``
/// 2-D, one row of ``record_info["columns"]`` per record). Nothing is written; no reject limit
/// stops it. Arguments as for ``prepare``.
#[pyfunction]
#[pyo3(signature = (
    inputs, settings="{}", *, model_dir=None, tokenizer=None, chat_template=None, threads=None,
    progress=None
))]
#[allow(clippy::too_many_arguments)]
pub fn collect<'py>(
    py: Python<'py>,
    inputs: Vec<(PathBuf, PathBuf, u64)>,
    settings: &str,
    model_dir: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    chat_template: Option<String>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = prepare::options(
        inputs,
        PathBuf::new(),
        settings,
        model_dir,
        tokenizer,
        chat_template,
        threads,
    )
    .map_err(errors::to_py)?;
    let cancel = AtomicBool::new(false);
    let on_progress = prepare::reporter(&progress, &cancel);
    let (summary, splits) = errors::run(py, || {
        let mut c = ftx_core::pipeline::collect(opts, &on_progress, &cancel)?;
        let splits = std::mem::take(&mut c.splits);
        Ok((convert::tree(&c)?, splits))
    })?;
    let out = convert::to_py(py, &summary)?.cast_into::<PyDict>()?;
    let arrays = PyDict::new(py);
    for (split, a) in splits {
        let rows = a.records.len() / ftx_core::manifest::RECORD_COLUMNS.len();
        let d = PyDict::new(py);
        d.set_item("tokens", a.tokens.into_pyarray(py))?;
        d.set_item("mask", a.mask.into_pyarray(py))?;
        d.set_item("offsets", a.offsets.into_pyarray(py))?;
        d.set_item(
            "records",
            a.records
                .into_pyarray(py)
                .reshape([rows, ftx_core::manifest::RECORD_COLUMNS.len()])?,
        )?;
        arrays.set_item(split.as_str(), d)?;
    }
    out.set_item("splits", arrays)?;
    Ok(out)
}

/// A model's tokenizer (``model_dir`` or ``tokenizer``, loaded as ``prepare`` loads it), for
/// turning a record's token ids back into text.
#[pyclass(frozen, module = "ftx._core")]
#[derive(Debug)]
pub struct Decoder {
    inner: ftx_core::inspect::Decoder,
}

#[pymethods]
impl Decoder {
    #[new]
    #[pyo3(signature = (*, model_dir=None, tokenizer=None))]
    fn new(
        py: Python<'_>,
        model_dir: Option<PathBuf>,
        tokenizer: Option<PathBuf>,
    ) -> PyResult<Self> {
        let inner = errors::run(py, move || {
            let mut o = ftx_core::options::PrepareOptions::new(Vec::new(), PathBuf::new());
            o.model_dir = model_dir;
            o.tokenizer = tokenizer;
            ftx_core::inspect::Decoder::load(&o)
        })?;
        Ok(Decoder { inner })
    }

    /// The text of one record (its ids and mask, 1-D arrays) as ``[{"text", "trained"}]``,
    /// cut where the mask changes; the texts join to the record's decoded text.
    fn segments<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray1<'py, u32>,
        mask: PyReadonlyArray1<'py, u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, mask) = (ids.as_slice()?, mask.as_slice()?);
        let out = errors::run(py, || convert::tree(&self.inner.segments(ids, mask)?))?;
        convert::to_py(py, &out)
    }

    /// The ``top`` lines found in the most records (``[{"line", "records"}]``, only lines in
    /// two records or more) of splits given as ``(tokens, offsets)`` pairs.
    fn repeated_lines<'py>(
        &self,
        py: Python<'py>,
        parts: Vec<(PyReadonlyArray1<'py, u32>, PyReadonlyArray1<'py, u64>)>,
        top: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let slices = parts
            .iter()
            .map(|(t, o)| Ok((t.as_slice()?, o.as_slice()?)))
            .collect::<PyResult<Vec<_>>>()?;
        let out = errors::run(py, || {
            convert::tree(&self.inner.repeated_lines(&slices, top)?)
        })?;
        convert::to_py(py, &out)
    }
}
