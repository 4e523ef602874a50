"""The report folder: built in a hidden sibling, published only when complete, and never at the
cost of a file advtrade did not write.

A report is assembled in ``.<out>.advtrade-XXXXXXXX/`` next to ``out`` and published at the end:

* ``out`` absent → the build folder is renamed to ``out`` (atomic);
* ``out`` empty, or holding an earlier advtrade report → the new files are moved in one by one:
  the old ``report.md`` (the completion marker) goes first, the files the old report listed in
  its ``manifest.json`` and the new report does not are removed, the new files replace the old
  ones, and the new ``report.md`` comes last. Files the user added are never touched;
* ``out`` appeared or changed during the run and holds files advtrade did not write (and no
  advtrade report) → the report is published next to it, as ``out-1`` (or the first free
  ``out-N``), and the command says so.

Build folders hold a ``.pid`` file; a later run removes build folders whose process is gone
(left by ``kill -9``), and only those.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from ._settings import RunError

__all__ = ["FORMAT", "MANIFEST", "ReportFolder", "is_report"]

FORMAT = "advtrade-report/1"
"""Marks a folder's ``results.json`` as an advtrade report (the only folders a run updates)."""
MANIFEST = "manifest.json"
"""The list of files a report consists of (what a later run may replace or remove)."""
_TAG = ".advtrade-"
_V01 = re.compile(r"^(report\.md|results\.json|run\.json|[\w-]+\.csv|figures/[\w-]+\.png)$")


def is_report(path: Path) -> bool:
    """Whether ``path`` is a folder holding an advtrade report (which a new run may update)."""
    try:
        data = json.loads((path / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _files(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _report_files(folder: Path) -> set[str]:
    """The files of the advtrade report in ``folder``: its manifest, or for a 0.1 report (which
    had none) the files with the names 0.1 wrote."""
    try:
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        return {str(f) for f in listed}
    except (OSError, ValueError, KeyError, TypeError):
        return {f for f in _files(folder) if _V01.match(f)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_builds(parent: Path, name: str) -> None:
    """Remove build folders of earlier runs for ``name`` whose process no longer exists."""
    with suppress(OSError):
        for entry in parent.iterdir():
            if not entry.name.startswith(f".{name}{_TAG}") or not entry.is_dir():
                continue
            try:
                pid = int((entry / ".pid").read_text())
            except (OSError, ValueError):
                continue  # not a build folder of ours (or not yet): leave it
            if not _alive(pid):
                shutil.rmtree(entry, ignore_errors=True)


class ReportFolder:
    """Builds a report in a hidden sibling of ``out`` and publishes it on success.

    Creating it checks, before any work, that ``out`` can be written: its parent must be (or
    become) a folder, ``out`` must not be a file or a dangling symbolic link, and ``out`` must
    not hold files unless it holds an earlier advtrade report. :meth:`discard` removes the
    build folder after a failure.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        if self.out.name in ("", ".", ".."):
            self.out = self.out.resolve()
        if self.out.is_symlink() and not self.out.exists():
            raise RunError(f"cannot write the report to {self.out}: it is a dangling symbolic link")
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"cannot write the report to {self.out}: it exists and is not a folder")
        if self.out.is_dir() and any(self.out.iterdir()) and not is_report(self.out):
            raise RunError(
                f"cannot write the report to {self.out}: the folder is not empty and holds no "
                f"advtrade report (advtrade only updates its own reports); choose another --out"
            )
        parent = self.out.parent
        for candidate in (parent, *parent.parents):
            if os.path.lexists(candidate):
                if not candidate.is_dir():
                    raise RunError(
                        f"cannot write the report to {self.out}: {candidate} is not a folder"
                    )
                break
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_builds(parent, self.out.name)
            prefix = f".{self.out.name}{_TAG}"
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            (self.path / ".pid").write_text(str(os.getpid()))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.path, 0o777 & ~umask)  # mkdtemp makes it private; a report is not
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise RunError(f"cannot write the report to {self.out}: {reason}") from None
        self.published: Path | None = None

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def _target(self) -> Path:
        """Where to publish: ``out`` unless it holds files advtrade did not write (and no
        advtrade report), then the first free ``out-N``."""
        out = self.out
        if not os.path.lexists(out):
            return out
        if out.is_dir() and not out.is_symlink() and (is_report(out) or not any(out.iterdir())):
            return out
        n = 1
        while os.path.lexists(out.with_name(f"{out.name}-{n}")):
            n += 1
        return out.with_name(f"{out.name}-{n}")

    def publish(self) -> Path:
        """Publish the finished report (see the module docstring); returns where it went."""
        (self.path / ".pid").unlink()
        new = _files(self.path)
        self.write_json(MANIFEST, {"files": sorted({*new, MANIFEST})})
        new = _files(self.path)
        target = self._target()
        if not os.path.lexists(target):
            os.rename(self.path, target)
            self.published = target
            return target
        old = _report_files(target) if is_report(target) else set()
        with suppress(FileNotFoundError):
            if "report.md" in old:
                (target / "report.md").unlink()  # the old report is incomplete from here on
        for name in sorted(old - set(new)):
            with suppress(FileNotFoundError):
                (target / name).unlink()
        for name in sorted(new, key=lambda f: f == "report.md"):  # report.md last
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path / name, dest)
        self.discard()
        self.published = target
        return target

    def discard(self) -> None:
        """Remove the build folder (nothing else)."""
        shutil.rmtree(self.path, ignore_errors=True)
