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

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .._outputs import as_class_index, as_logits
from .._validation import check_bool, check_number, check_type
from ..attacks import PGD, Attack
from ..guard import ModelMode, model_guard
from ..losses import cross_entropy, trades_kl

__all__ = [
    "TRADES",
    "AdversarialTraining",
    "LossObjective",
    "NonFiniteLossError",
    "Objective",
    "Standard",
    "StepContext",
    "StepOutput",
    "class_loss",
    "logits_of",
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


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """The model's (B, C) logits for ``x`` (one-logit and ``.logits`` outputs converted)."""
    return as_logits(model(x), x.shape[0])


def class_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of class labels (±1 labels of a binary model included)."""
    return cross_entropy(logits, as_class_index(y, logits.shape[1])).mean()


class Objective(ABC):
    """A training objective: performs the optimizer step(s) for one batch via ``ctx.optimize``.

    ``x`` and ``y`` are on the trainer's device and checked (labels as ``torch.long`` in the
    model's range). Return a :class:`StepOutput` whose loss is detached; call ``ctx.optimize`` at
    least once per batch (several times for replay methods). ``attack`` (``None`` when there is
    none) is what the trainer evaluates robust accuracy with by default and whose ε it records.
    Objectives that carry state across batches (free training's perturbation) return it from
    :meth:`state_dict`, so checkpoints resume bit for bit.
    """

    attack: Attack | None = None

    @abstractmethod
    def train_step(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        """One training step on the batch ``(x, y)``."""

    def state_dict(self) -> dict[str, Any]:
        """State carried across batches (none by default)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(
                f"{type(self).__name__} carries no state, but the checkpoint holds objective state "
                f"{sorted(state)}: it was saved with another objective"
            )


class LossObjective(Objective):
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


def _check_attack(attack: object, owner: str) -> Attack:
    return check_type(
        f"{owner}: attack", attack, Attack, "an advtrade Attack such as PGD(LinfBall(eps))"
    )


def training_attack(attack: Attack) -> Attack:
    """The attack as training runs it: a single-run PGD returns its last iterate (exactly K
    forward+backward passes, as in Madry et al.) instead of tracking its best one."""
    if isinstance(attack, PGD) and attack.restarts == 1 and not attack.early_stop:
        return replace(attack, select="last")
    return attack


@dataclass(frozen=True)
class Standard(LossObjective):
    """Standard training: mean cross-entropy on the clean batch (empirical risk minimisation)."""

    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        logits = logits_of(model, x)
        return class_loss(logits, y), logits, None


@dataclass(frozen=True)
class AdversarialTraining(LossObjective):
    """Adversarial training (Madry et al. 2018): minimise the cross-entropy at the attack's
    output, ``E[max_δ L(θ; x + δ, y)]`` with the inner max approximated by ``attack``.

    The attack runs with the trainer's ε schedule and attack mode; the weight update runs in the
    user's training mode. With ``last_iterate`` (default) a single-run PGD trains on its last
    iterate, so a K-step PGD costs exactly K + 1 forward+backward passes per batch; ``False``
    trains on the highest-loss iterate (one more forward pass). ``attack`` as given is what the
    trainer evaluates with.
    """

    attack: Attack
    last_iterate: bool = True
    _train_attack: Attack = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_attack(self.attack, "AdversarialTraining")
        check_bool("last_iterate", self.last_iterate)
        inner = training_attack(self.attack) if self.last_iterate else self.attack
        object.__setattr__(self, "_train_attack", inner)

    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        x_adv = ctx.perturb(self._train_attack, x, y)
        logits_adv = logits_of(model, x_adv)
        return class_loss(logits_adv, y), None, logits_adv


@dataclass(frozen=True)
class TRADES(LossObjective):
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + β·KL(f(x) ‖ f(x′))``, x′ maximising the KL.

    The objective owns its inner loss: ``attack`` (a PGD or FGSM configuration giving the threat
    model, steps and step size) is re-configured to maximise :func:`advtrade.losses.trades_kl`
    towards the clean prediction and to return its last iterate, so it cannot be paired with the
    wrong loss. ``beta`` dials the trade-off: 0 is standard training, larger values buy
    robustness with clean accuracy.
    """

    attack: Attack
    beta: float = 6.0
    _inner: Attack = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        attack = _check_attack(self.attack, "TRADES")
        if not isinstance(attack, PGD):
            raise TypeError(
                f"TRADES: attack must be a PGD or FGSM configuration (it sets the attack's loss "
                f"to trades_kl), got {type(attack).__name__}"
            )
        if attack.loss is not None and attack.loss is not trades_kl:
            name = getattr(attack.loss, "__name__", repr(attack.loss))
            raise ValueError(
                f"TRADES owns its inner loss (trades_kl); pass the attack without loss= "
                f"(got loss={name})"
            )
        if attack.targeted:
            raise ValueError("TRADES: attack must be untargeted, got targeted=True")
        if attack.restarts > 1 or attack.early_stop:
            raise ValueError(
                "TRADES: the inner attack has no success criterion, so restarts and early_stop "
                "do nothing; pass restarts=1, early_stop=False"
            )
        object.__setattr__(self, "beta", check_number("beta", self.beta, minimum=0.0))
        object.__setattr__(self, "_inner", replace(attack, loss=trades_kl, select="last"))

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
            target = logits_of(net, x).float()
        x_adv = ctx.perturb(self.inner_attack, x, target)
        logits_clean = logits_of(model, x)
        logits_adv = logits_of(model, x_adv)
        loss = class_loss(logits_clean, y)
        if self.beta:
            kl = trades_kl(logits_adv.float(), logits_clean.float()).mean()
            loss = loss + self.beta * kl
        return loss, logits_clean, logits_adv
