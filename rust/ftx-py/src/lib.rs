//! `ftx._core`: the thin Python binding of ftx-core. It converts types and errors and releases
//! the interpreter around long calls; no business logic lives here.

use pyo3::prelude::*;

mod errors;

/// Raises a Rust panic inside the engine, to prove that it reaches Python as `ftx.FtxError`.
#[pyfunction]
fn _debug_panic(py: Python<'_>, message: String) -> PyResult<()> {
    errors::run(py, move || -> ftx_core::Result<()> { panic!("{message}") })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", ftx_core::version())?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    Ok(())
}
