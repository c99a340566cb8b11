"""Solvers as plug-ins: the registry, the backend interface and the post-check of answers."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from conftest import realizable_instance, relative_error
from scipy.optimize import linprog

from layerinv import InputError, get_activation, invert, random_network, solvers
from layerinv._reconstruct import pgd, reconstruct
from layerinv.measurements import Gaussian
from layerinv.results import Status
from layerinv.solvers import Backend, Fallback, FunctionBackend, LayerProblem, LPResult
from layerinv.solvers._highs import solve_highs, status_of
from layerinv.solvers._ipm import solve_ipm
from layerinv.solvers.problem import check_result, constraint_rows, slack_bounds


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: what a test registers is gone after it."""
    monkeypatch.setattr(solvers, "_BACKENDS", dict(solvers._BACKENDS))


def solve_linprog(problem: LayerProblem) -> LPResult:
    """A backend in a dozen lines: scipy.optimize.linprog (its HiGHS) on the explicit form."""
    started = time.perf_counter()
    m = problem.n_inputs
    matrix, row_lo, row_hi = constraint_rows(problem)
    floors, t_high = slack_bounds(problem)
    up, low = np.isfinite(row_hi), np.isfinite(row_lo)
    answer = linprog(np.r_[np.zeros(m), np.ones(len(floors))],
                     A_ub=np.vstack([matrix[up], -matrix[low]]),
                     b_ub=np.r_[row_hi[up], -row_lo[low]],
                     bounds=np.column_stack([np.r_[problem.h_low, floors],
                                             np.r_[problem.h_high, t_high]]), method="highs")
    x = answer.x if answer.x is not None else np.zeros(m + len(floors))
    status = {0: Status.OPTIMAL, 1: Status.MAX_STEPS, 2: Status.INFEASIBLE}.get(
        answer.status, Status.NUMERICAL_ERROR)
    objective = float(x[m:].sum())
    return LPResult(h=x[:m], t=x[m:], objective=objective, status=status, solver="linprog",
                    iterations=int(answer.nit), seconds=time.perf_counter() - started,
                    message=answer.message, accuracy=1e-9 * (1 + abs(objective)))


class Counting(Backend):
    """HiGHS, counting the problems it is handed."""

    def __init__(self) -> None:
        self.calls = 0

    def solve(self, problem: LayerProblem) -> LPResult:
        self.calls += 1
        result = solve_highs(problem)
        result.solver = "counting"
        return result


def outside_the_box(problem: LayerProblem) -> LPResult:
    """A wrong answer claimed optimal: HiGHS's point moved below its lower bounds on h."""
    result = solve_highs(problem)
    result.h = result.h - 1.0
    result.solver = "liar"
    return result


def layer_problem(norm="linf", seed=0, m=8, n=30, noise=1e-2):
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1 / np.sqrt(n), size=(n, m))
    h = np.maximum(rng.normal(size=m), 0)
    act = get_activation("relu")
    y = act.forward(weight @ h) + rng.uniform(-noise, noise, size=n)
    return LayerProblem(weight, None, act.band(y, threshold=noise), np.zeros(m),
                        np.full(m, np.inf), norm)


def noisy_instance(seed=8):
    net, z, x = realizable_instance([10, 60, 200], seed=seed)
    noisy = x + np.random.default_rng(2).uniform(-1e-4, 1e-4, size=x.shape) * np.abs(x).max()
    return net, z, noisy


# --------------------------------------------------------------------------- the registry
def test_the_registry_names_the_shipped_backends_auto_first():
    assert solvers.names()[:4] == ("auto", "ipm", "highs", "cvxopt")
    assert isinstance(solvers.get("auto"), Fallback)


def test_an_unknown_solver_is_one_input_error_naming_the_choices():
    expected = ("solver must be one of 'auto', 'ipm', 'highs', 'cvxopt', 'daqp', 'torch'; got "
                "'cplex'")
    with pytest.raises(InputError, match=expected):
        solvers.get("cplex")
    with pytest.raises(InputError, match=expected):
        solvers.solve(layer_problem(), "cplex")
    net = random_network([3, 10, 20], seed=0)
    with pytest.raises(InputError, match=expected):
        invert(net, np.ones(20), "linf", solver="cplex")
    with pytest.raises(InputError, match=expected):
        pgd(net, np.ones(5), Gaussian(5, 20, seed=0), solver="cplex")


