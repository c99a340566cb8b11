"""Exact inversion by MILP (layerinv.exact) and the 3-SAT reduction (seeded, fast)."""

from __future__ import annotations

import argparse
import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv import InputError, Layer, Network, invert, random_network
from layerinv.cli.hardness import add_parser, run
from layerinv.exact import (
    DEFAULT_BOX,
    BoxWarning,
    closest,
    decode_assignment,
    interval_bounds,
    linf_polytope,
    preimage,
    preimage_polytope,
    random_3sat,
    sat_network,
    satisfies,
)


# --------------------------------------------------------------------------- helpers
def brute_force_sat(clauses: list[list[int]], n_vars: int) -> bool:
    """Whether some assignment satisfies the CNF, by trying all 2^n (n <= 16)."""
    table = np.array(list(itertools.product([False, True], repeat=n_vars)))
    ok = np.ones(len(table), dtype=bool)
    for clause in clauses:
        ok &= np.any([table[:, abs(lit) - 1] == (lit > 0) for lit in clause], axis=0)
    return bool(ok.any())


def planted_3sat(n_vars: int, n_clauses: int, seed: int) -> list[list[int]]:
    """Random 3-SAT clauses all satisfied by a hidden assignment: satisfiable by construction."""
    rng = np.random.default_rng(seed)
    hidden = rng.random(n_vars) < 0.5
    clauses: list[list[int]] = []
    while len(clauses) < n_clauses:
        variables = rng.choice(n_vars, size=3, replace=False)
        signs = rng.choice([-1, 1], size=3)
        clause = [int((v + 1) * s) for v, s in zip(variables, signs, strict=True)]
        if any(hidden[abs(lit) - 1] == (lit > 0) for lit in clause):
            clauses.append(clause)
    return clauses


def two_layer_abs() -> Network:
    """G(z) = ReLU(ReLU(z) + ReLU(-z)) = |z| on R."""
    return Network([Layer([[1.0], [-1.0]], None, "relu"), Layer([[1.0, 1.0]], None, "relu")])


