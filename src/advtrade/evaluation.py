"""Robust evaluation: clean and robust accuracy per attack, and accuracy-vs-ε curves.

:func:`evaluate` reports counts (not only rates) per attack and the per-example worst case over all
attacks; :func:`robust_accuracy_curve` evaluates a whole list of budgets for the price of a few
attacks, by a per-example binary search over ε. Both leave the model as they found it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ._outputs import as_class_index, as_logits, check_label_range, check_labels
from .attacks import Attack
from .guard import model_guard

__all__ = [
    "WORST_OF",
    "EvaluationReport",
    "RobustAccuracyCurve",
    "evaluate",
    "robust_accuracy_curve",
]

WORST_OF = "worst-of"
"""Name of the report's column that counts examples surviving every attack."""

Batches = Iterable[Any] | tuple[Tensor, Tensor]


def _table(rows: Sequence[tuple[str, int, int]], title: str) -> str:
    width = max([len(title)] + [len(name) for name, _, _ in rows])
    lines = [f"{title:<{width}}  {'correct':>7} / {'total':<7} {'accuracy':>8}"]
    for name, k, n in rows:
        lines.append(f"{name:<{width}}  {k:>7} / {n:<7} {100 * k / max(n, 1):>7.2f}%")
    return "\n".join(lines)


@dataclass(frozen=True)
class EvaluationReport:
    """Clean and robust accuracy on ``n`` examples, as counts of correctly classified examples.

    ``counts`` maps each column name to the number of examples classified correctly: the
    clean column(s), one per attack (the attack's output classified correctly; examples
    misclassified clean count as non-robust), and ``"worst-of"``: examples that survive every
    attack. ``per_example`` holds the (n,) boolean outcome of each column and ``seconds`` the
    time spent per column; neither takes part in equality. ``report["pgd"]`` is a rate.
    """

    n: int
    counts: dict[str, int]
    clean_name: str = "clean"
    seconds: dict[str, float] = field(default_factory=dict, compare=False)
    per_example: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False)

    @property
    def clean(self) -> int:
        """Number of examples classified correctly without attack."""
        return self.counts[self.clean_name]

    @property
    def worst(self) -> int:
        """Number of examples that survive every attack (clean count when there is none)."""
        return self.counts.get(WORST_OF, self.clean)

    @property
    def accuracies(self) -> dict[str, float]:
        """Each column's accuracy, ``count / n``."""
        return {name: k / self.n for name, k in self.counts.items()}

    def __getitem__(self, name: str) -> float:
        return self.counts[name] / self.n

    def __add__(self, other: EvaluationReport) -> EvaluationReport:
        """The report of both example sets together (e.g. shards evaluated on several ranks)."""
        if not isinstance(other, EvaluationReport):
            return NotImplemented
        if list(other.counts) != list(self.counts) or other.clean_name != self.clean_name:
            raise ValueError(
                f"cannot add reports with different columns: {list(self.counts)} and "
                f"{list(other.counts)}"
            )
        both = self.per_example.keys() == other.per_example.keys() == self.counts.keys()
        return EvaluationReport(
            self.n + other.n,
            {k: v + other.counts[k] for k, v in self.counts.items()},
            self.clean_name,
            {k: v + other.seconds.get(k, 0.0) for k, v in self.seconds.items()},
            {k: torch.cat([v, other.per_example[k]]) for k, v in self.per_example.items()}
            if both
            else {},
        )

    def __str__(self) -> str:
        return _table([(name, k, self.n) for name, k in self.counts.items()], "evaluation")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``n``, ``counts``, ``accuracy``, ``seconds`` and ``clean``."""
        return {
            "n": self.n,
            "clean": self.clean_name,
            "counts": dict(self.counts),
            "accuracy": self.accuracies,
            "seconds": dict(self.seconds),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string (read back with :meth:`from_json`)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        """Inverse of :meth:`to_dict` (accuracies are recomputed from the counts)."""
        counts = {str(k): int(v) for k, v in data["counts"].items()}
        seconds = {str(k): float(v) for k, v in data.get("seconds", {}).items()}
        return cls(int(data["n"]), counts, str(data.get("clean", "clean")), seconds)

    @classmethod
    def from_json(cls, text: str) -> EvaluationReport:
        return cls.from_dict(json.loads(text))


def _check_attacks(attacks: Mapping[str, Attack | None] | None) -> tuple[str, dict[str, Attack]]:
    """Validate the mapping; return the clean column's name and the attacks in order."""
    if attacks is None:
        return "clean", {}
    if not isinstance(attacks, Mapping):
        raise TypeError(
            f"attacks must be a mapping name -> Attack (or None for clean accuracy), got "
            f"{type(attacks).__name__}; e.g. {{'clean': None, 'pgd': PGD(LinfBall(0.1))}}"
        )
    clean = [name for name, a in attacks.items() if a is None]
    for name, attack in attacks.items():
        if not isinstance(name, str) or not name or name == WORST_OF:
            raise ValueError(
                f"attack names must be non-empty strings other than {WORST_OF!r}, got {name!r}"
            )
        if attack is not None and not isinstance(attack, Attack):
            raise TypeError(
                f"attacks[{name!r}] must be an Attack or None (clean), got {type(attack).__name__}"
            )
        if getattr(attack, "targeted", False):
            raise ValueError(
                f"attacks[{name!r}] is targeted; robust accuracy needs untargeted attacks "
                f"(the loader's labels are the true classes)"
            )
        if attack is not None and name == "clean" and not clean:
            raise ValueError("the name 'clean' is reserved for clean accuracy (None)")
    return (clean[0] if clean else "clean"), {k: a for k, a in attacks.items() if a is not None}


