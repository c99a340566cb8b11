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

- `scaled(rows, columns)`: diag(rows) W diag(columns), folded into the operator's own entries
  where its kind allows (a batch norm folded into the layer before or after it).

The kinds: `DenseOperator`, whose products are spelled exactly as the code they replaced
(`x @ W.T` on batches, `W @ x` on vectors, `W @ X` for matmat, syrk for the Gram), so results
are bitwise those of the dense code; `SparseOperator` over a scipy CSR array (a row subset of
a structured operator, a diagonal scale); `ProductOperator`, W = A_1 A_2 ... A_k of operators
applied last-first (a convolution followed by an upsampling, in one layer); and
`convolution.Conv2dOperator` (nn.Conv2d and nn.ConvTranspose2d, matrix-free). `as_operator`
turns an array into a DenseOperator. A new kind implements the abstract methods (`matmat`,
`to_dense`, `to_sparse` and `scaled` have defaults, and `row_subset` and `gram` default to the
sparse rows) and must pickle (networks travel to
worker processes by pickle).
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

    def row_subset(self, index: np.ndarray) -> LinearOperator:
        """The operator restricted to the rows `index` (by default those rows, sparse)."""
        return SparseOperator._trusted(self.rows(index, sparse=True))

    def gram(self, index: np.ndarray | None = None,
             row_weights: np.ndarray | None = None) -> np.ndarray:
        """W_S' diag(row_weights) W_S (n_in x n_in) over the rows `index`; row_weights >= 0.

        Only the upper triangle is guaranteed (it may come straight from BLAS syrk). By
        default from the rows, sparse.
        """
        return sparse_gram(self.rows(index, sparse=True), row_weights)

    @abstractmethod
    def abs(self) -> LinearOperator:
        """The operator whose matrix is |W| entry by entry."""

    def scaled(self, rows: np.ndarray | None = None,
               columns: np.ndarray | None = None) -> LinearOperator:
        """diag(rows) W diag(columns) (None: no scale on that side).

        By default a product with diagonal factors; kinds that can fold the scales into their
        own entries (dense, sparse, a convolution for per-channel scales) override this.
        """
        factors: list[LinearOperator] = [self]
        if rows is not None:
            factors.insert(0, SparseOperator.diagonal(rows))
        if columns is not None:
            factors.append(SparseOperator.diagonal(columns))
        return self if len(factors) == 1 else ProductOperator(factors)

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

    def scaled(self, rows: np.ndarray | None = None,
               columns: np.ndarray | None = None) -> DenseOperator:
        matrix = self._matrix if rows is None else self._matrix * rows[:, None]
        return DenseOperator._trusted(matrix if columns is None else matrix * columns)


class SparseOperator(LinearOperator):
    """A scipy CSR matrix (canonical: sorted indices, no duplicates), float64."""

    def __init__(self, matrix: object, name: str = "weight"):
        try:
            csr = scipy.sparse.csr_array(matrix, dtype=np.float64)
            csr.check_format(full_check=True)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} must be a sparse or dense 2-D numeric matrix; got "
                             f"{type(matrix).__name__} ({exc})") from None
        if csr.ndim != 2 or 0 in csr.shape:
            raise InputError(f"{name} must be a non-empty 2-D matrix (n_out, n_in); got shape "
                             f"{csr.shape}")
        check_finite(csr.data, f"{name}'s entries")
        csr.sum_duplicates()  # canonical: sorted indices, one entry per position
        self._csr = csr
        self.shape = (int(csr.shape[0]), int(csr.shape[1]))

    @classmethod
    def diagonal(cls, values: np.ndarray) -> SparseOperator:
        """diag(values), a square operator."""
        return cls(scipy.sparse.diags_array(np.asarray(values, dtype=np.float64), format="csr"))

    @classmethod
    def _trusted(cls, csr: scipy.sparse.csr_array) -> SparseOperator:
        """An operator of a CSR array derived from checked ones (no second validation)."""
        operator = cls.__new__(cls)
        csr = scipy.sparse.csr_array(csr)
        csr.sum_duplicates()
        operator._csr = csr
        operator.shape = (int(csr.shape[0]), int(csr.shape[1]))
        return operator

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self._csr @ x if np.ndim(x) == 1 else (self._csr @ x.T).T

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return self._csr.T @ y if np.ndim(y) == 1 else (self._csr.T @ y.T).T

    def matmat(self, X: np.ndarray) -> np.ndarray:
        return self._csr @ X

    def rows(self, index: np.ndarray | None = None, *, sparse: bool = False
             ) -> np.ndarray | scipy.sparse.csr_array:
        chosen = self._csr if index is None else self._csr[row_indices(index, self.n_out)]
        return scipy.sparse.csr_array(chosen) if sparse else chosen.toarray()

    def abs(self) -> SparseOperator:
        return SparseOperator._trusted(abs(self._csr))

    def scaled(self, rows: np.ndarray | None = None,
               columns: np.ndarray | None = None) -> SparseOperator:
        csr = self._csr
        if rows is not None:
            csr = scipy.sparse.diags_array(rows) @ csr
        if columns is not None:
            csr = csr @ scipy.sparse.diags_array(columns)
        return SparseOperator._trusted(csr)

    def to_sparse(self) -> scipy.sparse.csr_array:
        return self._csr.copy()


