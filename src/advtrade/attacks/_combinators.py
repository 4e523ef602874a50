"""``WorstOf``: per example, the worst case over several attacks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .._outputs import as_class_index, as_logits
from .._validation import check_choice
from ..guard import ModelMode
from ..losses import margin_loss
from ..threats import Eps, ThreatModel
from ._base import Attack
from ._core import Best, Point, success

__all__ = ["WorstOf"]


def _same(a: ThreatModel, b: ThreatModel) -> bool:
    if type(a) is not type(b) or a.domain != b.domain:
        return False
    if isinstance(a.eps, float) or isinstance(b.eps, float):
        return a.eps == b.eps
    return a.eps.shape == b.eps.shape and bool(torch.equal(a.eps, b.eps))


@dataclass(frozen=True)
class WorstOf(Attack):
    """Per example, the worst case over several attacks (a fooled point beats any margin).

    Each attack after the first runs only on the examples that no earlier attack fooled, so an
    ensemble costs little more than its strongest member on a weak model. The members must be
    all targeted or all untargeted; ``threat`` is their common threat model, or ``None`` when
    they differ (a union of threat models, e.g. ℓ∞ and ℓ2). ``with_eps``, ``with_mode`` and
    ``subset`` apply to every member.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import FGSM, PGD, LinfBall, WorstOf
        >>> from advtrade.losses import margin_loss
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))  # logits = x
        >>> x, y = torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 0])
        >>> attack = WorstOf([FGSM(LinfBall(0.15)), PGD(LinfBall(0.15), loss=margin_loss)])
        >>> model(attack(model, x, y)).argmax(1)  # the first stays robust, the second is fooled
        tensor([0, 1])
    """

    attacks: Sequence[Attack]
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        attacks = tuple(self.attacks) if isinstance(self.attacks, Sequence) else ()
        if not attacks or not all(isinstance(a, Attack) for a in attacks):
            raise TypeError("attacks must be a non-empty sequence of Attack objects")
        if len({a.targeted for a in attacks}) > 1:
            raise ValueError("attacks must be all targeted or all untargeted")
        check_choice("mode", self.mode, ("eval", "as_is"))
        object.__setattr__(self, "attacks", attacks)

    @property
    def threat(self) -> ThreatModel | None:  # type: ignore[override]
        first = self.attacks[0].threat
        same = first is not None and all(
            a.threat is not None and _same(first, a.threat) for a in self.attacks[1:]
        )
        return first if same else None

    @property
    def targeted(self) -> bool:  # type: ignore[override]
        return self.attacks[0].targeted

    def with_threat(self, threat: ThreatModel) -> WorstOf:
        return replace(self, attacks=[a.with_threat(threat) for a in self.attacks])

    def with_eps(self, eps: Eps) -> WorstOf:
        return replace(self, attacks=[a.with_eps(eps) for a in self.attacks])

    def with_mode(self, mode: ModelMode) -> WorstOf:
        return replace(self, attacks=[a.with_mode(mode) for a in self.attacks], mode=mode)

    def subset(self, index: Tensor) -> WorstOf:
        return replace(self, attacks=[a.subset(index) for a in self.attacks])

    def with_early_stop(self) -> WorstOf:
        return replace(self, attacks=[a.with_early_stop() for a in self.attacks])

    def check_domain(self, x: Tensor) -> None:
        for attack in self.attacks:
            attack.check_domain(x)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        best = Best.empty(x)
        for attack in self.attacks:
            todo = (~best.fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x_adv = attack.subset(todo)(model, x[todo], y[todo], generator=generator)
            with torch.no_grad():
                logits = as_logits(model(x_adv), x_adv.shape[0])
            labels = as_class_index(y[todo], logits.shape[1])
            margin = margin_loss(logits, labels)
            score = -margin if self.targeted else margin
            fooled = success(logits, labels, self.targeted) & torch.isfinite(score)
            best.merge(todo, Best.start(x_adv, Point(logits, score, fooled, None)))
        return best.x
