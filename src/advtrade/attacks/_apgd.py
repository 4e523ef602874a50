"""Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size that tunes itself, and its
targeted version APGD-T.

APGD starts with a large step (2ε) and halves it, per example, at checkpoints where progress has
stalled, restarting from the best point found; so a robust evaluation needs no step-size tuning,
which is where plain PGD evaluations most often go wrong. APGD-T runs it once per target class
with the targeted DLR loss. Both are built on the ascent core (:mod:`advtrade.attacks._core`)
and work for every threat model (ℓ∞, ℓ2, per-example ε).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

import torch
from torch import Tensor, nn

from .._outputs import as_logits
from .._validation import check_bool, check_choice, check_int, check_number
from ..guard import ModelMode
from ..losses import Loss, cross_entropy, dlr_loss, targeted_dlr_loss
from ..threats import ThreatModel
from ._base import Attack
from ._core import Ascent, Best, ascent_step, check_iterative, pick_rows, take, with_restarts

__all__ = ["APGD", "APGDT"]

_LOSSES: dict[str, Loss] = {"ce": cross_entropy, "dlr": dlr_loss}


def _col(mask: Tensor, like: Tensor) -> Tensor:
    """A (B,) mask viewed as (B, 1, ..., 1) to select whole examples of ``like``."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


@dataclass
class _State:
    """Per-example state of one APGD run; every tensor shares the batch dimension."""

    index: Tensor  # position of each example in the run's batch
    x0: Tensor
    x: Tensor
    x_prev: Tensor
    grad: Tensor
    eta: Tensor  # step size, (B, 1, ..., 1)
    loss_prev: Tensor
    loss_at_check: Tensor  # best loss at the previous checkpoint
    ups: Tensor  # steps that increased the loss since the previous checkpoint
    halved: Tensor  # the step was halved at the previous checkpoint

    def keep(self, mask: Tensor) -> _State:
        """The state restricted to the examples where ``mask`` is true."""
        return _State(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})


