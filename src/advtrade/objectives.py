"""Training objectives: what one optimisation step on a batch means.

An objective is a small object with one method, ``train_step(x, y, ctx) -> StepOutput``; the
trainer loop never knows which one it runs. The trainer hands each step a :class:`StepContext`
that owns everything around the objective — the model in the user's training mode, the optimizer
step (``ctx.optimize``: zero_grad, backward with AMP loss scaling, clipping, step), the attack
generator, the ε schedule and the attack mode — so an objective that needs several optimizer steps
per batch ("free" adversarial training) performs them itself, and a simple objective writes only
``loss(model, x, y, ctx)`` on top of :class:`LossObjective`.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ._outputs import as_class_index, as_logits
from .attacks import Attack
from .guard import ModelMode, model_guard
from .losses import cross_entropy, trades_kl

__all__ = [
    "TRADES",
    "AdversarialTraining",
    "LossObjective",
    "NonFiniteLossError",
    "Objective",
    "Standard",
    "StepContext",
    "StepOutput",
    "TrainContext",
    "configure_attack",
]


@dataclass(frozen=True)
class StepOutput:
    """What one training step reports: the (detached, scalar) training loss and, when the
    objective computed them anyway, the clean and adversarial logits (B, C) of the batch.

    The trainer turns the logits into training accuracies; ``None`` means "not computed", so no
    extra forward pass is ever spent on metrics.
    """

    loss: Tensor
    logits_clean: Tensor | None = None
    logits_adv: Tensor | None = None


class StepContext(Protocol):
    """What the trainer gives an objective for one batch (implemented by the trainer).

    ``model`` is the user's model (possibly a DDP wrapper) in the user's training mode: run the
    forward passes whose loss updates the weights through it. ``generator`` drives every random
    choice of the step (attack starts); ``epoch`` and ``batch_index`` count from 0; ``eps`` is the
    scheduled budget of this epoch (``None`` without a schedule); ``attack_mode`` is the trainer's
    ``"eval"``/``"as_is"`` setting for crafting attacks.
    """

    model: nn.Module
    generator: torch.Generator
    epoch: int
    batch_index: int
    eps: float | None
    attack_mode: ModelMode

    def optimize(self, loss: Tensor, *, wrt: Sequence[Tensor] = ()) -> tuple[Tensor, ...]:
        """One optimizer step on a scalar ``loss``: check it is finite (else raise naming the
        epoch and batch), zero the gradients, backward (scaled under CUDA AMP), unscale and clip,
        step. Returns the unscaled gradients of the tensors in ``wrt`` (e.g. a perturbation δ)
        from the same backward pass — what "free" adversarial training reuses."""
        ...

    def autocast(self) -> AbstractContextManager[object]:
        """The trainer's mixed-precision context (a no-op when ``amp=False``)."""
        ...

    def configure(self, attack: Attack) -> Attack:
        """``attack`` with this epoch's scheduled ε and the trainer's attack mode applied."""
        ...

    def perturb(self, attack: Attack, x: Tensor, y: Tensor) -> Tensor:
        """``configure(attack)(model, x, y, generator=generator)``: adversarial examples."""
        ...


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; raised before the weights are updated."""


def configure_attack(attack: Attack, eps: float | None, mode: ModelMode) -> Attack:
    """``attack`` with budget ``eps`` (if not None) and model mode ``mode``; recurses into
    combinators such as :class:`~advtrade.WorstOf` so every member runs the same way."""
    members = getattr(attack, "attacks", None)
    if isinstance(members, tuple):
        inner = tuple(configure_attack(a, eps, mode) for a in members)
        return replace(attack, attacks=inner, mode=mode)  # type: ignore[type-var]
    if eps is not None:
        if not callable(getattr(attack, "with_eps", None)):
            raise TypeError(
                f"eps_schedule needs attacks with a with_eps(eps) method; "
                f"{type(attack).__name__} has none"
            )
        attack = attack.with_eps(eps)  # type: ignore[attr-defined]
    if getattr(attack, "mode", "eval") != mode:
        fields = dataclasses.fields(attack) if dataclasses.is_dataclass(attack) else ()
        if "mode" not in {f.name for f in fields}:
            raise TypeError(
                f"attack_mode={mode!r} needs attacks with a 'mode' field; "
                f"{type(attack).__name__} has none"
            )
        attack = replace(attack, mode=mode)  # type: ignore[type-var]
    return attack


class TrainContext:
    """The concrete :class:`StepContext`: what :class:`~advtrade.RobustTrainer` hands each step.

    Also usable on its own to run an objective by hand (tests, custom loops): it needs only the
    model and optimizer. ``scaler`` is a ``torch.amp.GradScaler`` (CUDA AMP); ``grad_clip`` is a
    maximum global gradient norm over the optimizer's parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        generator: torch.Generator | None = None,
        epoch: int = 0,
        batch_index: int = 0,
        eps: float | None = None,
        attack_mode: ModelMode = "eval",
        amp: bool = False,
        device_type: str = "cpu",
        scaler: torch.amp.GradScaler | None = None,
        grad_clip: float | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.generator = generator if generator is not None else torch.Generator()
        self.epoch = epoch
        self.batch_index = batch_index
        self.eps = eps
        self.attack_mode: ModelMode = attack_mode
        self.amp = amp
        self.device_type = device_type
        self.scaler = scaler
        self.grad_clip = grad_clip
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self._configured: dict[int, tuple[Attack, Attack]] = {}

    def optimize(self, loss: Tensor, *, wrt: Sequence[Tensor] = ()) -> tuple[Tensor, ...]:
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
            raise TypeError(f"ctx.optimize needs a scalar loss tensor, got {got}")
        if not bool(torch.isfinite(loss.detach())):
            raise NonFiniteLossError(
                f"the training loss is {float(loss.detach())} at epoch {self.epoch + 1} (ctx.epoch="
                f"{self.epoch}), batch index {self.batch_index}; the weights were not updated with "
                f"it and the last checkpoint is intact (try a lower learning rate or grad_clip=, "
                f"or check the data)"
            )
        if not loss.requires_grad:
            raise ValueError(
                "the loss does not require grad: was it computed under torch.no_grad(), or are "
                "all of the model's parameters frozen?"
            )
        self.optimizer.zero_grad(set_to_none=True)
        for t in wrt:
            t.grad = None
        scaler = self.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        grads = tuple(torch.zeros_like(t) if t.grad is None else t.grad.detach() for t in wrt)
        if scaler is not None:
            if wrt:
                inv = 1.0 / scaler.get_scale()
                grads = tuple(g * inv for g in grads)
            if self.grad_clip is not None:
                scaler.unscale_(self.optimizer)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        return grads

    def autocast(self) -> AbstractContextManager[object]:
        dtype = torch.bfloat16 if self.device_type == "cpu" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype, enabled=self.amp)

    def configure(self, attack: Attack) -> Attack:
        hit = self._configured.get(id(attack))
        if hit is not None and hit[0] is attack:
            return hit[1]
        out = configure_attack(attack, self.eps, self.attack_mode)
        self._configured[id(attack)] = (attack, out)
        return out

    def perturb(self, attack: Attack, x: Tensor, y: Tensor) -> Tensor:
        return self.configure(attack)(self.model, x, y, generator=self.generator)


