"""What advtrade needs from a user's model: a batch in, logits out.

Models may output (B, C) logits, or one logit per example ((B,) or (B, 1)) for binary problems;
:func:`as_logits` turns the latter into two-class logits ``[0, z]`` so that every loss and every
attack works unchanged (softmax([0, z])[1] = sigmoid(z), so cross-entropy is the logistic loss).
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_logits(output: Tensor, batch_size: int) -> Tensor:
    """Validate a model's output and return (B, C) logits (one-logit outputs become ``[0, z]``)."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model must return a tensor of logits, got {type(output).__name__}; wrap models "
            f"that return tuples or dicts so that forward returns the logits"
        )
    if output.ndim == 2 and output.shape[0] == batch_size and output.shape[1] > 1:
        return output
    if output.shape in ((batch_size,), (batch_size, 1)):
        z = output.reshape(batch_size, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)
    raise ValueError(
        f"the model's output has shape {tuple(output.shape)} for a batch of {batch_size}; expected "
        f"logits of shape (B, C) with C >= 2, or one logit per example, (B,) or (B, 1)"
    )


def as_class_index(y: Tensor, num_classes: int) -> Tensor:
    """Class indices for labels; binary labels in {-1, +1} map to {0, 1} (+1 ↔ class 1)."""
    return y.clamp(min=0) if num_classes == 2 else y


def check_labels(y: object, batch_size: int, device: torch.device, name: str = "y") -> None:
    """Check the form of labels (shape, dtype, device) before the model is run."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a tensor of class labels, got {type(y).__name__}")
    if y.device != device:
        raise ValueError(
            f"{name} is on {y.device} but x is on {device}; move both to the model's device"
        )
    soft = y.is_floating_point() and y.ndim == 2
    if y.shape[0:1] != (batch_size,) or (y.ndim != 1 and not soft):
        raise ValueError(
            f"{name} must have shape ({batch_size},) to match x (or ({batch_size}, C) for a "
            f"distribution target), got {tuple(y.shape)}"
        )
    if not soft and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
        raise TypeError(
            f"{name} must hold integer class indices (torch.long), got dtype {y.dtype}; "
            f"convert with {name}.long()"
        )


def check_label_range(y: Tensor, num_classes: int, name: str = "y") -> None:
    """Check that class labels fit the model's number of classes (binary: {-1, 0, 1})."""
    if y.is_floating_point():
        if y.shape[1] != num_classes:
            raise ValueError(
                f"{name} has {y.shape[1]} columns but the model outputs {num_classes} classes"
            )
        return
    low = -1 if num_classes == 2 else 0
    lo, hi = torch.aminmax(y)
    if int(lo) < low or int(hi) >= num_classes:
        raise ValueError(
            f"{name} holds labels in [{int(lo)}, {int(hi)}] but the model outputs {num_classes} "
            f"classes; labels must lie in [{low}, {num_classes - 1}]"
        )