def _model_device(model: nn.Module) -> torch.device | None:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return None if tensor is None else tensor.device


def _batches(
    data: Batches, device: torch.device | str | None, max_batches: int | None, model: nn.Module
) -> Iterator[tuple[Tensor, Tensor]]:
    """(x, y) batches from a loader or one (x, y) pair of tensors, moved to ``device``."""
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise ValueError(f"max_batches must be an integer >= 1 or None, got {max_batches!r}")
    target = torch.device(device) if device is not None else _model_device(model)
    is_pair = isinstance(data, (tuple, list)) and len(data) == 2
    if is_pair and all(isinstance(t, Tensor) for t in data):
        data = [tuple(data)]
    count = 0
    for batch in data:
        if max_batches is not None and count >= max_batches:
            break
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
            raise TypeError(f"each batch must be a pair (x, y), got {type(batch).__name__}{size}")
        x, y = batch
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(
                f"batches must hold tensors, got ({type(x).__name__}, {type(y).__name__})"
            )
        if target is not None:
            x, y = x.to(target), y.to(target)
        check_labels(y, x.shape[0], x.device)
        count += 1
        yield x, y
    if count == 0:
        raise ValueError("the loader yielded no batches; there is nothing to evaluate")


def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """(B,) bool: the model (in eval mode, no gradients) classifies ``x`` as ``y``."""
    with model_guard(model, "eval") as net, torch.no_grad():
        logits = as_logits(net(x), x.shape[0])
    check_label_range(y, logits.shape[1])
    return logits.argmax(dim=1) == as_class_index(y, logits.shape[1])