def adam_fit(net: Network, x: np.ndarray, seed: int, steps: int = 400) -> np.ndarray:
    """Plain gradient descent (Adam on ||G(z) - x||^2) from a random start, in float64."""
    torch = pytest.importorskip("torch")
    module = net.to_torch().double()
    target = torch.as_tensor(x, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(net.input_dim, dtype=torch.float64, generator=generator).requires_grad_()
    optimizer = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((module(z) - target) ** 2).sum()
        loss.backward()
        optimizer.step()
    return z.detach().numpy().copy()


def linf(net: Network, z: np.ndarray, x: np.ndarray) -> float:
    return float(np.max(np.abs(net.forward(z) - x)))


# --------------------------------------------------------------------------- 3-SAT
def test_sat_network_agrees_with_brute_force_on_50_instances():
    rng = np.random.default_rng(2024)
    answers = []
    for _ in range(50):
        n = int(rng.integers(3, 9))
        m = int(rng.integers(2 * n, 8 * n + 1))
        clauses = random_3sat(n, m, rng)
        net, x = sat_network(clauses, n)
        truth = brute_force_sat(clauses, n)
        # Every pre-image has |z_i| = 1 (see sat_network), so this box loses nothing.
        result = preimage(net, x, box=2.0)
        assert result.exists is truth, (clauses, result)
        if truth:
            assert result.residual <= 1e-6
            assert satisfies(clauses, decode_assignment(result.z)), (clauses, result.z)
            np.testing.assert_allclose(np.abs(result.z), 1.0, atol=1e-5)
        else:
            assert result.status == "infeasible" and result.z is None
        answers.append(truth)
    assert 10 <= sum(answers) <= 40  # both answers were exercised


def test_sat_network_structure_and_exact_equivalence():
    clauses = [[1, -2, 3], [-1, 2, -3], [2, 3, -4]]
    net, x = sat_network(clauses, 4)
    assert len(net) == 4
    assert net.widths == [4, 4 * 4 + 3, 2, 2, 2]
    assert all(layer.activation.name == "relu" for layer in net.layers)
    np.testing.assert_array_equal(x, [0.0, 4.0])
    for bits in itertools.product([False, True], repeat=4):
        z = np.where(bits, 1.0, -1.0)
        hits = np.array_equal(net.forward(z), x)
        assert hits == satisfies(clauses, list(bits))
        assert decode_assignment(z) == list(bits)
    # Off the sign vectors the target is missed: inside the cube (0 < |z_i| < 1) and outside.
    assert not np.allclose(net.forward(np.full(4, 0.5)), x)
    assert not np.allclose(net.forward(np.full(4, 1.5)), x)


def test_sat_network_tautology_and_empty_clause():
    net, x = sat_network([[1, -1, 2]], 2)  # a tautology: always satisfied
    assert preimage(net, x, box=2.0).exists is True
    net, x = sat_network([[1], []], 1)  # an empty clause: never satisfied
    assert preimage(net, x, box=2.0).exists is False
    net, x = sat_network([[1, 1], [-1, -1]], 1)  # repeated literals: x1 and not x1
    assert preimage(net, x, box=2.0).exists is False


def test_random_3sat_is_seeded_and_well_formed():
    a, b = random_3sat(7, 30, seed=5), random_3sat(7, 30, seed=5)
    assert a == b and a != random_3sat(7, 30, seed=6)
    for clause in a:
        assert len(clause) == 3 and len({abs(lit) for lit in clause}) == 3
        assert all(1 <= abs(lit) <= 7 for lit in clause)


# --------------------------------------------------------------------------- non-convexity
def test_two_layer_abs_preimage_is_non_convex():
    net = two_layer_abs()
    x = np.array([1.0])
    result = preimage(net, x)
    assert result.exists is True
    assert abs(abs(result.z[0]) - 1.0) <= 1e-6 and result.residual <= 1e-6
    right = preimage(net, x, box=(0.0, 5.0))
    left = preimage(net, x, box=(-5.0, 0.0))
    assert right.exists and left.exists
    assert right.z[0] == pytest.approx(1.0, abs=1e-6)
    assert left.z[0] == pytest.approx(-1.0, abs=1e-6)
    # The midpoint 0 of the two pre-images is not one: the pre-image set is not convex.
    assert linf(net, np.zeros(1), x) == pytest.approx(1.0)
    middle = preimage(net, x, box=(-0.5, 0.5))
    assert middle.exists is False and middle.status == "infeasible"


# --------------------------------------------------------------------------- closest
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closest_reaches_zero_on_realizable_x(seed):
    net = random_network([5, 20, 60], seed=seed)
    z_true = np.random.default_rng(seed).normal(size=5)
    x = net.forward(z_true)
    for norm in ("linf", "l1"):
        result = closest(net, x, norm)
        assert result.status == "optimal"
        assert result.distance <= 1e-7
        assert result.bound <= result.distance + 1e-12
    exists = preimage(net, x)
    assert exists.exists is True and exists.residual <= 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closest_is_no_worse_than_lp_and_gradient_descent(seed):
    net = random_network([5, 20, 60], seed=seed)
    rng = np.random.default_rng(100 + seed)
    x = net.forward(rng.normal(size=5)) + 0.02 * rng.normal(size=60)
    z_lp = invert(net, x, "linf").z
    z_gd = adam_fit(net, x, seed)
    half = max(DEFAULT_BOX, float(np.abs(z_lp).max()), float(np.abs(z_gd).max()))
    result = closest(net, x, "linf", box=half)
    assert result.status == "optimal"
    assert result.distance <= linf(net, z_lp, x) + 1e-9
    assert result.distance <= linf(net, z_gd, x) + 1e-9
    # Global: the lower bound matches, and no point fits within (1 - 1e-3) of the optimum.
    assert result.bound >= result.distance * (1 - 1e-5) - 1e-9
    assert preimage(net, x, tol=result.distance * (1 - 1e-3), box=half).exists is False
    assert preimage(net, x, tol=result.distance * (1 + 1e-3), box=half).exists is True


def test_closest_l1_noisy_small_net():
    net = random_network([3, 10, 30], seed=7)
    rng = np.random.default_rng(7)
    x = net.forward(rng.normal(size=3)) + 0.02 * rng.normal(size=30)
    z_lp = invert(net, x, "l1").z
    result = closest(net, x, "l1", box=max(DEFAULT_BOX, float(np.abs(z_lp).max())))
    assert result.status == "optimal"
    assert result.distance <= float(np.abs(net.forward(z_lp) - x).sum()) + 1e-9
    assert result.bound >= result.distance * (1 - 1e-5) - 1e-9


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_closest_beats_a_dense_grid_in_two_dimensions(norm):
    net = random_network([2, 8, 12], bias=True, seed=4)
    rng = np.random.default_rng(4)
    x = net.forward(rng.normal(size=2)) + 0.1 * rng.normal(size=12)
    result = closest(net, x, norm, box=3.0)
    assert result.status == "optimal"
    grid = np.linspace(-3.0, 3.0, 401)
    Z = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    gaps = np.abs(net.forward(Z) - x)
    on_grid = (gaps.sum(axis=1) if norm == "l1" else gaps.max(axis=1)).min()
    assert result.distance <= on_grid + 1e-12
    # ... and the grid gets close to it (the optimum is a real point, not a solver artefact).
    assert on_grid <= result.distance + 0.05


def test_closest_start_is_never_worsened():
    net = random_network([4, 12, 30], seed=3)
    x = net.forward(np.ones(4)) + 0.05
    start = np.full(4, 0.3)
    result = closest(net, x, start=start)
    assert result.distance <= linf(net, start, x) + 1e-12


# --------------------------------------------------------------------------- time limits
def test_time_limit_gives_unknown_never_a_wrong_answer():
    clauses = planted_3sat(60, 256, seed=0)  # satisfiable by construction
    net, x = sat_network(clauses, 60)
    result = preimage(net, x, time_limit=0.05, box=2.0)
    assert result.exists is not False  # False would be wrong
    if result.exists is None:
        assert result.status == "time_limit"
        assert 0.0 <= result.bound <= 1e-6  # a lower bound on the residual, below tol
    else:  # it finished: the witness must be right
        assert satisfies(clauses, decode_assignment(result.z))


def test_time_limit_on_an_unsatisfiable_instance():
    clauses = [[1, 2, 3], [1, 2, -3], [1, -2, 3], [1, -2, -3],
               [-1, 2, 3], [-1, 2, -3], [-1, -2, 3], [-1, -2, -3]]  # all 8 sign patterns
    clauses = clauses + random_3sat(40, 120, seed=1)
    net, x = sat_network(clauses, 40)
    result = preimage(net, x, time_limit=0.0, box=2.0)
    assert result.exists is not True
    assert result.status in ("time_limit", "infeasible")


def test_closest_time_limit_keeps_a_valid_answer_and_bound():
    net = random_network([5, 20, 60], seed=0)
    rng = np.random.default_rng(100)
    x = net.forward(rng.normal(size=5)) + 0.05 * rng.normal(size=60)
    result = closest(net, x, "l1", time_limit=0.0)
    assert result.status in ("time_limit", "optimal")
    assert result.distance == pytest.approx(float(np.abs(net.forward(result.z) - x).sum()))
    assert 0.0 <= result.bound <= result.distance + 1e-12
    assert np.all(np.abs(result.z) <= DEFAULT_BOX)


# --------------------------------------------------------------------------- activations
def test_leaky_relu_identity_and_bias():
    rng = np.random.default_rng(11)
    layers = [Layer(rng.normal(size=(12, 4)) / 3, rng.normal(size=12) / 3, "leaky_relu"),
              Layer(rng.normal(size=(25, 12)) / 5, rng.normal(size=25) / 5, "relu"),
              Layer(rng.normal(size=(25, 25)) / 5, None, "identity")]
    net = Network(layers)
    z_true = rng.normal(size=4)
    x = net.forward(z_true)
    result = preimage(net, x)
    assert result.exists is True and result.residual <= 1e-6
    best = closest(net, x)
    assert best.distance <= 1e-7
    # An output of a leaky unit far below anything reachable in the box: no pre-image.
    far = preimage(Network(layers[:1]), np.full(12, -50.0), box=1.0)
    assert far.exists is False


def test_sigmoid_and_tanh_are_rejected():
    for act in ("sigmoid", "tanh"):
        net = random_network([2, 5], act, seed=0)
        with pytest.raises(InputError, match="piecewise linear"):
            preimage(net, np.zeros(5))
        with pytest.raises(InputError, match="piecewise linear"):
            closest(net, np.zeros(5))


def test_stable_units_need_no_binary():
    # With z in [1, 2] every unit of ReLU(z), ReLU(-z) is stable: a plain LP.
    net = two_layer_abs()
    assert preimage(net, [1.5], box=(1.0, 2.0), tighten=False).n_binaries == 0
    assert preimage(net, [1.5], tighten=False).n_binaries == 2
    (low, high), _ = interval_bounds(net, box=(1.0, 2.0))
    np.testing.assert_allclose(low, [1.0, -2.0])
    np.testing.assert_allclose(high, [2.0, -1.0])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), leaky=st.booleans())
