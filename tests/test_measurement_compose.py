"""Measurement operators compose (A * B = x -> A(B(x))), carry seeded noise, and say themselves
whether they are linear, a magnitude or fold into the network; reconstruct reads only that."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerinv
from layerinv._reconstruct import reconstruct
from layerinv.errors import InputError
from layerinv.measurements import (
    Gaussian,
    GaussianNoise,
    Identity,
    Magnitude,
    Mask,
    Matrix,
    Measurement,
    SparseOutliers,
    UniformNoise,
)

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("identity", "mask", "gaussian", "matrix", "product")


def random_linear(rng: np.random.Generator, n: int, depth: int = 0) -> Measurement:
    """A random linear operator taking signals of size n (a product nests at most twice)."""
    kind = KINDS[rng.integers(len(KINDS) if depth < 2 else len(KINDS) - 1)]
    if kind == "identity":
        return Identity(n)
    if kind == "mask":
        return Mask.random(n, float(rng.uniform(0.2, 1.0)), seed=rng)
    m = int(rng.integers(1, 12))
    if kind == "gaussian":
        return Gaussian(m, n, seed=rng)
    if kind == "matrix":
        return Matrix(rng.normal(size=(m, n)) + 0.1)
    inner = random_linear(rng, n, depth + 1)
    return random_linear(rng, inner.out_dim, depth + 1) * inner


def chain(seed: int) -> tuple[Measurement, Measurement, np.random.Generator]:
    """Random linear A, B with A.in_dim == B.out_dim, and the generator that drew them."""
    rng = np.random.default_rng(seed)
    inner = random_linear(rng, int(rng.integers(1, 15)))
    return random_linear(rng, inner.out_dim), inner, rng


# ----------------------------------------------------------------------- the product
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3))
def test_product_applies_inner_then_outer(seed, batch):
    outer, inner, rng = chain(seed)
    product = outer * inner
    assert product.linear and not product.magnitude
    assert (product.in_dim, product.out_dim) == (inner.in_dim, outer.out_dim)
    x = rng.normal(size=(batch, inner.in_dim))
    np.testing.assert_array_equal(product.apply(x), outer.apply(inner.apply(x)))
    np.testing.assert_array_equal(product(x[0]), outer(inner(x[0])))
    np.testing.assert_allclose(product.apply(x), x @ product.matrix.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(product.matrix, outer.matrix @ inner.matrix, rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_adjoint_of_a_product_is_the_adjoints_in_reverse(seed):
    """<A B x, y> == <x, B^T A^T y>, and the adjoint is the product matrix transposed."""
    outer, inner, rng = chain(seed)
    product = outer * inner
    x, y = rng.normal(size=product.in_dim), rng.normal(size=product.out_dim)
    left, right = product.apply(x) @ y, x @ product.adjoint(y)
    assert abs(left - right) <= 1e-12 * (1 + np.linalg.norm(product.matrix) * np.linalg.norm(x)
                                          * np.linalg.norm(y))
    ys = rng.normal(size=(2, product.out_dim))
    np.testing.assert_allclose(product.adjoint(ys), ys @ product.matrix, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(product.adjoint(ys), inner.adjoint(outer.adjoint(ys)))


def test_lstsq_of_a_product_fits():
    mask = Mask.random(20, 0.6, seed=1)
    product = Gaussian(6, mask.out_dim, seed=0) * mask
    y = np.random.default_rng(2).normal(size=6)
    np.testing.assert_allclose(product.apply(product.lstsq(y)), y, atol=1e-10)


def test_shape_mismatch_is_one_line_naming_both_sizes():
    mask = Mask.random(12, 0.5, seed=0)
    with pytest.raises(InputError) as info:
        Gaussian(5, 9, seed=1) * mask
    message = str(info.value)
    assert "\n" not in message
    assert "Gaussian(m=5, n=9) taking size 9" in message
    assert f"Mask(keeps {mask.out_dim} of 12) giving size {mask.out_dim}" in message


def test_identity_without_a_size_takes_it_from_the_other_side():
    mask = Mask.random(10, 0.5, seed=0)
    assert (Identity() * mask).in_dim == 10 and (Identity() * mask).out_dim == mask.out_dim
    assert (mask * Identity()).in_dim == 10
    both = Identity() * Identity()
    assert both.in_dim is None and both.resolved(4).in_dim == 4
    np.testing.assert_array_equal(both.resolved(4).matrix, np.eye(4))


class Square(Measurement):
    """A non-linear operator of a user's own, x -> x^2 entrywise."""

    def __init__(self, n: int):
        self.in_dim = self.out_dim = n

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return batch**2

    def _describe(self) -> str:
        return f"Square({self.in_dim})"


