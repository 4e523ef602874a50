"""The result of an evaluation, and the binomial uncertainty of an accuracy."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._validation import check_int, check_number

__all__ = ["WORST_OF", "EvaluationReport", "table", "wilson_interval"]

WORST_OF = "worst-of"
"""Name of the report's column that counts examples surviving every attack."""


def table(rows: Sequence[tuple[str, int, int]], title: str) -> str:
    """Rows of (name, correct, total) as a fixed-width text table."""
    width = max([len(title)] + [len(name) for name, _, _ in rows])
    lines = [f"{title:<{width}}  {'correct':>7} / {'total':<7} {'accuracy':>8}"]
    for name, k, n in rows:
        lines.append(f"{name:<{width}}  {k:>7} / {n:<7} {100 * k / max(n, 1):>7.2f}%")
    return "\n".join(lines)


def _normal_quantile(p: float) -> float:
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 and n
    successes, where robust accuracies often sit.

    Examples:
        >>> from advtrade.evaluation import wilson_interval
        >>> low, high = wilson_interval(90, 100)
        >>> round(low, 4), round(high, 4)
        (0.8256, 0.9448)
    """
    n = check_int("n", n, minimum=1)
    k = check_int("k", k, minimum=0, maximum=n)
    confidence = check_number("confidence", confidence, minimum=0.0, maximum=1.0, strict=True)
    if confidence >= 1:
        return 0.0, 1.0
    z = _normal_quantile(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class EvaluationReport:
    """Clean and robust accuracy on ``n`` examples, as counts of correctly classified examples.

    ``counts`` maps each column name to the number of examples classified correctly: the
    clean column(s), one per attack (the attack's output classified correctly; examples
    misclassified clean count as non-robust), and ``"worst-of"``: examples that survive every
    attack. ``per_example`` holds the (n,) boolean outcome of each column and ``seconds`` the
    time spent per column; neither takes part in equality. ``report["pgd"]`` is a rate, as are
    :attr:`clean_accuracy` and :attr:`robust_accuracy`; ``report.counts["pgd"]`` is a count.
    """

    n: int
    counts: dict[str, int]
    clean_name: str = "clean"
    seconds: dict[str, float] = field(default_factory=dict, compare=False)
    per_example: dict[str, Tensor] = field(default_factory=dict, compare=False, repr=False)

    @property
    def clean_accuracy(self) -> float:
        """The share of examples classified correctly without attack."""
        return self[self.clean_name]

    @property
    def robust_accuracy(self) -> float:
        """The share of examples that survive every attack (clean accuracy when there is none)."""
        return self[WORST_OF] if WORST_OF in self.counts else self.clean_accuracy

    @property
    def accuracies(self) -> dict[str, float]:
        """Each column's accuracy, ``count / n``."""
        return {name: k / self.n for name, k in self.counts.items()}

    def __getitem__(self, name: str) -> float:
        """The accuracy (a rate) of column ``name``; ``report.counts[name]`` is the count."""
        return self.counts[name] / self.n

    def interval(self, name: str, confidence: float = 0.95) -> tuple[float, float]:
        """A binomial confidence interval for column ``name``'s accuracy (Wilson score): the
        uncertainty from evaluating ``n`` examples, not from training."""
        return wilson_interval(self.counts[name], self.n, confidence)

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
        return table([(name, k, self.n) for name, k in self.counts.items()], "evaluation")

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


