"""Training: :class:`RobustTrainer`, the objectives it runs, and what sits around its loop.

* :class:`RobustTrainer` — wraps a user's model, optimizer and DataLoader; ``fit``,
  ``evaluate``, ``state_dict``/``load_state_dict``, checkpoints that resume bit for bit;
* objectives — :class:`Standard`, :class:`AdversarialTraining`, :class:`TRADES`,
  :class:`FastAdversarialTraining`, :class:`FreeAdversarialTraining`, or your own
  :class:`Objective`;
* callbacks — :class:`Callback` (the base), :class:`Checkpoint`,
  :class:`CatastrophicOverfittingGuard`, progress, loggers (:class:`CSVLogger`,
  :class:`TensorBoardLogger`); :class:`History`; ε schedules
  (:class:`LinearWarmup`).
"""

from __future__ import annotations

from ._callbacks import Callback, PlainProgress, TqdmProgress, TrainerView
from ._cheap import FastAdversarialTraining, FreeAdversarialTraining
from ._checkpoint import Checkpoint, read_checkpoint
from ._context import TrainContext
from ._history import History
from ._loggers import CSVLogger, TensorBoardLogger
from ._objectives import (
    TRADES,
    AdversarialTraining,
    LossObjective,
    NonFiniteLossError,
    Objective,
    Standard,
    StepContext,
    StepOutput,
)
from ._overfitting import CatastrophicOverfittingGuard, CatastrophicOverfittingWarning
from ._schedules import EpsilonSchedule, LinearWarmup
from ._trainer import RobustTrainer

__all__ = [
    "TRADES",
    "AdversarialTraining",
    "CSVLogger",
    "Callback",
    "CatastrophicOverfittingGuard",
    "CatastrophicOverfittingWarning",
    "Checkpoint",
    "EpsilonSchedule",
    "FastAdversarialTraining",
    "FreeAdversarialTraining",
    "History",
    "LinearWarmup",
    "LossObjective",
    "NonFiniteLossError",
    "Objective",
    "PlainProgress",
    "RobustTrainer",
    "Standard",
    "StepContext",
    "StepOutput",
    "TensorBoardLogger",
    "TqdmProgress",
    "TrainContext",
    "TrainerView",
    "read_checkpoint",
]
