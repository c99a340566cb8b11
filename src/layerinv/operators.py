"""Linear operators: the linear part W of a layer act(W h + b), as an object.

A layer never hands its callers a dense matrix: the walk, the layer inversion, the solver
backends, exact.py, the measurement operators and reconstruct ask the operator for what they
need, so that a structured operator (a convolution, whose dense matrix would be 12544 x 6272
per layer) can be added later as one class here, without touching them. The whole dense
matrix is taken only at export sites: `Network.save`, the PyTorch conversion (`to_torch` and
gradient descent's torch modules) and the paper's cvxopt reference in the benchmark;
tests/test_operators.py scans the package for any other. What an operator provides:

- `shape` (n_out, n_in), `n_out`, `n_in`;
- `apply(x)` = W x and `adjoint(y)` = W' y, for one vector or a batch (rows of a 2-D array);
- `matmat(X)` = W X for a matrix whose columns are vectors (a Jacobian), by default
  `apply(X.T).T`; the dense operator keeps the product `W @ X` (same numbers as before);
- `rows(index)`: the rows of a subset as a dense array (`sparse=True`: a scipy CSR array),
  for solvers whose algorithm is dense in the pinned rows (the interior point, least squares,
  cvxopt), or sparse rows for a sparse model (HiGHS's LPs, exact.py's MILP);
- `row_subset(index)`: the operator restricted to those rows (an operator, not a matrix);
- `gram(index, row_weights)`: W_S' diag(w) W_S, the normal matrix of a row subset;
- `abs()`: the operator |W| (interval bound propagation);
- `to_dense()`, `to_sparse()`: the whole matrix, for export (files, PyTorch, users).

`DenseOperator` is the only kind so far. Its products are spelled exactly as the code they
replaced (`x @ W.T` on batches, `W @ x` on vectors, `W @ X` for matmat, syrk for the Gram),
so results are bitwise those of the dense code. `as_operator` turns an array into one.
A new kind implements the abstract methods (`matmat`, `to_dense` and `to_sparse` have
defaults) and must pickle (networks travel to worker processes by pickle).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse

from layerinv import _linalg
from layerinv._validation import as_float_array, check_finite
from layerinv.errors import InputError


class LinearOperator(ABC):
    """A linear map R^n_in -> R^n_out; subclasses implement the abstract methods."""

    shape: tuple[int, int]

    @property
    def n_out(self) -> int:
        return int(self.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.shape[1])

    @abstractmethod
    def apply(self, x: np.ndarray) -> np.ndarray:
        """W x for x of shape (n_in,), or W x_b for each row of x of shape (B, n_in)."""

    @abstractmethod
    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """W' y for y of shape (n_out,), or for each row of y of shape (B, n_out)."""

    def matmat(self, X: np.ndarray) -> np.ndarray:
        """W X for X of shape (n_in, k): the columns of X mapped (a Jacobian's chain rule)."""
        return self.apply(X.T).T

    @abstractmethod
    def rows(self, index: np.ndarray | None = None, *, sparse: bool = False
             ) -> np.ndarray | scipy.sparse.csr_array:
        """The rows `index` (a boolean mask or integer indices; None: all), dense or CSR."""

    @abstractmethod
    def row_subset(self, index: np.ndarray) -> LinearOperator:
        """The operator restricted to the rows `index`."""

    @abstractmethod
    def gram(self, index: np.ndarray | None = None,
             row_weights: np.ndarray | None = None) -> np.ndarray:
        """W_S' diag(row_weights) W_S (n_in x n_in) over the rows `index`; row_weights >= 0.

        Only the upper triangle is guaranteed (it may come straight from BLAS syrk).
        """

    @abstractmethod
    def abs(self) -> LinearOperator:
        """The operator whose matrix is |W| entry by entry."""

    def to_dense(self) -> np.ndarray:
        """The whole matrix, dense (n_out, n_in)."""
        return np.asarray(self.rows())

    def to_sparse(self) -> scipy.sparse.csr_array:
        """The whole matrix as a scipy CSR array."""
        return scipy.sparse.csr_array(self.rows(sparse=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_out={self.n_out}, n_in={self.n_in})"


class DenseOperator(LinearOperator):
    """A dense float64 matrix, stored C-contiguous (rows are contiguous: slicing is cheap)."""

    def __init__(self, matrix: object, name: str = "weight"):
        matrix = as_float_array(matrix, name)
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise InputError(f"{name} must be a non-empty 2-D array (n_out, n_in); "
                             f"got shape {matrix.shape}")
        check_finite(matrix, name)
        self._matrix = np.ascontiguousarray(matrix)
        self.shape = (int(matrix.shape[0]), int(matrix.shape[1]))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self._matrix @ x if np.ndim(x) == 1 else x @ self._matrix.T

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return self._matrix.T @ y if np.ndim(y) == 1 else y @ self._matrix

    def matmat(self, X: np.ndarray) -> np.ndarray:
        # W @ X, not (X' W')': a GEMM with the operands swapped sums in another order
        # (differences of 1e-14 measured), and the Jacobians of exact.py and reconstruct
        # were computed this way.
        return self._matrix @ X

    def rows(self, index: np.ndarray | None = None, *, sparse: bool = False
             ) -> np.ndarray | scipy.sparse.csr_array:
        chosen = self._matrix if index is None else self._matrix[index]
        return scipy.sparse.csr_array(chosen) if sparse else chosen

    def row_subset(self, index: np.ndarray) -> DenseOperator:
        return DenseOperator._trusted(self._matrix[index])

    def gram(self, index: np.ndarray | None = None,
             row_weights: np.ndarray | None = None) -> np.ndarray:
        return _linalg.gram(self.rows(index), row_weights)

    def abs(self) -> DenseOperator:
        return DenseOperator._trusted(np.abs(self._matrix))

    @classmethod
    def _trusted(cls, matrix: np.ndarray) -> DenseOperator:
        """An operator of a matrix derived from a checked one (no second validation pass)."""
        operator = cls.__new__(cls)
        operator._matrix = np.ascontiguousarray(matrix)
        operator.shape = (int(matrix.shape[0]), int(matrix.shape[1]))
        return operator

    def to_dense(self) -> np.ndarray:
        return self._matrix


def as_operator(value: object, name: str = "weight") -> LinearOperator:
    """`value` itself if it is a LinearOperator, else a DenseOperator of the array."""
    return value if isinstance(value, LinearOperator) else DenseOperator(value, name)
