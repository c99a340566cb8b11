"""The dense linear algebra of the layer problems: Gram matrices, Cholesky, least squares.

Shared by the interior point (`solvers/_ipm.py`), the dense linear operator (`operators.py`)
and the layer inversion (eq. 4's least squares, and the certificates: proven bounds on
sigma_min and on the row norms of the pseudo-inverse from the Cholesky factor's inverse,
`inverse_factor_bounds`); BLAS and LAPACK through SciPy. A base module: it imports nothing
of layerinv but `_blas`.
"""

from __future__ import annotations

from typing import NamedTuple

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
                         ) -> tuple[np.ndarray | None, bool, np.ndarray | None]:
    """`least_squares`, returning the upper Cholesky factor R of W' W instead of W' W.

    Returns (h, full_rank, R); R (strictly lower triangle zero) is None where h is. The Gram
    is factored in place: measured on the exact path of 110 x 250 x 600, the kernels ran 20 %
    faster without the copy (0.93 against 1.15 ms a sample)."""
    n, m = weight.shape
    if n < m:
        return None, False, None
    factor = factor_of_gram(gram(weight))
    if factor is None:
        return None, False, None
    # A positive pivot can still be numerically zero: compare the factor's diagonal spread.
    diag = np.abs(np.diag(factor))
    if diag.min() <= 1e-7 * diag.max():
        return None, False, None
    return cho_solve(factor, weight.T @ rhs), True, factor


UNIT_ROUNDOFF = 2.0**-53
"""u, the unit roundoff of float64."""


class FactorNorms(NamedTuple):
    """What the certificate reads off an upper Cholesky factor R and X = R^-1."""

    inverse_frobenius: float
    """||X||_F"""
    inverse_mixed: float
    """sqrt(||X||_1 ||X||_inf)"""
    inverse_row_norm: float
    """max_i ||row i of X||_2"""
    factor_frobenius: float
    """||R||_F"""
    size: int
    """m, the order of R"""


@on_one_thread
def inverse_factor_bounds(factor: np.ndarray, n_rows: int, *, overwrite: bool = False
                          ) -> tuple[float, float]:
    """From the upper Cholesky factor R of W' W (W with `n_rows` rows): (a lower bound on
    sigma_min(W), an upper bound on max_i ||row i of W^+||_2), both from R^-1 (LAPACK dtrtri,
    m^3 / 3 flops). (0, inf) where R is singular or rounding could void the bounds.

    R's strictly lower triangle must be zero (dpotrf with clean=1, as `least_squares_factor`);
    with `overwrite` R is inverted in place (no m x m temporary: allocating one cost as much
    as 60 % of dtrtri's time on (300, 250) blocks, in page faults).

    In exact arithmetic, with X = R^-1: sigma_min(W) = 1 / ||X||_2 >= 1 / min(||X||_F,
    sqrt(||X||_1 ||X||_inf)), and row i of W^+ = X X' W' has the norm of row i of X (both
    squared give ((W' W)^-1)_ii), so |(h - h*)_i| <= ||row i of X||_2 ||W (h - h*)||_2.

    Rounding: R is computed from fl(W' W), so R' R = W' W + E with ||E||_2 <= (n + m + 1) u
    ||W||_F^2 (Higham 2002, (3.13) for the Gram by syrk, Thm 10.3 for Cholesky), and X is R^-1
    to a relative c m u kappa(R) (Ch. 14). To first order in u both move the bounds by a
    relative at most `rounding_margin` = 3 (n + m + 2) u kappa_F^2, kappa_F = ||R||_F ||X||_F
    >= kappa(W): the returned bounds carry that margin (1 - margin, 1 + margin). Measured on
    the pinned rows of random nets: ~1e-7 at (300, 250) (kappa_F^2 ~ 5e5), ~1e-8 at
    (125, 110), 6e-10 at (400, 60). Where it reaches 1/2 nothing is proven (kappa_F beyond
    ~1.6e6 at (300, 250)) and (0, inf) comes back.
    """
    norms = inverse_factor_norms(factor, overwrite=overwrite)
    if norms is None:
        return 0.0, float("inf")
    sigma_min, row_norm, _ = margin_bounds(norms, n_rows)
    return sigma_min, row_norm


def margin_bounds(norms: FactorNorms, n_rows: int) -> tuple[float, float, float]:
    """`inverse_factor_bounds` from `inverse_factor_norms`: (sigma_min bound, row-norm bound,
    the rounding margin they carry); (0, inf, margin) where the margin reaches 1/2."""
    margin = rounding_margin(norms, n_rows)
    if not margin < 0.5:
        return 0.0, float("inf"), margin
    return ((1.0 - margin) / min(norms.inverse_frobenius, norms.inverse_mixed),
            norms.inverse_row_norm * (1.0 + margin), margin)


def inverse_factor_norms(factor: np.ndarray, *, overwrite: bool = False
                         ) -> FactorNorms | None:
    """The `FactorNorms` of R, upper triangular with a zero strictly lower triangle (inverted
    in place with `overwrite`); None where R is singular. No rounding margin."""
    flat = factor.ravel(order="K")
    factor_frobenius = float(np.sqrt(flat @ flat))
    inverse, info = lapack.dtrtri(factor, lower=0, unitdiag=0, overwrite_c=int(overwrite))
    if info != 0:
        return None
    row_squares = np.einsum("ij,ij->i", inverse, inverse)
    absolute = np.abs(inverse, out=inverse if overwrite else None)
    mixed = float(np.sqrt(absolute.sum(axis=0).max() * absolute.sum(axis=1).max()))
    return FactorNorms(float(np.sqrt(row_squares.sum())), mixed,
                       float(np.sqrt(row_squares.max())), factor_frobenius, len(factor))


def rounding_margin(norms: FactorNorms, n_rows: int) -> float:
    """3 (n + m + 2) u ||R||_F^2 ||R^-1||_F^2: the relative first-order effect of rounding on
    the bounds R^-1 gives (`inverse_factor_bounds` derives it)."""
    kappa_squared = (norms.factor_frobenius * norms.inverse_frobenius) ** 2
    return 3.0 * (n_rows + norms.size + 2) * UNIT_ROUNDOFF * kappa_squared


@on_one_thread
def gram_factor(weight: np.ndarray) -> np.ndarray | None:
    """The upper Cholesky factor of W' W (strictly lower triangle zero), unregularised; None
    where W has fewer rows than columns or the factorisation fails."""
    if weight.shape[0] < weight.shape[1]:
        return None
    return factor_of_gram(gram(weight))


def factor_of_gram(normal: np.ndarray) -> np.ndarray | None:
    """The upper Cholesky factor of `normal` (its upper triangle read; the factor's strictly
    lower triangle zero), unregularised; None where dpotrf fails. `normal` is overwritten
    (in place where it is Fortran-ordered, as `gram` makes it)."""
    result, info = lapack.dpotrf(normal, lower=0, clean=1, overwrite_a=1)
    return result if info == 0 else None


@on_one_thread
def smallest_singular_value(weight: np.ndarray, normal: np.ndarray | None = None) -> float:
    """sigma_min of W (n x m), from the smallest eigenvalue of W' W (LAPACK dsyevr); 0 if n < m.

    `normal` may pass W' W (upper triangle) when it was formed already. (The certificate no
    longer calls it: dsyevr was 43 % of the exact path; `inverse_factor_bounds` instead.)
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
