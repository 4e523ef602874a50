"""Per-example losses ``(logits, target) -> (B,)`` that attacks maximise and objectives minimise.

Any callable with that signature works as an attack loss; a targeted attack minimises the same
loss (a sign, not a new class). ``target`` is a (B,) tensor of class indices, or for distribution
losses such as :func:`trades_kl` a (B, C) tensor.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Loss",
    "cross_entropy",
    "dlr_loss",
    "margin_loss",
    "targeted_dlr_loss",
    "trades_kl",
]


class Loss(Protocol):
    """A per-example loss: ``loss(logits (B, C), target) -> (B,)``."""

    def __call__(self, logits: Tensor, target: Tensor, /) -> Tensor: ...


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-example cross-entropy, ``-log softmax(logits)[target]``.

    Examples:
        >>> import torch
        >>> from advtrade.losses import cross_entropy
        >>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
        >>> cross_entropy(logits, torch.tensor([0, 0]))
        tensor([0.4076, 3.1698])
    """
    return F.cross_entropy(logits, target, reduction="none")


def _true_and_best_other(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    true = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return true, others.amax(dim=1)


def margin_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Carlini–Wagner margin ``max_{j≠y} z_j − z_y``: positive exactly when misclassified.

    Unlike cross-entropy it does not saturate on confident examples, which makes it the
    usual second loss for a robust evaluation.

    Examples:
        >>> import torch
        >>> from advtrade.losses import margin_loss
        >>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
        >>> margin_loss(logits, torch.tensor([0, 0]))  # the second example is misclassified
        tensor([-1.,  3.])
    """
    true, other = _true_and_best_other(logits, target)
    return other - true


def dlr_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Difference-of-logits-ratio loss of Croce & Hein (2020): the margin divided by
    ``z_π1 − z_π3`` (largest minus third-largest logit), invariant to shifting and rescaling the
    logits, so a model cannot hide behind large logits. Needs at least three classes.

    Examples:
        >>> import torch
        >>> from advtrade.losses import dlr_loss
        >>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
        >>> dlr_loss(logits, torch.tensor([0, 0]))
        tensor([-0.5000,  1.0000])
        >>> dlr_loss(10 * logits + 5, torch.tensor([0, 0]))  # the same after rescaling
        tensor([-0.5000,  1.0000])
    """
    if logits.shape[1] < 3:
        raise ValueError(f"dlr_loss needs at least 3 classes, the model outputs {logits.shape[1]}")
    true, other = _true_and_best_other(logits, target)
    top = logits.topk(3, dim=1).values
    return (other - true) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR loss of Croce & Hein (2020), what APGD-T maximises:
    ``(z_t − z_y) / (z_π1 − (z_π3 + z_π4)/2)``, with ``target`` a (B, 2) tensor of
    ``[true class y, target class t]`` rows. Positive once t beats y; invariant to shifting and
    rescaling the logits. Needs at least four classes.

    Examples:
        >>> import torch
        >>> from advtrade.losses import targeted_dlr_loss
        >>> logits = torch.tensor([[4.0, 3.0, 1.0, 0.0]])
        >>> targeted_dlr_loss(logits, torch.tensor([[0, 1]]))  # (3 − 4) / (4 − (1 + 0)/2)
        tensor([-0.2857])
    """
    if logits.shape[1] < 4:
        raise ValueError(
            f"targeted_dlr_loss needs at least 4 classes, the model outputs {logits.shape[1]}"
        )
    true = logits.gather(1, target[:, :1]).squeeze(1)
    goal = logits.gather(1, target[:, 1:]).squeeze(1)
    top = logits.topk(4, dim=1).values
    return (goal - true) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def trades_kl(logits: Tensor, target: Tensor) -> Tensor:
    """TRADES' per-example KL(p_clean ‖ p_adv) where ``target`` holds the clean logits (B, C).

    Gradients flow through both arguments, as in Zhang et al. (2019)'s training loss; inside the
    attack the clean logits are a constant anyway.

    Examples:
        >>> import torch
        >>> from advtrade.losses import trades_kl
        >>> clean = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
        >>> trades_kl(clean, clean)  # no change in the prediction: no penalty
        tensor([0., 0.])
        >>> trades_kl(torch.tensor([[0.0, 0.0]]), clean[:1]) > 0
        tensor([True])
    """
    log_clean = torch.log_softmax(target, dim=1)
    log_adv = torch.log_softmax(logits, dim=1)
    return (log_clean.exp() * (log_clean - log_adv)).sum(dim=1)
