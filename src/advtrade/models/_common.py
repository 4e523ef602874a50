"""Shared pieces of the architectures: the CIFAR-10 statistics, initialisation and checks."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from torch import Tensor, nn

from ._normalize import Normalize

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "check_dropout",
    "kaiming_init",
    "make_normalize",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel (R, G, B) mean of the CIFAR-10 training images in [0, 1]."""

CIFAR10_STD: tuple[float, float, float] = (0.2471, 0.2435, 0.2616)
"""Per-channel (R, G, B) standard deviation of the CIFAR-10 training images in [0, 1]."""

Stats = Sequence[float] | Tensor


def check_dropout(dropout: object) -> float:
    """``dropout`` as a float in [0, 1): TypeError unless a real number, ValueError outside."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__} {dropout!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)


def make_normalize(mean: Stats | None, std: Stats | None, in_channels: int) -> nn.Module:
    """``Normalize(mean, std)``, or ``nn.Identity()`` when neither is given.

    Raises ValueError when only one of ``mean`` and ``std`` is given, or when their length is
    neither 1 (shared by every channel) nor ``in_channels``.
    """
    if mean is None and std is None:
        return nn.Identity()
    if mean is None or std is None:
        missing = "mean" if mean is None else "std"
        raise ValueError(
            f"mean and std must be given together (both or neither); {missing} is None"
        )
    norm = Normalize(mean, std)
    size = norm.mean.numel()
    if size not in (1, in_channels):
        raise ValueError(
            f"mean and std must have 1 or in_channels={in_channels} values, got {size}"
        )
    return norm


def kaiming_init(model: nn.Module) -> None:
    """The initialisation of the WideResNet reference code: Kaiming-normal (fan_out, ReLU) conv
    weights, BatchNorm weight 1 and bias 0, linear bias 0 (linear weight: PyTorch's default)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
