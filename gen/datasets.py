"""Image data sets from local files only (no downloads at run time).

* Fashion-MNIST (and MNIST) IDX files, plain or gzipped: :func:`read_idx`,
  :func:`load_idx_set`.  The Debian package ``dataset-fashion-mnist`` (installed by
  ``make setup``) puts them in :data:`FASHION_MNIST_DIR`.
* A user's own set as ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (:func:`load_npz_set`).
* CIFAR-10's python batches (``data_batch_1`` .. ``_5``, ``test_batch``), for users who have
  them (:func:`load_cifar10`), read with a restricted unpickler that builds only plain
  containers, bytes and numpy arrays.

Every loader returns a :class:`DataSet`: u8 images ``[N, C, H, W]`` and int64 labels.
"""

from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .layer import ModelError

__all__ = ["DataSet", "FASHION_MNIST_DIR", "read_idx", "load_idx_set", "load_npz_set",
           "load_cifar10", "load_data", "fashion_mnist", "pad_to"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: IDX element types (the third byte of the magic number).
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ModelError):
    """A data file that cannot be used (one sentence naming the file and the problem)."""


@dataclass
class DataSet:
    """Train and test splits: ``x_*`` u8 ``[N, C, H, W]``, ``y_*`` int64 ``[N]``."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_test.shape[1:])

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def read_idx(path) -> np.ndarray:
    """One IDX file (``.gz`` or plain) as a numpy array of its declared shape and type."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"Data file '{path}' cannot be read ({exc})") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"Data file '{path}' is not an IDX file (bad magic number)")
    ndim, dtype = raw[3], np.dtype(_IDX_TYPES[raw[2]])
    head = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != head + int(np.prod(dims)) * dtype.itemsize:
        raise DataError(f"Data file '{path}' holds {len(raw) - head} data bytes, not the "
                        f"{int(np.prod(dims)) * dtype.itemsize} its header {dims} declares")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise DataError(f"Data folder '{folder}' has no '{stem}' (or '{stem}.gz')")


def _check(name, x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.dtype != np.uint8:
        raise DataError(f"{name}: images must be u8 [N, H, W] or [N, C, H, W], not "
                        f"{x.dtype} {tuple(x.shape)}")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(f"{name}: labels must be {len(x)} non-negative integers, not "
                        f"{y.dtype} {tuple(y.shape)}")
    return x, y.astype(np.int64)


def load_idx_set(folder, name: str | None = None) -> DataSet:
    """MNIST-layout folder: ``train-images-idx3-ubyte`` etc. (each may be gzipped)."""
    folder = Path(folder)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        parts[split] = _check(f"Data folder '{folder}' ({split})", x, y)
    return DataSet(name or folder.name, *parts["train"], *parts["test"])


def load_npz_set(path) -> DataSet:
    """``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (u8 images)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"Data file '{path}' has no array '{missing[0]}'")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"Data file '{path}' is not a readable .npz file ({exc})") from None
    train = _check(f"Data file '{path}' (train)", arrays["x_train"], arrays["y_train"])
    test = _check(f"Data file '{path}' (test)", arrays["x_test"], arrays["y_test"])
    return DataSet(path.stem, *train, *test)


class _BatchUnpickler(pickle.Unpickler):
    """Plain containers, strings, bytes and numpy arrays only: a CIFAR batch needs no more."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"CIFAR batch refers to '{module}.{name}', which a data batch does not need")


def _cifar_batch(path: Path):
    try:
        d = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise DataError(f"CIFAR batch '{path}' cannot be read ({exc})") from None
    return x, y


def load_cifar10(folder) -> DataSet:
    """CIFAR-10 "python version" folder (``data_batch_1``..``_5``, ``test_batch``)."""
    folder = Path(folder)
    train = [_cifar_batch(_find(folder, f"data_batch_{i}")) for i in range(1, 6)]
    test = _cifar_batch(_find(folder, "test_batch"))
    return DataSet("cifar10", np.concatenate([t[0] for t in train]),
                   np.concatenate([t[1] for t in train]), *test)


def load_data(spec=None) -> DataSet:
    """``None``: Fashion-MNIST from the Debian package; a folder of IDX files or CIFAR-10
    batches; or an ``.npz`` file."""
    if spec is None:
        if not FASHION_MNIST_DIR.exists():
            raise DataError(f"Fashion-MNIST is not installed at {FASHION_MNIST_DIR} (run "
                            f"'make setup', or apt-get install dataset-fashion-mnist)")
        return load_idx_set(FASHION_MNIST_DIR, "fashion-mnist")
    path = Path(spec)
    if not path.exists():
        raise DataError(f"Data '{path}' does not exist")
    if path.is_file():
        return load_npz_set(path)
    if any((path / n).exists() for n in ("data_batch_1", "data_batch_1.gz")):
        return load_cifar10(path)
    return load_idx_set(path)


def fashion_mnist() -> DataSet:
    """Fashion-MNIST from the Debian package (70 000 28x28 images, 10 classes)."""
    return load_data(None)


def pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``[N, C, H, W]`` images symmetrically to ``size x size`` (28 -> 32: 2 each side)."""
    n, c, h, w = x.shape
    if h > size or w > size:
        raise ValueError(f"images of {h}x{w} do not fit {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, c, size, size), dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out
