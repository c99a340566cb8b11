"""Convolutions as layer operators: PyTorch's Conv2d and ConvTranspose2d, matrix-free.

A layer's vectors are flat: an image (C, H, W) is its C-order ravel, as PyTorch's
`x.reshape(B, -1)`. `Conv2dOperator` stores the kernel and the geometry only (the dense matrix
of one DCGAN layer, 12288 x 65536, would be 6.4 GB; its kernel is 24 KB), and computes

- `apply` / `adjoint` as a loop over the kernel's taps, each one BLAS product of a strided
  window of the zero-padded input (channels last) with that tap's (C_in, C_out) matrix;
- `rows(index)` by index arithmetic for the chosen rows only: row r of a convolution is the
  output position (o, i, j), whose entries are kernel[o, c, a, b] at the input position
  (c, i*s - p + a*d, j*s - p + b*d) inside the image;
- `row_subset` as a `SparseOperator` of those rows, `gram` through them, `abs` the same
  convolution with |kernel|.

ConvTranspose2d is the adjoint of a Conv2d (its definition in PyTorch: the gradient of conv2d
with respect to its input): one "correlation" geometry serves both, and the transposed
operator swaps apply and adjoint. Its output padding is the extra rows/columns of the
correlation's input that no window reaches (they receive zeros, and the bias).

NumPy and SciPy only: PyTorch is an optional dependency (`_torch_io.py` converts modules).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse

from layerinv._sparse_picks import picked_product
from layerinv._validation import as_float_array, check_finite
from layerinv.errors import InputError
from layerinv.operators import LinearOperator, row_indices

Pair = tuple[int, int]


def _pair(value: object, name: str, low: int) -> Pair:
    """An int or a pair of ints, each >= low, as a pair (PyTorch's convention)."""
    items = value if isinstance(value, tuple | list) else (value, value)
    if (len(items) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                   for v in items) or min(items) < low):
        raise InputError(f"{name} must be an int >= {low} or a pair of them; got {value!r}")
    return int(items[0]), int(items[1])


def _image_shape(value: object, name: str) -> tuple[int, int, int]:
    try:
        shape = tuple(value)  # type: ignore[arg-type]
    except TypeError:
        shape = ()
    if (len(shape) != 3 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                   for v in shape) or min(shape) < 1):
        raise InputError(f"{name} must be an image shape (C, H, W) of positive ints; "
                         f"got {value!r}")
    return int(shape[0]), int(shape[1]), int(shape[2])