@runtime_checkable
class Objective(Protocol):
    """A training objective: performs the optimizer step(s) for one batch via ``ctx.optimize``.

    ``x`` and ``y`` are already on the trainer's device and checked. Return a :class:`StepOutput`
    whose loss is detached; the objective must call ``ctx.optimize`` at least once per batch
    (several times for replay methods). An optional ``attack`` attribute is what the trainer
    evaluates robust accuracy with (at its full ε) and whose ε it records in the history.
    """

    def train_step(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput: ...


class LossObjective(ABC):
    """Base class of objectives that are one loss and one optimizer step per batch.

    Subclasses write :meth:`loss`; :meth:`train_step` runs it under the trainer's autocast and
    calls ``ctx.optimize`` once.
    """

    def train_step(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        with ctx.autocast():
            loss, logits_clean, logits_adv = self.loss(ctx.model, x, y, ctx)
        ctx.optimize(loss)
        return StepOutput(
            loss.detach(),
            None if logits_clean is None else logits_clean.detach(),
            None if logits_adv is None else logits_adv.detach(),
        )

    @abstractmethod
    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The scalar training loss and the clean / adversarial logits it computed (or None)."""


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    return as_logits(model(x), x.shape[0])


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return cross_entropy(logits, as_class_index(y, logits.shape[1])).mean()


def _check_attack(attack: object, owner: str) -> Attack:
    if not isinstance(attack, Attack):
        raise TypeError(
            f"{owner}: attack must be an advtrade Attack such as PGD(LinfBall(eps)), got "
            f"{type(attack).__name__}"
        )
    return attack


@dataclass(frozen=True)
class Standard(LossObjective):
    """Standard training: mean cross-entropy on the clean batch (empirical risk minimisation)."""

    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        logits = _logits(model, x)
        return _ce(logits, y), logits, None


@dataclass(frozen=True)
class AdversarialTraining(LossObjective):
    """Adversarial training (Madry et al. 2018): minimise the cross-entropy at the attack's
    output, ``E[max_δ L(θ; x + δ, y)]`` with the inner max approximated by ``attack``.

    The attack runs with the trainer's ε schedule and attack mode; the weight update runs in the
    user's training mode. Costs about (K + 1)× a standard step for a K-step PGD.
    """

    attack: Attack

    def __post_init__(self) -> None:
        _check_attack(self.attack, "AdversarialTraining")

    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        x_adv = ctx.perturb(self.attack, x, y)
        logits_adv = _logits(model, x_adv)
        return _ce(logits_adv, y), None, logits_adv


@dataclass(frozen=True)
class TRADES(LossObjective):
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + β·KL(f(x) ‖ f(x′))``, x′ maximising the KL.

    The objective owns its inner loss: ``attack`` (a PGD or FGSM configuration giving the threat
    model, steps and step size) is re-configured to maximise :func:`advtrade.trades_kl` towards
    the clean prediction, so it cannot be paired with the wrong loss. ``beta`` dials the
    trade-off: 0 is standard training, larger values buy robustness with clean accuracy.
    """

    attack: Attack
    beta: float = 6.0
    _inner: Attack = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        attack = _check_attack(self.attack, "TRADES")
        if not hasattr(attack, "loss") or not hasattr(attack, "targeted"):
            raise TypeError(
                f"TRADES: attack must be a PGD or FGSM configuration (it sets the attack's loss "
                f"to trades_kl), got {type(attack).__name__}"
            )
        inner = attack.loss  # type: ignore[attr-defined]
        if inner is not None and inner is not trades_kl:
            name = getattr(inner, "__name__", repr(inner))
            raise ValueError(
                f"TRADES owns its inner loss (trades_kl); pass the attack without loss= "
                f"(got loss={name})"
            )
        if attack.targeted:  # type: ignore[attr-defined]
            raise ValueError("TRADES: attack must be untargeted, got targeted=True")
        b = self.beta
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < math.inf:
            raise ValueError(f"beta must be a finite number >= 0, got {b!r}")
        object.__setattr__(self, "_inner", replace(attack, loss=trades_kl))  # type: ignore[type-var]

    @property
    def inner_attack(self) -> Attack:
        """The attack as TRADES runs it: maximising ``trades_kl`` towards the clean logits."""
        return self._inner

    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        # The attack's target is the clean prediction in the attack's own mode (eval by default),
        # as in the reference implementation; the loss terms run in the user's training mode.
        with model_guard(model, ctx.attack_mode) as net, torch.no_grad():
            target = _logits(net, x)
        x_adv = ctx.perturb(self.inner_attack, x, target)
        logits_clean = _logits(model, x)
        logits_adv = _logits(model, x_adv)
        loss = _ce(logits_clean, y)
        if self.beta:
            kl = trades_kl(logits_adv.float(), logits_clean.float()).mean()
            loss = loss + self.beta * kl
        return loss, logits_clean, logits_adv
