"""advtrade: adversarial attacks, adversarial training and the robustness–accuracy trade-off.

The public API is what this module exports; everything else may change.
"""

from __future__ import annotations

from .attacks import FGSM, PGD, Attack, WorstOf
from .guard import model_guard
from .losses import cross_entropy, dlr_loss, margin_loss, trades_kl
from .models import Normalize
from .threats import L2Ball, LinfBall, ThreatModel

__version__ = "0.1.0"

__all__ = [
    "FGSM",
    "PGD",
    "Attack",
    "L2Ball",
    "LinfBall",
    "Normalize",
    "ThreatModel",
    "WorstOf",
    "__version__",
    "cross_entropy",
    "dlr_loss",
    "margin_loss",
    "model_guard",
    "trades_kl",
]
