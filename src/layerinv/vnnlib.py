"""VNN-LIB properties: the pre-image question written for neural-network verifiers, and read.

A VNN-LIB file (the VNN-COMP format, SMT-LIB syntax) declares the inputs X_i and outputs Y_j
as Real, bounds every input by a box, and states the UNSAFE set: a verifier answers 'sat' with
an input in the box whose output meets the property, or 'unsat' when none does. layerinv's
question "is there z in the box with C G(z) <= d" is exactly such a property, the conjunction
of the rows of C y <= d; several (C, d) are a disjunction, (or (and ...) ...).

- `to_vnnlib(net, spec, path)` writes the property and the network as ONNX beside it (through
  `_onnx_io`, float64 unless dtype='float32');
- `read_vnnlib(path)` reads the subset written and the common VNN-COMP forms: bounds on single
  variables, linear terms ((* c Y_0), (+ ...), (- ...)), (<= Y_0 Y_1), (and ...), (or ...) with
  input bounds inside the disjuncts, as a `VnnlibProperty` of `Disjunct`s (box and (C, d));
- `decide(net, prop)` answers as a verifier would, by `exact.preimage_polytope` on each
  disjunct: 'sat' with a witness verified by a forward pass, 'unsat' only when HiGHS proves
  every disjunct infeasible in its box, else 'unknown'.

Numbers are written in positional notation with the shortest digits that read back to the
same float64 (SMT-LIB has no exponent notation); negative numbers as -0.5, as VNN-COMP's files
do. Strict comparisons (<, >) are refused when read: a verifier's answer to them differs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerinv._onnx_io import layers_to_onnx
from layerinv._validation import as_float_array
from layerinv.errors import InputError, OutputError
from layerinv.exact import _check_box, _check_net, preimage_polytope
from layerinv.network import Network

__all__ = ["Disjunct", "VnnlibProperty", "decide", "read_vnnlib", "to_vnnlib"]

MAX_BYTES = 256 * 2**20
"""Larger files are refused before parsing."""
MAX_DEPTH = 64
"""Deeper nesting of parentheses is refused (hostile files)."""
MAX_DISJUNCTS = 100_000
"""A formula whose disjunctive normal form has more disjuncts is refused."""


@dataclass(frozen=True)
class Disjunct:
    """One conjunction of a property: the input box lo <= X <= hi and the outputs C Y <= d."""

    lo: np.ndarray
    hi: np.ndarray
    C: np.ndarray
    d: np.ndarray


@dataclass(frozen=True)
class VnnlibProperty:
    """A VNN-LIB property: n_inputs X_i, n_outputs Y_j, and the disjuncts (any one is unsafe)."""

    n_inputs: int
    n_outputs: int
    disjuncts: tuple[Disjunct, ...]


# --------------------------------------------------------------------------- writing
def _number(value: float) -> str:
    return np.format_float_positional(float(value), unique=True, trim="0")


def _row_text(row: np.ndarray, bound: float) -> str:
    """One row C_i Y <= d_i in the simplest form VNN-COMP's parsers read."""
    (nonzero,) = np.nonzero(row)
    if len(nonzero) == 1 and abs(row[nonzero[0]]) == 1.0:  # +-Y_j <= d: exact as a bound
        j, c = int(nonzero[0]), float(row[nonzero[0]])
        return f"({'<=' if c > 0 else '>='} Y_{j} {_number(bound / c)})"
    if (len(nonzero) == 2 and bound == 0.0 and sorted(row[nonzero]) == [-1.0, 1.0]):
        a, b = (int(j) for j in sorted(nonzero, key=lambda j: -row[j]))
        return f"(<= Y_{a} Y_{b})"  # Y_a - Y_b <= 0
    if len(nonzero) == 0:
        return f"(<= 0.0 {_number(bound)})"
    terms = [f"(* {_number(row[j])} Y_{int(j)})" for j in nonzero]
    left = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
    return f"(<= {left} {_number(bound)})"


def _check_spec(spec: object, n_out: int) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = [spec] if isinstance(spec, tuple) else list(spec)  # type: ignore[call-overload]
    if not pairs:
        raise InputError("spec must be a pair (C, d) or a non-empty list of pairs; got none")
    checked = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise InputError(f"spec[{i}] must be a pair (C, d) with C (m, {n_out}) and d (m,); "
                             f"got {type(pair).__name__}")
        C, d = as_float_array(pair[0], "C"), as_float_array(pair[1], "d")
        if C.ndim != 2 or C.shape[1] != n_out or C.shape[0] < 1 or d.shape != (C.shape[0],):
            raise InputError(f"spec[{i}]: C must be (m, {n_out}) with m >= 1 and d (m,); got "
                             f"C {C.shape} and d {d.shape}")
        if not (np.all(np.isfinite(C)) and np.all(np.isfinite(d))):
            raise InputError(f"spec[{i}]: C and d must be finite")
        checked.append((C, d))
    return checked


