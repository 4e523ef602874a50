"""PGD and FGSM: a threat model, a step rule and a loss, run by one loop.

``PGD`` is the loop; ``FGSM`` is its one-step configuration. Both are immutable configurations
called as ``attack(model, x, y, *, generator=None)`` and built on the ascent core
(:mod:`advtrade.attacks._core`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from .._validation import check_bool, check_choice, check_number
from ..guard import ModelMode
from ..losses import Loss, cross_entropy
from ..threats import Eps, ThreatModel
from ._base import Attack
from ._core import (
    Ascent,
    Best,
    ascent_step,
    check_iterative,
    pick_rows,
    take,
    with_restarts,
)

__all__ = ["FGSM", "PGD"]


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) under any threat model.

    Each of ``steps`` iterations takes a step of ``step_size`` (default 2.5·ε/steps) along the
    threat's steepest-ascent direction of the loss (default cross-entropy) and projects back onto
    ball ∩ domain. Which iterate comes back, per example:

    - ``select="success"`` (default): a successful iterate (misclassified; the target class when
      ``targeted``) when one was found — the highest-loss one among them — else the last
      iterate. Each step's forward pass scores the point it differentiates at, so this costs
      exactly ``steps`` forward+backward passes, and finds exactly the successes ``"best"``
      finds: robust accuracy is the same.
    - ``select="best"``: the worst iterate — a successful point beats any loss, then the higher
      loss wins — also for examples never fooled (the max-loss point, e.g. to estimate a robust
      loss). It scores the last iterate too: one more forward pass.
    - ``select="last"``: the last iterate of one run, exactly ``steps`` forward+backward passes
      (what adversarial training uses).

    ``restarts`` reruns from independent random starts on the examples no run has fooled yet and
    keeps each example's worst case (this scores every run's last iterate). ``early_stop``
    freezes each example at its first successful iterate and drops it from later passes.
    ``targeted`` makes ``y`` the target classes and minimises the loss instead. ``eot`` averages
    each step's gradient over that many forward passes (randomised models). ``mode`` runs the
    model in eval mode (default) or as it is (see :func:`advtrade.model_guard`).

    Examples:
        A linear model whose logits are the input itself: class 0 wins iff x0 > x1.

        >>> import torch
        >>> from torch import nn
        >>> from advtrade import PGD, LinfBall
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))
        >>> x, y = torch.tensor([[0.6, 0.4]]), torch.tensor([0])
        >>> attack = PGD(LinfBall(0.15), steps=10)
        >>> x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(0))
        >>> x_adv  # the worst corner of the ball
        tensor([[0.4500, 0.5500]])
        >>> model(x_adv).argmax(1)
        tensor([1])
        >>> model.training, model.weight.grad  # the model is left as it was
        (True, None)
    """

    threat: ThreatModel
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: Loss | None = None
    targeted: bool = False
    early_stop: bool = False
    select: Literal["success", "best", "last"] = "success"
    eot: int = 1
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        check_iterative(self, self.threat, steps=self.steps, restarts=self.restarts, eot=self.eot)
        if self.step_size is not None:
            check_number("step_size", self.step_size, minimum=0.0, strict=True)
        for name in ("random_start", "targeted", "early_stop"):
            check_bool(name, getattr(self, name))
        if self.loss is not None and not callable(self.loss):
            raise TypeError(f"loss must be a callable (logits, y) -> (B,), got {self.loss!r}")
        check_choice("select", self.select, ("success", "best", "last"))
        check_choice("mode", self.mode, ("eval", "as_is"))
        if self.select == "last" and (self.restarts > 1 or self.early_stop):
            raise ValueError(
                "select='last' returns the last iterate of a single run; restarts and "
                "early_stop need select='success' or 'best' (they keep each example's worst case)"
            )

    def with_threat(self, threat: ThreatModel) -> PGD:
        return replace(self, threat=threat)

    def with_mode(self, mode: ModelMode) -> PGD:
        return replace(self, mode=mode)

    def with_eps(self, eps: Eps) -> PGD:
        """The same attack with budget ``eps``; an explicit step size scales with ε."""
        step = self.step_size
        if step is not None and isinstance(self.threat.eps, float) and self.threat.eps > 0:
            ratio = eps / self.threat.eps
            step = None if isinstance(ratio, Tensor) else step * ratio
        return replace(self, threat=self.threat.with_eps(eps), step_size=step or None)

    def with_early_stop(self) -> PGD:
        return replace(self, early_stop=True) if self.select != "last" else self

    def _alpha(self, threat: ThreatModel, x: Tensor) -> Tensor | float:
        if self.step_size is not None:
            return float(self.step_size)
        return 2.5 * threat.eps_like(x) / self.steps

    def _ascent(self, model: nn.Module, y: Tensor) -> Ascent:
        loss = self.loss or cross_entropy
        return Ascent(model, y, loss, targeted=self.targeted, eot=self.eot)

    def _start(self, x: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
        return threat.random_start(x, generator) if self.random_start else x

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        if self.select == "last":
            return self._last(self._ascent(model, y), x, generator)

        # restarts compare runs by their outcome, so every run's last iterate must be scored
        score_last = self.select == "best" or self.restarts > 1

        def run(index: Tensor | None) -> Best:
            xs, ys = take(index, x, y)
            threat = self.threat if index is None else self.threat.select(index)
            return self._best(self._ascent(model, ys), xs, threat, generator, score_last)

        return with_restarts(self.restarts, run).x

    def _last(self, ascent: Ascent, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """One run returning its last iterate: ``steps`` forward+backward passes, nothing else."""
        threat = self.threat
        x_adv = self._start(x, threat, generator)
        project, alpha = threat.projector(x), self._alpha(threat, x)
        for _ in range(self.steps):
            point = ascent(x_adv, score=False)
            assert point.grad is not None
            x_adv = ascent_step(threat, project, x_adv, alpha, point.grad)
        return x_adv

    def _best(
        self,
        ascent: Ascent,
        x: Tensor,
        threat: ThreatModel,
        generator: torch.Generator | None,
        score_last: bool,
    ) -> Best:
        """One run from one start; returns each example's best iterate. Each step's forward
        pass scores the point it differentiates at, so only the last iterate needs one more
        forward pass (``score_last``); without it, examples no scored iterate fooled end at the
        last iterate."""
        x_adv = self._start(x, threat, generator)
        project, alpha = threat.projector(x), self._alpha(threat, x)
        best: Best | None = None
        done: Best | None = None  # examples that left early (early_stop)
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.steps):
            point = ascent(x_adv)
            assert point.grad is not None and point.fooled is not None
            if best is None:
                best = Best.start(x_adv, point)
            else:
                best.update(x_adv, point)
            grad = point.grad
            if self.early_stop and bool(point.fooled.any()):
                fooled = point.fooled
                if done is None:
                    done = Best.empty(x)
                done.merge(active[fooled], best.select(fooled))
                keep = ~fooled
                if not bool(keep.any()):
                    return done
                active, x, x_adv, grad = active[keep], x[keep], x_adv[keep], grad[keep]
                ascent, best = ascent.select(keep), best.select(keep)
                threat = threat.select(keep.nonzero().squeeze(1))
                project, alpha = threat.projector(x), self._alpha(threat, x)
            x_adv = ascent_step(threat, project, x_adv, alpha, grad)
        assert best is not None
        if score_last:
            best.update(x_adv, ascent(x_adv, grad=False))
        else:  # its outcome is left to the caller; the tracked losses are not compared again
            best.x = pick_rows(~best.fooled, x_adv, best.x)
        if done is None:
            return best
        done.merge(active, best)
        return done


@dataclass(frozen=True)
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ε from the clean
    point (under ℓ2 this is the fast gradient method, a step of length ε along the gradient).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import FGSM, LinfBall
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))  # logits = x
        >>> FGSM(LinfBall(0.15))(model, torch.tensor([[0.6, 0.4]]), torch.tensor([0]))
        tensor([[0.4500, 0.5500]])
    """

    steps: int = field(default=1, init=False)
    random_start: bool = field(default=False, init=False)
    restarts: int = field(default=1, init=False)
    early_stop: bool = field(default=False, init=False)
    select: Literal["success", "best", "last"] = "last"  # the step's point, as in the paper

    def with_early_stop(self) -> FGSM:
        return self  # one step: nothing to save

    def _alpha(self, threat: ThreatModel, x: Tensor) -> Tensor | float:
        if self.step_size is not None:
            return float(self.step_size)
        return threat.eps_like(x)


