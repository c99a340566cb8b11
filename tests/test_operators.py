"""Linear operators (operators.py): the API against the dense matrix, bad input, pickling, and
the proof that no caller assumes a dense array (a CSR-backed operator inverts, reconstructs,
saves and exports as the equal dense network does), and a scan that no module outside the
operator and layer modules reads a layer's `.weight` except at its export sites."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import layerinv
from layerinv import Layer, Network, exact, invert, random_network, reconstruct
from layerinv.errors import InputError
from layerinv.measurements import Gaussian, Mask
from layerinv.operators import (
    DenseOperator,
    LinearOperator,
    ProductOperator,
    SparseOperator,
    as_operator,
)


class CSROperator(LinearOperator):
    """A test operator backed by a scipy CSR matrix: every abstract method implemented here,
    nothing inherited from DenseOperator (what a structured operator would be)."""

    def __init__(self, matrix: object):
        self._csr = scipy.sparse.csr_array(matrix)
        self.shape = (int(self._csr.shape[0]), int(self._csr.shape[1]))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self._csr @ x if np.ndim(x) == 1 else (self._csr @ x.T).T

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return self._csr.T @ y if np.ndim(y) == 1 else (self._csr.T @ y.T).T

    def rows(self, index=None, *, sparse=False):
        chosen = self._csr
        if index is not None:
            index = np.asarray(index)
            chosen = self._csr[np.flatnonzero(index) if index.dtype == bool else index, :]
        return scipy.sparse.csr_array(chosen) if sparse else chosen.toarray()

    def row_subset(self, index: np.ndarray) -> CSROperator:
        return CSROperator(self.rows(index, sparse=True))

    def gram(self, index=None, row_weights=None) -> np.ndarray:
        chosen = self.rows(index, sparse=True)
        if row_weights is not None:
            chosen = scipy.sparse.diags_array(np.sqrt(row_weights)) @ chosen
        return (chosen.T @ chosen).toarray()

    def abs(self) -> CSROperator:
        return CSROperator(abs(self._csr))


def _matrices(max_side: int = 8):
    shapes = st.tuples(st.integers(1, max_side), st.integers(1, max_side))
    return shapes.flatmap(lambda shape: hnp.arrays(
        np.float64, shape, elements=st.floats(-10, 10, allow_nan=False, width=64)))


def _operators(matrix: np.ndarray) -> list[LinearOperator]:
    """The matrix as every kind: dense, the test's CSR, SparseOperator, and two products of
    it with diagonal factors of ones (left and right; a product's rows go through both)."""
    n, m = matrix.shape
    return [DenseOperator(matrix), CSROperator(matrix), SparseOperator(matrix),
            ProductOperator([SparseOperator.diagonal(np.ones(n)), DenseOperator(matrix)]),
            ProductOperator([SparseOperator(matrix), DenseOperator(np.eye(m))])]


def _close(a, b, scale=1.0):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * (1.0 + scale))


# --------------------------------------------------------------------------- the API
@settings(max_examples=40, deadline=None)
@given(_matrices(), st.integers(1, 4), st.randoms(use_true_random=False))
def test_adjoint_identity_for_vectors_and_batches(matrix, batch, rnd):
    rng = np.random.default_rng(rnd.randrange(2**32))
    n, m = matrix.shape
    x, y = rng.normal(size=m), rng.normal(size=n)
    X, Y = rng.normal(size=(batch, m)), rng.normal(size=(batch, n))
    scale = float(np.abs(matrix).sum()) * 10
    for op in _operators(matrix):
        assert op.shape == (n, m) and (op.n_out, op.n_in) == (n, m)
        _close(op.apply(x) @ y, x @ op.adjoint(y), scale)            # <W x, y> = <x, W' y>
        _close(np.sum(op.apply(X) * Y, axis=1), np.sum(X * op.adjoint(Y), axis=1), scale)
        _close(op.apply(x), matrix @ x, scale)
        _close(op.apply(X), X @ matrix.T, scale)
        _close(op.adjoint(Y), Y @ matrix, scale)
        for b in range(batch):  # a batch row is the vector's product
            _close(op.apply(X)[b], op.apply(X[b]), scale)
            _close(op.adjoint(Y)[b], op.adjoint(Y[b]), scale)
        _close(op.matmat(X.T), matrix @ X.T, scale)
    # The dense operator keeps the dense code's product forms exactly (bitwise).
    dense = DenseOperator(matrix)
    assert np.array_equal(dense.apply(x), matrix @ x)
    assert np.array_equal(dense.apply(X), X @ matrix.T)
    assert np.array_equal(dense.matmat(X.T), matrix @ X.T)
    assert np.array_equal(dense.adjoint(y), matrix.T @ y)


