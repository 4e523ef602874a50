"""Weight averaging: an exponential moving average of a model's weights (and buffers)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """An exponential moving average of ``model``'s parameters and floating-point buffers.

    After every optimizer step, ``average ← decay·average + (1 − decay)·current`` for each
    parameter and floating buffer (BatchNorm statistics included); integer buffers
    (``num_batches_tracked``) are copied. ``module`` is a separate copy of the model holding the
    average, for evaluation and checkpoints; it never requires gradients. Averaged weights
    generalise better and resist robust overfitting (Rice et al. 2020; Gowal et al. 2020).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._pairs = self._match(model)

    def _match(self, model: nn.Module) -> list[tuple[Tensor, Tensor]]:
        own = dict(self.module.state_dict(keep_vars=True))
        theirs = dict(model.state_dict(keep_vars=True))
        return [(own[k], theirs[k]) for k in own]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimizer step)."""
        weight = 1.0 - self.decay
        for avg, cur in self._pairs:
            if avg.is_floating_point():
                avg.lerp_(cur.detach(), weight)
            else:
                avg.copy_(cur)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights (what checkpoints store)."""
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the decay must match."""
        if float(state["decay"]) != self.decay:
            raise ValueError(
                f"the checkpoint's weight average has decay {state['decay']}, the trainer's "
                f"ema={self.decay}; pass the same ema= as in the saved run"
            )
        self.module.load_state_dict(state["module"])
