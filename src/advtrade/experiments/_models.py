"""The runner's models: one per (norm, training ε, training-set size, seed), trained with PGD
adversarial training (ε = 0: standard training) and evaluated over a list of budgets with the
chosen evaluation attack.

Models of one seed start from the same initialisation and see the training data in the same
order, so they differ only in what the experiment varies (ε, the norm, the data size); seeds
vary the initialisation, the data order and the attack starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import APGD, APGDT, PGD, Attack, AutoAttack, WorstOf
from ..datasets import Split
from ..evaluation import evaluate, robust_accuracy_curve, wilson_interval
from ..models import CIFAR10_MEAN, CIFAR10_STD, preact_resnet18, small_cnn
from ..threats import L2Ball, LinfBall, ThreatModel
from ..training import AdversarialTraining, LinearWarmup, Objective, RobustTrainer, Standard
from ._progress import Progress
from ._settings import Settings

__all__ = [
    "NORM_LABELS",
    "ModelSpec",
    "eval_attack",
    "evaluate_model",
    "make_model",
    "make_threat",
    "model_key",
    "train_model",
]

NORM_LABELS = {"linf": "ℓ∞", "l2": "ℓ2"}
EVAL_BATCH = 256  # test examples per attack batch: bounds memory on larger images


def make_threat(norm: str, eps: float) -> ThreatModel:
    """The threat model of ``norm`` ("linf" or "l2") with budget ``eps`` on [0, 1] images."""
    return LinfBall(eps) if norm == "linf" else L2Ball(eps)


def make_model(settings: Settings, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The settings' architecture: :func:`~advtrade.models.small_cnn` or a PreAct ResNet-18
    (with CIFAR-10's normalisation inside, so attacks work on [0, 1] pixels)."""
    c, h, w = (int(v) for v in input_shape)
    if settings.model == "preact_resnet18":
        mean, std = (CIFAR10_MEAN, CIFAR10_STD) if c == 3 else (None, None)
        return preact_resnet18(num_classes, in_channels=c, mean=mean, std=std)
    return small_cnn((c, h, w), num_classes)


def model_key(norm: str | None, eps: float, size: int, seed: int) -> str:
    """The identifier of the model trained under ``norm`` at ``eps`` on ``size`` examples with
    ``seed``, e.g. ``linf-eps0.1-n1348-s0``."""
    head = "standard" if norm is None or eps == 0 else f"{norm}-eps{eps:.10g}"
    return f"{head}-n{size}-s{seed}"


@dataclass(frozen=True)
class ModelSpec:
    """One model to train: ``norm`` is None for standard training (ε = 0, shared by both norms).
    ``curves`` says whether its robust-accuracy curves are measured (the data-size study's
    smaller models need only clean accuracy)."""

    norm: str | None
    eps: float
    train_size: int
    epochs: int
    warmup: int
    seed: int = 0
    curves: bool = True

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``linf-eps0.1-n1348-s0`` or ``standard-n1348-s0``."""
        return model_key(self.norm, self.eps, self.train_size, self.seed)

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``ℓ∞ ε=0.1, n=1347, seed 0``."""
        head = "standard" if self.norm is None else f"{NORM_LABELS[self.norm]} ε={self.eps:g}"
        return f"{head}, n={self.train_size}, seed {self.seed}"

    def cost(self, batch_size: int, steps: int) -> int:
        """Forward/backward passes over batches: (K + 1) per batch for K-step PGD training."""
        passes = 1 if self.norm is None else steps + 1
        return self.epochs * math.ceil(self.train_size / batch_size) * passes


