"""The 'torch' backend (the structured interior point batched in PyTorch): the interior
point's and HiGHS's optima, honest statuses, the CPU path's inversions, the batched
least squares."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from conftest import realizable_instance, repaired_objective
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv import InputError, LeakyReLU, get_activation, invert, solvers
from layerinv.operators import DenseOperator
from layerinv.results import Status
from layerinv.solvers import _ipm
from layerinv.solvers._torch import TorchBackend
from layerinv.solvers.problem import LayerProblem, check_result

torch = pytest.importorskip("torch")

CPU = TorchBackend(device="cpu")
ACTIVATIONS = {"relu": get_activation("relu"), "leaky_relu": LeakyReLU(0.2),
               "identity": get_activation("identity")}


def layer_batch(seed: int, activation: str, norm: str, m: int, n: int, noise: float,
                free_box: bool, count: int, bias: bool = False) -> list[LayerProblem]:
    """`count` noisy LPs of one layer (one shared operator, as the walk hands them over):
    y = act(W h + b) + uniform noise, h >= 0 or free (a latent layer)."""
    rng = np.random.default_rng(seed)
    operator = DenseOperator(rng.normal(0, 1 / np.sqrt(n), size=(n, m)))
    b = rng.normal(0, 1 / np.sqrt(n), size=n) if bias else None
    act = ACTIVATIONS[activation]
    low = np.full(m, -np.inf) if free_box else np.zeros(m)
    problems = []
    for _ in range(count):
        h = rng.normal(size=m) if free_box else np.maximum(rng.normal(size=m), 0)
        y = act.forward(operator.apply(h) + (0 if b is None else b))
        y = y + rng.uniform(-noise, noise, size=n)
        problems.append(LayerProblem(operator, b, act.band(y, threshold=noise), low,
                                     np.full(m, np.inf), norm))
    return problems


batches = st.builds(
    layer_batch, seed=st.integers(0, 2**32 - 1),
    activation=st.sampled_from(sorted(ACTIVATIONS)), norm=st.sampled_from(["linf", "l1"]),
    m=st.integers(2, 25), n=st.integers(30, 120),
    noise=st.floats(-4.0, -1.0).map(lambda p: 10.0**p), free_box=st.booleans(),
    count=st.integers(1, 5), bias=st.booleans())


# ------------------------------------------------------------------ the optima
@given(problems=batches, ceiling=st.sampled_from([None, "loose", "contradicted"]))
@settings(max_examples=60, deadline=None)
def test_torch_finds_the_interior_points_and_highs_optima(problems, ceiling):
    """A layer's batch through the front door with 'torch', 'ipm' and 'highs': the interior
    point's statuses (its cap where it has no convergence: measured on a 72 x 2 LeakyReLU
    layer, where 'auto' falls back to HiGHS); optimal objectives equal to the interior
    point's to 1e-7 relative and to HiGHS's within its feasibility tolerance; the same W h
    as the interior point's where the pinned rows could determine h (the same iterates, on
    non-unique optimal faces too); an
    accuracy that the front door may trust (ACCURACY_FACTOR times it covers the excess over
    a feasible point's objective), and tight. A loose ceiling is twice the l_inf optimum, a
    contradicted one half of it (the front door must prove it contradicted)."""
    if ceiling is not None:
        linf = solvers.solve_many([dataclasses.replace(p, norm="linf") for p in problems],
                                  "highs")
        for problem, answer in zip(problems, linf, strict=True):
            problem.t_max = answer.objective * (2.0 if ceiling == "loose" else 0.5)
    answers = solvers.solve_many(problems, "torch")
    ipm = solvers.solve_many(problems, "ipm")
    highs = solvers.solve_many(problems, "highs")
    expected = Status.INFEASIBLE if ceiling == "contradicted" else Status.OPTIMAL
    for problem, answer, reference, simplex in zip(problems, answers, ipm, highs, strict=True):
        assert simplex.status == expected, simplex.message
        assert answer.status == reference.status, (answer.message, reference.message)
        assert answer.solver == "torch"
        if answer.status != Status.OPTIMAL:
            assert answer.status == expected or answer.status == Status.MAX_STEPS
            continue
        size = 1 + abs(reference.objective)
        assert abs(answer.objective - reference.objective) <= 1e-7 * size
        repaired = repaired_objective(problem, simplex.h)
        low, high = min(simplex.objective, repaired), max(simplex.objective, repaired)
        assert low - 1e-7 * size <= answer.objective <= high + 1e-7 * size
        if problem.band.two_sided.sum() >= problem.n_inputs:
            # The same point in output space where the pinned rows could determine h (h
            # itself only to the layer's conditioning). Measured on 1,221 random LPs of this
            # kind: median 2e-16 relative, worst 3.6e-11; another optimal point lies 1e-3
            # away. With fewer pinned rows than unknowns (a 'not_unique' layer) the optimal
            # face is wide and flat, and round-off moves the point along it (7e-5 on a
            # 31 x 18 layer with 13 pinned rows, after the same 10 iterations as 'ipm').
            u, u_ipm = problem.operator.apply(answer.h), problem.operator.apply(reference.h)
            assert np.abs(u - u_ipm).max() <= 1e-8 * (1 + np.abs(u_ipm).max())
        # `high` is a feasible point's objective, at least the optimum: the excess over it is
        # at most the true excess. (The accuracy is the interior point's estimate, not a
        # proof: on a 30 x 15 l1 layer this excess was 1.1 times it, for 'ipm' too.)
        assert answer.objective - high <= solvers.ACCURACY_FACTOR * answer.accuracy + 1e-12
        assert answer.accuracy <= 1e-8 * size, answer.accuracy


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_the_answers_pass_the_post_check_as_returned(norm):
    problems = layer_batch(4, "relu", norm, 20, 80, 1e-3, False, 6, bias=True)
    for problem, answer in zip(problems, CPU.solve_many(problems), strict=True):
        before = dataclasses.replace(answer)
        assert check_result(problem, answer) == before
        assert answer.status == Status.OPTIMAL, answer.message


def test_one_call_may_mix_operators_norms_and_ceilings():
    """Problems of two layers and both norms in one call, interleaved: each answer is the one
    its problem gets alone, in the order given."""
    first = layer_batch(1, "relu", "linf", 12, 50, 1e-3, False, 3)
    second = layer_batch(2, "leaky_relu", "l1", 8, 40, 1e-3, True, 3)
    mixed = [first[0], second[0], first[1], second[1], first[2], second[2]]
    mixed[2] = dataclasses.replace(mixed[2], t_max=1.0)
    mixed.append(dataclasses.replace(first[0], norm="l1"))
    together = CPU.solve_many(mixed)
    for problem, answer in zip(mixed, together, strict=True):
        alone = CPU.solve(problem)
        assert answer.status == alone.status == Status.OPTIMAL
        assert len(answer.t) == (problem.n_rows if problem.norm == "l1" else 1)
        assert abs(answer.objective - alone.objective) <= 1e-12 * (1 + abs(alone.objective))
        assert np.allclose(answer.h, alone.h, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ honest statuses
@pytest.mark.parametrize("cap", [1, 2])
@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_an_iteration_cap_gives_max_steps_not_optimal(cap, norm):
    problems = layer_batch(3, "relu", norm, 15, 60, 1e-3, False, 4)
    answers = TorchBackend(device="cpu", max_iter=cap).solve_many(problems)
    for problem, answer in zip(problems, answers, strict=True):
        assert answer.status == Status.MAX_STEPS, answer.message
        assert answer.iterations == cap
        assert f"no convergence in {cap} iterations" in answer.message
        assert check_result(problem, answer).status == Status.MAX_STEPS


def test_a_singular_normal_matrix_is_regularised_and_a_failing_one_a_numerical_error(
        monkeypatch):
    """A free column that no row touches (a zero column of W) makes every normal matrix
    singular: the retry with a shift (1e-12 of the mean diagonal, as `_linalg.cholesky`)
    reaches the interior point's optimum. Every Cholesky failing: a numerical error with a
    message, at the first iteration."""
    problems = layer_batch(3, "relu", "linf", 8, 40, 1e-3, True, 2)
    weight = problems[0].operator.rows().copy()
    weight[:, 2] = 0.0
    operator = DenseOperator(weight)
    problems = [dataclasses.replace(p, operator=operator) for p in problems]
    for problem, answer in zip(problems, CPU.solve_many(problems), strict=True):
        reference = _ipm.solve_screened(problem)
        assert answer.status == reference.status == Status.OPTIMAL, answer.message
        assert abs(answer.objective - reference.objective) <= 1e-9 * reference.objective
    real = torch.linalg.cholesky_ex

    def all_fail(matrix, **options):
        factor, _ = real(matrix, **options)
        return factor, torch.ones(len(matrix), dtype=torch.int32)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", all_fail)
    for answer in CPU.solve_many(problems):
        assert answer.status == Status.NUMERICAL_ERROR
        assert "factorisation failed even regularised" in answer.message
        assert answer.iterations == 1


def test_a_binding_ceiling_is_met():
    """l1 with every slack capped just above the l_inf optimum (below the largest slack of
    the uncapped l1 fit): the interior point's optimum, within the ceiling."""
    problems = layer_batch(4, "relu", "l1", 10, 60, 1e-2, False, 3)
    for problem in problems:
        linf = _ipm.solve_screened(dataclasses.replace(problem, norm="linf")).objective
        assert _ipm.solve_screened(problem).t.max() > 1.1 * linf  # the ceiling binds
        problem.t_max = 1.01 * linf
    for problem, answer in zip(problems, CPU.solve_many(problems), strict=True):
        reference = _ipm.solve_screened(problem)
        assert answer.status == reference.status == Status.OPTIMAL, answer.message
        assert abs(answer.objective - reference.objective) <= 1e-9 * reference.objective
        assert answer.t.max() <= problem.t_max * (1 + 1e-9)


def test_a_non_finite_iterate_is_a_numerical_error(monkeypatch):
    """Every triangular solve returns NaN: the screened LP fails, the full LP too, and the
    answer says so."""
    problems = layer_batch(6, "relu", "l1", 10, 50, 1e-3, True, 2)
    real = torch.linalg.solve_triangular
    monkeypatch.setattr(torch.linalg, "solve_triangular",
                        lambda *args, **options: real(*args, **options) * np.nan)
    answers = CPU.solve_many(problems)
    assert [a.status for a in answers] == [Status.NUMERICAL_ERROR] * 2
    assert all("not finite" in a.message for a in answers)


# ------------------------------------------------------------------ whole inversions
@pytest.mark.parametrize("method", ["linf", "exact", "l1"])
@pytest.mark.parametrize("widths, bias", [((10, 60, 200), False), ((6, 40, 120), True)])
def test_invert_with_torch_is_the_cpu_paths_inversion(method, widths, bias):
    """A batch of 5 samples, realizable and noisy (uniform 1e-3 of max|x|): the latent equal
    to the interior point's ('ipm', the CPU path it batches) to 1e-8 relative and the same
    statuses, layer by layer. On these
    noisy l_inf layers the slack sits at its floor and a polytope of h is optimal: only the
    same iterates (screening included) give the same point."""
    net, _, _ = realizable_instance(widths, 3, bias=bias)
    rng = np.random.default_rng([3, 5])
    clean = net.forward(rng.normal(size=(5, widths[0])))
    noisy = clean + rng.uniform(-1e-3, 1e-3, size=clean.shape) * np.abs(clean).max()
    for x in (clean, noisy):
        cpu = invert(net, x, method, solver="ipm", progress=False)
        gpu = invert(net, x, method, solver="torch", progress=False)
        assert list(gpu.status) == list(cpu.status)
        assert [[r.status for r in layers] for layers in gpu.layers] == \
            [[r.status for r in layers] for layers in cpu.layers]
        scale = np.abs(cpu.z).max(axis=1, keepdims=True)
        assert np.all(np.abs(gpu.z - cpu.z) <= 1e-8 * scale), np.abs(gpu.z - cpu.z).max()
    assert any(r.solver == "torch" for layers in gpu.layers for r in layers)


# ------------------------------------------------------------------ batched least squares
def pinned_bands(operator: DenseOperator, seed: int) -> list:
    """ReLU bands of one layer at thresholds that pin enough rows, too few, or none."""
    rng = np.random.default_rng(seed)
    relu = get_activation("relu")
    n, m = operator.shape
    bands = []
    for threshold in (1e-3, 0.3, 1e3, 1e-6, 0.05):
        y = relu.forward(operator.apply(rng.normal(size=m))) + rng.uniform(-1e-3, 1e-3, n)
        bands.append(relu.band(y, threshold))
    return bands


@pytest.mark.parametrize("certify", [True, False])
def test_pinned_least_squares_equals_the_default_sample_by_sample(certify):
    """Every fit as `Backend.pinned_least_squares`'s (`_linalg` sample by sample): the same
    rank decisions, h and the certificate's bounds to 1e-8 relative; on a W with two nearly
    equal columns (rank-deficient whatever the rows) every fit is refused."""
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 1 / np.sqrt(200), size=(200, 60))
    # Two columns 1e-9 apart: the Cholesky succeeds, its diagonal spread (1.4e-8) refuses it.
    deficient = matrix.copy()
    deficient[:, 7] = deficient[:, 3] + 1e-9 * rng.normal(size=200)
    bias = rng.normal(0, 0.1, size=200)
    for weight in (matrix, deficient):
        operator = DenseOperator(weight)
        bands = pinned_bands(operator, 1)
        reference = _ipm.BACKEND.pinned_least_squares(operator, bias, bands, certify)
        batched = CPU.pinned_least_squares(operator, bias, bands, certify)
        assert [f.full_rank for f in batched] == [f.full_rank for f in reference]
        for mine, theirs in zip(batched, reference, strict=True):
            assert (mine.h is None) == (theirs.h is None)
            if theirs.h is not None:
                assert np.abs(mine.h - theirs.h).max() <= 1e-8 * np.abs(theirs.h).max()
            for name in ("sigma_min", "inverse_row_norm"):
                ours, default = getattr(mine, name), getattr(theirs, name)
                assert (np.isnan(ours) and np.isnan(default)) or \
                    abs(ours - default) <= 1e-8 * abs(default), (name, ours, default)
            assert mine.gram is None
        full = [f.full_rank for f in reference]
        assert full == ([True, False, False, True, True] if weight is matrix else [False] * 5)
    assert reference[2].h is not None and not reference[2].h.any()  # no pinned row: h = 0


