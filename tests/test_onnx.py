"""ONNX in and out (layerinv._onnx_io): PyTorch's two exporters, hand-built graphs, refusals.

The reference for every hand-built graph is onnx's own evaluator (onnx.reference), never the
reader under test.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx", reason="the ONNX tests need the [onnx] extra (onnx)")
torch = pytest.importorskip("torch", reason="the exporter tests need PyTorch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from torch import nn  # noqa: E402

from layerinv import Layer, Network, get_activation, random_network  # noqa: E402
from layerinv._onnx_io import layers_from_onnx, layers_to_onnx, model_from_layers  # noqa: E402
from layerinv.errors import (  # noqa: E402
    InputError,
    NetworkFileError,
    UnsupportedLayerError,
)


# --------------------------------------------------------------------------- helpers
def export(module: nn.Module, path, *, dynamo: bool, batch: int = 1,
           dynamic_batch: bool = False, sample: tuple[int, ...] | None = None,
           dtype: torch.dtype = torch.float32) -> str:
    """torch.onnx.export of `module` (float32 unless `dtype`) with either exporter; `sample` is
    one input's shape (default: the first Linear's input size)."""
    if dynamo:
        pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript")
    if sample is None:
        sample = (module[0].in_features if isinstance(module[0], nn.Linear)
                  else module[1].in_features,)
    example = torch.randn(batch, *sample, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = {"input": {0: torch.export.Dim("batch")}} if dynamic_batch else None
            torch.onnx.export(module, (example,), str(path), dynamo=True,
                              dynamic_shapes=shapes, verbose=False)
        else:
            axes = {"z": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["z"],
                              dynamic_axes=axes)
    return str(path)


def torch_forward(module: nn.Module, z: np.ndarray, sample: tuple[int, ...] | None = None,
                  dtype: torch.dtype = torch.float32) -> np.ndarray:
    """The module on flat inputs z (B, n), reshaped to `sample` (one input's shape) first."""
    batch = z if sample is None else z.reshape(len(z), *sample)
    with torch.no_grad():
        out = module(torch.as_tensor(batch, dtype=dtype))
    return out.reshape(len(z), -1).double().numpy()


def reference(model, z: np.ndarray) -> np.ndarray:
    """onnx's reference evaluator on a batch (the input's dtype as the graph declares)."""
    graph_input = model.graph.input[0]
    dtype = helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type)
    (out,) = ReferenceEvaluator(model).run(None, {graph_input.name: z.astype(dtype)})
    return np.asarray(out, dtype=np.float64).reshape(len(z), -1)


def graph_model(nodes, inputs, outputs, inits=(), opset: int = 17):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def value(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def float32_activation(act):
    if act.parameter is None:
        return act
    return get_activation(f"{act.name}({float(np.float32(act.parameter))!r})")


RNG_TAG = 7  # a non-zero tag for this file's seed streams


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([RNG_TAG, seed])


# --------------------------------------------------------------------------- exporters
MODULES = {
    "relu": lambda: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 12), nn.ReLU()),
    "mixed": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5, bias=False),
        nn.LeakyReLU(0.2), nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Sigmoid(),
        nn.Identity(), nn.Unflatten(1, (1, 3))),
    "elu_linear_out": lambda: nn.Sequential(nn.Linear(2, 5), nn.ELU(0.5), nn.Linear(5, 6),
                                            nn.Linear(6, 4), nn.Unflatten(1, (2, 2))),
}


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("kind", sorted(MODULES))
def test_torch_exports_read_back_to_the_same_map(tmp_path, kind, dynamo):
    torch.manual_seed(len(kind))
    module = MODULES[kind]().eval()
    path = export(module, tmp_path / "m.onnx", dynamo=dynamo)
    net = Network(layers_from_onnx(path))
    assert net.to_torch()  # a usable layerinv network
    reference_net = Network.from_torch(module)
    # The file holds float32 parameters: leaky_relu(0.2) is read as float32(0.2).
    assert [layer.activation for layer in net.layers] == [
        float32_activation(layer.activation) for layer in reference_net.layers]
    z = rng(1).normal(size=(20, net.input_dim))
    np.testing.assert_allclose(net.forward(z), torch_forward(module, z), rtol=0, atol=1e-6)
    # float32 weights become float64 exactly.
    for ours, theirs in zip(net.layers, reference_net.layers, strict=True):
        np.testing.assert_array_equal(ours.weight, theirs.weight)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("kind", ["elu_linear_out", "conv_first"])
