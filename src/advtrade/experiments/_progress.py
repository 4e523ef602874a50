"""Progress over a whole run: a bar (interactive terminals) or a line per model (logs)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .._optional import tqdm_available
from ..training import Callback

__all__ = ["Progress"]


class Progress(Callback):
    """Progress over every model of a run: a tqdm bar (interactive terminals) or one line per
    model (logs); ``mode`` is "auto", "tqdm", "plain" or None (silent). Writes to stderr. As a
    training callback it advances by each batch's cost (``per_batch``, set per model)."""

    def __init__(self, mode: str | None = "auto", file: TextIO | None = None) -> None:
        self.file = file
        self._bar: Any = None
        self._count = self._total_models = 0
        self.per_batch = 1
        if mode == "auto":
            interactive = (file or sys.stderr).isatty()
            mode = "tqdm" if interactive and tqdm_available() else "plain"
        self.mode = mode
        if mode == "tqdm" and not tqdm_available():
            self.mode = "plain"
            self.note("tqdm is not installed (pip install 'advtrade[progress]'): plain progress")

    def start(self, total_work: int, models: int) -> None:
        """Begin the training phase: ``total_work`` units over ``models`` models."""
        self._total_models, self._count = models, 0
        if self.mode == "tqdm":
            from tqdm.auto import tqdm

            fmt = "{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"
            self._bar = tqdm(total=total_work, bar_format=fmt, file=self.file, dynamic_ncols=True)

    def begin(self, label: str) -> None:
        """A model starts (training, or loading from a resumed run)."""
        self._count += 1
        if self._bar is not None:
            self._bar.set_description_str(f"model {self._count}/{self._total_models}: {label}")

    def advance(self, work: int) -> None:
        if self._bar is not None:
            self._bar.update(work)

    def note(self, text: str) -> None:
        """A line of text (a finished model, a finished experiment)."""
        if self.mode is None:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.file)
        else:
            print(text, file=self.file or sys.stderr, flush=True)

    def model_done(self, label: str, detail: str) -> None:
        """A model is trained and evaluated; ``detail`` says how it went."""
        self.note(f"[{self._count}/{self._total_models}] {label}: {detail}")

    def on_batch_end(self, trainer: Any, batch_index: int, output: Any) -> None:
        self.advance(self.per_batch)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