def test_pinned_bounds_carry_the_rounding_margin():
    """Nearly square pinned rows (kappa large): the default's bounds carry a rounding margin
    of about 1e-7 (`_linalg.margin_bounds`); the batched ones must carry the same."""
    rng = np.random.default_rng(4)
    operator = DenseOperator(rng.normal(size=(600, 250)) / np.sqrt(600))
    y = np.maximum(operator.apply(rng.normal(size=250)), 0.0)
    band = get_activation("relu").band(y, 1e-9)
    assert 250 <= band.two_sided.sum() <= 330
    (reference,) = _ipm.BACKEND.pinned_least_squares(operator, None, [band], True)
    (batched,) = CPU.pinned_least_squares(operator, None, [band], True)
    for name in ("sigma_min", "inverse_row_norm"):
        ours, default = getattr(batched, name), getattr(reference, name)
        assert abs(ours - default) <= 1e-9 * abs(default), (name, ours, default)


# ------------------------------------------------------------------ the package and devices
def test_importing_layerinv_and_its_solvers_does_not_import_torch():
    code = ("import sys, layerinv, layerinv.solvers as s; s.get('torch'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_torch_the_backend_is_one_input_error_naming_pip_install(monkeypatch):
    problem = layer_batch(0, "relu", "linf", 5, 20, 1e-2, False, 1)[0]
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(InputError, match=r"solver='torch' needs PyTorch, which is not "
                                         r"installed: pip install torch"):
        solvers.solve(problem, "torch")
    with pytest.raises(InputError, match="pip install torch"):
        CPU.pinned_least_squares(problem.operator, None, [problem.band], True)


def test_bad_devices_and_settings_are_input_errors_naming_them():
    problem = layer_batch(0, "relu", "linf", 5, 20, 1e-2, False, 1)[0]
    with pytest.raises(InputError, match=r"device must be 'auto', 'cpu', 'cuda' or a "
                                         r"torch\.device; got 'gpu0'"):
        TorchBackend(device="gpu0").solve(problem)
    with pytest.raises(InputError, match="got 'meta'"):
        TorchBackend(device="meta").solve(problem)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device 'cuda' was asked for but CUDA is not "
                                             "available"):
            TorchBackend(device="cuda").solve(problem)
    for bad in (0, True, 2.0):
        with pytest.raises(InputError, match=f"max_iter must be an int >= 1; got {bad!r}"):
            TorchBackend(max_iter=bad)
    with pytest.raises(InputError, match="max_batch must be an int >= 1; got 0"):
        TorchBackend(max_batch=0)
    with pytest.raises(InputError, match="tol must be a float in"):
        TorchBackend(tol=0.0)


