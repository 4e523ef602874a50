"""Loggers: the training history as a CSV file (:class:`CSVLogger`) or as TensorBoard scalars
(:class:`TensorBoardLogger`), written as the epochs end.

Both are callbacks: pass them in ``RobustTrainer(..., callbacks=[...])``. Data-parallel, only the
main process (rank 0) writes; the other ranks' loggers do nothing. Every epoch is on disk when
its ``on_epoch_end`` returns (the CSV row is flushed and synced, the event file flushed), so a
run that crashes later loses none of the epochs already logged — ``on_fit_end`` is not called
when training raises, and neither logger needs it.
"""

from __future__ import annotations

import csv
import io
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from .. import distributed
from .._validation import check_bool, check_output_dir
from ._callbacks import Callback, TrainerView
from ._checkpoint import atomic_write, remove_orphans
from ._history import COLUMNS, Record

__all__ = ["CSV_COLUMNS", "CSVLogger", "TensorBoardLogger", "tensorboard_available"]

#: The columns every advtrade CSV log starts with, in this order; keys that the records carry
#: besides these (from other callbacks) follow them.
CSV_COLUMNS: tuple[str, ...] = COLUMNS[: COLUMNS.index("time") + 1]

_HEADER_LIMIT = 1 << 16  # an advtrade header is far shorter; a longer first line is foreign