@dataclass(frozen=True)
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020) with the cross-entropy or DLR loss, any threat model.

    It starts from a random point on the ball's surface (``random_start``; see
    :meth:`~advtrade.ThreatModel.surface_start`), as the reference implementation does. Each of
    ``steps`` iterations takes a threat-norm step of size η (initially
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
    ``eot`` averages each gradient over that many forward passes (randomised models).

    Cost per restart: ``steps`` forward+backward passes and one forward pass (the gradient at
    the last iterate is never needed).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade.attacks import APGD
        >>> from advtrade import LinfBall
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
    eot: int = 1
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        check_iterative(self, self.threat, steps=self.steps, restarts=self.restarts, eot=self.eot)
        if isinstance(self.loss, str):
            check_choice("loss", self.loss, tuple(_LOSSES))
        elif not callable(self.loss):
            raise TypeError(f"loss must be 'ce', 'dlr' or a callable, got {self.loss!r}")
        check_number("rho", self.rho, minimum=0.0, maximum=1.0)
        check_number("momentum", self.momentum, minimum=0.0, maximum=1.0)
        check_number("initial_step", self.initial_step, minimum=0.0, strict=True)
        check_bool("random_start", self.random_start)
        check_bool("early_stop", self.early_stop)
        check_choice("mode", self.mode, ("eval", "as_is"))

    def with_threat(self, threat: ThreatModel) -> APGD:
        return replace(self, threat=threat)

    def with_mode(self, mode: ModelMode) -> APGD:
        return replace(self, mode=mode)

    def with_early_stop(self) -> APGD:
        return replace(self, early_stop=True)

    def _loss(self) -> Loss:
        return _LOSSES[self.loss] if isinstance(self.loss, str) else self.loss

    def _schedule(self) -> tuple[int, int, int]:
        """First checkpoint interval, its decrement and its minimum, in steps (the paper's
        p₁ = 0.22, shrinking by 0.03 down to 0.06 of the budget)."""
        n = self.steps
        return max(int(0.22 * n), 1), max(int(0.03 * n), 1), max(int(0.06 * n), 1)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        loss = self._loss()
        return self._attack(model, x, y, loss, None, generator).x

    def _attack(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss: Loss,
        loss_target: Tensor | None,
        generator: torch.Generator | None,
    ) -> Best:
        """Every restart of APGD on ``(x, y)``, each later one on the examples still robust."""

        def run(index: Tensor | None) -> Best:
            xs, ys = take(index, x, y)
            target = loss_target if index is None or loss_target is None else loss_target[index]
            threat = self.threat if index is None else self.threat.select(index)
            ascent = Ascent(model, ys, loss, loss_target=target, eot=self.eot)
            return self._run(ascent, xs, threat, generator)

        return with_restarts(self.restarts, run)

    def _run(
        self, ascent: Ascent, x: Tensor, threat: ThreatModel, generator: torch.Generator | None
    ) -> Best:
        """One APGD run from one start; returns each example's best point."""
        n = x.shape[0]
        x_adv = threat.surface_start(x, generator) if self.random_start else x
        point = ascent(x_adv)
        assert point.grad is not None
        best = Best.start(x_adv, point)
        eta = torch.full((n,) + (1,) * (x.ndim - 1), self.initial_step, dtype=x.dtype)
        s = _State(
            index=torch.arange(n, device=x.device),
            x0=x,
            x=x_adv,
            x_prev=x_adv,
            grad=point.grad,
            eta=eta.to(x.device) * threat.eps_like(x),
            loss_prev=point.objective,
            loss_at_check=best.loss,
            ups=torch.zeros(n, dtype=best.loss.dtype, device=x.device),
            halved=torch.ones(n, dtype=torch.bool, device=x.device),
        )
        done: Best | None = None  # examples dropped by early stopping
        interval, decrement, min_interval = self._schedule()
        since_check, project = 0, threat.projector(x)
        for i in range(self.steps):
            with torch.no_grad():
                z = ascent_step(threat, project, s.x, s.eta, s.grad)
                if i > 0:  # x + a(z − x) + (1 − a)(x − x_prev) = lerp(2x − x_prev, z, a)
                    z = project(torch.lerp(s.x.mul(2).sub_(s.x_prev), z, self.momentum))
                s.x_prev, s.x = s.x, z
            last = i == self.steps - 1
            point = ascent(s.x, grad=not last)
            s.ups += point.objective > s.loss_prev
            s.loss_prev = point.objective
            best.update(s.x, point)
            if last:  # no step follows: the gradient at the last iterate is never needed
                break
            assert point.grad is not None and point.fooled is not None
            s.grad = point.grad
            since_check += 1
            if since_check == interval:
                stalled = ~s.halved & (s.loss_at_check >= best.loss)
                halve = (s.ups <= self.rho * interval) | stalled
                s.halved, s.loss_at_check = halve, best.loss
                s.ups = torch.zeros_like(s.ups)
                col = _col(halve, x)
                s.eta = torch.where(col, s.eta / 2, s.eta)
                s.x = pick_rows(halve, best.x, s.x)
                assert best.grad is not None
                s.grad = torch.where(col, best.grad, s.grad)
                since_check, interval = 0, max(interval - decrement, min_interval)
            if self.early_stop and bool(point.fooled.any()):
                fooled = point.fooled
                if done is None:
                    done = Best.empty(x)
                done.merge(s.index[fooled], best.select(fooled))
                keep = ~fooled
                if not bool(keep.any()):
                    return done
                threat = threat.select(keep.nonzero().squeeze(1))
                s, best, ascent = s.keep(keep), best.select(keep), ascent.select(keep)
                project = threat.projector(s.x0)
        if done is None:
            return best
        done.merge(s.index, best)
        return done


@dataclass(frozen=True)
class APGDT(APGD):
    """APGD-T (Croce & Hein 2020, §4): APGD with the targeted DLR loss, once per target.

    For ``target`` k = 1, …, ``target_classes`` the examples still robust are attacked with
    :func:`~advtrade.losses.targeted_dlr_loss` towards their k-th most likely wrong class at
    the clean input, for ``steps`` steps (``restarts`` runs per target). Success is any
    misclassification, as in AutoAttack. Needs at least four classes; with C classes at most
    C − 1 targets exist and ``target_classes`` must not exceed that (checked at the call).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import LinfBall
        >>> from advtrade.attacks import APGDT
        >>> model = nn.Linear(4, 4, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(4))  # logits = x
        >>> x, y = torch.tensor([[0.6, 0.45, 0.1, 0.0]]), torch.tensor([0])
        >>> x_adv = APGDT(LinfBall(0.1), steps=10, target_classes=3)(model, x, y)
        >>> model(x_adv).argmax(1)
        tensor([1])
    """

    loss: Literal["ce", "dlr"] | Loss = field(default="dlr", init=False)
    target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("target_classes", self.target_classes, minimum=1)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        if y.is_floating_point():
            raise TypeError("APGDT needs class labels y, not a distribution target")
        with torch.no_grad():
            clean = as_logits(model(x), x.shape[0]).float()
        classes = clean.shape[1]
        if self.target_classes > classes - 1 or classes < 4:
            raise ValueError(
                f"target_classes={self.target_classes} needs a model with at least "
                f"{max(self.target_classes + 1, 4)} classes (the targeted DLR loss needs 4); this "
                f"model outputs {classes}. Use target_classes <= {classes - 1} or APGD"
            )
        # Wrong classes by decreasing clean score: column k - 1 is each example's k-th target.
        ranked = clean.scatter(1, y[:, None], -torch.inf).argsort(dim=1, descending=True)
        best = Best.empty(x)
        for k in range(self.target_classes):
            todo = (~best.fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            pairs = torch.stack([y[todo], ranked[todo, k]], dim=1)
            result = replace(self, threat=self.threat.select(todo))._attack(
                model, x[todo], y[todo], targeted_dlr_loss, pairs, generator
            )
            best.merge(todo, result)
        return best.x
