"""Products with a few rows of a CSR matrix, or a few columns of a CSC one.

The pattern method's Jacobian updates on a convolutional network (`_pattern._Tangents`) take
thousands of such products a second, each on a few dozen of a convolution's rows or columns.
SciPy's fancy indexing builds and checks a new sparse array for each (about 60-75 us of a
110-180 us product on the shipped conv decoder, measured), so this module gathers the picked
rows or columns itself and calls SciPy's compiled product kernel on them (decision, issue 14).
The kernel is private to SciPy (`scipy.sparse._sparsetools`); it is checked once against the
public path on a small product and the public path is used wherever it is missing or differs.
The gather keeps SciPy's order, so the sums and their round-off are those of
`matrix[picks] @ values`.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse


def picked_product(matrix: scipy.sparse.csr_array | scipy.sparse.csc_array,
                   picks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """matrix[picks] @ values for a CSR matrix, matrix[:, picks] @ values for a CSC one.

    `picks` are integer indices (in range, any order); `values` (n, c) float64 with n the
    other dimension (CSR) or len(picks) (CSC). Returns a dense (rows, c) array."""
    picks = np.asarray(picks, dtype=np.intp)
    values = np.ascontiguousarray(values, dtype=np.float64)
    if not _kernels_agree():
        return _public_product(matrix, picks, values)
    return _kernel_product(matrix, picks, values)


def _public_product(matrix, picks: np.ndarray, values: np.ndarray) -> np.ndarray:
    chosen = matrix[picks] if matrix.format == "csr" else matrix[:, picks]
    return np.asarray(chosen @ values)


def _kernel_product(matrix, picks: np.ndarray, values: np.ndarray) -> np.ndarray:
    from scipy.sparse import _sparsetools

    major = matrix.shape[0] if matrix.format == "csr" else matrix.shape[1]
    if picks.size and (picks.min() < 0 or picks.max() >= major):
        raise IndexError(f"index out of range for a major dimension of {major}")
    pointer, indices, data = _gathered(matrix, picks)
    width = values.shape[1]
    if matrix.format == "csr":
        out = np.zeros((len(picks), width))
        _sparsetools.csr_matvecs(len(picks), matrix.shape[1], width, pointer, indices, data,
                                 values.ravel(), out.ravel())
    else:
        out = np.zeros((matrix.shape[0], width))
        _sparsetools.csc_matvecs(matrix.shape[0], len(picks), width, pointer, indices, data,
                                 values.ravel(), out.ravel())
    return out


def _gathered(matrix, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The picked major rows (CSR) or columns (CSC) as compressed arrays, in pick order."""
    from scipy.sparse import _sparsetools

    lengths = matrix.indptr[picks + 1] - matrix.indptr[picks]
    pointer = np.zeros(len(picks) + 1, dtype=matrix.indptr.dtype)
    np.cumsum(lengths, out=pointer[1:])
    indices = np.empty(pointer[-1], dtype=matrix.indices.dtype)
    data = np.empty(pointer[-1], dtype=matrix.data.dtype)
    _sparsetools.csr_row_index(len(picks), picks.astype(matrix.indptr.dtype), matrix.indptr,
                               matrix.indices, matrix.data, indices, data)
    return pointer, indices, data


@functools.cache
def _kernels_agree() -> bool:
    """Whether SciPy's private kernels exist and give the public path's products, bit for
    bit, on a small random matrix in both formats."""
    rng = np.random.default_rng(20261204)
    dense = rng.normal(size=(30, 40)) * (rng.random((30, 40)) < 0.2)
    matrix = scipy.sparse.csr_array(dense)
    picks = np.array([7, 3, 3, 29, 0])
    try:
        for chosen, width in ((matrix, 40), (matrix.tocsc(), 5)):
            values = rng.normal(size=(width, 4))
            if not np.array_equal(_kernel_product(chosen, picks, values),
                                  _public_product(chosen, picks, values)):
                return False
    except (ImportError, AttributeError, TypeError, ValueError):
        return False
    return True
