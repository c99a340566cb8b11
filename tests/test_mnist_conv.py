"""The shipped convolutional MNIST generator ('conv', issue 14): architecture, files, quality,
training, and the kinds."""

from __future__ import annotations

import io

import numpy as np
import pytest

from layerinv.convolution import Conv2dOperator
from layerinv.errors import InputError
from layerinv.network import Network
from layerinv.operators import DenseOperator
from layerinv.pretrained import (
    KINDS,
    PAPER_KINDS,
    mnist_digits,
    mnist_encoder,
    mnist_generator,
    mnist_metadata,
)
from layerinv.reproduction.experiments import mnist as experiments

# (operator type, input shape, output shape) per layer, all ReLU: the folded
# Linear -> Unflatten -> BN -> ReLU -> ConvT -> BN -> ReLU -> ConvT -> Flatten -> ReLU.
CONV_LAYERS = [(DenseOperator, None, None),
               (Conv2dOperator, (32, 7, 7), (16, 14, 14)),
               (Conv2dOperator, (16, 14, 14), (1, 28, 28))]
HELDOUT_MSE_SLACK = 0.05
"""The shipped 200 held-out digits' reconstruction MSE against the JSON's (over all 1,000
held-out digits): within 5 % (measured 0.0167 on the 200, 0.0168 on the 1,000)."""


def test_kinds_and_unknown_kind_error():
    assert KINDS == ("relu", "leaky_relu", "conv") and PAPER_KINDS == ("relu", "leaky_relu")
    for loader in (mnist_generator, mnist_encoder, mnist_metadata):
        with pytest.raises(InputError, match=r"kind must be one of 'relu', 'leaky_relu', "
                                             r"'conv'; got 'dcgan'"):
            loader("dcgan")
    # The reproduction's MNIST grid keeps the paper's two generators (its digests stay).
    assert {p["generator"] for p in experiments.grid(False, None)} == set(PAPER_KINDS)


def test_shipped_conv_generator_has_the_described_architecture():
    net = mnist_generator("conv")
    assert net.widths == [20, 32 * 7 * 7, 16 * 14 * 14, 784]
    for layer, (kind, shape_in, shape_out) in zip(net.layers, CONV_LAYERS, strict=True):
        assert type(layer.operator) is kind and layer.activation.name == "relu"
        assert layer.bias is not None
        if kind is Conv2dOperator:
            op = layer.operator
            assert op.transposed and op.input_shape == shape_in
            assert op.output_shape == shape_out and op.kernel.shape[2:] == (4, 4)
            assert op.stride == (2, 2) and op.padding == (1, 1)
            # A convolution's (folded) bias is one number per channel.
            per_channel = layer.bias.reshape(shape_out[0], -1)
            np.testing.assert_array_equal(per_channel, per_channel[:, :1].repeat(
                per_channel.shape[1], axis=1))
    meta = mnist_metadata("conv")
    assert meta["kind"] == "conv" and meta["decoder_bias"] is True
    assert meta["decoder_widths"] == net.widths
    assert meta["decoder_layers"] == [repr(layer.operator) for layer in net.layers]
    assert any("ConvTranspose2d(32, 16" in m for m in meta["decoder_modules"])
    assert sum("BatchNorm2d" in m for m in meta["decoder_modules"]) == 2
    assert meta["seed"] == 0 and meta["data"]["training_digits"] == 9000
    assert meta["encoder_widths"] == [784, 256, 40]