def to_vnnlib(net: Network, spec: object, path: str | os.PathLike[str], *,
              onnx_path: str | os.PathLike[str] | None = None, box: object = None,
              dtype: str = "float64") -> tuple[Path, Path]:
    """Write the property "some z in the box has C G(z) <= d" and the network for verifiers.

    spec : (C, d), or a list of (C, d) pairs (a disjunction: any one of them).
    path : the .vnnlib file; `onnx_path` the network (default: `path` with suffix .onnx).
    box : as in `exact.preimage` (None is |z_i| <= exact.DEFAULT_BOX).
    dtype : the ONNX file's weights ('float64' exactly; 'float32' rounds them, and a
        verifier's answer is then about the rounded network).
    Returns (vnnlib path, onnx path). A verifier's 'sat' is exists=True of
    `exact.preimage_polytope(net, C, d, box=box)` for some pair, 'unsat' exists=False for all.
    """
    net = _check_net(net)
    pairs = _check_spec(spec, net.output_dim)
    lo, hi, _ = _check_box(box, net.input_dim)
    path = Path(path)
    onnx_file = path.with_suffix(".onnx") if onnx_path is None else Path(onnx_path)
    if onnx_file.resolve() == path.resolve():
        raise InputError(f"onnx_path must differ from path; both are {str(path)!r}")
    lines = [f"; layerinv: is there z in the box with C G(z) <= d? The network: "
             f"{onnx_file.name}",
             f"; {net.input_dim} inputs X_i (the latent z), {net.output_dim} outputs Y_j; "
             f"'sat' means yes", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(net.input_dim)]
    lines += [""] + [f"(declare-const Y_{j} Real)" for j in range(net.output_dim)] + [""]
    for i in range(net.input_dim):
        lines += [f"(assert (>= X_{i} {_number(lo[i])}))", f"(assert (<= X_{i} {_number(hi[i])}))"]
    lines.append("")
    if len(pairs) == 1:
        C, d = pairs[0]
        lines += [f"(assert {_row_text(row, b)})" for row, b in zip(C, d, strict=True)]
    else:
        lines.append("(assert (or")
        for C, d in pairs:
            rows = " ".join(_row_text(row, b) for row, b in zip(C, d, strict=True))
            lines.append(f"    (and {rows})")
        lines.append("))")
    layers_to_onnx(net.layers, onnx_file, dtype=dtype)
    try:
        path.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise OutputError(f"could not write the VNN-LIB file {str(path)!r}: {exc}") from None
    return path, onnx_file


# --------------------------------------------------------------------------- reading
_TOKEN = re.compile(r"\s*(?:(;[^\n]*)|(\()|(\))|([^\s();]+))")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_VARIABLE = re.compile(r"^([XY])_(\d+)$")


class _Bad(Exception):
    """A parse error (turned into one InputError naming the file)."""


def _parse(text: str) -> list:
    """The top-level s-expressions as nested lists of strings (iterative: no recursion)."""
    stack: list[list] = [[]]
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos:].strip():
                raise _Bad(f"unreadable text at character {pos}")
            break
        pos = match.end()
        _comment, opening, closing, atom = match.groups()
        if opening:
            if len(stack) > MAX_DEPTH:
                raise _Bad(f"parentheses nested deeper than {MAX_DEPTH}")
            stack.append([])
        elif closing:
            if len(stack) == 1:
                raise _Bad(f"an unmatched ')' at character {match.start(3)}")
            done = stack.pop()
            stack[-1].append(done)
        elif atom:
            stack[-1].append(atom)
    if len(stack) != 1:
        raise _Bad("unbalanced parentheses: the file ends inside an expression")
    return stack[0]


