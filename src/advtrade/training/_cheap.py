"""Cheaper adversarial training: "fast" FGSM training and "free" training.

PGD adversarial training with K steps costs K + 1 forward+backward passes per batch. Two
objectives here cost less per example seen, both built on the attacks' ascent core:

* :class:`FastAdversarialTraining` (Wong et al. 2020) — one FGSM step of 1.25ε from a uniform
  random start, projected onto ball ∩ domain: 2 forward + 2 backward passes per batch.
* :class:`FreeAdversarialTraining` (Shafahi et al. 2019) — each batch is replayed m times; each
  replay is ONE forward/backward whose gradients update both the weights and the perturbation δ,
  which is carried across replays and batches: m forward + m backward passes per batch.

Single-step training can fail suddenly ("catastrophic overfitting"); see
:class:`~advtrade.training.CatastrophicOverfittingGuard`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_bool, check_int, check_number, check_type
from ..attacks import PGD
from ..attacks._core import ascent_step
from ..threats import ThreatModel
from ._objectives import (
    LossObjective,
    Objective,
    StepContext,
    StepOutput,
    class_loss,
    logits_of,
)

__all__ = ["FastAdversarialTraining", "FreeAdversarialTraining"]


@dataclass(frozen=True)
class _RelativeStep(PGD):
    """PGD whose default step is ``ratio``·ε (an explicit ``step_size`` still wins)."""

    ratio: float = 1.0

    def _alpha(self, threat: ThreatModel, x: Tensor) -> Tensor | float:
        if self.step_size is not None:
            return float(self.step_size)
        return self.ratio * threat.eps_like(x)


def _threat(threat: object, owner: str) -> ThreatModel:
    return check_type(
        f"{owner}: threat", threat, ThreatModel, "a ThreatModel such as LinfBall(eps)"
    )


@dataclass(frozen=True)
class FastAdversarialTraining(LossObjective):
    """Fast adversarial training (Wong et al. 2020): FGSM from a random start.

    Per batch: δ₀ uniform in ball ∩ domain, one ascent step of ``step_size`` (default 1.25·ε)
    along the threat's steepest-ascent direction, projection back onto ball ∩ domain (so
    ‖δ‖∞ ≤ ε, never 2ε), then one weight update on x + δ — 2 forward and 2 backward passes. It is
    :class:`~advtrade.AdversarialTraining` with ``attack`` = that one-step PGD (last iterate):
    the attack runs in the trainer's ``attack_mode`` (eval by default; ``"as_is"`` is the paper's
    train-mode attack) and under its autocast, the update in the user's training mode, and an ε
    schedule scales ε and the step together. ``attack`` is also what the trainer evaluates with
    by default: pass a stronger ``eval_attack`` to ``fit``, and use
    :class:`~advtrade.training.CatastrophicOverfittingGuard`.
    """

    threat: ThreatModel
    step_size: float | None = None
    random_start: bool = True
    attack: PGD = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        threat = _threat(self.threat, "FastAdversarialTraining")
        if self.step_size is not None:
            check_number("step_size", self.step_size, minimum=0.0, strict=True)
        check_bool("random_start", self.random_start)
        attack = _RelativeStep(
            threat,
            steps=1,
            step_size=self.step_size,
            random_start=self.random_start,
            select="last",
            ratio=1.25,
        )
        object.__setattr__(self, "attack", attack)

    def loss(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        x_adv = ctx.perturb(self.attack, x, y)
        logits = logits_of(model, x_adv)
        return class_loss(logits, y), None, logits


@dataclass(eq=False)
class FreeAdversarialTraining(Objective):
    """Free adversarial training (Shafahi et al. 2019): m replays per batch, one backward each.

    Each replay runs one forward on x + δ in the user's training mode and one backward whose
    weight gradients make an optimizer step (``ctx.optimize(loss, wrt=(δ,))``) and whose input
    gradient moves δ by ``step_size`` (default ε) along the threat's ascent direction, projected
    onto ball ∩ domain (the ascent core's step). δ is carried across replays and batches in
    ``delta_`` (sliced for a smaller last batch, grown with zeros for a larger one) and projected
    onto the new batch's ball ∩ domain before use. The perturbation step shares the update's
    forward, so it runs in training mode by construction (BatchNorm sees x + δ), whatever
    ``attack_mode`` says. A step reports the mean loss over its replays and the last replay's
    logits.

    Cost: an epoch is m optimizer steps per batch (≈ m standard epochs). To match the paper,
    train ``epochs_for(E)`` = ⌈E/m⌉ epochs where standard training would use E. ``delta_`` is
    saved in checkpoints (per rank), so a run resumes bit for bit; share one objective between
    trainers only if they should share δ.
    """

    threat: ThreatModel
    replays: int = 4
    step_size: float | None = None
    attack: PGD = field(init=False, repr=False)
    delta_: Tensor | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        threat = _threat(self.threat, "FreeAdversarialTraining")
        check_int("replays", self.replays, minimum=1)
        if self.step_size is not None:
            check_number("step_size", self.step_size, minimum=0.0, strict=True)
        self.attack = _RelativeStep(
            threat, steps=self.replays, step_size=self.step_size, random_start=False, ratio=1.0
        )

    def epochs_for(self, standard_epochs: int) -> int:
        """Epochs that cost about as much as ``standard_epochs`` standard ones: ⌈E/m⌉."""
        epochs = check_int("standard_epochs", standard_epochs, minimum=1)
        return max(1, math.ceil(epochs / self.replays))

    def reset(self) -> None:
        """Forget the carried perturbation (the next batch starts from δ = 0)."""
        self.delta_ = None

    def state_dict(self) -> dict[str, Any]:
        """The carried δ, for a checkpoint from which a run resumes bit for bit."""
        return {"delta": None if self.delta_ is None else self.delta_.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        unknown = set(state) - {"delta"}
        if unknown:
            raise ValueError(
                f"FreeAdversarialTraining state holds unknown entries {sorted(unknown)}: it was "
                f"saved with another objective"
            )
        delta = state.get("delta")
        self.delta_ = None if delta is None else delta.detach().clone()

    def _carried(self, x: Tensor) -> Tensor:
        buf = self.delta_
        if buf is None or buf.shape[1:] != x.shape[1:] or buf.dtype != x.dtype:
            buf = torch.zeros_like(x)
        buf = buf.to(x.device)
        if buf.shape[0] < x.shape[0]:
            buf = torch.cat([buf, x.new_zeros((x.shape[0] - buf.shape[0], *x.shape[1:]))])
        self.delta_ = buf
        return buf[: x.shape[0]]

    def perturbation_step(
        self, x: Tensor, delta: Tensor, grad: Tensor, threat: ThreatModel, alpha: Tensor | float
    ) -> Tensor:
        """δ ← Proj_{ball ∩ domain}(x + δ + α·ascent(g)) − x: the update after each replay (the
        attacks' own ascent step)."""
        return ascent_step(threat, threat.projector(x), x + delta, alpha, grad) - x

    def train_step(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        """m replays of (forward, backward, optimizer step, δ step) on this batch."""
        attack = ctx.configure(self.attack)
        threat = attack.threat
        assert isinstance(attack, PGD) and threat is not None
        threat.check_domain(x)
        alpha = attack._alpha(threat, x)
        delta = threat.project(x, x + self._carried(x)) - x
        losses: list[Tensor] = []
        logits = x.new_empty(0)
        for _ in range(self.replays):
            delta = delta.detach().requires_grad_(True)
            with ctx.autocast():
                logits = logits_of(ctx.model, x + delta)
                loss = class_loss(logits, y)
            (grad,) = ctx.optimize(loss, wrt=(delta,))
            losses.append(loss.detach())
            delta = self.perturbation_step(x, delta.detach(), grad, threat, alpha).detach()
        assert self.delta_ is not None
        self.delta_[: x.shape[0]] = delta
        return StepOutput(torch.stack(losses).float().mean(), None, logits.detach())