def test_a_symbolic_batch_axis_is_read(tmp_path, kind, dynamo):
    torch.manual_seed(3)
    module, sample = (MODULES[kind](), None) if kind in MODULES else CONV_MODULES[kind]()
    module = module.eval()
    path = export(module, tmp_path / "m.onnx", dynamo=dynamo, batch=3, dynamic_batch=True,
                  sample=sample)
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param  # the file really has a symbolic batch
    net = Network(layers_from_onnx(path))
    z = rng(2).normal(size=(9, net.input_dim))
    np.testing.assert_allclose(net.forward(z), torch_forward(module, z, sample), rtol=0,
                               atol=1e-6)


def test_a_float64_export_reads_exactly(tmp_path):
    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 3, dtype=torch.float64),),
                          str(tmp_path / "m.onnx"), dynamo=False)
    net = Network(layers_from_onnx(tmp_path / "m.onnx"))
    z = rng(3).normal(size=(6, 3))
    with torch.no_grad():
        expected = module(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(net.forward(z), expected, rtol=0, atol=1e-13)


# --------------------------------------------------------------------------- convolutions
def batch_norm(channels: int, seed: int, kind=nn.BatchNorm2d) -> nn.Module:
    """An eval-mode batch norm with random running statistics and affine parameters."""
    norm = kind(channels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(channels, generator=g))
        norm.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
        norm.weight.copy_(torch.randn(channels, generator=g))
        norm.bias.copy_(torch.randn(channels, generator=g))
    return norm.eval()


def dcgan() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(16, 64 * 4 * 4), nn.Unflatten(1, (64, 4, 4)), batch_norm(64, 1), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), batch_norm(32, 2), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(16, 1, 3, 1, 1), nn.Tanh(), nn.Flatten())


