"""PyTorch conversion: modules both ways, state dicts and checkpoint files (safe loading)."""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerinv.activations import Identity, LeakyReLU, ReLU, Sigmoid, Tanh  # noqa: E402
from layerinv.errors import (  # noqa: E402
    DefaultSlopeWarning,
    InputError,
    NetworkFileError,
    UnsupportedLayerError,
)
from layerinv.network import Network, random_network  # noqa: E402

# The conversions through the public API (the module functions became private).
network_from_module = Network.from_torch
network_from_state_dict = Network.from_state_dict
network_to_module = Network.to_torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _torch_forward(module: nn.Module, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.as_tensor(z, dtype=torch.float32)).numpy().astype(np.float64)


class _Model(nn.Module):
    """A model with an encoder fc1, fc2 and a decoder fc3, fc4, as in a trained VAE."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 8)
        self.fc2 = nn.Linear(8, 3)
        self.fc3 = nn.Linear(3, 7)
        self.fc4 = nn.Linear(7, 12, bias=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc4(torch.relu(self.fc3(z))))


class _Mkdir:
    """Unpickling this runs os.mkdir(path): a harmless stand-in for os.system('...')."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# --------------------------------------------------------------------- Network -> module
@pytest.mark.parametrize(("activation", "output", "bias"), [
    ("relu", None, False),
    ("relu", "sigmoid", True),
    (LeakyReLU(0.2), "identity", True),
    ("tanh", "tanh", False),
])
def test_to_torch_forward_matches_network(activation, output, bias) -> None:
    net = random_network([5, 20, 40], activation, output_activation=output, bias=bias, seed=1)
    module = net.to_torch()
    z = np.random.default_rng(2).normal(size=(16, 5))
    expected = net.forward(z)
    got = _torch_forward(module, z)
    assert next(module.parameters()).dtype == torch.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_round_trip_keeps_weights_and_activations() -> None:
    net = random_network([4, 9, 15, 30], LeakyReLU(0.1), output_activation="identity",
                         bias=True, seed=3)
    back = network_from_module(network_to_module(net))
    assert back.widths == net.widths
    for before, after in zip(net.layers, back.layers, strict=True):
        assert after.activation == before.activation
        assert after.weight.dtype == np.float64
        np.testing.assert_allclose(after.weight, before.weight, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(after.bias, before.bias, rtol=1e-6, atol=1e-7)


def test_round_trip_without_bias_keeps_none() -> None:
    net = random_network([3, 6], "sigmoid", seed=4)
    module = network_to_module(net)
    assert module[0].bias is None
    assert network_from_module(module).layers[0].bias is None


def test_to_torch_refuses_unknown_activation() -> None:
    class Custom(ReLU):
        name = "custom"

    net = random_network([2, 3], Custom(), seed=0)
    with pytest.raises(UnsupportedLayerError, match="custom"):
        network_to_module(net)


# --------------------------------------------------------------------- module -> Network
def test_from_torch_hand_built_image_decoder() -> None:
    module = nn.Sequential(
        nn.Flatten(),
        nn.Linear(4, 8),
        nn.LeakyReLU(0.2),
        nn.Linear(8, 6, bias=False),
        nn.Sigmoid(),
        nn.Unflatten(1, (1, 2, 3)),
    )
    net = Network.from_torch(module)
    assert net.widths == [4, 8, 6]
    assert net.layers[0].activation == LeakyReLU(0.2)
    assert net.layers[1].activation == Sigmoid()
    assert net.layers[1].bias is None
    np.testing.assert_array_equal(net.layers[1].weight, module[3].weight.detach().double())
    z = np.random.default_rng(5).normal(size=(10, 4))
    image = _torch_forward(module, z.reshape(10, 2, 2))
    assert image.shape == (10, 1, 2, 3)
    np.testing.assert_allclose(net.forward(z), image.reshape(10, 6), rtol=1e-5, atol=1e-6)


def test_linear_without_activation_is_identity() -> None:
    module = nn.Sequential(nn.Linear(2, 5), nn.Identity(), nn.Linear(5, 7), nn.Tanh(),
                           nn.Linear(7, 3))
    net = network_from_module(module)
    assert [layer.activation for layer in net.layers] == [Identity(), Tanh(), Identity()]
    z = np.random.default_rng(6).normal(size=(4, 2))
    np.testing.assert_allclose(net.forward(z), _torch_forward(module, z), rtol=1e-5, atol=1e-6)


def test_nested_sequential_is_flattened() -> None:
    module = nn.Sequential(nn.Sequential(nn.Linear(3, 6), nn.ReLU()),
                           nn.Sequential(nn.Sequential(nn.Linear(6, 9)), nn.Tanh()))
    net = network_from_module(module)
    assert net.widths == [3, 6, 9]
    assert [layer.activation for layer in net.layers] == [ReLU(), Tanh()]


def test_single_linear_is_one_identity_layer() -> None:
    net = network_from_module(nn.Linear(3, 4))
    assert net.widths == [3, 4]
    assert net.layers[0].activation == Identity()


def test_leaky_relu_slope_zero_is_relu() -> None:
    net = network_from_module(nn.Sequential(nn.Linear(2, 3), nn.LeakyReLU(0.0)))
    assert net.layers[0].activation == ReLU()


def test_leaky_relu_negative_slope_refused() -> None:
    with pytest.raises(UnsupportedLayerError, match="negative_slope"):
        network_from_module(nn.Sequential(nn.Linear(2, 3), nn.LeakyReLU(-0.5)))


@pytest.mark.parametrize("bad", [nn.MaxPool2d(2), nn.Conv1d(1, 1, 3), nn.Softmax(dim=1),
                                 nn.LayerNorm(5)])
def test_unsupported_module_named_with_index(bad) -> None:
    module = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), bad, nn.Linear(5, 2))
    with pytest.raises(UnsupportedLayerError) as info:
        network_from_module(module)
    message = str(info.value)
    assert type(bad).__name__ in message
    assert "index 2" in message
    assert "Linear" in message and "LeakyReLU" in message and "ConvTranspose2d" in message