class CSVLogger(Callback):
    """Writes one CSV row per epoch to ``path``: the record's :attr:`COLUMNS` (an empty cell
    where a value is ``None``), then any extra keys of the records, e.g. from other callbacks.

    Columns keep their order once written; a record that brings a new key widens the header, and
    the file is then rewritten with the wider header through a temporary file and ``os.replace``
    (readers see the old file or the new one, never a mix); earlier rows get an empty cell. Each
    row is appended, flushed and synced as its epoch ends. Floats are written with ``repr``, so
    they read back as the same numbers: ``float(cell) == record[key]``.

    The file is never overwritten unless advtrade wrote it. When a fit starts (on the main
    process, before any training step), ``path`` must be missing, empty, or an advtrade log: a
    UTF-8 CSV file whose header starts with :attr:`COLUMNS` and whose rows all have the
    header's width and a positive integer epoch. Anything else raises ``FileExistsError`` and is
    left as it was. Then:

    * a new run (``trainer.epoch == 0``) refuses a log that holds rows (``FileExistsError``)
      unless ``append=True``, which adds this run's rows after them;
    * a continued or resumed run (``trainer.epoch == k > 0``, e.g. after
      :meth:`RobustTrainer.resume <advtrade.RobustTrainer.resume>`) keeps the log's rows up to
      the last one with epoch ≤ k and drops the rows after it — epochs of an interrupted run
      after its last checkpoint, which this run trains again — so each epoch appears once. That
      last kept row must be this run's: its epoch, loss, accuracies, ε, learning rate and time
      must equal the trainer's history record of that epoch, else ``FileExistsError`` (the log
      belongs to another run; nothing is changed). Epochs of the history that the log lacks
      after it (all of them for a log started at the resume) are written from the history.
      ``append`` plays no part here.

    ``path`` is checked when the logger is built: it must not be a folder (``ValueError``), lie
    under a file (``ValueError``) or be a dangling symbolic link (``ValueError``). A symbolic
    link to a file is followed: its target is written.
    """

    #: The columns every advtrade CSV log starts with, in this order.
    COLUMNS: ClassVar[tuple[str, ...]] = CSV_COLUMNS

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path (str or os.PathLike), got {type(path).__name__}")
        self.path = Path(path)
        self.append = check_bool("append", append)
        if self.path.is_symlink() and not self.path.exists():
            raise ValueError(f"path={str(self.path)!r} is a symbolic link to a missing target")
        if self.path.is_dir():
            raise ValueError(f"path={str(self.path)!r} is an existing folder, not a file")
        if str(self.path.name) in ("", ".", ".."):
            raise ValueError(f"path={str(path)!r} does not name a file")
        for parent in self.path.parents:  # the nearest existing one must be a folder
            if os.path.lexists(parent):
                if not parent.is_dir():
                    raise ValueError(
                        f"path={str(self.path)!r} lies under {str(parent)!r}, which is an "
                        f"existing file, not a folder"
                    )
                break
        self._columns: list[str] = []
        self._rows: list[dict[str, str]] = []
        self._active = False

    # ---------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: TrainerView) -> None:
        self._active = distributed.is_main_process()
        if not self._active:
            return
        target = self._target()
        columns, rows = _read_log(target)
        done = int(trainer.epoch)
        history = list(trainer.history)
        rewrite = not target.exists() or target.stat().st_size == 0
        if done == 0:
            if rows and not self.append:
                raise FileExistsError(
                    f"{target} already holds {len(rows)} rows of an earlier run; pass "
                    f"CSVLogger(..., append=True) to add this run's rows after them, or choose "
                    f"another path"
                )
        else:
            keep = _last_row_at_or_before(rows, done)
            if rows and keep < 0:
                raise FileExistsError(
                    f"{target} holds rows of another run (none of epoch <= {done}, the epochs "
                    f"this trainer has done); choose another path"
                )
            last = 0
            if keep >= 0:
                last = int(rows[keep]["epoch"])
                own = _cells(history[last - 1], CSV_COLUMNS) if last <= len(history) else None
                found = {k: rows[keep][k] for k in CSV_COLUMNS}
                if own != found:
                    raise FileExistsError(
                        f"{target} holds rows of another run: its row of epoch {last} differs "
                        f"from this trainer's history ({found} != {own}); choose another path"
                    )
            rewrite = rewrite or keep < len(rows) - 1
            rows = rows[: keep + 1]
            missing = history[last:done]
            columns = _widen(columns, (k for r in missing for k in r))
            rows = [{k: r.get(k, "") for k in columns} for r in rows]
            rows += [_cells(r, columns) for r in missing]
            rewrite = rewrite or bool(missing)
        self._columns, self._rows = _widen(columns, ()), rows
        remove_orphans(target)
        if rewrite:
            self._rewrite(target)

    def on_epoch_end(self, trainer: TrainerView, record: Record) -> None:
        if not self._active:
            return
        target = self._target()
        wider = _widen(self._columns, record)
        row = _cells(record, wider)
        if wider != self._columns:  # a new key: every row gets the wider header
            self._columns = wider
            self._rows = [{k: r.get(k, "") for k in wider} for r in self._rows]
            self._rows.append(row)
            self._rewrite(target)
            return
        self._rows.append(row)
        with open(target, "a", encoding="utf-8", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerow([row[k] for k in self._columns])
            fh.flush()
            os.fsync(fh.fileno())

    # ---------------------------------------------------------------------------- files
    def _target(self) -> Path:
        return Path(os.path.realpath(self.path)) if self.path.is_symlink() else self.path

    def _rewrite(self, target: Path) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self._columns)
        writer.writerows([r[k] for k in self._columns] for r in self._rows)
        text = buffer.getvalue().encode("utf-8")
        atomic_write(target, lambda fh: fh.write(text))


def _cells(record: Mapping[str, Any], columns: Iterable[str]) -> dict[str, str]:
    return {k: _cell(record.get(k)) for k in columns}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):  # repr round-trips (np.float64 too, once a plain float)
        return repr(float(value))
    return str(value)


def _widen(columns: Sequence[str], keys: Iterable[str]) -> list[str]:
    """``columns`` (the base columns when empty) followed by the new ``keys`` in their order."""
    out = list(columns) or list(CSV_COLUMNS)
    for key in keys:
        if key not in out:
            out.append(str(key))
    return out


def _last_row_at_or_before(rows: Sequence[Mapping[str, str]], epoch: int) -> int:
    for index in range(len(rows) - 1, -1, -1):
        if int(rows[index]["epoch"]) <= epoch:
            return index
    return -1