def conv_first() -> nn.Sequential:
    """Input (2, 9, 9): a strided dilated padded Conv2d, a ConvTranspose2d with output
    padding, batch norms before and after an activation, a BatchNorm1d after a Linear (the
    slope 0.125 is exact as the float32 attribute ONNX stores it in)."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), batch_norm(4, 3), nn.LeakyReLU(0.125),
        batch_norm(4, 4), nn.ConvTranspose2d(4, 3, (3, 2), stride=(2, 3), padding=(1, 0),
                                             output_padding=(1, 2)), nn.ELU(),
        nn.Flatten(), nn.Linear(3 * 10 * 16, 6), batch_norm(6, 5, nn.BatchNorm1d), nn.Sigmoid())


def generator(kind: str) -> nn.Sequential:
    from layerinv.pretrained import mnist_generator

    return mnist_generator(kind).to_torch().eval()


CONV_MODULES = {  # name -> (module, one input's shape)
    "mnist_relu": lambda: (generator("relu"), (20,)),
    "mnist_leaky_relu": lambda: (generator("leaky_relu"), (20,)),
    "dcgan": lambda: (dcgan(), (16,)),
    "conv_first": lambda: (conv_first(), (2, 9, 9)),
}


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("kind", sorted(CONV_MODULES))
def test_torch_conv_exports_read_back_to_the_same_map(tmp_path, kind, dynamo):
    torch.manual_seed(len(kind))
    module, sample = CONV_MODULES[kind]()
    module = module.eval()
    path = export(module, tmp_path / "m.onnx", dynamo=dynamo, sample=sample)
    net = Network.from_onnx(path)
    reference_net = Network.from_torch(module, input_shape=sample if len(sample) > 1 else None)
    assert [type(layer.operator) for layer in net.layers] == [
        type(layer.operator) for layer in reference_net.layers]  # convolutions stay themselves
    assert [layer.activation for layer in net.layers] == [
        float32_activation(layer.activation) for layer in reference_net.layers]
    z = rng(40).normal(size=(6, net.input_dim))
    np.testing.assert_allclose(net.forward(z), torch_forward(module, z, sample), rtol=0,
                               atol=1e-6)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("kind", ["dcgan", "conv_first"])
def test_float64_conv_exports_read_exactly(tmp_path, kind, dynamo):
    torch.manual_seed(8)
    module, sample = CONV_MODULES[kind]()
    module = module.double().eval()
    path = export(module, tmp_path / "m.onnx", dynamo=dynamo, sample=sample,
                  dtype=torch.float64)
    net = Network.from_onnx(path)
    z = rng(41).normal(size=(5, net.input_dim))
    np.testing.assert_allclose(net.forward(z), torch_forward(module, z, sample, torch.float64),
                               rtol=0, atol=1e-12)


def conv_layers() -> list[Layer]:
    """Conv layers the writer must handle: from a DCGAN (a Reshape from flat, per-channel
    biases), then an image-to-image Reshape, a bias that varies within a channel (an Add), a
    Flatten before a Gemm, a Reshape from flat again and a last Flatten."""
    from layerinv.convolution import Conv2dOperator

    r = rng(42)
    layers = list(Network.from_torch(dcgan()).layers)  # ... -> (1, 16, 16)
    layers.append(Layer(Conv2dOperator(r.normal(size=(4, 3, 3, 3)), (4, 8, 8), stride=2,
                                       padding=1, dilation=(1, 2), transposed=True,
                                       output_padding=(1, 0)),
                        r.normal(size=3 * 16 * 17), "leaky_relu(0.25)"))
    layers.append(Layer(r.normal(size=(12, 3 * 16 * 17)), r.normal(size=12), "elu(0.5)"))
    layers.append(Layer(Conv2dOperator(r.normal(size=(2, 3, 2, 1)), (3, 2, 2)), None,
                        "identity"))
    return layers


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_conv_networks_written_read_back_the_same(tmp_path, dtype):
    from layerinv.convolution import Conv2dOperator

    net = Network(conv_layers())
    path = tmp_path / "conv.onnx"
    net.to_onnx(path, dtype=dtype)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") + ops.count("ConvTranspose") == 5 and "Add" in ops
    back = Network.from_onnx(path)
    for ours, theirs in zip(back.layers, net.layers, strict=True):
        assert type(ours.operator) is type(theirs.operator)
        assert ours.activation == float32_activation(theirs.activation)
        if isinstance(theirs.operator, Conv2dOperator):
            a, b = ours.operator, theirs.operator
            assert (a.input_shape, a.stride, a.padding, a.dilation, a.output_padding,
                    a.transposed) == (b.input_shape, b.stride, b.padding, b.dilation,
                                      b.output_padding, b.transposed)
            np.testing.assert_array_equal(a.kernel, b.kernel.astype(dtype))
        assert (ours.bias is None) == (theirs.bias is None)
        if ours.bias is not None:
            np.testing.assert_array_equal(ours.bias, theirs.bias.astype(dtype))
    z = rng(43).normal(size=(4, net.input_dim))
    tol = 1e-12 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(back.forward(z), net.forward(z), rtol=0, atol=tol)
    # An independent evaluator computes the written file's map.
    np.testing.assert_allclose(reference(model, z), net.forward(z), rtol=0, atol=tol)


def conv_geometry(draw) -> dict:
    transposed = draw(st.booleans())
    stride, dilation = draw(st.tuples(st.integers(1, 3), st.integers(1, 3))), draw(
        st.tuples(st.integers(1, 2), st.integers(1, 2)))
    kernel = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = draw(st.tuples(st.integers(0, 2), st.integers(0, 2)))
    extra = {}
    if transposed:
        extra["output_padding"] = tuple(draw(st.integers(0, max(s, d) - 1))
                                        for s, d in zip(stride, dilation, strict=True))
    return {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
            "transposed": transposed, **extra}


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_conv_geometry_reads_as_onnx_computes_it(data):
    from layerinv.convolution import Conv2dOperator

    geometry = conv_geometry(data.draw)
    c_in, c_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    image = (c_in, data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7)))
    r = rng(data.draw(st.integers(0, 10**6)))
    shape = (c_in, c_out) if geometry["transposed"] else (c_out, c_in)
    kernel = r.normal(size=(*shape, *geometry.pop("kernel")))
    try:
        operator = Conv2dOperator(kernel, image, **geometry)
    except InputError:  # an empty output: not a convolution layerinv can hold
        return
    bias = r.normal(size=operator.n_out) if data.draw(st.booleans()) else None
    net = Network([Layer(operator, bias, "relu")])
    model = model_from_layers(net.layers)
    back = Network.from_onnx(model)
    z = r.normal(size=(3, net.input_dim))
    expected = torch_conv(operator, bias, z)
    np.testing.assert_allclose(net.forward(z), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.forward(z), expected, rtol=0, atol=1e-12)
    # ONNX's own Conv / ConvTranspose on the written file, where onnx.reference can: it fails
    # on an output padding >= the stride (which PyTorch allows below the dilation).
    if not operator.transposed or all(
            e < s for e, s in zip(operator.output_padding, operator.stride, strict=True)):
        np.testing.assert_allclose(reference(model, z), expected, rtol=0, atol=1e-12)


def torch_conv(operator, bias, z: np.ndarray) -> np.ndarray:
    """relu(conv(z) + bias) by PyTorch's functional convolutions, flat in and out."""
    x = torch.as_tensor(z.reshape(len(z), *operator.input_shape))
    kernel = torch.tensor(operator.kernel)
    geometry = {"stride": operator.stride, "padding": operator.padding,
                "dilation": operator.dilation}
    if operator.transposed:
        out = torch.nn.functional.conv_transpose2d(x, kernel, output_padding=(
            operator.output_padding), **geometry)
    else:
        out = torch.nn.functional.conv2d(x, kernel, **geometry)
    out = out.reshape(len(z), -1).numpy()
    return np.maximum(out if bias is None else out + bias, 0.0)


