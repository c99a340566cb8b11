"""The results module: one status vocabulary whose values are the strings, single-vs-batch
unwrapping in one place for every builder, and no import of the rest of layerinv."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import layerinv
from layerinv import exact, invert, random_network, reconstruct
from layerinv.measurements import Gaussian, Mask
from layerinv.results import (
    STATUSES,
    ClosestResult,
    Inversion,
    LayerReport,
    PreimageResult,
    Reconstruction,
    Status,
)

RESULTS = Path(__file__).resolve().parents[1] / "src" / "layerinv" / "results.py"


# ------------------------------------------------------------------------------ imports
def test_results_imports_only_the_standard_library_and_numpy():
    tree = ast.parse(RESULTS.read_text(), filename=str(RESULTS))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"a relative import in results.py: {ast.unparse(node)}"
            found.add((node.module or "").partition(".")[0])
    assert found, "no import read"
    foreign = sorted(name for name in found
                     if name not in sys.stdlib_module_names and name != "numpy")
    assert not foreign, f"results.py imports {foreign}: only the standard library and numpy"


def test_the_public_names_are_where_users_get_them():
    # One class each, re-exported where users import them today.
    from layerinv._reconstruct import Reconstruction as from_reconstruct
    from layerinv._walk import Inversion as from_walk

    assert layerinv.Inversion is Inversion is from_walk
    assert layerinv.LayerReport is LayerReport
    assert layerinv.Reconstruction is Reconstruction is from_reconstruct
    assert exact.PreimageResult is PreimageResult and exact.ClosestResult is ClosestResult
    assert {"PreimageResult", "ClosestResult"} <= set(exact.__all__)


# ------------------------------------------------------------------------------ statuses
def test_status_values_are_the_strings():
    for member in Status:
        assert member == member.value and str(member) == member.value
        assert f"{member:<20}" == f"{member.value:<20}"
        assert repr(member) == repr(member.value)  # reprs and printed arrays read as before
        assert json.dumps(member) == json.dumps(member.value)
    assert Status.MAX_STEPS == "max_steps"  # pgd's cap, gradient descent's name for it


def test_an_inversions_status_survives_a_json_round_trip():
    net = random_network([5, 30, 80], seed=1)
    z = np.random.default_rng(2).standard_normal((3, 5))
    batch = invert(net, net(z), "linf", progress=False)
    single = invert(net, net(z[0]), "linf", progress=False)
    assert isinstance(single.status, Status)
    assert all(isinstance(s, Status) for s in batch.status)
    assert all(isinstance(r.status, Status) for reports in batch.layers for r in reports)
    text = json.dumps({"single": single.status, "batch": list(batch.status),
                       "layers": [r.status for r in single.layers]})
    back = json.loads(text)
    assert back == {"single": "optimal", "batch": ["optimal"] * 3,
                    "layers": ["optimal", "optimal"]}
    assert type(back["single"]) is str


def test_the_sample_ranking_is_of_status_members():
    assert all(isinstance(s, Status) for s in STATUSES)
    assert STATUSES[0] == Status.SOLVER_ERROR and STATUSES[-1] == Status.OPTIMAL


def test_a_status_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="max_iter"):
        Inversion.from_batch(np.zeros((1, 2)), [False], ["max_iter"], [[]], [0.0], 0.0,
                             "pgd", single=False)


def test_exact_results_report_status_members():
    net = random_network([2, 6, 12], seed=3)
    x = net(np.array([0.3, -0.2]))
    found = exact.preimage(net, x, box=2.0)
    assert found.exists is True and found.status == "feasible"
    assert isinstance(found.status, Status)
    best = exact.closest(net, x, box=2.0)
    assert isinstance(best.status, Status) and best.status == "optimal"


# ------------------------------------------------------------------- single and batch
def check_single(result: Inversion, k: int) -> None:
    assert result.single is True
    assert result.z.shape == (k,)
    assert type(result.success) is bool and isinstance(result.status, Status)
    assert type(result.residual) is float and isinstance(result.layers, list)


def check_batch_of_one(result: Inversion, k: int) -> None:
    """A batch of one stays a batch, though its one status is a str."""
    assert result.single is False
    assert result.z.shape == (1, k)
    assert result.success.shape == (1,) and result.success.dtype == bool
    assert result.status.shape == (1,) and isinstance(result.status[0], Status)
    assert result.residual.shape == (1,) and len(result.layers) == 1
    assert result.sample_seconds().shape == (1,)
    assert "samples=1" in result.summary()


def test_the_walk_unwraps_a_single_observation_and_keeps_a_batch_of_one():
    net = random_network([4, 20, 50], seed=5)
    x = net(np.random.default_rng(6).standard_normal(4))
    single = invert(net, x, "exact", progress=False)
    check_single(single, 4)
    assert single.eps.shape == (2,) and type(single.certified) is bool
    assert all(isinstance(r, LayerReport) for r in single.layers)
    assert single.history is None
    batch = invert(net, x[None], "exact", progress=False)
    check_batch_of_one(batch, 4)
    assert batch.eps.shape == (1, 2) and batch.layer_seconds.shape == (1, 2)
    assert batch.certified.shape == (1,) and batch.error_bound.shape == (1,)
    np.testing.assert_array_equal(batch.z[0], single.z)
    assert batch.history is None


def test_pgd_unwraps_a_single_observation_and_keeps_a_batch_of_one():
    net = random_network([4, 20, 50], seed=7)
    A = Gaussian(30, 50, seed=8)
    y = A.apply(net(np.random.default_rng(9).standard_normal(4))[None])[0]
    single = reconstruct(net, y, A, "pgd", max_iter=3, restarts=1, progress=False)
    check_single(single.inversion, 4)
    assert single.single is True and single.status in ("converged", "stalled", "max_steps")
    assert single.signal.shape == (50,) and type(single.measurement_residual) is float
    assert isinstance(single.history, np.ndarray) and single.inversion.layers == []
    batch = reconstruct(net, y[None], A, "pgd", max_iter=3, restarts=1, progress=False)
    check_batch_of_one(batch.inversion, 4)
    assert batch.single is False and batch.signal.shape == (1, 50)
    assert batch.measurement_residual.shape == (1,) and len(batch.history) == 1
    assert batch.inversion.layers == [[]]


def test_pgd_reports_its_step_cap_as_max_steps():
    net = random_network([4, 20, 50], seed=7)
    A = Gaussian(30, 50, seed=8)
    y = A.apply(net(np.random.default_rng(10).standard_normal((1, 4))))
    # One step with no polish cannot converge on a random start: the cap ends it.
    result = reconstruct(net, y, A, "pgd", max_iter=1, restarts=1, polish=False, tol=1e-300,
                         progress=False)
    assert list(result.status) == ["max_steps"]


def test_a_folded_mask_reconstruction_unwraps_like_its_inversion():
    net = random_network([4, 20, 50], seed=11)
    mask = Mask.random(50, 0.8, seed=12)
    y = mask.apply(net(np.random.default_rng(13).standard_normal((1, 4))))
    single = reconstruct(net, y[0], mask, "linf", progress=False)
    assert single.single is True and single.signal.shape == (50,)
    assert type(single.measurement_residual) is float and isinstance(single.status, Status)
    batch = reconstruct(net, y, mask, "linf", progress=False)
    assert batch.single is False and batch.signal.shape == (1, 50)
    assert batch.measurement_residual.shape == (1,) and batch.status.shape == (1,)


def test_a_reconstruction_refuses_an_inversion_of_the_other_kind():
    net = random_network([4, 20, 50], seed=11)
    inversion = invert(net, net(np.ones(4)), progress=False)
    with pytest.raises(ValueError, match="single"):
        Reconstruction.from_batch(inversion, np.zeros((1, 50)), [0.0], None, single=False)


@pytest.mark.usefixtures("one_thread")
def test_gradient_methods_unwrap_a_single_observation_and_keep_a_batch_of_one():
    pytest.importorskip("torch")
    net = random_network([4, 20, 50], seed=14)
    x = net(np.random.default_rng(15).standard_normal(4))
    for method in ("gd", "lp+gd"):
        single = invert(net, x, method, steps=5, restarts=1, progress=False)
        check_single(single, 4)
        assert isinstance(single.history, np.ndarray)
        batch = invert(net, x[None], method, steps=5, restarts=1, progress=False)
        check_batch_of_one(batch, 4)
        assert len(batch.history) == 1
        if method == "lp+gd":  # the LP's reports are kept, per sample
            assert isinstance(single.layers[0], LayerReport)
            assert batch.eps.shape == (1, 2)
        else:
            assert single.layers == [] and batch.layers == [[]]


def test_a_result_built_by_hand_reads_single_off_z():
    single = Inversion(np.zeros(3), True, Status.OPTIMAL, [], 0.0, 0.0, "linf")
    batch = Inversion(np.zeros((1, 3)), np.array([True]), np.array([Status.OPTIMAL],
                                                                    dtype=object),
                      [[]], np.zeros(1), 0.0, "linf")
    assert single.single is True and batch.single is False
