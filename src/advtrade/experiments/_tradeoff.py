"""The real-data experiments: clean and robust accuracy of adversarially trained CNNs as the
training ε grows (per norm), and as the training set grows (the paper's Figure 1 analogue).

The experiments share their models: the standard model (ε = 0) serves both norms, and the
full-size models of the trade-off are the last column of the data-size study. Smaller training
sets train for proportionally more epochs, so every model takes the same number of optimiser
steps and only the amount of data differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch import nn

from ..datasets import Split, load_dataset
from ._models import (
    ModelSpec,
    Progress,
    evaluate_model,
    model_key,
    timed,
    train_model,
)
from ._settings import Settings

__all__ = ["NORMS", "datasize_eps", "plan_models", "run_models", "summarise"]

NORMS: tuple[str, ...] = ("linf", "l2")


def datasize_eps(train_eps: Iterable[float]) -> tuple[float, ...]:
    """ε values of the data-size study: 0, the smallest and the largest non-zero training ε
    (a small budget may help with little data; a large one shows the cost at full size)."""
    nonzero = sorted(e for e in train_eps if e > 0)
    return tuple(sorted({0.0, *nonzero[:1], *nonzero[-1:]}))


def _spec(settings: Settings, norm: str, eps: float, size: int, full: int) -> ModelSpec:
    bs = settings.batch_size
    ratio = math.ceil(full / bs) / math.ceil(size / bs)  # equal optimiser steps for every size
    epochs = max(1, math.ceil(settings.epochs * ratio - 1e-9))
    warmup = max(1, math.ceil(settings.warmup * ratio - 1e-9))
    return ModelSpec(None if eps == 0 else norm, float(eps), size, epochs, min(warmup, epochs))


def perception_norm(settings: Settings) -> str | None:
    """The norm of the robust model shown in the perception figures: ℓ2 (as in the paper's
    section 3) when it has a non-zero training ε, else ℓ∞, else None (no robust model)."""
    for norm in ("l2", "linf"):
        if max(settings.train_eps(norm)) > 0:
            return norm
    return None


def plan_models(settings: Settings, full: int) -> list[ModelSpec]:
    """Every model the selected experiments need, each once, trade-off models first."""
    specs: dict[str, ModelSpec] = {}

    def add(norm: str, eps: float, size: int) -> None:
        spec = _spec(settings, norm, eps, size, full)
        specs.setdefault(spec.key, spec)

    chosen = settings.experiments
    if "tradeoff" in chosen:
        for norm in NORMS:
            for eps in settings.train_eps(norm):
                add(norm, eps, full)
    if "perception" in chosen:
        add("l2", 0.0, full)
        norm = perception_norm(settings)
        if norm is not None:
            add(norm, max(settings.train_eps(norm)), full)
    if "datasize" in chosen:
        sizes = sorted({*settings.train_sizes, full})
        for norm in NORMS:
            for eps in datasize_eps(settings.train_eps(norm)):
                for size in sizes:
                    add(norm, eps, size)
    return list(specs.values())


def run_models(
    specs: list[ModelSpec], full_split: Split, settings: Settings, progress: Progress
) -> tuple[dict[str, nn.Module], dict[str, dict[str, Any]]]:
    """Train and evaluate every planned model; returns the models and their records by key.

    A record holds the training summary and, per norm it is evaluated under (both for the
    standard model), the clean accuracy and the robust-accuracy curve over the evaluation ε.
    """
    splits: dict[int, Split] = {full_split.x_train.shape[0]: full_split}
    batch, steps = settings.batch_size, settings.train_steps
    progress.start(sum(s.cost(batch, steps) for s in specs), len(specs))
    models: dict[str, nn.Module] = {}
    records: dict[str, dict[str, Any]] = {}
    try:
        for spec in specs:
            if spec.train_size not in splits:
                splits[spec.train_size] = load_dataset(
                    settings.data, seed=settings.seed, train_size=spec.train_size
                )
            split = splits[spec.train_size]
            progress.begin(spec)
            (model, summary), seconds = timed(
                train_model,
                spec,
                split,
                seed=settings.seed,
                steps=steps,
                batch_size=batch,
                lr=settings.lr,
                progress=progress,
            )
            norms = NORMS if spec.norm is None else (spec.norm,)
            curves = {
                norm: evaluate_model(
                    model,
                    split,
                    norm,
                    settings.eval_eps(norm),
                    steps=settings.eval_steps,
                    seed=settings.seed,
                )
                for norm in norms
            }
            clean = next(iter(curves.values()))["clean"]
            progress.model_done(spec, seconds, clean)
            models[spec.key] = model
            records[spec.key] = {
                "key": spec.key,
                "norm": spec.norm,
                "train_eps": spec.eps,
                "train_size": spec.train_size,
                **summary,
                "warmup_epochs": spec.warmup,
                "clean": clean,
                "curves": curves,
            }
    finally:
        progress.close()
    return models, records


def summarise(
    settings: Settings, records: dict[str, dict[str, Any]], full: int
) -> dict[str, dict[str, Any]]:
    """The trade-off and data-size tables (whichever were run), per norm, from the records."""
    out: dict[str, dict[str, Any]] = {}
    chosen = settings.experiments
    if "tradeoff" in chosen:
        table: dict[str, Any] = {}
        for norm in NORMS:
            rows = [records[model_key(norm, eps, full)] for eps in settings.train_eps(norm)]
            table[norm] = {
                "train_eps": [r["train_eps"] for r in rows],
                "clean": [r["clean"] for r in rows],
                "eval_eps": list(settings.eval_eps(norm)),
                "robust": [r["curves"][norm]["robust"] for r in rows],
                "models": [r["key"] for r in rows],
            }
        out["tradeoff"] = table
    if "datasize" in chosen:
        sizes = sorted({*settings.train_sizes, full})
        table = {}
        for norm in NORMS:
            eps_list = datasize_eps(settings.train_eps(norm))
            grid = [[records[model_key(norm, e, n)] for n in sizes] for e in eps_list]
            table[norm] = {
                "train_sizes": sizes,
                "train_eps": list(eps_list),
                "epochs": [[r["epochs"] for r in row] for row in grid],
                "clean": [[r["clean"] for r in row] for row in grid],
            }
        out["datasize"] = table
    return out
