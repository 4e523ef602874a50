"""The small CNN of advtrade's own experiments: trains in seconds on a CPU."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .._validation import check_int

__all__ = ["small_cnn"]


def small_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """A two-convolution CNN for small images, the model of advtrade's experiment runner.

    ``Conv(C→16) → ReLU → Conv(16→32, 3×3, stride 2) → ReLU → Flatten → Linear``. The first
    convolution is 3×3 with stride 1 on small images (at most 12 pixels a side, e.g. 8×8 digits)
    and 5×5 with stride 2 on larger ones (28×28 MNIST), so both cost about the same per example
    on a CPU. Small enough to adversarially train in seconds, for experiments and tests; the
    layers are created in a fixed order with PyTorch's default initialisation, so a seeded
    ``torch.manual_seed`` gives the same weights as the runner's models. Takes (B, C, H, W)
    inputs of ``input_shape`` = (C, H, W) and returns (B, num_classes) logits.

    Reference: no paper; advtrade's own experiment model (``make_model`` of the experiment
    runner), a CPU-sized cousin of the MNIST CNN of Madry et al. 2018, "Towards Deep Learning
    Models Resistant to Adversarial Attacks".

    Examples:
        >>> import torch
        >>> from advtrade.models import small_cnn
        >>> small_cnn((1, 8, 8), 10)(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a (C, H, W) tuple of integers, got {input_shape!r}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W): 3 integers, got {tuple(input_shape)}")
    c, h, w = (check_int(f"input_shape[{i}]", v, minimum=1) for i, v in enumerate(input_shape))
    num_classes = check_int("num_classes", num_classes, minimum=2)
    stride, kernel = (1, 3) if max(h, w) <= 12 else (2, 5)
    h2, w2 = math.ceil(math.ceil(h / stride) / 2), math.ceil(math.ceil(w / stride) / 2)
    return nn.Sequential(
        nn.Conv2d(c, 16, kernel, stride=stride, padding=kernel // 2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * h2 * w2, num_classes),
    )