def _conv_model(op="Conv", w_shape=(2, 4, 3, 3), bn_attrs=None, bn_outputs=("x",), **attrs):
    """z (N, 16) -> Reshape (N, 4, 2, 2) -> `op` with `attrs` [-> BatchNormalization]."""
    nodes = [helper.make_node("Reshape", ["z", "shape"], ["img"], name="to_image"),
             helper.make_node(op, ["img", "W"], ["c" if bn_attrs is not None else "x"],
                              name="the_conv", **attrs)]
    inits = [init("shape", np.array([0, 4, 2, 2], dtype=np.int64)),
             init("W", np.ones(w_shape, dtype=np.float32))]
    if bn_attrs is not None:
        nodes.append(helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"],
                                      list(bn_outputs), name="the_norm", **bn_attrs))
        channels = w_shape[1] if op == "ConvTranspose" else w_shape[0]
        inits += [init(n, np.ones(channels, dtype=np.float32)) for n in "sbmv"]
    outputs = [value(o, ["N", "M"]) for o in bn_outputs] if bn_attrs is not None else [
        value("x", ["N", "M"])]
    return graph_model(nodes, [value("z", ["N", 16])], outputs, inits)


@pytest.mark.parametrize(("case", "message"), [
    ("group", r"Conv node 'the_conv' has group=2; only group=1"),
    ("asymmetric_pads", r"Conv node 'the_conv' has pads \[1, 0, 0, 0\].*only symmetric"),
    ("auto_pad", r"ConvTranspose node 'the_conv' has auto_pad='SAME_UPPER'; only NOTSET"),
    ("output_shape", r"ConvTranspose node 'the_conv' has an output_shape attribute"),
    ("kernel_shape", r"Conv node 'the_conv' has kernel_shape \[2, 2\] but W has shape"),
    ("channels", r"Conv node 'the_conv': kernel of shape \(2, 3, 3, 3\) takes 3 input"),
    ("training_bn", r"BatchNormalization node 'the_norm' has training_mode=1.*model\.eval"),
    ("training_bn_three_outputs", r"BatchNormalization node 'the_norm' has training_mode=1"),
])
def test_conv_and_batch_norm_refusals_are_one_clear_line(case, message):
    models = {
        "group": lambda: _conv_model(w_shape=(2, 2, 1, 1), group=2),
        "asymmetric_pads": lambda: _conv_model(pads=[1, 0, 0, 0]),
        "auto_pad": lambda: _conv_model("ConvTranspose", (4, 2, 3, 3), auto_pad="SAME_UPPER",
                                        strides=[2, 2]),
        "output_shape": lambda: _conv_model("ConvTranspose", (4, 2, 3, 3),
                                            output_shape=[5, 5]),
        "kernel_shape": lambda: _conv_model(kernel_shape=[2, 2]),
        "channels": lambda: _conv_model(w_shape=(2, 3, 3, 3)),
        "training_bn": lambda: _conv_model(pads=[1, 1, 1, 1], bn_attrs={"training_mode": 1}),
        "training_bn_three_outputs": lambda: _conv_model(
            pads=[1, 1, 1, 1], bn_attrs={"training_mode": 1}, bn_outputs=("x", "rm", "rv")),
    }
    model = models[case]()
    if case != "channels":  # (a channel mismatch is also the checker's to find)
        onnx.checker.check_model(model)
    with pytest.raises(UnsupportedLayerError, match=message) as info:
        layers_from_onnx(model)
    assert "\n" not in str(info.value)