@pytest.mark.parametrize("bad", [nn.Dropout(0.1), nn.BatchNorm1d(5)])
def test_dropout_and_batch_norm_in_training_mode_are_refused_with_the_eval_hint(bad) -> None:
    module = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), bad, nn.Linear(5, 2))
    with pytest.raises(UnsupportedLayerError, match=rf"^{type(bad).__name__} at index 2 is in "
                                                    r"training mode.*call module\.eval\(\)"):
        network_from_module(module)
    module.eval()
    net = network_from_module(module)
    z = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_allclose(net(z), _torch_forward(module, z), rtol=1e-5, atol=1e-6)


def test_unsupported_module_in_nested_sequential_named_with_path() -> None:
    module = nn.Sequential(OrderedDict(
        enc=nn.Sequential(nn.Linear(3, 5), nn.ReLU()),
        dec=nn.Sequential(nn.Linear(5, 2), nn.Dropout()),
    ))
    with pytest.raises(UnsupportedLayerError, match=r"Dropout at index dec\.1"):
        network_from_module(module)


def test_activation_before_linear_refused() -> None:
    with pytest.raises(UnsupportedLayerError, match="ReLU at index 0"):
        network_from_module(nn.Sequential(nn.ReLU(), nn.Linear(3, 4)))


def test_two_activations_in_a_row_refused() -> None:
    with pytest.raises(UnsupportedLayerError, match="Tanh at index 2"):
        network_from_module(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Tanh()))


def test_reshapes_anywhere_follow_the_shape() -> None:
    module = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3)), nn.Flatten(),
                           nn.Linear(6, 4))
    net = network_from_module(module)
    assert net.widths == [4, 6, 4]
    z = np.random.default_rng(1).normal(size=(3, 4))
    np.testing.assert_allclose(net(z), _torch_forward(module, z), rtol=1e-5, atol=1e-6)
    with pytest.raises(UnsupportedLayerError, match=r"^Linear at index 1 takes a flat input but "
                                                    r"gets shape \(2, 2\); add nn.Flatten"):
        network_from_module(nn.Sequential(nn.Unflatten(1, (2, 2)), nn.Linear(2, 2)))


def test_non_sequential_module_refused() -> None:
    with pytest.raises(UnsupportedLayerError, match="_Model"):
        network_from_module(_Model())
    with pytest.raises(InputError, match="dict"):
        network_from_module({"fc.weight": torch.ones(2, 2)})


def test_empty_sequential_refused() -> None:
    with pytest.raises(UnsupportedLayerError, match="no Linear"):
        network_from_module(nn.Sequential(nn.Flatten()))
    with pytest.raises(UnsupportedLayerError, match="no Linear"):
        network_from_module(nn.Sequential(nn.Dropout().eval()))


