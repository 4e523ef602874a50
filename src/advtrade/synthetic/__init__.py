"""The paper's distribution, sampled and solved exactly for linear classifiers.

:class:`TsiprasDistribution` is model (3) of Tsipras et al. (2019): y ~ U{−1, +1}; x1 = y with
probability p, else −y (the robust feature); x2 … x_{d+1} ~ N(η·y, 1) (the non-robust ones). It
samples (seeded, streaming as a :class:`SyntheticStream`), and for a linear classifier
sign(w·x + b) gives standard and robust accuracy and the soft-margin SVM loss in closed form, the
exact SVM minimisers of Theorem 2.2 (:class:`SVMSolution`), the Theorem 2.1 bound and the
trade-off frontier (:class:`TradeoffFrontier`) — so tests can hold attacks, trainers and
evaluations against the truth.
"""

from __future__ import annotations

from ._distribution import TsiprasDistribution
from ._stream import SyntheticStream
from ._svm import SVMSolution
from ._theory import LinearClassifier, TradeoffFrontier

__all__ = [
    "LinearClassifier",
    "SVMSolution",
    "SyntheticStream",
    "TradeoffFrontier",
    "TsiprasDistribution",
]
