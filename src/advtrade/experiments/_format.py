"""Formatting shared by the report's Markdown and CSV files, and the one rule for uncertainty:
an effect is claimed only when the two quantities' uncertainty ranges do not overlap."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

__all__ = ["cell", "csv_text", "eps_text", "md_table", "pct", "range_of", "separated"]


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal (``–`` for None)."""
    return "–" if value is None else f"{100 * value:.1f}"


def eps_text(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def csv_text(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def range_of(spread: dict[str, Any], interval: Sequence[float] | None) -> tuple[float, float]:
    """The uncertainty range of one cell: min–max over seeds, or with one seed the binomial 95%
    interval of the test-set accuracy."""
    if len(spread["runs"]) > 1 or interval is None:
        return float(spread["min"]), float(spread["max"])
    return float(interval[0]), float(interval[1])


def cell(spread: dict[str, Any], interval: Sequence[float] | None) -> str:
    """``mean (min–max)`` over several seeds, ``value [low–high]`` (95% binomial) for one."""
    low, high = range_of(spread, interval)
    if len(spread["runs"]) > 1:
        return f"{pct(spread['mean'])} ({pct(low)}–{pct(high)})"
    if interval is None:
        return pct(spread["mean"])
    return f"{pct(spread['mean'])} [{pct(low)}–{pct(high)}]"


def separated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two uncertainty ranges do not overlap (the effect exceeds the noise)."""
    return a[1] < b[0] or b[1] < a[0]