# --------------------------------------------------------------------- state dicts
def _check_decoder(net: Network, model: _Model) -> None:
    assert net.widths == [3, 7, 12]
    assert [layer.activation for layer in net.layers] == [ReLU(), Sigmoid()]
    assert net.layers[1].bias is None
    np.testing.assert_array_equal(net.layers[0].weight, model.fc3.weight.detach().double())
    z = np.random.default_rng(7).normal(size=(5, 3))
    with torch.no_grad():
        expected = model.decode(torch.as_tensor(z, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(net.forward(z), expected, rtol=1e-5, atol=1e-6)


def test_from_state_dict_file(tmp_path) -> None:
    model = _Model()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    net = Network.from_state_dict(path, layers=["fc3", "fc4"], activations=["relu", "sigmoid"])
    _check_decoder(net, model)
    again = network_from_state_dict(str(path), layers=["fc3", "fc4"],
                                    activations=[ReLU(), "sigmoid"])
    np.testing.assert_array_equal(again.layers[1].weight, net.layers[1].weight)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict"])
def test_from_checkpoint_file_with_nested_state_dict(tmp_path, key) -> None:
    model = _Model()
    path = tmp_path / "checkpoint.pt"
    torch.save({key: model.state_dict(), "epoch": 12, "loss": 0.5}, path)
    net = network_from_state_dict(path, layers=["fc3", "fc4"], activations=["relu", "sigmoid"])
    _check_decoder(net, model)


def test_from_in_memory_dicts() -> None:
    model = _Model()
    for state in (model.state_dict(), {"state_dict": model.state_dict(), "epoch": 1}):
        net = network_from_state_dict(state, layers=["fc3", "fc4"],
                                      activations=["relu", "sigmoid"])
        _check_decoder(net, model)


def test_a_leaky_relu_checkpoint_loaded_by_name_keeps_its_slope(tmp_path) -> None:
    decoder = nn.Sequential(nn.Linear(3, 7), nn.LeakyReLU(0.1), nn.Linear(7, 12),
                            nn.LeakyReLU(0.1))
    path = tmp_path / "leaky.pt"
    torch.save(decoder.state_dict(), path)
    z = np.random.default_rng([3, 5]).normal(size=(4, 3)) * 3  # negative units present
    for name in ("leaky_relu(0.1)", str(nn.LeakyReLU(0.1))):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the slope is named: no DefaultSlopeWarning
            net = Network.from_state_dict(path, layers=["0", "2"], activations=[name] * 2)
        assert [layer.activation for layer in net.layers] == [LeakyReLU(0.1)] * 2
        np.testing.assert_allclose(net.forward(z), _torch_forward(decoder, z), rtol=1e-5,
                                   atol=1e-6)
    # A bare name means PyTorch's default slope 0.01, and says so.
    with pytest.warns(DefaultSlopeWarning, match="using 0.01"):
        net = Network.from_state_dict(path, layers=["0", "2"], activations=["leaky_relu"] * 2)
    assert net.layers[0].activation == LeakyReLU(0.01)


def test_state_dict_any_float_dtype_becomes_float64() -> None:
    state = {"a.weight": torch.ones(3, 2, dtype=torch.float16),
             "a.bias": torch.zeros(3, dtype=torch.bfloat16)}
    net = network_from_state_dict(state, layers=["a"], activations=["tanh"])
    assert net.layers[0].weight.dtype == np.float64
    assert net.layers[0].bias.dtype == np.float64


def test_malicious_checkpoint_refused_without_running_code(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc3.weight": torch.ones(2, 2), "payload": _Mkdir(str(marker))}, path)
    with pytest.raises(NetworkFileError) as info:
        network_from_state_dict(path, layers=["fc3"], activations=["relu"])
    message = str(info.value)
    assert "refused for safety" in message
    assert "weights_only=True" in message
    assert str(path) in message
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_checkpoint(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_Model().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NetworkFileError, match="not a readable PyTorch checkpoint"):
        network_from_state_dict(path, layers=["fc3"], activations=["relu"])


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04junk", b"just some text"])
def test_garbage_checkpoint(tmp_path, content) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(NetworkFileError, match=r"garbage\.pt"):
        network_from_state_dict(path, layers=["fc3"], activations=["relu"])


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "nowhere.pt"
    with pytest.raises(NetworkFileError, match="does not exist") as info:
        network_from_state_dict(path, layers=["fc3"], activations=["relu"])
    assert str(path) in str(info.value)


def test_checkpoint_that_is_not_a_dict(tmp_path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(NetworkFileError, match="Tensor, not a state dict"):
        network_from_state_dict(path, layers=["fc3"], activations=["relu"])


def test_missing_key_named_with_available_keys(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_Model().state_dict(), path)
    with pytest.raises(NetworkFileError, match=r"'decoder\.weight'") as info:
        network_from_state_dict(path, layers=["fc3", "decoder"], activations=["relu", "relu"])
    assert "'fc1.weight'" in str(info.value)
    with pytest.raises(InputError, match=r"'fc9\.weight'"):
        network_from_state_dict(_Model().state_dict(), layers=["fc9"], activations=["relu"])


def test_available_key_list_is_truncated() -> None:
    state = {f"layer{i}.weight": torch.ones(1, 1) for i in range(100)}
    with pytest.raises(InputError, match=r"\(80 more\)") as info:
        network_from_state_dict(state, layers=["fc"], activations=["relu"])
    assert "layer99" not in str(info.value)


def test_layers_that_do_not_chain(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_Model().state_dict(), path)
    with pytest.raises(NetworkFileError, match="takes 7 inputs"):
        network_from_state_dict(path, layers=["fc2", "fc4"], activations=["relu", "relu"])


def test_length_mismatch() -> None:
    with pytest.raises(InputError, match="layers has 2 entries but activations has 1"):
        network_from_state_dict(_Model().state_dict(), layers=["fc3", "fc4"],
                                activations=["relu"])


@pytest.mark.parametrize(("layers", "activations"), [
    ("fc3", ["relu"]),
    (["fc3"], "relu"),
    ([], []),
])
def test_bad_layer_specs(layers, activations) -> None:
    with pytest.raises(InputError):
        network_from_state_dict(_Model().state_dict(), layers=layers, activations=activations)


def test_unknown_activation_name() -> None:
    with pytest.raises(InputError, match="swish"):
        network_from_state_dict(_Model().state_dict(), layers=["fc3"], activations=["swish"])


def test_state_of_wrong_type() -> None:
    with pytest.raises(InputError, match="path or a state dict"):
        network_from_state_dict(42, layers=["fc3"], activations=["relu"])


# --------------------------------------------------------------------- convolutional networks
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from layerinv.convolution import Conv2dOperator  # noqa: E402
from layerinv.operators import DenseOperator, ProductOperator  # noqa: E402


def _batch_norm(channels: int, kind=nn.BatchNorm2d, affine: bool = True) -> nn.Module:
    """A batch norm with random running statistics and affine parameters, in eval mode."""
    norm = kind(channels, affine=affine)
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.3, 3.0)
        if affine:
            norm.weight.normal_()
            norm.bias.normal_()
    return norm.eval()


def _forward64(module: nn.Module, z: np.ndarray, input_shape=None) -> np.ndarray:
    with torch.no_grad():
        x = torch.tensor(z if input_shape is None else z.reshape(len(z), *input_shape))
        return module(x).reshape(len(z), -1).numpy()


@st.composite
def _conv_stacks(draw):
    """An eval-mode float64 Sequential of one or two convolutions (either kind, random
    geometry), each maybe followed by a batch norm with random statistics and an activation,
    and the input shape it takes."""
    channels, side = draw(st.integers(1, 3)), (draw(st.integers(2, 5)), draw(st.integers(2, 5)))
    shape = (channels, *side)
    modules = []
    for _ in range(draw(st.integers(1, 2))):
        c_out = draw(st.integers(1, 3))
        k, s = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        d, p = draw(st.integers(1, 2)), draw(st.integers(0, 1))
        if draw(st.booleans()):
            conv = nn.ConvTranspose2d(shape[0], c_out, k, s, p,
                                      output_padding=draw(st.integers(0, max(s, d) - 1)),
                                      dilation=d, bias=draw(st.booleans()))
        else:
            conv = nn.Conv2d(shape[0], c_out, k, s, p, dilation=d, bias=draw(st.booleans()))
        try:
            with torch.no_grad():
                out = conv.double()(torch.zeros((1, *shape), dtype=torch.float64))
        except RuntimeError:  # an empty output
            break
        if out.numel() == 0:
            break
        modules.append(conv)
        if draw(st.booleans()):
            modules.append(_batch_norm(c_out, affine=draw(st.booleans())))
        if draw(st.booleans()):
            modules.append(draw(st.sampled_from([nn.ReLU(), nn.LeakyReLU(0.2), nn.Tanh()])))
        shape = tuple(out.shape[1:])
    from hypothesis import assume
    assume(modules)
    return nn.Sequential(*modules).double().eval(), (channels, *side)


@settings(max_examples=60, deadline=None)
@given(_conv_stacks(), st.integers(0, 2**32 - 1))
def test_random_conv_stacks_match_pytorch_and_round_trip(case, seed) -> None:
    module, input_shape = case
    net = Network.from_torch(module, input_shape=input_shape)
    z = np.random.default_rng(seed).normal(size=(3, net.input_dim))
    expected = _forward64(module, z, input_shape)
    np.testing.assert_allclose(net(z), expected, rtol=0, atol=1e-10)
    assert all(isinstance(layer.operator, Conv2dOperator) for layer in net.layers)
    back = net.to_torch(torch.float64)  # flat in, flat out
    assert any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in back.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in back.modules())  # folded
    np.testing.assert_allclose(_forward64(back, z), expected, rtol=0, atol=1e-10)
    again = Network.from_torch(back)
    assert again.widths == net.widths
    np.testing.assert_allclose(again(z), expected, rtol=0, atol=1e-10)


def test_an_mnist_dcgan_generator_imports_with_batch_norms_folded() -> None:
    torch.manual_seed(1)
    module = nn.Sequential(
        nn.Linear(10, 128 * 7 * 7), nn.Unflatten(1, (128, 7, 7)), _batch_norm(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), _batch_norm(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),
    ).double().eval()
    net = Network.from_torch(module)
    assert net.widths == [10, 128 * 49, 64 * 196, 784]
    assert [repr(layer.activation) for layer in net.layers] == ["relu", "relu", "tanh"]
    kinds = [type(layer.operator) for layer in net.layers]
    assert kinds == [DenseOperator, Conv2dOperator, Conv2dOperator]
    z = np.random.default_rng(2).normal(size=(4, 10))
    np.testing.assert_allclose(net(z), _forward64(module, z), rtol=0, atol=1e-10)
    back = net.to_torch()  # float32 by default, as before
    assert next(back.parameters()).dtype == torch.float32
    assert [type(m).__name__ for m in back] == [
        "Linear", "ReLU", "Unflatten", "ConvTranspose2d", "ReLU", "ConvTranspose2d", "Tanh",
        "Flatten"]


def test_batch_norm_1d_after_an_activation_folds_into_the_next_linear() -> None:
    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), _batch_norm(6, nn.BatchNorm1d),
                           nn.Dropout(0.5), nn.Linear(6, 5), nn.Sigmoid()).double().eval()
    net = Network.from_torch(module)
    assert net.widths == [4, 6, 5] and len(net.layers) == 2
    z = np.random.default_rng(4).normal(size=(5, 4))
    np.testing.assert_allclose(net(z), _forward64(module, z), rtol=0, atol=1e-12)


