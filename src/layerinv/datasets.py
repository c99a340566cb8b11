"""Read MNIST-style digit files: .npz archives and the original IDX files.

`load_mnist(path)` accepts

- an ``.npz`` with ``images`` (and optionally ``labels``), as written by this project and by
  ``../shared/data/mnist_10k.npz``;
- an ``.npz`` in Keras's layout (``keras.datasets.mnist``'s ``mnist.npz``): ``x_train``,
  ``y_train``, ``x_test``, ``y_test``; ``split`` picks 'train', 'test' or both (train first);
- the original IDX files of LeCun et al. (``train-images-idx3-ubyte``, gzipped or not): the path
  of an images file (its labels file, ``...-labels-idx1-ubyte[.gz]`` next to it, is read when
  present), or a directory holding the IDX files (``split`` as for Keras).

Images come back as float64 in [0, 1], shape (N, 784) (any (N, 28, 28), (N, 784), (N, 28, 28, 1)
or (N, 1, 28, 28) array is flattened): integer grey levels 0..255 are divided by 255; floats
already in [0, 1] are kept; floats in [0, 255] with a maximum above 1 are taken as grey levels
and divided by 255. Anything else (another archive layout, a truncated IDX file, values outside
those ranges, NaN) is a DatasetFileError naming the file and what was wrong.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerinv.errors import LayerinvError

IMAGE_SIDE = 28
IMAGE_SIZE = IMAGE_SIDE * IMAGE_SIDE
SPLITS = ("train", "test", "all")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}
_IDX_PREFIXES = {"train": "train", "test": "t10k"}


class DatasetFileError(LayerinvError, OSError):
    """A digits file that is missing, unreadable or in a layout load_mnist does not know."""

    usage = True  # the file named by --data is wrong: exit status 2 (see errors.py)


@dataclass(frozen=True)
class Digits:
    """Images (N, 784) float64 in [0, 1] and their labels (N,) int64, or None if the file has
    none. Unpacks as ``images, labels = load_mnist(path)``."""

    images: np.ndarray
    labels: np.ndarray | None

    def __iter__(self):
        return iter((self.images, self.labels))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_mnist(path: str | os.PathLike[str], *, split: str = "all") -> Digits:
    """Read digits from an .npz (project or Keras layout), IDX file(s) or an IDX directory.

    `split` ('train', 'test' or 'all') applies to files that hold both splits (Keras's .npz, an
    IDX directory); 'all' concatenates train then test. See the module docstring for formats.
    """
    if split not in SPLITS:
        raise DatasetFileError(f"split must be one of {', '.join(map(repr, SPLITS))}; "
                               f"got {split!r}")
    path = Path(path)
    if path.is_dir():
        return _load_idx_dir(path, split)
    if not path.exists():
        raise DatasetFileError(f"digits file {str(path)!r} does not exist")
    head = _read_head(path)
    if head.startswith(b"PK"):
        return _load_npz(path, split)
    raw = _open_bytes(path)
    if len(raw) >= 4 and raw[:2] == b"\x00\x00" and raw[2] in _IDX_DTYPES:
        return _load_idx_file(path, raw)
    raise DatasetFileError(
        f"{str(path)!r} is neither an .npz archive nor an IDX file (gzipped or not); "
        f"load_mnist reads an .npz with 'images' (+ 'labels') or Keras's x_train/y_train/"
        f"x_test/y_test, the IDX files train-images-idx3-ubyte[.gz] etc., or a directory "
        f"holding them"
    )


# --------------------------------------------------------------------------------- npz
def _load_npz(path: Path, split: str) -> Digits:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetFileError(f"{str(path)!r} is not a readable .npz archive: "
                               f"{type(exc).__name__}: {exc}") from None
    source = repr(str(path))
    if "images" in arrays:
        labels = arrays.get("labels")
        return _digits(arrays["images"], labels, source)
    keras = ("x_train", "y_train", "x_test", "y_test")
    if all(key in arrays for key in keras):
        parts = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
        chosen = ["train", "test"] if split == "all" else [split]
        images = [_digits(arrays[parts[s][0]], arrays[parts[s][1]], f"{source} ({s})")
                  for s in chosen]
        return _concat(images)
    raise DatasetFileError(
        f"{source} holds the arrays {sorted(arrays)}, not digits: load_mnist expects 'images' "
        f"(and optionally 'labels'), or Keras's 'x_train', 'y_train', 'x_test', 'y_test'"
    )


# --------------------------------------------------------------------------------- IDX
def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(4)
    except OSError as exc:
        raise DatasetFileError(f"cannot read {str(path)!r}: {exc}") from None


def _open_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetFileError(f"cannot read {str(path)!r} (a corrupt or truncated gzip?): "
                               f"{type(exc).__name__}: {exc}") from None
    return raw


def _parse_idx(raw: bytes, source: str) -> np.ndarray:
    """An IDX array: magic 0x0000 TT DD, DD big-endian uint32 sizes, then the data."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DatasetFileError(f"{source} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFileError(f"{source} is truncated: its header is cut short")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise DatasetFileError(f"{source} is truncated or has trailing bytes: its header says "
                               f"shape {shape} ({expected} bytes) but it holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype, count=count, offset=header).reshape(shape)


def _load_idx_file(path: Path, raw: bytes) -> Digits:
    source = repr(str(path))
    array = _parse_idx(raw, source)
    if array.ndim == 1:
        raise DatasetFileError(f"{source} is an IDX labels file (one dimension); give the "
                               f"images file (…-images-idx3-ubyte) or their directory")
    labels = None
    partner = _labels_partner(path)
    if partner is not None:
        labels = _parse_idx(_open_bytes(partner), repr(str(partner)))
    return _digits(array, labels, source)


def _labels_partner(path: Path) -> Path | None:
    name = path.name
    if "images-idx3" not in name:
        return None
    base = name.replace("images-idx3", "labels-idx1")
    for candidate in (base, base.removesuffix(".gz"), base + ".gz"):
        other = path.with_name(candidate)
        if other.is_file():
            return other
    return None


def _load_idx_dir(path: Path, split: str) -> Digits:
    chosen = ["train", "test"] if split == "all" else [split]
    parts = []
    for s in chosen:
        prefix = _IDX_PREFIXES[s]
        found = [path / f"{prefix}-images-idx3-ubyte{ext}" for ext in ("", ".gz")]
        found = [f for f in found if f.is_file()]
        if not found:
            if split == "all" and s == "test" and parts:
                continue  # a directory with the training files only
            raise DatasetFileError(
                f"directory {str(path)!r} holds no {prefix}-images-idx3-ubyte[.gz] file "
                f"(the IDX layout of yann.lecun.com/exdb/mnist)"
            )
        parts.append(_load_idx_file(found[0], _open_bytes(found[0])))
    return _concat(parts)


# ----------------------------------------------------------------------------- checks
def _digits(images: np.ndarray, labels: np.ndarray | None, source: str) -> Digits:
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] == 0 or \
            int(np.prod(images.shape[1:])) != IMAGE_SIZE:
        raise DatasetFileError(f"{source}: images must have shape (N, 28, 28) or (N, 784) with "
                               f"N >= 1; got shape {images.shape}")
    flat = images.reshape(images.shape[0], IMAGE_SIZE)
    flat = _to_unit_range(flat, source)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (flat.shape[0],) or not (
                np.issubdtype(labels.dtype, np.integer)
                or (np.issubdtype(labels.dtype, np.floating)
                    and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)))):
            raise DatasetFileError(f"{source}: labels must be {flat.shape[0]} integers, one per "
                                   f"image; got dtype {labels.dtype}, shape {labels.shape}")
        labels = labels.astype(np.int64)
    return Digits(flat, labels)


def _to_unit_range(flat: np.ndarray, source: str) -> np.ndarray:
    if flat.dtype == bool or not (np.issubdtype(flat.dtype, np.integer)
                                  or np.issubdtype(flat.dtype, np.floating)):
        raise DatasetFileError(f"{source}: images must be numbers; got dtype {flat.dtype}")
    values = flat.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise DatasetFileError(f"{source}: images hold NaN or Inf")
    low, high = float(values.min()), float(values.max())
    if np.issubdtype(flat.dtype, np.integer):
        if low < 0 or high > 255:
            raise DatasetFileError(f"{source}: integer images must be grey levels 0..255; got "
                                   f"values in [{low:g}, {high:g}]")
        return values / 255.0
    if low >= 0 and high <= 1:
        return values
    if low >= 0 and high <= 255:
        return values / 255.0
    raise DatasetFileError(f"{source}: float images must lie in [0, 1] (or be grey levels in "
                           f"[0, 255]); got values in [{low:g}, {high:g}]")


def _concat(parts: list[Digits]) -> Digits:
    images = np.concatenate([p.images for p in parts])
    if any(p.labels is None for p in parts):
        return Digits(images, None)
    return Digits(images, np.concatenate([p.labels for p in parts]))
