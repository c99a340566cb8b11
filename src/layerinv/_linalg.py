"""The dense linear algebra of the layer problems: Gram matrices, Cholesky, least squares.

Shared by the interior point (`solvers/_ipm.py`), the dense linear operator (`operators.py`)
and the layer inversion (eq. 4's least squares and the uniqueness certificates); BLAS and
LAPACK through SciPy. A base module: it imports nothing of layerinv but `_blas`.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, eigvalsh, lapack

from layerinv._blas import on_one_thread


def cholesky(matrix: np.ndarray) -> np.ndarray | None:
    """Upper Cholesky factor (Fortran order), retried with growing regularisation; None if all fail.

    Only the upper triangle of `matrix` is read (it may come straight from syrk).
    """
    scale = float(np.mean(np.abs(np.diag(matrix)))) or 1.0
    for shift in (0.0, 1e-12, 1e-10, 1e-8):
        trial = matrix if shift == 0.0 else matrix + shift * scale * np.eye(len(matrix))
        factor, info = lapack.dpotrf(trial, lower=0, clean=0, overwrite_a=0)
        if info == 0:
            return factor
    return None


def cho_solve(factor: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    solution, info = lapack.dpotrs(factor, rhs, lower=0)
    if info != 0:  # pragma: no cover - dpotrs only fails on bad arguments
        raise RuntimeError(f"dpotrs failed with info={info}")
    return solution


def gram(weight: np.ndarray, row_weights: np.ndarray | None = None) -> np.ndarray:
    """W' diag(row_weights) W by BLAS syrk (upper triangle filled), row_weights >= 0."""
    scaled = weight if row_weights is None else weight * np.sqrt(row_weights)[:, None]
    # A C-ordered (n, m) array is a Fortran (m, n) array: syrk with trans=0 gives W' W, no copy.
    return blas.dsyrk(1.0, scaled.T, trans=0, lower=0)


@on_one_thread
def least_squares(weight: np.ndarray, rhs: np.ndarray
                  ) -> tuple[np.ndarray | None, bool, np.ndarray | None]:
    """Least squares min ||W h - rhs||_2 by Cholesky of W' W.

    Returns (h, full_rank, W' W). When W has fewer rows than columns or the Cholesky fails,
    h is None and full_rank False: the caller treats that layer as not uniquely invertible.
    The Gram matrix (upper triangle) is returned for reuse by `smallest_singular_value`.
    """
    n, m = weight.shape
    if n < m:
        return None, False, None
    normal = gram(weight)
    factor, info = lapack.dpotrf(normal, lower=0, clean=0)
    if info != 0:
        return None, False, normal
    # A positive pivot can still be numerically zero: compare the factor's diagonal spread.
    diag = np.abs(np.diag(factor))
    if diag.min() <= 1e-7 * diag.max():
        return None, False, normal
    return cho_solve(factor, weight.T @ rhs), True, normal


@on_one_thread
def least_squares_factor(weight: np.ndarray, rhs: np.ndarray
                         ) -> tuple[np.ndarray | None, bool, np.ndarray | None,
                                    np.ndarray | None]:
    """`least_squares`, also returning the upper Cholesky factor R of W' W (None where h is).

    Returns (h, full_rank, W' W, R)."""
    n, m = weight.shape
    if n < m:
        return None, False, None, None
    normal = gram(weight)
    factor, info = lapack.dpotrf(normal, lower=0, clean=1)
    if info != 0:
        return None, False, normal, None
    diag = np.abs(np.diag(factor))
    if diag.min() <= 1e-7 * diag.max():
        return None, False, normal, None
    return cho_solve(factor, weight.T @ rhs), True, normal, factor


@on_one_thread
def inverse_factor_bounds(factor: np.ndarray) -> tuple[float, float]:
    """From an upper Cholesky factor R of W' W: (a lower bound on sigma_min(W),
    max_i ||row i of R^-1||_2), both from R^-1 (LAPACK dtrtri, m^3 / 3 flops).

    sigma_min(W) = 1 / ||R^-1||_2, and ||R^-1||_2 <= ||R^-1||_F and
    <= sqrt(||R^-1||_1 ||R^-1||_inf): the smaller of the two gives a proven lower bound
    (in exact arithmetic). Row i of R^-1 has the norm of row i of W^+ = R^-1 R^-T W'
    (both squared give ((W' W)^-1)_ii), so |(h - h*)_i| <= ||row i||_2 ||W (h - h*)||_2.
    """
    inverse, info = lapack.dtrtri(factor, lower=0, unitdiag=0)
    if info != 0:
        return 0.0, float("inf")
    inverse = np.triu(inverse)
    absolute = np.abs(inverse)
    frobenius = float(np.sqrt((inverse**2).sum()))
    mixed = float(np.sqrt(absolute.sum(axis=0).max() * absolute.sum(axis=1).max()))
    row_norm = float(np.sqrt((inverse**2).sum(axis=1).max()))
    return 1.0 / min(frobenius, mixed), row_norm


@on_one_thread
def smallest_singular_value(weight: np.ndarray, normal: np.ndarray | None = None) -> float:
    """sigma_min of W (n x m), from the smallest eigenvalue of W' W (LAPACK dsyevr); 0 if n < m.

    `normal` may pass W' W (upper triangle) when it was formed already.
    """
    n, m = weight.shape
    if n < m or m == 0:
        return 0.0
    return sigma_min_of_gram(gram(weight) if normal is None else normal)


@on_one_thread
def sigma_min_of_gram(normal: np.ndarray) -> float:
    """sigma_min of W from W' W (upper triangle) of a W with at least as many rows as columns."""
    smallest = eigvalsh(normal, lower=False, subset_by_index=[0, 0], check_finite=False)
    return float(np.sqrt(max(smallest[0], 0.0)))


@on_one_thread
def pinv_norms(weight: np.ndarray, normal: np.ndarray | None = None) -> tuple[float, float]:
    """(||W^+||_inf, max_i ||row i of W^+||_2) for a full-column-rank W; (inf, inf) if not.

    If every row of W h and of W h* is within a of its target, ||h - h*||_inf <= ||W^+||_inf 2a
    (worst case). With independent row errors each entry of h - h* is about ||(W^+)_i||_2 a,
    25-50x smaller on nearly square W: the typical error handed to the next layer.
    `normal` may pass W' W (upper triangle) when it was formed already.
    """
    n, m = weight.shape
    if n < m:
        return float("inf"), float("inf")
    factor = cholesky(gram(weight) if normal is None else normal)
    if factor is None:
        return float("inf"), float("inf")
    pinv = cho_solve(factor, np.ascontiguousarray(weight.T))
    return float(np.abs(pinv).sum(axis=1).max()), float(np.sqrt((pinv**2).sum(axis=1).max()))

