//! `cblas_sgemm`, `cblas_dgemm` and `cblas_cgemm` under their plain names, forwarding to an
//! optimized BLAS that exports them only under a prefix (PyPI's `scipy-openblas32` names them
//! `scipy_cblas_*`). MLX's CPU backend imports exactly these three; once Python has bound the
//! targets and made this module's symbols global, `libmlx.so` resolves its GEMMs here when it
//! loads. One indirect jump per GEMM call, nothing else.

// Calling a C function through an address is the whole point of this module; every call site
// checks the address was bound.
#![allow(unsafe_code)]
// The CBLAS signatures are what they are.
#![allow(clippy::too_many_arguments)]

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

type Sgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);
type Dgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f64,
    *const f64,
    c_int,
    *const f64,
    c_int,
    f64,
    *mut f64,
    c_int,
);
// Complex scalars go by pointer in CBLAS.
type Cgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *const c_void,
    *const c_void,
    c_int,
    *const c_void,
    c_int,
    *const c_void,
    *mut c_void,
    c_int,
);

static SGEMM: AtomicUsize = AtomicUsize::new(0);
static DGEMM: AtomicUsize = AtomicUsize::new(0);
static CGEMM: AtomicUsize = AtomicUsize::new(0);

/// The bound address, or the end of the process: a GEMM that silently did nothing would hand
/// MLX garbage. Unreachable in practice, since Python makes these symbols global only after
/// `bind_blas` succeeded, and a bound address is never unbound.
fn target(slot: &AtomicUsize) -> usize {
    match slot.load(Ordering::Acquire) {
        0 => std::process::abort(),
        addr => addr,
    }
}

#[no_mangle]
pub extern "C" fn cblas_sgemm(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
) {
    // SAFETY: the address is the library's cblas_sgemm, whose signature is `Sgemm`.
    let f: Sgemm = unsafe { std::mem::transmute::<usize, Sgemm>(target(&SGEMM)) };
    // SAFETY: the arguments are the caller's, passed through unchanged.
    unsafe {
        f(
            order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
        )
    }
}

#[no_mangle]
pub extern "C" fn cblas_dgemm(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f64,
    a: *const f64,
    lda: c_int,
    b: *const f64,
    ldb: c_int,
    beta: f64,
    c: *mut f64,
    ldc: c_int,
) {
    // SAFETY: as in cblas_sgemm.
    let f: Dgemm = unsafe { std::mem::transmute::<usize, Dgemm>(target(&DGEMM)) };
    // SAFETY: as in cblas_sgemm.
    unsafe {
        f(
            order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
        )
    }
}

#[no_mangle]
pub extern "C" fn cblas_cgemm(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    lda: c_int,
    b: *const c_void,
    ldb: c_int,
    beta: *const c_void,
    c: *mut c_void,
    ldc: c_int,
) {
    // SAFETY: as in cblas_sgemm.
    let f: Cgemm = unsafe { std::mem::transmute::<usize, Cgemm>(target(&CGEMM)) };
    // SAFETY: as in cblas_sgemm.
    unsafe {
        f(
            order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
        )
    }
}

/// Binds the plain ``cblas_sgemm``, ``cblas_dgemm`` and ``cblas_cgemm`` of this module to the
/// functions at these addresses (a loaded library's, with the CBLAS signatures). Binding again
/// to other addresses is refused: MLX may already call the first ones.
#[pyfunction]
pub fn bind_blas(sgemm: usize, dgemm: usize, cgemm: usize) -> PyResult<()> {
    if sgemm == 0 || dgemm == 0 || cgemm == 0 {
        return Err(PyValueError::new_err("bind_blas: a null address"));
    }
    for (slot, addr) in [(&SGEMM, sgemm), (&DGEMM, dgemm), (&CGEMM, cgemm)] {
        if let Err(bound) = slot.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Acquire) {
            if bound != addr {
                return Err(PyValueError::new_err(
                    "bind_blas: already bound to another library",
                ));
            }
        }
    }
    Ok(())
}

/// The address ``cblas_sgemm`` of this module forwards to, or 0 when it is not bound.
#[pyfunction]
pub fn blas_target() -> usize {
    SGEMM.load(Ordering::Acquire)
}
