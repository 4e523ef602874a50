"""The optional section-3 experiment: do a robust model's gradients and large-ε adversarial
examples look like digits, and a standard model's like noise? Reuses the run's standard model
and its most robust model of the perception norm (ℓ2 when trained), so it costs no training.

Needs :mod:`advtrade.perception` (and matplotlib for the figure); without them it is skipped
with a note, never silently.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..datasets import Split
from ._models import NORM_LABELS, model_key
from ._settings import Settings
from ._tradeoff import perception_norm

__all__ = ["run_perception"]

FIGURE = "figures/perception.png"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def run_perception(
    settings: Settings, split: Split, models: dict[str, nn.Module], folder: Path
) -> dict[str, Any]:
    """Alignment scores of the standard and the robust model, and their figure in ``folder``."""
    if not _has("advtrade.perception"):
        return {"skipped": "advtrade.perception is not available in this installation"}
    norm = perception_norm(settings)
    if norm is None:
        return {"skipped": "no robust model: every training ε is 0"}
    from ..perception import alignment_score, perception_panel, shifted_targets

    full = int(split.x_train.shape[0])
    eps = max(settings.train_eps(norm))
    seed = settings.seed
    chosen = {
        "standard": models[model_key(None, 0.0, full, seed)],
        f"robust ({NORM_LABELS[norm]} ε={eps:g})": models[model_key(norm, eps, full, seed)],
    }
    n = min(100 if settings.quick else 300, int(split.x_test.shape[0]))
    # a seeded random subset: the test split may be ordered by class (the MNIST subset is)
    pick = torch.randperm(
        int(split.x_test.shape[0]), generator=torch.Generator().manual_seed(settings.seed)
    )[:n]
    x, y = split.x_test[pick], split.y_test[pick]
    target = shifted_targets(y, split.num_classes)
    steps = 50 if settings.quick else 100
    scores: dict[str, Any] = {}
    chosen = {name: copy.deepcopy(model).cpu() for name, model in chosen.items()}  # data on CPU
    for name, model in chosen.items():
        generator = torch.Generator().manual_seed(settings.seed)
        score = alignment_score(
            model, x, y, target, split.x_train, split.y_train, steps=steps, generator=generator
        )
        scores[name] = score.as_dict()
    out: dict[str, Any] = {"n": n, "steps": steps, "norm": norm, "eps": eps, "scores": scores}

    if not _has("matplotlib"):
        out["figure"] = None
        out["figure_note"] = "matplotlib is not installed: pip install 'advtrade[plot]'"
        return out
    from ..plotting import save_perception_figure

    # One test input of each class, driven to the next class; both models on the same inputs.
    first = [int((split.y_test == c).nonzero()[0, 0]) for c in range(split.num_classes)]
    xs, ys = split.x_test[first], split.y_test[first]
    targets = shifted_targets(ys, split.num_classes)
    panels = {
        name: perception_panel(model, xs, ys, targets, steps=steps)
        for name, model in chosen.items()
    }
    save_perception_figure(folder / FIGURE, panels)
    out["figure"] = FIGURE
    return out
