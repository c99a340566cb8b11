"""`_sparse_picks.picked_product`: SciPy's kernel on rows or columns gathered by hand, which
must give exactly `matrix[picks] @ values` (CSR) and `matrix[:, picks] @ values` (CSC)."""

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv import _sparse_picks
from layerinv._sparse_picks import picked_product


@st.composite
def _cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, columns = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    dense = rng.normal(size=(rows, columns)) * (rng.random((rows, columns)) < 0.3)
    form = draw(st.sampled_from(["csr", "csc"]))
    matrix = scipy.sparse.csr_array(dense) if form == "csr" else scipy.sparse.csc_array(dense)
    major = rows if form == "csr" else columns
    # any order, repeats and none at all: the gather must keep them as given
    picks = rng.integers(0, major, size=draw(st.integers(0, 2 * major)))
    width = draw(st.integers(1, 4))
    values = rng.normal(size=(columns if form == "csr" else len(picks), width))
    return dense, matrix, picks, values


@settings(max_examples=60, deadline=None)
@given(case=_cases())
def test_the_picked_product_is_scipys_to_the_bit(case):
    dense, matrix, picks, values = case
    got = picked_product(matrix, picks, values)
    chosen = matrix[picks] if matrix.format == "csr" else matrix[:, picks]
    assert np.array_equal(got, np.asarray(chosen @ values))
    expected = dense[picks] @ values if matrix.format == "csr" else dense[:, picks] @ values
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_the_private_kernels_are_checked_and_used_here():
    """On this SciPy the kernel path is the one taken (else the speed-up is gone unseen)."""
    assert _sparse_picks._kernels_agree()


def test_without_the_kernels_the_public_path_answers(monkeypatch):
    monkeypatch.setattr(_sparse_picks, "_kernels_agree", lambda: False)
    monkeypatch.setattr(_sparse_picks, "_kernel_product", None)  # never reached
    matrix = scipy.sparse.csc_array(np.arange(12.0).reshape(3, 4))
    got = picked_product(matrix, np.array([3, 1]), np.ones((2, 1)))
    assert np.array_equal(got, [[3.0 + 1.0], [7.0 + 5.0], [11.0 + 9.0]])


@pytest.mark.parametrize("pick", [-1, 4])
def test_an_index_out_of_range_is_refused(pick):
    matrix = scipy.sparse.csr_array(np.eye(4))
    with pytest.raises(IndexError, match="out of range"):
        picked_product(matrix, np.array([0, pick]), np.ones((4, 1)))
