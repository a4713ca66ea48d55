"""Data loaders: IDX (plain and gzipped), .npz sets, CIFAR-10 batches, Fashion-MNIST from the
Debian package; bad files give one-line errors."""

import gzip
import pickle

import numpy as np
import pytest

from insitu.gen.datasets import (
    DataError,
    fashion_mnist,
    load_data,
    pad_to,
    read_idx,
)


def _idx(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_idx_round_trip_plain_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    (tmp_path / "a").write_bytes(_idx(x))
    (tmp_path / "b.gz").write_bytes(gzip.compress(_idx(np.arange(6, dtype=np.int32) - 3)))
    assert (read_idx(tmp_path / "a") == x).all()
    assert read_idx(tmp_path / "b.gz").tolist() == [-3, -2, -1, 0, 1, 2]
    (tmp_path / "c").write_bytes(_idx(x)[:-1])
    with pytest.raises(DataError, match="holds 59 data bytes, not the 60 its header"):
        read_idx(tmp_path / "c")
    (tmp_path / "d").write_bytes(b"\x08\x00\x00\x00")
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(tmp_path / "d")


def test_idx_folder_npz_and_cifar(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 6), ("t10k", 3)):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(
            _idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(_idx(rng.integers(0, 10, n, dtype=np.uint8))))
    d = load_data(tmp_path)
    assert d.x_train.shape == (6, 1, 28, 28) and d.y_test.shape == (3,) and d.shape == (1, 28, 28)
    np.savez(tmp_path / "set.npz", x_train=d.x_train, y_train=d.y_train, x_test=d.x_test,
             y_test=d.y_test)
    assert (load_data(tmp_path / "set.npz").x_test == d.x_test).all()
    np.savez(tmp_path / "bad.npz", x_train=d.x_train)
    with pytest.raises(DataError, match="has no array 'y_train'"):
        load_data(tmp_path / "bad.npz")
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}
        (cifar / name).write_bytes(pickle.dumps(batch))
    c = load_data(cifar)
    assert c.x_train.shape == (10, 3, 32, 32) and c.y_test.tolist() == [1, 2]
    (cifar / "test_batch").write_bytes(pickle.dumps({b"data": pytest.raises}))
    with pytest.raises(DataError, match="a data batch does not need"):
        load_data(cifar)
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nothing")


def test_fashion_mnist_from_the_debian_package():
    d = fashion_mnist()
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.classes == 10 and np.bincount(d.y_test).tolist() == [1000] * 10
    p = pad_to(d.x_test[:2], 32)
    assert p.shape == (2, 1, 32, 32) and (p[:, :, 2:30, 2:30] == d.x_test[:2]).all()
    assert p[:, :, :2].sum() == 0