def test_register_refuses_a_taken_name_and_a_non_backend(registry):
    with pytest.raises(InputError, match="solver 'highs' is registered already"):
        solvers.register("highs", FunctionBackend(solve_highs))
    with pytest.raises(InputError, match=r"backend must be a layerinv\.solvers\.Backend; got "
                                         r"function"):
        solvers.register("mine", solve_highs)


def test_a_new_backend_is_its_module_and_one_register_line(registry):
    """The docstring's promise: register a backend and invert end to end with it."""
    solvers.register("linprog", FunctionBackend(solve_linprog))
    assert "linprog" in solvers.names()
    net, z, noisy = noisy_instance()
    result = invert(net, noisy, "linf", solver="linprog", progress=False)
    assert result.success
    assert "linprog" in {r.solver for r in result.layers}
    assert {r.solver for r in result.layers} <= {"linprog", "lstsq"}
    assert relative_error(result.z, z) < 1e-3
    bounded = invert(net, noisy, "l1", noise=2e-4 * np.abs(noisy).max(), solver="linprog",
                     progress=False)
    assert bounded.status == "optimal"


def test_the_command_line_offers_every_registered_backend(registry, tmp_path, capsys):
    from layerinv.cli import main

    solvers.register("linprog", FunctionBackend(solve_linprog))
    net, _, noisy = noisy_instance()
    net.save(tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", noisy)
    code = main(["invert", "--network", str(tmp_path / "net.npz"), "--observation",
                 str(tmp_path / "x.npy"), "--solver", "linprog", "--out",
                 str(tmp_path / "z.npy"), "--quiet"])
    assert code == 0 and (tmp_path / "z.npy").exists()


# --------------------------------------------------------------------------- the interface
def test_solve_many_defaults_to_one_solve_each_and_the_front_door_keeps_order():
    problems = [layer_problem(norm, seed) for seed in range(3) for norm in ("linf", "l1")]
    problems[1] = dataclasses.replace(problems[1], t_max=1e-6)  # a contradicted bound
    backend = solvers.get("highs")
    alone = [backend.solve(p) for p in problems]
    together = backend.solve_many(problems)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a.h, b.h)
    front = solvers.solve_many(problems, "highs")
    for problem, result in zip(problems, front, strict=True):
        single = solvers.solve(problem, "highs")
        assert result.status == single.status
        np.testing.assert_array_equal(result.h, single.h)
    assert front[1].status == Status.INFEASIBLE and front[0].status == Status.OPTIMAL


def test_a_capped_interior_point_says_max_steps_and_auto_falls_back_to_highs():
    problem = layer_problem()
    capped = solve_ipm(problem, max_iter=2)
    assert capped.status == Status.MAX_STEPS == "max_steps"
    auto = Fallback(FunctionBackend(lambda p: solve_ipm(p, max_iter=2)),
                    FunctionBackend(solve_highs))
    result = auto.solve(problem)
    assert result.status == "optimal" and result.solver == "highs"
    assert "max_steps; solved by highs instead" in result.message


def test_highs_statuses_in_layerinv_words():
    import highspy

    kinds = highspy.HighsModelStatus
    assert status_of(kinds.kOptimal) == Status.OPTIMAL
    assert status_of(kinds.kIterationLimit) == status_of(kinds.kTimeLimit) == Status.MAX_STEPS
    assert status_of(kinds.kSolutionLimit) == Status.NUMERICAL_ERROR
    assert status_of(kinds.kSolutionLimit, mip=True) == Status.OPTIMAL
    assert status_of(kinds.kUnboundedOrInfeasible, mip=True) == Status.INFEASIBLE


