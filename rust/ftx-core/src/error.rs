//! The one error type of the engine. The Python binding maps each variant to one exception class.

use std::path::PathBuf;

/// Everything that can stop a call into the engine. Per-record problems are not errors: they are
/// [`crate::reject::Reject`]s, written to `rejects.jsonl`, and only become an error when a policy
/// (such as the maximum reject ratio) says so.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}", io_message(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input data as a whole cannot be used (too many rejects, no usable record, bad file).
    #[error("{0}")]
    Data(String),
    /// A chat template cannot be compiled or fails on (almost) every record.
    #[error("{0}")]
    Template(String),
    /// An option or a model folder is not usable as given.
    #[error("{0}")]
    Config(String),
    /// The tokenizer could not be loaded or failed.
    #[error("{0}")]
    Tokenizer(String),
    /// The caller asked to stop (Ctrl-C); nothing was published.
    #[error("cancelled")]
    Cancelled,
    /// A bug in ftx: a panic caught before it could cross into Python.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<std::io::Error> for Error {
    // Errors from fs-err already name their file in the message.
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            path: PathBuf::new(),
            source,
        }
    }
}

fn io_message(path: &std::path::Path, source: &std::io::Error) -> String {
    if path.as_os_str().is_empty() {
        source.to_string()
    } else {
        format!("{}: {source}", path.display())
    }
}

/// Runs `f`, turning a panic into [`Error::Internal`] so that it never unwinds into a caller
/// that cannot handle it (the Python interpreter).
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            Err(Error::Internal(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_internal_error() {
        let r: Result<()> = catch_panic(|| panic!("boom"));
        assert!(matches!(r, Err(Error::Internal(ref m)) if m == "boom"));
    }

    #[test]
    fn io_error_names_the_file() {
        let e = Error::from(fs_err::File::open("/no/such/file").unwrap_err());
        assert!(e.to_string().contains("/no/such/file"), "{e}");
    }
}
