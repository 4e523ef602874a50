"""advtrade: adversarial attacks, adversarial training and the robustness–accuracy trade-off.

The public API is what this module exports; everything else may change.
"""

from __future__ import annotations

from . import datasets
from .attacks import FGSM, PGD, Attack, WorstOf
from .callbacks import Callback, EpsilonSchedule, History, LinearWarmup, linear_warmup
from .checkpoint import read_checkpoint
from .guard import model_guard
from .losses import cross_entropy, dlr_loss, margin_loss, trades_kl
from .models import Normalize
from .objectives import (
    TRADES,
    AdversarialTraining,
    LossObjective,
    Objective,
    Standard,
    StepContext,
    StepOutput,
)
from .synthetic import (
    LinearClassifier,
    SVMSolution,
    SyntheticStream,
    TradeoffFrontier,
    TsiprasDistribution,
    theorem_2_1_bound,
)
from .threats import L2Ball, LinfBall, ThreatModel
from .training import NonFiniteLossError, RobustTrainer

__version__ = "0.1.0"

__all__ = [
    "FGSM",
    "PGD",
    "TRADES",
    "AdversarialTraining",
    "Attack",
    "Callback",
    "EpsilonSchedule",
    "History",
    "L2Ball",
    "LinearClassifier",
    "LinearWarmup",
    "LinfBall",
    "LossObjective",
    "NonFiniteLossError",
    "Normalize",
    "Objective",
    "RobustTrainer",
    "SVMSolution",
    "Standard",
    "StepContext",
    "StepOutput",
    "SyntheticStream",
    "ThreatModel",
    "TradeoffFrontier",
    "TsiprasDistribution",
    "WorstOf",
    "__version__",
    "cross_entropy",
    "datasets",
    "dlr_loss",
    "linear_warmup",
    "margin_loss",
    "model_guard",
    "read_checkpoint",
    "theorem_2_1_bound",
    "trades_kl",
]
