"""The one ascent core every gradient attack and every cheap training step is built from.

* :class:`Ascent` — the function an attack climbs on one batch: one forward pass, the
  per-example objective (the loss, negated for a targeted attack), the success criterion and the
  input gradient, averaged over ``eot`` draws of a randomised model. Mixed precision is handled
  here and only here: under a float16 autocast the backward pass is scaled per example so that
  confident examples' gradients do not underflow to zero.
* :class:`Best` — each example's worst case so far (a successful point beats any unsuccessful
  one, then the higher objective wins).
* :func:`with_restarts` — reruns an attack on the examples not yet fooled.
* :func:`ascent_step` — ``Proj(x + α·direction(g))``, the step of PGD, APGD, fast and free AT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._outputs import as_class_index, as_logits, check_finite_logits
from .._validation import check_int, check_label_range
from ..guard import ModelMode, model_guard
from ..losses import Loss
from ..threats import ThreatModel

__all__ = [
    "Ascent",
    "Best",
    "NoGradientError",
    "Point",
    "ascent_step",
    "check_iterative",
    "input_gradient",
    "per_example",
    "pick_rows",
    "success",
    "take",
    "with_restarts",
]


class NoGradientError(RuntimeError):
    """The model's output has no autograd path to its input, so gradient attacks cannot run."""


