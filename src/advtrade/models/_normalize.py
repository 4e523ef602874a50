"""``Normalize``: normalisation as the model's first layer, so attacks work in pixel space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Normalize"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the model's first layer.

    Keeping normalisation inside the model lets attacks work in pixel space, so ε means what
    the user thinks it means (8/255 of the [0, 1] range, not of a standardised range).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade.models import Normalize
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
