"""The synthetic experiment: the paper's distribution solved exactly (no sampling, no training).

Theorem 2.1's setting (d = 1000, p = 0.95, η = 3/√d, ℓ∞ at ε = 2η): standard and robust accuracy
of the named linear classifiers and of the soft-margin SVM minimisers, the bound, and the
trade-off frontier. Theorem 2.2's setting (d = 200, p = 0.9, η = 4/√d): standard training puts
its weight on the non-robust features, adversarial training (ε_tr = 2η) on the robust one.
"""

from __future__ import annotations

from typing import Any

from ..synthetic import LinearClassifier, TsiprasDistribution
from ..threats import LinfBall

__all__ = ["run_synthetic"]


def _row(dist: TsiprasDistribution, name: str, clf: LinearClassifier, threat: LinfBall) -> dict:
    w, b = clf
    standard = float(dist.standard_accuracy(w, b))
    return {
        "name": name,
        "standard": standard,
        "robust": float(dist.robust_accuracy(w, b, threat)),
        "bound": float(dist.theorem_2_1_bound(standard)),
        "x1_share": float(w[0].abs() / w.abs().sum()),
    }


def _setting(d: int, p: float, eta: float | None) -> tuple[TsiprasDistribution, LinfBall]:
    dist = TsiprasDistribution(d, p, eta)
    return dist, LinfBall(2 * dist.eta, domain=None)  # the data is unbounded


def run_synthetic(quick: bool = False) -> dict[str, Any]:
    """Exact accuracies, the Theorem 2.1 bound and frontier, and Theorem 2.2's SVM contrast."""
    dist, threat = _setting(1000, 0.95, None)
    rows = [
        ("averaging (0, 1/d, …, 1/d)", dist.averaging_classifier()),
        ("robust sign(x1)", dist.robust_classifier()),
        ("Bayes (log(p/(1−p)), 2η, …)", dist.bayes_classifier()),
        ("SVM, standard training", dist.svm_minimizer().classifier),
        ("SVM, adversarial training (ε_tr = 2η)", dist.svm_minimizer(threat).classifier),
    ]
    frontier = dist.tradeoff_frontier(threat, n=101 if quick else 401)
    holds = bool((frontier.robust <= frontier.bound + 1e-12).all())

    dist22, threat22 = _setting(200, 0.9, 4 / 200**0.5)
    svms = [
        ("SVM, standard training", dist22.svm_minimizer().classifier),
        ("SVM, adversarial training (ε_tr = 2η)", dist22.svm_minimizer(threat22).classifier),
    ]
    return {
        "theorem_2_1": {
            "d": dist.d,
            "p": dist.p,
            "eta": dist.eta,
            "eps": threat.eps,
            "ratio": dist.p / (1 - dist.p),
            "bound_at_99": float(dist.theorem_2_1_bound(0.99)),
            "classifiers": [_row(dist, name, clf, threat) for name, clf in rows],
            "frontier": {
                "t": frontier.t.tolist(),
                "standard": frontier.standard.tolist(),
                "robust": frontier.robust.tolist(),
                "bound": frontier.bound.tolist(),
                "bound_holds": holds,
            },
        },
        "theorem_2_2": {
            "d": dist22.d,
            "p": dist22.p,
            "eta": dist22.eta,
            "eps": threat22.eps,
            "classifiers": [_row(dist22, name, clf, threat22) for name, clf in svms],
        },
    }
