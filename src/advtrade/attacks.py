"""Attacks: a threat model, a step rule and a loss, run by one PGD loop.

``PGD`` is the only optimiser loop; ``FGSM`` is one PGD step of size ε with no random start;
restarts and :class:`WorstOf` keep, per example, the worst case found (a misclassified point beats
any loss value). Every attack is an immutable configuration called as
``attack(model, x, y, *, generator=None)``; the base class checks the inputs and guards the model
once, and subclasses write only :meth:`Attack.perturb`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from ._outputs import as_class_index, as_logits, check_label_range, check_labels
from .guard import ModelMode, model_guard
from .losses import Loss, cross_entropy, margin_loss
from .threats import Eps, ThreatModel

__all__ = ["FGSM", "PGD", "Attack", "WorstOf"]


class Attack(ABC):
    """Base class of attacks: ``attack(model, x, y, *, generator=None) -> x_adv``.

    The call checks the inputs (x floating and inside the domain, labels matching the batch and
    the model's classes), runs :meth:`perturb` inside :func:`advtrade.guard.model_guard` and
    returns a detached batch of the same shape, dtype and device. ``y`` holds the true labels,
    or the target classes for a targeted attack.
    """

    mode: ModelMode = "eval"

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
            raise TypeError(
                "x must be a floating-point tensor of shape (B, ...), got "
                + (f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__)
            )
        check_labels(y, x.shape[0], x.device)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self._check_domain(x)
        if x.shape[0] == 0:
            return x.detach().clone()
        with model_guard(model, self.mode) as net, torch.enable_grad():
            with torch.no_grad():
                probe = as_logits(net(x[:2]), min(2, x.shape[0]))
            check_label_range(y, probe.shape[1])
            return self.perturb(net, x.detach(), y, generator=generator).detach()

    def subset(self, index: Tensor) -> Attack:
        """The attack for the examples ``index`` of a batch (differs only for per-example ε)."""
        threat = getattr(self, "threat", None)
        if threat is None or isinstance(threat.eps, float):
            return self
        return replace(self, threat=threat.select(index))  # type: ignore[type-var]

    def _check_domain(self, x: Tensor) -> None:
        threat = getattr(self, "threat", None)
        if threat is not None:
            threat.check_domain(x)

    @abstractmethod
    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        """Compute adversarial examples; inputs are already checked and the model guarded."""


@dataclass
class _Best:
    """Per-example worst case found so far: a fooled point beats any loss value, and among
    points equally fooled (or not) the higher loss wins, so adversarial training gets the
    max-loss point and evaluation gets any misclassified one."""

    x: Tensor
    fooled: Tensor
    loss: Tensor

    @classmethod
    def empty(cls, x: Tensor) -> _Best:
        n = x.shape[0]
        return cls(
            x.clone(),
            torch.zeros(n, dtype=torch.bool, device=x.device),
            torch.full((n,), -math.inf, dtype=x.dtype, device=x.device),
        )

    def _beats(self, fooled: Tensor, loss: Tensor, index: Tensor | None = None) -> Tensor:
        old_fooled = self.fooled if index is None else self.fooled[index]
        old_loss = self.loss if index is None else self.loss[index]
        return (fooled > old_fooled) | ((fooled == old_fooled) & (loss > old_loss))

    def update(self, x: Tensor, fooled: Tensor, loss: Tensor) -> None:
        """Keep ``x`` where it beats the best so far (all tensors cover the same examples)."""
        loss = loss.detach().to(self.loss.dtype)
        better = self._beats(fooled, loss)
        self.x = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x, self.x)
        self.fooled = self.fooled | fooled
        self.loss = torch.where(better, loss, self.loss)

    def merge(self, index: Tensor, other: _Best) -> None:
        """Merge the results ``other`` computed for the examples ``index``."""
        better = self._beats(other.fooled, other.loss.to(self.loss.dtype), index)
        take = index[better]
        self.x[take] = other.x[better]
        self.fooled[take] = other.fooled[better]
        self.loss[take] = other.loss[better].to(self.loss.dtype)

    def select(self, keep: Tensor) -> _Best:
        return _Best(self.x[keep], self.fooled[keep], self.loss[keep])


def _with_restarts(
    restarts: int,
    x: Tensor,
    threat: ThreatModel,
    run: Callable[[Tensor | None, ThreatModel], _Best],
) -> Tensor:
    """Run ``run(index, threat)`` ``restarts`` times, each later run only on the examples no
    earlier run fooled (``index=None``: the whole batch, uncopied), and return each example's
    worst case."""
    best = run(None, threat)
    for _ in range(restarts - 1):
        todo = (~best.fooled).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        best.merge(todo, run(todo, threat.select(todo)))
    return best.x


def _take(index: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    """The rows ``index`` of each tensor (the tensors themselves for ``None``)."""
    return tensors if index is None else tuple(t[index] for t in tensors)


def _check_iterative(attack: Attack) -> None:
    """The checks every iterative attack shares: a threat model, whole steps and restarts >= 1,
    and a known model mode."""
    threat = getattr(attack, "threat", None)
    if not isinstance(threat, ThreatModel):
        raise TypeError(
            f"threat must be a ThreatModel such as LinfBall(eps) or L2Ball(eps), got "
            f"{type(threat).__name__}"
        )
    for name in ("steps", "restarts"):
        value = getattr(attack, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if attack.mode not in ("eval", "as_is"):
        raise ValueError(f"mode must be 'eval' or 'as_is', got {attack.mode!r}")


def _fooled(logits: Tensor, target: Tensor, targeted: bool) -> Tensor:
    """Success of the attack per example: misclassified, or (targeted) classified as target."""
    if target.is_floating_point():  # a distribution target (e.g. TRADES): no success criterion
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    hit = logits.argmax(dim=1) == target
    return hit if targeted else ~hit


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) under any threat model.

    Each of ``steps`` iterations takes a step of ``step_size`` (default 2.5·ε/steps) along the
    threat's steepest-ascent direction of the loss and projects back onto ball ∩ domain. The
    returned point is, per example, the worst iterate found (a misclassified point beats any
    loss), over ``restarts`` runs from independent random starts; later restarts attack only the
    examples not yet fooled. ``early_stop`` freezes each example at its first misclassified
    iterate and drops it from later forward/backward passes. ``targeted`` makes ``y`` the target
    classes and minimises the loss instead. ``mode`` chooses eval-mode (default) or as-is model
    execution (see :func:`advtrade.guard.model_guard`).

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
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        _check_iterative(self)
        if self.step_size is not None:
            s = self.step_size
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 or s == math.inf:
                raise ValueError(f"step_size must be a finite number > 0 (or None), got {s!r}")
        if self.loss is not None and not callable(self.loss):
            raise TypeError(f"loss must be a callable (logits, y) -> (B,), got {self.loss!r}")

    def with_eps(self, eps: Eps) -> PGD:
        """The same attack with budget ``eps``; an explicit step size scales with ε."""
        step = self.step_size
        if step is not None and isinstance(self.threat.eps, float) and self.threat.eps > 0:
            ratio = eps / self.threat.eps
            step = None if isinstance(ratio, Tensor) else step * ratio
        return replace(self, threat=self.threat.with_eps(eps), step_size=step or None)

    def _alpha(self, threat: ThreatModel, x: Tensor) -> Tensor | float:
        if self.step_size is not None:
            return float(self.step_size)
        return 2.5 * threat.eps_like(x) / self.steps

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        loss_fn: Callable[[Tensor, Tensor], Tensor] = self.loss or cross_entropy
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
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        generator: torch.Generator | None,
    ) -> _Best:
        """One PGD run from one start; returns the best iterate of each example.

        Per step this does one forward and one input-gradient backward plus a handful of
        element-wise ops; scoring the last iterate costs one extra forward (no backward).
        """
        targeted = self.targeted
        x_adv = threat.random_start(x, generator) if self.random_start else x.clone()
        best = _Best.empty(x)
        done = _Best.empty(x) if self.early_stop else best  # examples that left the loop
        active = torch.arange(x.shape[0], device=x.device)
        x0, project, alpha = x, threat.projector(x), self._alpha(threat, x)
        labels = None
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = as_logits(model(x_adv), x_adv.shape[0])
            if labels is None:
                labels = y if y.is_floating_point() else as_class_index(y, logits.shape[1])
            objective = loss_fn(logits, labels)
            if targeted:
                objective = -objective
            (grad,) = torch.autograd.grad(objective.sum(), x_adv)
            x_adv = x_adv.detach()
            fooled = _fooled(logits.detach(), labels, targeted)
            best.update(x_adv, fooled, objective)
            if self.early_stop and bool(fooled.any()):
                done.merge(active, best)
                keep = ~fooled
                active, x0, labels, x_adv, grad = (
                    t[keep] for t in (active, x0, labels, x_adv, grad)
                )
                if active.numel() == 0:
                    return done
                best = best.select(keep)
                threat = threat.select(keep.nonzero().squeeze(1))
                project, alpha = threat.projector(x0), self._alpha(threat, x0)
            x_adv = project(_step(x_adv, alpha, threat.ascent_direction(grad)))
        assert labels is not None
        with torch.no_grad():
            logits = as_logits(model(x_adv), x_adv.shape[0])
            objective = loss_fn(logits, labels)
            objective = -objective if targeted else objective
            best.update(x_adv, _fooled(logits, labels, targeted), objective)
        if done is not best:
            done.merge(active, best)
        return done


def _step(x: Tensor, alpha: Tensor | float, direction: Tensor) -> Tensor:
    """``x + alpha * direction`` in one fused op."""
    if isinstance(alpha, Tensor):
        return torch.addcmul(x, alpha, direction)
    return torch.add(x, direction, alpha=alpha)


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

    def _alpha(self, threat: ThreatModel, x: Tensor) -> Tensor | float:
        if self.step_size is not None:
            return float(self.step_size)
        return threat.eps_like(x)


@dataclass(frozen=True)
class WorstOf(Attack):
    """Per example, the worst case over several attacks (a fooled point beats any margin).

    Each attack after the first runs only on the examples that no earlier attack fooled, so an
    ensemble costs little more than its strongest member on a weak model.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import FGSM, PGD, LinfBall, WorstOf, margin_loss
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))  # logits = x
        >>> x, y = torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 0])
        >>> attack = WorstOf([FGSM(LinfBall(0.15)), PGD(LinfBall(0.15), loss=margin_loss)])
        >>> model(attack(model, x, y)).argmax(1)  # the first stays robust, the second is fooled
        tensor([0, 1])
    """

    attacks: Sequence[Attack]
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        attacks = tuple(self.attacks)
        if not attacks or not all(isinstance(a, Attack) for a in attacks):
            raise TypeError("attacks must be a non-empty sequence of Attack objects")
        flags = {bool(getattr(a, "targeted", False)) for a in attacks}
        if len(flags) > 1:
            raise ValueError("attacks must be all targeted or all untargeted")
        object.__setattr__(self, "attacks", attacks)

    def _check_domain(self, x: Tensor) -> None:
        for attack in self.attacks:
            attack._check_domain(x)

    def subset(self, index: Tensor) -> WorstOf:
        return replace(self, attacks=[a.subset(index) for a in self.attacks])

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        targeted = bool(getattr(self.attacks[0], "targeted", False))
        best = _Best.empty(x)
        for attack in self.attacks:
            todo = (~best.fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x_adv = attack.subset(todo)(model, x[todo], y[todo], generator=generator)
            with torch.no_grad():
                logits = as_logits(model(x_adv), x_adv.shape[0])
            labels = as_class_index(y[todo], logits.shape[1])
            margin = margin_loss(logits, labels)
            fooled = _fooled(logits, labels, targeted)
            best.merge(todo, _Best(x_adv, fooled, -margin if targeted else margin))
        return best.x