def success(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per example: misclassified (or, targeted, classified as ``y``); never for a
    distribution target such as TRADES' clean prediction."""
    if y.is_floating_point():
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    hit = logits.argmax(dim=1) == y
    return hit if targeted else ~hit


class Point(NamedTuple):
    """What :class:`Ascent` returns at a batch of points (all detached)."""

    logits: Tensor
    objective: Tensor
    fooled: Tensor | None  # None when not scored
    grad: Tensor | None


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _has_train_batchnorm(model: nn.Module) -> bool:
    norms = (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    return any(m.training for m in norms)


class Ascent:
    """The objective an attack maximises on one batch, and its input gradient.

    ``y`` are the labels that decide success (true labels; target classes when ``targeted``);
    ``loss(logits, loss_target)`` is the per-example loss, with ``loss_target`` defaulting to
    ``y`` (TRADES passes the clean logits, APGD-T the (true, target) pairs). The objective is
    the loss, negated when ``targeted``. Labels are checked against the model's classes at the
    first forward pass (no separate probe), where non-finite logits also raise.

    ``eot`` > 1 averages the gradient of ``eot`` forward passes (expectation over
    transformation, for randomised models) done as one batched pass over ``eot`` copies; the
    reported logits and objective are the means over the copies.
    """

    def __init__(
        self,
        model: nn.Module,
        y: Tensor,
        loss: Loss,
        *,
        targeted: bool = False,
        loss_target: Tensor | None = None,
        eot: int = 1,
    ) -> None:
        self.model, self.loss, self.targeted, self.eot = model, loss, targeted, eot
        self.y = y
        self.loss_target = loss_target
        self._ready = False
        self._batchnorm = _has_train_batchnorm(model)

    def select(self, rows: Tensor) -> Ascent:
        """The same problem restricted to the examples ``rows``."""
        out = Ascent.__new__(Ascent)
        out.__dict__.update(self.__dict__)
        out.y = self.y[rows]
        out.loss_target = None if self.loss_target is None else self.loss_target[rows]
        return out

    def _prepare(self, logits: Tensor) -> None:
        check_finite_logits(logits, "at the attack's starting points")
        check_label_range(self.y, logits.shape[1])
        self.y = as_class_index(self.y, logits.shape[1])
        self._ready = True

    def _forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if self._batchnorm and n * self.eot == 1:
            raise ValueError(
                "the model has BatchNorm layers in training mode (mode='as_is'), which cannot run "
                "on a single example, and the attack narrowed its batch to one (restarts, early "
                "stopping or evaluation attack only the examples still robust). Use "
                "mode='eval', freeze the BatchNorm layers, or restarts=1 and early_stop=False"
            )
        if self.eot > 1:
            x = x.expand(self.eot, *x.shape).reshape(self.eot * n, *x.shape[1:])
        logits = as_logits(self.model(x), x.shape[0])
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in float64,
            logits = logits.double()  # so confident examples' logit gradients keep their digits
        if not self._ready:
            self._prepare(logits[:n])
        return logits

    def _objective(self, logits: Tensor) -> Tensor:
        target = self.y if self.loss_target is None else self.loss_target
        if self.eot > 1:
            target = target.repeat(self.eot, *([1] * (target.ndim - 1)))
        value = self.loss(logits, target)
        return -value if self.targeted else value

    def _point(self, logits: Tensor, objective: Tensor, grad: Tensor | None) -> Point:
        logits, objective = logits.detach(), objective.detach()
        if self.eot > 1:
            logits = logits.view(self.eot, -1, logits.shape[1]).mean(0)
            objective = objective.view(self.eot, -1).mean(0)
        fooled = success(logits, self.y, self.targeted) & (objective.abs() < torch.inf)
        return Point(logits, objective, fooled, grad)

    def __call__(self, x: Tensor, *, grad: bool = True, score: bool = True) -> Point:
        """Logits, objective and success at ``x`` (B, ...), and the objective's input gradient
        (``grad=False``: a forward pass only; ``score=False``: the gradient only, for loops that
        keep the last iterate)."""
        if not grad:
            with torch.no_grad():
                logits = self._forward(x)
                return self._point(logits, self._objective(logits), None)
        x = x.detach().requires_grad_(True)
        logits = self._forward(x)
        objective = self._objective(logits)
        if not objective.requires_grad:
            raise NoGradientError(
                "the model's output does not depend on its input through autograd (it detaches "
                "the input, or computes outside torch); gradient attacks cannot run on it: use a "
                "gradient-free attack such as advtrade.attacks.Square"
            )
        if _autocast_dtype(x.device.type) == torch.float16:
            g = _scaled_gradient(logits, objective, x)
        else:
            (g,) = torch.autograd.grad(objective.sum(), x)
        if self.eot > 1:
            g = g / self.eot
        if not score:
            return Point(logits, objective, None, g)
        return self._point(logits, objective, g)


def input_gradient(
    model: nn.Module, x: Tensor, y: Tensor, loss: Loss, *, mode: ModelMode = "eval"
) -> Tensor:
    """∇ₓ of the per-example ``loss`` at labels ``y`` (rows are per-example gradients in eval
    mode), with the model guarded: what perception and the diagnostics look at."""
    with model_guard(model, mode) as net, torch.enable_grad():
        grad = Ascent(net, y, loss)(x, score=False).grad
    assert grad is not None
    return grad


def _scaled_gradient(logits: Tensor, objective: Tensor, x: Tensor) -> Tensor:
    """∇ₓ of the summed objective with the backward pass through the model scaled per example.

    Under float16 autocast the gradient of a confident example's loss with respect to its
    logits (softmax − one-hot, below 6e-8 once the margin exceeds ~17 nats) underflows to zero
    in the model's half-precision backward. So the logit gradient (computed in float64) is
    rescaled per example to a largest entry of 1, pushed through the model, and the input
    gradient is scaled back: the direction of every example survives, with its true magnitude.
    """
    (g_logits,) = torch.autograd.grad(objective.sum(), logits, retain_graph=True)
    scale = g_logits.abs().amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    (g,) = torch.autograd.grad(logits, x, grad_outputs=g_logits / scale)
    return g * scale.view(-1, *([1] * (x.ndim - 1))).to(g.dtype)


@dataclass
class Best:
    """Per-example worst case found so far: a successful point beats any unsuccessful one, and
    among points equally successful the higher objective wins (so adversarial training gets the
    max-loss point and evaluation any successful one). ``grad`` optionally rides along (APGD
    restarts from its best point with the gradient there)."""

    x: Tensor
    fooled: Tensor
    loss: Tensor
    grad: Tensor | None = None

    @classmethod
    def empty(cls, x: Tensor) -> Best:
        """A tracker holding ``x`` itself, unsuccessful, with the lowest objective."""
        n = x.shape[0]
        never = torch.zeros(n, dtype=torch.bool, device=x.device)
        return cls(x, never, torch.full((n,), -torch.inf, device=x.device))

    @classmethod
    def start(cls, x: Tensor, point: Point) -> Best:
        """The tracker initialised at ``x`` (a NaN objective counts as the lowest)."""
        assert point.fooled is not None
        loss = torch.nan_to_num(point.objective, nan=-torch.inf)
        return cls(x, point.fooled.clone(), loss, point.grad)

    def _beats(self, fooled: Tensor, loss: Tensor, index: Tensor | None = None) -> Tensor:
        old_fooled = self.fooled if index is None else self.fooled[index]
        old_loss = self.loss if index is None else self.loss[index]
        return torch.where(fooled == old_fooled, loss > old_loss, fooled)

    def update(self, x: Tensor, point: Point) -> None:
        """Keep ``x`` where it beats the best so far (every tensor covers the same examples)."""
        assert point.fooled is not None
        better = self._beats(point.fooled, point.objective)
        self.x = pick_rows(better, x, self.x)
        if self.grad is not None and point.grad is not None:  # gradients may be infinite
            self.grad = torch.where(per_example(better, x), point.grad, self.grad)
        self.fooled = self.fooled | point.fooled
        self.loss = torch.where(better, point.objective, self.loss)

    def merge(self, index: Tensor, other: Best) -> None:
        """Merge the results ``other`` computed for the examples ``index`` (out of place: the
        tracker may hold the caller's own input)."""
        better = self._beats(other.fooled, other.loss, index)
        rows = (index[better],)
        self.x = self.x.index_put(rows, other.x[better])
        self.fooled = self.fooled.index_put(rows, other.fooled[better])
        self.loss = self.loss.index_put(rows, other.loss[better].to(self.loss.dtype))

    def select(self, keep: Tensor) -> Best:
        """The tracker restricted to the examples ``keep``."""
        grad = None if self.grad is None else self.grad[keep]
        return Best(self.x[keep], self.fooled[keep], self.loss[keep], grad)


def with_restarts(restarts: int, run: Callable[[Tensor | None], Best]) -> Best:
    """Run ``run(index)`` ``restarts`` times, each later run only on the examples no earlier
    run fooled (``index=None``: the whole batch, uncopied); return each example's worst case."""
    best = run(None)
    for _ in range(restarts - 1):
        todo = (~best.fooled).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        best.merge(todo, run(todo))
    return best


def pick_rows(rows: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per example, ``a`` where the (B,) mask ``rows`` holds and ``b`` elsewhere, for batches of
    finite points (iterates, never gradients). On the CPU this is a lerp with weights 0 and 1,
    exact for finite values and about 4× faster there than ``torch.where`` (which it is on
    other devices); a non-finite point would turn into NaN, which attacks refuse to return."""
    mask = per_example(rows, a)
    if a.device.type == "cpu" and a.is_floating_point() and a.dtype == b.dtype:
        return torch.lerp(b, a, mask.to(a.dtype))
    return torch.where(mask, a, b)


def per_example(v: Tensor, like: Tensor) -> Tensor:
    """A (B,) tensor viewed as (B, 1, ..., 1) to act on whole examples of ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def take(index: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    """The rows ``index`` of each tensor (the tensors themselves for ``None``)."""
    return tensors if index is None else tuple(t[index] for t in tensors)


def ascent_step(
    threat: ThreatModel,
    project: Callable[[Tensor], Tensor],
    x: Tensor,
    alpha: Tensor | float,
    grad: Tensor,
) -> Tensor:
    """``project(x + alpha·threat.ascent_direction(grad))``: one steepest-ascent step of
    length ``alpha`` in the threat's norm, projected back onto ball ∩ domain."""
    direction = threat.ascent_direction(grad)
    if isinstance(alpha, Tensor):
        return project(torch.addcmul(x, alpha, direction))
    return project(torch.add(x, direction, alpha=alpha))


def check_iterative(attack: object, threat: object, **counts: object) -> None:
    """The checks every iterative attack shares: a threat model and whole counts >= 1 (steps,
    restarts, eot, ...)."""
    if not isinstance(threat, ThreatModel):
        raise TypeError(
            f"{type(attack).__name__}: threat must be a ThreatModel such as LinfBall(eps) or "
            f"L2Ball(eps), got {type(threat).__name__}"
        )
    for name, value in counts.items():
        check_int(name, value, minimum=1)
