"""The exact soft-margin SVM minimisers of Theorem 2.2 on the paper's distribution.

By symmetry every minimiser has the form w = (w1, v, …, v), b = 0, so the (d+1)-dimensional
problem reduces to two scalars, solved by nested golden-section searches on the closed-form
objective (checked against a full-vector L-BFGS solve in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._theory import LinearClassifier

__all__ = ["SVMSolution", "solve_symmetric_svm", "svm_solution", "symmetric_objective"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class SVMSolution:
    """An exact minimiser of the hinge objective: w = (w1, v, …, v), b = 0 (see
    :meth:`TsiprasDistribution.svm_minimizer`); ``objective`` includes the λ/2‖w‖² term."""

    w1: float
    v: float
    d: int
    lam: float
    eps: float
    objective: float

    @property
    def w(self) -> Tensor:
        """The full weight vector (d+1,), float64."""
        w = torch.full((self.d + 1,), self.v, dtype=torch.float64)
        w[0] = self.w1
        return w

    @property
    def classifier(self) -> LinearClassifier:
        """(w, 0) as a :class:`LinearClassifier`."""
        return LinearClassifier(self.w, 0.0)

    @property
    def norm(self) -> float:
        """‖w‖₂."""
        return math.sqrt(self.w1**2 + self.d * self.v**2)

    @property
    def robust_share(self) -> float:
        """|w1| / ‖w‖₁: the share of the weight on the robust feature (nan for w = 0)."""
        l1 = abs(self.w1) + self.d * abs(self.v)
        return abs(self.w1) / l1 if l1 > 0 else math.nan


def _scalar_dual(w1: float, v: float, d: int, q: float) -> float:
    if q == math.inf:
        return max(abs(w1), abs(v))
    if q == 1.0:
        return abs(w1) + d * abs(v)
    return (abs(w1) ** q + d * abs(v) ** q) ** (1.0 / q)


def _scalar_hinge(a: float, sigma: float) -> float:
    if sigma == 0.0:
        return max(a, 0.0)
    z = a / sigma
    return a * 0.5 * math.erfc(-z / math.sqrt(2.0)) + sigma * _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def symmetric_objective(
    w1: float, v: float, *, d: int, p: float, eta: float, eps: float, q: float, lam: float
) -> float:
    """The hinge objective of w = (w1, v, …, v), b = 0, in plain floats (fast, for the solver).

    p·h(c − w1) + (1 − p)·h(c + w1) + λ/2·(w1² + d·v²), with c = 1 + ε‖w‖_* − η·d·v,
    h(a) = E[max(0, a + √d·|v|·Z)]. Equal to :func:`hinge_from_moments` (tested).
    """
    c = 1.0 + eps * _scalar_dual(w1, v, d, q) - eta * d * v
    sigma = math.sqrt(d) * abs(v)
    loss = p * _scalar_hinge(c - w1, sigma) + (1.0 - p) * _scalar_hinge(c + w1, sigma)
    return loss + 0.5 * lam * (w1 * w1 + d * v * v)


def _golden_min(f: Callable[[float], float], scale: float, iters: int = 64) -> tuple[float, float]:
    """Minimise a convex f on [0, ∞): returns (x, f(x)), the best point evaluated (0 included).

    Doubles R from ``scale`` until f(R) ≥ f(R/2) (then, by convexity, a minimiser lies in
    [0, R]), then golden-section search; the endpoint 0 is a candidate, so a minimiser at the
    boundary comes back exactly as 0.
    """
    best_x, best_f = 0.0, f(0.0)
    hi, f_hi = scale, f(scale)
    half = f(0.5 * hi)
    while f_hi < half:
        if hi > 1e15:
            raise ValueError("the objective seems unbounded below; use a regularisation lam > 0")
        hi, half, f_hi = 2 * hi, f_hi, f(2 * hi)
    g = (math.sqrt(5.0) - 1.0) / 2.0
    lo = 0.0
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(iters):
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = f(x2)
    for x, fx in ((x1, f1), (x2, f2), (hi, f_hi)):
        if fx < best_f:
            best_x, best_f = x, fx
    return best_x, best_f


def solve_symmetric_svm(
    *, d: int, p: float, eta: float, eps: float, q: float, lam: float
) -> tuple[float, float, float]:
    """Global minimiser (w1, v, objective) of :func:`symmetric_objective` over w1, v ≥ 0.

    The objective is jointly convex, so F(v) = min_{w1} L(w1, v) is convex and nested golden
    sections find the minimum. Restricting to w1, v ≥ 0 loses nothing (p ≥ ½ and η ≥ 0: flipping
    a negative weight's sign never raises the loss). The candidate v = 0 is then solved exactly:
    on that line L = p·(1 − (1 − ε)w1)₊ + (1 − p)(1 + (1 + ε)w1) + λw1²/2, minimised at
    w1 = min(1/(1 − ε), (2p − 1 − ε)/λ) if ε < 2p − 1, else at w1 = 0 — and it is returned when
    its exact value is within 1e-12 of the numerical optimum (a tie goes to the sparser point).
    """
    kw = {"d": d, "p": p, "eta": eta, "eps": eps, "q": q, "lam": lam}

    def inner(v: float) -> tuple[float, float]:
        return _golden_min(lambda w1: symmetric_objective(w1, v, **kw), 1.0)

    v, best = _golden_min(lambda v: inner(v)[1], 1.0 / math.sqrt(d))
    w1 = inner(v)[0]
    slope = 2 * p - 1 - eps
    if slope <= 0 or eps >= 1:
        w1_0 = 0.0
    else:
        w1_0 = 1.0 / (1.0 - eps) if lam == 0 else min(1.0 / (1.0 - eps), slope / lam)
    f0 = symmetric_objective(w1_0, 0.0, **kw)
    if f0 <= best + 1e-12 * max(1.0, abs(best)):
        return w1_0, 0.0, f0
    return w1, v, best


def _svm(d: int, p: float, eta: float, eps: float, q: float, lam: float) -> SVMSolution:
    w1, v, obj = solve_symmetric_svm(d=d, p=p, eta=eta, eps=eps, q=q, lam=lam)
    return SVMSolution(w1, v, d, lam, eps, obj)


def svm_solution(
    *, d: int, p: float, eta: float, eps: float, q: float, lam: float | None, norm: float | None
) -> SVMSolution:
    """The SVM minimiser for a given λ, or (``lam=None``) for the λ that makes ‖w*‖₂ = ``norm``.

    λ/2·‖w*‖² ≤ objective(0) = 1, so ‖w*‖ ≤ norm at λ = 2/norm²; λ is lowered until ‖w*‖
    exceeds norm, then found by regula falsi (Illinois) on ‖w*(λ)‖ − norm in log λ, to 1e-7.
    """
    if lam is not None:
        return _svm(d, p, eta, eps, q, lam)
    assert norm is not None
    hi = 2.0 / norm**2
    f_hi = _svm(d, p, eta, eps, q, hi).norm - norm
    lo = hi
    while (f_lo := _svm(d, p, eta, eps, q, lo).norm - norm) <= 0:
        lo /= 10.0
        if lo < 1e-12:
            raise ValueError(
                f"no lam > 0 gives ||w*|| = {norm}: the minimiser stays shorter (for the "
                f"adversarial objective with eps >= 2p - 1 = {2 * p - 1:.4g} the zero vector "
                f"minimises for every lam)"
            )
    a, b, side = math.log(lo), math.log(hi), 0
    for _ in range(100):
        c = (a * f_hi - b * f_lo) / (f_hi - f_lo)
        best = _svm(d, p, eta, eps, q, math.exp(c))
        f_c = best.norm - norm
        if abs(f_c) <= 1e-7 * norm:  # the solver resolves w to ~1e-8
            break
        if f_c > 0:
            a, f_lo = c, f_c
            f_hi = f_hi / 2 if side == 1 else f_hi
            side = 1
        else:
            b, f_hi = c, f_c
            f_lo = f_lo / 2 if side == -1 else f_lo
            side = -1
    return best
