"""The 'daqp' backend (DAQP's dual active set, warm-started): HiGHS's optima, honest statuses."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from conftest import realizable_instance, relative_error, repaired_objective, set_ceiling
from hypothesis import given, settings
from hypothesis import strategies as st
from test_statuses import bounded_noise

from layerinv import InputError, LeakyReLU, get_activation, invert, random_network, solvers
from layerinv.results import Status
from layerinv.solvers import _daqp
from layerinv.solvers._highs import solve_highs
from layerinv.solvers.problem import LayerProblem, check_result, explicit_form

ACTIVATIONS = {"relu": get_activation("relu"), "leaky_relu": LeakyReLU(0.2),
               "identity": get_activation("identity")}


def noisy_problem(seed: int, activation: str, norm: str, m: int, n: int, noise: float,
                  free_box: bool) -> LayerProblem:
    """One noisy layer LP: y = act(W h) + uniform noise, h >= 0 or free (a latent layer)."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1 / np.sqrt(n), size=(n, m))
    h = rng.normal(size=m) if free_box else np.maximum(rng.normal(size=m), 0)
    act = ACTIVATIONS[activation]
    y = act.forward(weight @ h) + rng.uniform(-noise, noise, size=n)
    low = np.full(m, -np.inf) if free_box else np.zeros(m)
    return LayerProblem(weight, None, act.band(y, threshold=noise), low, np.full(m, np.inf),
                        norm)


def agrees(value: float, reference: float) -> bool:
    return abs(value - reference) <= 1e-7 * abs(reference) + 1e-12


def agrees_with_highs(value: float, problem: LayerProblem, highs: solvers.LPResult) -> bool:
    """`value` equals HiGHS's objective to 1e-7 relative, up to HiGHS's own feasibility
    tolerance (1e-7 a row): its point may break rows by up to that, so its objective may
    lie below the optimum by that much a slack; the same point repaired to feasibility is
    the other end. Measured: an l1 layer of 100 identity rows where HiGHS's point broke a
    row by 5.4e-8 and its objective lay 1.1e-6 relative below DAQP's and the interior
    point's (which agreed to 2e-11)."""
    low = min(highs.objective, repaired_objective(problem, highs.h))
    high = max(highs.objective, repaired_objective(problem, highs.h))
    return low - 1e-7 * abs(low) - 1e-12 <= value <= high + 1e-7 * abs(high) + 1e-12


problems = st.builds(
    noisy_problem, seed=st.integers(0, 2**32 - 1),
    activation=st.sampled_from(sorted(ACTIVATIONS)), norm=st.sampled_from(["linf", "l1"]),
    m=st.integers(2, 25), n=st.integers(30, 120),
    noise=st.floats(-4.0, -1.0).map(lambda p: 10.0**p), free_box=st.booleans())


# ------------------------------------------------------------------ HiGHS's optima
@given(problem=problems, ceiling=st.sampled_from([None, "loose", "contradicted"]))
@settings(max_examples=120, deadline=None)
def test_daqp_finds_highs_optimum_with_or_without_a_noise_bound(problem, ceiling):
    """The front door with solver='daqp' and 'highs' on the same LP: the same status, and
    optimal objectives equal to 1e-7 relative. A loose ceiling is twice the l_inf optimum, a
    contradicted one half of it (the front door must prove it contradicted)."""
    set_ceiling(problem, ceiling)
    reference = solvers.solve(problem, "highs")
    answer = solvers.solve(problem, "daqp")
    expected = Status.INFEASIBLE if ceiling == "contradicted" else Status.OPTIMAL
    assert reference.status == expected, reference.message
    assert answer.status == expected, answer.message
    if expected == Status.OPTIMAL:
        assert agrees_with_highs(answer.objective, problem, reference), (
            answer.objective, reference.objective, repaired_objective(problem, reference.h))
        # The accuracy is tight where the point is optimal: a usable certificate.
        assert answer.accuracy <= 1e-8 * (1 + abs(answer.objective)), answer.accuracy


@given(problem=problems, seed=st.integers(0, 2**32 - 1), spread=st.floats(-3.0, 1.0))
@settings(max_examples=80, deadline=None)
def test_the_dual_bound_is_below_the_optimum_for_any_multipliers(problem, seed, spread):
    """Weak duality: `_dual_bound` is a lower bound on the optimum for every y, not only for
    DAQP's multipliers (random ones here, of every sign), so the accuracy built on it is a
    proof (up to the estimate on columns with an infinite bound)."""
    form = explicit_form(problem)
    optimum = solve_highs(problem)
    assert optimum.status == Status.OPTIMAL
    y = np.random.default_rng(seed).normal(0, 10.0**spread, size=len(form.row_lo))
    x = np.concatenate([optimum.h, optimum.t])
    assert _daqp._dual_bound(form, x, y) <= optimum.objective + optimum.accuracy


