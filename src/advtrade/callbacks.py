"""Behaviour around the training loop: callbacks, the history, progress display, ε schedules.

Callbacks are classes with no-op ``on_*`` methods (as in skorch and Lightning): subclass
:class:`Callback` and override what you need; the trainer calls every hook in order. A callback
may stop training after the current epoch by setting ``trainer.stop_training = True``.
:class:`History` is what ``fit`` returns: one plain dict per epoch, readable as a table and
JSON-serialisable (it is also stored in checkpoints as plain lists and floats). An ε schedule is
a callable ``epoch -> eps`` that the trainer applies to the objective's attack each epoch.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from .objectives import StepOutput
    from .training import RobustTrainer

__all__ = [
    "Callback",
    "EpsilonSchedule",
    "History",
    "LinearWarmup",
    "PlainProgress",
    "TqdmProgress",
    "linear_warmup",
    "make_progress",
]

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
)


class Callback:
    """Base class of training callbacks; every hook is a no-op.

    ``trainer`` is the :class:`~advtrade.training.RobustTrainer`; during ``fit`` it exposes
    ``max_epochs`` (the epoch count ``fit`` runs to) and ``train_loader``. ``epoch`` counts from 0.
    """

    def on_fit_start(self, trainer: RobustTrainer) -> None:
        """Before the first epoch of a ``fit`` call."""

    def on_epoch_start(self, trainer: RobustTrainer, epoch: int) -> None:
        """Before the first batch of an epoch."""

    def on_batch_end(self, trainer: RobustTrainer, batch_index: int, output: StepOutput) -> None:
        """After each training step (``output`` holds the detached loss and logits)."""

    def on_epoch_end(self, trainer: RobustTrainer, record: Record) -> None:
        """After an epoch, its evaluation and the scheduler step; ``record`` is in the history
        and ``trainer.epoch`` already counts this epoch (a checkpoint here resumes after it)."""

    def on_fit_end(self, trainer: RobustTrainer) -> None:
        """After the last epoch of a ``fit`` call (not called when training raised)."""


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


def format_record(record: Mapping[str, Any], max_epochs: int | None = None) -> str:
    """One line for an epoch record, e.g. ``epoch 3/10  loss 0.412  eval_robust_acc 0.55``."""
    epoch = record.get("epoch")
    head = f"epoch {epoch}" + (f"/{max_epochs}" if max_epochs is not None else "")
    parts = [f"{k} {_fmt(record[k])}" for k in COLUMNS[1:-1] if record.get(k) is not None]
    if record.get("time") is not None:
        parts.append(f"{float(record['time']):.1f}s")
    return "  ".join([head, *parts])


class PlainProgress(Callback):
    """Prints one line per epoch (to ``file``, default standard error)."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file

    def on_epoch_end(self, trainer: RobustTrainer, record: Record) -> None:
        out = self.file if self.file is not None else sys.stderr
        print(format_record(record, getattr(trainer, "max_epochs", None)), file=out, flush=True)


class TqdmProgress(Callback):
    """A tqdm bar per epoch over its batches, ending with the epoch's metrics.

    Needs the optional dependency tqdm (``pip install 'advtrade[progress]'``). The running loss
    is shown every ``refresh`` batches, so the bar costs no per-batch device synchronisation.
    """

    def __init__(self, refresh: int = 20, file: TextIO | None = None) -> None:
        if importlib.util.find_spec("tqdm") is None:
            raise ImportError(
                "progress='tqdm' needs the optional dependency tqdm; install it with "
                "pip install 'advtrade[progress]', or use progress='plain'"
            )
        self.refresh = max(1, int(refresh))
        self.file = file
        self._bar: Any = None

    def on_epoch_start(self, trainer: RobustTrainer, epoch: int) -> None:
        from tqdm.auto import tqdm

        loader = getattr(trainer, "train_loader", None)
        try:
            total = len(loader)  # type: ignore[arg-type]
        except TypeError:
            total = None
        max_epochs = getattr(trainer, "max_epochs", None)
        desc = f"epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs else "")
        self._bar = tqdm(total=total, desc=desc, leave=True, file=self.file, dynamic_ncols=True)

    def on_batch_end(self, trainer: RobustTrainer, batch_index: int, output: StepOutput) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if batch_index % self.refresh == 0:
            self._bar.set_postfix(loss=f"{float(output.loss):.4g}", refresh=False)

    def on_epoch_end(self, trainer: RobustTrainer, record: Record) -> None:
        if self._bar is None:
            return
        shown = {k: _fmt(record[k]) for k in COLUMNS[1:-1] if record.get(k) is not None}
        self._bar.set_postfix(shown, refresh=True)
        self._bar.close()
        self._bar = None

    def on_fit_end(self, trainer: RobustTrainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_progress(progress: str | None) -> Callback | None:
    """The progress callback for ``progress``: ``"auto"`` (a tqdm bar when tqdm is installed and
    the output is interactive — a terminal or a notebook — else a plain line per epoch, which
    suits log files), ``"tqdm"``, ``"plain"`` or ``None`` (silent)."""
    if progress is None:
        return None
    if progress == "auto":
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        has_tqdm = importlib.util.find_spec("tqdm") is not None
        return TqdmProgress() if has_tqdm and interactive else PlainProgress()
    if progress == "tqdm":
        return TqdmProgress()
    if progress == "plain":
        return PlainProgress()
    raise ValueError(f"progress must be 'auto', 'tqdm', 'plain' or None, got {progress!r}")


# --------------------------------------------------------------------------- ε schedules


class EpsilonSchedule(Protocol):
    """The attack budget of each epoch: ``schedule(epoch) -> eps`` (epochs count from 0)."""

    def __call__(self, epoch: int, /) -> float: ...


@dataclass(frozen=True)
class LinearWarmup:
    """ε grows linearly over the first ``epochs`` epochs, then stays at ``eps``.

    Epoch ``e`` (from 0) trains at ``start + (eps - start)·min(1, (e + 1) / epochs)``, so the
    first epoch already trains at a non-zero budget and epoch ``epochs - 1`` at the full one.
    Warm-up helps large budgets (ℓ∞ 0.3 on MNIST) and cheap single-step methods converge.
    """

    eps: float
    epochs: int
    start: float = 0.0

    def __post_init__(self) -> None:
        for name in ("eps", "start"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        e = self.epochs
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {e!r}")

    def __call__(self, epoch: int, /) -> float:
        frac = min(1.0, (epoch + 1) / self.epochs)
        return float(self.start + (self.eps - self.start) * frac)


def linear_warmup(eps: float, epochs: int, start: float = 0.0) -> LinearWarmup:
    """A :class:`LinearWarmup` schedule: ε ramps from ``start`` to ``eps`` over ``epochs``."""
    return LinearWarmup(eps, epochs, start)
