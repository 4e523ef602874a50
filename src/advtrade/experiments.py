"""The paper's experiments as one run: settings, the run itself and its report folder.

:func:`run` executes the selected experiments (see :data:`EXPERIMENTS`) and returns their numbers
as one JSON-ready dict; :class:`ReportFolder` builds the report in a hidden sibling folder and
renames it into place only when every file is written, so an interrupted or failed run never
leaves a half-written report behind. The ``advtrade`` command (:mod:`advtrade.cli`) wires them
together; the experiments themselves live in ``experiments_*`` modules.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .datasets import Split, load_dataset
from .experiments_models import Progress
from .experiments_perception import run_perception
from .experiments_report import write_report
from .experiments_synthetic import run_synthetic
from .experiments_tradeoff import plan_models, run_models, summarise

__all__ = [
    "EXPERIMENTS",
    "FORMAT",
    "ReportFolder",
    "RunError",
    "Settings",
    "default_settings",
    "run",
]

EXPERIMENTS: tuple[str, ...] = ("synthetic", "tradeoff", "datasize", "perception")
FORMAT = "advtrade-report/1"
"""Marks a folder's ``results.json`` as an advtrade report (the only folders a run replaces)."""


class RunError(Exception):
    """A problem with the request found before or while running (bad sizes, an unusable output
    folder: exit status 2; a missing optional dependency: 1), reported in one line."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Per (dataset, quick): defaults that keep the full digits run under ~10 minutes on 2 CPU
# cores and the quick one under a minute. ε = 0 is always trained (the standard baseline).
_DEFAULTS: dict[tuple[str, bool], dict[str, Any]] = {
    ("digits", False): {
        "linf_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
        "l2_eps": (0.0, 0.25, 0.5, 1.0, 1.5),
        "linf_eval_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
        "l2_eval_eps": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
        "train_sizes": (50, 100, 200, 400, 800),
        "epochs": 20,
        "warmup": 5,
        "train_steps": 5,
        "eval_steps": 20,
    },
    ("digits", True): {
        "linf_eps": (0.0, 0.2, 0.3),
        "l2_eps": (0.0, 1.0, 1.5),
        "linf_eval_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eval_eps": (0.0, 0.5, 1.0, 1.5),
        "train_sizes": (200,),
        "epochs": 8,
        "warmup": 2,
        "train_steps": 2,
        "eval_steps": 10,
    },
    ("mnist", False): {
        "linf_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eps": (0.0, 0.5, 1.0, 2.0),
        "linf_eval_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
        "l2_eval_eps": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
        "train_sizes": (100, 300, 1000),
        "epochs": 10,
        "warmup": 3,
        "train_steps": 5,
        "eval_steps": 20,
    },
    ("mnist", True): {
        "linf_eps": (0.0, 0.1, 0.2),
        "l2_eps": (0.0, 1.0, 2.0),
        "linf_eval_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eval_eps": (0.0, 1.0, 2.0, 3.0),
        "train_sizes": (300,),
        "epochs": 4,
        "warmup": 2,
        "train_steps": 2,
        "eval_steps": 10,
    },
}


def default_settings(data: str = "digits", quick: bool = False) -> dict[str, Any]:
    """The default values of the tunable settings for ``data`` ("digits" or "mnist")."""
    return dict(_DEFAULTS[(data, bool(quick))])


@dataclass(frozen=True)
class Settings:
    """Everything that determines a run's numbers (the same settings give the same numbers).

    Budgets are sorted and always include ε = 0; ``train_size`` None trains on the whole
    training split; ``train_sizes`` are the smaller sizes of the data-size study (the full size
    is always added).
    """

    experiments: tuple[str, ...] = EXPERIMENTS
    data: str = "digits"
    quick: bool = False
    seed: int = 0
    linf_eps: tuple[float, ...] = ()
    l2_eps: tuple[float, ...] = ()
    linf_eval_eps: tuple[float, ...] = ()
    l2_eval_eps: tuple[float, ...] = ()
    train_sizes: tuple[int, ...] = ()
    train_size: int | None = None
    epochs: int = 1
    warmup: int = 1
    train_steps: int = 5
    eval_steps: int = 20
    batch_size: int = 64
    lr: float = 3e-3

    @classmethod
    def build(cls, data: str = "digits", quick: bool = False, **overrides: Any) -> Settings:
        """Defaults for ``(data, quick)`` with ``overrides`` (None values are ignored)."""
        values = default_settings(data, quick)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("linf_eps", "l2_eps", "linf_eval_eps", "l2_eval_eps"):
            values[name] = tuple(sorted({0.0, *(float(e) for e in values[name])}))
        values["train_sizes"] = tuple(sorted({int(n) for n in values["train_sizes"]}))
        values["warmup"] = min(values["warmup"], values["epochs"])
        settings = cls(data=data, quick=bool(quick), **values)
        settings.check()
        return settings

    def check(self) -> None:
        unknown = sorted(set(self.experiments) - set(EXPERIMENTS))
        if unknown or not self.experiments:
            raise RunError(f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}")
        for name in ("linf_eps", "l2_eps", "linf_eval_eps", "l2_eval_eps"):
            values = getattr(self, name)
            if not all(math.isfinite(e) and e >= 0 for e in values):
                raise RunError(f"{name}: budgets must be finite numbers >= 0, got {list(values)}")
        for name in ("epochs", "warmup", "train_steps", "eval_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise RunError(f"{name} must be >= 1, got {getattr(self, name)}")

    def train_eps(self, norm: str) -> tuple[float, ...]:
        return self.linf_eps if norm == "linf" else self.l2_eps

    def eval_eps(self, norm: str) -> tuple[float, ...]:
        return self.linf_eval_eps if norm == "linf" else self.l2_eval_eps

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


def _load(settings: Settings) -> Split:
    """The dataset split, with sizes checked against what the dataset holds."""
    try:
        full = load_dataset(settings.data, seed=settings.seed)
    except ImportError as exc:
        raise RunError(str(exc), exit_code=1) from None
    available = int(full.x_train.shape[0])
    size = settings.train_size
    if size is not None:
        if not full.num_classes <= size <= available:
            raise RunError(
                f"--train-size must be between {full.num_classes} (one per class) and {available} "
                f"(the {settings.data} training split), got {size}"
            )
        full = load_dataset(settings.data, seed=settings.seed, train_size=size)
    n_train = int(full.x_train.shape[0])
    if "datasize" in settings.experiments:
        bad = [n for n in settings.train_sizes if not full.num_classes <= n <= n_train]
        if bad:
            raise RunError(
                f"--train-sizes must lie between {full.num_classes} and {n_train} (the training "
                f"set), got {bad}"
            )
    if n_train == 0 or full.x_test.shape[0] == 0:
        raise RunError(f"the {settings.data} dataset is empty")
    return full


def run(
    settings: Settings, folder: Path, progress: Progress
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the selected experiments, writing figures into ``folder``; return ``(results,
    timing)``: every number (a deterministic function of ``settings``) and the seconds spent."""
    results: dict[str, Any] = {"format": FORMAT, "settings": settings.to_dict()}
    timing: dict[str, float] = {}
    start = time.perf_counter()
    trains = bool(set(settings.experiments) & {"tradeoff", "datasize", "perception"})
    split = _load(settings) if trains else None  # bad sizes fail before any work
    with torch.random.fork_rng():  # model initialisation draws from the global RNG: seed it
        torch.manual_seed(settings.seed)
        if "synthetic" in settings.experiments:
            results["synthetic"] = run_synthetic(settings.quick)
            timing["synthetic"] = time.perf_counter() - start
            progress.note(f"synthetic: exact accuracies done ({timing['synthetic']:.1f} s)")
        if split is not None:
            full = int(split.x_train.shape[0])
            results["data"] = _describe(split, settings.data)
            begin = time.perf_counter()
            models, records = run_models(plan_models(settings, full), split, settings, progress)
            timing["training_and_evaluation"] = time.perf_counter() - begin
            results.update(summarise(settings, records, full))
            results["models"] = list(records.values())
            if "perception" in settings.experiments:
                begin = time.perf_counter()
                results["perception"] = run_perception(settings, split, models, folder)
                timing["perception"] = time.perf_counter() - begin
                progress.note(f"perception: scores and figure done ({timing['perception']:.1f} s)")
    timing["total"] = time.perf_counter() - start
    return results, timing


def _describe(split: Split, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "train": int(split.x_train.shape[0]),
        "test": int(split.x_test.shape[0]),
        "input_shape": list(split.input_shape),
        "num_classes": int(split.num_classes),
    }


# --------------------------------------------------------------------------- the report folder


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


def finish(folder: ReportFolder, results: dict[str, Any], run_info: dict[str, Any]) -> Path:
    """Write the numbers, the tables and figures, then ``report.md`` and publish the folder."""
    results = {**results, "complete": True}
    folder.write_json("results.json", results)
    folder.write_json("run.json", run_info)
    write_report(folder, results, run_info)
    return folder.publish()
