"""Datasets: bundled (never downloaded) and local image data as tensors."""

from __future__ import annotations

from ._bundled import (
    DATASETS,
    LOCAL_DATASETS,
    Split,
    load_dataset,
    load_digits,
    load_local,
    load_mnist_subset,
)

__all__ = [
    "DATASETS",
    "LOCAL_DATASETS",
    "Split",
    "load_dataset",
    "load_digits",
    "load_local",
    "load_mnist_subset",
]