class ProductOperator(LinearOperator):
    """W = A_1 A_2 ... A_k: `factors` in the order of the matrix product (A_k applies first).

    Rows are built factor by factor from the left, each factor asked only for the rows the
    ones before it touch (sparse), so no factor's whole matrix is formed.
    """

    def __init__(self, factors: list[LinearOperator]):
        flat: list[LinearOperator] = []
        for i, factor in enumerate(factors):
            if not isinstance(factor, LinearOperator):
                raise InputError(f"factors[{i}] must be a LinearOperator; got "
                                 f"{type(factor).__name__}")
            flat.extend(factor.factors if isinstance(factor, ProductOperator) else [factor])
        if len(flat) < 2:
            raise InputError(f"factors must hold at least two operators; got {len(flat)}")
        for i in range(1, len(flat)):
            if flat[i - 1].n_in != flat[i].n_out:
                raise InputError(f"factors[{i - 1}] takes {flat[i - 1].n_in} inputs but "
                                 f"factors[{i}] gives {flat[i].n_out} outputs")
        self.factors: tuple[LinearOperator, ...] = tuple(flat)
        self.shape = (flat[0].n_out, flat[-1].n_in)

    def apply(self, x: np.ndarray) -> np.ndarray:
        for factor in reversed(self.factors):
            x = factor.apply(x)
        return x

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        for factor in self.factors:
            y = factor.adjoint(y)
        return y

    def matmat(self, X: np.ndarray) -> np.ndarray:
        for factor in reversed(self.factors):
            X = factor.matmat(X)
        return X

    def rows(self, index: np.ndarray | None = None, *, sparse: bool = False
             ) -> np.ndarray | scipy.sparse.csr_array:
        chosen = self.factors[0].rows(index, sparse=True)
        for factor in self.factors[1:]:
            used = np.unique(chosen.indices)  # the next factor's rows these rows touch
            chosen = scipy.sparse.csr_array(chosen[:, used] @ factor.rows(used, sparse=True))
        chosen.sum_duplicates()
        chosen.eliminate_zeros()
        return chosen if sparse else chosen.toarray()

    def row_subset(self, index: np.ndarray) -> ProductOperator:
        return ProductOperator([self.factors[0].row_subset(index), *self.factors[1:]])

    def abs(self) -> SparseOperator:
        # |A B| is not |A| |B| (entries of opposite signs cancel): the product's own entries,
        # sparse, which is as large as the product's sparse rows.
        return SparseOperator._trusted(abs(self.rows(sparse=True)))

    def scaled(self, rows: np.ndarray | None = None,
               columns: np.ndarray | None = None) -> ProductOperator:
        first, *middle, last = self.factors
        return ProductOperator([first.scaled(rows=rows), *middle, last.scaled(columns=columns)])

    def __repr__(self) -> str:
        inner = ", ".join(repr(factor) for factor in self.factors)
        return f"ProductOperator([{inner}])"


def row_indices(index: np.ndarray | None, n_rows: int) -> np.ndarray:
    """Integer row indices of `index` (a boolean mask of n_rows, integer indices, or None: all)."""
    if index is None:
        return np.arange(n_rows)
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (n_rows,):
            raise InputError(f"index must be a boolean mask of shape ({n_rows},) or integer "
                             f"indices; got a boolean array of shape {index.shape}")
        return np.flatnonzero(index)
    return index.astype(np.intp, copy=False).reshape(-1)


def sparse_gram(rows: scipy.sparse.csr_array, row_weights: np.ndarray | None) -> np.ndarray:
    """R' diag(row_weights) R, dense, for sparse rows R."""
    weighted = rows if row_weights is None else scipy.sparse.diags_array(
        np.asarray(row_weights, dtype=np.float64)) @ rows
    return np.asarray((rows.T @ weighted).toarray())


def as_operator(value: object, name: str = "weight") -> LinearOperator:
    """`value` itself if it is a LinearOperator, else a DenseOperator of the array."""
    return value if isinstance(value, LinearOperator) else DenseOperator(value, name)
