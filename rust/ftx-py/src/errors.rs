//! The one place where engine errors become Python exceptions, and the one helper every long
//! call goes through.

use ftx_core::Error;
use pyo3::prelude::*;

// The exception tree is documented and typed in Python (`ftx/errors.py`, multiple bases such as
// `DataError(FtxError, ValueError)` that `create_exception!` cannot make); each class is imported
// once, on first use, as a typed Rust handle.
pyo3::import_exception!(ftx.errors, FtxError);
pyo3::import_exception!(ftx.errors, DataError);
pyo3::import_exception!(ftx.errors, TemplateError);
pyo3::import_exception!(ftx.errors, ConfigError);
pyo3::import_exception!(ftx.errors, TokenizerError);
pyo3::import_exception!(ftx.errors, FtxIOError);
pyo3::import_exception!(ftx.errors, FtxFileNotFoundError);
pyo3::import_exception!(ftx.errors, FtxPermissionError);

/// Maps an engine error to the matching class of `ftx.errors`.
pub fn to_py(err: Error) -> PyErr {
    let message = err.to_string();
    match &err {
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => FtxFileNotFoundError::new_err(message),
            std::io::ErrorKind::PermissionDenied => FtxPermissionError::new_err(message),
            _ => FtxIOError::new_err(message),
        },
        Error::Data(_) => DataError::new_err(message),
        Error::Template(_) => TemplateError::new_err(message),
        Error::Config(_) => ConfigError::new_err(message),
        Error::Tokenizer(_) => TokenizerError::new_err(message),
        Error::Cancelled => pyo3::exceptions::PyKeyboardInterrupt::new_err("cancelled"),
        Error::Internal(_) => FtxError::new_err(message),
    }
}

/// Runs engine work with the interpreter released and panics caught, then maps the error.
pub fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> ftx_core::Result<T> + Send) -> PyResult<T> {
    py.detach(|| ftx_core::error::catch_panic(f)).map_err(to_py)
}
