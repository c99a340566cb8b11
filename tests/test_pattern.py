"""The pattern method (`_pattern.py`): regions, region solves, the certified local search,
statuses and certificates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linprog

import layerinv
from layerinv import _pattern as pattern
from layerinv import pretrained
from layerinv.errors import InputError
from layerinv.results import Status

ACTIVATIONS = ("relu", "leaky_relu(0.2)")


def _net(widths, activation="relu", seed=0, bias=False):
    net = layerinv.random_network(widths, activation, seed=seed)
    if not bias:
        return net
    rng = np.random.default_rng(seed + 100)
    layers = [layerinv.Layer(layer.weight, 0.1 * rng.normal(size=layer.n_out),
                             layer.activation) for layer in net.layers]
    return layerinv.Network(layers)


@given(seed=st.integers(0, 10_000), activation=st.sampled_from(ACTIVATIONS),
       bias=st.booleans())
def test_the_network_is_affine_on_a_region_and_its_faces_hold_there(seed, activation, bias):
    net = _net((4, 12, 30), activation, seed, bias)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=4)
    region = pattern.region_of(net, pattern.pattern_at(net, z))
    assert np.allclose(region.jacobian @ z + region.offset, net.forward(z), atol=1e-12)
    assert np.all(region.faces @ z <= region.face_bounds + 1e-12)
    # A point of another region breaks some face of this one (the faces describe the region).
    other = rng.normal(size=4) * 3
    same = all(np.array_equal(a, b) for a, b in zip(pattern.pattern_at(net, other),
                                                     region.pattern, strict=True))
    inside = bool(np.all(region.faces @ other <= region.face_bounds + 1e-12))
    assert inside == same or np.min(np.abs(region.faces @ other - region.face_bounds)) < 1e-9


def test_a_flipped_unit_changes_one_face_and_the_map_agrees_across_it():
    net = _net((3, 10, 20), seed=3)
    z = np.random.default_rng(3).normal(size=3)
    region = pattern.region_of(net, pattern.pattern_at(net, z))
    flipped = pattern.flipped(region.pattern, np.array([[0, 2]]))
    assert flipped[0][2] != region.pattern[0][2]
    assert sum(int((a != b).sum()) for a, b in zip(flipped, region.pattern, strict=True)) == 1


@given(seed=st.integers(0, 10_000), loss=st.sampled_from(pattern.LOSSES))
def test_a_region_solve_matches_an_independent_solver(seed, loss):
    """l_inf and l_1: scipy's HiGHS on the same LP; l2: the KKT check plus a projected
    comparison (no point of the region sampled nearby does better)."""
    net = _net((3, 15, 25), seed=seed, bias=True)
    rng = np.random.default_rng(seed)
    z_true = rng.normal(size=3)
    x = net.forward(z_true) + 0.05 * rng.normal(size=25)
    region = pattern.region_of(net, pattern.pattern_at(net, z_true))
    objective = pattern.Objective(x, loss, 0.0)
    fit = pattern.solve_region(region, objective, z_true)
    assert fit.certified
    assert np.all(region.faces @ fit.z <= region.face_bounds + 1e-8)
    jac, res0 = objective.measured(region)
    if loss == "l2":
        for _ in range(200):  # feasible points near the optimum never do better
            trial = fit.z + 1e-3 * rng.normal(size=3)
            if np.all(region.faces @ trial <= region.face_bounds):
                assert np.mean((jac @ trial + res0) ** 2) >= fit.objective - 1e-12
        return
    reference = _highs_objective(jac, res0, region, loss)
    assert fit.objective == pytest.approx(reference, rel=1e-7, abs=1e-10)


def _highs_objective(jac, res0, region, loss):
    m, k = jac.shape
    n_t = 1 if loss == "linf" else m
    cost = np.concatenate([np.zeros(k), np.ones(n_t)])
    slack = np.ones((m, 1)) if n_t == 1 else np.eye(m)
    rows = np.vstack([np.hstack([jac, -slack]), np.hstack([-jac, -slack]),
                      np.hstack([region.faces, np.zeros((len(region.faces), n_t))])])
    bounds = np.concatenate([-res0, res0, region.face_bounds])
    answer = linprog(cost, A_ub=rows, b_ub=bounds,
                     bounds=[(None, None)] * k + [(0, None)] * n_t, method="highs")
    assert answer.status == 0
    return answer.fun


@pytest.mark.parametrize("loss", pattern.LOSSES)
def test_a_certified_local_optimum_has_no_improving_flip(loss):
    """Checked independently: every single flip of a binding face, solved from scratch, does
    not lower the objective; and the descent's history never rises."""
    net = _net((4, 20, 40), seed=11)
    rng = np.random.default_rng(11)
    x = net.forward(rng.normal(size=4)) + 0.3 * rng.normal(size=40)
    objective = pattern.Objective(x, loss, 1e-3)
    solution = pattern.local_search(net, objective, rng.normal(size=4), 500)
    assert solution.local_optimum
    assert np.all(np.diff(solution.history) < 0)
    slack = solution.region.face_bounds - solution.region.faces @ solution.z
    binding = np.flatnonzero(slack <= 1e-9 * (1 + np.abs(solution.region.face_bounds)))
    for face in binding:
        units = solution.region.face_units[[face]]
        neighbour = pattern.region_of(net, pattern.flipped(solution.region.pattern, units))
        trial = pattern.solve_region(neighbour, objective)
        assert trial.objective >= solution.objective - 1e-9 * (1 + solution.objective)



