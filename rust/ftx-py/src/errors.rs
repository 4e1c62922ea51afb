//! The one place where engine errors become Python exceptions, and the one helper every long
//! call goes through.

use ftx_core::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Maps an engine error to the matching class of `ftx.errors` (defined in Python so that the
/// exception tree is documented and typed in one place).
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let (class, message) = match &err {
        Error::Io { source, .. } => (
            match source.kind() {
                std::io::ErrorKind::NotFound => "FtxFileNotFoundError",
                std::io::ErrorKind::PermissionDenied => "FtxPermissionError",
                _ => "FtxIOError",
            },
            err.to_string(),
        ),
        Error::Data(_) => ("DataError", err.to_string()),
        Error::Template(_) => ("TemplateError", err.to_string()),
        Error::Config(_) => ("ConfigError", err.to_string()),
        Error::Tokenizer(_) => ("TokenizerError", err.to_string()),
        Error::Cancelled => return pyo3::exceptions::PyKeyboardInterrupt::new_err("cancelled"),
        Error::Internal(_) => ("FtxError", err.to_string()),
    };
    match py
        .import("ftx.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((message.clone(),)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// Runs engine work with the interpreter released and panics caught, then maps the error.
pub fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> ftx_core::Result<T> + Send) -> PyResult<T> {
    py.detach(|| ftx_core::error::catch_panic(f))
        .map_err(|e| to_py(py, e))
}