@given(problem=problems, excess=st.floats(-12.0, -2.0).map(lambda p: 10.0**p))
@settings(max_examples=60, deadline=None)
def test_the_certified_gap_is_never_below_the_true_excess(problem, excess):
    """The accuracy's core: at a feasible point `excess` above the optimum (DAQP's answer,
    its last slack raised), the gap `_gap` certifies with DAQP's multipliers is at least the
    excess (relative to 1 + |objective|, as `_gap` states it)."""
    # (A first version measured the excess from HiGHS's objective plus its accuracy, which
    # can lie below the optimum: an l1 example's certified gap fell 6.5e-10 short of it.)
    import daqp

    form = explicit_form(problem)
    start = _daqp._start(problem, form)
    x, flag, _, lam = _daqp._run(daqp, form, _daqp._column_scale(form, start), start)
    optimum = solve_highs(problem)
    assert flag == 1 and optimum.status == Status.OPTIMAL
    x = x.copy()
    x[-1] += excess
    objective = float(x[problem.n_inputs:].sum())
    # HiGHS's point repaired to feasibility is at or above the optimum (its objective may lie
    # below by its feasibility tolerance), so this is at most the true excess.
    least_excess = objective - repaired_objective(problem, optimum.h)
    assert _daqp._gap(form, x, 1, lam) * (1 + abs(objective)) >= least_excess - 1e-15


@given(problem=problems)
@settings(max_examples=40, deadline=None)
def test_a_daqp_answer_passes_the_post_check_as_returned(problem):
    answer = _daqp.solve_daqp(problem)
    assert answer.status == Status.OPTIMAL, answer.message
    assert check_result(problem, answer).status == Status.OPTIMAL, answer.message


def test_the_warm_start_pays_on_a_wide_noisy_layer():
    """From the least-squares point (slack columns scaled to its slack) DAQP needs fewer than
    a third of the cold start's iterations on a noisy 600 x 250 ReLU layer (measured 98 and
    751 on a captured one)."""
    problem = noisy_problem(3, "relu", "linf", 250, 600, 1e-3, free_box=False)
    form = explicit_form(problem)
    start = _daqp._start(problem, form)
    scale = _daqp._column_scale(form, start)
    import daqp

    warm = _daqp._run(daqp, form, scale, start)
    cold = _daqp._run(daqp, form, scale, None)
    assert warm[1] == cold[1] == 1
    assert warm[2] < cold[2] / 3, (warm[2], cold[2])
    assert agrees(float(warm[0][250:].sum()), solve_highs(problem).objective)


def lying_daqp(monkeypatch, *, flag: int | None = None, excess: float = 0.0) -> None:
    """Replace the daqp module by one whose solve returns the real answer with its slacks
    raised by `excess` (still feasible, no longer optimal) or its exit flag replaced.

    The backend solves in scaled columns, the slack's unit its cost there (f = c * scale)."""
    import daqp

    def solve(*args, **options):
        x, fval, real_flag, info = daqp.solve(*args, **options)
        scale = np.ones(len(x))  # the slack's column scale: the cost on it (its cost is 1)
        scale[-1] = args[1][-1]
        x = np.array(x)
        x[-1] += excess / scale[-1]  # the last column is a slack (scaled) in both norms
        return x, fval, real_flag if flag is None else flag, info

    monkeypatch.setitem(sys.modules, "daqp", types.SimpleNamespace(solve=solve))


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_an_uncertified_optimal_flag_is_a_numerical_error(monkeypatch, norm):
    """DAQP saying 'optimal' (flag 1) at a point 1e-6 above the optimum: the multipliers do
    not certify it, so the answer is a numerical error, never 'optimal' (measured before the
    settings in _OPTIONS: 6 of 120 l1 LPs stopped so, one 4e-4 relative above)."""
    problem = noisy_problem(1, "relu", norm, 10, 60, 1e-3, free_box=False)
    lying_daqp(monkeypatch, excess=1e-6)
    answer = _daqp.solve_daqp(problem)
    assert answer.status == Status.NUMERICAL_ERROR, answer.message
    assert "uncertified" in answer.message


