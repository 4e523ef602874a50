"""advtrade: adversarial attacks, adversarial training and the robustness–accuracy trade-off.

The top level holds the names most users need; each subpackage exports its whole area:
:mod:`advtrade.attacks`, :mod:`advtrade.training`, :mod:`advtrade.evaluation`,
:mod:`advtrade.synthetic`, :mod:`advtrade.perception`, :mod:`advtrade.models`,
:mod:`advtrade.datasets`, :mod:`advtrade.losses`, :mod:`advtrade.distributed` and
:mod:`advtrade.plotting` (figures, an optional extra). Modules whose names start with ``_`` may
change between releases.
"""

from __future__ import annotations

from . import attacks as attacks
from . import datasets as datasets
from . import distributed as distributed
from . import evaluation as evaluation
from . import losses as losses
from . import models as models
from . import perception as perception
from . import plotting as plotting
from . import synthetic as synthetic
from . import training as training
from .attacks import APGD, FGSM, PGD, Attack, AutoAttack, WorstOf
from .evaluation import check_gradient_masking, evaluate, robust_accuracy_curve
from .guard import model_guard
from .models import Normalize
from .synthetic import TsiprasDistribution
from .threats import L2Ball, LinfBall, ThreatModel
from .training import (
    TRADES,
    AdversarialTraining,
    FastAdversarialTraining,
    FreeAdversarialTraining,
    RobustTrainer,
    Standard,
)

__version__ = "0.2.0"

__all__ = [
    "APGD",
    "FGSM",
    "PGD",
    "TRADES",
    "AdversarialTraining",
    "Attack",
    "AutoAttack",
    "FastAdversarialTraining",
    "FreeAdversarialTraining",
    "L2Ball",
    "LinfBall",
    "Normalize",
    "RobustTrainer",
    "Standard",
    "ThreatModel",
    "TsiprasDistribution",
    "WorstOf",
    "__version__",
    "check_gradient_masking",
    "evaluate",
    "model_guard",
    "robust_accuracy_curve",
]

