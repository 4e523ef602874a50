"""The run's data: a bundled dataset or CIFAR-10 from a local folder, as a seeded split."""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from ..datasets import Split, load_dataset, load_local
from ._settings import RunError, Settings

__all__ = ["load_split"]


@cache
def _cifar10(root: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    try:
        x_train, y_train = load_local("cifar10", root, train=True)
        x_test, y_test = load_local("cifar10", root, train=False)
    except (FileNotFoundError, ValueError) as exc:
        raise RunError(f"--data-dir {root}: {' '.join(str(exc).split())}") from None
    return x_train, y_train, x_test, y_test


def _prefix(n: int, size: int | None, seed: int, what: str, name: str) -> Tensor:
    """The first ``size`` of a seeded permutation of ``n`` rows (nested across sizes)."""
    if size is None:
        return torch.arange(n)
    if not 1 <= size <= n:
        raise RunError(f"{what} must be between 1 and {n} (the {name} split), got {size}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def load_split(settings: Settings, train_size: int | None = None) -> Split:
    """The split of ``settings.data`` with ``train_size`` training examples (default: the
    settings' own, or all of them); the test set is the settings' ``test_size`` (or all)."""
    size = train_size if train_size is not None else settings.train_size
    if settings.data == "cifar10":
        assert settings.data_dir is not None
        x_train, y_train, x_test, y_test = _cifar10(str(settings.data_dir))
        train = _prefix(len(x_train), size, settings.seed, "--train-size", "CIFAR-10 training")
        split = Split(x_train[train], y_train[train], x_test, y_test, 10, "cifar10")
    else:
        try:
            full = load_dataset(settings.data, seed=settings.seed)
        except ImportError as exc:
            raise RunError(str(exc), exit_code=1) from None
        available = int(full.x_train.shape[0])
        if size is not None and not full.num_classes <= size <= available:
            raise RunError(
                f"--train-size must be between {full.num_classes} (one per class) and "
                f"{available} (the {settings.data} training split), got {size}"
            )
        split = full if size is None else load_dataset(settings.data, seed=settings.seed,
                                                       train_size=size)
    test = _prefix(len(split.x_test), settings.test_size, settings.seed, "--test-size", "test")
    if settings.test_size is not None:
        split = Split(split.x_train, split.y_train, split.x_test[test], split.y_test[test],
                      split.num_classes, split.name)
    if split.x_train.shape[0] == 0 or split.x_test.shape[0] == 0:
        raise RunError(f"the {settings.data} dataset is empty")
    return split
