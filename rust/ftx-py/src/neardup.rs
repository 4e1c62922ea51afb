//! Near-dedup over texts, for `ftx inspect` and the benchmark: the engine's stage on its own.

use ftx_core::neardup::{clusters, Params};
use ftx_core::options::Settings;
use ftx_core::Error;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;

use crate::errors;

/// A kept record and its near duplicates with their estimated similarity, by position.
type Cluster = (usize, Vec<(usize, f64)>);

/// The near-duplicate clusters of ``texts`` (prepare's ``--near-dedup`` on these texts, as
/// plain text records): ``(kept, [(member, estimated_jaccard), ...])`` by position in
/// ``texts``, the kept record the earliest of its cluster, clusters of one left out. The
/// settings are ``prepare``'s ``near_dedup_*`` ones and are checked as they are; ``threads``
/// defaults to ``FTX_NUM_THREADS``, else all cores, and never changes the result.
#[pyfunction]
#[pyo3(signature = (texts, *, ngram=5, permutations=128, bands=None, threshold=0.8, threads=None))]
pub fn near_duplicates(
    py: Python<'_>,
    // The texts' own UTF-8, not copies.
    texts: Vec<PyBackedStr>,
    ngram: usize,
    permutations: usize,
    bands: Option<usize>,
    threshold: f64,
    threads: Option<usize>,
) -> PyResult<Vec<Cluster>> {
    errors::run(py, move || {
        let keys = serde_json::json!({
            "near_dedup_ngram": ngram,
            "near_dedup_permutations": permutations,
            "near_dedup_bands": bands,
            "near_dedup_threshold": threshold,
        });
        let keys = keys.as_object().cloned().unwrap_or_default();
        let settings = Settings::from_keys(&keys).map_err(|issues| {
            let lines: Vec<String> = issues
                .iter()
                .map(|i| format!("{} = {}: {}", i.key, i.value, i.allowed))
                .collect();
            Error::Config(lines.join("; "))
        })?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ftx_core::options::num_threads(threads))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start worker threads: {e}")))?;
        let found = pool.install(|| clusters(&texts, &Params::of(&settings)));
        Ok(found.into_iter().map(|c| (c.kept, c.members)).collect())
    })
}
