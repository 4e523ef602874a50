"""Behaviour around the training loop: the callback base class, what callbacks see of the
trainer, and progress display.

Callbacks are classes with no-op ``on_*`` methods (as in skorch and Lightning): subclass
:class:`Callback` and override what you need; the trainer calls every hook in order. A callback
may stop training after the current epoch by setting ``trainer.stop_training = True``. Callbacks
see the trainer through the small :class:`TrainerView` protocol, so this module never imports the
trainer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any, Protocol, TextIO

import torch
from torch import nn

from .._optional import tqdm_available
from .._validation import check_choice
from ._history import History, Record, format_record, shown_metrics
from ._objectives import Objective, StepOutput

__all__ = [
    "Callback",
    "PlainProgress",
    "TqdmProgress",
    "TrainerView",
    "make_progress",
]


class TrainerView(Protocol):
    """What a callback may use of :class:`~advtrade.RobustTrainer` (and nothing else)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective
    device: torch.device
    data_parallel: bool
    history: History
    epoch: int
    max_epochs: int | None
    train_loader: Iterable[Any] | None
    stop_training: bool

    def save(self, path: str | os.PathLike[str]) -> Path: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Callback:
    """Base class of training callbacks; every hook is a no-op.

    ``trainer`` is the :class:`~advtrade.RobustTrainer`, seen through :class:`TrainerView`;
    during ``fit`` it exposes ``max_epochs`` (the epoch count ``fit`` runs to) and
    ``train_loader``. ``epoch`` counts from 0.
    """

    def on_fit_start(self, trainer: TrainerView) -> None:
        """Before the first epoch of a ``fit`` call."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        """Before the first batch of an epoch."""

    def on_batch_end(self, trainer: TrainerView, batch_index: int, output: StepOutput) -> None:
        """After each training step (``output`` holds the detached loss and logits)."""

    def on_epoch_end(self, trainer: TrainerView, record: Record) -> None:
        """After an epoch, its evaluation and the scheduler step; ``record`` is in the history
        and ``trainer.epoch`` already counts this epoch (a checkpoint here resumes after it)."""

    def on_fit_end(self, trainer: TrainerView) -> None:
        """After the last epoch of a ``fit`` call (not called when training raised)."""


class PlainProgress(Callback):
    """Prints one line per epoch (to ``file``, default standard error)."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file

    def on_epoch_end(self, trainer: TrainerView, record: Record) -> None:
        out = self.file if self.file is not None else sys.stderr
        print(format_record(record, trainer.max_epochs), file=out, flush=True)


class TqdmProgress(Callback):
    """A tqdm bar per epoch over its batches, ending with the epoch's metrics.

    Needs the optional dependency tqdm (``pip install 'advtrade[progress]'``). The running loss
    is shown every ``refresh`` batches, so the bar costs no per-batch device synchronisation.
    """

    def __init__(self, refresh: int = 20, file: TextIO | None = None) -> None:
        if not tqdm_available():
            raise ImportError(
                "progress='tqdm' needs the optional dependency tqdm; install it with "
                "pip install 'advtrade[progress]', or use progress='plain'"
            )
        self.refresh = max(1, int(refresh))
        self.file = file
        self._bar: Any = None

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        from tqdm.auto import tqdm

        loader = trainer.train_loader
        total = len(loader) if isinstance(loader, Sized) else None
        max_epochs = trainer.max_epochs
        desc = f"epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs else "")
        self._bar = tqdm(total=total, desc=desc, leave=True, file=self.file, dynamic_ncols=True)

    def on_batch_end(self, trainer: TrainerView, batch_index: int, output: StepOutput) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if batch_index % self.refresh == 0:
            self._bar.set_postfix(loss=f"{float(output.loss):.4g}", refresh=False)

    def on_epoch_end(self, trainer: TrainerView, record: Record) -> None:
        if self._bar is None:
            return
        shown = shown_metrics(record)
        self._bar.set_postfix(shown, refresh=True)
        self._bar.close()
        self._bar = None

    def on_fit_end(self, trainer: TrainerView) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_progress(progress: str | None) -> Callback | None:
    """The progress callback for ``progress``: ``"auto"`` (a tqdm bar when tqdm is installed and
    the output is interactive — a terminal or a notebook — else a plain line per epoch, which
    suits log files), ``"tqdm"``, ``"plain"`` or ``None`` (silent)."""
    if progress is None:
        return None
    check_choice("progress", progress, ("auto", "tqdm", "plain"))
    if progress == "auto":
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        return TqdmProgress() if tqdm_available() and interactive else PlainProgress()
    return TqdmProgress() if progress == "tqdm" else PlainProgress()


