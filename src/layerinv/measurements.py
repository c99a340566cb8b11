"""Measurement operators y = A(x) on a generator's output, and seeded noise models.

Operators (modelled on DeepInverse's `Physics`): every one is a `Measurement` with `in_dim`
(n, the signal's size), `out_dim` (m), `apply(x)` on a signal (n,) or a batch (B, n) giving
(m,) or (B, m), noise-free, and `to_torch()`, a differentiable callable on torch tensors
(N, n) -> (N, m) for `gradient_descent(measurement=...)`. The linear ones (`Identity`, `Mask`,
`Matrix`, `Gaussian`, `Product`) also have `matrix` (the dense (m, n) A), `adjoint(y)` = A^T y
and `lstsq(y)`, the minimum-norm least-squares estimate A^+ y (no prior).

- `Identity(n=None)`: y = x (denoising); n None takes the network's output size.
- `Mask(keep)`: y = x[keep] for a boolean `keep` of length n with at least one True
  (inpainting); `Mask.random(n, fraction, seed)` keeps each entry with probability `fraction`,
  `Mask.block(shape, size, seed=..., corner=...)` hides one size x size square of an image.
  `fold(net)` is the network followed by the mask: its last layer keeps only the kept rows.
- `Matrix(A)`: any dense A; `Gaussian(m, n, seed)`: A with i.i.d. N(0, 1/m) entries
  (compressed sensing; E[A^T A] = I).
- `Magnitude(A)`: y = |A x| (real phase retrieval), A a matrix or a linear operator;
  `Magnitude.gaussian(m, n, seed)`.

What a solver may do with an operator, the operator says itself: `linear`, `magnitude`
(y = |M x| with M its `matrix`) and `foldable` (then `fold(net)` is the network followed by the
operator, and the LP methods invert that). `reconstruct` reads these, never the class.

Composition (DeepInverse's `__mul__`): `A * B` is x -> A(B(x)), B linear, the sizes checked
(A.in_dim == B.out_dim). A linear gives a linear `Product`: applied as A after B, matrix
A.matrix @ B.matrix, adjoint B^T A^T, torch form A's after B's, foldable when both sides are
(a mask of a mask is a mask). A a `Magnitude` gives the magnitude of the product, |A B x|.
Anything after a Magnitude (A |B x|) is refused: no solver here models it.

Noise models, each `noise(y)` -> y + noise, seeded: `GaussianNoise(sigma, seed)`,
`UniformNoise(amplitude, seed)` (i.i.d. uniform on [-amplitude, amplitude]) and
`SparseOutliers(fraction, magnitude, seed)` (round(fraction * m) entries of each measurement
vector, chosen uniformly, get +-magnitude with a random sign). A noise object holds one
numpy Generator made from its seed: two objects with the same seed produce the same sequence of
draws, and successive calls on one object give fresh (different) noise. `reset()` rewinds.

Noise attached to an operator (DeepInverse's `noise_model`): `A.with_noise(GaussianNoise(0.01,
seed=1))` is A with that noise; `measure(x)` (also `A(x)`) draws noise(A(x)), while `apply`,
`to_torch` and every solver stay noise-free. `A * B` carries A's noise; a noisy B is refused
(its noise would be lost inside the product).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from layerinv._blas import single_threaded_blas
from layerinv._validation import as_float_array, check_batch, check_finite, check_positive, make_rng
from layerinv.errors import InputError
from layerinv.network import Layer, Network

if TYPE_CHECKING:
    import torch


def _check_dim(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be an int >= 1; got {value!r}")
    return int(value)


class Measurement:
    """Base class: y = A(x), batched. Subclasses set `in_dim`, `out_dim` and `_forward`.

    What the solvers may do with an operator is the operator's own answer, never a test of its
    class: `linear` (it has `matrix`, `adjoint` and `lstsq`), `magnitude` (y = |M x| with
    M = `matrix`, for phase retrieval) and `foldable` (`fold(net)` is the network followed by
    the operator, so the LP methods invert that network directly).
    """

    linear: bool = False
    magnitude: bool = False
    foldable: bool = False
    noise: Noise | None = None
    in_dim: int | None
    out_dim: int | None

    def apply(self, x: object) -> np.ndarray:
        """A(x), noise-free, for a signal (in_dim,) or a batch (B, in_dim): (out_dim,) or (B,
        out_dim)."""
        width = self.in_dim if self.in_dim is not None else int(np.shape(x)[-1])
        batch, single = check_batch(x, width, "x")
        out = self._forward(batch)
        return out[0] if single else out

    def measure(self, x: object) -> np.ndarray:
        """A noisy measurement noise(A(x)) with the attached noise (DeepInverse's `physics(x)`),
        or A(x) itself when none is attached. Each call draws fresh noise from the noise
        object's generator; `self.noise.reset()` rewinds it."""
        y = self.apply(x)
        return y if self.noise is None else self.noise(y)

    __call__ = measure

    def with_noise(self, noise: Noise | None) -> Measurement:
        """This operator with `noise` attached (None: without noise), as a new operator.

        The noise object is shared, not copied: its draws advance with every `measure`.
        `apply`, `to_torch` and the solvers stay noise-free.
        """
        if noise is not None and not isinstance(noise, Noise):
            raise InputError(f"noise must be a layerinv.measurements noise model "
                             f"(GaussianNoise, UniformNoise, SparseOutliers) or None; got "
                             f"{type(noise).__name__}")
        out = copy.copy(self)  # the arrays inside are read-only, so sharing them is safe
        out.noise = noise
        return out

    def __mul__(self, other: object) -> Measurement:
        """A * B: the operator x -> A(B(x)) (DeepInverse's order), carrying A's noise.

        B must be linear; A linear gives a linear `Product` (matrix A.matrix @ B.matrix,
        adjoint B^T A^T), A a `Magnitude` gives the magnitude of the product, |A B x|.
        """
        outer, inner = _fit_for_product(self, other)
        return outer._compose(inner).with_noise(self.noise)

    def __rmul__(self, other: object) -> Measurement:
        raise InputError(f"A * B needs A to be a measurement operator; got A a "
                         f"{type(other).__name__} and B = {self!r}")

    def _compose(self, inner: Measurement) -> Measurement:
        """This operator after the linear, size-checked `inner` (without noise)."""
        raise InputError(f"A * B has no meaning here for A = {self!r}: only a linear operator "
                         f"or a Magnitude can be applied after another operator")

    def fold(self, net: Network) -> Network:
        """The network followed by this operator, when `foldable`."""
        raise InputError(f"{self!r} does not fold into the network (Identity, Mask and "
                         f"products of them do); use method 'pgd' or 'gd'")

    def _forward(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_torch(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A differentiable callable on torch tensors (N, in_dim) -> (N, out_dim), noise-free."""
        raise NotImplementedError  # pragma: no cover - abstract

    def check_signal_size(self, n: int, what: str = "the network's output") -> None:
        """Raise an InputError unless this operator takes signals of size n."""
        if self.in_dim is not None and self.in_dim != n:
            raise InputError(f"the measurement takes signals of size in_dim = {self.in_dim} "
                             f"but {what} has size {n}: {self!r} does not fit")

    def resolved(self, n: int) -> Measurement:
        """This operator for signals of size n (only Identity() without a size changes)."""
        self.check_signal_size(n)
        return self

    def __repr__(self) -> str:
        noise = "" if self.noise is None else f".with_noise({self.noise!r})"
        return self._describe() + noise

    def _describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _fit_for_product(outer: Measurement, inner: object) -> tuple[Measurement, Measurement]:
    """The two sides of outer * inner, checked, with a size-less Identity() given its size."""
    if not isinstance(inner, Measurement):
        raise InputError(f"A * B needs B to be a measurement operator; got A = {outer!r}, "
                         f"B a {type(inner).__name__}")
    if not inner.linear:
        raise InputError(f"A * B needs B linear (Identity, Mask, Matrix, Gaussian or a product "
                         f"of them): no solver here models an operator after a non-linear one; "
                         f"got B = {inner!r}")
    if inner.noise is not None:
        raise InputError(f"A * B keeps only A's noise, and B = {inner!r} carries noise; attach "
                         f"it to the product instead: (A * B).with_noise(...)")
    if outer.in_dim is None and inner.out_dim is not None:
        outer = outer.resolved(inner.out_dim)
    if inner.in_dim is None and outer.in_dim is not None:
        inner = inner.resolved(outer.in_dim)
    if outer.in_dim != inner.out_dim:
        raise InputError(f"A * B needs A's input size to equal B's output size; got A = "
                         f"{outer!r} taking size {outer.in_dim} and B = {inner!r} giving size "
                         f"{inner.out_dim}")
    return outer.with_noise(None), inner


class _TorchMatrix:
    """x -> x @ A^T on torch tensors, with A converted once per dtype and device."""

    def __init__(self, matrix: np.ndarray, absolute: bool = False):
        self.matrix = matrix
        self.absolute = absolute
        self._cache: dict[tuple[Any, Any], Any] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        key = (x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = torch.tensor(np.array(self.matrix), dtype=x.dtype, device=x.device)
        out = x.reshape(x.shape[0], -1) @ self._cache[key].T
        return out.abs() if self.absolute else out


class LinearMeasurement(Measurement):
    """A linear operator with a dense matrix A (m, n)."""

    linear = True

    @property
    def matrix(self) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - abstract

    def adjoint(self, y: object) -> np.ndarray:
        """A^T y for (out_dim,) or (B, out_dim)."""
        batch, single = check_batch(y, self.out_dim, "y")
        out = batch @ self.matrix
        return out[0] if single else out

    def lstsq(self, y: object) -> np.ndarray:
        """The minimum-norm least-squares signal A^+ y (no prior): (in_dim,) or (B, in_dim)."""
        batch, single = check_batch(y, self.out_dim, "y")
        with single_threaded_blas():  # small problems: see _blas.py
            out = np.linalg.lstsq(self.matrix, batch.T, rcond=None)[0].T
        return out[0] if single else out

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return batch @ self.matrix.T

    def to_torch(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return _TorchMatrix(self.matrix)

    def _compose(self, inner: Measurement) -> Measurement:
        return Product(self, inner)


class Identity(LinearMeasurement):
    """y = x. With n None the size is taken from the network (`resolved`)."""

    foldable = True

    def __init__(self, n: int | None = None):
        self.in_dim = self.out_dim = None if n is None else _check_dim(n, "n")

    @property
    def matrix(self) -> np.ndarray:
        if self.in_dim is None:
            raise InputError("Identity() has no size yet: give n, or use it through "
                             "reconstruct, which takes n from the network")
        return np.eye(self.in_dim)

    def resolved(self, n: int) -> Identity:
        self.check_signal_size(n)
        return self if self.in_dim is not None else Identity(n).with_noise(self.noise)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()

    def adjoint(self, y: object) -> np.ndarray:
        width = self.out_dim if self.out_dim is not None else int(np.shape(y)[-1])
        batch, single = check_batch(y, width, "y")
        return batch[0].copy() if single else batch.copy()

    lstsq = adjoint

    def to_torch(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return _identity_torch

    def fold(self, net: Network) -> Network:
        """The network followed by this operator: the network itself."""
        self.check_signal_size(net.output_dim)
        return net

    def _describe(self) -> str:
        return "Identity()" if self.in_dim is None else f"Identity(n={self.in_dim})"


def _identity_torch(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


class _TorchMask:
    def __init__(self, index: np.ndarray):
        self.index = index
        self._cache: dict[Any, Any] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if x.device not in self._cache:
            self._cache[x.device] = torch.tensor(np.array(self.index), device=x.device)
        return x.reshape(x.shape[0], -1)[:, self._cache[x.device]]


class Mask(LinearMeasurement):
    """y = x[keep]: the kept entries of the signal, in order (inpainting)."""

    foldable = True

    def __init__(self, keep: object):
        array = np.asarray(keep)
        if array.dtype != np.bool_:
            raise InputError(f"keep must be a boolean array (True = kept entry); got dtype "
                             f"{array.dtype}")
        if array.ndim != 1 or array.size == 0:
            raise InputError(f"keep must be a non-empty 1-D boolean array (flatten an image "
                             f"mask first); got shape {array.shape}")
        if not array.any():
            raise InputError(f"keep must keep at least one entry; all {array.size} are False")
        self.keep = array.copy()
        self.keep.setflags(write=False)
        self.index = np.flatnonzero(self.keep)
        self.in_dim = int(array.size)
        self.out_dim = int(self.index.size)

    @classmethod
    def random(cls, n: int, fraction: float, seed: int | np.random.Generator | None = None
               ) -> Mask:
        """Each of n entries kept independently with probability `fraction` (at least one)."""
        n = _check_dim(n, "n")
        fraction = check_positive(fraction, "fraction")
        if fraction > 1:
            raise InputError(f"fraction must be in (0, 1]; got {fraction!r}")
        rng = make_rng(seed)
        keep = rng.random(n) < fraction
        if not keep.any():
            keep[rng.integers(n)] = True
        return cls(keep)

    @classmethod
    def block(cls, shape: int | Sequence[int], size: int, *,
              seed: int | np.random.Generator | None = None,
              corner: Sequence[int] | None = None) -> Mask:
        """Every pixel of a (rows, cols) image kept except one size x size square.

        The square's top-left corner is `corner`, or uniform over the positions where it fits
        whole (from `seed`). An int shape is a square image. The mask is flattened row-major,
        as `image.ravel()` is.
        """
        rows, cols = (shape, shape) if isinstance(shape, numbers.Integral) else tuple(shape)
        rows, cols = _check_dim(rows, "shape[0]"), _check_dim(cols, "shape[1]")
        size = _check_dim(size, "size")
        if size > rows or size > cols or size * size == rows * cols:
            raise InputError(f"a {size} x {size} block must fit inside the {rows} x {cols} "
                             f"image and leave at least one pixel kept")
        if corner is None:
            rng = make_rng(seed)
            top, left = int(rng.integers(0, rows - size + 1)), int(rng.integers(0, cols - size + 1))
        else:
            top, left = (int(c) for c in corner)
            if not (0 <= top <= rows - size and 0 <= left <= cols - size):
                raise InputError(f"corner {tuple(corner)} puts the {size} x {size} block outside "
                                 f"the {rows} x {cols} image")
        keep = np.ones((rows, cols), dtype=bool)
        keep[top:top + size, left:left + size] = False
        return cls(keep.ravel())

    @property
    def matrix(self) -> np.ndarray:
        return np.eye(self.in_dim)[self.index]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return batch[:, self.index]

    def adjoint(self, y: object) -> np.ndarray:
        """Zero-filled: the kept entries put back in place, the others 0."""
        batch, single = check_batch(y, self.out_dim, "y")
        out = np.zeros((batch.shape[0], self.in_dim))
        out[:, self.index] = batch
        return out[0] if single else out

    lstsq = adjoint

    def to_torch(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return _TorchMask(self.index)

    def fold(self, net: Network) -> Network:
        """The network followed by the mask: the last layer keeps only the kept rows (its
        operator's `row_subset`, an operator of the same kind)."""
        self.check_signal_size(net.output_dim, "the network's output")
        if self.out_dim == self.in_dim:
            return net
        last = net.layers[-1]
        bias = None if last.bias is None else last.bias[self.index]
        return Network([*net.layers[:-1],
                        Layer(last.operator.row_subset(self.index), bias, last.activation)])

    def _describe(self) -> str:
        return f"Mask(keeps {self.out_dim} of {self.in_dim})"


class Matrix(LinearMeasurement):
    """y = A x for a dense, finite A of shape (m, n)."""

    def __init__(self, matrix: object):
        array = as_float_array(matrix, "A")
        if array.ndim != 2 or 0 in array.shape:
            raise InputError(f"A must be a non-empty 2-D array (m, n); got shape {array.shape}")
        check_finite(array, "A")
        if not np.any(array):
            raise InputError(f"A must have a non-zero entry (an all-zero matrix measures "
                             f"nothing); got an all-zero array of shape {array.shape}")
        self._matrix = np.ascontiguousarray(array)
        self._matrix.setflags(write=False)
        self.out_dim, self.in_dim = (int(s) for s in array.shape)

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix

    def _describe(self) -> str:
        return f"Matrix(m={self.out_dim}, n={self.in_dim})"


class Gaussian(Matrix):
    """y = A x, A (m, n) with i.i.d. N(0, 1/m) entries drawn from `seed` (E[A^T A] = I)."""

    def __init__(self, m: int, n: int, seed: int | np.random.Generator | None = None):
        m, n = _check_dim(m, "m"), _check_dim(n, "n")
        super().__init__(make_rng(seed).normal(0.0, 1.0 / np.sqrt(m), size=(m, n)))

    def _describe(self) -> str:
        return f"Gaussian(m={self.out_dim}, n={self.in_dim})"


class Magnitude(Measurement):
    """y = |A x| (real phase retrieval); A a matrix or a linear Measurement (without noise:
    attach noise to the Magnitude itself, which adds it after the |.|)."""

    magnitude = True

    def __init__(self, A: object):
        if isinstance(A, Measurement):
            if not isinstance(A, LinearMeasurement):
                raise InputError(f"Magnitude needs a linear operator or a matrix; got {A!r}")
            if A.noise is not None:
                raise InputError(f"Magnitude(A) measures |A x| noise-free, and A = {A!r} "
                                 f"carries noise; attach it to the Magnitude instead")
            self.inner = A
        else:
            self.inner = Matrix(A)
        self.in_dim, self.out_dim = self.inner.in_dim, self.inner.out_dim
        if self.in_dim is None:
            raise InputError("Magnitude needs an operator with a size; Identity() has none")

    @classmethod
    def gaussian(cls, m: int, n: int, seed: int | np.random.Generator | None = None
                 ) -> Magnitude:
        """|A x| with A = Gaussian(m, n, seed)."""
        return cls(Gaussian(m, n, seed))

    @property
    def matrix(self) -> np.ndarray:
        """The A inside the magnitude."""
        return self.inner.matrix

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return np.abs(batch @ self.matrix.T)

    def to_torch(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return _TorchMatrix(self.matrix, absolute=True)

    def _compose(self, inner: Measurement) -> Measurement:
        """|A (B x)|: the magnitude of the linear product A * B."""
        return Magnitude(self.inner * inner)

    def _describe(self) -> str:
        return f"Magnitude({self.inner!r})"


class _TorchProduct:
    """x -> outer(inner(x)) on torch tensors."""

    def __init__(self, outer: Callable[[torch.Tensor], torch.Tensor],
                 inner: Callable[[torch.Tensor], torch.Tensor]):
        self.outer, self.inner = outer, inner

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x))


class Product(LinearMeasurement):
    """A * B for linear A and B: y = A(B(x)), made by `A * B` (which checks the sizes).

    Applied as A after B (a mask inside stays an index, never a dense product); `matrix` is
    A.matrix @ B.matrix, the adjoint B^T A^T y, the torch form A's after B's. It folds into
    the network when both sides do (B's fold, then A's): a mask of a mask is a mask.
    """

    def __init__(self, outer: LinearMeasurement, inner: LinearMeasurement):
        self.outer, self.inner = outer, inner
        self.in_dim, self.out_dim = inner.in_dim, outer.out_dim
        self.foldable = outer.foldable and inner.foldable

    @property
    def matrix(self) -> np.ndarray:
        return self.outer.matrix @ self.inner.matrix

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.outer._forward(self.inner._forward(batch))

    def adjoint(self, y: object) -> np.ndarray:
        """B^T (A^T y): the adjoints in reverse order."""
        return self.inner.adjoint(self.outer.adjoint(y))

    def to_torch(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return _TorchProduct(self.outer.to_torch(), self.inner.to_torch())

    def fold(self, net: Network) -> Network:
        """The network followed by B, then by A (both must fold)."""
        if not self.foldable:
            return super().fold(net)
        self.check_signal_size(net.output_dim)
        return self.outer.fold(self.inner.fold(net))

    def resolved(self, n: int) -> Measurement:
        """Identity() * Identity() has no size until here."""
        self.check_signal_size(n)
        if self.in_dim is not None:
            return self
        return (self.outer.resolved(n) * self.inner.resolved(n)).with_noise(self.noise)

    def _describe(self) -> str:
        return f"{self.outer!r} * {self.inner!r}"


# ------------------------------------------------------------------------------------ noise
class Noise:
    """Base class: `noise(y)` returns y + a seeded draw of the same shape."""

    def __init__(self, seed: int | None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise InputError(f"seed must be an int or None; got {seed!r}")
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Rewind: the next call draws what the first call drew."""
        self._rng = np.random.default_rng(self.seed)

    def sample(self, shape: tuple[int, ...]) -> np.ndarray:
        """A draw of the noise alone."""
        raise NotImplementedError  # pragma: no cover - abstract

    def apply(self, y: object) -> np.ndarray:
        array = as_float_array(y, "y")
        if array.ndim not in (1, 2) or array.size == 0:
            raise InputError(f"y must have shape (m,) or (B, m) with m >= 1; got {array.shape}")
        check_finite(array, "y")
        return array + self.sample(array.shape)

    __call__ = apply


class GaussianNoise(Noise):
    """i.i.d. N(0, sigma^2) added to every entry."""

    def __init__(self, sigma: float, seed: int | None = None):
        self.sigma = check_positive(sigma, "sigma", allow_zero=True)
        super().__init__(seed)

    def sample(self, shape: tuple[int, ...]) -> np.ndarray:
        return self._rng.normal(0.0, 1.0, size=shape) * self.sigma

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma:g}, seed={self.seed})"


class UniformNoise(Noise):
    """i.i.d. uniform on [-amplitude, amplitude] (so ||noise||_inf <= amplitude)."""

    def __init__(self, amplitude: float, seed: int | None = None):
        self.amplitude = check_positive(amplitude, "amplitude", allow_zero=True)
        super().__init__(seed)

    def sample(self, shape: tuple[int, ...]) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, size=shape) * self.amplitude

    def __repr__(self) -> str:
        return f"UniformNoise(amplitude={self.amplitude:g}, seed={self.seed})"


class SparseOutliers(Noise):
    """round(fraction * m) entries of each vector, uniformly chosen, get +-magnitude."""

    def __init__(self, fraction: float, magnitude: float, seed: int | None = None):
        self.fraction = check_positive(fraction, "fraction", allow_zero=True)
        if self.fraction > 1:
            raise InputError(f"fraction must be in [0, 1]; got {fraction!r}")
        self.magnitude = check_positive(magnitude, "magnitude", allow_zero=True)
        super().__init__(seed)

    def sample(self, shape: tuple[int, ...]) -> np.ndarray:
        rows = shape[0] if len(shape) == 2 else 1
        m = shape[-1]
        count = round(self.fraction * m)
        out = np.zeros((rows, m))
        for row in out:
            where = self._rng.choice(m, size=count, replace=False)
            row[where] = self.magnitude * self._rng.choice((-1.0, 1.0), size=count)
        return out.reshape(shape)

    def __repr__(self) -> str:
        return (f"SparseOutliers(fraction={self.fraction:g}, magnitude={self.magnitude:g}, "
                f"seed={self.seed})")


__all__ = [
    "Gaussian",
    "GaussianNoise",
    "Identity",
    "LinearMeasurement",
    "Magnitude",
    "Mask",
    "Matrix",
    "Measurement",
    "Noise",
    "Product",
    "SparseOutliers",
    "UniformNoise",
]
