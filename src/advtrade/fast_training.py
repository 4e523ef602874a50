"""Cheaper adversarial training: "fast" FGSM training, "free" training, and a guard against
catastrophic overfitting.

PGD adversarial training with K steps costs about (K + 1)× a standard epoch. Two objectives
here cost less per example seen:

* :class:`FastAdversarialTraining` (Wong et al. 2020) — one FGSM step of 1.25ε from a uniform
  random start, projected onto ball ∩ domain: 2 forward + 2 backward passes per batch.
* :class:`FreeAdversarialTraining` (Shafahi et al. 2019) — each batch is replayed m times; each
  replay is ONE forward/backward whose gradients update both the weights and the perturbation δ,
  which is carried across replays and batches: m forward + m backward passes per batch.

Single-step training can fail suddenly ("catastrophic overfitting": robust to FGSM, not to
PGD); :class:`CatastrophicOverfittingGuard` checks for it at each epoch end and can roll the
model back to the last good epoch and stop.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._outputs import as_class_index, as_logits
from .attacks import FGSM, PGD
from .callbacks import Callback, Record
from .checkpoint import loader_generators
from .guard import model_guard, unwrap_model
from .losses import cross_entropy
from .objectives import StepContext, StepOutput
from .threats import ThreatModel

if TYPE_CHECKING:
    from .training import RobustTrainer

__all__ = [
    "CatastrophicOverfittingGuard",
    "CatastrophicOverfittingWarning",
    "FastAdversarialTraining",
    "FreeAdversarialTraining",
]


def _check_threat(threat: object, owner: str) -> ThreatModel:
    if not isinstance(threat, ThreatModel):
        raise TypeError(
            f"{owner}: threat must be a ThreatModel such as LinfBall(eps) or L2Ball(eps), got "
            f"{type(threat).__name__}"
        )
    return threat


def _check_step(step: object) -> None:
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < math.inf
    ):
        raise ValueError(f"step_size must be a finite number > 0 (or None), got {step!r}")


def _pgd(threat: ThreatModel, steps: int, step_size: float | None, ratio: float, rs: bool) -> PGD:
    """The PGD configuration an objective trains against. An explicit step (``ratio``·ε by
    default, for a float ε > 0) scales with the trainer's ε schedule through ``with_eps``."""
    if step_size is None and isinstance(threat.eps, float) and threat.eps > 0:
        step_size = ratio * threat.eps
    return PGD(threat, steps=steps, step_size=step_size, random_start=rs)


def _alpha(attack: PGD, ratio: float, x: Tensor) -> Tensor | float:
    """The step of the configured attack, or ``ratio``·ε when it has none (ε = 0 or per-example)."""
    if attack.step_size is not None:
        return float(attack.step_size)
    return ratio * attack.threat.eps_like(x)


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return cross_entropy(logits, as_class_index(y, logits.shape[1]))


