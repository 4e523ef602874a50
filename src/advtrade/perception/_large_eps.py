"""Large-ε targeted adversarial examples and the interpolation towards them."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_choice, check_inputs, check_int, check_model, check_number
from ..attacks import PGD
from ..guard import ModelMode, model_guard
from ..losses import Loss
from ..threats import L2Ball, ThreatModel
from ._checks import check_class_labels, check_images, num_classes

__all__ = ["DEFAULT_RMS", "interpolate", "large_eps_examples", "large_eps_threat"]

DEFAULT_RMS = 0.3
"""Default large ℓ2 budget as a root-mean-square change per coordinate: ε = DEFAULT_RMS·√d.

0.3 gives ε = 8.4 on 28×28 MNIST and 2.4 on 8×8 digits: large enough that a targeted attack on an
adversarially trained model reaches the target class (measured: 100% on the MNIST subset and on
digits), far beyond an "imperceptible" budget — the paper's large-ε regime.
"""


def large_eps_threat(x: Tensor, rms: float = DEFAULT_RMS) -> L2Ball:
    """The default large budget for inputs like ``x``: ``L2Ball(rms·√d, domain=(0, 1))``.

    Scaling with √d (d = values per example) keeps the per-pixel change comparable across image
    sizes: 0.3·√784 = 8.4 on 28×28 MNIST, 0.3·√64 = 2.4 on 8×8 digits.
    """
    x = check_images(x)
    rms = check_number("rms", rms, minimum=0.0, strict=True)
    return L2Ball(float(rms) * math.sqrt(x[0].numel()), domain=(0.0, 1.0))


def large_eps_examples(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    threat: ThreatModel | None = None,
    *,
    steps: int = 100,
    step_size: float | None = None,
    loss: Loss | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    mode: ModelMode = "eval",
) -> Tensor:
    """Targeted PGD with a large budget, driving each input towards class ``target``.

    ``threat`` defaults to :func:`large_eps_threat` (ℓ2, ε = 0.3·√d, domain [0, 1]). PGD
    minimises the loss of the target class (default cross-entropy) for ``steps`` steps of
    ``step_size`` (default 2.5·ε/steps) from ``x`` itself (``random_start=False``, so the result
    is deterministic); it returns, per example, the iterate with the lowest target loss.
    """
    check_model(model)
    x = check_images(x)
    threat = large_eps_threat(x) if threat is None else threat
    check_choice("mode", mode, ("eval", "as_is"))
    with model_guard(model, mode) as net:
        target = check_class_labels(target, x, num_classes(net, x), "target")
    attack = PGD(
        threat,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        loss=loss,
        targeted=True,
        select="best",  # the most target-like iterate, the last one included
        mode=mode,
    )
    return attack(model, x, target, generator=generator)


def interpolate(x: Tensor, x_adv: Tensor, n: int) -> Tensor:
    """The path ``x + t·(x_adv − x)`` for ``t`` in ``linspace(0, 1, n)``, shape (B, n, ...).

    One row per example (row i, column 0 is ``x[i]``, column n−1 is ``x_adv[i]``), the layout of a
    figure; ``path.flatten(0, 1)`` is a batch a model can classify.

    >>> interpolate(torch.zeros(2, 1), torch.ones(2, 1), 3)[0].flatten()
    tensor([0.0000, 0.5000, 1.0000])
    """
    x = check_inputs(x, "x", min_ndim=1)
    x_adv = check_inputs(x_adv, "x_adv", min_ndim=1)
    if x.shape != x_adv.shape:
        raise ValueError(
            f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    n = check_int("n", n, minimum=2)
    t = torch.linspace(0, 1, n, dtype=x.dtype, device=x.device).view(1, n, *([1] * (x.ndim - 1)))
    path = x.unsqueeze(1) + t * (x_adv - x).unsqueeze(1)
    path[:, 0], path[:, -1] = x, x_adv  # exact endpoints despite rounding
    return path.detach()
