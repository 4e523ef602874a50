"""The training history: one plain dict per epoch, readable as a table and JSON-serialisable
(it is stored in checkpoints as plain lists, floats and ints)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["COLUMNS", "History", "Record", "format_record", "shown_metrics"]

Record = dict[str, Any]

#: Columns in display order; a record may hold any subset of them (and extra keys after them).
COLUMNS: tuple[str, ...] = (
    "epoch",
    "loss",
    "train_clean_acc",
    "train_robust_acc",
    "eval_clean_acc",
    "eval_robust_acc",
    "eps",
    "lr",
    "time",
    "best_epoch",
)


class History:
    """Per-epoch training records: a list of plain dicts with keys from :data:`COLUMNS`.

    ``history[-1]["eval_robust_acc"]``, ``history.column("loss")``, ``print(history)`` (a table)
    and ``history.to_json()`` all work; values are floats, ints or ``None`` (not measured).
    """

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        self.records: list[Record] = [dict(r) for r in records]

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one epoch's record."""
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and other.records == self.records

    def column(self, key: str) -> list[Any]:
        """The value of ``key`` in every epoch (``None`` where it was not recorded)."""
        return [r.get(key) for r in self.records]

    def to_list(self) -> list[Record]:
        """A copy of the records as plain dicts (what checkpoints store)."""
        return [dict(r) for r in self.records]

    def to_json(self, **kwargs: Any) -> str:
        """The records as a JSON array (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.records, **kwargs)

    def keys(self) -> list[str]:
        """Every key present in some record, known columns first."""
        seen = {k for r in self.records for k in r}
        return [k for k in COLUMNS if k in seen] + sorted(seen - set(COLUMNS))

    def table(self) -> str:
        """The records as a fixed-width text table, one row per epoch."""
        keys = self.keys()
        rows = [[_fmt(r.get(k)) for k in keys] for r in self.records]
        widths = [max([len(k)] + [len(row[i]) for row in rows]) for i, k in enumerate(keys)]
        lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"History({len(self)} epochs)\n{self.table()}" if self.records else "History([])"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def shown_metrics(record: Mapping[str, Any]) -> dict[str, str]:
    """The record's measured columns (not the epoch, time or best epoch), formatted."""
    skip = ("epoch", "time", "best_epoch")
    keys = [k for k in COLUMNS if k not in skip and record.get(k) is not None]
    return {k: _fmt(record[k]) for k in keys}


def format_record(record: Mapping[str, Any], max_epochs: int | None = None) -> str:
    """One line for an epoch record, e.g. ``epoch 3/10  loss 0.412  eval_robust_acc 0.55``."""
    epoch = record.get("epoch")
    head = f"epoch {epoch}" + (f"/{max_epochs}" if max_epochs is not None else "")
    parts = [f"{k} {v}" for k, v in shown_metrics(record).items()]
    if record.get("time") is not None:
        parts.append(f"{float(record['time']):.1f}s")
    return "  ".join([head, *parts])


