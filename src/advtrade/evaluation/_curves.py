"""``robust_accuracy_curve``: robust accuracy at many budgets for the price of a few attacks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._amp import autocast
from .._batches import DEFAULT_KEYS, BatchKeys, check_keys
from .._validation import check_bool, check_generator, check_model, check_number, check_type
from ..attacks import Attack
from ._evaluate import Batches, correct, iter_batches
from ._report import table

__all__ = ["RobustAccuracyCurve", "robust_accuracy_curve"]


@dataclass(frozen=True)
class RobustAccuracyCurve:
    """Robust accuracy at each of the sorted budgets ``epsilons``, as counts out of ``n``.

    ``levels[i]`` is the number of budgets (from the smallest) at which example ``i`` was
    found robust, so ``counts[j] = (levels > j).sum()``: the curve is non-increasing by
    construction. ``rounds`` is the number of batched attack rounds the search used.
    """

    epsilons: tuple[float, ...]
    counts: tuple[int, ...]
    n: int
    clean_count: int
    threat: str
    rounds: int = 0
    levels: Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def accuracies(self) -> tuple[float, ...]:
        """Robust accuracy (a rate) at each budget."""
        return tuple(k / self.n for k in self.counts)

    @property
    def clean_accuracy(self) -> float:
        """Clean accuracy (a rate)."""
        return self.clean_count / self.n

    def __str__(self) -> str:
        rows = [("clean", self.clean_count, self.n)]
        rows += [(f"eps={e:.4g}", k, self.n) for e, k in zip(self.epsilons, self.counts)]
        return table(rows, self.threat)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the budgets, counts, accuracies and search statistics."""
        return {
            "threat": self.threat,
            "n": self.n,
            "clean_count": self.clean_count,
            "epsilons": list(self.epsilons),
            "counts": list(self.counts),
            "accuracy": list(self.accuracies),
            "rounds": self.rounds,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string (read back with :meth:`from_json`)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobustAccuracyCurve:
        return cls(
            tuple(float(e) for e in data["epsilons"]),
            tuple(int(k) for k in data["counts"]),
            int(data["n"]),
            int(data["clean_count"]),
            str(data["threat"]),
            int(data.get("rounds", 0)),
        )

    @classmethod
    def from_json(cls, text: str) -> RobustAccuracyCurve:
        return cls.from_dict(json.loads(text))


def _check_epsilons(epsilons: Sequence[float]) -> tuple[float, ...]:
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Iterable):
        raise TypeError(f"epsilons must be a sequence of numbers, got {epsilons!r}")
    values = sorted({check_number(f"epsilons[{i}]", e, minimum=0.0) for i, e in
                     enumerate(epsilons)})
    if not values:
        raise ValueError("epsilons must be a non-empty list of finite budgets >= 0, got []")
    return tuple(values)


def robust_accuracy_curve(
    model: nn.Module,
    data: Batches,
    attack: Attack,
    epsilons: Sequence[float],
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    max_batches: int | None = None,
    amp: bool = False,
    batch_keys: BatchKeys = DEFAULT_KEYS,
) -> RobustAccuracyCurve:
    """Robust accuracy of ``attack`` at every budget in ``epsilons``, cheaply.

    The curve is defined through monotonicity, as robustness-radius curves usually are: an
    example counts as robust at ε_j if the attack failed at some ε_i ≥ ε_j and no adversarial
    example within ε_j was found. So a per-example binary search over the sorted budgets
    decides every point in ⌈log₂(len(epsilons) + 1)⌉ batched rounds; each round attacks every
    undecided example at its own midpoint ε (a per-example budget) with early stopping (when the
    attack has it), and a success at ε also settles every budget ≥ the norm of the perturbation
    found. Any untargeted attack with a threat model works (PGD, APGD, AutoAttack, ...); its own
    ε is ignored, and an explicit PGD step size falls back to the default 2.5·ε/steps. ``amp``
    runs the model and the attack under autocast, as in :func:`~advtrade.evaluate`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import PGD, LinfBall, robust_accuracy_curve
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))  # logits = x
        >>> x = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> y = torch.tensor([0, 0, 0])
        >>> curve = robust_accuracy_curve(model, (x, y), PGD(LinfBall(0.1)), [0.05, 0.15, 0.3, 0.5])
        >>> curve.counts  # margins 0.8 and 0.2 break at ε = 0.4 and 0.1
        (2, 1, 1, 0)
    """
    values = _check_epsilons(epsilons)
    check_model(model)
    check_generator(generator)
    check_bool("amp", amp)
    keys = check_keys(batch_keys)
    check_type("attack", attack, Attack, "an Attack such as PGD(LinfBall(eps))")
    threat = attack.threat
    if threat is None:
        raise TypeError(
            f"attack must have a single threat model to search over ε; {type(attack).__name__} "
            f"has none (a WorstOf over different norms?)"
        )
    if attack.targeted:
        raise ValueError("robust_accuracy_curve needs an untargeted attack")
    attack = attack.with_early_stop()  # fooled examples leave each round early
    n = clean = rounds = 0
    all_levels: list[Tensor] = []
    for x, y in iter_batches(data, device, max_batches, model, keys):
        threat.check_domain(x)
        with autocast(x.device.type, amp):
            ok = correct(model, x, y, "on clean inputs")
            levels, batch_rounds = _search(model, x, y, ok, attack, values, generator)
        all_levels.append(levels.cpu())
        n, clean, rounds = n + x.shape[0], clean + int(ok.sum()), max(rounds, batch_rounds)
    if n == 0:
        raise ValueError("the loader yielded only empty batches; there is nothing to evaluate")
    levels = torch.cat(all_levels)
    counts = tuple(int((levels > j).sum()) for j in range(len(values)))
    return RobustAccuracyCurve(values, counts, n, clean, type(threat).__name__, rounds, levels)


def _search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    ok: Tensor,
    attack: Attack,
    epsilons: tuple[float, ...],
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """Per-example binary search; returns each example's level (budgets survived) and rounds.

    Invariant: an example is robust at the ``lo`` smallest budgets and fooled from index
    ``hi`` on; it is decided when ``lo == hi``.
    """
    eps = torch.tensor(epsilons, dtype=x.dtype, device=x.device)
    lo = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    hi = torch.where(ok, len(epsilons), 0)
    rounds = 0
    while bool((lo < hi).any()):
        index = (lo < hi).nonzero().squeeze(1)
        mid = (lo[index] + hi[index]) // 2
        budget = eps[mid]
        free = budget == 0  # ε = 0 is clean accuracy, known already
        lo[index[free]] = mid[free] + 1
        index, mid, budget = index[~free], mid[~free], budget[~free]
        if index.numel() == 0:
            continue
        rounds += 1
        x_adv = attack.with_eps(budget)(model, x[index], y[index], generator=generator)
        fooled = ~correct(model, x_adv, y[index], "on the attack's outputs")
        # A success is a proof: fooled at every budget >= the perturbation's norm.
        assert attack.threat is not None
        norm = attack.threat.norm(x_adv - x[index]).to(eps.dtype)
        proof = torch.minimum(torch.searchsorted(eps, norm), mid)
        hit, miss = index[fooled], index[~fooled]
        hi[hit] = torch.minimum(hi[hit], proof[fooled])
        lo[hit] = torch.minimum(lo[hit], hi[hit])
        lo[miss] = mid[~fooled] + 1
    return lo, rounds
