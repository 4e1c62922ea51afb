//! ftx-core: the data engine behind `ftx prepare`, in plain Rust (no Python here).
//!
//! Pipeline stages, one module each: [`reader`] → [`formats`] (parse, detect, normalize, validate)
//! → [`dedup`] → [`split`] → [`template`] (render) → [`encode`] (tokenize + mask) → [`store`].
//! [`pipeline`] wires them together on a bounded, ordered, multi-core path.

pub mod conversation;
pub mod decontam;
pub mod dedup;
pub mod encode;
pub mod error;
pub mod formats;
pub mod inspect;
pub mod manifest;
pub mod merge;
pub mod model;
pub mod neardup;
pub mod options;
pub mod output;
pub mod pipeline;
pub mod preview;
pub mod reader;
pub mod reject;
mod resolve;
pub mod shard;
pub(crate) mod sink;
pub mod split;
pub mod stats;
pub mod store;
pub mod template;

pub use error::{Error, Result};

/// The ftx version, recorded in every artifact.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
