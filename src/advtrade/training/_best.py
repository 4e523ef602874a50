"""The best epoch on held-out data: its score, its weights, and how long ago it was."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["BestModel"]


class BestModel:
    """What ``fit`` keeps against robust overfitting (Rice et al. 2020): the epoch (1-based)
    with the highest held-out score so far, the score, the number of epochs since it (``stale``)
    and, when no checkpoint folder holds ``best.pt``, a copy of its weights in memory."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.score = -math.inf
        self.stale = 0
        self.weights: dict[str, Any] | None = None  # in-memory copy (no checkpoint folder)
        self.path: Path | None = None  # best.pt, when a checkpoint folder holds it

    def offer(self, epoch: int, score: float) -> bool:
        """Record epoch ``epoch``'s score; True if it is the new best (ties keep the earlier)."""
        if score > self.score:
            self.epoch, self.score, self.stale = epoch, score, 0
            return True
        self.stale += 1
        return False

    def keep(self, weights: Mapping[str, Any]) -> None:
        """Hold a copy of the best epoch's weights in memory."""
        self.weights, self.path = {k: _clone(v) for k, v in weights.items()}, None

    def state_dict(self) -> dict[str, Any]:
        """Epoch, score and staleness (the weights live in ``best.pt``)."""
        return {"epoch": self.epoch, "score": self.score, "stale": self.stale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = None if state.get("epoch") is None else int(state["epoch"])
        self.score = float(state.get("score", -math.inf))
        self.stale = int(state.get("stale", 0))
        self.weights = self.path = None


def _clone(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {k: _clone(v) for k, v in value.items()}
    return copy.deepcopy(value)
