"""Closed forms behind :mod:`advtrade.synthetic` (an implementation module: import from there).

For the distribution of Tsipras et al. (2019), y ~ U{±1}, x1 = s·y with P(s = +1) = p and
x_i ~ N(η·y, 1) for i ≥ 2, a linear classifier sign(w·x + b) has, given y and s, the margin

    m = y·(w·x + b) ~ N(μ_{y,s}, σ²),   μ_{y,s} = y·b + s·w1 + η·Σ_{i≥2} w_i,   σ² = Σ_{i≥2} w_i²,

and the worst perturbation of radius ε lowers every margin by exactly ε‖w‖_* (the dual norm).
So everything depends on w only through four moments (w1, Σ w_i, Σ w_i², ‖w‖_*), which is what
the functions below take; they broadcast over any batch shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .threats import ThreatModel

__all__ = [
    "LinearClassifier",
    "SVMSolution",
    "TradeoffFrontier",
    "accuracy_from_moments",
    "expected_hinge",
    "hinge_from_moments",
    "solve_symmetric_svm",
    "svm_solution",
    "symmetric_dual_norm",
    "theorem_2_1_bound",
]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SIGNS = ((1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0))  # (y, s)


def accuracy_from_moments(
    w1: Tensor,
    gsum: Tensor,
    gsq: Tensor,
    shift: Tensor | float,
    b: Tensor | float,
    p: float,
    eta: float,
    ties: str = "error",
) -> Tensor:
    """P[m − shift > 0] = Σ_{y,s} ½·P(s)·Φ((μ_{y,s} − shift)/σ), a mixture of four normal CDFs.

    With σ = 0 the margin is deterministic and the term is the step 1[μ − shift > 0]; a margin of
    exactly 0 (the score lands on the decision boundary) counts as an error (``ties="error"``,
    since sign(0) = 0 ≠ y), or as half correct (``ties="half"``, a fair coin at ties).
    """
    pos = gsq > 0
    sigma = torch.sqrt(torch.where(pos, gsq, torch.ones_like(gsq)))
    total = torch.zeros((), dtype=w1.dtype, device=w1.device)
    for y, s in _SIGNS:
        mu = y * b + s * w1 + eta * gsum - shift
        step = (mu > 0).to(w1.dtype)
        if ties == "half":
            step = step + 0.5 * (mu == 0).to(w1.dtype)
        weight = 0.5 * (p if s > 0 else 1.0 - p)
        total = total + weight * torch.where(pos, torch.special.ndtr(mu / sigma), step)
    return total


def expected_hinge(a: Tensor, gsq: Tensor) -> Tensor:
    """E[max(0, a + σZ)], Z ~ N(0, 1), σ² = ``gsq``: a·Φ(a/σ) + σ·φ(a/σ) (σ = 0: max(0, a)).

    Differentiable everywhere it is finite, including at σ = 0 (no NaN gradients).
    """
    pos = gsq > 0
    sigma = torch.sqrt(torch.where(pos, gsq, torch.ones_like(gsq)))
    z = a / sigma
    smooth = a * torch.special.ndtr(z) + sigma * _INV_SQRT_2PI * torch.exp(-0.5 * z * z)
    return torch.where(pos, smooth, torch.relu(a))


def hinge_from_moments(
    w1: Tensor,
    gsum: Tensor,
    gsq: Tensor,
    shift: Tensor | float,
    b: Tensor | float,
    p: float,
    eta: float,
) -> Tensor:
    """E[max(0, 1 − m + shift)]: the (adversarial, shift = ε‖w‖_*) hinge loss, no regulariser."""
    total = torch.zeros((), dtype=w1.dtype, device=w1.device)
    for y, s in _SIGNS:
        a = 1.0 + shift - (y * b + s * w1 + eta * gsum)
        total = total + 0.5 * (p if s > 0 else 1.0 - p) * expected_hinge(a, gsq)
    return total


def symmetric_dual_norm(w1: Tensor, v: Tensor, d: int, q: float) -> Tensor:
    """‖(w1, v, …, v)‖_q with d copies of v (q = ∞: max(|w1|, |v|))."""
    a, c = w1.abs(), v.abs()
    if q == math.inf:
        return torch.maximum(a, c)
    if q == 1.0:
        return a + d * c
    return (a**q + d * c**q) ** (1.0 / q)


def theorem_2_1_bound(standard_accuracy: Tensor | float, p: float, clip: bool = True) -> Tensor:
    """Theorem 2.1: robust accuracy ≤ p/(1 − p)·(1 − standard accuracy) (ℓ∞, ε ≥ 2η).

    The theorem gives the raw value, which exceeds 1 (and says nothing) once the standard
    accuracy is below 1 − (1 − p)/p; ``clip=True`` returns min(1, raw), also a valid bound.

    Examples:
        >>> from advtrade import theorem_2_1_bound
        >>> theorem_2_1_bound([0.99, 0.999, 0.5], p=0.95)
        tensor([0.1900, 0.0190, 1.0000], dtype=torch.float64)
    """
    acc = torch.as_tensor(standard_accuracy, dtype=torch.float64)
    if not 0.5 <= p < 1:
        raise ValueError(f"p must satisfy 0.5 <= p < 1, got {p!r}")
    raw = p / (1.0 - p) * (1.0 - acc)
    return raw.clamp(max=1.0) if clip else raw


# -- result types ----------------------------------------------------------------------------


class LinearClassifier(NamedTuple):
    """f(x) = sign(w·x + b); ``w`` is (d+1,) float64, ``b`` a float. Unpacks as ``(w, b)``."""

    w: Tensor
    b: float = 0.0

    @classmethod
    def from_module(cls, module: nn.Linear) -> LinearClassifier:
        """The classifier of a trained ``nn.Linear``: one output (score z, y = +1 ↔ z > 0), or
        two (class 1 ↔ y = +1, score z1 − z0).

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> from advtrade import LinearClassifier
            >>> layer = nn.Linear(3, 2)
            >>> with torch.no_grad():
            ...     _ = layer.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 2.0]]))
            ...     _ = layer.bias.fill_(0.5)
            >>> w, b = LinearClassifier.from_module(layer)
            >>> w, b
            (tensor([1., 0., 2.], dtype=torch.float64), 0.0)
        """
        if not isinstance(module, nn.Linear) or module.out_features not in (1, 2):
            raise TypeError(f"module must be an nn.Linear with 1 or 2 outputs, got {module!r}")
        w = module.weight.detach().to(torch.float64)
        b = module.bias.detach().to(torch.float64) if module.bias is not None else w.new_zeros(2)
        if module.out_features == 1:
            return cls(w[0].clone(), float(b[0]))
        return cls(w[1] - w[0], float(b[1] - b[0]))


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


@dataclass(frozen=True, eq=False)
class TradeoffFrontier:
    """Accuracies along w(t) = t·e1 + (1 − t)·ŵ_avg (ŵ_avg = (0, 1, …, 1)/√d), t ∈ [0, 1]:
    from the averaging classifier (t = 0) to the robust one (t = 1). All (n,) float64 tensors;
    ``bound`` is Theorem 2.1's min(1, p/(1 − p)·(1 − standard)), valid if ``bound_applies``."""

    t: Tensor
    w1: Tensor
    v: Tensor
    standard: Tensor
    robust: Tensor
    bound: Tensor
    threat: ThreatModel
    bound_applies: bool


# -- the symmetric soft-margin SVM -------------------------------------------------------------


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
