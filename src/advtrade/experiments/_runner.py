"""The paper's experiments as one run: :func:`run` executes the selected experiments and returns
their numbers as one JSON-ready dict; :func:`finish` writes the report and publishes the folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..datasets import Split, load_dataset
from ._folder import FORMAT, ReportFolder
from ._models import Progress
from ._perception import run_perception
from ._report import write_report
from ._settings import RunError, Settings
from ._synthetic import run_synthetic
from ._tradeoff import plan_models, run_models, summarise

__all__ = ["finish", "run"]

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


def finish(folder: ReportFolder, results: dict[str, Any], run_info: dict[str, Any]) -> Path:
    """Write the numbers, the tables and figures, then ``report.md`` and publish the folder."""
    results = {**results, "complete": True}
    folder.write_json("results.json", results)
    folder.write_json("run.json", run_info)
    write_report(folder, results, run_info)
    return folder.publish()
