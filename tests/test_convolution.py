"""Convolution operators (convolution.py): against PyTorch's conv2d / conv_transpose2d in
float64, the LinearOperator API against the operator's own columns (its products with the
unit vectors), folding scales, pickling and bad geometry."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv.convolution import Conv2dOperator
from layerinv.errors import InputError
from layerinv.operators import LinearOperator, ProductOperator, SparseOperator

torch = pytest.importorskip("torch")
F = torch.nn.functional


@st.composite
def _convolutions(draw, max_side: int = 6) -> tuple[Conv2dOperator, np.random.Generator]:
    """A random valid Conv2dOperator of either kind, and a generator for its test vectors."""
    transposed = draw(st.booleans())
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel_size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    side = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    extra = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation,
                                                                         strict=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (c_in, c_out) if transposed else (c_out, c_in)
    kernel = rng.normal(size=(*shape, *kernel_size))
    kernel[rng.random(kernel.shape) < 0.2] = 0.0  # exact zeros: sparse rows drop them
    try:
        op = Conv2dOperator(kernel, (c_in, *side), stride=stride, padding=padding,
                            dilation=dilation, transposed=transposed,
                            output_padding=extra if transposed else 0)
    except InputError as exc:  # an empty output: refused, as PyTorch refuses it
        assert "empty" in str(exc)
        from hypothesis import reject
        reject()
    return op, rng


def _torch(op: Conv2dOperator, x: np.ndarray) -> np.ndarray:
    """PyTorch's answer for a batch of flat inputs, flat."""
    out = _torch_forward(op, torch.tensor(x.reshape(len(x), *op.input_shape)))
    return out.reshape(len(x), -1).detach().numpy()


def _torch_forward(op: Conv2dOperator, image: torch.Tensor) -> torch.Tensor:
    """PyTorch's convolution of the operator's kind on an image batch."""
    kernel = torch.tensor(np.array(op.kernel))
    if op.transposed:
        out = F.conv_transpose2d(image, kernel, stride=op.stride, padding=op.padding,
                                 output_padding=op.output_padding, dilation=op.dilation)
    else:
        out = F.conv2d(image, kernel, stride=op.stride, padding=op.padding,
                       dilation=op.dilation)
    assert tuple(out.shape[1:]) == op.output_shape
    return out


def _columns(op: LinearOperator) -> np.ndarray:
    """The matrix from the operator's products with the unit vectors (the tap loop), not
    from its rows (index arithmetic): two independent computations."""
    return op.apply(np.eye(op.n_in)).T