def _optimizer(settings: Settings, model: nn.Module) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def train_model(
    spec: ModelSpec,
    split: Split,
    settings: Settings,
    *,
    device: torch.device,
    progress: Progress,
    work: Path,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model on ``split``'s training set (on ``device``); returns it (eval mode) and
    its training summary. Adam (small CNNs) or SGD with momentum (ResNets) with a cosine
    learning-rate decay; adversarial training ramps ε up linearly over ``spec.warmup`` epochs
    (large budgets can otherwise collapse a small model to a constant prediction). A checkpoint
    per epoch in ``work`` lets an interrupted run continue this model bit for bit."""
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        model = make_model(settings, split.input_shape, split.num_classes)
    model.to(device)
    optimizer = _optimizer(settings, model)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
    steps = settings.train_steps
    objective: Objective = Standard()
    schedule = None
    if spec.norm is not None:
        objective = AdversarialTraining(PGD(make_threat(spec.norm, spec.eps), steps=steps))
        schedule = LinearWarmup(spec.eps, spec.warmup)
    progress.per_batch = 1 if spec.norm is None else steps + 1
    trainer = RobustTrainer(
        model,
        optimizer,
        objective,
        scheduler=scheduler,
        eps_schedule=schedule,
        seed=spec.seed,
        amp=settings.amp,
        channels_last=device.type == "cuda" and settings.model == "preact_resnet18",
        progress=None,
        callbacks=[progress],
    )
    if (work / "last.pt").is_file():
        trainer.load(work / "last.pt")
        progress.advance(spec.cost(settings.batch_size, steps) * trainer.epoch // spec.epochs)
    train, held = _hold_out(split, settings.validation_size, settings.seed)
    train_loader, _ = train.loaders(settings.batch_size, seed=spec.seed, augment=settings.augment)
    history = trainer.fit(train_loader, spec.epochs, held, checkpoint_dir=work)
    if held is not None:
        trainer.load_best()  # the best held-out epoch, not the last (robust overfitting)
    last = history[-1]
    acc = last.get("train_robust_acc") if spec.norm is not None else last.get("train_clean_acc")
    summary = {"epochs": spec.epochs, "final_loss": last["loss"], "final_train_acc": acc}
    if held is not None:
        summary["best_epoch"] = trainer.best.epoch
    return model.eval(), summary


def _hold_out(
    split: Split, size: int, seed: int
) -> tuple[Split, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """The split without ``size`` seeded held-out training examples, and those as batches."""
    n = int(split.x_train.shape[0])
    if size <= 0 or size >= n:
        return split, None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7))
    held, kept = order[:size], order[size:].sort().values
    train = Split(split.x_train[kept], split.y_train[kept], split.x_test, split.y_test,
                  split.num_classes, split.name)
    x, y = split.x_train[held], split.y_train[held]
    return train, list(zip(x.split(EVAL_BATCH), y.split(EVAL_BATCH)))


def eval_attack(settings: Settings, norm: str, eps: float, num_classes: int, seed: int) -> Attack:
    """The evaluation attack the settings name (its ε is searched per example)."""
    threat, steps = make_threat(norm, eps), settings.eval_steps
    if settings.eval_attack == "pgd":
        return PGD(threat, steps=steps)
    targets = min(3 if settings.quick else 9, num_classes - 1)
    if settings.eval_attack == "apgd":
        members: list[Attack] = [APGD(threat, steps=steps)]
        if num_classes >= 4:
            members.append(APGDT(threat, steps=steps, target_classes=targets))
        return WorstOf(members)
    return AutoAttack(threat, steps=steps, target_classes=targets, seed=seed, progress=None)


def attack_name(settings: Settings, num_classes: int) -> str:
    """How the report names the evaluation attack."""
    steps = settings.eval_steps
    targets = min(3 if settings.quick else 9, num_classes - 1)
    if settings.eval_attack == "pgd":
        return f"PGD-{steps} with cross-entropy (one run, no restarts)"
    if settings.eval_attack == "apgd":
        return f"APGD-CE and APGD-T ({targets} targets), {steps} steps each"
    return (
        f"AutoAttack (standard: APGD-CE, APGD-T and FAB-T with {targets} targets, {steps} steps "
        f"each, and Square with 5000 queries)"
    )


def evaluate_model(
    model: nn.Module,
    split: Split,
    settings: Settings,
    norm: str,
    *,
    seed: int,
    device: torch.device,
    robust: bool = True,
) -> dict[str, Any]:
    """Clean accuracy and robust accuracy at every evaluation budget on the test set, with each
    accuracy's binomial 95% interval (one :func:`~advtrade.robust_accuracy_curve`); with
    ``robust=False`` clean accuracy only (no budgets)."""
    if not robust:
        report = evaluate(model, (split.x_test, split.y_test), {"clean": None}, device=device,
                          amp=settings.amp)
        k = report.counts["clean"]
        return {"n_test": report.n, "clean": report.clean_accuracy,
                "clean_interval": list(wilson_interval(k, report.n)), "eval_eps": [],
                "robust": [], "robust_interval": []}
    epsilons = settings.eval_eps(norm)
    attack = eval_attack(settings, norm, max(epsilons) or 1.0, split.num_classes, seed)
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    batches = list(zip(split.x_test.split(EVAL_BATCH), split.y_test.split(EVAL_BATCH)))
    curve = robust_accuracy_curve(
        model, batches, attack, list(epsilons), device=device, generator=generator, amp=settings.amp
    )
    n = curve.n
    return {
        "n_test": n,
        "clean": curve.clean_accuracy,
        "clean_interval": list(wilson_interval(curve.clean_count, n)),
        "eval_eps": list(curve.epsilons),
        "robust": list(curve.accuracies),
        "robust_interval": [list(wilson_interval(k, n)) for k in curve.counts],
    }


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
