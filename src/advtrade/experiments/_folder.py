"""The report folder: built in a hidden sibling and moved into place only when complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ._settings import RunError

__all__ = ["FORMAT", "ReportFolder", "is_report"]

FORMAT = "advtrade-report/1"
"""Marks a folder's ``results.json`` as an advtrade report (the only folders a run replaces)."""


def is_report(path: Path) -> bool:
    """Whether ``path`` is a folder holding an advtrade report (which a new run may replace)."""
    try:
        data = json.loads((path / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


class ReportFolder:
    """Builds a report in a hidden sibling of ``out`` and moves it into place on success.

    Creating it checks, before any work, that ``out`` can be written: its parent must be (or
    become) a folder, and ``out`` must not exist unless it is a folder that is empty or holds
    an earlier advtrade report (which :meth:`publish` replaces). :meth:`discard` removes the
    partial folder after a failure.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        if self.out.name in ("", ".", ".."):
            self.out = self.out.resolve()
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"cannot write the report to {self.out}: it exists and is not a folder")
        if self.out.is_dir() and any(self.out.iterdir()) and not is_report(self.out):
            raise RunError(
                f"cannot write the report to {self.out}: the folder is not empty and holds no "
                f"advtrade report (advtrade only replaces its own reports); choose another --out"
            )
        parent = self.out.parent
        blocker = _first_existing(parent)
        if not blocker.is_dir():
            raise RunError(f"cannot write the report to {self.out}: {blocker} is not a folder")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.path, 0o777 & ~umask)  # mkdtemp makes it private; a report is not
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise RunError(f"cannot write the report to {self.out}: {reason}") from None

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def publish(self) -> Path:
        """Move the finished report to ``out``; an earlier report there is replaced (and put
        back if the move fails)."""
        if not self.out.exists():
            os.replace(self.path, self.out)
            return self.out
        old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old.", dir=self.out.parent))
        os.replace(self.out, old / "report")
        try:
            os.replace(self.path, self.out)
        except OSError:
            os.replace(old / "report", self.out)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