def evaluate(
    model: nn.Module,
    loader: Batches,
    attacks: Mapping[str, Attack | None] | None = None,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    max_batches: int | None = None,
) -> EvaluationReport:
    """Clean accuracy, robust accuracy per attack and the per-example worst case over attacks.

    ``loader`` yields ``(x, y)`` batches (or is one ``(x, y)`` pair of tensors); ``attacks``
    maps column names to attacks, ``None`` meaning clean accuracy. Each attack runs only on the
    examples classified correctly clean (the others are non-robust anyway), so counts are exact
    and the cost is lower. Batches move to ``device`` (default: the model's). The model is
    evaluated in eval mode and comes back untouched (mode, gradients, buffers).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import PGD, LinfBall, evaluate
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))  # logits = x: class 0 iff x0 > x1
        >>> x = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> y = torch.tensor([0, 0, 0])
        >>> report = evaluate(model, (x, y), {"clean": None, "pgd": PGD(LinfBall(0.15))})
        >>> report.counts
        {'clean': 2, 'pgd': 1, 'worst-of': 1}
        >>> round(report["pgd"], 4)
        0.3333
        >>> print(report)
        evaluation  correct / total   accuracy
        clean             2 / 3         66.67%
        pgd               1 / 3         33.33%
        worst-of          1 / 3         33.33%
    """
    clean_name, named = _check_attacks(attacks)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    columns = [clean_name, *named] + ([WORST_OF] if named else [])
    outcome: dict[str, list[Tensor]] = {name: [] for name in columns}
    seconds = dict.fromkeys(columns, 0.0)
    n = 0
    for x, y in _batches(loader, device, max_batches, model):
        start = time.perf_counter()
        correct = _correct(model, x, y)
        seconds[clean_name] += time.perf_counter() - start
        outcome[clean_name].append(correct.cpu())
        survived = correct.clone()
        todo = correct.nonzero().squeeze(1)
        for name, attack in named.items():
            start = time.perf_counter()
            robust = torch.zeros_like(correct)
            if todo.numel() > 0:
                x_adv = attack.subset(todo)(model, x[todo], y[todo], generator=generator)
                robust[todo] = _correct(model, x_adv, y[todo])
            seconds[name] += time.perf_counter() - start
            outcome[name].append(robust.cpu())
            survived &= robust
        if named:
            outcome[WORST_OF].append(survived.cpu())
        n += x.shape[0]
    # Columns in the mapping's order; every None entry is the clean column under its own name.
    aliases = {k for k, a in (attacks or {}).items() if a is None}
    order = list(attacks or {})
    order = ([] if clean_name in order else [clean_name]) + order + ([WORST_OF] if named else [])
    per_example = {k: torch.cat(outcome[clean_name if k in aliases else k]) for k in order}
    counts = {k: int(v.sum()) for k, v in per_example.items()}
    seconds = {k: seconds[k] for k in order if k in seconds and k != WORST_OF}
    return EvaluationReport(n, counts, clean_name, seconds, per_example)


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
    clean: int
    threat: str
    rounds: int = 0
    levels: Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def accuracies(self) -> tuple[float, ...]:
        return tuple(k / self.n for k in self.counts)

    def __str__(self) -> str:
        rows = [("clean", self.clean, self.n)]
        rows += [(f"eps={e:.4g}", k, self.n) for e, k in zip(self.epsilons, self.counts)]
        return _table(rows, self.threat)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the budgets, counts, accuracies and search statistics."""
        return {
            "threat": self.threat,
            "n": self.n,
            "clean": self.clean,
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
            int(data["clean"]),
            str(data["threat"]),
            int(data.get("rounds", 0)),
        )

    @classmethod
    def from_json(cls, text: str) -> RobustAccuracyCurve:
        return cls.from_dict(json.loads(text))


def _check_epsilons(epsilons: Sequence[float]) -> tuple[float, ...]:
    try:
        values = sorted({float(e) for e in epsilons})
    except (TypeError, ValueError):
        raise TypeError(f"epsilons must be a sequence of numbers, got {epsilons!r}") from None
    if not values or not all(math.isfinite(e) and e >= 0 for e in values):
        raise ValueError(
            f"epsilons must be a non-empty list of finite budgets >= 0, got {epsilons!r}"
        )
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
) -> RobustAccuracyCurve:
    """Robust accuracy of ``attack`` (a PGD or APGD) at every budget in ``epsilons``, cheaply.

    The curve is defined through monotonicity, as robustness-radius curves usually are: an
    example counts as robust at ε_j if the attack failed at some ε_i ≥ ε_j and no adversarial
    example within ε_j was found. So a per-example binary search over the sorted budgets
    decides every point in ⌈log₂(len(epsilons) + 1)⌉ batched rounds; each round attacks every
    undecided example at its own midpoint ε (a per-example budget) with early stopping, and a
    success at ε also settles every budget ≥ the norm of the perturbation found. The attack's
    own ε is ignored; an explicit PGD step size falls back to the default 2.5·ε/steps.

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
    for name in ("with_eps", "threat"):
        if not hasattr(attack, name):
            raise TypeError(
                f"attack must be an attack with a threat model and with_eps (PGD, APGD), got "
                f"{type(attack).__name__}"
            )
    if getattr(attack, "targeted", False):
        raise ValueError("robust_accuracy_curve needs an untargeted attack")
    settable = {f.name for f in fields(attack) if f.init} if is_dataclass(attack) else set()
    if "early_stop" in settable:  # fooled examples leave each round early (not FGSM: 1 step)
        attack = replace(attack, early_stop=True)  # type: ignore[type-var]
    threat = attack.threat  # type: ignore[attr-defined]
    n = clean = rounds = 0
    all_levels: list[Tensor] = []
    for x, y in _batches(data, device, max_batches, model):
        threat.check_domain(x)
        correct = _correct(model, x, y)
        levels, batch_rounds = _search(model, x, y, correct, attack, values, generator)
        all_levels.append(levels.cpu())
        n, clean, rounds = n + x.shape[0], clean + int(correct.sum()), max(rounds, batch_rounds)
    levels = torch.cat(all_levels)
    counts = tuple(int((levels > j).sum()) for j in range(len(values)))
    return RobustAccuracyCurve(values, counts, n, clean, type(threat).__name__, rounds, levels)


def _search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    attack: Any,
    epsilons: tuple[float, ...],
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """Per-example binary search; returns each example's level (budgets survived) and rounds.

    Invariant: an example is robust at the ``lo`` smallest budgets and fooled from index
    ``hi`` on; it is decided when ``lo == hi``.
    """
    eps = torch.tensor(epsilons, dtype=x.dtype, device=x.device)
    lo = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    hi = torch.where(correct, len(epsilons), 0)
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
        fooled = ~_correct(model, x_adv, y[index])
        # A success is a proof: fooled at every budget >= the perturbation's norm.
        norm = attack.threat.norm(x_adv - x[index]).to(eps.dtype)
        proof = torch.minimum(torch.searchsorted(eps, norm), mid)
        hit, miss = index[fooled], index[~fooled]
        hi[hit] = torch.minimum(hi[hit], proof[fooled])
        lo[hit] = torch.minimum(lo[hit], hi[hit])
        lo[miss] = mid[~fooled] + 1
    return lo, rounds
