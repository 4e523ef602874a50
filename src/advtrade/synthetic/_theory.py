"""Closed forms behind :mod:`advtrade.synthetic`: accuracies and hinge losses of linear
classifiers from four moments of their weights, and the Theorem 2.1 bound.

For the distribution of Tsipras et al. (2019), y ~ U{±1}, x1 = s·y with P(s = +1) = p and
x_i ~ N(η·y, 1) for i ≥ 2, a linear classifier sign(w·x + b) has, given y and s, the margin

    m = y·(w·x + b) ~ N(μ_{y,s}, σ²),   μ_{y,s} = y·b + s·w1 + η·Σ_{i≥2} w_i,   σ² = Σ_{i≥2} w_i²,

and the worst perturbation of radius ε lowers every margin by exactly ε‖w‖_* (the dual norm).
So everything depends on w only through four moments (w1, Σ w_i, Σ w_i², ‖w‖_*), which is what
the functions below take; they broadcast over any batch shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..threats import ThreatModel

__all__ = [
    "LinearClassifier",
    "TradeoffFrontier",
    "accuracy_from_moments",
    "expected_hinge",
    "hinge_from_moments",
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
        >>> from advtrade.synthetic._theory import theorem_2_1_bound
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
            >>> from advtrade.synthetic import LinearClassifier
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
