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
