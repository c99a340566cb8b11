"""Networks: forward pass, random nets, validation, and .npz files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import layerinv
from layerinv import InputError, Layer, Network, NetworkFileError, random_network


def test_forward_single_and_batch_agree():
    net = random_network([5, 20, 60], seed=0, bias=True)
    z = np.random.default_rng(0).normal(size=(4, 5))
    batch = net(z)
    assert batch.shape == (4, 60)
    np.testing.assert_allclose(net(z[2]), batch[2])
    _, hidden = net.forward(z, return_hidden=True)
    assert [h.shape[1] for h in hidden] == [5, 20, 60]
    assert np.all(hidden[1] >= 0)


def test_random_network_follows_the_paper_scale():
    net = random_network([50, 400, 1000], seed=1)
    for layer in net.layers:
        assert abs(layer.weight.std() * np.sqrt(layer.n_out) - 1) < 0.02
        assert layer.bias is None
    assert random_network([3, 9], seed=4).layers[0].weight.tolist() == \
        random_network([3, 9], seed=4).layers[0].weight.tolist()


def test_output_activation():
    net = random_network([4, 8, 16], "relu", output_activation="sigmoid", seed=0)
    assert [layer.activation.name for layer in net.layers] == ["relu", "sigmoid"]


def test_layers_must_chain():
    a = Layer(np.ones((6, 3)), None, "relu")
    b = Layer(np.ones((10, 5)), None, "relu")
    with pytest.raises(InputError, match=r"layers\[1\] takes 5 inputs but layers\[0\] gives 6"):
        Network([a, b])


@pytest.mark.parametrize(
    ("weight", "bias", "message"),
    [
        (np.ones(3), None, "weight must be a non-empty 2-D array"),
        (np.full((3, 2), np.nan), None, "weight must be finite; found NaN"),
        (np.ones((3, 2)), np.ones(2), r"bias must have shape \(3,\)"),
    ],
)
def test_layer_validation(weight, bias, message):
    with pytest.raises(InputError, match=message):
        Layer(weight, bias, "relu")


@pytest.mark.parametrize(
    ("z", "message"),
    [
        (np.ones(4), r"z must have 5 entries per sample"),
        (np.ones((2, 3, 5)), r"z must have shape \(5,\) or \(batch, 5\)"),
        (np.array([1, 2, np.inf, 4, 5.0]), "z must be finite; found Inf at index"),
        ("abc", "z must be a numeric array"),
    ],
)
def test_forward_rejects_bad_latents(z, message):
    with pytest.raises(InputError, match=message):
        random_network([5, 10], seed=0)(z)


def test_save_load_round_trip(tmp_path):
    net = random_network([4, 12, 30], layerinv.LeakyReLU(0.2), output_activation="tanh",
                         bias=True, seed=3)
    path = tmp_path / "net.npz"
    net.save(path)
    loaded = Network.load(path)
    assert loaded.widths == net.widths
    assert [repr(layer.activation) for layer in loaded.layers] == ["leaky_relu(0.2)", "tanh"]
    z = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_array_equal(loaded(z), net(z))


def test_load_rejects_a_file_that_is_not_a_network(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(NetworkFileError, match="is not a layerinv network"):
        Network.load(path)


def test_load_rejects_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "net.npz"
    random_network([4, 12, 30], seed=3).save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(NetworkFileError, match=r"truncated\.npz"):
        Network.load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00\x01 not a zip at all" * 10)
    with pytest.raises(NetworkFileError, match=r"not a readable layerinv \.npz network"):
        Network.load(garbage)
    with pytest.raises(NetworkFileError, match="does not exist"):
        Network.load(tmp_path / "missing.npz")


def test_load_refuses_pickled_object_arrays(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, format=np.array("layerinv-network"), version=np.array(1),
             n_layers=np.array(1), weight_0=np.array([object()], dtype=object))
    with pytest.raises(NetworkFileError):
        Network.load(path)


def test_load_rejects_inconsistent_layers(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, format=np.array("layerinv-network"), version=np.array(1),
             n_layers=np.array(2), weight_0=np.ones((6, 3)), activation_0=np.array("relu"),
             slope_0=np.array(0.0), weight_1=np.ones((4, 5)), activation_1=np.array("relu"),
             slope_1=np.array(0.0))
    with pytest.raises(NetworkFileError, match="takes 5 inputs"):
        Network.load(path)


def test_load_names_a_npy_file_given_as_a_network(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones(3))
    with pytest.raises(NetworkFileError, match=r"'.*x\.npy' is a \.npy array, not a layerinv"):
        Network.load(path)
    with pytest.raises(NetworkFileError, match="is a folder"):
        Network.load(tmp_path)


def test_save_writes_to_an_open_file(tmp_path):
    net = random_network([4, 12, 30], seed=3)
    with open(tmp_path / "n.npz", "wb") as handle:
        net.save(handle)
    z = np.ones(4)
    np.testing.assert_array_equal(Network.load(tmp_path / "n.npz")(z), net(z))


def test_load_reads_version_1_files_with_a_bare_name_and_its_slope(tmp_path):
    """Version 1 stored `activation_i` without parameters and the slope in `slope_i`."""
    rng = np.random.default_rng(0)
    w0, w1, b1 = rng.normal(size=(6, 3)), rng.normal(size=(4, 6)), rng.normal(size=4)
    path = tmp_path / "v1.npz"
    np.savez(path, format=np.array("layerinv-network"), version=np.array(1),
             n_layers=np.array(2), weight_0=w0, activation_0=np.array("leaky_relu"),
             slope_0=np.array(0.2), weight_1=w1, bias_1=b1, activation_1=np.array("relu"),
             slope_1=np.array(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the slope is stored: no DefaultSlopeWarning
        net = Network.load(path)
    assert [repr(layer.activation) for layer in net.layers] == ["leaky_relu(0.2)", "relu"]
    z = rng.normal(size=3)
    hidden = np.where(w0 @ z >= 0, w0 @ z, 0.2 * (w0 @ z))
    np.testing.assert_allclose(net(z), np.maximum(w1 @ hidden + b1, 0), rtol=1e-12)
    net.save(tmp_path / "v2.npz")  # written back in the current format, same network
    np.testing.assert_array_equal(Network.load(tmp_path / "v2.npz")(z), net(z))


def test_load_refuses_a_file_of_a_newer_version(tmp_path):
    path = tmp_path / "future.npz"
    np.savez(path, format=np.array("layerinv-network"), version=np.array(99),
             n_layers=np.array(0))
    with pytest.raises(NetworkFileError, match="newer layerinv"):
        Network.load(path)


def test_a_layer_is_immutable_and_pickles_as_its_constructor_call():
    """Layer was a frozen dataclass; it stays immutable (setattr refused) and pickles back to
    an equal layer (worker processes receive networks by pickle)."""
    import pickle

    layer = random_network([3, 5], seed=0).layers[0]
    with pytest.raises(AttributeError, match="immutable"):
        layer.bias = None
    back = pickle.loads(pickle.dumps(layer))
    assert np.array_equal(back.weight, layer.weight) and back.activation == layer.activation
    assert (back.n_in, back.n_out) == (3, 5)


# --------------------------------------------------------------------- structured operators
def _conv_network():
    """A network of every operator kind: a transposed convolution, a product (upsampling,
    convolution, diagonal), a sparse layer and a dense one."""
    import scipy.sparse

    from layerinv.convolution import Conv2dOperator
    from layerinv.operators import ProductOperator, SparseOperator

    rng = np.random.default_rng(0)
    first = Conv2dOperator(rng.normal(size=(4, 3, 3, 3)), (4, 2, 2), stride=2, padding=1,
                           output_padding=1, dilation=(1, 2), transposed=True)
    up = Conv2dOperator(np.eye(3)[:, :, None, None] * np.ones((1, 1, 2, 2)), first.output_shape,
                        stride=2, transposed=True)
    conv = Conv2dOperator(rng.normal(size=(2, 3, 3, 3)), up.output_shape, padding=1)
    middle = ProductOperator([SparseOperator.diagonal(rng.normal(size=conv.n_out)), conv, up])
    sparse = SparseOperator(scipy.sparse.random_array((30, middle.n_out), density=0.1,
                                                      random_state=1, format="csr"))
    layers = [Layer(first, rng.normal(size=first.n_out), layerinv.LeakyReLU(0.2)),
              Layer(middle, None, "relu"),
              Layer(sparse, rng.normal(size=30), "tanh"),
              Layer(rng.normal(size=(5, 30)), None, "identity")]
    return Network(layers)


def test_structured_operators_save_by_their_parameters_and_load_bitwise(tmp_path):
    from layerinv.convolution import Conv2dOperator

    net = _conv_network()
    path = tmp_path / "conv.npz"
    net.save(path)
    with np.load(path) as data:
        assert int(data["version"]) == 3
        assert data["kernel_0"].shape == (4, 3, 3, 3)  # the kernel, not the matrix
        assert "weight_0" not in data.files and "weight_3" in data.files
        assert data["geometry_0"].dtype == np.int64
    back = Network.load(path)
    for a, b in zip(net.layers, back.layers, strict=True):
        assert type(a.operator) is type(b.operator) and repr(a.operator) == repr(b.operator)
        assert np.array_equal(a.weight, b.weight)
        assert (a.bias is None and b.bias is None) or np.array_equal(a.bias, b.bias)
    assert isinstance(back.layers[0].operator, Conv2dOperator)
    assert np.array_equal(back.layers[0].operator.kernel, net.layers[0].operator.kernel)
    z = np.random.default_rng(1).normal(size=(3, net.input_dim))
    assert np.array_equal(back(z), net(z))
    # a network of dense layers alone is still a version 2 file, readable by older versions
    random_network([3, 5], seed=0).save(tmp_path / "dense.npz")
    with np.load(tmp_path / "dense.npz") as data:
        assert int(data["version"]) == 2


def _tampered(tmp_path, **changes):
    net = _conv_network()
    net.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"geometry_0": np.arange(11)}, r"layer 0 is invalid: geometry_0 must hold 12 integers"),
    ({"geometry_0": np.ones(12)}, r"geometry_0 must hold 12 integers; got dtype float64"),
    ({"geometry_0": np.array([4, 2, 2, 2, 2, 1, 1, 1, 2, 1, 0, 2])}, r"\(transposed\)"),
    ({"geometry_0": np.array([4, 2, 2, 0, 2, 1, 1, 1, 2, 1, 0, 1])}, r"stride must be"),
    ({"geometry_0": np.array([4, -2, 2, 2, 2, 1, 1, 1, 2, 1, 0, 1])}, r"integers in \[0, "),
    ({"geometry_0": np.array([4, 2**40, 2, 2, 2, 1, 1, 1, 2, 1, 0, 1])}, r"integers in \[0, "),
    ({"geometry_0": np.array([3, 2, 2, 2, 2, 1, 1, 1, 2, 1, 0, 1])}, r"input channels"),
    ({"kernel_0": np.ones((4, 3, 3))}, r"kernel must be a non-empty 4-D"),
    ({"kernel_0": None}, r"layer 0 lacks the entry 'kernel_0'"),
    ({"operator_0": np.array("magic")}, r"operator_0 must be 'conv2d', 'product' or 'sparse'"),
    ({"operator_1_1": np.array("product")}, r"products are not nested"),
    ({"n_factors_1": np.array(10**9)}, r"n_factors_1 is 1000000000, more than"),
    ({"n_factors_1": np.array(2)}, r"takes \d+ inputs but"),
    ({"indices_2": np.full(576, 10**6)}, r"layer 2 is invalid: operator 2 must be a sparse"),
    ({"indices_2": np.ones(576)}, r"integer indices"),
    ({"indices_2": np.ones(18, dtype=np.int64)}, r"operator 2 are inconsistent"),
    ({"data_2": np.full(576, np.nan)}, r"operator 2's entries must be finite"),
    ({"shape_2": np.array([30])}, r"shape_2 must hold 2 integers"),
])
def test_load_refuses_tampered_structured_operators_with_one_clear_error(tmp_path, changes,
                                                                        message):
    path = _tampered(tmp_path, **changes)
    with pytest.raises(NetworkFileError, match=message) as info:
        Network.load(path)
    assert "\n" not in str(info.value) and "bad.npz" in str(info.value)
