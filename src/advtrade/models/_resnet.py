"""The pre-activation ResNet of the fast and robust-overfitting adversarial-training papers."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ._common import check_dropout, make_normalize

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet18"]


class PreActBlock(nn.Module):
    """A pre-activation basic block: ``x + conv(relu(bn(conv(relu(bn(x))))))``.

    BatchNorm and ReLU come before each 3×3 convolution (He et al. 2016, "Identity Mappings in
    Deep Residual Networks"), so the identity path is a clean sum. When the block changes the
    shape (``stride`` ≠ 1 or ``in_channels`` ≠ ``out_channels``) the shortcut is a 1×1 convolution
    of the pre-activated input. ``dropout`` > 0 inserts dropout between the two convolutions
    (the wide basic block of WideResNet); the convolutions have no bias (BatchNorm follows).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, minimum=1)
        out_channels = check_int("out_channels", out_channels, minimum=1)
        stride = check_int("stride", stride, minimum=1)
        dropout = check_dropout(dropout)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The block's output, (B, out_channels, H / stride, W / stride)."""
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class PreActResNet(nn.Module):
    """A pre-activation ResNet for small (e.g. 32×32) images.

    A 3×3 stem convolution with 64 channels (no max-pool), then one stage of
    [`PreActBlock`][advtrade.models.PreActBlock]s per entry of ``blocks_per_stage`` with widths
    64, 128, 256, 512, … (stride 1 in the first stage, 2 in the others), a final BatchNorm and
    ReLU, global average pooling and a linear layer. ``blocks_per_stage=(2, 2, 2, 2)`` is
    ResNet-18 (see [`preact_resnet18`][advtrade.models.preact_resnet18]).

    With ``mean`` and ``std`` the first layer (``self.normalize``) is a
    [`Normalize`][advtrade.models.Normalize], so the model takes [0, 1] pixels; without them it
    is an ``nn.Identity``. Initialisation: PyTorch's defaults, as in the reference code.
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        mean: Sequence[float] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_int("num_classes", num_classes, minimum=2)
        in_channels = check_int("in_channels", in_channels, minimum=1)
        if isinstance(blocks_per_stage, (str, bytes)) or not isinstance(blocks_per_stage, Sequence):
            raise TypeError(
                f"blocks_per_stage must be a sequence of integers, got {blocks_per_stage!r}"
            )
        if len(blocks_per_stage) == 0:
            raise ValueError("blocks_per_stage must have at least one stage, got ()")
        counts = [
            check_int(f"blocks_per_stage[{i}]", n, minimum=1)
            for i, n in enumerate(blocks_per_stage)
        ]
        self.normalize = make_normalize(mean, std, in_channels)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        width = 64
        for i, count in enumerate(counts):
            out = 64 * 2**i
            blocks = [PreActBlock(width, out, 1 if i == 0 else 2)]
            blocks += [PreActBlock(out, out) for _ in range(count - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            width = out
        self.num_stages = len(counts)
        self.bn = nn.BatchNorm2d(width)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, num_classes) logits of a (B, in_channels, H, W) batch."""
        out = self.conv1(self.normalize(x))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def preact_resnet18(
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> PreActResNet:
    """The pre-activation ResNet-18 of fast adversarial training on 32×32 CIFAR-10.

    Stem 3×3 conv (64 channels, no max-pool), four stages of two pre-activation basic blocks
    (64, 128, 256, 512 channels; strides 1, 2, 2, 2; 1×1 conv shortcut when the shape changes),
    final BatchNorm + ReLU, global average pooling, linear: 11,172,170 parameters for 10 classes.
    It is the standard CIFAR-10 architecture for comparing PGD, FGSM and free adversarial
    training at a modest cost. Initialisation: PyTorch's defaults, as in the reference code.

    Give ``mean`` and ``std`` (e.g. [`CIFAR10_MEAN`][advtrade.models.CIFAR10_MEAN] and
    [`CIFAR10_STD`][advtrade.models.CIFAR10_STD]) to make a
    [`Normalize`][advtrade.models.Normalize] the first layer, so that the model takes [0, 1]
    pixels and attacks' ε is measured in pixel space.

    Reference: Wong, Rice & Kolter 2020, "Fast is better than free: Revisiting adversarial
    training"; Rice, Wong & Kolter 2020, "Overfitting in adversarially robust deep learning".

    Examples:
        >>> import torch
        >>> from advtrade.models import CIFAR10_MEAN, CIFAR10_STD, preact_resnet18
        >>> model = preact_resnet18(10, mean=CIFAR10_MEAN, std=CIFAR10_STD).eval()
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> sum(p.numel() for p in model.parameters())
        11172170
    """
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels=in_channels, mean=mean, std=std)