@dataclass(frozen=True)
class FastAdversarialTraining:
    """Fast adversarial training (Wong et al. 2020): FGSM from a random start.

    Per batch: δ₀ uniform in ball ∩ domain, one ascent step of ``step_size`` (default 1.25·ε)
    along the threat's steepest-ascent direction, projection back onto ball ∩ domain (so
    ‖δ‖∞ ≤ ε, never 2ε), then one weight update on x + δ — 2 forward and 2 backward passes. The
    attack runs in the trainer's ``attack_mode`` (eval by default; ``"as_is"`` is the paper's
    train-mode attack) and the update in the user's training mode. An ε schedule scales ε and
    the step together. ``attack`` (this single-step attack as a PGD configuration) is what the
    trainer evaluates with by default: pass a stronger ``eval_attack`` to ``fit``, and use
    :class:`CatastrophicOverfittingGuard`.
    """

    threat: ThreatModel
    step_size: float | None = None
    random_start: bool = True
    attack: PGD = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_threat(self.threat, "FastAdversarialTraining")
        _check_step(self.step_size)
        attack = _pgd(self.threat, 1, self.step_size, 1.25, bool(self.random_start))
        object.__setattr__(self, "attack", attack)

    def perturb(self, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
        """The training point x + δ of this step (one forward/backward, no weight gradients)."""
        attack: PGD = ctx.configure(self.attack)  # type: ignore[assignment]
        threat = attack.threat
        threat.check_domain(x)
        start = threat.random_start(x, ctx.generator) if attack.random_start else x
        with model_guard(ctx.model, attack.mode) as net, torch.enable_grad():
            start = start.detach().requires_grad_(True)
            with ctx.autocast():
                loss = _ce(as_logits(net(start), x.shape[0]), y).float().sum()
            (grad,) = torch.autograd.grad(loss, start)
        step = threat.ascent_direction(grad)
        alpha = _alpha(attack, 1.25, x)
        moved = start.detach() + alpha * step
        return threat.project(x, moved).detach()

    def train_step(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        """Craft x + δ, then one optimizer step on the cross-entropy there."""
        x_adv = self.perturb(x, y, ctx)
        with ctx.autocast():
            logits = as_logits(ctx.model(x_adv), x.shape[0])
            loss = _ce(logits, y).mean()
        ctx.optimize(loss)
        return StepOutput(loss.detach(), None, logits.detach())


@dataclass(eq=False)
class FreeAdversarialTraining:
    """Free adversarial training (Shafahi et al. 2019): m replays per batch, one backward each.

    Each replay runs one forward on x + δ in the user's training mode and one backward whose
    weight gradients make an optimizer step (``ctx.optimize(loss, wrt=(δ,))``) and whose input
    gradient moves δ by ``step_size`` (default ε) along the threat's ascent direction, projected
    onto ball ∩ domain. δ is carried across replays and batches in ``delta_`` (sliced for a
    smaller last batch, grown with zeros for a larger one) and projected onto the new batch's
    ball ∩ domain before use. The perturbation step shares the update's forward, so it runs in
    training mode by construction (BatchNorm sees x + δ), whatever ``attack_mode`` says. A step
    reports the mean loss over its replays and the last replay's logits.

    Cost: an epoch is m optimizer steps per batch (≈ m standard epochs). To match the paper,
    train ``epochs_for(E)`` = ⌈E/m⌉ epochs where standard training would use E. ``delta_`` is
    objective state outside the trainer's checkpoint (see :meth:`state_dict`); share one
    objective between trainers only if they should share δ.
    """

    threat: ThreatModel
    replays: int = 4
    step_size: float | None = None
    attack: PGD = field(init=False, repr=False)
    delta_: Tensor | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        _check_threat(self.threat, "FreeAdversarialTraining")
        m = self.replays
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"replays must be an integer >= 1, got {m!r}")
        _check_step(self.step_size)
        self.attack = _pgd(self.threat, m, self.step_size, 1.0, False)

    def epochs_for(self, standard_epochs: int) -> int:
        """Epochs that cost about as much as ``standard_epochs`` standard ones: ⌈E/m⌉."""
        return max(1, math.ceil(standard_epochs / self.replays))

    def reset(self) -> None:
        """Forget the carried perturbation (the next batch starts from δ = 0)."""
        self.delta_ = None

    def state_dict(self) -> dict[str, Any]:
        """The carried δ, for a checkpoint from which a run resumes bit for bit."""
        return {"delta": None if self.delta_ is None else self.delta_.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
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
        """δ ← Proj_{ball ∩ domain}(δ + α·ascent(g)) − x: the update after each replay."""
        return threat.project(x, x + delta + alpha * threat.ascent_direction(grad)) - x

    def train_step(self, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        """m replays of (forward, backward, optimizer step, δ step) on this batch."""
        attack: PGD = ctx.configure(self.attack)  # type: ignore[assignment]
        threat = attack.threat
        threat.check_domain(x)
        alpha = _alpha(attack, 1.0, x)
        delta = threat.project(x, x + self._carried(x)) - x
        losses: list[Tensor] = []
        logits = x.new_empty(0)
        for _ in range(self.replays):
            delta = delta.detach().requires_grad_(True)
            with ctx.autocast():
                logits = as_logits(ctx.model(x + delta), x.shape[0])
                loss = _ce(logits, y).mean()
            (grad,) = ctx.optimize(loss, wrt=(delta,))
            grad = torch.nan_to_num(grad, nan=0.0)  # an AMP overflow skips the step: keep δ
            losses.append(loss.detach())
            delta = self.perturbation_step(x, delta.detach(), grad, threat, alpha).detach()
        assert self.delta_ is not None
        self.delta_[: x.shape[0]] = delta
        return StepOutput(torch.stack(losses).float().mean(), None, logits.detach())


# --------------------------------------------------------------------------- the guard


class CatastrophicOverfittingWarning(UserWarning):
    """Single-step adversarial training collapsed: FGSM no longer finds the model's weaknesses
    but PGD does (Wong et al. 2020, "catastrophic overfitting")."""


class CatastrophicOverfittingGuard(Callback):
    """Checks at each epoch end that single-step robustness is real robustness.

    On ``batches`` training batches (drawn once at the start of ``fit``, without changing the
    run's random state) it measures FGSM accuracy and PGD-``steps`` accuracy at the epoch's ε.
    Catastrophic overfitting is PGD accuracy falling at least ``gap`` below FGSM accuracy:
    the model has learned to mask the single-step gradient. Then it warns with
    :class:`CatastrophicOverfittingWarning`, and with ``restore`` reloads the model weights and
    optimizer state (moments, not the learning rates or other settings) of the last good epoch —
    an in-memory copy, or the weights at the start of ``fit`` — and with ``stop`` ends training
    (Wong et al.'s early stopping). Each check adds ``co_fgsm_acc``, ``co_pgd_acc`` and
    ``co_detected`` to the epoch's history record. ``threat`` defaults to the objective's.
    """

    def __init__(
        self,
        threat: ThreatModel | None = None,
        *,
        batches: int = 4,
        steps: int = 10,
        gap: float = 0.3,
        every: int = 1,
        restore: bool = True,
        stop: bool = True,
        seed: int = 0,
    ) -> None:
        if threat is not None:
            _check_threat(threat, "CatastrophicOverfittingGuard")
        for name, value in (("batches", batches), ("steps", steps), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 < gap <= 1:
            raise ValueError(f"gap must be a number in (0, 1], got {gap!r}")
        self.threat, self.batches, self.steps, self.gap = threat, batches, steps, float(gap)
        self.every, self.restore, self.stop, self.seed = every, restore, stop, seed
        self.detected_epoch: int | None = None
        self._data: list[tuple[Tensor, Tensor]] = []
        self._good: tuple[dict[str, Tensor], dict[str, Any]] | None = None

    def on_fit_start(self, trainer: RobustTrainer) -> None:
        loader = trainer.train_loader
        gens = loader_generators(loader)
        states = [g.get_state() for g in gens]
        cuda = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            self._data = [tuple(b) for b in islice(iter(loader), self.batches)]  # type: ignore[misc]
        for gen, state in zip(gens, states):
            gen.set_state(state)
        if not self._data:
            raise ValueError("CatastrophicOverfittingGuard: train_loader yielded no batches")
        self._snapshot(trainer)

    def _snapshot(self, trainer: RobustTrainer) -> None:
        model = unwrap_model(trainer.model)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._good = (weights, copy.deepcopy(trainer.optimizer.state_dict()))

    def _rollback(self, trainer: RobustTrainer) -> None:
        assert self._good is not None
        weights, opt_state = self._good
        unwrap_model(trainer.model).load_state_dict(weights)
        state = copy.deepcopy(opt_state)
        state["param_groups"] = trainer.optimizer.state_dict()["param_groups"]  # keep settings
        trainer.optimizer.load_state_dict(state)

    def _threat(self, trainer: RobustTrainer, record: Record) -> ThreatModel:
        if self.threat is not None:
            return self.threat
        threat = getattr(getattr(trainer.objective, "attack", None), "threat", None)
        if not isinstance(threat, ThreatModel):
            raise TypeError(
                "CatastrophicOverfittingGuard: the objective has no attack.threat; pass threat="
            )
        eps = record.get("eps")
        return threat.with_eps(float(eps)) if isinstance(eps, (int, float)) else threat

    def check(self, trainer: RobustTrainer, threat: ThreatModel) -> tuple[float, float]:
        """(FGSM accuracy, PGD accuracy) on the guard's training batches (summed over ranks when
        data-parallel); the run's random state is untouched (the attacks draw from a generator
        seeded with ``seed``)."""
        from .evaluation import evaluate

        attacks = {"fgsm": FGSM(threat), "pgd": PGD(threat, steps=self.steps)}
        gen = torch.Generator(device=trainer.device).manual_seed(self.seed)
        cuda = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            report = evaluate(
                trainer.model, self._data, attacks, device=trainer.device, generator=gen
            )
        if getattr(trainer, "data_parallel", False):  # one decision on every rank
            from .distributed import reduce_report

            report = reduce_report(report)
        return report["fgsm"], report["pgd"]

    def on_epoch_end(self, trainer: RobustTrainer, record: Record) -> None:
        if trainer.epoch % self.every != 0 or not self._data:
            return
        fgsm, pgd = self.check(trainer, self._threat(trainer, record))
        detected = fgsm - pgd >= self.gap
        record.update(co_fgsm_acc=fgsm, co_pgd_acc=pgd, co_detected=detected)
        if not detected:
            self._snapshot(trainer)
            return
        self.detected_epoch = trainer.epoch
        actions = []
        if self.restore:
            self._rollback(trainer)
            actions.append("restored the weights of the last good epoch")
        if self.stop:
            trainer.stop_training = True
            actions.append("stopped training")
        warnings.warn(
            f"catastrophic overfitting at epoch {trainer.epoch}: on training batches FGSM "
            f"accuracy is {fgsm:.3f} but PGD-{self.steps} accuracy is {pgd:.3f} (gap >= "
            f"{self.gap}). Single-step training has learned to mask the FGSM gradient and is no "
            f"longer robust (Wong et al. 2020); use a random start, a smaller step (<= 1.25 eps), "
            f"an eps warm-up, or stop early. "
            + ("; ".join(actions).capitalize() + "." if actions else ""),
            CatastrophicOverfittingWarning,
            stacklevel=2,
        )