class Conv2dOperator(LinearOperator):
    """nn.Conv2d (transposed=False) or nn.ConvTranspose2d (transposed=True) without bias.

    `kernel` has PyTorch's layout: (C_out, C_in, kH, kW) for a convolution, (C_in, C_out, kH,
    kW) for a transposed one. `input_shape` is the input image (C_in, H, W); `output_shape`
    follows from the geometry as in PyTorch. groups=1 and zero padding only.
    """

    def __init__(self, kernel: object, input_shape: object, *, stride: object = 1,
                 padding: object = 0, dilation: object = 1, output_padding: object = 0,
                 transposed: bool = False):
        kernel = as_float_array(kernel, "kernel")
        if kernel.ndim != 4 or 0 in kernel.shape:
            raise InputError(f"kernel must be a non-empty 4-D array (C_out, C_in, kH, kW), or "
                             f"(C_in, C_out, kH, kW) when transposed; got shape {kernel.shape}")
        check_finite(kernel, "kernel")
        self.input_shape = _image_shape(input_shape, "input_shape")
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        self.output_padding = _pair(output_padding, "output_padding", 0)
        self.transposed = bool(transposed)
        in_axis = 0 if self.transposed else 1
        if kernel.shape[in_axis] != self.input_shape[0]:
            raise InputError(f"kernel of shape {kernel.shape} takes {kernel.shape[in_axis]} "
                             f"input channels but input_shape {self.input_shape} has "
                             f"{self.input_shape[0]}")
        if not self.transposed and self.output_padding != (0, 0):
            raise InputError(f"output_padding is for transposed convolutions only; got "
                             f"{self.output_padding} with transposed=False")
        self.kernel = np.ascontiguousarray(kernel)
        self.kernel.setflags(write=False)
        self.output_shape = self._output_shape()
        self.shape = (math.prod(self.output_shape), math.prod(self.input_shape))

    def _output_shape(self) -> tuple[int, int, int]:
        sides = []
        for axis in (0, 1):
            k = self.kernel.shape[2 + axis]
            s, p, d = self.stride[axis], self.padding[axis], self.dilation[axis]
            n = self.input_shape[1 + axis]
            if self.transposed:
                extra = self.output_padding[axis]
                if extra >= max(s, d):
                    raise InputError(f"output_padding must be smaller than stride or dilation "
                                     f"(PyTorch's rule); got {self.output_padding} with stride "
                                     f"{self.stride} and dilation {self.dilation}")
                side = (n - 1) * s - 2 * p + d * (k - 1) + extra + 1
            else:
                side = (n + 2 * p - d * (k - 1) - 1) // s + 1
            if side < 1:
                raise InputError(f"the convolution's output would be empty: kernel "
                                 f"{self.kernel.shape[2:]}, stride {self.stride}, padding "
                                 f"{self.padding}, dilation {self.dilation} on input "
                                 f"{self.input_shape}")
            sides.append(side)
        channels = self.kernel.shape[1 if self.transposed else 0]
        return int(channels), sides[0], sides[1]

    # The correlation y[o, i, j] = sum kernel[o, c, a, b] x[c, i*s - p + a*d, j*s - p + b*d]
    # from its input image to its output image; a transposed convolution is its adjoint.
    @property
    def _correlation(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(input image, output image) of the correlation."""
        if self.transposed:
            return self.output_shape, self.input_shape
        return self.input_shape, self.output_shape

    def _buffer_sides(self, inner: tuple[int, int, int], outer: tuple[int, int, int]) -> Pair:
        """The zero-padded input's sides: the image at offset p, and every window inside."""
        sides = []
        for axis in (0, 1):
            k, s = self.kernel.shape[2 + axis], self.stride[axis]
            p, d = self.padding[axis], self.dilation[axis]
            sides.append(max(p + inner[1 + axis], (outer[1 + axis] - 1) * s + (k - 1) * d + 1))
        return sides[0], sides[1]

    def _windows(self, outer: tuple[int, int, int]):
        """(tap, rows slice, columns slice) of every tap: its (C_out, C_in) matrix, contiguous
        (a strided slice of the kernel makes NumPy's matmul skip BLAS: 14x slower on a DCGAN layer,
        measured), and the padded input it reads."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        _, ho, wo = outer
        taps = np.ascontiguousarray(self.kernel.transpose(2, 3, 0, 1))
        for a in range(self.kernel.shape[2]):
            for b in range(self.kernel.shape[3]):
                yield (taps[a, b], slice(a * dh, a * dh + (ho - 1) * sh + 1, sh),
                       slice(b * dw, b * dw + (wo - 1) * sw + 1, sw))

    def _correlate(self, x: np.ndarray) -> np.ndarray:
        """The correlation of a batch (B, n_in of the correlation), flat in and out."""
        inner, outer = self._correlation
        (ci, hi, wi), (co, ho, wo) = inner, outer
        ph, pw = self.padding
        batch = x.shape[0]
        padded = np.zeros((batch, *self._buffer_sides(inner, outer), ci))
        padded[:, ph:ph + hi, pw:pw + wi, :] = x.reshape(batch, ci, hi, wi).transpose(0, 2, 3, 1)
        out = np.zeros((batch * ho * wo, co))
        for tap, rows, cols in self._windows(outer):
            out += padded[:, rows, cols, :].reshape(-1, ci) @ tap.T
        return out.reshape(batch, ho, wo, co).transpose(0, 3, 1, 2).reshape(batch, -1)

    def _correlate_adjoint(self, y: np.ndarray) -> np.ndarray:
        """The correlation's adjoint (a transposed convolution) of a batch, flat in and out."""
        inner, outer = self._correlation
        (ci, hi, wi), (co, ho, wo) = inner, outer
        ph, pw = self.padding
        batch = y.shape[0]
        columns = y.reshape(batch, co, ho, wo).transpose(0, 2, 3, 1).reshape(-1, co)
        padded = np.zeros((batch, *self._buffer_sides(inner, outer), ci))
        for tap, rows, cols in self._windows(outer):
            padded[:, rows, cols, :] += (columns @ tap).reshape(batch, ho, wo, ci)
        image = padded[:, ph:ph + hi, pw:pw + wi, :]
        return image.transpose(0, 3, 1, 2).reshape(batch, -1)

    def apply(self, x: np.ndarray) -> np.ndarray:
        batch = np.atleast_2d(x)
        out = self._correlate_adjoint(batch) if self.transposed else self._correlate(batch)
        return out[0] if np.ndim(x) == 1 else out

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        batch = np.atleast_2d(y)
        out = self._correlate(batch) if self.transposed else self._correlate_adjoint(batch)
        return out[0] if np.ndim(y) == 1 else out

    def columns_product(self, index: np.ndarray, values: np.ndarray) -> np.ndarray:
        """W[:, index] @ values (n_out, c) for integer column indices `index` and values
        (len(index), c): the product with a matrix whose only nonzero rows are `index`.

        From the operator's CSC matrix, built on first use and kept (not pickled): the cost
        is the nonzeros of those columns, where `matmat` pays for every column. A derived
        copy of the kernel, so the operator's meaning never changes; the sums run in another
        order than `matmat`'s (round-off apart)."""
        return picked_product(self._cached("_csc"), index, values)

    def rows_product(self, index: np.ndarray, values: np.ndarray) -> np.ndarray:
        """W[index, :] @ values (len(index), c) for integer row indices `index` and values
        (n_in, c): the rows' product, from the operator's CSR matrix (built on first use and
        kept, not pickled; its cost the nonzeros of those rows)."""
        return picked_product(self._cached("_csr"), index, values)

    def _cached(self, name: str) -> scipy.sparse.csr_array | scipy.sparse.csc_array:
        """The operator as a sparse matrix, "_csr" or "_csc": a derived copy of the kernel,
        so the operator's meaning never changes."""
        matrix = self.__dict__.get(name)
        if matrix is None:
            matrix = self._csr_rows(np.arange(self.n_out))
            matrix = matrix.tocsc() if name == "_csc" else matrix
            self.__dict__[name] = matrix
        return matrix

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for cache in ("_csc", "_csr"):  # rebuilt on demand
            state.pop(cache, None)
        return state

    # ------------------------------------------------------------------ rows
    def rows(self, index: np.ndarray | None = None, *, sparse: bool = False
             ) -> np.ndarray | scipy.sparse.csr_array:
        chosen = self._csr_rows(row_indices(index, self.n_out))
        return chosen if sparse else chosen.toarray()

    def _csr_rows(self, rows: np.ndarray) -> scipy.sparse.csr_array:
        """The rows `rows` (integer indices) as a canonical CSR array (sorted, no zeros)."""
        if rows.size and (rows.min() < -self.n_out or rows.max() >= self.n_out):
            raise IndexError(f"row index out of range for {self.n_out} rows")
        rows = rows % self.n_out
        if self.transposed:
            columns, values = self._transposed_entries(rows)
        else:
            columns, values = self._entries(rows)
        keep = (columns >= 0) & (values != 0.0)
        counts = keep.reshape(len(rows), -1).sum(axis=1) if len(rows) else np.zeros(0, int)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return scipy.sparse.csr_array((values[keep], columns[keep], indptr),
                                      shape=(len(rows), self.n_in))

    def _entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Columns (-1 outside the image) and values, (R, C_in, kH, kW), of convolution rows."""
        (ci, hi, wi), (co, ho, wo) = self._correlation
        o, i, j = np.unravel_index(rows, (co, ho, wo))
        y = self._taps(i, 0)  # (R, kH): the input row each tap reads
        x = self._taps(j, 1)
        inside = ((y >= 0) & (y < hi))[:, None, :, None] & ((x >= 0) & (x < wi))[:, None, None, :]
        channel = np.arange(ci)[None, :, None, None]
        columns = channel * (hi * wi) + y[:, None, :, None] * wi + x[:, None, None, :]
        return np.where(inside, columns, -1), self.kernel[o]

    def _taps(self, position: np.ndarray, axis: int) -> np.ndarray:
        k = self.kernel.shape[2 + axis]
        s, p, d = self.stride[axis], self.padding[axis], self.dilation[axis]
        return position[:, None] * s - p + np.arange(k)[None, :] * d

    def _transposed_entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Columns and values, (R, C_in, kH, kW), of transposed-convolution rows: row r is the
        correlation's input position (c, y, x), read by the output (o, i, j) whose tap (a, b)
        lands on it: i*s - p + a*d = y. The taps run backwards so that columns come sorted."""
        (ci, hi, wi), (co, ho, wo) = self._correlation
        c, y, x = np.unravel_index(rows, (ci, hi, wi))
        i, i_ok = self._sources(y, 0)
        j, j_ok = self._sources(x, 1)
        inside = i_ok[:, None, :, None] & j_ok[:, None, None, :]
        channel = np.arange(co)[None, :, None, None]
        columns = channel * (ho * wo) + i[:, None, :, None] * wo + j[:, None, None, :]
        values = self.kernel[:, c].transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
        return np.where(inside, columns, -1), values

    def _sources(self, position: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """For each position and tap (last tap first), the correlation output reading it."""
        k = self.kernel.shape[2 + axis]
        s, p, d = self.stride[axis], self.padding[axis], self.dilation[axis]
        n_out = self._correlation[1][1 + axis]
        shifted = position[:, None] + p - np.arange(k)[::-1][None, :] * d  # = i * s
        source = shifted // s
        return source, (shifted % s == 0) & (shifted >= 0) & (source < n_out)

    def abs(self) -> Conv2dOperator:
        return self._with_kernel(np.abs(self.kernel))

    def scaled(self, rows: np.ndarray | None = None,
               columns: np.ndarray | None = None) -> LinearOperator:
        """Folds per-channel scales into the kernel; any other scale stays a diagonal factor."""
        out_axis, in_axis = (1, 0) if self.transposed else (0, 1)
        row_scale = _per_channel(rows, self.output_shape)
        column_scale = _per_channel(columns, self.input_shape)
        kernel = self.kernel
        if row_scale is not None:
            kernel = kernel * _along(row_scale, out_axis)
        if column_scale is not None:
            kernel = kernel * _along(column_scale, in_axis)
        folded = self._with_kernel(kernel)
        return LinearOperator.scaled(folded, None if row_scale is not None else rows,
                                     None if column_scale is not None else columns)

    def _with_kernel(self, kernel: np.ndarray) -> Conv2dOperator:
        return Conv2dOperator(kernel, self.input_shape, stride=self.stride,
                              padding=self.padding, dilation=self.dilation,
                              output_padding=self.output_padding, transposed=self.transposed)

    def __repr__(self) -> str:
        kind = "transposed, " if self.transposed else ""
        return (f"Conv2dOperator({kind}{self.input_shape} -> {self.output_shape}, kernel "
                f"{self.kernel.shape[2:]}, stride {self.stride}, padding {self.padding}, "
                f"dilation {self.dilation}"
                + (f", output_padding {self.output_padding})" if self.transposed else ")"))


def _per_channel(scale: np.ndarray | None, image: tuple[int, int, int]) -> np.ndarray | None:
    """One value per channel where a flat scale over the image is constant on each channel."""
    if scale is None:
        return None
    by_channel = np.asarray(scale, dtype=np.float64).reshape(image[0], -1)
    return by_channel[:, 0] if np.all(by_channel == by_channel[:, :1]) else None


def _along(values: np.ndarray, axis: int) -> np.ndarray:
    shape = [1, 1, 1, 1]
    shape[axis] = len(values)
    return values.reshape(shape)
