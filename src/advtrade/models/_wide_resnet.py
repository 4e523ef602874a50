"""The WideResNet of TRADES, MART, AWP and most of the RobustBench CIFAR-10 leaderboard."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ._common import check_dropout, kaiming_init, make_normalize
from ._resnet import PreActBlock

__all__ = ["WideResNet", "wide_resnet"]


def _check_depth(depth: object) -> int:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"depth must be an integer, got {type(depth).__name__} {depth!r}")
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(
            f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), got {depth}"
        )
    return int(depth)


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen_factor`` (WRN-d-k) for small (e.g. 32×32) images.

    A 3×3 stem convolution with 16 channels, three groups of (depth − 4) / 6 pre-activation wide
    basic blocks ([`PreActBlock`][advtrade.models.PreActBlock] with dropout between its
    convolutions) of widths 16k, 32k, 64k and strides 1, 2, 2, a final BatchNorm and ReLU,
    global average pooling and a linear layer. The first block of a group has a 1×1 convolution
    shortcut when its shape changes.

    With ``mean`` and ``std`` the first layer (``self.normalize``) is a
    [`Normalize`][advtrade.models.Normalize]; without them it is an ``nn.Identity``.
    Initialisation as in the reference code: Kaiming-normal (fan_out, ReLU) convolutions,
    BatchNorm weight 1 and bias 0, linear bias 0 (linear weight: PyTorch's default).
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        *,
        dropout: float = 0.0,
        in_channels: int = 3,
        mean: Sequence[float] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        depth = _check_depth(depth)
        widen_factor = check_int("widen_factor", widen_factor, minimum=1)
        num_classes = check_int("num_classes", num_classes, minimum=2)
        dropout = check_dropout(dropout)
        in_channels = check_int("in_channels", in_channels, minimum=1)
        blocks = (depth - 4) // 6
        self.normalize = make_normalize(mean, std, in_channels)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        width = 16
        for i, out in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
            group = [PreActBlock(width, out, 1 if i == 0 else 2, dropout)]
            group += [PreActBlock(out, out, 1, dropout) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*group))
            width = out
        self.bn = nn.BatchNorm2d(width)
        self.linear = nn.Linear(width, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, num_classes) logits of a (B, in_channels, H, W) batch."""
        out = self.conv1(self.normalize(x))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def wide_resnet(
    depth: int = 28,
    widen_factor: int = 10,
    num_classes: int = 10,
    *,
    dropout: float = 0.0,
    in_channels: int = 3,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> WideResNet:
    """The WideResNet (WRN-depth-widen_factor) of TRADES and the RobustBench CIFAR-10 models.

    Pre-activation wide basic blocks, (depth − 4) / 6 per group, widths 16, 16k, 32k, 64k
    (k = ``widen_factor``), final BatchNorm + ReLU, global average pooling, linear;
    ``dropout`` acts between the two convolutions of each block. WRN-28-10 (36,479,194
    parameters for 10 classes) and WRN-34-10 are the usual architectures for comparing
    adversarial-training methods on CIFAR-10. Initialisation: Kaiming-normal (fan_out)
    convolutions, BatchNorm 1 and 0, linear bias 0, as in the reference code.

    ``depth`` must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, 34, …); give ``mean`` and ``std`` to
    make a [`Normalize`][advtrade.models.Normalize] the first layer (inputs in [0, 1]).

    Reference: Zagoruyko & Komodakis 2016, "Wide Residual Networks"; as used by Zhang et al.
    2019, "Theoretically Principled Trade-off between Robustness and Accuracy" (TRADES).

    Examples:
        >>> import torch
        >>> from advtrade.models import wide_resnet
        >>> wide_resnet(10, 1).eval()(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> sum(p.numel() for p in wide_resnet(28, 10).parameters())
        36479194
    """
    return WideResNet(
        depth,
        widen_factor,
        num_classes,
        dropout=dropout,
        in_channels=in_channels,
        mean=mean,
        std=std,
    )
