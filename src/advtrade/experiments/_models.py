"""The runner's models: one small CNN per (norm, training ε, training-set size), trained with
PGD adversarial training (ε = 0: standard training) and evaluated over a list of budgets.

Every model starts from the same seeded initialisation and sees the training data in the same
seeded order, so models differ only in what the experiment varies (ε, the norm, the data size).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import torch
from torch import nn

from ..attacks import PGD
from ..datasets import Split
from ..evaluation import robust_accuracy_curve
from ..models import small_cnn
from ..threats import L2Ball, LinfBall, ThreatModel
from ..training import AdversarialTraining, Callback, LinearWarmup, RobustTrainer, Standard
from ..training._callbacks import tqdm_available

__all__ = [
    "ModelSpec",
    "Progress",
    "evaluate_model",
    "make_model",
    "make_threat",
    "model_key",
    "train_model",
]

NORM_LABELS = {"linf": "ℓ∞", "l2": "ℓ2"}
EVAL_BATCH = 256  # test examples per attack batch: bounds memory on 28×28 images


def make_threat(norm: str, eps: float) -> ThreatModel:
    """The threat model of ``norm`` ("linf" or "l2") with budget ``eps`` on [0, 1] images."""
    return LinfBall(eps) if norm == "linf" else L2Ball(eps)


def make_model(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The runner's model: :func:`advtrade.models.small_cnn`."""
    c, h, w = (int(v) for v in input_shape)
    return small_cnn((c, h, w), num_classes)


def model_key(norm: str | None, eps: float, size: int) -> str:
    """The identifier of the model trained under ``norm`` at ``eps`` on ``size`` examples."""
    head = "standard" if norm is None or eps == 0 else f"{norm}-eps{eps:.10g}"
    return f"{head}-n{size}"


@dataclass(frozen=True)
class ModelSpec:
    """One model to train: ``norm`` is None for standard training (ε = 0, shared by both norms)."""

    norm: str | None
    eps: float
    train_size: int
    epochs: int
    warmup: int

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``linf-eps0.1-n1348`` or ``standard-n1348``."""
        return model_key(self.norm, self.eps, self.train_size)

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``ℓ∞ ε=0.1, n=1347``."""
        head = "standard" if self.norm is None else f"{NORM_LABELS[self.norm]} ε={self.eps:g}"
        return f"{head}, n={self.train_size}"

    def cost(self, batch_size: int, steps: int) -> int:
        """Forward/backward passes over batches: (K + 1) per batch for K-step PGD training."""
        passes = 1 if self.norm is None else steps + 1
        return self.epochs * math.ceil(self.train_size / batch_size) * passes


class Progress(Callback):
    """Progress over every model of a run: a tqdm bar (interactive terminals) or one line per
    model (logs); ``mode`` is "auto", "tqdm", "plain" or None (silent). Writes to stderr. As a
    training callback it advances by each batch's cost (``per_batch``, set per model)."""

    def __init__(self, mode: str | None = "auto", file: TextIO | None = None) -> None:
        self.file = file
        self._bar: Any = None
        self._count = self._total_models = 0
        self.per_batch = 1
        if mode == "auto":
            interactive = (file or sys.stderr).isatty()
            mode = "tqdm" if interactive and tqdm_available() else "plain"
        self.mode = mode
        if mode == "tqdm" and not tqdm_available():
            self.mode = "plain"
            self.note("tqdm is not installed (pip install 'advtrade[progress]'): plain progress")

    def start(self, total_work: int, models: int) -> None:
        """Begin the training phase: ``total_work`` units over ``models`` models."""
        self._total_models, self._count = models, 0
        if self.mode == "tqdm":
            from tqdm.auto import tqdm

            fmt = "{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"
            self._bar = tqdm(total=total_work, bar_format=fmt, file=self.file, dynamic_ncols=True)

    def begin(self, spec: ModelSpec) -> None:
        self._count += 1
        if self._bar is not None:
            self._bar.set_description_str(f"model {self._count}/{self._total_models}: {spec.label}")

    def advance(self, work: int) -> None:
        if self._bar is not None:
            self._bar.update(work)

    def note(self, text: str) -> None:
        """A line of text (a finished model, a finished experiment)."""
        if self.mode is None:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.file)
        else:
            print(text, file=self.file or sys.stderr, flush=True)

    def model_done(self, spec: ModelSpec, seconds: float, clean: float) -> None:
        head = f"[{self._count}/{self._total_models}]"
        self.note(f"{head} {spec.label}: {spec.epochs} epochs, {seconds:.1f} s, clean {clean:.3f}")

    def on_batch_end(self, trainer: Any, batch_index: int, output: Any) -> None:
        self.advance(self.per_batch)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def train_model(
    spec: ModelSpec,
    split: Split,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    progress: Progress,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model on ``split``'s training set; returns it (eval mode) and its training
    summary (epochs, final loss and training accuracy). Adam with a cosine learning-rate decay;
    adversarial training ramps ε up linearly over ``spec.warmup`` epochs (large budgets can
    otherwise collapse a small model to a constant prediction)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = make_model(split.input_shape, split.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
    if spec.norm is None:
        objective: Any = Standard()
        schedule = None
    else:
        objective = AdversarialTraining(PGD(make_threat(spec.norm, spec.eps), steps=steps))
        schedule = LinearWarmup(spec.eps, spec.warmup)
    progress.per_batch = 1 if spec.norm is None else steps + 1
    trainer = RobustTrainer(
        model,
        optimizer,
        objective,
        scheduler=scheduler,
        eps_schedule=schedule,
        seed=seed,
        progress=None,
        callbacks=[progress],
    )
    train_loader, _ = split.loaders(batch_size, seed=seed)
    history = trainer.fit(train_loader, spec.epochs)
    last = history[-1]
    acc = last.get("train_robust_acc") if spec.norm is not None else last.get("train_clean_acc")
    summary = {"epochs": spec.epochs, "final_loss": last["loss"], "final_train_acc": acc}
    return model.eval(), summary


def evaluate_model(
    model: nn.Module, split: Split, norm: str, epsilons: Sequence[float], *, steps: int, seed: int
) -> dict[str, Any]:
    """Clean accuracy and PGD robust accuracy at every budget of ``epsilons`` on the test set
    (one :func:`~advtrade.robust_accuracy_curve`: a per-example search over the budgets)."""
    attack = PGD(make_threat(norm, max(epsilons) or 1.0), steps=steps)
    generator = torch.Generator().manual_seed(seed + 1)
    batches = list(zip(split.x_test.split(EVAL_BATCH), split.y_test.split(EVAL_BATCH)))
    curve = robust_accuracy_curve(model, batches, attack, list(epsilons), generator=generator)
    return {
        "n_test": curve.n,
        "clean": curve.clean_accuracy,
        "eval_eps": list(curve.epsilons),
        "robust": list(curve.accuracies),
    }


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
