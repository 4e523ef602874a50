"""Argument checks shared by the perception functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._outputs import as_logits
from .._validation import check_inputs, check_label_range, check_labels

__all__ = ["check_class_labels", "check_images", "cosine", "num_classes"]


def check_images(x: object, name: str = "x") -> Tensor:
    """``x`` if it is a non-empty floating-point batch (B, ...) without NaN."""
    x = check_inputs(x, name, min_ndim=2)
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch; perception needs at least one example")
    return x


def num_classes(net: nn.Module, x: Tensor) -> int:
    """The model's number of classes (one forward pass of at most two examples)."""
    with torch.no_grad():
        return as_logits(net(x[:2]), min(2, x.shape[0])).shape[1]


def check_class_labels(y: object, x: Tensor, classes: int, name: str) -> Tensor:
    """Class indices in [0, classes) for the batch ``x`` (as ``torch.long``)."""
    y = check_labels(y, x.shape[0], x.device, name=name)
    if y.is_floating_point():
        raise TypeError(f"{name} must hold integer class indices (torch.long), got {y.dtype}")
    if classes == 2 and bool((y < 0).any()):
        raise ValueError(f"{name} must hold class indices in [0, 1] for a one-logit model")
    check_label_range(y, classes, name=name)
    return y


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of each example of ``a`` and ``b`` over all non-batch dims, (B,)."""
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1, eps=1e-30)
