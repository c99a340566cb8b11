"""VNN-LIB out and in (layerinv.vnnlib): files parse back exactly, answers agree, bad files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx", reason="the VNN-LIB tests write ONNX: the [onnx] extra")
from onnx.reference import ReferenceEvaluator  # noqa: E402

from layerinv import Network, random_network  # noqa: E402
from layerinv._onnx_io import layers_from_onnx  # noqa: E402
from layerinv.errors import InputError  # noqa: E402
from layerinv.exact import BoxWarning, linf_polytope, preimage_polytope  # noqa: E402
from layerinv.vnnlib import decide, read_vnnlib, to_vnnlib  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([11, seed])  # a non-zero tag for this file's streams


def random_spec(r: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of every form the writer knows: +-e_j, e_a - e_b, single scaled, general."""
    rows = [np.eye(n)[r.integers(n)], -np.eye(n)[r.integers(n)], r.normal(size=n),
            3.5 * np.eye(n)[r.integers(n)]]
    if n > 1:
        a, b = r.choice(n, size=2, replace=False)
        rows.append(np.eye(n)[a] - np.eye(n)[b])
    C = np.array(rows)
    d = r.normal(size=len(C)) * 10.0 ** r.integers(-12, 4)
    if n > 1:
        d[-1] = 0.0  # Y_a <= Y_b
    return C, d


def own_interval_bounds(net: Network, lo: np.ndarray, hi: np.ndarray):
    """The output box of the input box by interval arithmetic, written here (no exact.py)."""
    for layer in net.layers:
        w = layer.weight
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        center = w @ mid + (0 if layer.bias is None else layer.bias)
        radius = np.abs(w) @ rad
        lo, hi = layer.activation.forward(center - radius), layer.activation.forward(
            center + radius)
    return lo, hi


# --------------------------------------------------------------------------- round trip
@FUZZ
@given(seed=st.integers(0, 10_000), n_disjuncts=st.integers(1, 3))
def test_written_files_read_back_to_the_same_box_spec_and_network(tmp_path, seed, n_disjuncts):
    r = rng(seed)
    k, n = int(r.integers(1, 4)), int(r.integers(1, 5))
    net = random_network([k, 6, n], "leaky_relu(0.25)", bias=True, seed=seed)
    spec = [random_spec(r, n) for _ in range(n_disjuncts)]
    lo = -r.uniform(0.1, 3, size=k)
    hi = r.uniform(0, 3, size=k)
    path, onnx_path = to_vnnlib(net, spec if n_disjuncts > 1 else spec[0],
                                tmp_path / "prop.vnnlib", box=(lo, hi))
    assert onnx_path == tmp_path / "prop.onnx"
    prop = read_vnnlib(path)
    assert (prop.n_inputs, prop.n_outputs, len(prop.disjuncts)) == (k, n, n_disjuncts)
    for part, (C, d) in zip(prop.disjuncts, spec, strict=True):
        np.testing.assert_array_equal(part.lo, lo)
        np.testing.assert_array_equal(part.hi, hi)
        np.testing.assert_array_equal(part.C, C)
        np.testing.assert_array_equal(part.d, d)
    model = onnx.load(onnx_path)
    onnx.checker.check_model(model, full_check=True)
    back = Network(layers_from_onnx(onnx_path))
    z = r.uniform(lo, hi, size=(4, k))
    np.testing.assert_array_equal(back.forward(z), net.forward(z))
    (out,) = ReferenceEvaluator(model).run(None, {"z": z})
    np.testing.assert_allclose(out, net.forward(z), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- answers
def _original_answer(net, spec, lo, hi) -> str:
    answers = [preimage_polytope(net, C, d, box=(lo, hi)).exists for C, d in spec]
    return "sat" if any(answers) else ("unknown" if None in answers else "unsat")


def _case(seed: int):
    """A small net and a spec: sat (built around G(z*) with z* in the box), or unsat (one
    output asked beyond its interval bound over the box), or open (a ball around the image
    of a point outside the box)."""
    r = rng(1000 + seed)
    net = random_network([2, 8, 4], "relu" if seed % 2 else "leaky_relu(0.5)", bias=True,
                         seed=seed)
    lo, hi = np.full(2, -1.0), np.full(2, 1.0)
    kind = ("sat", "unsat", "open")[seed % 3]
    _, out_hi = own_interval_bounds(net, lo, hi)
    j = int(r.integers(4))
    if kind == "sat":  # an unsat disjunct first: 'sat' must look past it
        y = net.forward(r.uniform(-0.9, 0.9, size=2))
        C, d = linf_polytope(y, 1e-4)
        extra = r.normal(size=(2, 4))
        spec = [(-np.eye(4)[[j]], np.array([-(out_hi[j] + 0.5)])),
                (np.vstack([C, extra]), np.concatenate([d, extra @ y + 0.1]))]
    elif kind == "unsat":
        spec = [(-np.eye(4)[[j]], np.array([-(out_hi[j] + 0.5)])),  # y_j >= hi_j + 0.5
                (np.array([[1.0, 1.0, 1.0, 1.0]]), np.array([-(np.abs(out_hi).sum() + 1)]))
                if seed % 2 == 0 else (-np.eye(4)[[j]], np.array([-(out_hi[j] + 1.0)]))]
    else:
        y = net.forward(r.uniform(1.5, 3.0, size=2))
        spec = [linf_polytope(y, 1e-3)]
    return net, spec, lo, hi, kind


@settings(max_examples=18, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_the_answer_on_the_read_back_file_is_the_answer_on_the_spec(tmp_path, seed):
    net, spec, lo, hi, kind = _case(seed)
    path, onnx_path = to_vnnlib(net, spec, tmp_path / "p.vnnlib", box=(lo, hi))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoxWarning)
        original = _original_answer(net, spec, lo, hi)
        answer, z = decide(Network(layers_from_onnx(onnx_path)), read_vnnlib(path))
    assert answer == original
    if kind != "open":
        assert answer == kind
    if answer == "sat":
        y = net.forward(z)
        assert np.all((z >= lo) & (z <= hi))
        assert any(np.all(C @ y - d <= 1e-8 * (1 + np.abs(d) + np.abs(C) @ np.abs(y)))
                   for C, d in spec)


def test_both_answers_are_exercised_on_fixed_seeds(tmp_path):
    seen = set()
    for seed in range(9):
        net, spec, lo, hi, _ = _case(seed)
        path, _ = to_vnnlib(net, spec, tmp_path / f"p{seed}.vnnlib", box=(lo, hi))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoxWarning)
            seen.add(decide(net, read_vnnlib(path))[0])
    assert {"sat", "unsat"} <= seen