class _Reader:
    """Declarations and the formula in disjunctive normal form (lists of atoms)."""

    def __init__(self) -> None:
        self.declared: dict[str, set[int]] = {"X": set(), "Y": set()}
        self.formula: list[list[tuple]] = [[]]  # one empty conjunction: true

    def command(self, expr: object) -> None:
        if not isinstance(expr, list) or not expr or not isinstance(expr[0], str):
            raise _Bad(f"expected a command such as (declare-const X_0 Real); got "
                       f"{_text(expr)}")
        head = expr[0]
        if head == "declare-const":
            if len(expr) != 3 or expr[2] != "Real" or not isinstance(expr[1], str):
                raise _Bad(f"expected (declare-const NAME Real); got {_text(expr)}")
            match = _VARIABLE.match(expr[1])
            if match is None:
                raise _Bad(f"variables must be named X_i (inputs) or Y_j (outputs); got "
                           f"{expr[1]!r}")
            index = int(match.group(2))
            if index in self.declared[match.group(1)]:
                raise _Bad(f"{expr[1]} is declared twice")
            self.declared[match.group(1)].add(index)
        elif head == "assert":
            if len(expr) != 2:
                raise _Bad(f"expected (assert FORMULA); got {_text(expr)}")
            self.formula = _conjoin(self.formula, self.dnf(expr[1]))
        else:
            raise _Bad(f"unsupported command {head!r} (supported: declare-const, assert)")

    def dnf(self, expr: object) -> list[list[tuple]]:
        if not isinstance(expr, list) or not expr:
            raise _Bad(f"expected a formula such as (<= Y_0 1.0); got {_text(expr)}")
        head, args = expr[0], expr[1:]
        if head == "and":
            result: list[list[tuple]] = [[]]
            for arg in args:
                result = _conjoin(result, self.dnf(arg))
            return result
        if head == "or":
            if not args:
                raise _Bad("an empty (or) is false: not a property")
            result = [conj for arg in args for conj in self.dnf(arg)]
            if len(result) > MAX_DISJUNCTS:
                raise _Bad(f"more than {MAX_DISJUNCTS} disjuncts")
            return result
        if head in ("<=", ">=", "="):
            if len(args) != 2:
                raise _Bad(f"{head} takes two terms; got {_text(expr)}")
            left, right = self.term(args[0]), self.term(args[1])
            diff = _combine(left, right, -1.0) if head != ">=" else _combine(right, left, -1.0)
            atoms = [diff]  # diff <= 0
            if head == "=":
                atoms.append(_scale(diff, -1.0))
            return [atoms]
        if head in ("<", ">"):
            raise _Bad(f"strict comparison {head!r} is not supported (write <= or >=)")
        raise _Bad(f"unsupported formula {_text(expr)} (supported: <=, >=, =, and, or)")

    def term(self, expr: object) -> dict:
        """A linear term as {variable or '': coefficient} ('' is the constant)."""
        if isinstance(expr, str):
            if _NUMBER.match(expr):
                return {"": float(expr)}
            match = _VARIABLE.match(expr)
            if match is None:
                raise _Bad(f"unknown symbol {expr!r}")
            if int(match.group(2)) not in self.declared[match.group(1)]:
                raise _Bad(f"{expr} is used before it is declared")
            return {expr: 1.0}
        if not isinstance(expr, list) or not expr:
            raise _Bad(f"expected a term; got {_text(expr)}")
        head, args = expr[0], [self.term(a) for a in expr[1:]]
        if head == "+" and args:
            total: dict = {}
            for arg in args:
                total = _combine(total, arg, 1.0)
            return total
        if head == "-" and len(args) == 1:
            return _scale(args[0], -1.0)
        if head == "-" and len(args) == 2:
            return _combine(args[0], args[1], -1.0)
        if head == "*" and len(args) == 2:
            constant = [a for a in args if set(a) <= {""}]
            if not constant:
                raise _Bad(f"a product of two variables is not linear: {_text(expr)}")
            other = args[1] if args[0] is constant[0] else args[0]
            return _scale(other, constant[0].get("", 0.0))
        raise _Bad(f"unsupported term {_text(expr)} (supported: numbers, X_i, Y_j, +, -, *)")


def _combine(a: dict, b: dict, sign: float) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0.0) + sign * value
    return out


def _scale(a: dict, factor: float) -> dict:
    return {key: factor * value for key, value in a.items()}


def _conjoin(a: list[list], b: list[list]) -> list[list]:
    if len(a) * len(b) > MAX_DISJUNCTS:
        raise _Bad(f"more than {MAX_DISJUNCTS} disjuncts")
    return [x + y for x in a for y in b]


def _text(expr: object, limit: int = 80) -> str:
    def show(e: object) -> str:
        return e if isinstance(e, str) else "(" + " ".join(show(x) for x in e) + ")"
    text = show(expr)  # type: ignore[arg-type]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _indices(declared: set[int], kind: str) -> int:
    if declared != set(range(len(declared))):
        missing = sorted(set(range(max(declared) + 1)) - declared)[:5]
        raise _Bad(f"the {kind} variables must be numbered from 0 without gaps; missing "
                   f"{', '.join(f'{kind}_{i}' for i in missing)}")
    return len(declared)


