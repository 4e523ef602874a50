"""Section 3 of the paper: robust models' gradients and large-ε adversarial examples look like data.

Tsipras et al. (2019) show that the input gradients of adversarially trained models highlight the
strokes and edges of the object, and that a targeted attack with a very large budget turns an
input into something a person reads as the target class — while for a standard model both look
like noise. This module computes those objects (:func:`input_gradients`,
:func:`large_eps_examples`, :func:`interpolate`) and turns the visual claim into numbers
(:func:`alignment_score`): whether the gradient looks like the input, whether it and the large-ε
perturbation point towards the target class's mean image, and whether a model-free
nearest-neighbour reader sees the target in the large-ε examples. :mod:`advtrade.plotting` draws
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._outputs import as_logits, check_label_range, check_labels
from .attacks import PGD
from .guard import ModelMode, model_guard
from .losses import Loss, cross_entropy
from .threats import L2Ball, ThreatModel

__all__ = [
    "DEFAULT_RMS",
    "Alignment",
    "PerceptionPanel",
    "alignment_score",
    "class_means",
    "input_gradients",
    "interpolate",
    "large_eps_examples",
    "large_eps_threat",
    "nearest_neighbour_labels",
    "normalize_for_display",
    "perception_panel",
    "shifted_targets",
]

DEFAULT_RMS = 0.3
"""Default large ℓ2 budget as a root-mean-square change per coordinate: ε = DEFAULT_RMS·√d.

0.3 gives ε = 8.4 on 28×28 MNIST and 2.4 on 8×8 digits: large enough that a targeted attack on an
adversarially trained model reaches the target class (measured: 100% on the MNIST subset and on
digits), far beyond an "imperceptible" budget — the paper's large-ε regime.
"""


# --------------------------------------------------------------------------- checks


def _check_x(x: object, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        got = f"dtype {x.dtype}, shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x)
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, ...), got {got}")
    return x


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _num_classes(net: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return as_logits(net(x[:2]), min(2, x.shape[0])).shape[1]


def _check_class_labels(y: Tensor, x: Tensor, num_classes: int, name: str) -> None:
    check_labels(y, x.shape[0], x.device, name=name)
    if y.is_floating_point():
        raise TypeError(f"{name} must hold integer class indices (torch.long), got {y.dtype}")
    if num_classes == 2 and bool((y < 0).any()):
        raise ValueError(f"{name} must hold class indices in [0, 1] for a one-logit model")
    check_label_range(y, num_classes, name=name)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of each example of ``a`` and ``b`` over all non-batch dims, (B,)."""
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1, eps=1e-30)


# --------------------------------------------------------------------------- gradients


def input_gradients(
    model: nn.Module, x: Tensor, y: Tensor, *, loss: Loss | None = None, mode: ModelMode = "eval"
) -> Tensor:
    """∇ₓ of the per-example ``loss`` (default cross-entropy) at labels ``y``, shape of ``x``.

    The model runs inside :func:`~advtrade.guard.model_guard` (eval mode by default), so its
    modes, parameters, ``.grad`` fields and buffers come back untouched. In eval mode examples do
    not interact, so row i is the gradient of example i's own loss.
    """
    model, x = _check_model(model), _check_x(x)
    if x.shape[0] == 0:
        return torch.zeros_like(x)
    loss_fn = cross_entropy if loss is None else loss
    check_labels(y, x.shape[0], x.device)
    with model_guard(model, mode) as net, torch.enable_grad():
        x_in = x.detach().clone().requires_grad_(True)
        logits = as_logits(net(x_in), x.shape[0])
        _check_class_labels(y, x, logits.shape[1], "y")
        value = loss_fn(logits, y)
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"loss must return one value per example, shape ({x.shape[0]},); got "
                f"{tuple(value.shape)}"
            )
        (grad,) = torch.autograd.grad(value.sum(), x_in)
    return grad.detach()


def normalize_for_display(g: Tensor, percentile: float = 99.0, *, signed: bool = True) -> Tensor:
    """Map each image of ``g`` (B, ...) to [0, 1] for display, clipped at a percentile of |g|.

    Each image is divided by the ``percentile``-th percentile of its absolute values and clipped,
    so a few extreme pixels cannot wash out the rest (as in the paper's figures). ``signed=True``
    (default) keeps the sign: 0.5 is zero, brighter is positive, darker negative — the gradient's
    direction is what looks like the data. ``signed=False`` shows the magnitude (0 is zero).

    >>> normalize_for_display(torch.tensor([[-2.0, 0.0, 1.0, 2.0]]), percentile=100)
    tensor([[0.0000, 0.5000, 0.7500, 1.0000]])
    """
    _check_x(g, "g")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
        raise TypeError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    flat = g.detach().flatten(1).abs().float()
    if flat.shape[0] == 0 or flat.shape[1] == 0:
        return g.detach().clone()
    scale = torch.quantile(flat, float(percentile) / 100.0, dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, flat.amax(dim=1, keepdim=True))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero image stays 0
    ratio = g.detach().flatten(1).float() / scale
    out = 0.5 + 0.5 * ratio.clamp(-1, 1) if signed else ratio.abs().clamp(max=1)
    return out.view_as(g).to(g.dtype)


