"""Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size that tunes itself.

APGD starts with a large step (2ε) and halves it, per example, at checkpoints where progress has
stalled, restarting from the best point found; so a robust evaluation needs no step-size tuning,
which is where plain PGD evaluations most often go wrong. It is built from the same pieces as
:class:`advtrade.PGD` — the threat model's projection and ascent direction, per-example losses —
and works for every threat model (ℓ∞, ℓ2, per-example ε).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from torch import Tensor, nn

from ._outputs import as_class_index, as_logits
from .attacks import Attack, _Best, _check_iterative, _fooled, _take, _with_restarts
from .guard import ModelMode
from .losses import Loss, cross_entropy, dlr_loss
from .threats import Eps, ThreatModel

__all__ = ["APGD"]

_LOSSES: dict[str, Loss] = {"ce": cross_entropy, "dlr": dlr_loss}


@dataclass
class _State:
    """Per-example state of one APGD run; every tensor shares the batch dimension."""

    index: Tensor  # position of each example in the run's batch
    x0: Tensor
    y: Tensor
    x: Tensor
    x_prev: Tensor
    grad: Tensor
    # The best point so far, where a halving restarts from and what the run returns: a fooled
    # point beats any unfooled one, then the higher loss wins (for examples not yet fooled,
    # the best-loss point of the paper).
    x_best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    fooled: Tensor
    loss_prev: Tensor
    loss_at_check: Tensor  # best loss at the previous checkpoint
    eta: Tensor  # step size, shape (B, 1, ..., 1)
    ups: Tensor  # steps that increased the loss since the previous checkpoint
    halved: Tensor  # the step was halved at the previous checkpoint

    def keep(self, mask: Tensor) -> _State:
        """The state restricted to the examples where ``mask`` is true."""
        return _State(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def best(self) -> _Best:
        return _Best(self.x_best, self.fooled, self.loss_best)

    def update(self, x: Tensor, grad: Tensor | None, fooled: Tensor, loss: Tensor) -> None:
        """Take ``x`` as the best point where it beats it."""
        better = (fooled > self.fooled) | ((fooled == self.fooled) & (loss > self.loss_best))
        col = better.view(-1, *([1] * (x.ndim - 1)))
        self.x_best = torch.where(col, x, self.x_best)
        if grad is not None:
            self.grad_best = torch.where(col, grad, self.grad_best)
        self.loss_best = torch.where(better, loss, self.loss_best)
        self.fooled = self.fooled | fooled


@dataclass(frozen=True)
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020) with the cross-entropy or DLR loss, any threat model.

    Each of ``steps`` iterations takes a threat-norm step of size η (initially
    ``initial_step``·ε) along the threat's ascent direction, projects onto ball ∩ domain, and
    mixes in the previous move with ``momentum`` (none on the first step). At checkpoints
    (after 22% of the steps, then at shrinking intervals, as in the paper) an example's η is
    halved and it restarts from its best point if at most a fraction ``rho`` of its steps
    since the last checkpoint increased the loss, or if its η was not halved then and its best
    loss has not improved since. The best point, also what is returned, is a misclassified
    iterate if one was found (the highest-loss one), else the highest-loss iterate.
    ``restarts`` rerun the examples still robust from new random starts; ``early_stop`` drops
    fooled examples from later passes. ``loss`` is ``"ce"``, ``"dlr"`` (invariant to shifting
    and scaling the logits; needs 3 classes) or any per-example loss ``(logits, y) -> (B,)``.

    Cost per restart: ``steps`` forward+backward passes and one forward pass (the gradient at
    the last iterate is never needed).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import APGD, LinfBall
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))  # logits = x: class 0 iff x0 > x1
        >>> attack = APGD(LinfBall(0.15), steps=10)
        >>> x_adv = attack(model, torch.tensor([[0.6, 0.4]]), torch.tensor([0]))
        >>> x_adv, model(x_adv).argmax(1)
        (tensor([[0.4500, 0.5500]]), tensor([1]))
    """

    threat: ThreatModel
    steps: int = 100
    loss: Literal["ce", "dlr"] | Loss = "ce"
    restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    initial_step: float = 2.0
    random_start: bool = True
    early_stop: bool = False
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        _check_iterative(self)
        if isinstance(self.loss, str):
            if self.loss not in _LOSSES:
                raise ValueError(f"loss must be 'ce', 'dlr' or a callable, got {self.loss!r}")
        elif not callable(self.loss):
            raise TypeError(f"loss must be 'ce', 'dlr' or a callable, got {self.loss!r}")
        for name, low, high in (("rho", 0.0, 1.0), ("momentum", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number in [{low}, {high}], got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
        s = self.initial_step
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf:
            raise ValueError(f"initial_step must be a finite number > 0 (times ε), got {s!r}")

    def with_eps(self, eps: Eps) -> APGD:
        """The same attack with budget ``eps`` (the step size is relative to ε, so it scales)."""
        return replace(self, threat=self.threat.with_eps(eps))

    def _schedule(self) -> tuple[int, int, int]:
        """First checkpoint interval, its decrement and its minimum, in steps (the paper's
        p₁ = 0.22, shrinking by 0.03 down to 0.06 of the budget)."""
        n = self.steps
        return max(int(0.22 * n), 1), max(int(0.03 * n), 1), max(int(0.06 * n), 1)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        loss_fn = _LOSSES[self.loss] if isinstance(self.loss, str) else self.loss
        return _with_restarts(
            self.restarts,
            x,
            self.threat,
            lambda idx, threat: self._run(model, *_take(idx, x, y), threat, loss_fn, generator),
        )

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        loss_fn: Loss,
        generator: torch.Generator | None,
    ) -> _Best:
        """One APGD run from one random start; returns each example's best point."""
        n = x.shape[0]
        shape = (n,) + (1,) * (x.ndim - 1)
        x_adv = threat.random_start(x, generator) if self.random_start else x.clone()
        logits, loss, grad = _forward(model, x_adv, y, loss_fn, with_grad=True)
        assert grad is not None
        labels = as_class_index(y, logits.shape[1])
        eta = self.initial_step * torch.ones(shape, dtype=x.dtype, device=x.device)
        eta = eta * threat.eps_like(x)
        s = _State(
            index=torch.arange(n, device=x.device),
            x0=x,
            y=labels,
            x=x_adv,
            x_prev=x_adv,
            grad=grad,
            x_best=x_adv,
            grad_best=grad,
            loss_best=loss,
            fooled=_fooled(logits, labels, False),
            loss_prev=loss,
            loss_at_check=loss,
            eta=eta,
            ups=torch.zeros(n, dtype=loss.dtype, device=x.device),
            halved=torch.ones(n, dtype=torch.bool, device=x.device),
        )
        done = _Best.empty(x)  # examples dropped by early stopping
        interval, decrement, min_interval = self._schedule()
        since_check, project = 0, threat.projector(x)
        for i in range(self.steps):
            with torch.no_grad():
                z = project(torch.addcmul(s.x, s.eta, threat.ascent_direction(s.grad)))
                if i > 0:  # x + a(z − x) + (1 − a)(x − x_prev) = lerp(2x − x_prev, z, a)
                    z = project(torch.lerp(s.x.mul(2).sub_(s.x_prev), z, self.momentum))
                s.x_prev, s.x = s.x, z
            logits, loss, grad = _forward(model, s.x, s.y, loss_fn, with_grad=i < self.steps - 1)
            fooled = _fooled(logits, s.y, False)
            s.ups += loss > s.loss_prev
            s.loss_prev, s.grad = loss, grad
            s.update(s.x, grad, fooled, loss)
            if grad is None:  # the last iterate: no step follows
                break
            since_check += 1
            if since_check == interval:
                halve = (s.ups <= self.rho * interval) | (
                    ~s.halved & (s.loss_at_check >= s.loss_best)
                )
                s.halved, s.loss_at_check = halve, s.loss_best
                s.ups = torch.zeros_like(s.ups)
                col = _col(halve, x)
                s.eta = torch.where(col, s.eta / 2, s.eta)
                s.x = torch.where(col, s.x_best, s.x)
                s.grad = torch.where(col, s.grad_best, s.grad)
                since_check, interval = 0, max(interval - decrement, min_interval)
            if self.early_stop and bool(fooled.any()):
                finished = s.keep(fooled)
                done.merge(finished.index, finished.best())
                keep = ~fooled
                threat = threat.select(keep.nonzero().squeeze(1))
                s = s.keep(keep)
                if s.index.numel() == 0:
                    return done
                project = threat.projector(s.x0)
        if s.index.numel() == n:
            return s.best()
        done.merge(s.index, s.best())
        return done


def _col(mask: Tensor, like: Tensor) -> Tensor:
    """A (B,) mask viewed as (B, 1, ..., 1) to select whole examples of ``like``."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


def _forward(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: Loss, *, with_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Logits, per-example loss and (optionally) its input gradient at ``x``, all detached."""
    if not with_grad:
        with torch.no_grad():
            logits = as_logits(model(x), x.shape[0])
            return logits, loss_fn(logits, as_class_index(y, logits.shape[1])), None
    x = x.detach().requires_grad_(True)
    logits = as_logits(model(x), x.shape[0])
    loss = loss_fn(logits, as_class_index(y, logits.shape[1]))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), loss.detach(), grad