def test_upsampling_pooling_and_bias_compose_into_one_layer_and_round_trip() -> None:
    torch.manual_seed(5)
    module = nn.Sequential(
        nn.ConvTranspose2d(4, 6, 3, 1, 0), nn.ReLU(),
        nn.Upsample(scale_factor=2), nn.Conv2d(6, 3, 3, 1, 1), nn.AvgPool2d(2, padding=1),
        _batch_norm(3), nn.LeakyReLU(0.1),
        nn.UpsamplingNearest2d(scale_factor=3), nn.Conv2d(3, 2, 1), nn.Flatten(),
        nn.Linear(2 * 12 * 12, 7),
    ).double().eval()
    net = Network.from_torch(module, input_shape=(4, 1, 1))
    assert [repr(layer.activation) for layer in net.layers] == [
        "relu", "leaky_relu(0.1)", "identity", "identity"]
    assert isinstance(net.layers[1].operator, ProductOperator)  # upsample, conv, pool: one
    z = np.random.default_rng(6).normal(size=(3, 4))
    expected = _forward64(module, z, (4, 1, 1))
    np.testing.assert_allclose(net(z), expected, rtol=0, atol=1e-10)
    back = net.to_torch(torch.float64)
    names = [type(m).__name__ for m in back]
    assert names.count("Upsample") == 2 and names.count("AvgPool2d") == 1  # kept as such
    np.testing.assert_allclose(_forward64(back, z), expected, rtol=0, atol=1e-10)
    again = Network.from_torch(back)
    assert again.widths == net.widths
    np.testing.assert_allclose(again(z), expected, rtol=0, atol=1e-10)


