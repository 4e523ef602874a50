"""Models: ``Normalize`` and the standard architectures of the adversarial-training literature.

``Normalize`` keeps normalisation inside the model, so attacks work in pixel space and ε means
what the user thinks it means. The architectures are the ones RobustBench and the fast/free
adversarial-training papers use (``preact_resnet18``, ``wide_resnet``: WRN-28-10, WRN-34-10) and
the small CNN of advtrade's own experiments (``small_cnn``); all take (B, C, H, W) images and
return (B, classes) logits. Give ``mean`` and ``std`` (e.g. ``CIFAR10_MEAN``, ``CIFAR10_STD``)
to the ResNets to make ``Normalize`` their first layer, so they take [0, 1] pixels.
"""

from __future__ import annotations

from ._common import CIFAR10_MEAN, CIFAR10_STD
from ._normalize import Normalize
from ._resnet import PreActBlock, PreActResNet, preact_resnet18
from ._small import small_cnn
from ._wide_resnet import WideResNet, wide_resnet

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "Normalize",
    "PreActBlock",
    "PreActResNet",
    "WideResNet",
    "preact_resnet18",
    "small_cnn",
    "wide_resnet",
]
