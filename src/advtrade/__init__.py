"""advtrade: adversarial attacks, adversarial training and the robustness–accuracy trade-off.

The public API is what this module exports; everything else may change.
"""

from __future__ import annotations

from . import datasets, distributed, perception, plotting
from .apgd import APGD
from .attacks import FGSM, PGD, Attack, WorstOf
from .callbacks import Callback, EpsilonSchedule, History, LinearWarmup, linear_warmup
from .checkpoint import read_checkpoint
from .diagnostics import Finding, GradientMaskingWarning, check_gradient_masking
from .evaluation import (
    WORST_OF,
    EvaluationReport,
    RobustAccuracyCurve,
    evaluate,
    robust_accuracy_curve,
)
from .fast_training import (
    CatastrophicOverfittingGuard,
    CatastrophicOverfittingWarning,
    FastAdversarialTraining,
    FreeAdversarialTraining,
)
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
from .perception import (
    Alignment,
    alignment_score,
    input_gradients,
    interpolate,
    large_eps_examples,
    normalize_for_display,
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
    "APGD",
    "FGSM",
    "PGD",
    "TRADES",
    "WORST_OF",
    "AdversarialTraining",
    "Alignment",
    "Attack",
    "Callback",
    "CatastrophicOverfittingGuard",
    "CatastrophicOverfittingWarning",
    "EpsilonSchedule",
    "EvaluationReport",
    "FastAdversarialTraining",
    "Finding",
    "FreeAdversarialTraining",
    "GradientMaskingWarning",
    "History",
    "L2Ball",
    "LinearClassifier",
    "LinearWarmup",
    "LinfBall",
    "LossObjective",
    "NonFiniteLossError",
    "Normalize",
    "Objective",
    "RobustAccuracyCurve",
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
    "alignment_score",
    "check_gradient_masking",
    "cross_entropy",
    "datasets",
    "distributed",
    "dlr_loss",
    "evaluate",
    "input_gradients",
    "interpolate",
    "large_eps_examples",
    "linear_warmup",
    "margin_loss",
    "model_guard",
    "normalize_for_display",
    "perception",
    "plotting",
    "read_checkpoint",
    "robust_accuracy_curve",
    "theorem_2_1_bound",
    "trades_kl",
]