def _flip_test_cases():
    """(net, objective, start) triples: dense nets with and without bias, a prior, a linear
    measurement, leaky units, three layers, and a small convolutional generator."""
    from layerinv.network import random_dcgan

    rng = np.random.default_rng(5)
    for index in range(24):
        widths = [(3, 15, 25), (4, 10, 30, 40), (2, 8, 12)][index % 3]
        net = _net(widths, ACTIVATIONS[index % 2], seed=index, bias=index % 4 == 1)
        x = net.forward(rng.normal(size=widths[0])) + 0.3 * rng.normal(size=widths[-1])
        prior = 0.01 * (index % 2)
        if index % 4 >= 2:
            rows = rng.normal(size=(widths[-1] // 2 + 3, widths[-1]))
            yield net, pattern.Objective(rows @ x, "l2", prior, rows), rng.normal(size=widths[0])
        else:
            yield net, pattern.Objective(x, "l2", prior), 2 * rng.normal(size=widths[0])
    conv = random_dcgan(4, (4, 2), 2, output_channels=1, output_activation="relu", seed=1)
    for _ in range(3):
        x = conv.forward(rng.normal(size=4)) + 0.1 * rng.normal(size=conv.output_dim)
        yield conv, pattern.Objective(x, "l2", 1e-3), rng.normal(size=4)


def test_a_skipped_flip_is_one_a_full_solve_would_not_take(monkeypatch):
    """`_FlipTest` lets the local search skip a flip without building its region: checked
    against that region solved from scratch at every decision of many descents. Where it says
    z stays optimal the solve finds no decrease beyond IMPROVE_TOL; it never hides an
    improving flip; and both answers occur (the test decides, it does not always defer)."""
    decisions = {(True, False): 0, (False, True): 0, (False, False): 0, (True, True): 0}
    test = pattern._FlipTest.stays_optimal

    def checked(self, unit):
        stays = test(self, unit)
        neighbour = pattern.region_of(self.net, pattern.flipped(self.region.pattern,
                                                                unit[None]))
        trial = pattern.solve_region(neighbour, self.objective, self.z)
        before = float(self.objective.value(self.residual, self.z))
        improves = trial.certified and trial.objective < before - pattern.IMPROVE_TOL * (
            1 + abs(before))
        decisions[stays, bool(improves)] += 1
        return stays

    monkeypatch.setattr(pattern._FlipTest, "stays_optimal", checked)
    for net, objective, start in _flip_test_cases():
        pattern.local_search(net, objective, start, 200)
    assert decisions[True, True] == 0, decisions
    assert decisions[True, False] > 100 and decisions[False, True] > 20, decisions


def test_the_flip_test_sees_the_flipped_region_as_building_it_would():
    """Its gradient and binding faces across each binding face of many local optima equal
    those of the flipped region built whole (`region_of`) at the same z."""
    checked = 0
    for net, objective, start in _flip_test_cases():
        solution = pattern.local_search(net, objective, start, 200)
        binding = pattern._binding_faces(solution.region, solution.z)
        test = pattern._FlipTest.of(net, solution.region, objective, solution.z, binding)
        for face in binding:
            unit = solution.region.face_units[face]
            neighbour = pattern.region_of(net, pattern.flipped(solution.region.pattern,
                                                               unit[None]))
            jac, res0 = objective.measured(neighbour)
            gradient = (2.0 * jac.T @ (jac @ solution.z + res0) / len(res0)
                        + 2.0 * objective.prior * solution.z)
            mine, rows = test.flipped_terms(unit)
            scale = 1.0 + np.abs(gradient).max()
            np.testing.assert_allclose(mine, gradient, rtol=0, atol=1e-10 * scale)
            np.testing.assert_allclose(rows, neighbour.faces[binding], rtol=0, atol=1e-10 * (
                1.0 + np.abs(neighbour.faces[binding]).max()))
            checked += 1
    assert checked > 200

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_realizable_data_are_recovered_optimally_on_an_expansive_net(activation):
    net = _net((10, 120, 300), activation, seed=5)
    z = np.random.default_rng(5).normal(size=(6, 10))
    result = pattern.invert_pattern(net, net.forward(z), starts=2, seed=1, progress=False)
    assert list(result.status) == [Status.OPTIMAL] * 6
    assert np.max(np.abs(result.z - z)) < 1e-8
    assert all(r.identifiable and r.sigma_min > 0 for r in result.regions)
    assert np.all(result.certified)


def test_recovery_follows_the_rank_of_the_jacobian_at_the_truth():
    """A hidden layer narrower than 2k: z is recovered exactly where J_P at z* has full rank;
    where it has not, the status names the rank of the region returned."""
    net = _net((8, 12, 200), seed=7)
    rng = np.random.default_rng(7)
    z = rng.normal(size=(30, 8))
    full_rank = np.array([np.linalg.matrix_rank(pattern.region_of(
        net, pattern.pattern_at(net, zi)).jacobian) == 8 for zi in z])
    assert 0 < full_rank.sum() < 30  # the instances split: the test sees both sides
    result = pattern.invert_pattern(net, net.forward(z), starts=8, seed=0, progress=False)
    recovered = np.max(np.abs(result.z - z), axis=1) < 1e-7
    assert np.all(recovered[full_rank])
    assert np.all(result.status[full_rank] == Status.OPTIMAL)
    # Elsewhere z is one of many exact fits on its region ('not_identifiable'), or an exact
    # fit on another region that does determine it ('optimal' certifies the region only).
    for i in np.flatnonzero(~full_rank):
        assert result.status[i] in (Status.NOT_IDENTIFIABLE, Status.OPTIMAL)
        rank = np.linalg.matrix_rank(pattern.region_of(net, result.regions[i].pattern).jacobian)
        if result.status[i] == Status.OPTIMAL:  # (not_identifiable also where z sits at a
            assert rank == 8                    # kink and the region across it is deficient)
    assert np.sum(result.status == Status.NOT_IDENTIFIABLE) > 0
    assert np.all(result.residual < 1e-9)  # every answer fits: the data are realizable


def test_the_region_error_bound_holds_when_the_truth_shares_the_region():
    net = _net((6, 80, 200), seed=9)
    rng = np.random.default_rng(9)
    held, ratios = 0, []
    for _ in range(20):
        z = rng.normal(size=6)
        clean = net.forward(z)
        noise = 1e-3 * np.abs(clean).max()
        x = clean + rng.uniform(-noise, noise, size=200)
        result = pattern.invert_pattern(net, x, loss="linf", noise=noise, starts=1,
                                        progress=False)
        same = all(np.array_equal(a, b) for a, b in zip(pattern.pattern_at(net, z),
                                                         result.regions.pattern, strict=True))
        if same and result.regions.identifiable:
            held += 1
            assert np.max(np.abs(result.z - z)) <= result.error_bound
            ratios.append(np.max(np.abs(result.z - z)) / result.error_bound)
    assert held >= 10
    # Informative too: a worst-case bound, measured 12x above the worst true error here
    # (0.08 of it; 0.04 median); a bound inflated tenfold would fall below this.
    assert max(ratios) > 0.01


def test_noisy_data_give_a_local_optimum_never_optimal():
    net = _net((6, 80, 200), seed=2)
    rng = np.random.default_rng(2)
    x = net.forward(rng.normal(size=(3, 6))) + 0.01 * rng.normal(size=(3, 200))
    result = pattern.invert_pattern(net, x, prior=1e-3, starts=2, progress=False)
    assert list(result.status) == [Status.LOCAL_OPTIMUM] * 3
    assert np.all(result.success)


def test_seeded_and_batch_independent():
    net = _net((5, 40, 100), seed=4)
    rng = np.random.default_rng(4)
    x = net.forward(rng.normal(size=(3, 5))) + 0.2 * rng.normal(size=(3, 100))
    first = pattern.invert_pattern(net, x, starts=3, seed=8, progress=False)
    again = pattern.invert_pattern(net, x, starts=3, seed=8, progress=False)
    single = pattern.invert_pattern(net, x[1], starts=3, seed=8, progress=False)
    assert np.array_equal(first.z, again.z)
    assert np.array_equal(first.z[1], single.z)
    assert single.regions.starts == first.regions[1].starts == 4  # z = 0 and three draws


def test_the_prior_pulls_towards_zero():
    net = _net((5, 40, 100), seed=6)
    rng = np.random.default_rng(6)
    x = net.forward(rng.normal(size=5)) + 0.5 * rng.normal(size=100)
    free = pattern.invert_pattern(net, x, starts=2, progress=False)
    pulled = pattern.invert_pattern(net, x, prior=1.0, starts=2, progress=False)
    assert np.linalg.norm(pulled.z) < np.linalg.norm(free.z)


@pytest.mark.parametrize(("options", "words"), [
    ({"loss": "l3"}, "loss"), ({"prior": -1.0}, "prior"), ({"starts": -1}, "starts"),
    ({"max_regions": 0}, "max_regions"), ({"starts": True}, "starts"),
    ({"start": np.zeros(3)}, "start"), ({"hops": -1}, "hops"), ({"hops": 2.0}, "hops"),
])
def test_bad_options_are_one_clear_line(options, words):
    net = _net((5, 20, 40))
    with pytest.raises(InputError, match=words):
        pattern.invert_pattern(net, np.zeros(40), progress=False, **options)


def test_a_smooth_activation_is_refused_by_name():
    net = layerinv.random_network((3, 10, 20), "sigmoid", seed=0)
    with pytest.raises(InputError, match="sigmoid"):
        pattern.invert_pattern(net, np.zeros(20), progress=False)


def test_a_fit_at_a_kink_is_not_called_identifiable():
    """x = G(z) = 0 on a (2, 6, 14) net: every output unit off, a whole set of pre-images.
    The search ends at a z whose output units sit at u = 0, 'on' in a full-rank region; the
    region across those faces (them off) is of rank 0, so z is not identified."""
    seed = 11778
    net = layerinv.random_network([2, 6, 14], seed=seed)
    x = net(np.random.default_rng([seed, 11]).standard_normal(2))
    assert not np.any(x)
    for loss in pattern.LOSSES:
        result = pattern.invert_pattern(net, x, loss=loss, starts=2, progress=False)
        assert result.status == Status.NOT_IDENTIFIABLE, loss
        assert result.residual <= 1e-12


def test_auto_is_the_default_and_leaves_exact_answers_alone():
    net = _net((10, 120, 300), seed=12)
    z = np.random.default_rng(12).normal(size=(4, 10))
    result = layerinv.invert(net, net.forward(z), progress=False)
    assert result.method == "auto"
    assert list(result.status) == [Status.OPTIMAL] * 4
    assert result.regions is None  # nothing to refine: every layer fitted to round-off
    assert np.max(np.abs(result.z - z)) < 1e-9
    assert np.all(result.certified)


def test_auto_refines_noisy_answers_and_beats_the_layer_wise_fit():
    """Uniform noise of 1e-3 max|x| on 10 x 120 x 300 nets: the refined answers are
    certified local optima, and their median latent error is below layer-wise l_inf's."""
    rng = np.random.default_rng(13)
    ratios = []
    for i in range(8):
        net = _net((10, 120, 300), seed=100 + i)
        z = rng.normal(size=10)
        clean = net.forward(z)
        a = 1e-3 * np.abs(clean).max()
        x = clean + rng.uniform(-a, a, size=300)
        auto = layerinv.invert(net, x, progress=False)
        linf = layerinv.invert(net, x, "linf", progress=False)
        assert auto.status == Status.LOCAL_OPTIMUM and auto.success
        assert auto.regions is not None and auto.regions.local_optimum
        ratios.append(np.linalg.norm(auto.z - z) / np.linalg.norm(linf.z - z))
    assert np.median(ratios) < 0.8, ratios


def test_the_pattern_method_through_invert():
    net = _net((6, 10, 80), seed=14)  # a hidden layer narrower than 2k
    z = np.random.default_rng(14).normal(size=(5, 6))
    result = layerinv.invert(net, net.forward(z), "pattern", starts=4, progress=False)
    assert result.method == "pattern" and len(result.regions) == 5
    assert np.all(result.residual < 1e-9)
    with pytest.raises(InputError, match="lp_start"):
        layerinv.invert(net, net.forward(z), "auto", lp_start=True, progress=False)
    started = layerinv.invert(net, net.forward(z), "pattern", lp_start=True, progress=False)
    assert np.all(started.residual < 1e-9)


def test_a_noisy_joint_answer_is_a_local_optimum_never_optimal():
    """The shipped decoder under heavy noise: every layer-wise answer is not unique; the
    joint solve's answers (linf, l1) are certified local optima at best, never 'optimal'."""
    decoder = pretrained.mnist_generator("relu")
    rng = np.random.default_rng(15)
    x = decoder.forward(rng.normal(size=(3, 20))) + 0.5 * rng.normal(size=(3, 784))
    for method in ("linf", "l1"):
        result = layerinv.invert(decoder, x, method, progress=False)
        alone = layerinv.invert(decoder, x, method, progress=False, joint=False)
        assert not np.any(alone.status == Status.OPTIMAL)
        assert not np.any(result.status == Status.OPTIMAL), method
        assert result.regions is not None
        for status, region in zip(result.status, result.regions, strict=True):
            if status == Status.LOCAL_OPTIMUM:
                assert region is not None and region.local_optimum and region.identifiable


def test_reconstruct_with_the_pattern_method_and_projection(monkeypatch):
    """A Gaussian A enters the region objective as its matrix, a Mask folds into the net,
    a magnitude is refused by name; PGD with the pattern projection projects with it and
    recovers too."""
    from layerinv import _reconstruct, measurements

    calls = []
    real = _reconstruct.invert_pattern
    monkeypatch.setattr(_reconstruct, "invert_pattern",
                        lambda *a, **k: calls.append(k.get("rows") is None) or real(*a, **k))

    net = _net((8, 60, 200), seed=16)
    z = np.random.default_rng(16).normal(size=(3, 8))
    x = net.forward(z)
    gaussian = measurements.Gaussian(60, 200, seed=1)
    direct = layerinv.reconstruct(net, gaussian.apply(x), gaussian, "pattern", progress=False)
    assert np.max(np.abs(direct.inversion.z - z)) < 1e-8
    assert calls == [False]  # one call, with the matrix
    projected = layerinv.reconstruct(net, gaussian.apply(x), gaussian, "pgd",
                                     projection="pattern", progress=False)
    assert len(calls) > 1 and all(calls[1:])  # the projections, in signal space
    assert np.max(np.abs(projected.signal - x)) < 1e-8 * np.abs(x).max()
    mask = measurements.Mask.random(200, 0.5, seed=2)
    masked = layerinv.reconstruct(net, mask.apply(x), mask, "pattern", progress=False)
    assert np.max(np.abs(masked.inversion.z - z)) < 1e-8
    with pytest.raises(InputError, match="linear measurement"):
        layerinv.reconstruct(net, np.abs(gaussian.apply(x)),
                             measurements.Magnitude(gaussian.matrix), "pattern",
                             progress=False)


# ------------------------------------------------------------------------------------ hops
def test_hops_are_seeded_batch_independent_and_reported():
    net = _net((5, 40, 100), seed=4)
    rng = np.random.default_rng(14)
    x = net.forward(rng.normal(size=(3, 5))) + 0.2 * rng.normal(size=(3, 100))
    first = pattern.invert_pattern(net, x, starts=2, hops=3, seed=8, progress=False)
    again = pattern.invert_pattern(net, x, starts=2, hops=3, seed=8, progress=False)
    single = pattern.invert_pattern(net, x[1], starts=2, hops=3, seed=8, progress=False)
    assert np.array_equal(first.z, again.z)
    assert np.array_equal(first.z[1], single.z)
    assert [report.hops for report in first.regions] == [3, 3, 3]
    plain = pattern.invert_pattern(net, x, starts=2, seed=8, progress=False)
    assert [report.hops for report in plain.regions] == [0, 0, 0]  # HOPS: none by default
    front_door = layerinv.invert(net, x, method="pattern", starts=2, hops=3, seed=8,
                                 progress=False)
    assert np.array_equal(front_door.z, first.z)


def test_an_exact_fit_does_not_hop():
    """Realizable data, prior 0: samples that z = 0 fits skip the random starts, and those
    a random start fits (sample 0 and 1 here: z = 0 does not) skip the hops."""
    net = _net((5, 12, 60), seed=1)
    x = net.forward(np.random.default_rng(1).normal(size=(6, 5)))
    result = pattern.invert_pattern(net, x, starts=4, hops=4, progress=False)
    for i in (0, 1):
        assert result.status[i] == layerinv.Status.OPTIMAL
        assert result.regions[i].starts == 5  # z = 0 did not fit: the random starts ran
        assert result.regions[i].hops == 0


def test_hop_draws_follow_the_laplace_spread():
    """Hops are N(z, HOP_SCALE f / m H^-1): the sample covariance of many draws matches it
    (a spread off by 10x, or H not inverted, fails by far)."""
    net = _net((4, 30, 60), seed=5)
    rng = np.random.default_rng(5)
    y = net.forward(rng.normal(size=(1, 4))) + 0.3 * rng.normal(size=(1, 60))
    centre = rng.normal(size=(1, 4))
    prior = 1e-3
    objective = pattern.Objective(y, "l2", prior)
    hessian, _ = pattern._normal_equations(net, objective, centre)
    value = np.array([2.5])
    draws = pattern._hop_points(net, y, centre, value, prior, None,
                                [np.random.default_rng(1)], 20_000)[0]
    expected = pattern.HOP_SCALE * value[0] / 60 * np.linalg.inv(hessian[0])
    assert np.allclose(draws.mean(axis=0), centre[0], atol=0.05 * np.sqrt(expected.max()))
    spread = np.cov(draws.T)
    assert np.linalg.norm(spread - expected) <= 0.05 * np.linalg.norm(expected)


def test_hops_lower_the_objective_on_the_shipped_decoder():
    """MNIST denoising at variance 0.3 (the bench's prior): hops reach deeper minima than the
    same starts alone on some instances, and never end noticeably higher."""
    net = pretrained.mnist_generator("relu")
    rng = np.random.default_rng([0, 0x6870])
    x = net.forward(rng.normal(size=(12, 20))) + np.sqrt(0.3) * rng.normal(size=(12, 784))
    prior = 0.3 / 784
    plain = pattern.invert_pattern(net, x, prior=prior, seed=1, progress=False)
    hopped = pattern.invert_pattern(net, x, prior=prior, hops=8, seed=1, progress=False)
    before = np.array([report.objective for report in plain.regions])
    after = np.array([report.objective for report in hopped.regions])
    assert np.sum(after < before * (1 - 1e-6)) >= 3
    assert np.all(after <= before * (1 + 1e-4))
    # Where a hop made the answer, the sample alone draws the same hops (its own stream).
    improved = np.flatnonzero(after < before * (1 - 1e-6))
    last = improved[-1]
    alone = pattern.invert_pattern(net, x[last], prior=prior, hops=8, seed=1, progress=False)
    assert np.array_equal(alone.z, hopped.z[last])


def test_hops_stay_bounded_on_a_rank_deficient_region():
    """Prior 0 and a hidden layer narrower than k: H is singular, and HOP_FLOOR keeps the
    draws along its flat directions within sqrt(f / m / (HOP_FLOOR max eig)) per axis."""
    net = _net((6, 3, 40), seed=7)
    rng = np.random.default_rng(7)
    y = net.forward(rng.normal(size=(1, 6))) + 0.1 * rng.normal(size=(1, 40))
    centre = rng.normal(size=(1, 6))
    hessian, _ = pattern._normal_equations(net, pattern.Objective(y, "l2", 0.0), centre)
    largest = np.linalg.eigvalsh(hessian[0])[-1]
    value = np.array([0.5])
    draws = pattern._hop_points(net, y, centre, value, 0.0, None,
                                [np.random.default_rng(2)], 200)[0]
    widest = np.sqrt(pattern.HOP_SCALE * value[0] / 40 / (pattern.HOP_FLOOR * largest))
    assert np.all(np.isfinite(draws))
    assert np.max(np.linalg.norm(draws - centre, axis=1)) <= 10 * widest