def test_a_conv_network_starts_from_input_shape_or_says_it_needs_one() -> None:
    module = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()).double().eval()
    with pytest.raises(UnsupportedLayerError,
                       match=r"^Conv2d at index 0 needs its input image's shape: pass "
                             r"input_shape=\(C, H, W\)"):
        Network.from_torch(module)
    net = Network.from_torch(module, input_shape=(2, 5, 4))
    assert net.widths == [40, 3 * 3 * 2]
    single = Network.from_torch(nn.ConvTranspose2d(2, 1, 2).double(), input_shape=(2, 3, 3))
    assert single.widths == [18, 16]
    for bad in ((2, 0, 4), "abc", (2.5, 3, 3)):
        with pytest.raises(InputError, match=r"^input_shape must be"):
            Network.from_torch(module, input_shape=bad)


@pytest.mark.parametrize(("modules", "message"), [
    ([nn.Linear(3, 8), nn.ReLU(), nn.Conv2d(2, 2, 1)],
     r"^Conv2d at index 2 takes an image \(C, H, W\) but gets shape \(8,\); put nn.Unflatten"),
    ([nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(3, 2, 1)],
     r"^Conv2d at index 1 takes 3 channels but gets shape \(2, 2, 2\)"),
    ([nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(2, 2, 1, groups=2)], r"groups=2 \(only groups=1\)"),
    ([nn.Unflatten(1, (2, 4, 4)), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")],
     r"padding_mode='reflect'"),
    ([nn.Unflatten(1, (2, 4, 4)), nn.Conv2d(2, 2, 2, padding="same")], r"padding='same'"),
    ([nn.Unflatten(1, (2, 2, 2)), nn.Upsample(scale_factor=2, mode="bilinear")],
     r"mode='bilinear' \(only 'nearest'\)"),
    ([nn.Unflatten(1, (2, 2, 2)), nn.Upsample(scale_factor=1.5)], r"only integer scale"),
    ([nn.Unflatten(1, (2, 3, 3)), nn.AvgPool2d(2, ceil_mode=True)], r"ceil_mode=True"),
    ([nn.Unflatten(1, (2, 3, 3)), nn.AvgPool2d(2, padding=1, count_include_pad=False)],
     r"count_include_pad=False"),
    ([nn.Unflatten(1, (2, 2, 2)), nn.BatchNorm2d(2, track_running_stats=False)],
     r"has no running statistics"),
    ([nn.Linear(3, 8), nn.BatchNorm2d(8)], r"takes inputs of shape \(C, H, W\) with C = 8"),
    ([nn.Unflatten(1, (2, 2, 2)), nn.ConvTranspose2d(2, 2, 2, groups=2)], r"groups=2"),
])
def test_unsupported_convolution_settings_are_named_with_their_index(modules, message) -> None:
    module = nn.Sequential(*modules).eval()
    with pytest.raises(UnsupportedLayerError, match=message) as info:
        Network.from_torch(module)
    assert "\n" not in str(info.value) and "index" in str(info.value)


def test_to_torch_of_a_sparse_factor_and_a_non_channel_bias() -> None:
    """A per-entry scale on a convolution's output (BatchNorm1d after a Flatten) stays a
    diagonal factor; a bias that varies inside a channel goes into a Bias module."""
    torch.manual_seed(7)
    module = nn.Sequential(nn.Unflatten(1, (2, 3, 3)), nn.Conv2d(2, 2, 2, bias=False),
                           nn.Flatten(), _batch_norm(8, nn.BatchNorm1d), nn.ReLU()).double()
    net = Network.from_torch(module.eval())
    assert isinstance(net.layers[0].operator, ProductOperator)
    z = np.random.default_rng(8).normal(size=(3, 18))
    expected = _forward64(module, z)
    np.testing.assert_allclose(net(z), expected, rtol=0, atol=1e-12)
    back = net.to_torch(torch.float64)
    names = [type(m).__name__ for m in back]
    assert "Conv2d" in names and "Linear" in names  # the diagonal: a dense export
    np.testing.assert_allclose(_forward64(back, z), expected, rtol=0, atol=1e-12)
    bias = np.random.default_rng(9).normal(size=8)
    from layerinv.layers import Layer
    layer = net.layers[0]
    conv = Network([Layer(layer.operator.factors[1], bias, "relu")])
    module = conv.to_torch(torch.float64)
    assert [type(m).__name__ for m in module] == ["Unflatten", "Conv2d", "Bias", "ReLU",
                                                  "Flatten"]
    np.testing.assert_allclose(_forward64(module, z), conv(z), rtol=0, atol=1e-12)
    np.testing.assert_allclose(Network.from_torch(module)(z), conv(z), rtol=0, atol=1e-12)