@settings(max_examples=40, deadline=None)
@given(_matrices(), st.randoms(use_true_random=False))
def test_rows_subsets_gram_abs_and_exports_match_the_matrix(matrix, rnd):
    rng = np.random.default_rng(rnd.randrange(2**32))
    n = matrix.shape[0]
    mask = rng.random(n) < 0.5
    mask[rng.integers(n)] = True
    for index in (mask, np.flatnonzero(mask), rng.permutation(n)[: max(1, n // 2)]):
        weights = rng.random(len(matrix[index]))
        chosen = matrix[index]
        for op in _operators(matrix):
            assert isinstance(op.rows(index), np.ndarray)
            assert np.array_equal(op.rows(index), chosen)
            sparse = op.rows(index, sparse=True)
            assert scipy.sparse.issparse(sparse) and sparse.format == "csr"
            assert np.array_equal(sparse.toarray(), chosen)
            subset = op.row_subset(index)
            assert isinstance(subset, LinearOperator) and subset.shape == chosen.shape
            assert np.array_equal(subset.to_dense(), chosen)
            scale = float((chosen**2).sum()) * 10
            _close(np.triu(op.gram(index)), np.triu(chosen.T @ chosen), scale)
            _close(np.triu(op.gram(index, weights)),
                   np.triu(chosen.T @ (weights[:, None] * chosen)), scale)
    for op in _operators(matrix):
        assert np.array_equal(op.rows(), matrix)
        assert np.array_equal(op.abs().to_dense(), np.abs(matrix))
        assert isinstance(op.abs(), LinearOperator)
        assert np.array_equal(op.to_dense(), matrix)
        exported = op.to_sparse()
        assert isinstance(exported, scipy.sparse.csr_array)
        assert np.array_equal(exported.toarray(), matrix)


@pytest.mark.parametrize("bad, what", [
    (np.array([[1.0, np.nan]]), "finite"),
    (np.array([[np.inf, 1.0]]), "finite"),
    (np.ones(3), "2-D"),
    (np.zeros((0, 3)), "2-D"),
    (np.zeros((2, 0)), "2-D"),
    (np.ones((2, 2, 2)), "2-D"),
    ([["a", "b"]], ""),
])
def test_bad_matrices_are_one_input_error_line_naming_the_argument(bad, what):
    for build in (lambda: DenseOperator(bad), lambda: as_operator(bad),
                  lambda: Layer(bad, None, "relu")):
        with pytest.raises(InputError) as info:
            build()
        message = str(info.value)
        assert "\n" not in message and "weight" in message
        assert what in message
    with pytest.raises(InputError, match=r"^A "):
        DenseOperator(bad, "A")  # the argument's name is the caller's


def test_pickling_round_trips_operators_and_layers():
    matrix = np.random.default_rng(0).normal(size=(5, 3))
    for op in _operators(matrix):
        back = pickle.loads(pickle.dumps(op))
        assert type(back) is type(op) and back.shape == op.shape
        assert np.array_equal(back.to_dense(), matrix)
        layer = pickle.loads(pickle.dumps(Layer(op, np.ones(5), "leaky_relu(0.2)")))
        assert type(layer.operator) is type(op)
        assert np.array_equal(layer.weight, matrix) and np.array_equal(layer.bias, np.ones(5))
        assert repr(layer.activation) == "leaky_relu(0.2)"


def test_a_layer_holds_the_operator_it_is_given():
    matrix = np.random.default_rng(1).normal(size=(6, 4))
    x = np.random.default_rng(2).normal(size=(3, 4))
    dense = Layer(matrix, None, "relu")
    assert isinstance(dense.operator, DenseOperator)
    for op in _operators(matrix):
        layer = Layer(op, np.arange(6.0), "relu")
        assert layer.operator is op and (layer.n_in, layer.n_out) == (4, 6)
        assert np.array_equal(layer.weight, matrix)  # the dense export
        np.testing.assert_allclose(layer(x), np.maximum(x @ matrix.T + np.arange(6.0), 0),
                                   rtol=1e-14, atol=1e-14)
        assert as_operator(op) is op
        with pytest.raises(InputError, match=r"^bias must have shape \(6,\)"):
            Layer(op, np.ones(5), "relu")
    assert not isinstance(CSROperator(matrix), DenseOperator)


@pytest.mark.parametrize("norm", ["linf", "l1"])
@pytest.mark.parametrize("kind", [DenseOperator, CSROperator])
def test_constraint_rows_dense_and_sparse_hold_the_dense_codes_entries(norm, kind):
    """cvxopt takes the dense form, HiGHS the sparse one: both the entries the dense code
    built (the block below), the sparse one exactly what HiGHS was given (csc of the block)."""
    from layerinv.activations import get_activation
    from layerinv.solvers.problem import LayerProblem, constraint_rows

    rng = np.random.default_rng(11)
    n, m = 30, 6
    weight = rng.normal(size=(n, m)) * (rng.random((n, m)) > 0.3)  # exact zeros in W
    act = get_activation("leaky_relu(0.1)" if norm == "l1" else "relu")
    band = act.band(act.forward(weight @ rng.normal(size=m)), threshold=1e-3)
    problem = LayerProblem(kind(weight), rng.normal(size=n), band, np.full(m, -np.inf),
                           np.full(m, np.inf), norm)
    lower, upper = problem.shifted_band()
    n_t, t_index = (n, np.arange(n)) if norm == "l1" else (1, np.zeros(n, dtype=int))
    blocks = []
    for ends, slopes, sign in ((upper, band.upper_slope, -1.0), (lower, band.lower_slope, 1.0)):
        keep = np.flatnonzero(np.isfinite(ends))
        block = np.zeros((len(keep), m + n_t))
        block[:, :m] = weight[keep]
        block[np.arange(len(keep)), m + t_index[keep]] = sign * slopes[keep]
        blocks.append(block)
    reference = np.vstack(blocks)
    dense, row_lo, row_hi = constraint_rows(problem)
    sparse, sparse_lo, sparse_hi = constraint_rows(problem, sparse=True)
    assert np.array_equal(dense, reference)
    assert np.array_equal(row_lo, sparse_lo) and np.array_equal(row_hi, sparse_hi)
    expected = scipy.sparse.csc_matrix(reference)
    assert sparse.format == "csc" and sparse.has_sorted_indices
    for field in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(sparse, field), getattr(expected, field))


# --------------------------------------------------------------------------- no dense caller
def _pair(widths, activation, seed, bias=True):
    """A random network and the same network with CSR operators (a third of W zeroed)."""
    net = random_network(widths, activation, bias=bias, seed=seed)
    rng = np.random.default_rng(seed + 100)
    layers = []
    for layer in net.layers:
        matrix = layer.weight * (rng.random(layer.weight.shape) > 0.3)
        layers.append((matrix, layer.bias, layer.activation))
    dense = Network([Layer(w, b, a) for w, b, a in layers])
    sparse = Network([Layer(CSROperator(w), b, a) for w, b, a in layers])
    assert all(not isinstance(layer.operator, DenseOperator) for layer in sparse.layers)
    return dense, sparse


def _same_inversion(a, b, tol=1e-12):
    assert list(np.atleast_1d(a.status)) == list(np.atleast_1d(b.status))
    np.testing.assert_allclose(a.z, b.z, rtol=0, atol=tol)
    np.testing.assert_allclose(a.residual, b.residual, rtol=0, atol=tol)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu(0.1)", "sigmoid"])
@pytest.mark.parametrize("method", ["exact", "linf", "l1"])
def test_a_non_dense_operator_inverts_as_the_dense_network(activation, method):
    dense, sparse = _pair([5, 30, 60], activation, seed=3)
    rng = np.random.default_rng(4)
    x = dense(rng.normal(size=(2, 5)))
    noisy = x + 1e-3 * rng.normal(size=x.shape)
    if activation == "sigmoid":
        noisy = np.clip(noisy, 1e-6, 1 - 1e-6)
    for obs in (x, noisy):
        for solver in ("auto", "highs"):
            if method == "exact" and solver == "highs":
                continue
            _same_inversion(invert(sparse, obs, method, solver=solver),
                            invert(dense, obs, method, solver=solver))


@pytest.mark.filterwarnings("ignore:no pre-image within tol")  # the far target
def test_a_non_dense_operator_decides_exact_preimages_as_the_dense_network():
    dense, sparse = _pair([4, 12, 20], "relu", seed=5)
    x = dense(np.random.default_rng(6).normal(size=4))
    for target, tol in ((x, 1e-6), (x + 0.3, 1e-3)):
        a, b = exact.preimage(sparse, target, tol=tol), exact.preimage(dense, target, tol=tol)
        assert (a.status, a.exists, a.n_binaries) == (b.status, b.exists, b.n_binaries)
        if b.z is not None:
            np.testing.assert_allclose(a.z, b.z, rtol=0, atol=1e-9)
    for lo_hi_a, lo_hi_b in zip(exact.interval_bounds(sparse), exact.interval_bounds(dense),
                                strict=True):
        np.testing.assert_allclose(lo_hi_a, lo_hi_b, rtol=1e-12, atol=1e-12)
    a, b = exact.closest(sparse, x + 0.05), exact.closest(dense, x + 0.05)
    assert a.status == b.status
    assert a.distance == pytest.approx(b.distance, rel=1e-6, abs=1e-9)


def test_a_non_dense_operator_reconstructs_as_the_dense_network(one_thread):
    dense, sparse = _pair([5, 20, 40], "relu", seed=7)
    rng = np.random.default_rng(8)
    x = dense(rng.normal(size=5))
    mask = Mask(rng.random(40) < 0.7)
    folded = mask.fold(sparse)
    assert isinstance(folded.layers[-1].operator, CSROperator)  # folding kept the kind
    a, b = reconstruct(sparse, mask.apply(x), mask), reconstruct(dense, mask.apply(x), mask)
    _same_inversion(a.inversion, b.inversion)
    A = Gaussian(25, 40, seed=9)
    options = {"max_iter": 50, "restarts": 1, "seed": 0}
    a = reconstruct(sparse, A.apply(x), A, "pgd", **options)
    b = reconstruct(dense, A.apply(x), A, "pgd", **options)
    _same_inversion(a.inversion, b.inversion, tol=1e-9)
    # Gradient descent runs on the dense export (to_torch): the very numbers of the dense net.
    a = reconstruct(sparse, A.apply(x), A, "gd", steps=20, seed=0)
    b = reconstruct(dense, A.apply(x), A, "gd", steps=20, seed=0)
    assert np.array_equal(a.inversion.z, b.inversion.z)
    a, b = invert(sparse, x, "gd", steps=20, seed=0), invert(dense, x, "gd", steps=20, seed=0)
    assert np.array_equal(a.z, b.z)


def test_a_non_dense_operator_saves_as_sparse_and_exports_as_dense(tmp_path):
    dense, sparse = _pair([3, 7, 9], "leaky_relu(0.2)", seed=10)
    sparse.save(tmp_path / "net.npz")
    back = Network.load(tmp_path / "net.npz")
    for loaded, original in zip(back.layers, dense.layers, strict=True):
        assert isinstance(loaded.operator, SparseOperator)  # a kind the file does not know
        assert np.array_equal(loaded.weight, original.weight)
        assert np.array_equal(loaded.bias, original.bias)
    module = sparse.to_torch()
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    for linear, original in zip(linears, dense.layers, strict=True):
        assert np.array_equal(linear.weight.detach().numpy(),
                              original.weight.astype(np.float32))


# --------------------------------------------------------------------------- the dense scan
PACKAGE = Path(layerinv.__file__).parent
BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
OWNERS = {"operators.py", "convolution.py", "layers.py"}
"""The modules that define the operators and a layer's dense export (`Layer.weight`)."""

EXPORT_SITES = {
    # PyTorch conversion: the nn.Linear's own parameter, read (module -> layers) or written.
    # Convolutions and batch norms: their kernels and gamma vectors (never a dense matrix).
    ("_torch_io.py", "linear.weight"): 2,
    ("_torch_io.py", "conv.weight"): 2,
    ("_torch_io.py", "norm.weight"): 1,
    ("_torch_io.py", "factor.to_dense()"): 1,
    # Gradient descent's torch modules: nn.Linear's parameter and torch.bmm take dense W
    # (convolutions go to torch's convolution instead: `_StackedConvolution`).
    ("_gradient.py", "op.to_dense()"): 1,
    # The .npz file stores a dense operator's matrix, and kinds it does not know as sparse
    # (convolutions and products by their parameters); the compact re-save is checked
    # against it.
    ("network.py", "operator.to_dense()"): 1,
    ("network.py", "operator.to_sparse()"): 1,
    ("reproduction/train.py", "a.operator.to_dense()"): 1,
    ("reproduction/train.py", "b.operator.to_dense()"): 1,
    # The ONNX file holds each layer's dense matrix as a Gemm initializer.
    ("_onnx_io.py", "layer.operator.to_dense()"): 1,
    # The batched PyTorch backend's one copy of W on the device per call.
    ("solvers/_torch.py", "operator.to_dense()"): 1,
}
"""Where the package may still take a layer's whole dense matrix, and how often: each an
export (or its reverse, a PyTorch import), marked by a comment with the word 'export' on its
line or the two lines above."""

BENCHMARK_SITES = {("bench_invert.py", "net.layers[index].operator.to_dense()"): 1}
"""The benchmark's export: the paper's reference code (cvxopt_layer) takes a dense matrix."""


def _dense_uses(path: Path) -> list[tuple[str, int]]:
    """Every use of a whole dense matrix in a module, as (its source, its line): `x.weight`,
    `getattr(x, 'weight')`, `x.to_dense()`, `x.to_sparse()` and `x.rows()` (all rows, dense)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "weight":
            found.append((ast.unparse(node), node.lineno))
        elif not isinstance(node, ast.Call):
            continue
        elif (ast.unparse(node.func) in ("getattr", "hasattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value == "weight"):
            found.append((ast.unparse(node), node.lineno))
        elif isinstance(node.func, ast.Attribute) and (
                node.func.attr in ("to_dense", "to_sparse")
                or (node.func.attr == "rows" and not node.args and not node.keywords)):
            found.append((ast.unparse(node), node.lineno))
    return sorted(found, key=lambda item: item[1])


def _dense_reads(files: list[Path], root: Path, sites: dict | None = None) -> dict[str, list]:
    """Per module, the dense uses that are not listed export sites (or that lack the comment
    saying they are), and listed sites seen a different number of times than listed."""
    sites = EXPORT_SITES if sites is None else sites
    offenders: dict[str, list] = {}
    seen: dict[tuple[str, str], int] = {}
    for path in files:
        name = path.relative_to(root).as_posix()
        if name in OWNERS:
            continue
        lines = path.read_text().splitlines()
        for source, lineno in _dense_uses(path):
            key = (name, source)
            seen[key] = seen.get(key, 0) + 1
            context = " ".join(lines[max(0, lineno - 3): lineno])
            marked = re.search(r"#.*\bexport", context, re.IGNORECASE) is not None
            if key not in sites or not marked:
                offenders.setdefault(name, []).append((lineno, source))
    for key, count in sites.items():
        if seen.get(key, 0) != count:
            offenders.setdefault(key[0], []).append(("listed", key[1], count, seen.get(key, 0)))
    return offenders


def test_no_module_takes_a_layers_dense_matrix_outside_its_export_sites():
    """Solvers, exact.py, measurements and gradient descent ask the operator (products, rows
    of a subset, Gram, abs), so a convolution can be added as one operator class: only the
    operator and layer modules and the listed export sites take the whole dense matrix."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the scan saw the package
    assert _dense_reads(files, PACKAGE) == {}
    assert _dense_reads(sorted(BENCHMARKS.rglob("*.py")), BENCHMARKS, BENCHMARK_SITES) == {}


@pytest.mark.parametrize("source", [
    "u = layer.weight @ h\n",
    "W = problem.weight\n",
    "rows = net.layers[-1].weight[keep]\n",
    "W = getattr(layer, 'weight')\n",
    "W = problem.operator.to_dense()\n",
    "W = problem.operator.rows()\n",
    "S = layer.operator.to_sparse()\n",
    "# an export\nlinear.weight.copy_(w)\n",  # an export comment, but not a listed site
])
def test_the_dense_scan_finds_a_dense_use(tmp_path, source):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert _dense_reads([path], tmp_path, {}) != {}
    path.write_text("u = layer.operator.apply(h)\nname = 'layer.weight'\n"
                    "R = layer.operator.rows(keep)\nS = layer.operator.rows(sparse=True)\n")
    assert _dense_reads([path], tmp_path, {}) == {}


def test_the_dense_scan_wants_the_export_comment_and_the_listed_count(tmp_path):
    path, sites = tmp_path / "_gradient.py", {("_gradient.py", "linear.weight"): 1}
    path.write_text("linear.weight.copy_(w)\n")
    assert _dense_reads([path], tmp_path, sites) != {}
    path.write_text("# An export: dense.\nlinear.weight.copy_(w)\n")
    assert _dense_reads([path], tmp_path, sites) == {}
    path.write_text("# An export: dense.\nlinear.weight.copy_(w)\nlinear.weight.copy_(w)\n")
    assert _dense_reads([path], tmp_path, sites) != {}  # a second read: not the listed one