def _read_log(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of the advtrade log at ``path`` (none for a missing or empty file);
    raises ``FileExistsError`` for any other file, which must not be overwritten."""
    if not os.path.lexists(path):
        return [], []
    if not path.is_file():
        raise FileExistsError(f"{path} exists and is not a regular file; choose another path")
    if path.stat().st_size == 0:
        return [], []
    refuse = (
        f"{path} exists and is not an advtrade CSV log (its header must start with "
        f"{','.join(CSV_COLUMNS)}); refusing to overwrite it: choose another path or move the file"
    )
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            first = fh.readline(_HEADER_LIMIT)
            header = next(csv.reader([first]), [])
            if tuple(header[: len(CSV_COLUMNS)]) != CSV_COLUMNS or not first.endswith("\n"):
                raise FileExistsError(refuse)
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FileExistsError(refuse) from exc
    if len(set(header)) != len(header) or "" in header:
        raise FileExistsError(refuse + " (its header repeats a column or has an empty one)")
    for number, row in enumerate(rows, start=2):
        epoch = row[0] if row else ""
        if len(row) != len(header) or not epoch.isdigit() or int(epoch) < 1:
            raise FileExistsError(
                f"{path} looks like an advtrade CSV log but line {number} is not a row of it "
                f"({len(row)} cells for {len(header)} columns, epoch {epoch!r}); refusing to "
                f"overwrite it: repair it, move it or choose another path"
            )
    return header, [dict(zip(header, row)) for row in rows]


# ------------------------------------------------------------------------------ TensorBoard
#: TensorBoard tags of the history's columns; other numeric keys are logged under their name.
_TAGS: dict[str, str] = {
    "loss": "loss",
    "train_clean_acc": "clean_acc/train",
    "train_robust_acc": "robust_acc/train",
    "eval_clean_acc": "clean_acc/eval",
    "eval_robust_acc": "robust_acc/eval",
    "eps": "eps",
    "lr": "lr",
    "time": "time",
}


def tensorboard_available() -> bool:
    """Whether TensorBoard logging works here (the optional extra ``advtrade[log]``)."""
    try:
        _summary_writer()
    except ImportError:
        return False
    return True


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            "TensorBoardLogger needs the optional dependency tensorboard; install it with "
            "pip install 'advtrade[log]' (or use CSVLogger, which needs nothing)"
        ) from exc
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes each epoch's metrics as TensorBoard scalars in ``log_dir``, at step = the epoch
    number (1, 2, ...): ``loss``, ``clean_acc/train``, ``robust_acc/train``, ``clean_acc/eval``,
    ``robust_acc/eval``, ``eps``, ``lr``, ``time`` (a metric that is ``None`` is skipped), and any
    other numeric key of the records under its own name.

    Needs the optional dependency tensorboard (``pip install 'advtrade[log]'``); without it the
    constructor raises ``ImportError``. ``log_dir`` must be, or be able to become, a folder. Each
    ``fit`` opens a writer (a new event file) and closes it at the end; events are flushed after
    every epoch, so a fit that raises loses nothing logged. A resumed run (``trainer.epoch ==
    k > 0`` at fit start) marks its event file to purge steps > k written before — epochs of an
    interrupted run after its last checkpoint — so TensorBoard shows each epoch once.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self._writer_class = _summary_writer()
        self.log_dir = check_output_dir("log_dir", log_dir)
        self._writer: Any = None

    def on_fit_start(self, trainer: TrainerView) -> None:
        self.close()  # a writer left open by a fit that raised
        if not distributed.is_main_process():
            return
        done = int(trainer.epoch)
        self._writer = self._writer_class(
            log_dir=str(self.log_dir), purge_step=done + 1 if done > 0 else None
        )

    def on_epoch_end(self, trainer: TrainerView, record: Record) -> None:
        writer = self._writer
        if writer is None:
            return
        step = int(record["epoch"])
        for key, value in record.items():
            if key == "epoch":
                continue
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue  # None (not measured) and anything that is not a number
            writer.add_scalar(_TAGS.get(key, key), float(value), step)
        writer.flush()

    def on_fit_end(self, trainer: TrainerView) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the event file (``fit`` does it at its end)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
