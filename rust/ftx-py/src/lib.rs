//! `ftx._core`: the thin Python binding of ftx-core. It converts types and errors and releases
//! the interpreter around long calls; no business logic lives here.

use pyo3::prelude::*;

mod allocator;
mod blas;
mod convert;
mod errors;
mod inspect;
mod neardup;
mod prepare;
mod preview;

/// Raises a Rust panic inside the engine; it must reach Python as ``ftx.FtxError``.
#[pyfunction]
fn _debug_panic(py: Python<'_>, message: String) -> PyResult<()> {
    errors::run(py, move || -> ftx_core::Result<()> { panic!("{message}") })
}

/// The number of worker threads ``prepare`` uses: ``FTX_NUM_THREADS``, else all cores.
#[pyfunction]
fn num_threads() -> usize {
    ftx_core::options::num_threads(None)
}

/// Every name ``--format`` accepts (the formats and their other spellings).
#[pyfunction]
fn format_names() -> Vec<&'static str> {
    ftx_core::formats::Format::NAMES
        .iter()
        .map(|(n, _)| *n)
        .collect()
}

/// The size of a file and its xxh3-64 digest (16 hex digits), as a manifest records them.
#[pyfunction]
fn file_digest(py: Python<'_>, path: std::path::PathBuf) -> PyResult<(u64, String)> {
    errors::run(py, move || ftx_core::store::digest(&path))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    allocator::configure();
    m.add("__version__", ftx_core::version())?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(file_digest, m)?)?;
    m.add_function(wrap_pyfunction!(format_names, m)?)?;
    m.add_function(wrap_pyfunction!(blas::bind_blas, m)?)?;
    m.add_function(wrap_pyfunction!(blas::blas_target, m)?)?;
    m.add_function(wrap_pyfunction!(neardup::near_duplicates, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::expand_inputs, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::prepare, m)?)?;
    m.add_class::<prepare::ShardEngine>()?;
    m.add_function(wrap_pyfunction!(prepare::merge, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::builtin_templates, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::prepare_settings, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::check_settings, m)?)?;
    m.add_class::<prepare::Setting>()?;
    m.add_function(wrap_pyfunction!(preview::normalize, m)?)?;
    m.add_function(wrap_pyfunction!(preview::render_chat, m)?)?;
    m.add_function(wrap_pyfunction!(preview::preview, m)?)?;
    m.add_function(wrap_pyfunction!(preview::prompts, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::collect, m)?)?;
    m.add_class::<inspect::Decoder>()?;
    Ok(())
}
