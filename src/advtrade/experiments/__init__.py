"""The paper's experiments from one command: ``advtrade`` (or ``python -m advtrade``).

:class:`Settings` says what a run computes, :func:`run` computes it, :func:`finish` writes the
report folder (Markdown, JSON, CSV, PNG) and :func:`main` is the command line. See
``advtrade --help`` and the guide page "Reproducing the paper".
"""

from __future__ import annotations

from ._cli import build_parser, main
from ._folder import FORMAT, ReportFolder, is_report
from ._runner import finish, run
from ._settings import EXPERIMENTS, RunError, Settings, default_settings

__all__ = [
    "EXPERIMENTS",
    "FORMAT",
    "ReportFolder",
    "RunError",
    "Settings",
    "build_parser",
    "default_settings",
    "finish",
    "is_report",
    "main",
    "run",
]
