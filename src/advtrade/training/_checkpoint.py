"""Checkpoint files: written atomically, read with ``weights_only=True``, and the ``Checkpoint``
callback.

A file holds :meth:`RobustTrainer.state_dict() <advtrade.RobustTrainer.state_dict>` — tensors
and plain Python values only. It is written to a temporary file in the target folder (named
``.<file>.advtrade-XXXXXXXX.tmp``) and moved into place with ``os.replace``, so a crash during a
save leaves the previous checkpoint intact; temporary files that a killed process left behind are
removed by the next save to the same path (only files with advtrade's temporary-name pattern).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .._validation import check_int, check_output_dir
from ._callbacks import Callback, TrainerView
from ._history import Record

__all__ = [
    "FORMAT",
    "REQUIRED",
    "VERSION",
    "Checkpoint",
    "atomic_save",
    "atomic_write",
    "read_checkpoint",
    "remove_orphans",
]

FORMAT = "advtrade.checkpoint"
VERSION = 2
READABLE = (1, 2)
REQUIRED = ("epoch", "model", "optimizer", "history", "rng")
"""Keys every checkpoint holds besides the format marker and version."""

_TMP_TAG = "advtrade-"


def _orphan_pattern(name: str) -> re.Pattern[str]:
    # advtrade's own temporary names: 0.2's tagged ones and 0.1's untagged mkstemp ones
    return re.compile(rf"^\.{re.escape(name)}\.(?:{_TMP_TAG})?[a-z0-9_]{{8}}\.tmp$")


def remove_orphans(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files an interrupted save to ``path`` left in its folder; returns
    what was removed. Only names of advtrade's temporary-file pattern for this file are touched."""
    path = Path(path)
    pattern = _orphan_pattern(path.name)
    removed = []
    with suppress(OSError):
        for entry in path.parent.iterdir():
            if pattern.match(entry.name) and entry.is_file() and not entry.is_symlink():
                with suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Run ``write`` on a temporary file in ``path``'s folder, sync it, and ``os.replace`` it
    onto ``path``: readers see the old file or the complete new one, never a partial write. The
    file keeps its permissions (a new one gets those ``open`` would give it); orphaned temporary
    files of earlier, killed writes to ``path`` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    while True:
        tmp = path.parent / f".{path.name}.{_TMP_TAG}{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with suppress(OSError):
            os.chmod(fd, path.stat().st_mode & 0o7777)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :meth:`RobustTrainer.save <advtrade.RobustTrainer.save>`
    (``weights_only=True``, on CPU) and check that it is complete."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable advtrade checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an advtrade checkpoint (no '{FORMAT}' marker)")
    if state.get("version") not in READABLE:
        raise ValueError(
            f"{path} has checkpoint format version {state.get('version')!r}; this advtrade "
            f"reads versions {', '.join(map(str, READABLE))}"
        )
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ValueError(
            f"{path} is an incomplete advtrade checkpoint: it lacks {missing}; it cannot resume "
            f"a run (was it written by hand or truncated?)"
        )
    return state


class Checkpoint(Callback):
    """Saves the trainer to ``dirname/filename`` every ``every`` epochs and after the last one.

    Each save replaces the previous file atomically, so ``dirname/filename`` is always the last
    complete checkpoint; resume with ``RobustTrainer.resume(path, model, optimizer, objective)``.
    ``dirname`` is checked when the callback is built: it must be, or be able to become, a
    folder.
    """

    def __init__(
        self, dirname: str | os.PathLike[str], every: int = 1, filename: str = "last.pt"
    ) -> None:
        self.every = check_int("checkpoint_every", every, minimum=1)
        if not isinstance(filename, str) or not filename or os.sep in filename or filename in (
            ".",
            "..",
        ):
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.path = check_output_dir("checkpoint_dir", dirname) / filename
        if self.path.is_dir():
            raise ValueError(f"checkpoint path {self.path} is a folder, not a file")

    def on_fit_start(self, trainer: TrainerView) -> None:
        remove_orphans(self.path)

    def on_epoch_end(self, trainer: TrainerView, record: Record) -> None:
        last = trainer.max_epochs is not None and trainer.epoch >= trainer.max_epochs
        if trainer.epoch % self.every == 0 or last or trainer.stop_training:
            trainer.save(self.path)