def test_small_batches_give_the_answers_of_one_batch():
    """max_batch splits a call into chunks: the same answers (each LP is its own)."""
    problems = layer_batch(7, "relu", "linf", 12, 50, 1e-3, False, 7)
    whole = CPU.solve_many(problems)
    chunked = TorchBackend(device="cpu", max_batch=3).solve_many(problems)
    for a, b in zip(whole, chunked, strict=True):
        assert a.status == b.status == Status.OPTIMAL
        assert np.allclose(a.h, b.h, rtol=0, atol=1e-12)
    assert chunked[0].message.startswith("torch on cpu, a batch of 3")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_answers():
    """On a GPU: the LPs of two layers, both norms, and the batched least squares, equal to
    the CPU backend's to 1e-9."""
    gpu = TorchBackend(device="cuda")
    for norm in ("linf", "l1"):
        problems = layer_batch(8, "relu", norm, 30, 120, 1e-3, False, 16, bias=True)
        for a, b in zip(gpu.solve_many(problems), CPU.solve_many(problems), strict=True):
            assert a.status == b.status == Status.OPTIMAL
            assert np.abs(a.h - b.h).max() <= 1e-9 * (1 + np.abs(b.h).max())
            assert "cuda" in a.message
    operator = problems[0].operator
    bands = pinned_bands(operator, 2)
    for a, b in zip(gpu.pinned_least_squares(operator, None, bands, True),
                    CPU.pinned_least_squares(operator, None, bands, True), strict=True):
        assert a.full_rank == b.full_rank
        if b.h is not None:
            assert np.abs(a.h - b.h).max() <= 1e-9 * np.abs(b.h).max()
