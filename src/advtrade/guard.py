"""The model-state guard: every attack and evaluation runs inside it, so the user's model comes
back exactly as it was — each submodule's train/eval flag, each parameter's ``requires_grad`` and
``.grad``, and (when the model runs in training mode) every buffer such as BatchNorm statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

__all__ = ["ModelMode", "model_guard", "unwrap_model"]

ModelMode = Literal["eval", "as_is"]
"""How an attack runs the model: ``"eval"`` (every submodule in eval mode; the default) or
``"as_is"`` (the modes the user left, e.g. train-mode generation; buffers are restored after)."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (else ``model``).

    Attacks run on the inner module, so their forward/backward passes never touch DDP's gradient
    reducer (no all-reduce, no "unused parameter" state); DDP keeps identical weights on every
    rank, so the result is the same as attacking the wrapper.
    """
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module) and isinstance(
        model, (nn.parallel.DistributedDataParallel, nn.DataParallel)
    ):
        return inner
    return model


@contextmanager
def model_guard(model: nn.Module, mode: ModelMode = "eval") -> Iterator[nn.Module]:
    """Run code against ``model`` and restore its state afterwards, even on error.

    Inside, parameters do not require gradients (an attack needs only input gradients, so no
    weight gradients are computed or accumulated) and, with ``mode="eval"``, every submodule is
    in eval mode. Yields the unwrapped model (see :func:`unwrap_model`).

    Examples:
        >>> from torch import nn
        >>> from advtrade import model_guard
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
        >>> with model_guard(model) as net:
        ...     print(net.training, net[0].weight.requires_grad)
        False False
        >>> model.training, model[0].weight.requires_grad
        (True, True)
    """
    if mode not in ("eval", "as_is"):
        raise ValueError(f"mode must be 'eval' or 'as_is', got {mode!r}")
    model = unwrap_model(model)
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    if mode == "as_is" and any(training):
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        for p in params:
            p.requires_grad_(False)
        if mode == "eval":
            model.eval()
        yield model
    finally:
        for m, flag in zip(modules, training):
            m.training = flag
        for p, flag in zip(params, requires_grad):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