# --------------------------------------------------------------------------- large-ε examples


def large_eps_threat(x: Tensor, rms: float = DEFAULT_RMS) -> L2Ball:
    """The default large budget for inputs like ``x``: ``L2Ball(rms·√d, domain=(0, 1))``.

    Scaling with √d (d = values per example) keeps the per-pixel change comparable across image
    sizes: 0.3·√784 = 8.4 on 28×28 MNIST, 0.3·√64 = 2.4 on 8×8 digits.
    """
    _check_x(x)
    if isinstance(rms, bool) or not isinstance(rms, (int, float)) or not 0 < rms < math.inf:
        raise ValueError(f"rms must be a finite number > 0, got {rms!r}")
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
    model, x = _check_model(model), _check_x(x)
    threat = large_eps_threat(x) if threat is None else threat
    if x.shape[0] == 0:
        return x.detach().clone()
    with model_guard(model, mode) as net:
        _check_class_labels(target, x, _num_classes(net, x), "target")
    attack = PGD(
        threat,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        loss=loss,
        targeted=True,
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
    _check_x(x)
    _check_x(x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(
            f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (both endpoints), got {n!r}")
    t = torch.linspace(0, 1, n, dtype=x.dtype, device=x.device).view(1, n, *([1] * (x.ndim - 1)))
    path = x.unsqueeze(1) + t * (x_adv - x).unsqueeze(1)
    path[:, 0], path[:, -1] = x, x_adv  # exact endpoints despite rounding
    return path.detach()


# --------------------------------------------------------------------------- alignment score


def class_means(x: Tensor, y: Tensor, num_classes: int | None = None) -> Tensor:
    """The mean image of each class, shape (num_classes, ...) — e.g. from the training split."""
    _check_x(x)
    check_labels(y, x.shape[0], x.device)
    k = int(y.max()) + 1 if num_classes is None else num_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    check_label_range(y, k)
    counts = torch.bincount(y, minlength=k)
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"classes {missing} have no examples; cannot take their mean image")
    sums = torch.zeros((k, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, y, x)
    return sums / counts.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


def shifted_targets(y: Tensor, num_classes: int, shift: int = 1) -> Tensor:
    """Target classes ``(y + shift) mod num_classes``: a deterministic target ≠ y for each input."""
    if shift % num_classes == 0:
        raise ValueError(f"shift must not be a multiple of num_classes={num_classes}, got {shift}")
    return (y + shift) % num_classes


def nearest_neighbour_labels(x: Tensor, x_ref: Tensor, y_ref: Tensor, k: int = 5) -> Tensor:
    """Majority label of the ``k`` nearest reference images (pixel ℓ2) of each input, (B,).

    A model-free reader of images: it has no non-robust features to be fooled by, so it labels an
    image by what it looks like (≈93% accurate on the MNIST subset, 98% on digits). Ties go to
    the class of the nearer neighbour.
    """
    _check_x(x)
    _check_x(x_ref, "x_ref")
    check_labels(y_ref, x_ref.shape[0], x_ref.device, name="y_ref")
    if x.shape[1:] != x_ref.shape[1:]:
        raise ValueError(
            f"x_ref must hold images like x, shape (N, *{tuple(x.shape[1:])}), got "
            f"{tuple(x_ref.shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= x_ref.shape[0]:
        raise ValueError(f"k must be an integer in [1, {x_ref.shape[0]}], got {k!r}")
    ref = x_ref.detach().flatten(1).to(x)
    weight = 1 + 1e-6 * torch.arange(k, 0, -1, dtype=torch.float64, device=x.device)
    out = []
    for chunk in x.detach().flatten(1).split(256):  # bounded memory: 256 × N distances
        nearest = torch.cdist(chunk, ref).topk(k, dim=1, largest=False).indices
        votes = F.one_hot(y_ref.to(x.device)[nearest], int(y_ref.max()) + 1) * weight[:, None]
        out.append(votes.sum(dim=1).argmax(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


@dataclass(frozen=True)
class Alignment:
    """Perceptual alignment of a model, as numbers (each a mean over the inputs).

    * ``gradient``: cosine between −∇ₓL(x, y) and x − μ̄ (μ̄ the mean reference image): does the
      loss gradient look like the input digit itself? Chance level 0.
    * ``gradient_to_target``: cosine between −∇ₓL(x, target) and μ_target − x (μ_c the class
      means): does the gradient point towards the target class's mean image?
    * ``perturbation``: cosine between x_adv − x and μ_target − x for the large-ε examples.
      ``perturbation_chance`` is the same for random directions of the same length clipped to
      the domain: the box alone correlates any perturbation with μ_target − x (pixels at 0 can
      only brighten), so read ``perturbation`` against it.
    * ``target_hit_rate``: the fraction of large-ε examples the model classifies as the target.
    * ``judge_hit_rate``: the fraction a model-free reader (:func:`nearest_neighbour_labels` on
      the reference images) labels as the target: do the examples *look like* the target?

    Per-example values and the large-ε examples themselves are kept for figures.
    """

    gradient: float
    gradient_to_target: float
    perturbation: float
    perturbation_chance: float
    target_hit_rate: float
    judge_hit_rate: float
    gradient_cosines: Tensor
    perturbation_cosines: Tensor
    hits: Tensor
    judge_hits: Tensor
    x_adv: Tensor

    def as_dict(self) -> dict[str, float]:
        """The summary numbers (for JSON reports)."""
        keys = ("gradient", "gradient_to_target", "perturbation", "perturbation_chance")
        keys += ("target_hit_rate", "judge_hit_rate")
        return {key: getattr(self, key) for key in keys}


def _mean(t: Tensor) -> float:
    return float(t.double().mean())


def alignment_score(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor,
    x_ref: Tensor,
    y_ref: Tensor,
    *,
    k: int = 5,
    threat: ThreatModel | None = None,
    steps: int = 100,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    mode: ModelMode = "eval",
) -> Alignment:
    """Measure perceptual alignment: do the model's gradients and large-ε examples look like data?

    ``x`` (true labels ``y``) are driven to ``target`` (≠ y, e.g. :func:`shifted_targets`) by
    :func:`large_eps_examples` (``threat``, ``steps``, ``step_size``); ``x_ref``/``y_ref`` are
    reference images, normally the training split: their mean, class means and ``k`` nearest
    neighbours define what "looks like a digit / the target" means. ``generator`` draws the
    random directions of the chance level (default: a fixed seed, so the score is
    deterministic). Returns an :class:`Alignment`.
    """
    model, x = _check_model(model), _check_x(x)
    check_labels(y, x.shape[0], x.device)
    check_labels(target, x.shape[0], x.device, name="target")
    if bool((target == y).any()):
        raise ValueError("target must differ from y for every example (use shifted_targets)")
    _check_x(x_ref, "x_ref")
    if x_ref.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"x_ref must hold images like x, shape (N, *{tuple(x.shape[1:])}), got "
            f"{tuple(x_ref.shape)}"
        )
    means = class_means(x_ref, y_ref).to(x)
    if int(target.max()) >= means.shape[0]:
        raise ValueError(f"target holds classes absent from y_ref (0..{means.shape[0] - 1})")
    threat = large_eps_threat(x) if threat is None else threat
    x_adv = large_eps_examples(
        model, x, target, threat, steps=steps, step_size=step_size, generator=generator, mode=mode
    )
    towards = means[target] - x
    grad_y = input_gradients(model, x, y, mode=mode)
    grad_t = input_gradients(model, x, target, mode=mode)
    with model_guard(model, mode) as net, torch.no_grad():
        hits = as_logits(net(x_adv), x.shape[0]).argmax(dim=1) == target
    judge = nearest_neighbour_labels(x_adv, x_ref, y_ref, k) == target
    g_cos = _cosine(-grad_y, x - x_ref.to(x).mean(dim=0, keepdim=True))
    p_cos = _cosine(x_adv - x, towards)
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    noise = torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)
    length = (x_adv - x).flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
    noisy = threat.clip_domain(x + noise * length.view(-1, *([1] * (x.ndim - 1))))
    return Alignment(
        gradient=_mean(g_cos),
        gradient_to_target=_mean(_cosine(-grad_t, towards)),
        perturbation=_mean(p_cos),
        perturbation_chance=_mean(_cosine(noisy - x, towards)),
        target_hit_rate=_mean(hits),
        judge_hit_rate=_mean(judge),
        gradient_cosines=g_cos.float(),
        perturbation_cosines=p_cos.float(),
        hits=hits,
        judge_hits=judge,
        x_adv=x_adv,
    )


@dataclass(frozen=True)
class PerceptionPanel:
    """What the paper's figures show for one model: inputs, gradients and large-ε examples."""

    x: Tensor
    y: Tensor
    target: Tensor
    gradient: Tensor
    x_adv: Tensor

    def path(self, n: int) -> Tensor:
        """The interpolation from ``x`` to ``x_adv`` (see :func:`interpolate`), (B, n, ...)."""
        return interpolate(self.x, self.x_adv, n)


def perception_panel(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor,
    *,
    threat: ThreatModel | None = None,
    steps: int = 100,
    x_adv: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PerceptionPanel:
    """Gradients at the true labels and large-ε examples towards ``target``, for a figure.

    Pass ``x_adv`` (e.g. :attr:`Alignment.x_adv`) to reuse examples already computed.
    """
    grad = input_gradients(model, x, y)
    if x_adv is None:
        x_adv = large_eps_examples(model, x, target, threat, steps=steps, generator=generator)
    return PerceptionPanel(x.detach(), y, target, grad, x_adv)