# --------------------------------------------------------------------------- VNN-COMP forms
COMMON = """
; an ACAS Xu style property, with comments
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real) ; the first output
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.5))
(assert (>= X_0 (- 0.5)))
(assert (or
    (and (<= X_1 1.0) (>= X_1 0.0) (<= Y_0 Y_1) (<= Y_0 Y_2))
    (and (<= X_1 0.0) (>= X_1 -1e-1) (>= (+ Y_0 (* 2.0 Y_1) (- Y_2 1.5)) 3)
         (= (* Y_2 -1.0) 0.25))
))
"""


def test_common_vnncomp_forms(tmp_path):
    path = tmp_path / "acas.vnnlib"
    path.write_text(COMMON)
    prop = read_vnnlib(path)
    assert (prop.n_inputs, prop.n_outputs) == (2, 3)
    first, second = prop.disjuncts
    np.testing.assert_array_equal(first.lo, [-0.5, 0.0])
    np.testing.assert_array_equal(first.hi, [0.5, 1.0])
    np.testing.assert_array_equal(first.C, [[1, -1, 0], [1, 0, -1]])
    np.testing.assert_array_equal(first.d, [0, 0])
    np.testing.assert_array_equal(second.lo, [-0.5, -0.1])
    np.testing.assert_array_equal(second.hi, [0.5, 0.0])
    # y0 + 2 y1 + y2 - 1.5 >= 3  ->  -y0 - 2 y1 - y2 <= -4.5;  -y2 = 0.25 (two rows)
    np.testing.assert_array_equal(second.C, [[-1, -2, -1], [0, 0, -1], [0, 0, 1]])
    np.testing.assert_array_equal(second.d, [-4.5, 0.25, -0.25])


def test_empty_disjuncts_are_dropped_and_an_empty_property_is_unsat(tmp_path):
    path = tmp_path / "empty.vnnlib"
    path.write_text("(declare-const X_0 Real)(declare-const Y_0 Real)"
                    "(assert (<= X_0 1))(assert (>= X_0 0))"
                    "(assert (or (and (>= X_0 2) (<= Y_0 0)) (and (<= 1 0) (<= Y_0 5))))")
    prop = read_vnnlib(path)
    assert prop.disjuncts == ()
    net = random_network([1, 3, 1], seed=0)
    assert decide(net, prop) == ("unsat", None)


# --------------------------------------------------------------------------- bad files
HEAD = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
BOX = "(assert (<= X_0 1.0))\n(assert (>= X_0 -1.0))\n"


