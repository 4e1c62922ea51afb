//! `ftx._core`: the thin Python binding of ftx-core. It converts types and errors and releases
//! the interpreter around long calls; no business logic lives here.

use pyo3::prelude::*;

// Rust allocations of the extension only; Python's own stay with the interpreter.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod errors;
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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", ftx_core::version())?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::expand_inputs, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::prepare, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::builtin_templates, m)?)?;
    m.add_function(wrap_pyfunction!(preview::normalize, m)?)?;
    m.add_function(wrap_pyfunction!(preview::render_chat, m)?)?;
    m.add_function(wrap_pyfunction!(preview::preview, m)?)?;
    Ok(())
}
