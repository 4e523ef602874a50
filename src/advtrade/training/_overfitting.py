"""A guard against catastrophic overfitting of single-step adversarial training (Wong et al.
2020): robust to FGSM, not to PGD."""

from __future__ import annotations

import copy
import warnings
from itertools import islice
from typing import Any

import torch
from torch import Tensor

from .. import distributed
from .._batches import DEFAULT_KEYS, BatchKeys, check_keys
from .._validation import check_bool, check_int, check_number, check_type
from ..attacks import FGSM, PGD
from ..evaluation import evaluate
from ..guard import unwrap_model
from ..threats import ThreatModel
from ._callbacks import Callback, TrainerView
from ._history import Record
from ._state import loader_generators

__all__ = ["CatastrophicOverfittingGuard", "CatastrophicOverfittingWarning"]


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
        batch_keys: BatchKeys = DEFAULT_KEYS,
    ) -> None:
        if threat is not None:
            check_type("threat", threat, ThreatModel, "a ThreatModel such as LinfBall(eps)")
        self.threat = threat
        self.batches = check_int("batches", batches, minimum=1)
        self.steps = check_int("steps", steps, minimum=1)
        self.every = check_int("every", every, minimum=1)
        self.gap = check_number("gap", gap, minimum=0.0, maximum=1.0, strict=True)
        self.restore, self.stop = check_bool("restore", restore), check_bool("stop", stop)
        self.seed = check_int("seed", seed, minimum=0)
        self.batch_keys = check_keys(batch_keys)
        self.detected_epoch: int | None = None
        self._data: list[Any] = []
        self._good: tuple[dict[str, Tensor], dict[str, Any]] | None = None

    def on_fit_start(self, trainer: TrainerView) -> None:
        loader = trainer.train_loader
        assert loader is not None
        gens = loader_generators(loader)
        states = [g.get_state() for g in gens]
        cuda = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            self._data = list(islice(iter(loader), self.batches))
        for gen, state in zip(gens, states):
            gen.set_state(state)
        if not self._data:
            raise ValueError("CatastrophicOverfittingGuard: train_loader yielded no batches")
        self._snapshot(trainer)

    def _snapshot(self, trainer: TrainerView) -> None:
        model = unwrap_model(trainer.model)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._good = (weights, copy.deepcopy(trainer.optimizer.state_dict()))

    def _rollback(self, trainer: TrainerView) -> None:
        assert self._good is not None
        weights, opt_state = self._good
        unwrap_model(trainer.model).load_state_dict(weights)
        state = copy.deepcopy(opt_state)
        state["param_groups"] = trainer.optimizer.state_dict()["param_groups"]  # keep settings
        trainer.optimizer.load_state_dict(state)

    def _threat(self, trainer: TrainerView, record: Record) -> ThreatModel:
        if self.threat is not None:
            return self.threat
        attack = trainer.objective.attack
        threat = None if attack is None else attack.threat
        if threat is None:
            raise TypeError(
                "CatastrophicOverfittingGuard: the objective has no attack with a threat model; "
                "pass threat="
            )
        eps = record.get("eps")
        return threat.with_eps(float(eps)) if isinstance(eps, (int, float)) else threat

    def check(self, trainer: TrainerView, threat: ThreatModel) -> tuple[float, float]:
        """(FGSM accuracy, PGD accuracy) on the guard's training batches (summed over ranks when
        data-parallel); the run's random state is untouched (the attacks draw from a generator
        seeded with ``seed``)."""
        attacks = {"fgsm": FGSM(threat), "pgd": PGD(threat, steps=self.steps)}
        gen = torch.Generator(device=trainer.device).manual_seed(self.seed)
        cuda = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            report = evaluate(
                trainer.model,
                self._data,
                attacks,
                device=trainer.device,
                generator=gen,
                batch_keys=self.batch_keys,
            )
        if trainer.data_parallel:  # one decision on every rank
            report = distributed.reduce_report(report)
        return report["fgsm"], report["pgd"]

    def on_epoch_end(self, trainer: TrainerView, record: Record) -> None:
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