def test_realizable_outputs_always_have_a_preimage(seed, leaky):
    act = "leaky_relu" if leaky else "relu"
    net = random_network([3, 8, 16], act, bias=True, seed=seed)
    z = np.random.default_rng(seed).uniform(-3, 3, size=3)
    result = preimage(net, net.forward(z), box=4.0)
    assert result.exists is True
    assert result.residual <= 1e-6


# --------------------------------------------------------------------------- boxes, warnings
def test_box_warnings():
    net = two_layer_abs()
    with pytest.warns(BoxWarning, match="boundary"):
        preimage(net, [1.0], box=1.0)  # the witnesses +-1 are on the box
    with pytest.warns(BoxWarning, match="default box"):
        assert preimage(net, [20.0]).exists is False  # z = 20 lies outside |z| <= 10
    assert preimage(net, [20.0], box=25.0).exists is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preimage(net, [1.0], box=3.0)
        preimage(net, [-1.0])  # relu output below -tol: infeasible for every z, no warning


def test_argument_errors():
    net = two_layer_abs()
    with pytest.raises(InputError, match="single observation"):
        preimage(net, np.ones((2, 1)))
    with pytest.raises(InputError, match="tol"):
        preimage(net, [1.0], tol=-1.0)
    with pytest.raises(InputError, match="box"):
        preimage(net, [1.0], box=(2.0, 1.0))
    with pytest.raises(InputError, match="box"):
        preimage(net, [1.0], box="wide")
    with pytest.raises(InputError, match="time_limit"):
        preimage(net, [1.0], time_limit=-1)
    with pytest.raises(InputError, match="norm"):
        closest(net, [1.0], norm="l2")
    with pytest.raises(InputError, match="Network"):
        preimage("net", [1.0])
    with pytest.raises(InputError, match="literals"):
        sat_network([[1, 5]], 3)
    with pytest.raises(InputError, match="n_vars"):
        random_3sat(2, 5, 0)


