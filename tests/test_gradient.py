"""Gradient descent on the latent (baselines): presets, batching, restarts, sign flip, modules."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import relative_error

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import layerinv  # noqa: E402
from layerinv import baselines  # noqa: E402
from layerinv._gradient import (  # noqa: E402
    GD_STATUSES,
    PRESETS,
    RESTART_STREAM,
    gradient_descent,
    invert_gd,
    refine,
)
from layerinv.errors import InputError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


rel_err = relative_error


def instance(widths: list[int], seed: int, batch: int | None = None
             ) -> tuple[layerinv.Network, np.ndarray, np.ndarray]:
    net = layerinv.random_network(widths, seed=seed)
    shape = (widths[0],) if batch is None else (batch, widths[0])
    z = np.random.default_rng(100 + seed).standard_normal(shape)
    return net, z, net.forward(z)


def numpy_loss(net: layerinv.Network, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.mean((net.forward(z) - x) ** 2, axis=-1)


# A 4 x 40 x 120 net on which plain gradient steps from -z* stall near a spurious critical
# point (measured: loss 1.44 of ||x||^2 = 1.69, z anti-correlated with z*).
STALL_WIDTHS, STALL_SEED = [4, 40, 120], 3


# ----------------------------------------------------------------------------- the claims
def test_bora2017_preset_recovers_10x250x600() -> None:
    net, z, x = instance([10, 250, 600], seed=0, batch=3)
    result = gradient_descent(net, x, preset="bora2017", progress=False)
    assert np.all(rel_err(result.z, z) < 1e-3)
    assert result.success.all()
    assert result.method == "gd"
    assert list(result.status) == ["max_steps"] * 3  # the preset has no early stopping
    assert all(len(h) == PRESETS["bora2017"]["steps"] + 1 for h in result.history)


def test_batch_equals_separate_calls() -> None:
    net, _, x = instance([5, 40, 100], seed=1, batch=3)
    options = {"steps": 200, "restarts": 4, "target_loss": 1e-20, "rel_tol": 1e-12,
               "progress": False}
    batched = gradient_descent(net, x, seed=7, **options)
    for b in range(3):
        alone = gradient_descent(net, x[b], seed=7, **options)
        np.testing.assert_allclose(batched.z[b], alone.z, rtol=1e-9, atol=1e-12)
        assert batched.status[b] == alone.status
        assert len(batched.history[b]) == len(alone.history)
        np.testing.assert_allclose(batched.history[b], alone.history, rtol=1e-6, atol=1e-24)
    # One seed per sample.
    per_sample = gradient_descent(net, x, seed=[3, 4, 5], **options)
    for b, s in enumerate([3, 4, 5]):
        alone = gradient_descent(net, x[b], seed=s, **options)
        np.testing.assert_allclose(per_sample.z[b], alone.z, rtol=1e-9, atol=1e-12)


def test_restarts_keep_best_per_sample() -> None:
    net, z, x = instance(STALL_WIDTHS, STALL_SEED)
    good = z + 0.3 * np.random.default_rng(0).standard_normal(z.shape)
    options = {"preset": "hand2017", "sign_flip": False, "steps": 150, "progress": False}
    # Planted: -z* (stalls) first and last, a good start in the middle, for sample 0; the good
    # start first for sample 1.
    z0 = np.stack([[-z, good, -z], [good, -z, -z]])
    result = gradient_descent(net, np.stack([x, x]), z0=z0, restarts=3, **options)
    assert np.all(rel_err(result.z, z) < 1e-8)
    for b in range(2):
        singles = [gradient_descent(net, x, z0=start, restarts=1, **options)
                   for start in z0[b]]
        losses = [numpy_loss(net, s.z, x) for s in singles]
        best = int(np.argmin(losses))
        assert np.allclose(z0[b, best], good)
        np.testing.assert_allclose(result.z[b], singles[best].z, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result.history[b], singles[best].history, rtol=1e-6,
                                   atol=1e-24)
        assert numpy_loss(net, result.z[b], x) <= min(losses) * (1 + 1e-9) + 1e-30


def test_restarts_pick_best_of_random_starts() -> None:
    net, _, x = instance([6, 40, 100], seed=2)
    result = gradient_descent(net, x, steps=100, restarts=5, seed=11, progress=False)
    starts = np.random.default_rng([11, RESTART_STREAM]).standard_normal((5, 6))
    losses = [numpy_loss(net, gradient_descent(net, x, steps=100, restarts=1, z0=s,
                                               progress=False).z, x) for s in starts]
    np.testing.assert_allclose(numpy_loss(net, result.z, x), min(losses), rtol=1e-6)


def test_sign_flip_recovers_where_plain_gradient_stalls() -> None:
    net, z, x = instance(STALL_WIDTHS, STALL_SEED)
    options = {"preset": "hand2017", "z0": -z, "steps": 300, "progress": False}
    plain = gradient_descent(net, x, sign_flip=False, rel_tol=1e-6, **options)
    assert plain.status == "stalled"
    assert plain.history[-1] > 0.5 * np.sum(x**2)  # summed squares: far from a fit
    assert rel_err(plain.z, z) > 1.0 and plain.z @ z < 0
    assert not plain.success
    flipped = gradient_descent(net, x, **options)
    assert PRESETS["hand2017"]["sign_flip"] is True
    assert rel_err(flipped.z, z) < 1e-10
    assert flipped.success
    assert flipped.history[0] < 1e-12 * np.sum(x**2)  # flipped before the first step


def test_torch_module_image_generator() -> None:
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 784), nn.Sigmoid(),
                              nn.Unflatten(1, (1, 28, 28)))
    generator.train()
    before = [p.detach().clone() for p in generator.parameters()]
    z = torch.randn(2, 8)
    with torch.no_grad():
        x = generator(z)
    assert x.shape == (2, 1, 28, 28)
    result = gradient_descent(generator, x, progress=False)
    assert result.z.shape == (2, 8) and result.z.dtype == np.float64
    assert np.all(rel_err(result.z, z.numpy()) < 1e-3)
    assert result.success.all()
    single = gradient_descent(generator, x[1].numpy(), steps=50, restarts=2, progress=False)
    assert single.z.shape == (8,) and isinstance(single.status, str)
    # The module is left as it came: weights, no gradients, its mode, its dtype.
    assert generator.training
    for p, q in zip(generator.parameters(), before, strict=True):
        assert p.grad is None and p.dtype == torch.float32 and torch.equal(p, q)


def test_module_dtype_override_copies() -> None:
    torch.manual_seed(1)
    generator = nn.Sequential(nn.Linear(3, 20), nn.ReLU(), nn.Linear(20, 30))
    x = np.ones(30)
    gradient_descent(generator, x, steps=5, restarts=1, dtype=torch.float64, progress=False)
    assert all(p.dtype == torch.float32 for p in generator.parameters())


# ----------------------------------------------------------------------------- options
def test_single_vs_batch_conventions() -> None:
    net, _, x = instance([4, 20, 50], seed=3, batch=2)
    single = gradient_descent(net, x[0], steps=20, restarts=2, progress=False)
    assert single.z.shape == (4,)
    assert isinstance(single.success, bool) and isinstance(single.status, str)
    assert isinstance(single.residual, float) and single.layers == []
    assert isinstance(single.history, np.ndarray) and single.history.shape == (21,)
    batch = gradient_descent(net, x, steps=20, restarts=2, progress=False)
    assert batch.z.shape == (2, 4) and batch.success.shape == (2,)
    assert batch.status.shape == (2,) and batch.residual.shape == (2,)
    assert batch.layers == [[], []] and len(batch.history) == 2
    assert set(batch.status) <= set(GD_STATUSES)
    np.testing.assert_allclose(batch.residual,
                               np.max(np.abs(net.forward(batch.z) - x), axis=1), rtol=1e-9)
    assert "gd" in batch.summary()


def test_adam_matches_torch_optim() -> None:
    net, _, x = instance([4, 20, 50], seed=4)
    start = np.random.default_rng(5).standard_normal(4)
    ours = gradient_descent(net, x, z0=start, restarts=1, steps=30, lr=0.05, progress=False)
    module = layerinv._gradient._network_module(net, torch.device("cpu"), torch.float64)
    z = torch.tensor(start[None], requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    xt = torch.tensor(x)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((module(z) - xt) ** 2).mean()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.testing.assert_allclose(ours.history[:30], losses, rtol=1e-10)


def test_sgd_momentum_matches_torch_optim() -> None:
    net, _, x = instance([4, 20, 50], seed=4)
    start = np.random.default_rng(6).standard_normal(4)
    ours = gradient_descent(net, x, z0=start, restarts=1, steps=30, optimizer="sgd", lr=0.2,
                            momentum=0.5, reduction="sum", progress=False)
    module = layerinv._gradient._network_module(net, torch.device("cpu"), torch.float64)
    z = torch.tensor(start[None], requires_grad=True)
    opt = torch.optim.SGD([z], lr=0.2, momentum=0.5)
    xt = torch.tensor(x)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((module(z) - xt) ** 2).sum()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.testing.assert_allclose(ours.history[:30], losses, rtol=1e-10)


def test_early_stopping_is_per_sample_and_freezes() -> None:
    net, _, x = instance([5, 40, 100], seed=5, batch=2)
    x = x.copy()
    x[1] += 0.05  # not realizable: cannot reach the target
    result = gradient_descent(net, x, steps=1500, restarts=2, target_loss=1e-10,
                              progress=False)
    assert result.status[0] == "converged" and result.status[1] == "max_steps"
    assert len(result.history[0]) < 1501 and len(result.history[1]) == 1501
    # The returned z is the frozen iterate whose loss ended the history.
    np.testing.assert_allclose(numpy_loss(net, result.z[0], x[0]), result.history[0][-1],
                               rtol=1e-6)
    assert result.history[0][-1] <= 1e-10
    stalled = gradient_descent(net, x[1], steps=2000, restarts=1, rel_tol=1e-9,
                               progress=False)
    assert stalled.status == "stalled" and len(stalled.history) < 2001


def test_target_fit_is_relative() -> None:
    net, _, x = instance([5, 40, 100], seed=6, batch=2)
    scaled = x * np.array([[1.0], [1e-3]])
    result = gradient_descent(net, scaled, steps=2000, restarts=1, target_fit=1e-6,
                              progress=False)
    assert list(result.status) == ["converged", "converged"]
    for b in range(2):
        rms = np.sqrt(numpy_loss(net, result.z[b], scaled[b]))
        assert rms <= 1e-6 * np.max(np.abs(scaled[b])) * (1 + 1e-6)
    with pytest.raises(InputError, match="not both"):
        gradient_descent(net, x, target_loss=1e-3, target_fit=1e-3, progress=False)


def test_measurement_matrix_and_callable() -> None:
    net, z, x = instance([5, 40, 100], seed=7)
    a = np.random.default_rng(8).standard_normal((40, 100)) / np.sqrt(40)
    y = a @ x
    result = gradient_descent(net, y, measurement=a, progress=False)
    assert rel_err(result.z, z) < 1e-4 and result.success
    np.testing.assert_allclose(result.residual, np.max(np.abs(a @ net.forward(result.z) - y)),
                               rtol=1e-6, atol=1e-14)
    first = lambda out: out[:, :30]  # noqa: E731 - inpainting: keep the first 30 entries
    part = gradient_descent(net, x[:30], measurement=first, steps=300, restarts=2,
                            progress=False)
    assert part.z.shape == (5,)
    with pytest.raises(InputError, match="shape"):
        gradient_descent(net, x, measurement=a, progress=False)  # x is not in A's space


def test_prior_weight_shrinks_z() -> None:
    net, _, x = instance([5, 40, 100], seed=9)
    free = gradient_descent(net, x, steps=300, restarts=2, progress=False)
    shrunk = gradient_descent(net, x, steps=300, restarts=2, prior_weight=0.05,
                              progress=False)
    assert np.linalg.norm(shrunk.z) < 0.9 * np.linalg.norm(free.z)


def test_presets_are_documented_and_overridable() -> None:
    for name, preset in PRESETS.items():
        assert name.rstrip("0123456789").capitalize() in preset["source"]
    assert PRESETS["bora2017"]["optimizer"] == "adam" and PRESETS["bora2017"]["lr"] == 0.01
    assert PRESETS["bora2017"]["steps"] == 1000 and PRESETS["bora2017"]["restarts"] == 10
    assert PRESETS["hand2017"]["sign_flip"] and PRESETS["hand2017"]["optimizer"] == "sgd"
    assert baselines.gradient_descent is gradient_descent and baselines.PRESETS is PRESETS
    net, _, x = instance([4, 20, 50], seed=10)
    result = gradient_descent(net, x, preset="hand2017", steps=7, progress=False)
    assert len(result.history) == 8


def test_diverging_learning_rate_keeps_best_finite_iterate() -> None:
    net, _, x = instance([4, 20, 50], seed=11)
    result = gradient_descent(net, x, optimizer="sgd", lr=1e200, steps=20, restarts=2,
                              reduction="sum", progress=False)
    assert result.status == "diverged"
    assert np.all(np.isfinite(result.z))
    assert np.isfinite(result.history[:-1]).all() and not np.isfinite(result.history[-1])
    np.testing.assert_allclose(numpy_loss(net, result.z, x) * 50,
                               np.min(result.history[:-1]), rtol=1e-9)


def test_refine_from_lp_and_from_perturbed_start() -> None:
    net, z, x = instance([6, 60, 150], seed=12, batch=2)
    lp = layerinv.invert(net, x, "linf", progress=False)
    refined = refine(net, x, lp, progress=False)
    assert refined.method == "lp+gd" and refined.layers is lp.layers
    assert refined.seconds >= lp.seconds
    assert np.all(refined.residual <= lp.residual * (1 + 1e-9) + 1e-15)
    start = z + 1e-2 * np.random.default_rng(13).standard_normal(z.shape)
    from_start = refine(net, x, start, progress=False)
    assert np.all(rel_err(from_start.z, z) < 1e-6)
    assert list(from_start.status) == ["converged", "converged"]
    with pytest.raises(InputError, match="z0"):
        refine(net, x, start, z0=start)


def test_invert_gd_wrapper() -> None:
    net, _, x = instance([4, 20, 50], seed=14)
    result = invert_gd(net, x, steps=10, progress=False)
    assert result.method == "gd" and result.z.shape == (4,)
    with pytest.raises(InputError, match="Network"):
        invert_gd(nn.Linear(4, 50), x)


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    net, _, x = instance([4, 20, 50], seed=15)
    gradient_descent(net, x, steps=5, restarts=1, progress=True)
    assert "gradient descent" in capsys.readouterr().err


def test_float32_network() -> None:
    net, z, x = instance([5, 40, 100], seed=16)
    result = gradient_descent(net, x, dtype=torch.float32, progress=False)
    assert rel_err(result.z, z) < 1e-4


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("lr", [0.0, -0.01, float("nan")])
def test_bad_learning_rate(lr: float) -> None:
    net, _, x = instance([4, 20, 50], seed=0)
    with pytest.raises(InputError, match="lr must be"):
        gradient_descent(net, x, lr=lr)


@pytest.mark.parametrize("name,value", [("steps", 0), ("steps", 2.5), ("restarts", 0),
                                        ("steps", True)])
def test_bad_counts(name: str, value: object) -> None:
    net, _, x = instance([4, 20, 50], seed=0)
    with pytest.raises(InputError, match=f"{name} must be an int >= 1"):
        gradient_descent(net, x, **{name: value})


def test_output_shape_mismatch() -> None:
    net, _, x = instance([4, 20, 50], seed=0)
    with pytest.raises(InputError, match=r"x has shape \(49,\) but G\(z\) has shape \(50,\)"):
        gradient_descent(net, x[:49])
    generator = nn.Sequential(nn.Linear(8, 784), nn.Unflatten(1, (1, 28, 28)))
    with pytest.raises(InputError, match=r"\(1, 28, 28\)"):
        gradient_descent(generator, np.zeros((2, 28, 28)))


def test_nan_in_x() -> None:
    net, _, x = instance([4, 20, 50], seed=0)
    x = x.copy()
    x[3] = np.nan
    with pytest.raises(InputError, match="x must be finite; found NaN"):
        gradient_descent(net, x)


@pytest.mark.parametrize("kwargs,match", [
    ({"preset": "adam2015"}, "preset must be one of"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"momentum": 1.0}, "momentum must be in"),
    ({"prior_weight": -1.0}, "prior_weight must be"),
    ({"rel_tol": 0.0}, "rel_tol must be"),
    ({"target_loss": -1.0}, "target_loss must be"),
    ({"sign_flip": "yes"}, "sign_flip must be"),
    ({"reduction": "max"}, "reduction must be one of"),
    ({"z0": np.zeros(3)}, "z0 must have shape"),
    ({"z0": np.zeros((11, 4))}, "raise restarts"),
    ({"seed": [1, 2]}, "one int per sample"),
    ({"seed": "abc"}, "seed must be"),
    ({"progress": "yes"}, "progress must be"),
    ({"dtype": torch.int32}, "dtype must be"),
    ({"device": "tpu9"}, "device must be"),
    ({"success_tol": 0.0}, "success_tol must be"),
])
def test_bad_options(kwargs: dict, match: str) -> None:
    net, _, x = instance([4, 20, 50], seed=0)
    with pytest.raises(InputError, match=match):
        gradient_descent(net, x, **kwargs)


def test_bad_generator() -> None:
    with pytest.raises(InputError, match="generator must be"):
        gradient_descent(lambda z: z, np.zeros(3))
    with pytest.raises(InputError, match="latent_dim"):
        gradient_descent(nn.Sequential(nn.ReLU()), np.zeros(3))
    with pytest.raises(InputError, match="failed on a latent batch"):
        gradient_descent(nn.Linear(4, 3), np.zeros(3), latent_dim=5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_unavailable_is_clear() -> None:
    net, _, x = instance([4, 20, 50], seed=0)
    with pytest.raises(InputError, match="CUDA is not available"):
        gradient_descent(net, x, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    net, _, x = instance([5, 40, 100], seed=17, batch=2)
    options = {"steps": 300, "restarts": 3, "progress": False}
    cpu = gradient_descent(net, x, **options)
    gpu = gradient_descent(net, x, device="cuda", **options)
    np.testing.assert_allclose(gpu.z, cpu.z, rtol=1e-6, atol=1e-9)
    generator = nn.Sequential(nn.Linear(4, 30), nn.ReLU(), nn.Linear(30, 60)).cuda()
    with torch.no_grad():
        y = generator(torch.randn(2, 4, device="cuda"))
    assert gradient_descent(generator, y, steps=50, progress=False).z.shape == (2, 4)


def test_restarts_never_start_at_a_latent_drawn_with_the_same_seed():
    """z* from default_rng(0) and gradient descent with seed 0 must not share a stream."""
    net = layerinv.random_network([5, 30, 90], seed=1)
    z_true = np.random.default_rng(0).standard_normal(5)
    result = gradient_descent(net, net(z_true), steps=1, restarts=1, seed=0, progress=False)
    assert np.linalg.norm(result.z - z_true) > 1e-3


def test_gradient_results_carry_no_certificate():
    net = layerinv.random_network([5, 30, 90], seed=1)
    x = net(np.ones(5))
    result = layerinv.invert(net, x, "gd", steps=5, restarts=1, progress=False)
    assert result.certified is False and np.isnan(result.error_bound)


def test_success_is_the_documented_fit_criterion_on_either_side_of_the_tolerance():
    """success = ||G(z) - x||_inf <= 1e-4 ||x||_inf (the default success_tol), judged at both
    sides: a fit 2x inside the tolerance succeeds, one 2x outside fails (a tolerance loosened
    or tightened 100x gets one of them wrong)."""
    net = layerinv.random_network([5, 30, 90], seed=3)
    z_true = np.random.default_rng([3, 1]).standard_normal(5)
    clean = net(z_true)
    signs = np.random.default_rng([3, 2]).choice([-1.0, 1.0], size=clean.shape)
    for relative, expected in ((0.5e-4, True), (2e-4, False), (1e-3, False)):
        x = clean + signs * relative * np.max(np.abs(clean))
        # Start at z*: a step of lr 1e-15 leaves the fit where it is, so the returned z fits
        # to the planted residual.
        result = gradient_descent(net, x, z0=z_true, restarts=1, steps=1, lr=1e-15,
                                  progress=False)
        fit = np.max(np.abs(net(result.z) - x)) / np.max(np.abs(x))
        assert abs(fit / relative - 1.0) < 0.02, fit  # the residual is the planted one
        assert np.isclose(result.residual, np.max(np.abs(net(result.z) - x)), rtol=1e-9)
        assert result.success is expected, (relative, fit)


@pytest.mark.parametrize("method", ["gd", "lp+gd"])
def test_an_unknown_gradient_option_is_one_input_error_naming_it(method):
    net = layerinv.random_network([5, 30, 90], seed=1)
    x = net(np.ones(5))
    with pytest.raises(InputError, match=r"unknown gradient-descent option 'stepz'; valid "
                                         r"options: .*steps.*restarts"):
        layerinv.invert(net, x, method, stepz=3)
    with pytest.raises(InputError, match="unknown gradient-descent option 'stepz'"):
        gradient_descent(net, x, stepz=3)


def test_gradient_summary_shares_out_the_time_and_states_stop_reason_and_fit():
    from layerinv._gradient import sample_seconds, summary, summary_line

    net = layerinv.random_network([5, 30, 90], seed=1)
    z = np.random.default_rng([1, 5]).standard_normal((3, 5))
    x = net(z)
    x[2] += 0.05  # a sample gradient descent cannot fit
    for method in ("gd", "lp+gd"):
        result = layerinv.invert(net, x, method, steps=30, restarts=2, progress=False)
        shares = sample_seconds(result)
        assert shares.shape == (3,) and np.all(shares > 0)
        assert np.isclose(shares.sum(), result.seconds, rtol=1e-9)
        table = summary(result, x)
        for share in shares:
            assert f"{share:.4f}" in table
        line = summary_line(result, x)
        fits = int(np.sum(result.success))
        assert line.startswith(f"{fits} of 3 samples fit") and "stop reasons:" in line
        assert "optimal" not in line and fits < 3


def test_invert_command_prints_gradient_times_and_fit(tmp_path):
    import subprocess
    import sys

    net = layerinv.random_network([5, 30, 90], seed=2)
    net.save(tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", net(np.random.default_rng([2, 3]).standard_normal((2, 5))))
    done = subprocess.run(
        [sys.executable, "-m", "layerinv", "invert", "--network", str(tmp_path / "net.npz"),
         "--observation", str(tmp_path / "x.npy"), "--method", "gd", "--steps", "20",
         "--out", str(tmp_path / "z.npy")], capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()
            if len(line.split()) == 6 and line.split()[1] in GD_STATUSES]
    assert len(rows) == 2 and all(float(row[-1]) > 0 for row in rows), done.stdout
    assert "samples optimal" not in done.stdout
    assert "of 2 samples fit" in done.stdout and "stop reasons: max_steps 2" in done.stdout


def test_a_list_of_networks_gives_each_sample_bitwise_its_answer_alone():
    """What `layerinv reproduce` relies on to batch trials: sample b's numbers through a list
    of networks do not depend on the other samples (the batch's size or b's place in it)."""
    nets = [layerinv.random_network([5, 30, 80], seed=20 + b) for b in range(9)]
    z = np.random.default_rng([20, 1]).standard_normal((9, 5))
    x = np.stack([net(zb) for net, zb in zip(nets, z, strict=True)])
    options = {"steps": 200, "restarts": 10, "progress": False}
    together = gradient_descent(nets, x, seed=list(range(9)), **options)
    for b in (0, 4, 8):
        alone = gradient_descent([nets[b]], x[b:b + 1], seed=[b], **options)
        assert np.array_equal(together.z[b], alone.z[0]), b
        assert np.array_equal(together.history[b], alone.history[0]), b
    # One shared network, a mask per sample, one restart from given starts, early stopping.
    shared, observed = nets[0], np.random.default_rng([20, 2]).random((9, 80)) < 0.9
    starts = z + 0.1 * np.random.default_rng([20, 3]).standard_normal(z.shape)
    y = shared(z)
    options = {"steps": 200, "restarts": 1, "target_fit": 1e-9, "progress": False}
    together = gradient_descent([shared] * 9, y, observed=observed, z0=starts, **options)
    for b in (1, 8):
        alone = gradient_descent([shared], y[b:b + 1], observed=observed[b:b + 1],
                                 z0=starts[b:b + 1], **options)
        assert np.array_equal(together.z[b], alone.z[0]), b
        assert together.status[b] == alone.status[0]
    masked = np.max(np.abs(shared(together.z) - y) * observed, axis=1)
    np.testing.assert_allclose(together.residual, masked, rtol=1e-9)  # observed entries only


def test_a_list_of_conv_networks_runs_torch_convolutions_sample_by_sample():
    """Convolution layers of a list of networks run as torch's convolutions (not their dense
    matrices): the same numbers as the dense layers to round-off, and each sample's answer
    bitwise its answer alone (batches in `layerinv reproduce conv`)."""
    from layerinv.layers import Layer
    from layerinv.network import Network, random_dcgan
    from layerinv.operators import DenseOperator

    conv = random_dcgan(8, (8, 4), side=3, output_channels=1, output_activation="relu", seed=5)
    assert any(type(layer.operator).__name__ == "Conv2dOperator" for layer in conv.layers)
    dense = Network([Layer(DenseOperator(layer.operator.to_dense()), layer.bias,
                           layer.activation) for layer in conv.layers])
    z = np.random.default_rng([21, 1]).standard_normal((5, 8))
    x = conv.forward(z)
    options = {"steps": 30, "restarts": 3, "seed": 0, "progress": False}
    together = gradient_descent([conv] * 5, x, **options)
    reference = gradient_descent([dense] * 5, x, **options)
    np.testing.assert_allclose(together.history, reference.history, rtol=1e-9, atol=1e-12)
    for b in (0, 4):
        alone = gradient_descent([conv], x[b:b + 1], **{**options, "seed": [0]})
        assert np.array_equal(together.z[b], alone.z[0]), b
    # Distinct networks of one architecture: each through its own kernels.
    other = random_dcgan(8, (8, 4), side=3, output_channels=1, output_activation="relu",
                         seed=6)
    pair = gradient_descent([conv, other], np.stack([x[0], other.forward(z[1])]), **options)
    alone = gradient_descent([other], other.forward(z[1])[None], **{**options, "seed": [0]})
    assert np.array_equal(pair.z[1], alone.z[0])


def test_inversion_summary_shares_the_gradient_time_out(one_thread):
    """Inversion.summary() of a gradient result: each sample's seconds is its share of the
    call (was 0.0000: gradient results have no layer reports to add up)."""
    net = layerinv.random_network([5, 20, 40], seed=3)
    x = net.forward(np.random.default_rng([3, 7]).normal(size=(4, 5)))
    result = layerinv.invert(net, x, "gd", steps=20, restarts=2, seed=0, progress=False)
    seconds = result.sample_seconds()
    assert seconds.shape == (4,)
    assert np.all(seconds > 0)
    assert seconds.sum() == pytest.approx(result.seconds, rel=1e-9)
    rows = result.summary().splitlines()[2:]
    assert [float(row.split()[-1]) for row in rows] == pytest.approx(seconds, abs=1e-4)
