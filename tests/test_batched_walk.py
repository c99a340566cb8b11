"""The batched walk: layer by layer over the whole batch, each round's LPs in one backend call,
with every sample's answer bitwise what it is alone."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import realizable_instance

from layerinv import InputError, _processes, invert, random_network, solvers
from layerinv.solvers import Backend, LayerProblem, LPResult

REPORT_FIELDS = ("status", "eps", "objective", "n_active", "unique", "sigma_min", "error_bound",
                 "error_estimate", "solver", "iterations", "message")


class CountingBackend(Backend):
    """The interior point, recording the problems of every `solve_many` call it receives."""

    def __init__(self) -> None:
        self.inner = solvers.get("ipm")
        self.calls: list[list[LayerProblem]] = []

    def solve(self, problem: LayerProblem) -> LPResult:
        return self.inner.solve(problem)

    def solve_many(self, problems):
        self.calls.append(list(problems))
        return self.inner.solve_many(problems)


@pytest.fixture
def counting(monkeypatch):
    """A CountingBackend registered as 'counting' in a private copy of the registry."""
    monkeypatch.setattr(solvers, "_BACKENDS", dict(solvers._BACKENDS))
    backend = CountingBackend()
    solvers.register("counting", backend)
    return backend


def gaussian_batch(widths=(10, 60, 200), seed=3, size=6, sigma=1e-2):
    """Noisy observations whose first layer needs re-classification passes (seed 3: one sample
    takes three LP solves there)."""
    net = random_network(list(widths), seed=seed)
    rng = np.random.default_rng(seed)
    x = net(rng.normal(size=(size, widths[0])))
    return net, x + rng.normal(0, sigma * np.abs(x).max(), size=x.shape)


def calls_per_layer(net, calls) -> list[tuple[int, int]]:
    """(layer index, problems) per backend call, the layer known by its operator object."""
    out = []
    for problems in calls:
        layer = [i for i, lay in enumerate(net.layers) if lay.operator is problems[0].operator]
        assert len(layer) == 1 and all(p.operator is problems[0].operator for p in problems)
        out.append((layer[0], len(problems)))
    return out


def test_a_backend_sees_each_layer_round_of_the_whole_batch_in_one_call(counting):
    net, x = gaussian_batch()
    invert(net, x, "linf", solver="counting", progress=False)
    batched = calls_per_layer(net, counting.calls)
    assert batched[0] == (1, 6)  # the last layer first: every noisy sample's LP at once
    assert [layer for layer, _ in batched] == sorted((lay for lay, _ in batched), reverse=True)
    # Alone, sample b needs rounds[b][layer] LPs at that layer; together, round r of a layer
    # is one call carrying the samples that need more than r.
    rounds = []
    for x_b in x:
        counting.calls.clear()
        invert(net, x_b, "linf", solver="counting", progress=False)
        alone = calls_per_layer(net, counting.calls)
        assert all(size == 1 for _, size in alone)
        rounds.append([sum(layer == i for layer, _ in alone) for i in range(len(net.layers))])
    expected = [(layer, sum(r[layer] > k for r in rounds))
                for layer in reversed(range(len(net.layers)))
                for k in range(max(r[layer] for r in rounds))]
    assert batched == expected
    assert max(max(r) for r in rounds) >= 2  # re-classification rounds are covered


def test_a_batch_mixing_least_squares_and_lp_samples(counting):
    net, _, _ = realizable_instance([10, 60, 200], seed=8)
    rng = np.random.default_rng(4)
    x = net(rng.normal(size=(5, 10)))
    noisy = [1, 3, 4]
    x[noisy] += rng.uniform(-1e-4, 1e-4, size=(3, 200)) * np.abs(x).max()
    result = invert(net, x, "linf", solver="counting", progress=False)
    assert calls_per_layer(net, counting.calls)[0] == (1, 3)  # only the noisy ones need the LP
    last = [reports[-1].solver for reports in result.layers]
    assert [last[i] for i in (0, 2)] == ["lstsq", "lstsq"]
    assert all(last[i] == "ipm" for i in noisy)  # the counting backend's inner solver
    assert result.success.all()
    for b, x_b in enumerate(x):
        alone = invert(net, x_b, "linf", solver="counting", progress=False)
        np.testing.assert_array_equal(result.z[b], alone.z)
        assert [r.solver for r in result.layers[b]] == [r.solver for r in alone.layers]


def mixed_batch():
    """Realizable, uniform and Gaussian noise, and outputs zeroed (least squares misses)."""
    net, _, _ = realizable_instance([10, 60, 200], seed=8)
    rng = np.random.default_rng(12)
    x = net(rng.normal(size=(6, 10)))
    scale = np.abs(x).max()
    x[1] += rng.uniform(-1e-3, 1e-3, size=200) * scale
    x[2] += rng.normal(0, 1e-3 * scale, size=200)
    x[3][np.flatnonzero(x[3] > 0)[:5]] = 0.0
    x[5] += rng.uniform(-1e-2, 1e-2, size=200) * scale
    return net, x, scale


def assert_same_sample(batch, b, alone):
    assert np.asarray(batch.z[b]).tobytes() == np.asarray(alone.z).tobytes()
    assert batch.status[b] == alone.status
    # (The residual ||G(z) - x|| is not compared: G runs on the whole batch at once, a matrix
    # product whose rounding differs from one sample's, before the batched walk as after.)
    for together, single in zip(batch.layers[b], alone.layers, strict=True):
        for field in REPORT_FIELDS:
            a, c = getattr(together, field), getattr(single, field)
            assert a == c or (a != a and c != c), (b, together.layer, field, a, c)


@pytest.mark.parametrize("method", ["exact", "linf", "l1"])
def test_a_batch_gives_each_sample_bitwise_its_answer_alone(method):
    net, x, scale = mixed_batch()
    seen = set()
    for noise in (None, 3e-3 * scale, 1e-5 * scale):  # none, honoured, contradicted
        batch = invert(net, x, method, noise=noise, progress=False)
        seen |= set(batch.status)
        for b, x_b in enumerate(x):
            assert_same_sample(batch, b, invert(net, x_b, method, noise=noise, progress=False))
    if method != "exact":
        assert {"optimal", "noise_bound_violated"} <= seen
    else:
        assert {"optimal", "not_realizable"} <= seen


def pools_started(monkeypatch) -> list[int]:
    """The worker pools `map_local` starts from now on (the chunks of each)."""
    pools: list[int] = []
    start = _processes._map_local

    def spy(fn, trials, *args, **kwargs):
        pools.append(len(trials))
        yield from start(fn, trials, *args, **kwargs)

    monkeypatch.setattr(_processes, "_map_local", spy)
    return pools


def test_a_small_batch_with_n_jobs_stays_in_this_process(monkeypatch, counting):
    """6 samples on 10 x 60 x 200 hold milliseconds of LP work, far below the 2 s above which
    workers are used: no pool starts, and the one call per round stays whole except for
    the first problem, solved alone to estimate the work."""
    pools = pools_started(monkeypatch)
    net, x = gaussian_batch()
    here = invert(net, x, "linf", progress=False)
    jobs = invert(net, x, "linf", n_jobs=2, progress=False)
    assert pools == []
    np.testing.assert_array_equal(jobs.z, here.z)
    counting.calls.clear()
    invert(net, x, "linf", solver="counting", n_jobs=2, progress=False)
    assert calls_per_layer(net, counting.calls)[:2] == [(1, 1), (1, 5)]


def test_the_progress_bar_counts_each_sample_at_each_layer(monkeypatch, counting, capsys):
    """One step per sample and layer, taken as the sample finishes the layer: the last
    layer's six after its one call, before any call on the first layer."""
    from layerinv import _walk

    bars = []

    class Recording(_walk.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.steps: list[int] = []  # backend calls made when each step came
            bars.append(self)

        def update(self, n=1):
            self.steps += [len(counting.calls)] * n
            return super().update(n)

    monkeypatch.setattr(_walk, "tqdm", Recording)
    net, x = gaussian_batch()
    invert(net, x, "linf", solver="counting", progress=True)
    (bar,) = bars
    assert bar.total == 12 and bar.n == 12 and bar.unit == "sample-layer"
    # Calls: the last layer's (6 problems), then the first layer's rounds of 6, 1 and 1: five
    # samples finish the first layer after its first call, the last after its third.
    assert [len(call) for call in counting.calls] == [6, 6, 1, 1]
    assert bar.steps == [1] * 6 + [2] * 5 + [4]


def test_the_front_door_shares_a_long_list_over_workers_in_chunks_and_keeps_order(monkeypatch):
    """20 problems of one layer (some with a noise bound, one contradicted) on 2 workers: chunks
    of 3 (at least 4 per worker) solved in worker processes, answers bitwise those in process,
    each in its problem's place."""
    pools = pools_started(monkeypatch)
    monkeypatch.setattr(solvers, "PARALLEL_MIN_SECONDS", 0.0)
    net, x = gaussian_batch(size=20)
    layer = net.layers[-1]
    problems = []
    for i, y in enumerate(x):
        band = layer.activation.band(y, 2 * max(0.0, -float(y.min())))
        t_max = None if i % 3 else (1e-9 if i == 6 else 1.0)
        problems.append(LayerProblem(layer.operator, layer.bias, band, np.zeros(layer.n_in),
                                     np.full(layer.n_in, np.inf), "l1" if i % 2 else "linf",
                                     t_max=t_max))
    pooled = solvers.solve_many(problems, "auto", n_jobs=2)
    here = solvers.solve_many(problems, "auto")
    assert pools == [7]  # problems 1..19 in chunks of at most 3
    assert pooled[6].status == "infeasible" and pooled[3].status == "optimal"
    for a, b in zip(pooled, here, strict=True):
        assert a.status == b.status and a.solver == b.solver
        assert a.h.tobytes() == b.h.tobytes() and a.t.tobytes() == b.t.tobytes()
        assert a.objective == b.objective and a.iterations == b.iterations


@pytest.mark.parametrize("n_jobs", [0, "2", 1.5, True])
def test_bad_n_jobs_at_the_front_door_is_named(n_jobs):
    with pytest.raises(InputError, match=r"n_jobs must be None, -1 or a positive int; got "):
        solvers.solve_many([], "auto", n_jobs=n_jobs)


@pytest.mark.parametrize("n_jobs", [0, "2", 1.5, True])
def test_bad_n_jobs_is_named_by_invert_for_one_sample_too(n_jobs):
    """The walk and the front door share one check (`solvers.check_n_jobs`): a single
    observation, which never reaches the worker check, is refused the same way."""
    net = random_network([3, 8, 20], seed=0)
    with pytest.raises(InputError, match=r"n_jobs must be None, -1 or a positive int; got "):
        invert(net, net(np.ones(3)), n_jobs=n_jobs, progress=False)
