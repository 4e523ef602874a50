"""Datasets: bundled (never downloaded) and local image data as tensors, and augmentation.

* :func:`load_digits`, :func:`load_mnist_subset`, :func:`load_dataset` -- small real datasets
  shipped in pip packages, as seeded stratified :class:`Split` objects;
* :func:`load_local` -- MNIST / CIFAR-10 files already on disk (never downloads; CIFAR-10's
  binary release, no unpickling unless explicitly allowed);
* :func:`random_crop_flip`, :class:`Augmented` -- the standard CIFAR augmentation (random crop
  after zero padding, horizontal flip) on tensors, seeded and reproducible per epoch.
"""

from __future__ import annotations

from ._bundled import DATASETS, load_dataset, load_digits, load_mnist_subset
from ._local import LOCAL_DATASETS, load_local
from ._split import Split
from .augment import Augmented, random_crop_flip

__all__ = [
    "DATASETS",
    "LOCAL_DATASETS",
    "Augmented",
    "Split",
    "load_dataset",
    "load_digits",
    "load_local",
    "load_mnist_subset",
    "random_crop_flip",
]