def test_a_batch_norm_in_a_hand_built_graph_reads_as_onnx_computes_it():
    model = _conv_model(pads=[1, 1, 1, 1], bn_attrs={"epsilon": 0.25})
    r = rng(44)
    for tensor in model.graph.initializer:  # random weights and statistics, var > 0
        if tensor.name in "Wsbmv":
            values = r.normal(size=tuple(tensor.dims)).astype(np.float32)
            if tensor.name == "v":
                values = np.abs(values) + 0.1
            tensor.CopyFrom(init(tensor.name, values))
    net = Network.from_onnx(model)
    z = r.normal(size=(5, 16))
    np.testing.assert_allclose(net.forward(z), reference(model, z), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- hand-built graphs
@pytest.mark.parametrize(("trans_b", "alpha", "beta", "bias_shape"), [
    (0, 1.0, 1.0, (4,)), (1, 1.0, 1.0, (4,)), (1, 0.5, 2.0, (1, 4)), (0, -1.5, 0.25, (1,)),
    (1, 2.0, 1.0, None),
])
def test_gemm_attributes(trans_b, alpha, beta, bias_shape):
    r = rng(10 + trans_b)
    b = r.normal(size=(4, 3) if trans_b else (3, 4)).astype(np.float32)
    inits = [init("B", b)]
    inputs = ["z", "B"]
    if bias_shape is not None:
        inits.append(init("C", r.normal(size=bias_shape).astype(np.float32)))
        inputs.append("C")
    nodes = [helper.make_node("Gemm", inputs, ["u"], name="g", transB=trans_b, alpha=alpha,
                              beta=beta),
             helper.make_node("Relu", ["u"], ["x"], name="r")]
    model = graph_model(nodes, [value("z", ["N", 3])], [value("x", ["N", 4])], inits)
    net = Network(layers_from_onnx(model))
    z = r.normal(size=(12, 3))
    np.testing.assert_allclose(net.forward(z), reference(model, z), rtol=0, atol=1e-6)
    assert net.widths == [3, 4] and net.layers[0].activation.kink is not None


def test_matmul_add_and_reshapes_on_a_rank_three_input():
    r = rng(20)
    w1, b1 = r.normal(size=(6, 5)).astype(np.float32), r.normal(size=5).astype(np.float32)
    w2 = r.normal(size=(5, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["z"], ["f"], name="flat", axis=1),      # (N, 6)
        helper.make_node("Unsqueeze", ["f", "ax"], ["f1"], name="unsq"),     # (N, 1, 6)
        helper.make_node("MatMul", ["f1", "W1"], ["m1"], name="mm1"),        # (N, 1, 5)
        helper.make_node("Add", ["B1", "m1"], ["a1"], name="add1"),          # bias on the left
        helper.make_node("LeakyRelu", ["a1"], ["h1"], name="lrelu", alpha=0.1),
        helper.make_node("Squeeze", ["h1", "ax"], ["s1"], name="sq"),        # (N, 5)
        helper.make_node("MatMul", ["s1", "W2"], ["m2"], name="mm2"),
        helper.make_node("Identity", ["m2"], ["i2"], name="id"),
        helper.make_node("Reshape", ["i2", "shape"], ["x"], name="reshape"),  # (N, 2, 2)
    ]
    inits = [init("W1", w1), init("B1", b1), init("W2", w2),
             init("ax", np.array([1], dtype=np.int64)),
             init("shape", np.array([0, 2, -1], dtype=np.int64))]
    model = graph_model(nodes, [value("z", ["N", 2, 3])], [value("x", ["N", 2, 2])], inits)
    net = Network(layers_from_onnx(model))
    assert net.widths == [6, 5, 4]
    assert [layer.activation for layer in net.layers] == [Network(
        [Layer(np.eye(1), None, "leaky_relu(0.10000000149011612)")]).layers[0].activation,
        Layer(np.eye(1), None, "identity").activation]
    z = r.normal(size=(7, 6))
    np.testing.assert_allclose(net.forward(z), reference(model, z.reshape(7, 2, 3)), rtol=0,
                               atol=1e-5)


def test_a_constant_node_and_leaky_relu_zero_read_as_relu():
    w = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    nodes = [helper.make_node("Constant", [], ["W"], name="c",
                              value=numpy_helper.from_array(w, "W")),
             helper.make_node("Gemm", ["z", "W"], ["u"], name="g", transB=1),
             helper.make_node("LeakyRelu", ["u"], ["x"], name="l", alpha=0.0)]
    model = graph_model(nodes, [value("z", [1, 3])], [value("x", [1, 2])])
    (layer,) = layers_from_onnx(model)
    np.testing.assert_array_equal(layer.weight, w)
    assert layer.activation == Layer(w, None, "relu").activation


# --------------------------------------------------------------------------- writing
@pytest.mark.parametrize("seed", range(7))
def test_written_files_pass_the_checker_and_read_back_exactly(tmp_path, seed):
    acts = ["relu", "leaky_relu(0.3)", "identity", "tanh", "sigmoid", "elu(0.7)",
            "leaky_relu(0.25)"]
    r = rng(30 + seed)
    widths = [int(w) for w in r.integers(1, 7, size=4)]
    layers = [Layer(r.normal(size=(widths[i + 1], widths[i])),
                    r.normal(size=widths[i + 1]) if r.random() < 0.6 else None,
                    acts[(seed + i) % len(acts)]) for i in range(3)]
    net = Network(layers)
    path = tmp_path / "net.onnx"
    layers_to_onnx(net.layers, path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    back = Network(layers_from_onnx(path))
    for ours, theirs in zip(back.layers, net.layers, strict=True):
        np.testing.assert_array_equal(ours.weight, theirs.weight)
        assert (ours.bias is None) == (theirs.bias is None)
        if ours.bias is not None:
            np.testing.assert_array_equal(ours.bias, theirs.bias)
        # ONNX attributes are float32: a slope is written rounded (0.25 stays exact).
        assert ours.activation == float32_activation(theirs.activation)
    z = r.normal(size=(5, net.input_dim))
    # An independent evaluator computes the written file's map.
    np.testing.assert_allclose(reference(model, z), back.forward(z), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back.forward(z), net.forward(z), rtol=1e-6, atol=1e-6)


def test_float32_files_and_torch_agree(tmp_path):
    net = random_network([3, 9, 14], bias=True, seed=5)
    model = model_from_layers(net.layers, dtype="float32")
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.initializer[0].data_type == TensorProto.FLOAT
    z = rng(5).normal(size=(8, 3))
    np.testing.assert_allclose(reference(model, z), net.forward(z), rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="dtype must be"):
        model_from_layers(net.layers, dtype="float16")


def test_an_unwritable_path_is_one_clear_error(tmp_path):
    from layerinv.errors import OutputError

    net = random_network([2, 4], seed=1)
    with pytest.raises(OutputError, match="could not write the ONNX file"):
        layers_to_onnx(net.layers, tmp_path / "missing" / "net.onnx")


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("op", ["AveragePool", "Resize"])
def test_image_ops_from_torch_not_read_here_yet_are_refused_by_name(op):
    if op == "AveragePool":
        extra, inits, attrs = [], [], {"kernel_shape": [2, 2]}
    else:
        extra, attrs = ["", "scales"], {"mode": "nearest"}
        inits = [init("scales", np.array([1, 1, 2, 2], dtype=np.float32))]
    nodes = [helper.make_node("Gemm", ["z", "G"], ["u"], name="g", transB=1),
             helper.make_node("Reshape", ["u", "shape"], ["img"], name="to_image"),
             helper.make_node(op, ["img", *extra], ["x"], name="the_op", **attrs)]
    inits += [init("G", np.ones((16, 3), dtype=np.float32)),
              init("shape", np.array([1, 1, 4, 4], dtype=np.int64))]
    model = graph_model(nodes, [value("z", [1, 3])], [value("x", ["N", "M"])], inits)
    with pytest.raises(UnsupportedLayerError) as info:
        layers_from_onnx(model)
    message = str(info.value)
    assert op in message and "'the_op'" in message and "not supported yet" in message
    assert "supported ops: Gemm, MatMul, Conv, ConvTranspose" in message


def _gemm_model(extra_nodes=(), outputs=("x",), z_shape=("N", 3), w_dtype=np.float32,
                inputs=None):
    nodes = [helper.make_node("Gemm", ["z", "W"], ["x"], name="g", transB=1), *extra_nodes]
    w = np.ones((2, 3)).astype(w_dtype)
    return graph_model(nodes, inputs or [value("z", list(z_shape))],
                       [value(o, ["N", "M"]) for o in outputs], [init("W", w)])


@pytest.mark.parametrize(("case", "message"), [
    ("residual", "branches or joins"),
    ("two_consumers", "branches or joins"),
    ("two_outputs", "has 2 outputs"),
    ("two_inputs", "has 2 inputs"),
    ("dynamic_feature", "axis 1 is symbolic"),
    ("int_weight", "weights must be floating point"),
    ("int_input", "must be a float tensor"),
    ("rank_one_input", "export with a batch of one"),
    ("unknown_op", "Softmax node 's' is not supported"),
    ("activation_first", r"does not follow a linear op \(Gemm, MatMul, Conv or ConvTr"),
    ("bias_first", r"does not follow a linear op \(Gemm, MatMul, Conv or ConvTr"),
    ("transposed_data", "transA=0"),
    ("batch_moved", "keep the batch axis first"),
    ("runtime_weight", "more than once"),
    ("not_the_end", "not the end of the chain"),
    ("no_layer", "holds no linear op"),
])
def test_graphs_that_are_not_one_chain_are_refused_clearly(case, message):
    w = init("W", np.ones((2, 3), dtype=np.float32))
    z = value("z", ["N", 3])
    out = value("x", ["N", "M"])
    gemm = helper.make_node("Gemm", ["z", "W"], ["u"], name="g", transB=1)
    models = {
        "residual": lambda: graph_model(
            [helper.make_node("Gemm", ["z", "S"], ["u"], name="g", transB=1),
             helper.make_node("Add", ["u", "z"], ["x"], name="skip")],
            [z], [out], [init("S", np.eye(3, dtype=np.float32))]),
        "two_consumers": lambda: graph_model(
            [gemm, helper.make_node("Relu", ["u"], ["a"], name="r1"),
             helper.make_node("Relu", ["u"], ["x"], name="r2")], [z], [out], [w]),
        "two_outputs": lambda: graph_model(
            [gemm, helper.make_node("Relu", ["u"], ["x"], name="r")], [z],
            [value("x", ["N", "M"]), value("u", ["N", "M"])], [w]),
        "two_inputs": lambda: _gemm_model(inputs=[z, value("y", ["N", 3])]),
        "dynamic_feature": lambda: _gemm_model(z_shape=("N", "k")),
        "int_weight": lambda: _gemm_model(w_dtype=np.int64),
        "int_input": lambda: _gemm_model(inputs=[value("z", ["N", 3], TensorProto.INT64)]),
        "rank_one_input": lambda: _gemm_model(z_shape=(3,)),
        "unknown_op": lambda: graph_model(
            [gemm, helper.make_node("Softmax", ["u"], ["x"], name="s")], [z],
            [out], [w]),
        "activation_first": lambda: graph_model(
            [helper.make_node("Relu", ["z"], ["h"], name="r"),
             helper.make_node("Gemm", ["h", "W"], ["x"], name="g", transB=1)], [z],
            [out], [w]),
        "bias_first": lambda: graph_model(
            [helper.make_node("Add", ["z", "c"], ["h"], name="a"),
             helper.make_node("Gemm", ["h", "W"], ["x"], name="g", transB=1)], [z],
            [out], [w, init("c", np.ones(3, dtype=np.float32))]),
        "transposed_data": lambda: graph_model(
            [helper.make_node("Gemm", ["z", "W"], ["x"], name="g", transA=1)],
            [value("z", [3, 1])], [out],
            [init("W", np.ones((3, 2), dtype=np.float32))]),
        "batch_moved": lambda: graph_model(
            [gemm, helper.make_node("Reshape", ["u", "s"], ["x"], name="rs")], [z],
            [out], [w, init("s", np.array([2, -1], dtype=np.int64))]),
        "runtime_weight": lambda: graph_model(
            [helper.make_node("MatMul", ["z", "z"], ["x"], name="g")], [value("z", [3, 3])],
            [out]),
        "not_the_end": lambda: graph_model(
            [gemm, helper.make_node("Relu", ["u"], ["x"], name="r")], [z], [value("u", ["N", "M"])],
            [w]),
        "no_layer": lambda: graph_model([helper.make_node("Flatten", ["z"], ["x"], name="f")],
                                        [z], [out]),
    }
    with pytest.raises((UnsupportedLayerError, NetworkFileError), match=message):
        layers_from_onnx(models[case]())


def test_the_two_inputs_case_is_refused_for_its_inputs():
    # (the parametrised case above must fail on the input count, not on something else)
    model = _gemm_model(inputs=[value("z", ["N", 3]), value("y", ["N", 3])])
    with pytest.raises(UnsupportedLayerError, match=r"\['z', 'y'\]"):
        layers_from_onnx(model)


# --------------------------------------------------------------------------- hostile files
@pytest.mark.parametrize("content", [b"", b"not an onnx file at all\n", b"\x00" * 64,
                                     bytes(range(256)) * 4, b"PK\x03\x04 a zip"])
def test_files_that_are_not_onnx_are_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(NetworkFileError, match=r"bad\.onnx"):
        layers_from_onnx(path)


def test_missing_paths_directories_and_wrong_types(tmp_path):
    with pytest.raises(NetworkFileError, match="does not exist"):
        layers_from_onnx(tmp_path / "none.onnx")
    with pytest.raises(NetworkFileError, match="is a directory"):
        layers_from_onnx(tmp_path)
    with pytest.raises(InputError, match=r"path to an \.onnx file or an onnx\.ModelProto"):
        layers_from_onnx(42)


def _valid_bytes() -> bytes:
    return model_from_layers(random_network([3, 5, 7], bias=True, seed=2).layers,
                             dtype="float32").SerializeToString()


VALID = None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_files_give_a_network_or_one_clear_error(tmp_path, data):
    global VALID
    VALID = VALID or _valid_bytes()
    content = bytearray(VALID)
    mode = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if mode == "truncate":
        content = content[: data.draw(st.integers(0, len(content) - 1))]
    elif mode == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    else:
        at = data.draw(st.integers(0, len(content)))
        content[at:at] = data.draw(st.binary(min_size=1, max_size=32))
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(bytes(content))
    try:
        net = Network(layers_from_onnx(path))
    except (NetworkFileError, UnsupportedLayerError) as exc:
        assert "fuzz.onnx" in str(exc) and "Traceback" not in str(exc)
    else:
        assert net.input_dim >= 1 and np.all(np.isfinite(net.forward(np.zeros(net.input_dim))))
    os.remove(path)


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd", "absent.bin"])
def test_external_data_outside_the_folder_or_missing_is_refused(tmp_path, location):
    tensor = numpy_helper.from_array(np.ones((2, 3), dtype=np.float32), "W")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    model = graph_model([helper.make_node("Gemm", ["z", "W"], ["x"], name="g", transB=1)],
                        [value("z", [1, 3])], [value("x", [1, 2])], [tensor])
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(NetworkFileError, match=r"ext\.onnx.*(outside|absolute|not regular)"):
        layers_from_onnx(path)
