"""What advtrade needs from a user's model: a batch in, logits out.

Models may output (B, C) logits, or one logit per example ((B,) or (B, 1)) for binary problems;
:func:`as_logits` turns the latter into two-class logits ``[0, z]`` so that every loss and every
attack works unchanged (softmax([0, z])[1] = sigmoid(z), so cross-entropy is the logistic loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Normalize", "as_class_index", "as_logits", "check_labels"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the model's first layer.

    Keeping normalisation inside the model lets attacks work in pixel space, so ε means what
    the user thinks it means (8/255 of the [0, 1] range, not of a standardised range).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import Normalize
        >>> norm = Normalize(mean=[0.5], std=[0.25])
        >>> norm(torch.tensor([[[[0.0, 0.5, 1.0]]]]))
        tensor([[[[-2.,  0.,  2.]]]])
        >>> model = nn.Sequential(norm, nn.Flatten(), nn.Linear(3, 2))  # attacks see [0, 1] inputs
    """

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(
                f"mean and std must have the same length, got {mean_t.numel()} and {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be > 0 for every channel, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` over dimension 1 (channels) of a (B, C, ...) or (B, C) batch."""
        shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 2 else (1, -1)
        return (x - self.mean.view(shape).to(x.dtype)) / self.std.view(shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


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
