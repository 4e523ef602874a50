"""Models: ``Normalize`` and the standard architectures of the adversarial-training literature.

``Normalize`` keeps normalisation inside the model, so attacks work in pixel space and ε means
what the user thinks it means. The architectures are the ones RobustBench and the fast/free
adversarial-training papers use (PreAct ResNet-18, WideResNet-28-10) and the small CNNs of
advtrade's own experiments; all take (B, C, H, W) images in [0, 1] and return (B, classes) logits.
"""

from __future__ import annotations

from ._normalize import Normalize

__all__ = ["Normalize"]