# --------------------------------------------------------------------------- the post-check
def test_a_backend_point_outside_the_bounds_is_a_solver_error_not_optimal(registry):
    solvers.register("liar", FunctionBackend(outside_the_box))
    problem = layer_problem()
    answer = solvers.solve(problem, "liar")
    assert answer.status == Status.NUMERICAL_ERROR
    assert "liar's answer fails the post-check: the point breaks a bound" in answer.message
    net, _, noisy = noisy_instance()
    result = invert(net, noisy, "linf", solver="liar", progress=False)
    assert result.status == "solver_error" and not result.success
    lp_layers = [r for r in result.layers if r.solver == "liar"]
    assert lp_layers and all(r.status == "solver_error" for r in lp_layers)


@pytest.mark.parametrize(("flaw", "message"), [
    (lambda r: setattr(r, "h", r.h[:-1]), "h has shape"),
    (lambda r: setattr(r, "t", np.r_[r.t, 0.0]), "h has shape"),
    (lambda r: setattr(r, "h", np.full_like(r.h, np.nan)), "not finite"),
    (lambda r: setattr(r, "objective", r.objective + 1.0), "differs from sum"),
    (lambda r: setattr(r, "accuracy", float("nan")), "accuracy"),
    (lambda r: setattr(r, "t", r.t * 0.5), "breaks a bound or row"),
])
def test_the_post_check_names_what_is_wrong(flaw, message):
    problem = layer_problem()
    result = solve_highs(problem)
    assert check_result(problem, dataclasses.replace(result)).status == Status.OPTIMAL
    flaw(result)
    if message != "differs from sum":
        result.objective = float(np.sum(result.t))
    checked = check_result(problem, result)
    assert checked.status == Status.NUMERICAL_ERROR
    assert message in checked.message
    assert checked.h.shape == (problem.n_inputs,)


def test_a_rejected_answer_under_auto_goes_to_the_fallback():
    problem = layer_problem("l1")
    auto = Fallback(FunctionBackend(outside_the_box), FunctionBackend(solve_highs))
    result = check_result(problem, auto.solve(problem))
    assert result.status == Status.OPTIMAL and result.solver == "highs"
    assert "liar: numerical_error; solved by highs instead" in result.message



def test_a_fallback_checks_its_second_answer_too():
    """`Fallback.checks_answers` tells the front door to skip its own check, so the fallback's
    answer must pass check_result inside Fallback: a wrong second answer is never 'optimal'."""
    problem = layer_problem("linf")
    both_lie = Fallback(FunctionBackend(outside_the_box), FunctionBackend(outside_the_box))
    assert both_lie.checks_answers
    result = both_lie.solve(problem)
    assert result.status == Status.NUMERICAL_ERROR
    assert "solved by liar instead" in result.message

# --------------------------------------------------------------------------- pgd
def test_pgd_hands_its_projections_to_the_solver_asked_for(registry):
    counting = Counting()
    solvers.register("counting", counting)
    net = random_network([4, 20, 40], seed=3)
    operator = Gaussian(25, 40, seed=1)
    y = operator.apply(net.forward(np.random.default_rng(0).normal(size=4)))
    options = {"max_iter": 3, "restarts": 1, "polish": False}
    reconstruct(net, y, operator, "pgd", **options)
    assert counting.calls == 0  # 'auto' by default
    result = reconstruct(net, y, operator, "pgd", solver="counting", **options)
    assert counting.calls > 0
    direct = pgd(net, y, operator, solver="highs", **options)
    assert result.z.shape == direct.z.shape == (4,)


def test_the_reconstruct_command_passes_its_solver_to_pgd(registry, tmp_path):
    from layerinv.cli import main

    counting = Counting()
    solvers.register("counting", counting)
    random_network([4, 20, 40], seed=3).save(tmp_path / "net.npz")
    code = main(["reconstruct", "--network", str(tmp_path / "net.npz"), "--measurement",
                 "gaussian", "-m", "25", "--simulate", "1", "--method", "pgd", "--max-iter",
                 "2", "--restarts", "1", "--no-polish", "--solver", "counting", "--quiet"])
    assert code == 0 and counting.calls > 0


def test_highspy_is_imported_only_by_the_highs_helper():
    """exact.py builds and runs its models through solvers/_highs.py: no second copy."""
    import ast
    from pathlib import Path

    package = Path(solvers.__file__).resolve().parents[1]
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "highspy" for name in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"solvers/_highs.py"}
