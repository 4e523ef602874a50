"""Perceptual alignment as numbers, and the objects the paper's figures show."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._outputs import as_logits
from .._validation import check_inputs, check_int, check_labels, check_model
from ..guard import ModelMode, model_guard
from ..threats import ThreatModel
from ._checks import check_images, cosine
from ._gradients import input_gradients
from ._large_eps import interpolate, large_eps_examples, large_eps_threat

__all__ = [
    "Alignment",
    "PerceptionPanel",
    "alignment_score",
    "class_means",
    "nearest_neighbour_labels",
    "perception_panel",
    "shifted_targets",
]


def class_means(x: Tensor, y: Tensor, num_classes: int | None = None) -> Tensor:
    """The mean image of each class, shape (num_classes, ...) — e.g. from the training split."""
    x = check_images(x)
    y = check_labels(y, x.shape[0], x.device)
    if y.is_floating_point():
        raise TypeError(f"y must hold integer class indices, got {y.dtype}")
    if num_classes is None:
        k = int(y.max()) + 1
    else:
        k = check_int("num_classes", num_classes, minimum=1)
    if int(y.min()) < 0 or int(y.max()) >= k:
        lo, hi = int(y.min()), int(y.max())
        raise ValueError(f"y holds labels in [{lo}, {hi}], outside [0, {k - 1}]")
    counts = torch.bincount(y, minlength=k)
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"classes {missing} have no examples; cannot take their mean image")
    sums = torch.zeros((k, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, y, x)
    return sums / counts.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


def shifted_targets(y: Tensor, num_classes: int, shift: int = 1) -> Tensor:
    """Target classes ``(y + shift) mod num_classes``: a deterministic target ≠ y for each input."""
    num_classes = check_int("num_classes", num_classes, minimum=2)
    shift = check_int("shift", shift)
    if shift % num_classes == 0:
        raise ValueError(f"shift must not be a multiple of num_classes={num_classes}, got {shift}")
    return (y + shift) % num_classes


def nearest_neighbour_labels(x: Tensor, x_ref: Tensor, y_ref: Tensor, k: int = 5) -> Tensor:
    """Majority label of the ``k`` nearest reference images (pixel ℓ2) of each input, (B,).

    A model-free reader of images: it has no non-robust features to be fooled by, so it labels an
    image by what it looks like (≈93% accurate on the MNIST subset, 98% on digits). Ties go to
    the class of the nearer neighbour.
    """
    x = check_inputs(x, "x", min_ndim=2)
    x_ref = check_images(x_ref, "x_ref")
    y_ref = check_labels(y_ref, x_ref.shape[0], x_ref.device, name="y_ref")
    if x.shape[1:] != x_ref.shape[1:]:
        raise ValueError(
            f"x_ref must hold images like x, shape (N, *{tuple(x.shape[1:])}), got "
            f"{tuple(x_ref.shape)}"
        )
    k = check_int("k", k, minimum=1, maximum=x_ref.shape[0])
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
    check_model(model)
    x = check_images(x)
    y = check_labels(y, x.shape[0], x.device)
    target = check_labels(target, x.shape[0], x.device, name="target")
    if bool((target == y).any()):
        raise ValueError("target must differ from y for every example (use shifted_targets)")
    x_ref = check_images(x_ref, "x_ref")
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
    g_cos = cosine(-grad_y, x - x_ref.to(x).mean(dim=0, keepdim=True))
    p_cos = cosine(x_adv - x, towards)
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    noise = torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)
    length = (x_adv - x).flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
    noisy = threat.clip_domain(x + noise * length.view(-1, *([1] * (x.ndim - 1))))
    return Alignment(
        gradient=_mean(g_cos),
        gradient_to_target=_mean(cosine(-grad_t, towards)),
        perturbation=_mean(p_cos),
        perturbation_chance=_mean(cosine(noisy - x, towards)),
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
