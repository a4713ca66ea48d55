"""Small helpers every layer shares: atomic file output, the convolution output size, the
``KEY=VALUE`` parser and the "unknown name" message.

Files written by insitu get the user's normal permissions (``0666`` / ``0777`` less the
umask), as ``open()`` and ``mkdir()`` would give them, even though they are first written
under a temporary name (``mkstemp`` and ``mkdtemp`` create ``0600`` / ``0700``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["write_atomic", "atomic_dir", "cache_dir", "conv_out", "parse_sets", "unknown", "umask"]


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path, content, *, binary: bool | None = None) -> Path:
    """Write ``content`` (``str`` or ``bytes``, or a callable given the temporary path) to
    ``path`` through a temporary file in the same folder, so a failure leaves no partial file.
    The file gets mode ``0666 & ~umask``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    try:
        if callable(content):
            os.close(fd)
            content(Path(tmp))
        else:
            is_bytes = isinstance(content, (bytes, bytearray)) if binary is None else binary
            with os.fdopen(fd, "wb" if is_bytes else "w") as f:
                f.write(content)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(path):
    """``with atomic_dir(OUT) as tmp:`` fill ``tmp``; on success it replaces ``OUT`` whole, on
    an exception it is removed and ``OUT`` is left as it was.  Folder and files inside get
    the user's normal permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        mask = umask()
        os.chmod(tmp, 0o777 & ~mask)
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                p = os.path.join(root, f)
                if os.stat(p).st_mode & 0o600 == 0o600 and not os.access(p, os.X_OK):
                    os.chmod(p, 0o666 & ~mask)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_dir() -> Path:
    """The user's insitu cache folder: ``$INSITU_CACHE``, else ``$XDG_CACHE_HOME/insitu``, else
    ``~/.cache/insitu`` (not created here)."""
    base = os.environ.get("INSITU_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "insitu")
    return Path(base)


def conv_gemm(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Convolution (cross-correlation, ``groups = 1``) of ``x [N, C, H, W]`` with
    ``w [O, C, k, k]`` as one float64 matrix product over ``[pixel, (kh, kw, c)]`` columns;
    ``[N, O, OH, OW]``.  Call it on small batches: the columns are ``k*k`` times the input."""
    n, c, h, wd = x.shape
    cout, _, k, _ = w.shape
    oh, ow = conv_out(h, k, pad, stride), conv_out(wd, k, pad, stride)
    xh = np.zeros((n, h + 2 * pad, wd + 2 * pad, c))
    xh[:, pad:pad + h, pad:pad + wd, :] = x.transpose(0, 2, 3, 1)
    cols = np.empty((n, oh, ow, k, k, c))
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j, :] = xh[:, i:i + stride * (oh - 1) + 1:stride,
                                         j:j + stride * (ow - 1) + 1:stride, :]
    out = cols.reshape(n * oh * ow, k * k * c) @ w.transpose(2, 3, 1, 0).reshape(-1, cout)
    return out.reshape(n, oh, ow, cout).transpose(0, 3, 1, 2)


def conv_out(size: int, k: int, pad: int, stride: int = 1) -> int:
    """Output size of a convolution or pooling window along one axis."""
    return (size + 2 * pad - k) // stride + 1


def parse_sets(items, *, what: str = "--set") -> dict:
    """``["KEY=VALUE", ...]`` -> ``{KEY: VALUE}`` (strings, stripped); ``ValueError`` with one
    line for an item without ``=``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} expects KEY=VALUE, not {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def unknown(what: str, name, choices) -> str:
    """The one-line message for a name that is not one of ``choices``:
    ``Unknown board 'x' (boards: a, b)``; the list is named by ``what``'s last word."""
    word = what.split()[-1]
    if word.endswith("y") and not word.endswith(("ay", "ey", "oy", "uy")):
        plural = word[:-1] + "ies"
    elif word.endswith(("s", "sh", "ch", "x")):
        plural = word + "es"
    else:
        plural = word + "s"
    return f"Unknown {what} '{name}' ({plural}: {', '.join(str(c) for c in choices)})"