@settings(max_examples=120, deadline=None)
@given(_convolutions())
def test_apply_and_adjoint_equal_pytorch_in_float64(case):
    op, rng = case
    x = rng.normal(size=(3, op.n_in))
    np.testing.assert_allclose(op.apply(x), _torch(op, x), rtol=0, atol=1e-10)
    np.testing.assert_allclose(op.apply(x[1]), _torch(op, x[1:2])[0], rtol=0, atol=1e-10)
    y = rng.normal(size=(2, op.n_out))
    # <W x, y> = <x, W' y>, for a batch and a vector
    np.testing.assert_allclose(np.sum(op.apply(x[:2]) * y, axis=1),
                               np.sum(x[:2] * op.adjoint(y), axis=1), rtol=1e-10, atol=1e-10)
    assert op.adjoint(y[0]).shape == (op.n_in,)
    np.testing.assert_allclose(op.adjoint(y)[0], op.adjoint(y[0]), rtol=0, atol=1e-12)
    # the adjoint against PyTorch's own vector-Jacobian product of the forward map
    image = torch.tensor(x[:2].reshape(2, *op.input_shape), requires_grad=True)
    out = _torch_forward(op, image)
    out.backward(torch.tensor(y.reshape(out.shape)))
    np.testing.assert_allclose(op.adjoint(y), image.grad.reshape(2, -1).numpy(), rtol=0,
                               atol=1e-10)
    np.testing.assert_allclose(op.matmat(x.T), op.apply(x).T, rtol=0, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(_convolutions(max_side=5))
def test_rows_subsets_gram_and_abs_equal_the_matrix(case):
    op, rng = case
    matrix = _columns(op)
    assert np.array_equal(op.to_dense() != 0, matrix != 0)
    np.testing.assert_allclose(op.to_dense(), matrix, rtol=0, atol=1e-12)
    mask = rng.random(op.n_out) < 0.4
    mask[rng.integers(op.n_out)] = True
    picks = rng.permutation(op.n_out)[: max(1, op.n_out // 3)]
    for index in (mask, np.flatnonzero(mask), picks):
        chosen = op.rows(index)
        assert isinstance(chosen, np.ndarray)
        np.testing.assert_allclose(chosen, matrix[index], rtol=0, atol=1e-12)
        sparse = op.rows(index, sparse=True)
        assert isinstance(sparse, scipy.sparse.csr_array)
        assert np.array_equal(sparse.toarray(), chosen)  # rows are the kernel's entries
        assert np.all(sparse.data != 0)
        for r in range(sparse.shape[0]):  # canonical: sorted columns, no duplicates
            assert np.all(np.diff(sparse.indices[sparse.indptr[r]:sparse.indptr[r + 1]]) > 0)
        subset = op.row_subset(index)
        assert isinstance(subset, LinearOperator) and subset.shape == chosen.shape
        assert np.array_equal(subset.to_dense(), chosen)
        weights = rng.random(len(chosen))
        np.testing.assert_allclose(op.gram(index, weights),
                                   chosen.T @ (weights[:, None] * chosen), rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(op.gram(index), chosen.T @ chosen, rtol=1e-12, atol=1e-12)
    none = np.zeros(op.n_out, dtype=bool)  # no row at all (a layer with every unit pinned)
    for index in (none, np.flatnonzero(none)):
        assert op.rows(index).shape == (0, op.n_in)
        assert op.rows(index, sparse=True).shape == (0, op.n_in)
        assert op.row_subset(index).shape == (0, op.n_in)
        assert np.array_equal(op.gram(index), np.zeros((op.n_in, op.n_in)))
    assert isinstance(op.abs(), Conv2dOperator)
    assert np.array_equal(op.abs().to_dense(), np.abs(op.to_dense()))
    assert np.array_equal(op.to_sparse().toarray(), op.to_dense())


@settings(max_examples=40, deadline=None)
@given(_convolutions(max_side=5))
def test_scaled_folds_per_channel_scales_and_keeps_any_other(case):
    op, rng = case
    matrix = op.to_dense()
    per_out = np.repeat(rng.normal(size=op.output_shape[0]), op.n_out // op.output_shape[0])
    per_in = np.repeat(rng.normal(size=op.input_shape[0]), op.n_in // op.input_shape[0])
    folded = op.scaled(rows=per_out, columns=per_in)
    assert isinstance(folded, Conv2dOperator)  # into the kernel
    np.testing.assert_allclose(folded.to_dense(), per_out[:, None] * matrix * per_in,
                               rtol=1e-12, atol=1e-12)
    entries = rng.normal(size=op.n_out)
    if op.n_out > op.output_shape[0]:  # a scale that varies inside a channel
        kept = op.scaled(rows=entries)
        assert isinstance(kept, ProductOperator)
        np.testing.assert_allclose(kept.to_dense(), entries[:, None] * matrix, rtol=1e-12,
                                   atol=1e-12)


def test_pickling_keeps_kernel_and_geometry():
    op = Conv2dOperator(np.random.default_rng(0).normal(size=(3, 2, 4, 4)), (3, 5, 6),
                        stride=2, padding=1, dilation=(1, 2), output_padding=(1, 0),
                        transposed=True)
    back = pickle.loads(pickle.dumps(op))
    assert type(back) is Conv2dOperator and repr(back) == repr(op)
    assert np.array_equal(back.kernel, op.kernel)
    x = np.random.default_rng(1).normal(size=(2, op.n_in))
    assert np.array_equal(back.apply(x), op.apply(x))


@pytest.mark.parametrize("product", ["columns", "rows"])
@settings(max_examples=40, deadline=None)
@given(case=_convolutions())
def test_a_sparse_product_is_the_product_with_those_columns_or_rows(product, case):
    """W[:, index] @ values (`columns_product`, from the cached CSC matrix) against the
    operator's own dense rows, and W[index, :] @ values (`rows_product`, from the cached CSR
    matrix) against its `matmat`; neither cache is pickled, and the pickled operator
    rebuilds it."""
    op, rng = case
    if product == "columns":
        index = np.flatnonzero(rng.random(op.n_in) < 0.5)
        values = rng.normal(size=(len(index), 3))
        expected, cache = op.rows()[:, index] @ values, "_csc"
    else:
        index = np.flatnonzero(rng.random(op.n_out) < 0.5)
        values = rng.normal(size=(op.n_in, 3))
        expected, cache = op.matmat(values)[index], "_csr"
    np.testing.assert_allclose(getattr(op, f"{product}_product")(index, values), expected,
                               rtol=1e-12, atol=1e-12)
    assert cache in op.__dict__
    back = pickle.loads(pickle.dumps(op))  # pickled with its cache built
    assert cache not in back.__dict__
    np.testing.assert_allclose(getattr(back, f"{product}_product")(index, values), expected,
                               rtol=1e-12, atol=1e-12)


def test_a_dcgan_layer_stays_matrix_free():
    """ConvTranspose2d(256, 128, 4, 2, 1) on 8 x 8: a 32768 x 16384 matrix (4.3 GB dense);
    the operator holds the 0.5 M kernel entries and builds only the rows asked for."""
    kernel = np.random.default_rng(2).normal(size=(256, 128, 4, 4))
    op = Conv2dOperator(kernel, (256, 8, 8), stride=2, padding=1, transposed=True)
    assert op.shape == (128 * 16 * 16, 256 * 8 * 8)
    picks = np.array([0, 12345, 32767])
    rows = op.rows(picks, sparse=True)
    assert rows.shape == (3, op.n_in) and rows.nnz <= 3 * 256 * 4  # 2 x 2 taps reach a pixel
    x = np.random.default_rng(3).normal(size=(2, op.n_in))
    np.testing.assert_allclose(op.apply(x)[:, picks], (rows @ x.T).T, rtol=1e-12, atol=1e-10)
    assert isinstance(op.row_subset(np.arange(10)), SparseOperator)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Conv2dOperator(np.ones((2, 3, 3)), (3, 4, 4)), r"^kernel must be a non-empty 4-D"),
    (lambda: Conv2dOperator(np.full((2, 3, 1, 1), np.nan), (3, 4, 4)), r"^kernel must be finite"),
    (lambda: Conv2dOperator(np.ones((2, 3, 1, 1)), (2, 4, 4)), r"takes 3 input channels but "
                                                               r"input_shape \(2, 4, 4\) has 2"),
    (lambda: Conv2dOperator(np.ones((2, 3, 1, 1)), (3, 4)), r"^input_shape must be an image"),
    (lambda: Conv2dOperator(np.ones((2, 3, 1, 1)), (3, 4, 4), stride=0), r"^stride must be"),
    (lambda: Conv2dOperator(np.ones((2, 3, 1, 1)), (3, 4, 4), padding=-1), r"^padding must"),
    (lambda: Conv2dOperator(np.ones((2, 3, 1, 1)), (3, 4, 4), stride=1.5), r"^stride must"),
    (lambda: Conv2dOperator(np.ones((2, 3, 5, 5)), (3, 4, 4)), r"output would be empty"),
    (lambda: Conv2dOperator(np.ones((2, 3, 1, 1)), (3, 4, 4), output_padding=1),
     r"^output_padding is for transposed"),
    (lambda: Conv2dOperator(np.ones((3, 2, 3, 3)), (3, 4, 4), stride=2, output_padding=2,
                            transposed=True), r"^output_padding must be smaller"),
])
def test_bad_geometry_is_one_input_error_naming_the_argument(build, message):
    with pytest.raises(InputError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def _conv_pair(seed: int):
    """A small DCGAN-like network (z 8 -> ConvT -> 16x4x4 -> ReLU -> ConvT(16, 8, 4, 2, 1)
    -> 8x8x8 -> ReLU) and the same network with dense matrices."""
    from layerinv import Layer, Network

    rng = np.random.default_rng(seed)
    first = Conv2dOperator(rng.normal(size=(8, 16, 4, 4)) / 4, (8, 1, 1), transposed=True)
    second = Conv2dOperator(rng.normal(size=(16, 8, 4, 4)) / 8, (16, 4, 4), stride=2,
                            padding=1, transposed=True)
    specs = [(first, rng.normal(size=first.n_out) * 0.1), (second, None)]
    conv = Network([Layer(op, b, "relu") for op, b in specs])
    dense = Network([Layer(op.to_dense(), b, "relu") for op, b in specs])
    return conv, dense


@pytest.mark.parametrize("method", ["exact", "linf", "l1", "pattern"])
def test_a_conv_network_inverts_as_its_dense_matrices(method):
    """The walk, the layer LPs and the pattern search only call the operator's methods: a
    convolution network inverts as the network of its dense matrices (to rounding)."""
    from layerinv import invert

    conv, dense = _conv_pair(0)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 8))
    x = conv(z)
    noisy = x + 1e-3 * rng.normal(size=x.shape)
    solvers = ("auto", "ipm", "highs") if method in ("linf", "l1") else ("auto",)
    for obs in (x, noisy):
        for solver in solvers:  # the interior point asks for Grams, HiGHS for sparse rows
            a = invert(conv, obs, method, solver=solver)
            b = invert(dense, obs, method, solver=solver)
            assert list(np.atleast_1d(a.status)) == list(np.atleast_1d(b.status))
            np.testing.assert_allclose(a.z, b.z, rtol=0, atol=1e-8)
    exact_answer = invert(conv, x, "pattern")
    np.testing.assert_allclose(exact_answer.z, z, rtol=0, atol=1e-9)  # from G(z*) exactly


def test_gradient_descent_runs_on_a_convolutional_network():
    """gd's torch module of a conv network is its to_torch (it zipped nn.Linear modules with
    the layers, and failed on convolutions): the descent lowers the loss from its start."""
    from layerinv import Network, invert

    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8 * 2 * 2), nn.Unflatten(1, (8, 2, 2)), nn.ReLU(),
                           nn.ConvTranspose2d(8, 4, 4, 2, 1), nn.ReLU(), nn.Flatten()).double()
    net = Network.from_torch(module.eval())
    z_star = np.random.default_rng(1).normal(size=4)
    x = net.forward(z_star)
    result = invert(net, x, method="gd", seed=0)
    assert np.linalg.norm(net.forward(result.z) - x) < 0.1 * np.linalg.norm(x)