def test_compositions_without_meaning_are_refused():
    mask = Mask.random(8, 0.5, seed=0)
    magnitude = Magnitude.gaussian(4, 8, seed=1)
    for make, match in [
        (lambda: Square(mask.out_dim) * mask, r"no meaning here for A = Square\(\d+\)"),
        (lambda: mask * Square(8), "needs B linear"),
        (lambda: Gaussian(3, 4, seed=0) * magnitude, "needs B linear"),  # A |B x|
        (lambda: Magnitude.gaussian(2, 4, seed=0) * magnitude, "needs B linear"),
        (lambda: mask * 2.0, "needs B to be a measurement operator"),
        (lambda: 2.0 * mask, "needs A to be a measurement operator"),
        (lambda: mask * GaussianNoise(0.1), "needs B to be a measurement operator"),
    ]:
        with pytest.raises(InputError, match=match) as info:
            make()
        assert "\n" not in str(info.value)
    net = layerinv.random_network([3, 6, 8], seed=0)
    with pytest.raises(InputError, match=r"pgd needs a linear measurement .* Square\(8\)"):
        reconstruct(net, np.zeros(8), Square(8))  # neither linear, a magnitude, nor foldable


SEVEN_OF_NINE = Mask(np.array([1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=bool))


@pytest.mark.parametrize("build", [
    lambda: Gaussian(5, 7, seed=0) * SEVEN_OF_NINE,
    lambda: Mask.random(6, 0.5, seed=2) * Gaussian(6, 9, seed=3),
    lambda: Gaussian(4, 6, seed=4) * Gaussian(6, 9, seed=5),
    lambda: Mask.random(9, 0.7, seed=6) * Identity(9),
    lambda: Magnitude.gaussian(5, 7, seed=7) * SEVEN_OF_NINE,
], ids=["gauss*mask", "mask*gauss", "gauss*gauss", "mask*identity", "magnitude*mask"])
def test_torch_form_of_a_product_equals_numpy(build):
    torch = pytest.importorskip("torch")
    op = build()
    assert op.in_dim == 9
    x = np.random.default_rng(0).normal(size=(4, 9))
    np.testing.assert_allclose(op.to_torch()(torch.from_numpy(x)).numpy(), op.apply(x),
                               rtol=1e-12, atol=1e-14)
    xt = torch.from_numpy(x).requires_grad_(True)
    op.to_torch()(xt).sum().backward()
    assert xt.grad is not None


# ------------------------------------------------------------------------- magnitude
def test_magnitude_of_a_linear_product():
    inner = Mask.random(10, 0.7, seed=0)
    outer = Magnitude.gaussian(6, inner.out_dim, seed=1)
    op = outer * inner
    assert op.magnitude and not op.linear and not op.foldable
    x = np.random.default_rng(2).normal(size=(3, 10))
    # The folded product sums in another order than the two steps (BLAS-dependent, 8e-17
    # seen with numpy 2.4): equal to rounding, not bitwise.
    np.testing.assert_allclose(op.apply(x), outer.apply(inner.apply(x)), rtol=1e-13, atol=0)
    np.testing.assert_array_equal(op.matrix, outer.matrix @ inner.matrix)
    with pytest.raises(InputError, match="carries noise"):
        Magnitude(Gaussian(3, 4, seed=0).with_noise(GaussianNoise(0.1, seed=0)))


# ----------------------------------------------------------------------------- folding
def test_operators_say_whether_they_fold():
    mask, gauss = Mask.random(10, 0.5, seed=0), Gaussian(4, 10, seed=1)
    assert Identity().foldable and mask.foldable and not gauss.foldable
    assert not Magnitude.gaussian(4, 10, seed=0).foldable
    assert (Mask.random(mask.out_dim, 0.5, seed=2) * mask).foldable
    assert (Identity(mask.out_dim) * mask).foldable and (mask * Identity()).foldable
    assert not (Gaussian(3, mask.out_dim, seed=3) * mask).foldable
    assert not (Mask.random(4, 0.5, seed=4) * gauss).foldable
    net = layerinv.random_network([3, 8, 10], seed=0)
    with pytest.raises(InputError, match="does not fold into the network"):
        (Mask.random(4, 0.5, seed=4) * gauss).fold(net)


def single_mask_of(outer: Mask, inner: Mask) -> Mask:
    """The one mask that keeps what `outer` keeps of what `inner` keeps."""
    keep = np.zeros(inner.in_dim, dtype=bool)
    keep[inner.index[outer.index]] = True
    return Mask(keep)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_a_mask_of_a_mask_folds_as_the_single_mask(seed):
    rng = np.random.default_rng(seed)
    net = layerinv.random_network([3, 8, 20], bias=bool(rng.integers(2)), seed=rng)
    inner = Mask.random(20, float(rng.uniform(0.3, 1.0)), seed=rng)
    outer = Mask.random(inner.out_dim, float(rng.uniform(0.3, 1.0)), seed=rng)
    folded, single = (outer * inner).fold(net), single_mask_of(outer, inner).fold(net)
    for a, b in zip(folded.layers, single.layers, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
    z = rng.normal(size=(2, 3))
    np.testing.assert_allclose(folded.forward(z), (outer * inner).apply(net.forward(z)),
                               rtol=1e-14, atol=1e-15)  # BLAS on fewer rows: round-off only


@pytest.mark.parametrize("method", ["auto", "exact", "l1"])
def test_reconstruct_on_mask_times_mask_equals_the_single_mask(method):
    rng = np.random.default_rng(7)
    net = layerinv.random_network([6, 20, 120], bias=True, seed=rng)
    x = net.forward(rng.standard_normal((3, 6)))
    inner = Mask.random(120, 0.9, seed=rng)
    outer = Mask.random(inner.out_dim, 0.9, seed=rng)
    product, single = outer * inner, single_mask_of(outer, inner)
    y = product.apply(x)
    np.testing.assert_array_equal(y, single.apply(x))
    a, b = reconstruct(net, y, product, method), reconstruct(net, y, single, method)
    assert a.method == b.method == ("linf" if method == "auto" else method)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.signal, b.signal)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_array_equal(a.measurement_residual, b.measurement_residual)
    assert np.all(a.success)


def test_reconstruct_takes_a_linear_product_to_pgd():
    """Gaussian * Mask is linear and does not fold: 'auto' is pgd on its matrix, and the LP
    methods are refused as for any Gaussian."""
    rng = np.random.default_rng(3)
    net = layerinv.random_network([4, 20, 40], seed=rng)
    x = net.forward(rng.standard_normal(4))
    mask = Mask.random(40, 0.8, seed=rng)
    product = Gaussian(25, mask.out_dim, seed=rng) * mask
    y = product.apply(x)
    a = reconstruct(net, y, product)
    b = reconstruct(net, y, Matrix(product.matrix))
    assert a.method == "pgd"
    np.testing.assert_array_equal(a.z, b.z)
    with pytest.raises(InputError, match="needs an Identity or Mask"):
        reconstruct(net, y, product, "linf")


def test_reconstruct_takes_a_magnitude_product_to_phase_retrieval():
    rng = np.random.default_rng(4)
    net = layerinv.random_network([4, 20, 40], seed=rng)
    x = net.forward(rng.standard_normal(4))
    mask = Mask.random(40, 0.8, seed=rng)
    product = Magnitude.gaussian(30, mask.out_dim, seed=rng) * mask
    y = product.apply(x)
    a = reconstruct(net, y, product)
    b = reconstruct(net, y, Magnitude(product.matrix))
    assert a.method == "pgd"
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.history, b.history)


