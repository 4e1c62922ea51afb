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

/// The bound address, or the end of the process: a GEMM that silently did nothing would hand
/// MLX garbage. Unreachable in practice, since Python makes these symbols global only after
/// `bind_blas` succeeded, and a bound address is never unbound.
fn target(slot: &AtomicUsize) -> usize {
    match slot.load(Ordering::Acquire) {
        0 => std::process::abort(),
        addr => addr,
    }
}

/// One forwarder: `$name` with CBLAS's GEMM signature for scalars `$alpha` and elements
/// `$elem` (complex ones go by pointer), calling the function bound in `$slot`.
macro_rules! gemm {
    ($name:ident, $slot:ident, $alpha:ty, $elem:ty) => {
        static $slot: AtomicUsize = AtomicUsize::new(0);

        #[no_mangle]
        pub extern "C" fn $name(
            order: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: $alpha,
            a: *const $elem,
            lda: c_int,
            b: *const $elem,
            ldb: c_int,
            beta: $alpha,
            c: *mut $elem,
            ldc: c_int,
        ) {
            type Gemm = unsafe extern "C" fn(
                c_int,
                c_int,
                c_int,
                c_int,
                c_int,
                c_int,
                $alpha,
                *const $elem,
                c_int,
                *const $elem,
                c_int,
                $alpha,
                *mut $elem,
                c_int,
            );
            // SAFETY: the address is the bound library's function of this name, whose
            // signature is `Gemm`.
            let f: Gemm = unsafe { std::mem::transmute::<usize, Gemm>(target(&$slot)) };
            // SAFETY: the arguments are the caller's, passed through unchanged.
            unsafe {
                f(
                    order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                )
            }
        }
    };
}

gemm!(cblas_sgemm, SGEMM, f32, f32);
gemm!(cblas_dgemm, DGEMM, f64, f64);
gemm!(cblas_cgemm, CGEMM, *const c_void, c_void);

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
