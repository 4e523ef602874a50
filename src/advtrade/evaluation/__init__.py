"""Robust evaluation: accuracy per attack, accuracy-vs-ε curves and gradient-masking checks.

* :func:`evaluate` — clean accuracy, robust accuracy per attack and the per-example worst case,
  as counts (with binomial confidence intervals, :meth:`EvaluationReport.interval`);
* :func:`robust_accuracy_curve` — a whole list of budgets for the price of a few attacks;
* :func:`check_gradient_masking` — symptoms that a robust accuracy measures a weak attack.

Everything leaves the model exactly as it found it.
"""

from __future__ import annotations

from ._curves import RobustAccuracyCurve, robust_accuracy_curve
from ._diagnostics import Finding, GradientMaskingWarning, check_gradient_masking
from ._evaluate import Batches, evaluate
from ._report import WORST_OF, EvaluationReport, wilson_interval

__all__ = [
    "WORST_OF",
    "Batches",
    "EvaluationReport",
    "Finding",
    "GradientMaskingWarning",
    "RobustAccuracyCurve",
    "check_gradient_masking",
    "evaluate",
    "robust_accuracy_curve",
    "wilson_interval",
]