# ------------------------------------------------------------------------------- noise
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3))
def test_attached_noise_is_seeded_and_apply_stays_noise_free(seed, batch):
    x = np.random.default_rng(seed).normal(size=(batch, 9))
    for noise in (lambda: GaussianNoise(0.01, seed=seed), lambda: UniformNoise(0.1, seed=seed),
                  lambda: SparseOutliers(0.3, 1.0, seed=seed)):
        clean = Gaussian(6, 9, seed=0)
        first, second = clean.with_noise(noise()), clean.with_noise(noise())
        assert clean.noise is None  # with_noise makes a new operator
        drawn = first.measure(x)
        np.testing.assert_array_equal(drawn, second(x))  # same seed, same draw
        np.testing.assert_array_equal(drawn, noise()(clean.apply(x)))  # noise(A(x))
        np.testing.assert_array_equal(first.apply(x), clean.apply(x))  # apply: no noise
        np.testing.assert_array_equal(clean.measure(x), clean.apply(x))
        assert not np.array_equal(first.measure(x), drawn)  # fresh noise on the next call
        first.noise.reset()
        np.testing.assert_array_equal(first.measure(x), drawn)
        assert not np.array_equal(drawn, clean.apply(x))


def test_noise_travels_with_the_operator():
    noise = GaussianNoise(0.1, seed=1)
    mask = Mask.random(10, 0.5, seed=0)
    product = Gaussian(4, mask.out_dim, seed=2).with_noise(noise) * mask
    assert product.noise is noise  # A * B carries A's noise
    assert product.outer.noise is None  # ... once, on the product's output
    x = np.random.default_rng(3).normal(size=10)
    np.testing.assert_array_equal(product.measure(x),
                                  GaussianNoise(0.1, seed=1)(product.apply(x)))
    assert (Magnitude.gaussian(4, mask.out_dim, seed=2).with_noise(noise) * mask).noise is noise
    assert Identity().with_noise(noise).resolved(6).noise is noise
    assert (Identity() * Identity()).with_noise(noise).resolved(6).noise is noise
    assert "GaussianNoise(sigma=0.1, seed=1)" in repr(product)
    assert product.with_noise(None).noise is None
    with pytest.raises(InputError, match="keeps only A's noise"):
        Gaussian(4, mask.out_dim, seed=2) * mask.with_noise(noise)
    with pytest.raises(InputError, match="noise must be"):
        mask.with_noise(0.1)


def test_reconstruct_ignores_attached_noise():
    """The solvers see only the noise-free operator: a noisy copy reconstructs as the clean."""
    rng = np.random.default_rng(5)
    net = layerinv.random_network([4, 20, 40], seed=rng)
    mask = Mask.random(40, 0.8, seed=rng)
    noisy = mask.with_noise(GaussianNoise(1e-3, seed=0))
    y = noisy.measure(net.forward(rng.standard_normal(4)))
    a, b = reconstruct(net, y, noisy), reconstruct(net, y, mask)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.measurement_residual, b.measurement_residual)
