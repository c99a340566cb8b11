"""Measurement operators and noise models: shapes, batching, torch agreement, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerinv
from layerinv.errors import InputError
from layerinv.measurements import (
    Gaussian,
    GaussianNoise,
    Identity,
    Magnitude,
    Mask,
    Matrix,
    SparseOutliers,
    UniformNoise,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- Mask
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), batch=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_mask_apply_is_indexing(n, batch, seed):
    rng = np.random.default_rng(seed)
    keep = rng.random(n) < 0.6
    keep[rng.integers(n)] = True
    mask = Mask(keep)
    x = rng.normal(size=(batch, n))
    np.testing.assert_array_equal(mask.apply(x), x[:, keep])
    np.testing.assert_array_equal(mask(x[0]), x[0, keep])
    assert (mask.in_dim, mask.out_dim) == (n, int(keep.sum()))
    np.testing.assert_array_equal(mask.matrix @ x[0], x[0, keep])
    back = mask.adjoint(mask.apply(x))
    np.testing.assert_array_equal(back, np.where(keep, x, 0.0))


def test_mask_refuses_bad_keep():
    with pytest.raises(InputError, match="boolean"):
        Mask(np.array([1, 0, 1]))
    with pytest.raises(InputError, match="at least one"):
        Mask(np.zeros(5, dtype=bool))
    with pytest.raises(InputError, match="non-empty 1-D"):
        Mask(np.zeros(0, dtype=bool))
    with pytest.raises(InputError, match="1-D"):
        Mask(np.ones((2, 2), dtype=bool))


def test_mask_random_fraction_and_seed():
    a = Mask.random(10_000, 0.9, seed=3)
    b = Mask.random(10_000, 0.9, seed=3)
    np.testing.assert_array_equal(a.keep, b.keep)
    assert abs(a.out_dim / a.in_dim - 0.9) < 0.01
    assert Mask.random(5, 1e-9, seed=0).out_dim == 1  # never empty
    with pytest.raises(InputError, match="fraction"):
        Mask.random(5, 1.5)
    with pytest.raises(InputError, match="fraction"):
        Mask.random(5, 0.0)


def test_mask_block():
    mask = Mask.block((28, 28), 10, corner=(4, 6))
    image = np.ones((28, 28), dtype=bool)
    image[4:14, 6:16] = False
    np.testing.assert_array_equal(mask.keep, image.ravel())
    assert mask.out_dim == 784 - 100
    seeded = Mask.block(28, 10, seed=1)
    np.testing.assert_array_equal(seeded.keep, Mask.block(28, 10, seed=1).keep)
    hidden = ~seeded.keep.reshape(28, 28)
    rows, cols = np.nonzero(hidden)
    assert hidden.sum() == 100 and np.ptp(rows) == 9 and np.ptp(cols) == 9
    with pytest.raises(InputError, match="fit"):
        Mask.block(5, 6)
    with pytest.raises(InputError, match="outside"):
        Mask.block(28, 10, corner=(20, 0))


def test_mask_fold_drops_rows_of_the_last_layer():
    net = layerinv.random_network([4, 12, 30], bias=True, seed=0)
    mask = Mask.random(30, 0.5, seed=1)
    folded = mask.fold(net)
    z = np.random.default_rng(2).normal(size=(3, 4))
    np.testing.assert_allclose(folded.forward(z), mask.apply(net.forward(z)), rtol=0, atol=1e-15)
    assert folded.output_dim == mask.out_dim
    with pytest.raises(InputError, match="in_dim = 31"):
        Mask.random(31, 0.5, seed=1).fold(net)


# ------------------------------------------------------------------------- Gaussian, Matrix
@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40), batch=st.integers(1, 3),
       seed=st.integers(0, 1000))
def test_gaussian_shapes_and_seed(m, n, batch, seed):
    op = Gaussian(m, n, seed=seed)
    assert op.matrix.shape == (m, n) and (op.out_dim, op.in_dim) == (m, n)
    np.testing.assert_array_equal(op.matrix, Gaussian(m, n, seed=seed).matrix)
    x = np.random.default_rng(seed).normal(size=(batch, n))
    assert op.apply(x).shape == (batch, m)
    assert op.apply(x[0]).shape == (m,)
    np.testing.assert_allclose(op.apply(x), x @ op.matrix.T)
    y = op.apply(x)
    np.testing.assert_allclose(op.adjoint(y), y @ op.matrix)


def test_gaussian_entries_have_variance_one_over_m():
    op = Gaussian(200, 500, seed=0)
    assert abs(op.matrix.var() * 200 - 1) < 0.02
    assert abs(op.matrix.mean()) < 0.01


@pytest.mark.parametrize(("m", "n"), [(0, 10), (10, 0), (-1, 5), (2.5, 5), (True, 5)])
def test_gaussian_refuses_bad_sizes(m, n):
    with pytest.raises(InputError, match="must be an int >= 1"):
        Gaussian(m, n, seed=0)


def test_lstsq_is_the_minimum_norm_solution():
    op = Gaussian(30, 80, seed=4)
    y = np.random.default_rng(5).normal(size=(2, 30))
    np.testing.assert_allclose(op.lstsq(y), y @ np.linalg.pinv(op.matrix).T, atol=1e-10)
    np.testing.assert_allclose(op.apply(op.lstsq(y)), y, atol=1e-10)


def test_matrix_refuses_bad_arrays():
    with pytest.raises(InputError, match="2-D"):
        Matrix(np.ones(3))
    with pytest.raises(InputError, match="finite"):
        Matrix(np.array([[1.0, np.nan]]))
    with pytest.raises(InputError, match="shape"):
        Gaussian(3, 4, seed=0).apply(np.ones(5))


# ------------------------------------------------------------------- Identity, Magnitude
def test_identity():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(Identity()(x), x)
    assert Identity().resolved(3).in_dim == 3
    with pytest.raises(InputError, match="in_dim = 4"):
        Identity(4).resolved(3)


def test_magnitude():
    op = Magnitude.gaussian(12, 7, seed=0)
    x = np.random.default_rng(0).normal(size=(3, 7))
    np.testing.assert_allclose(op.apply(x), np.abs(x @ op.matrix.T))
    np.testing.assert_allclose(op.apply(-x), op.apply(x))
    np.testing.assert_allclose(Magnitude(op.matrix).apply(x), op.apply(x))
    with pytest.raises(InputError, match="linear"):
        Magnitude(op)


@pytest.mark.parametrize("op", [Identity(9), Mask.random(9, 0.5, seed=0), Gaussian(5, 9, seed=1),
                                Magnitude.gaussian(6, 9, seed=2)], ids=repr)
def test_to_torch_agrees_with_apply(op):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(4, 9))
    out = op.to_torch()(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), op.apply(x), rtol=1e-12, atol=1e-14)
    xt = torch.from_numpy(x).requires_grad_(True)
    op.to_torch()(xt).sum().backward()  # differentiable
    assert xt.grad is not None


# ------------------------------------------------------------------------------- noise
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 50), batch=st.integers(1, 3))
def test_noise_models_are_reproducible(seed, m, batch):
    y = np.zeros((batch, m))
    for make in (lambda: GaussianNoise(0.1, seed=seed), lambda: UniformNoise(0.1, seed=seed),
                 lambda: SparseOutliers(0.3, 2.0, seed=seed)):
        first, second = make(), make()
        a = first(y)
        np.testing.assert_array_equal(a, second(y))
        np.testing.assert_array_equal(first(y), second(y))  # the same sequence of draws
        first.reset()
        np.testing.assert_array_equal(first(y), a)


def test_noise_distributions():
    y = np.ones((4, 10_000))
    g = GaussianNoise(0.5, seed=0)(y) - y
    assert abs(g.std() - 0.5) < 0.01 and abs(g.mean()) < 0.01
    u = UniformNoise(0.2, seed=0)(y) - y
    assert np.abs(u).max() <= 0.2 and np.abs(u).max() > 0.19
    s = SparseOutliers(0.05, 3.0, seed=0)(y) - y
    assert np.all(np.count_nonzero(s, axis=1) == 500)
    assert set(np.unique(s)) == {-3.0, 0.0, 3.0}
    noise = GaussianNoise(0.5, seed=0)
    assert not np.array_equal(noise(y), noise(y))  # fresh draws on each call


def test_noise_refuses_bad_arguments():
    with pytest.raises(InputError, match="sigma"):
        GaussianNoise(-1.0)
    with pytest.raises(InputError, match="amplitude"):
        UniformNoise(np.inf)
    with pytest.raises(InputError, match="fraction"):
        SparseOutliers(1.5, 1.0)
    with pytest.raises(InputError, match="seed"):
        GaussianNoise(1.0, seed=1.5)
    with pytest.raises(InputError, match="finite"):
        GaussianNoise(1.0, seed=0)(np.array([np.nan]))


def test_an_all_zero_matrix_is_one_clear_error():
    """Matrix(zeros) used to be accepted and `reconstruct` then raised ZeroDivisionError."""
    with pytest.raises(InputError, match=r"A must have a non-zero entry .* shape \(5, 36\)"):
        Matrix(np.zeros((5, 36)))
    with pytest.raises(InputError, match="A must have a non-zero entry"):
        layerinv.measurements.Magnitude(np.zeros((5, 36)))


def test_reconstruct_refuses_a_matrix_too_small_for_a_step():
    """Entries of 1e-170 square to 0 in float64: eta_0 = n / ||A||_F^2 does not exist."""
    from layerinv._reconstruct import reconstruct

    net = layerinv.random_network([4, 20, 36], seed=0)
    tiny = Matrix(np.full((5, 36), 1e-170))
    with pytest.raises(InputError, match=r"A \(the measurement matrix\) must have"):
        reconstruct(net, np.zeros(5), tiny)


def test_cli_reconstruct_with_a_zero_matrix_is_one_line(tmp_path):
    import subprocess
    import sys

    net = layerinv.random_network([4, 20, 36], seed=0)
    net.save(tmp_path / "net.npz")
    np.save(tmp_path / "A.npy", np.zeros((5, 36)))
    np.save(tmp_path / "y.npy", np.zeros(5))
    result = subprocess.run(
        [sys.executable, "-m", "layerinv", "reconstruct", "--network", str(tmp_path / "net.npz"),
         "--measurement", "gaussian", "--matrix", str(tmp_path / "A.npy"),
         "--observation", str(tmp_path / "y.npy")],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "A must have a non-zero entry" in lines[0], result.stderr