def _disjunct(atoms: list[dict], k: int, n: int) -> Disjunct | None:
    """A conjunction of atoms (term <= 0) as a box and (C, d); None when it is empty."""
    lo, hi = np.full(k, -np.inf), np.full(k, np.inf)
    rows, bounds = [], []
    for atom in atoms:
        constant = atom.get("", 0.0)
        terms = {key: c for key, c in atom.items() if key and c != 0.0}
        kinds = {key[0] for key in terms}
        if not terms:
            if constant > 0.0:
                return None  # a false constant comparison: this disjunct is empty
            continue
        if kinds == {"X"}:
            if len(terms) != 1:
                raise _Bad(f"input constraints must bound single variables (a box); got one "
                           f"over {', '.join(sorted(terms))}")
            ((key, c),) = terms.items()
            i, limit = int(key[2:]), -constant / c
            if c > 0:
                hi[i] = min(hi[i], limit)
            else:
                lo[i] = max(lo[i], limit)
        elif kinds == {"Y"}:
            row = np.zeros(n)
            for key, c in terms.items():
                row[int(key[2:])] += c
            rows.append(row)
            bounds.append(-constant)
        else:
            raise _Bad("a constraint mixes inputs X and outputs Y; layerinv reads input boxes "
                       "and output constraints")
    unbounded = [i for i in range(k) if not (np.isfinite(lo[i]) and np.isfinite(hi[i]))]
    if unbounded:
        raise _Bad(f"every input needs a lower and an upper bound; X_{unbounded[0]} lacks one")
    if np.any(lo > hi):
        return None  # an empty box: no input, this disjunct is unsatisfiable
    if not rows:  # no output constraint: every output is unsafe (0 <= 0)
        rows, bounds = [np.zeros(n)], [0.0]
    return Disjunct(lo, hi, np.array(rows), np.array(bounds, dtype=np.float64))


def read_vnnlib(path: str | os.PathLike[str]) -> VnnlibProperty:
    """Read a VNN-LIB property (the forms listed in the module doc) as disjuncts.

    Disjuncts whose box or constant comparisons are empty are dropped (they cannot be met).
    Anything else is one InputError naming the file and what was wrong.
    """
    name = os.fspath(path)
    try:
        if os.path.getsize(name) > MAX_BYTES:
            raise InputError(f"VNN-LIB file {name!r} is larger than {MAX_BYTES} bytes")
        with open(name, "rb") as handle:
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"VNN-LIB file {name!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"VNN-LIB file {name!r} is a directory") from None
    except UnicodeDecodeError:
        raise InputError(f"VNN-LIB file {name!r} is not text (UTF-8)") from None
    except OSError as exc:
        raise InputError(f"VNN-LIB file {name!r} could not be read: {exc}") from None
    try:
        reader = _Reader()
        commands = _parse(text)
        if not commands:
            raise _Bad("it holds no command")
        for expr in commands:
            reader.command(expr)
        k = _indices(reader.declared["X"], "X")
        n = _indices(reader.declared["Y"], "Y")
        if k == 0 or n == 0:
            raise _Bad("it declares no input X_i or no output Y_j")
        found = [_disjunct(atoms, k, n) for atoms in reader.formula]
    except _Bad as exc:
        raise InputError(f"VNN-LIB file {name!r}: {exc}") from None
    return VnnlibProperty(k, n, tuple(d for d in found if d is not None))


# --------------------------------------------------------------------------- deciding
def decide(net: Network, prop: VnnlibProperty, *, time_limit: float | None = None
           ) -> tuple[str, np.ndarray | None]:
    """A verifier's answer: ('sat', witness z), ('unsat', None) or ('unknown', None).

    Each disjunct is `exact.preimage_polytope(net, C, d, box=(lo, hi))`: 'sat' as soon as one
    has a witness (verified by a float64 forward pass), 'unsat' only when every disjunct is
    proven infeasible in its box, 'unknown' otherwise (a time limit, numerical trouble).
    `time_limit` applies to each disjunct.
    """
    net = _check_net(net)
    if not isinstance(prop, VnnlibProperty):
        raise InputError(f"prop must be a VnnlibProperty (read_vnnlib); got "
                         f"{type(prop).__name__}")
    if (prop.n_inputs, prop.n_outputs) != (net.input_dim, net.output_dim):
        raise InputError(f"the property has {prop.n_inputs} inputs and {prop.n_outputs} "
                         f"outputs but the network maps {net.input_dim} to {net.output_dim}")
    unknown = False
    for part in prop.disjuncts:
        result = preimage_polytope(net, part.C, part.d, time_limit, box=(part.lo, part.hi))
        if result.exists:
            return "sat", result.z
        unknown = unknown or result.exists is None
    return ("unknown" if unknown else "unsat"), None
