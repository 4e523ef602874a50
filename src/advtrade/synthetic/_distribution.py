"""The paper's distribution, sampled and solved exactly for linear classifiers.

:class:`TsiprasDistribution` is model (3) of Tsipras et al. (2019): y ~ U{−1, +1}; x1 = y with
probability p, else −y (the robust feature); x2 … x_{d+1} ~ N(η·y, 1) (the non-robust ones).
It samples (seeded, streaming, as DataLoader datasets), and for a linear classifier
sign(w·x + b) it gives standard and robust accuracy and the soft-margin SVM loss in closed form
(see :mod:`advtrade.synthetic._theory` for the formulas), the exact SVM minimisers of Theorem 2.2,
the Theorem 2.1 bound and the accuracy trade-off frontier — so tests can hold attacks, trainers
and evaluations against the truth. The closed forms treat the data as unbounded: a threat
model's ``domain`` is ignored here (attack this data with ``domain=None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from .._validation import check_int, check_number
from ..threats import LinfBall, ThreatModel
from . import _theory as th
from ._stream import Labels, SyntheticStream
from ._svm import SVMSolution, svm_solution
from ._theory import LinearClassifier, TradeoffFrontier, theorem_2_1_bound

__all__ = ["TsiprasDistribution"]

Ties = Literal["error", "half"]


WeightLike = Tensor | np.ndarray | Sequence[float] | LinearClassifier
"""Weights: (d+1,) or a batch (k, d+1) as a tensor, array or sequence, or a LinearClassifier."""
BiasLike = float | Tensor | None


def _check_broadcast(t: Tensor, w: Tensor, name: str) -> None:
    try:
        torch.broadcast_shapes(t.shape, w.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, which does not broadcast against the "
            f"{tuple(w.shape[:-1])} classifiers of w"
        ) from None


@dataclass(frozen=True, init=False)
class TsiprasDistribution:
    """y ~ U{±1}; x1 = y w.p. p else −y; x2 … x_{d+1} ~ N(η·y, 1); ``eta=None`` means 3/√d.

    Requires an integer d ≥ 1, ½ ≤ p < 1 and a finite η ≥ 0 (the paper's Theorem 2.1 range).

    Examples:
        >>> import torch
        >>> from advtrade import LinfBall, TsiprasDistribution
        >>> dist = TsiprasDistribution(d=100, p=0.95)  # η = 3/√d = 0.3
        >>> x, y = dist.sample(4, generator=torch.Generator().manual_seed(0))
        >>> x.shape, sorted(set(y.tolist()) | {-1, 1})
        (torch.Size([4, 101]), [-1, 1])

        Exact accuracies of the averaging classifier: Φ(η√d) = Φ(3), and at ε = 2η, Φ(−3).

        >>> avg = dist.averaging_classifier()
        >>> threat = LinfBall(2 * dist.eta, domain=None)  # the features are unbounded
        >>> round(float(dist.standard_accuracy(avg)), 5)
        0.99865
        >>> round(float(dist.robust_accuracy(avg, threat=threat)), 5)
        0.00135
        >>> round(float(dist.theorem_2_1_bound(0.99)), 4)  # no classifier does better
        0.19

        Theorem 2.2: the adversarial SVM puts no weight on the non-robust features.

        >>> paper = TsiprasDistribution(d=200, p=0.9, eta=4 / 200**0.5)
        >>> svm = paper.svm_minimizer(LinfBall(2 * paper.eta, domain=None))
        >>> svm.v, svm.robust_share
        (0.0, 1.0)
    """

    d: int
    p: float
    eta: float

    def __init__(self, d: int, p: float, eta: float | None = None) -> None:
        d = check_int("d", d, minimum=1)
        p = check_number("p", p, finite=False)
        if not 0.5 <= p < 1:
            raise ValueError(f"p must satisfy 0.5 <= p < 1 (P[x1 = y]), got {p!r}")
        eta = 3.0 / math.sqrt(d) if eta is None else check_number("eta", eta, finite=False)
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "eta", eta)

    @property
    def dim(self) -> int:
        """The input dimension d + 1."""
        return self.d + 1

    # -- sampling ------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        labels: Labels = "sign",
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """n i.i.d. examples: x (n, d+1) of ``dtype`` and int64 labels, ±1 (``"sign"``) or 0/1
        (``"index"``, 1 ↔ y = +1). All randomness comes from ``generator`` (drawn on its device,
        then moved to ``device``), so a seed fixes the data."""
        n = check_int("n", n, minimum=0)
        if labels not in ("sign", "index"):
            raise ValueError(f"labels must be 'sign' (±1) or 'index' (0/1), got {labels!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        kw = {"generator": generator, "device": gen_device}
        index = torch.randint(0, 2, (n,), **kw)
        agree = torch.rand(n, dtype=torch.float64, **kw) < self.p
        draw = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        x = torch.randn(n, self.dim, dtype=draw, **kw)
        sign = (2 * index - 1).to(draw)
        x.add_(sign[:, None] * self.eta)
        x[:, 0] = torch.where(agree, sign, -sign)
        y = index if labels == "index" else 2 * index - 1
        device = gen_device if device is None else device
        return x.to(device=device, dtype=dtype), y.to(device)

    def batches(
        self,
        n: int,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        labels: Labels = "sign",
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Stream n examples in batches of ``batch_size`` (the last may be smaller), all drawn
        in turn from one generator; memory is bounded by one batch."""
        n, batch_size = check_int("n", n, minimum=0), check_int("batch_size", batch_size, minimum=1)
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            yield self.sample(size, generator=generator, dtype=dtype, labels=labels, device=device)

    def tensor_dataset(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        labels: Labels = "sign",
    ) -> TensorDataset:
        """A fixed, map-style dataset of n examples (a train or test set for a DataLoader)."""
        return TensorDataset(*self.sample(n, generator=generator, dtype=dtype, labels=labels))

    def dataset(
        self,
        n: int,
        *,
        batch_size: int = 1024,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        labels: Labels = "sign",
        rank: int = 0,
        world_size: int = 1,
    ) -> SyntheticStream:
        """A streaming :class:`SyntheticStream` of n examples per epoch (use with
        ``DataLoader(stream, batch_size=None)``)."""
        return SyntheticStream(
            self,
            n,
            batch_size=batch_size,
            seed=seed,
            dtype=dtype,
            labels=labels,
            rank=rank,
            world_size=world_size,
        )

    # -- named classifiers ---------------------------------------------------------------------
    def averaging_classifier(self) -> LinearClassifier:
        """w_unif = (0, 1/d, …, 1/d), b = 0: accuracy Φ(η√d), ℓ∞ robust accuracy Φ((η − ε)√d)."""
        w = torch.full((self.dim,), 1.0 / self.d, dtype=torch.float64)
        w[0] = 0.0
        return LinearClassifier(w, 0.0)

    def robust_classifier(self) -> LinearClassifier:
        """sign(x1): standard accuracy p, and robust accuracy p for every ε < 1."""
        w = torch.zeros(self.dim, dtype=torch.float64)
        w[0] = 1.0
        return LinearClassifier(w, 0.0)

    def bayes_classifier(self) -> LinearClassifier:
        """The log-likelihood ratio: log(p/(1 − p))·x1 + 2η·Σ_{i≥2} x_i (highest standard acc.)."""
        w = torch.full((self.dim,), 2.0 * self.eta, dtype=torch.float64)
        w[0] = math.log(self.p / (1.0 - self.p))
        return LinearClassifier(w, 0.0)

    # -- exact accuracies and losses -----------------------------------------------------------
    def _weights(self, w: WeightLike, b: BiasLike) -> tuple[Tensor, Tensor]:
        if isinstance(w, LinearClassifier):
            if b is not None:
                raise TypeError("pass either a LinearClassifier or (w, b), not both")
            w, b = w
        if not isinstance(w, Tensor):
            try:
                w = torch.as_tensor(np.asarray(w, dtype=np.float64))
            except (TypeError, ValueError):
                raise TypeError(
                    f"w must be a tensor, array or sequence of floats, got {w!r}"
                ) from None
        if w.is_complex() or w.ndim not in (1, 2) or w.shape[-1] != self.dim:
            raise ValueError(
                f"w must have shape ({self.dim},) or (k, {self.dim}) (d + 1 = {self.dim} weights), "
                f"got {tuple(w.shape)}"
            )
        w = w.to(torch.float64)
        if isinstance(b, ThreatModel):
            raise TypeError("b must be a number or tensor; pass the threat model as threat=")
        b_t = torch.as_tensor(0.0 if b is None else b, dtype=torch.float64, device=w.device)
        if not bool(torch.isfinite(b_t).all()):
            raise ValueError(f"b must be finite, got {b_t}")
        _check_broadcast(b_t, w, "b")
        return w, b_t

    def _shift(self, w: Tensor, threat: ThreatModel | None) -> Tensor | float:
        if threat is None:
            return 0.0
        if not isinstance(threat, ThreatModel):
            raise TypeError(f"threat must be a ThreatModel or None, got {type(threat).__name__}")
        eps = torch.as_tensor(threat.eps, dtype=torch.float64, device=w.device)
        _check_broadcast(eps, w, "threat.eps")
        return eps * threat.dual_norm(w, dim=-1)

    def _moments(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(w1, Σ_{i≥2} w_i, Σ_{i≥2} w_i²); a non-finite w shows up here (cheaper than isfinite)."""
        g = w[..., 1:]
        w1, gsum, gsq = w[..., 0], g.sum(-1), torch.linalg.vecdot(g, g)
        if not bool(torch.isfinite(w1 + gsum + gsq).all()):
            raise ValueError("w must be finite (with a finite sum of squares)")
        return w1, gsum, gsq

    def standard_accuracy(
        self, w: WeightLike, b: BiasLike = None, *, ties: Ties = "error"
    ) -> Tensor:
        """Exact P[sign(w·x + b) = y] (see :meth:`robust_accuracy`)."""
        return self.robust_accuracy(w, b, None, ties=ties)

    def robust_accuracy(
        self,
        w: WeightLike,
        b: BiasLike = None,
        threat: ThreatModel | None = None,
        *,
        ties: Ties = "error",
    ) -> Tensor:
        """Exact P[sign(w·x' + b) = y for every x' in the threat's ball around x].

        Σ_{y,s} ½·P(s)·Φ((y·b + s·w1 + η·Σ_{i≥2} w_i − ε‖w‖_*)/σ), σ² = Σ_{i≥2} w_i²; with σ = 0 a
        step function. A tie (margin exactly 0) is an error by default (``ties="half"``: a coin
        flip). ``w``: (d+1,) or a batch (k, d+1), or a :class:`LinearClassifier`; ``b`` and a
        (B,)-tensor ε broadcast against the batch. Returns a float64 tensor of that batch shape
        (0-d for one classifier; ``float()`` it). ``threat=None`` gives standard accuracy.
        """
        if ties not in ("error", "half"):
            raise ValueError(f"ties must be 'error' or 'half', got {ties!r}")
        w, b = self._weights(w, b)
        w1, gsum, gsq = self._moments(w)
        return th.accuracy_from_moments(
            w1, gsum, gsq, self._shift(w, threat), b, self.p, self.eta, ties
        )

    def hinge_loss(
        self,
        w: WeightLike,
        b: BiasLike = None,
        threat: ThreatModel | None = None,
        lam: float = 0.0,
    ) -> Tensor:
        """E[max(0, 1 − y(w·x + b) + ε‖w‖_*)] + λ/2·‖w‖₂², exact and differentiable in (w, b).

        The worst perturbation inside the expectation lowers each margin by ε‖w‖_*; given (y, s)
        the margin is N(μ, σ²) and E[max(0, c − Z)] = (c − μ)Φ((c − μ)/σ) + σφ((c − μ)/σ).
        """
        lam = check_number("lam", lam, finite=False)
        w, b = self._weights(w, b)
        w1, gsum, gsq = self._moments(w)
        loss = th.hinge_from_moments(w1, gsum, gsq, self._shift(w, threat), b, self.p, self.eta)
        return loss + 0.5 * lam * (w * w).sum(-1)

    def svm_minimizer(
        self,
        threat: ThreatModel | None = None,
        *,
        lam: float | None = None,
        norm: float | None = None,
    ) -> SVMSolution:
        """The global minimiser of :meth:`hinge_loss` over w with b = 0 (the paper's SVM).

        Pass ``lam`` (≥ 0), or ``norm`` to tune λ (root finding) so that ‖w*‖₂ = norm (Theorem
        2.2's setting; the default is norm = 1). The objective is convex and invariant under
        permuting the Gaussian features, so the minimiser has equal Gaussian weights v, and the
        problem reduces to two variables (w1, v) solved to ~1e-8 relative (see
        :func:`advtrade.synthetic._svm.solve_symmetric_svm`; v = 0 is returned exactly when it
        is optimal). ``threat``: the training radius of adversarial training (a float ε).
        """
        eps, q = 0.0, 1.0
        if threat is not None:
            if not isinstance(threat, ThreatModel) or not isinstance(threat.eps, float):
                raise TypeError("threat must be a ThreatModel with a float eps (or None)")
            eps, q = threat.eps, threat.dual_p
        if lam is not None and norm is not None:
            raise ValueError("pass lam or norm, not both")
        if lam is not None:
            lam = check_number("lam", lam, finite=False)
            if not (lam >= 0 and math.isfinite(lam)):
                raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        else:
            norm = 1.0 if norm is None else check_number("norm", norm, finite=False)
            if not (norm > 0 and math.isfinite(norm)):
                raise ValueError(f"norm must be a finite number > 0, got {norm!r}")
        return svm_solution(d=self.d, p=self.p, eta=self.eta, eps=eps, q=q, lam=lam, norm=norm)

    # -- Theorem 2.1 and the frontier ----------------------------------------------------------
    def theorem_2_1_bound(self, standard_accuracy: Tensor | float, clip: bool = True) -> Tensor:
        """min(1, p/(1 − p)·(1 − standard accuracy)): the most robust accuracy any classifier
        with that standard accuracy can have when :meth:`theorem_2_1_applies`."""
        return theorem_2_1_bound(standard_accuracy, self.p, clip=clip)

    def theorem_2_1_applies(self, threat: ThreatModel) -> bool:
        """Whether the ball contains the shift δ = −2η·y·(0, 1, …, 1) the proof uses (for every
        budget): ℓ∞ needs ε ≥ 2η (the theorem); ℓ2 needs ε ≥ 2η√d (the same proof)."""
        if not isinstance(threat, ThreatModel):
            raise TypeError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        pn = threat.p
        shift = 2 * self.eta * (1.0 if pn == math.inf else self.d ** (1.0 / pn))
        eps = threat.eps if isinstance(threat.eps, float) else float(threat.eps.min())
        return eps >= shift * (1 - 1e-12)

    def tradeoff_frontier(
        self, threat: ThreatModel | None = None, n: int = 201
    ) -> TradeoffFrontier:
        """Standard and robust accuracy along w(t) = t·e1 + (1 − t)·(0, 1, …, 1)/√d, t ∈ [0, 1].

        Every linear classifier with b = 0 and equal Gaussian weights (the ones the SVMs pick)
        is, up to scale, on this path, the averaging classifier at t = 0 and sign(x1) at t = 1.
        ``threat`` defaults to ℓ∞ with ε = 2η, where Theorem 2.1 applies.
        """
        n = check_int("n", n, minimum=2)
        threat = LinfBall(2 * self.eta, domain=None) if threat is None else threat
        if not isinstance(threat, ThreatModel) or not isinstance(threat.eps, float):
            raise TypeError("tradeoff_frontier needs a threat model with a float eps")
        t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        w1, v = t, (1.0 - t) / math.sqrt(self.d)
        gsum, gsq = self.d * v, self.d * v * v
        shift = threat.eps * th.symmetric_dual_norm(w1, v, self.d, threat.dual_p)
        std = th.accuracy_from_moments(w1, gsum, gsq, 0.0, 0.0, self.p, self.eta)
        rob = th.accuracy_from_moments(w1, gsum, gsq, shift, 0.0, self.p, self.eta)
        return TradeoffFrontier(
            t,
            w1,
            v,
            std,
            rob,
            self.theorem_2_1_bound(std),
            threat,
            self.theorem_2_1_applies(threat),
        )