# --------------------------------------------------------------------------- polytopes
def inside(net: Network, z: np.ndarray, C: np.ndarray, d: np.ndarray) -> bool:
    """The test's own check of a witness: C G(z) <= d up to float64 rounding."""
    y = net.forward(z)
    return bool(np.all(C @ y - d <= 1e-8 * (1 + np.abs(d) + np.abs(C) @ np.abs(y))))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), realizable=st.booleans(), tighten=st.booleans())
def test_the_linf_ball_polytope_asks_what_preimage_asks(seed, realizable, tighten):
    rng = np.random.default_rng([3, seed])
    net = random_network([3, 8, 12], "leaky_relu(0.1)" if seed % 2 else "relu", bias=True,
                         seed=seed)
    x = net.forward(rng.uniform(-2, 2, size=3))
    if not realizable:
        x = x + rng.normal(size=12)  # almost surely off the 3-dimensional range
    tol = 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoxWarning)
        a = preimage(net, x, tol, box=3.0, tighten=tighten, search=False)
        b = preimage_polytope(net, *linf_polytope(x, tol), box=3.0, tighten=tighten,
                              search=False)
    assert a.exists is not None and a.exists is b.exists
    if b.exists:
        assert inside(net, b.z, *linf_polytope(x, tol))
        assert b.residual == pytest.approx(linf(net, b.z, x) - tol, abs=1e-12)
        assert b.residual <= 1e-9 and b.bound <= 0.0
    else:
        assert b.status == "infeasible" and b.z is None and b.bound == np.inf
    if realizable:
        assert b.exists is True


@pytest.mark.parametrize("seed", range(10))
def test_general_polytopes_agree_with_a_dense_grid(seed):
    # k = 2: a 301 x 301 grid of the box cannot prove emptiness, but it refutes a wrong
    # answer: a grid point well inside refutes False, and a True witness is checked here.
    rng = np.random.default_rng([5, seed])
    net = random_network([2, 10, 4], bias=True, seed=100 + seed)
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 301), np.linspace(-2, 2, 301)), -1)
    ys = net.forward(grid.reshape(-1, 2))
    C = rng.normal(size=(3, 4))
    margin = ys @ C.T
    # Rows through a random point's image, shifted: some polytopes hit the range, some miss
    # (seeds 0-9: five of each, measured).
    d = C @ net.forward(rng.uniform(-2, 2, size=2)) + rng.uniform(-0.6, 0.1, size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoxWarning)
        result = preimage_polytope(net, C, d, box=2.0, search=bool(seed % 3))
    best_on_grid = float(np.min(np.max(margin - d, axis=1)))
    if result.exists:
        assert inside(net, result.z, C, d) and np.all(np.abs(result.z) <= 2.0)
        assert result.residual <= 1e-8
    else:
        assert result.exists is False and result.status == "infeasible"
        assert best_on_grid > -1e-9, "a grid point lies inside the polytope"
    if best_on_grid < -1e-6:
        assert result.exists is True


