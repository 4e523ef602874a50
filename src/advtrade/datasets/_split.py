"""The :class:`Split` container and the seeded stratified train/test splitting behind it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._validation import check_number
from .augment import Augmented

__all__ = ["Split"]


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
        augment: bool = False,
    ) -> tuple[DataLoader, DataLoader]:
        """Return ``(train_loader, test_loader)``.

        The train loader reshuffles every epoch from a ``torch.Generator`` seeded with ``seed``
        (same seed -> same batch order, independent of the global RNG); the test loader is not
        shuffled. ``test_batch_size`` defaults to ``batch_size``.

        ``augment=True`` wraps the training set in :class:`~advtrade.datasets.Augmented`
        (``seed=seed``): the standard CIFAR recipe of a random crop after 4-pixel zero padding
        and a horizontal flip with probability 1/2, reproducible per epoch (advtrade's trainer
        calls its ``set_epoch``). It suits natural images; mirrored digits change meaning.
        The test loader is never augmented.
        """
        test_batch_size = batch_size if test_batch_size is None else test_batch_size
        for arg, value in (("batch_size", batch_size), ("test_batch_size", test_batch_size)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        if not _is_int(num_workers) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if not isinstance(augment, bool):
            raise TypeError(f"augment must be True or False, got {augment!r}")
        _check_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        train_set: Dataset = TensorDataset(self.x_train, self.y_train)
        if augment:
            train_set = Augmented(train_set, seed=int(seed))
        train = DataLoader(
            train_set,
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
    test_fraction = check_number("test_fraction", test_fraction)
    if not 0.0 < test_fraction < 1.0:
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