@pytest.mark.parametrize(("text", "message"), [
    ("", "holds no command"),
    ("(declare-const X_0 Real", "unbalanced parentheses"),
    (HEAD + BOX + "))", "unmatched"),
    (HEAD + BOX + "(check-sat)", "unsupported command 'check-sat'"),
    (HEAD + BOX + "(assert (<= Y_1 0))", "Y_1 is used before it is declared"),
    (HEAD + BOX + "(assert (< Y_0 0))", "strict comparison"),
    (HEAD + BOX + "(assert (<= (* Y_0 X_0) 0))", "not linear"),
    (HEAD + BOX + "(assert (<= (+ Y_0 X_0) 0))", "mixes inputs X and outputs Y"),
    (HEAD + "(assert (<= X_0 1))(assert (<= Y_0 0))", "X_0 lacks one"),
    ("(declare-const X_1 Real)" + HEAD + BOX + "(assert (<= (+ X_0 X_1) 0))",
     "bound single variables"),
    (HEAD + BOX + "(assert (<= Y_0 zero))", "unknown symbol 'zero'"),
    (HEAD + BOX + "(assert (<= Y_0 nan))", "unknown symbol 'nan'"),
    (HEAD + BOX + "(assert (or))", "empty"),
    ("(declare-const X_1 Real)(declare-const Y_0 Real)", "missing X_0"),
    ("(declare-const Z_0 Real)", "named X_i"),
    (HEAD + "(declare-const X_0 Real)", "declared twice"),
    (HEAD + BOX + "(assert " + "(and " * 80 + "(<= Y_0 0)" + ")" * 81, "nested deeper"),
    (HEAD + BOX + "(assert (and " + "(or (<= Y_0 0) (<= Y_0 1))" * 20 + "))",
     "more than 100000 disjuncts"),
    ("(declare-const Y_0 Real)", "no input"),
])
def test_bad_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.vnnlib"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        read_vnnlib(path)
    assert "bad.vnnlib" in str(info.value)


def test_unreadable_paths(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_vnnlib(tmp_path / "none.vnnlib")
    with pytest.raises(InputError, match="is a directory"):
        read_vnnlib(tmp_path)
    (tmp_path / "bin.vnnlib").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not text"):
        read_vnnlib(tmp_path / "bin.vnnlib")


VALID_TEXT = None


@FUZZ
@given(data=st.data())
def test_corrupted_files_give_a_property_or_one_clear_error(tmp_path, data):
    global VALID_TEXT
    if VALID_TEXT is None:
        net = random_network([2, 4, 3], seed=1)
        path, _ = to_vnnlib(net, [random_spec(rng(1), 3), random_spec(rng(2), 3)],
                            tmp_path / "v.vnnlib", box=1.0)
        VALID_TEXT = path.read_text()
    text = list(VALID_TEXT)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(text) - 1))
        text[at] = data.draw(st.sampled_from(list("()XY_0123456789.- \n;abc<=>")))
    path = tmp_path / "fuzz.vnnlib"
    path.write_text("".join(text))
    try:
        prop = read_vnnlib(path)
    except InputError as exc:
        assert "fuzz.vnnlib" in str(exc)
    else:
        for part in prop.disjuncts:
            assert np.all(np.isfinite(part.lo)) and np.all(np.isfinite(part.hi))
            assert part.C.shape == (len(part.d), prop.n_outputs)


# --------------------------------------------------------------------------- writer errors
def test_writer_argument_errors(tmp_path):
    net = random_network([2, 4, 3], seed=2)
    C, d = np.ones((1, 3)), np.ones(1)
    with pytest.raises(InputError, match=r"C must be \(m, 3\)"):
        to_vnnlib(net, (np.ones((1, 2)), d), tmp_path / "a.vnnlib")
    with pytest.raises(InputError, match="non-empty list"):
        to_vnnlib(net, [], tmp_path / "a.vnnlib")
    with pytest.raises(InputError, match="finite"):
        to_vnnlib(net, (C, [np.inf]), tmp_path / "a.vnnlib")
    with pytest.raises(InputError, match="onnx_path must differ"):
        to_vnnlib(net, (C, d), tmp_path / "a.onnx")
    with pytest.raises(InputError, match="box"):
        to_vnnlib(net, (C, d), tmp_path / "a.vnnlib", box=(1.0, -1.0))
    with pytest.raises(InputError, match="Network"):
        to_vnnlib("net", (C, d), tmp_path / "a.vnnlib")
    with pytest.raises(InputError, match="prop must be a VnnlibProperty"):
        decide(net, (C, d))
    path, _ = to_vnnlib(net, (C, d), tmp_path / "a.vnnlib")
    with pytest.raises(InputError, match="maps 3 to 2"):
        decide(random_network([3, 5, 2], seed=0), read_vnnlib(path))
    with pytest.raises(InputError, match="sigmoid"):
        to_vnnlib(random_network([2, 3], "sigmoid", seed=0), (np.ones((1, 3)), d),
                  tmp_path / "b.vnnlib")


def test_default_box_is_written(tmp_path):
    from layerinv.exact import DEFAULT_BOX

    net = random_network([2, 4, 3], seed=3)
    path, _ = to_vnnlib(net, (np.ones((1, 3)), np.ones(1)), tmp_path / "a.vnnlib")
    (part,) = read_vnnlib(path).disjuncts
    np.testing.assert_array_equal(part.hi, [DEFAULT_BOX] * 2)
    np.testing.assert_array_equal(part.lo, [-DEFAULT_BOX] * 2)