def test_polytope_answers_for_both_kinds_are_seen():
    net = random_network([2, 10, 4], bias=True, seed=101)
    y = net.forward(np.array([0.3, -0.4]))
    C = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, -1.0, 1.0, 0.5]])
    d_hit = C @ y + 1e-3
    assert preimage_polytope(net, C, d_hit, box=2.0).exists is True
    d_miss = d_hit.copy()
    d_miss[0] = -1e3  # y_0 + y_1 <= -1000 is out of the range of the box
    assert preimage_polytope(net, C, d_miss, box=2.0).exists is False


def test_polytope_outside_the_relu_range_and_the_box_warnings():
    net = two_layer_abs()  # |z| >= 0
    C, d = np.array([[1.0]]), np.array([-0.5])  # y <= -0.5: no z anywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = preimage_polytope(net, C, d)
    assert result.exists is False and result.status == "infeasible"
    C, d = np.array([[-1.0]]), np.array([-20.0])  # y >= 20: only outside |z| <= 10
    with pytest.warns(BoxWarning, match="default box"):
        assert preimage_polytope(net, C, d).exists is False
    with pytest.warns(BoxWarning, match="boundary"):  # the most interior point: z = +-25
        assert preimage_polytope(net, C, d, box=25.0).exists is True
    # A two-sided row pair 0.5 <= y <= 1 meets the non-convex pre-image on both sides.
    C, d = np.array([[1.0], [-1.0]]), np.array([1.0, -0.5])
    left = preimage_polytope(net, C, d, box=(-3.0, 0.0))
    right = preimage_polytope(net, C, d, box=(0.0, 3.0))
    assert left.z[0] < 0 < right.z[0] and left.exists and right.exists
    middle = preimage_polytope(net, C, d, box=(-0.4, 0.4))
    assert middle.exists is False


def test_polytope_time_limit_is_never_a_wrong_answer():
    clauses = planted_3sat(40, 170, seed=3)  # satisfiable by construction
    net, x = sat_network(clauses, 40)
    result = preimage_polytope(net, *linf_polytope(x, 1e-6), time_limit=0.0, box=2.0)
    assert result.exists is not False
    if result.exists is None:
        assert result.status == "time_limit" and result.bound <= 0.0


def test_polytope_argument_errors():
    net = two_layer_abs()
    with pytest.raises(InputError, match=r"C must be a matrix \(m, 1\)"):
        preimage_polytope(net, np.ones((2, 3)), np.ones(2))
    with pytest.raises(InputError, match="C must be a matrix"):
        preimage_polytope(net, np.ones((0, 1)), np.ones(0))
    with pytest.raises(InputError, match=r"d must have shape \(2,\)"):
        preimage_polytope(net, np.ones((2, 1)), np.ones(3))
    with pytest.raises(InputError, match="d"):
        preimage_polytope(net, np.ones((1, 1)), [np.nan])
    with pytest.raises(InputError, match="box"):
        preimage_polytope(net, np.ones((1, 1)), [1.0], box="wide")
    with pytest.raises(InputError, match="x must be a vector"):
        linf_polytope(np.ones((2, 2)), 0.1)


# --------------------------------------------------------------------------- CLI
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="layerinv")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["hardness", *argv])


def test_cli_single_instance(capsys):
    args = _parse(["--vars", "6", "--clauses", "20", "--seed", "1"])
    assert args.run is run
    assert run(args) == 0
    out = capsys.readouterr().out
    truth = brute_force_sat(random_3sat(6, 20, 1), 6)
    assert ("answer:   SAT" in out) == truth
    assert ("answer:   UNSAT" in out) == (not truth)
    assert "time:" in out
    if truth:
        assert "satisfies all 20 clauses" in out


def test_cli_sweep(capsys):
    assert run(_parse(["--sweep", "--min-vars", "4", "--max-vars", "8", "--seed", "3"])) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.strip() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [4, 6, 8]
    assert [int(r[1]) for r in rows] == [round(4.26 * n) for n in (4, 6, 8)]
    assert all(r[2] in ("SAT", "UNSAT") for r in rows)


def test_cli_rejects_bad_arguments(capsys):
    assert run(_parse(["--vars", "2"])) == 2
    assert "at least 3" in capsys.readouterr().err