def test_conv_forward_equals_its_pytorch_module_in_float64():
    torch = pytest.importorskip("torch")
    net = mnist_generator("conv")
    module = net.to_torch(torch.float64)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in module.modules()) == 2
    z = np.random.default_rng(0).standard_normal((16, 20))
    with torch.no_grad():
        expected = module(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(net.forward(z), expected, rtol=0, atol=1e-10)
    assert np.abs(expected).max() > 0.5  # not a dead net: digits have bright pixels


def test_conv_files_load_back_bitwise(tmp_path):
    pytest.importorskip("torch")
    from layerinv.reproduction.train import save_compact

    net = mnist_generator("conv")
    buffer = io.BytesIO()
    net.save(buffer)
    buffer.seek(0)
    path = tmp_path / "again.npz"
    path.write_bytes(buffer.getvalue())
    for back in (Network.load(path), _compact_copy(net, tmp_path / "compact.npz", save_compact)):
        for a, b in zip(back.layers, net.layers, strict=True):
            assert type(a.operator) is type(b.operator)
            kernel = "kernel" if isinstance(b.operator, Conv2dOperator) else "matrix"
            np.testing.assert_array_equal(_weights(a.operator, kernel), _weights(b.operator,
                                                                                 kernel))
            np.testing.assert_array_equal(a.bias, b.bias)


def _compact_copy(net: Network, path, save_compact) -> Network:
    save_compact(net, path)
    with np.load(path) as data:
        # float32 where that loses nothing: the last kernel, as trained; the first layers
        # have a BatchNorm folded in (in float64), which only float64 holds exactly.
        assert data["kernel_2"].dtype == np.float32 and data["kernel_1"].dtype == np.float64
    return Network.load(path)


def _weights(operator, kind: str) -> np.ndarray:
    return operator.kernel if kind == "kernel" else operator.to_dense()


def test_conv_heldout_reconstruction_is_the_recorded_one():
    """Encoder mean then decoder on the 200 shipped held-out digits, against the JSON's
    figure (random weights give an MSE above 0.1)."""
    digits = mnist_digits().images
    recon = mnist_generator("conv").forward(mnist_encoder("conv")(digits))
    mse = float(np.mean((recon - digits) ** 2))
    recorded = mnist_metadata("conv")["heldout_reconstruction"]["mse_mean"]
    assert abs(mse - recorded) <= HELDOUT_MSE_SLACK * recorded
    # Better than the paper's 20 x 60 x 784 decoder on the same digits.
    relu = mnist_generator("relu").forward(mnist_encoder("relu")(digits))
    assert mse < float(np.mean((relu - digits) ** 2))


def test_training_a_tiny_conv_vae_writes_loadable_files(tmp_path):
    pytest.importorskip("torch")
    from test_mnist import _cli

    digits = mnist_digits()
    grey = np.round(digits.images * 255).astype(np.uint8).reshape(-1, 28, 28)
    data = tmp_path / "few.npz"
    np.savez(data, images=np.concatenate([grey, grey[:100]]),
             labels=np.concatenate([digits.labels, digits.labels[:100]]))  # 300 digits
    out = tmp_path / "out"
    assert _cli(["train-mnist", "--data", str(data), "--out", str(out), "--kind", "conv",
                 "--epochs", "2", "--heldout", "50", "--ship", "10", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "mnist_conv.json", "mnist_conv_decoder.npz", "mnist_conv_encoder.npz",
        "mnist_heldout_digits.npz"]
    net = mnist_generator("conv", directory=out)
    assert [type(layer.operator) for layer in net.layers] == [kind for kind, *_ in CONV_LAYERS]
    assert [layer.activation.name for layer in net.layers] == ["relu"] * 3
    assert net.layers[1].operator.output_shape == (16, 14, 14)
    assert mnist_encoder("conv", directory=out)(np.zeros(784)).shape == (20,)
    meta = mnist_metadata("conv", directory=out)
    assert meta["epochs"] == 2 and len(meta["history"]) == 2 and meta["decoder_bias"] is True
    assert meta["data"]["training_digits"] == 250 and np.isfinite(meta["final"]["loss"])
    assert np.isfinite(meta["heldout_reconstruction"]["mse_mean"])


def test_train_mnist_kind_groups():
    from layerinv.cli.mnist import TRAIN_GROUPS

    assert TRAIN_GROUPS == {"both": PAPER_KINDS, "all": KINDS}
    pytest.importorskip("torch")
    from layerinv.reproduction.train import train_vae

    with pytest.raises(InputError, match=r"kind must be one of 'relu', 'leaky_relu', 'conv'"):
        train_vae(np.zeros((4, 784)), "conv2d", epochs=1)
