"""The real-data experiments: clean and robust accuracy of adversarially trained CNNs as the
training ε grows (per norm), and as the training set grows (the paper's Figure 1 analogue).

The experiments share their models: the standard model (ε = 0) serves both norms, and the
full-size models of the trade-off are the last column of the data-size study. Smaller training
sets train for proportionally more epochs, so every model takes the same number of optimiser
steps and only the amount of data differs.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets import Split
from ..training._checkpoint import atomic_save
from ._data import load_split
from ._models import ModelSpec, evaluate_model, make_model, model_key, timed, train_model
from ._progress import Progress
from ._settings import Settings

__all__ = ["NORMS", "datasize_eps", "plan_models", "run_models", "summarise"]

NORMS: tuple[str, ...] = ("linf", "l2")


def datasize_eps(train_eps: Iterable[float]) -> tuple[float, ...]:
    """ε values of the data-size study: 0, the smallest and the largest non-zero training ε
    (a small budget may help with little data; a large one shows the cost at full size)."""
    nonzero = sorted(e for e in train_eps if e > 0)
    return tuple(sorted({0.0, *nonzero[:1], *nonzero[-1:]}))


def _spec(
    settings: Settings, norm: str, eps: float, size: int, full: int, seed: int, curves: bool
) -> ModelSpec:
    bs = settings.batch_size
    ratio = math.ceil(full / bs) / math.ceil(size / bs)  # equal optimiser steps for every size
    epochs = max(1, math.ceil(settings.epochs * ratio - 1e-9))
    warmup = max(1, math.ceil(settings.warmup * ratio - 1e-9))
    norm_ = None if eps == 0 else norm
    return ModelSpec(norm_, float(eps), size, epochs, min(warmup, epochs), seed, curves)


def perception_norm(settings: Settings) -> str | None:
    """The norm of the robust model shown in the perception figures: ℓ2 (as in the paper's
    section 3) when it has a non-zero training ε, else ℓ∞, else None (no robust model)."""
    for norm in ("l2", "linf"):
        if max(settings.train_eps(norm)) > 0:
            return norm
    return None


def plan_models(settings: Settings, full: int) -> list[ModelSpec]:
    """Every model the selected experiments need, each once, trade-off models first; only the
    trade-off and perception models get robust-accuracy curves."""
    specs: dict[str, ModelSpec] = {}

    def add(norm: str, eps: float, size: int, curves: bool = True) -> None:
        for seed in settings.seeds:
            spec = _spec(settings, norm, eps, size, full, seed, curves)
            specs.setdefault(spec.key, spec)  # the first need wins: trade-off models have curves

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
                    add(norm, eps, size, curves=False)  # the study compares clean accuracy
    return list(specs.values())


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_models(
    specs: list[ModelSpec],
    settings: Settings,
    progress: Progress,
    *,
    device: torch.device,
    work: Path,
    folder: Path,
) -> tuple[dict[str, nn.Module], dict[str, dict[str, Any]]]:
    """Train and evaluate every planned model; returns the models and their records by key.

    A record holds the training summary and, per norm it is evaluated under (both for the
    standard model), the clean accuracy and the robust-accuracy curve over the evaluation ε.
    Each finished model's weights and record go to ``work/<key>/`` (so an interrupted run
    resumes without retraining it; a model interrupted mid-training resumes from its last
    epoch) and its weights to ``folder/models/<key>.pt``.
    """
    splits: dict[int | None, Split] = {}
    batch, steps = settings.batch_size, settings.train_steps
    progress.start(sum(s.cost(batch, steps) for s in specs), len(specs))
    models: dict[str, nn.Module] = {}
    records: dict[str, dict[str, Any]] = {}
    (folder / "models").mkdir(parents=True, exist_ok=True)
    try:
        for spec in specs:
            if spec.train_size not in splits:
                splits[spec.train_size] = load_split(settings, spec.train_size)
            split = splits[spec.train_size]
            progress.begin(spec.label)
            here = work / spec.key
            here.mkdir(parents=True, exist_ok=True)
            if (here / "record.json").is_file() and (here / "model.pt").is_file():
                model = make_model(settings, split.input_shape, split.num_classes)
                model.load_state_dict(torch.load(here / "model.pt", weights_only=True))
                model.to(device).eval()
                record = json.loads((here / "record.json").read_text())
                progress.advance(spec.cost(batch, steps))
                progress.model_done(spec.label, "finished in an earlier run (resumed)")
            else:
                (model, summary), seconds = timed(
                    train_model, spec, split, settings, device=device, progress=progress,
                    work=here,
                )
                norms = NORMS if spec.norm is None else (spec.norm,)
                curves = {
                    norm: evaluate_model(model, split, settings, norm, seed=spec.seed,
                                         device=device, robust=spec.curves)
                    for norm in norms
                }
                clean = next(iter(curves.values()))["clean"]
                record = {
                    "key": spec.key,
                    "norm": spec.norm,
                    "train_eps": spec.eps,
                    "train_size": spec.train_size,
                    "seed": spec.seed,
                    **summary,
                    "warmup_epochs": spec.warmup,
                    "clean": clean,
                    "curves": curves,
                }
                atomic_save(model.state_dict(), here / "model.pt")
                _write_json(here / "record.json", record)
                detail = f"{spec.epochs} epochs, {seconds:.1f} s, clean {clean:.3f}"
                progress.model_done(spec.label, detail)
            shutil.copyfile(here / "model.pt", folder / "models" / f"{spec.key}.pt")
            models[spec.key] = model
            records[spec.key] = record
    finally:
        progress.close()
    return models, records


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "runs": values}


def summarise(
    settings: Settings, records: dict[str, dict[str, Any]], full: int
) -> dict[str, dict[str, Any]]:
    """The trade-off and data-size tables (whichever were run), per norm, from the records:
    per cell the mean over seeds and its spread (min, max, every seed's value), and with one
    seed the binomial 95% interval of the test-set accuracy."""
    out: dict[str, dict[str, Any]] = {}
    chosen, seeds = settings.experiments, list(settings.seeds)
    if "tradeoff" in chosen:
        table: dict[str, Any] = {}
        for norm in NORMS:
            eps_list = settings.train_eps(norm)
            rows = [[records[model_key(norm, e, full, s)] for s in seeds] for e in eps_list]
            n_eval = len(settings.eval_eps(norm))
            clean = [_spread([r["clean"] for r in row]) for row in rows]
            robust = [
                [_spread([r["curves"][norm]["robust"][j] for r in row]) for j in range(n_eval)]
                for row in rows
            ]
            entry: dict[str, Any] = {
                "train_eps": list(eps_list),
                "eval_eps": list(settings.eval_eps(norm)),
                "seeds": seeds,
                "clean": [c["mean"] for c in clean],
                "clean_spread": clean,
                "robust": [[c["mean"] for c in row] for row in robust],
                "robust_spread": robust,
                "models": [[r["key"] for r in row] for row in rows],
            }
            if len(seeds) == 1:
                curves = [row[0]["curves"][norm] for row in rows]
                entry["clean_interval"] = [c["clean_interval"] for c in curves]
                entry["robust_interval"] = [c["robust_interval"] for c in curves]
            table[norm] = entry
        out["tradeoff"] = table
    if "datasize" in chosen:
        sizes = sorted({*settings.train_sizes, full})
        table = {}
        for norm in NORMS:
            eps_list = datasize_eps(settings.train_eps(norm))
            grid = [[[records[model_key(norm, e, n, s)] for s in seeds] for n in sizes]
                    for e in eps_list]
            spread = [[_spread([r["clean"] for r in cell]) for cell in row] for row in grid]
            entry = {
                "train_sizes": sizes,
                "train_eps": list(eps_list),
                "seeds": seeds,
                "epochs": [[cell[0]["epochs"] for cell in row] for row in grid],
                "clean": [[c["mean"] for c in row] for row in spread],
                "clean_spread": spread,
            }
            if len(seeds) == 1:
                entry["clean_interval"] = [
                    [next(iter(cell[0]["curves"].values()))["clean_interval"] for cell in row]
                    for row in grid
                ]
            table[norm] = entry
        out["datasize"] = table
    return out
