"""Input gradients and their display."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_bool, check_choice, check_inputs, check_model, check_number
from ..attacks._core import input_gradient
from ..guard import ModelMode, model_guard
from ..losses import Loss, cross_entropy
from ._checks import check_class_labels, check_images, num_classes

__all__ = ["input_gradients", "normalize_for_display"]


def input_gradients(
    model: nn.Module, x: Tensor, y: Tensor, *, loss: Loss | None = None, mode: ModelMode = "eval"
) -> Tensor:
    """∇ₓ of the per-example ``loss`` (default cross-entropy) at labels ``y``, shape of ``x``.

    The model runs inside :func:`~advtrade.model_guard` (eval mode by default), so its modes,
    parameters, ``.grad`` fields and buffers come back untouched. In eval mode examples do not
    interact, so row i is the gradient of example i's own loss. It is the attacks' own input
    gradient (:mod:`advtrade.attacks`), so what you see is what PGD follows.
    """
    check_model(model)
    x = check_images(x)
    check_choice("mode", mode, ("eval", "as_is"))
    with model_guard(model, mode) as net:
        y = check_class_labels(y, x, num_classes(net, x), "y")
    return input_gradient(model, x, y, cross_entropy if loss is None else loss, mode=mode)


def normalize_for_display(g: Tensor, percentile: float = 99.0, *, signed: bool = True) -> Tensor:
    """Map each image of ``g`` (B, ...) to [0, 1] for display, clipped at a percentile of |g|.

    Each image is divided by the ``percentile``-th percentile of its absolute values and clipped,
    so a few extreme pixels cannot wash out the rest (as in the paper's figures). ``signed=True``
    (default) keeps the sign: 0.5 is zero, brighter is positive, darker negative — the gradient's
    direction is what looks like the data. ``signed=False`` shows the magnitude (0 is zero).

    >>> normalize_for_display(torch.tensor([[-2.0, 0.0, 1.0, 2.0]]), percentile=100)
    tensor([[0.0000, 0.5000, 0.7500, 1.0000]])
    """
    g = check_inputs(g, "g", min_ndim=2)
    percentile = check_number("percentile", percentile, minimum=0.0, maximum=100.0, strict=True)
    check_bool("signed", signed)
    flat = g.detach().flatten(1).abs().float()
    if flat.shape[0] == 0 or flat.shape[1] == 0:
        return g.detach().clone()
    scale = torch.quantile(flat, float(percentile) / 100.0, dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, flat.amax(dim=1, keepdim=True))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero image stays 0
    ratio = g.detach().flatten(1).float() / scale
    out = 0.5 + 0.5 * ratio.clamp(-1, 1) if signed else ratio.abs().clamp(max=1)
    return out.view_as(g).to(g.dtype)