def test_daqp_infeasible_on_an_lp_without_a_ceiling_is_a_numerical_error(monkeypatch):
    """Without a slack ceiling every h fits with a large enough slack: an 'infeasible' flag
    (-1) there is false (DAQP said so on a feasible layer whose slack was 1e-7)."""
    problem = noisy_problem(1, "relu", "linf", 10, 60, 1e-3, free_box=False)
    lying_daqp(monkeypatch, flag=-1)
    answer = _daqp.solve_daqp(problem)
    assert answer.status == Status.NUMERICAL_ERROR, answer.message
    assert answer.message.startswith("daqp exit flag -1, then -1")


# ------------------------------------------------------------------ whole inversions
@pytest.mark.parametrize("widths", [(20, 100, 300), (10, 60, 200)])
def test_invert_with_daqp_matches_the_interior_point(widths):
    """Noisy nets (uniform noise 1e-3 of max|x|), 8 seeds: the same statuses as
    solver='ipm', layer by layer; the output layer's LP (the same LP for both) the same
    optimum to 1e-7; every latent error below 10 times the noise, the median within 1.5
    times the interior point's.

    Not the same latent error to 1e-6: these LPs' optimal h are not unique (the slack sits
    at its floor, and a whole polytope of h meets it), so DAQP returns a vertex of the
    optimal face and the interior point a point inside it, and the layers below see
    different inputs. Measured on these 16 instances: latent errors 0.7e-3 to 2.1e-3 (DAQP)
    against 0.8e-3 to 3.8e-3 (interior point) and 1.5e-3 to 4.3e-3 (HiGHS, a vertex too);
    medians 1.16 and 1.12 times the interior point's."""
    daqp_errors, ipm_errors = [], []
    for seed in range(8):
        net, z, clean = realizable_instance(widths, seed)
        rng = np.random.default_rng([seed, 7])
        amplitude = 1e-3 * np.abs(clean).max()
        x = clean + rng.uniform(-amplitude, amplitude, size=clean.shape)
        ipm = invert(net, x, "linf", solver="ipm", progress=False)
        daqp = invert(net, x, "linf", solver="daqp", progress=False)
        assert daqp.status == ipm.status == "optimal"
        assert [layer.status for layer in daqp.layers] == [layer.status for layer in ipm.layers]
        # To 1e-7 relative or the interior point's gap tolerance, 1e-9 (1 + |objective|).
        top, reference = daqp.layers[-1].objective, ipm.layers[-1].objective
        assert agrees(top, reference) or abs(top - reference) <= 1e-9 * (1 + reference)
        daqp_errors.append(relative_error(daqp.z, z))
        ipm_errors.append(relative_error(ipm.z, z))
    assert max(daqp_errors) < 1e-2
    assert np.median(daqp_errors) <= 1.5 * np.median(ipm_errors), (daqp_errors, ipm_errors)


@given(seed=st.integers(0, 2**32 - 1),
       e=st.one_of(st.just(0.0), st.floats(-12.0, -2.0).map(lambda p: 10.0**p)),
       method=st.sampled_from(["linf", "l1"]),
       activation=st.sampled_from(["relu", "leaky_relu", "identity"]),
       k=st.integers(2, 12), hidden_ratio=st.floats(1.5, 4.0), out_ratio=st.floats(1.2, 3.0))
@settings(max_examples=60, deadline=None)
def test_a_respected_noise_bound_is_never_reported_violated_by_daqp(seed, e, method,
                                                                    activation, k,
                                                                    hidden_ratio, out_ratio):
    """tests/test_statuses.py's property with solver='daqp' on every example."""
    hidden = int(hidden_ratio * k) + 2
    widths = [k, hidden, int(out_ratio * hidden) + 2]
    net = random_network(widths, ACTIVATIONS[activation], seed=seed)
    rng = np.random.default_rng([seed, 11])
    x = bounded_noise(net(rng.standard_normal(k)), e, rng)
    result = invert(net, x, method, noise=e, solver="daqp", progress=False)
    assert result.status != "noise_bound_violated", [r.message for r in result.layers]
    assert result.status != "solver_error", [r.message for r in result.layers]
    assert result.layers[-1].eps <= e + 1e-6 * np.abs(x).max()


# ------------------------------------------------------------------ the optional package
def test_a_missing_daqp_is_one_input_error_naming_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "daqp", None)  # `import daqp` raises ImportError
    problem = noisy_problem(0, "relu", "linf", 5, 20, 1e-2, free_box=False)
    with pytest.raises(InputError, match=r"solver='daqp' needs the daqp package: "
                                         r"pip install daqp"):
        solvers.solve(problem, "daqp")
