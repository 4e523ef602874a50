"""The paper's experiments as one run: :func:`run` executes the selected experiments and returns
their numbers as one JSON-ready dict; :func:`finish` writes the report and publishes the folder.

Finished models are kept in a work folder (``<out>.partial``) until the report is published, so
an interrupted run continues with ``--resume`` without retraining them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..datasets import Split
from ._data import load_split
from ._folder import FORMAT, ReportFolder
from ._models import attack_name
from ._perception import run_perception
from ._progress import Progress
from ._report import write_report
from ._settings import RunError, Settings
from ._synthetic import run_synthetic
from ._tradeoff import plan_models, run_models, summarise

__all__ = ["WorkFolder", "finish", "resolve_device", "run"]


def resolve_device(requested: str) -> torch.device:
    """The device a run trains on: ``auto`` takes CUDA when present (then MPS), else the CPU;
    an explicit device that is not there is a :class:`RunError` before any work."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if has_mps else "cpu")
    if requested == "cuda" and not cuda:
        raise RunError("--device cuda: no CUDA device is available (torch.cuda.is_available())")
    if requested == "mps" and not has_mps:
        raise RunError("--device mps: the MPS backend is not available on this machine")
    return torch.device(requested)


class WorkFolder:
    """``<out>.partial``: each finished model's weights and numbers while a run is under way.

    It is advtrade's own (a ``settings.json`` marks it); a run without ``resume`` refuses to
    start over one that exists, so finished models are never thrown away by accident, and a
    resumed run must have the same settings (seeds may be added)."""

    def __init__(self, out: Path, settings: Settings, *, resume: bool) -> None:
        self.path = out.with_name(f"{out.name}.partial")
        mark = self.path / "settings.json"
        wanted = _fingerprint(settings)
        if self.path.exists():
            if not resume:
                raise RunError(
                    f"{self.path} holds the models of an interrupted run: pass --resume to "
                    f"continue it, or remove the folder to start over"
                )
            try:
                saved = json.loads(mark.read_text())
            except (OSError, ValueError):
                raise RunError(f"{self.path} is not an advtrade work folder; remove it") from None
            if saved != wanted:
                differ = sorted(k for k in {*saved, *wanted} if saved.get(k) != wanted.get(k))
                raise RunError(
                    f"{self.path} was made with other settings ({', '.join(differ)} differ); "
                    f"resume with the same settings, or remove the folder"
                )
        else:
            self.path.mkdir(parents=True)
            mark.write_text(json.dumps(wanted, indent=2))

    def remove(self) -> None:
        """Remove the work folder (after the report holding its models is published)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def finished(self) -> int:
        """How many models finished (weights and numbers saved)."""
        return sum(1 for p in self.path.glob("*/record.json"))

    def close_interrupted(self) -> int:
        """After a failure: keep the folder if it holds finished or partly trained models
        (returns how many finished), else remove it."""
        if any(self.path.glob("*/*.pt")):
            return self.finished()
        self.remove()
        return 0


def _fingerprint(settings: Settings) -> dict[str, Any]:
    data = settings.to_dict()
    for key in ("seeds", "data_dir", "device"):
        data.pop(key, None)
    return data


def run(
    settings: Settings, folder: Path, progress: Progress, *, work: Path | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the selected experiments, writing figures and model weights into ``folder`` and
    finished models into ``work`` (default: a ``work`` subfolder of ``folder``); return
    ``(results, timing)``: every number, and the seconds spent."""
    device = resolve_device(settings.device)
    results: dict[str, Any] = {"format": FORMAT, "settings": settings.to_dict()}
    results["device"] = device.type
    timing: dict[str, float] = {}
    start = time.perf_counter()
    trains = bool(set(settings.experiments) & {"tradeoff", "datasize", "perception"})
    split = load_split(settings) if trains else None  # bad sizes fail before any work
    if split is not None and "datasize" in settings.experiments:
        n = int(split.x_train.shape[0])
        bad = [s for s in settings.train_sizes if not split.num_classes <= s <= n]
        if bad:
            raise RunError(
                f"--train-sizes must lie between {split.num_classes} and {n} (the training "
                f"set), got {bad}"
            )
    with torch.random.fork_rng():  # nothing here may change the caller's global RNG
        torch.manual_seed(settings.seed)
        if "synthetic" in settings.experiments:
            results["synthetic"] = run_synthetic(settings.quick)
            timing["synthetic"] = time.perf_counter() - start
            progress.note(f"synthetic: exact accuracies done ({timing['synthetic']:.1f} s)")
        if split is not None:
            full = int(split.x_train.shape[0])
            results["data"] = _describe(split, settings.data)
            results["evaluation"] = {
                "eval_attack": settings.eval_attack,
                "attack": attack_name(settings, split.num_classes),
            }
            begin = time.perf_counter()
            models, records = run_models(
                plan_models(settings, full),
                settings,
                progress,
                device=device,
                work=work if work is not None else folder / "work",
                folder=folder,
            )
            timing["training_and_evaluation"] = time.perf_counter() - begin
            results.update(summarise(settings, records, full))
            results["models"] = list(records.values())
            if "perception" in settings.experiments:
                begin = time.perf_counter()
                results["perception"] = run_perception(settings, split, models, folder)
                timing["perception"] = time.perf_counter() - begin
                progress.note(f"perception: scores and figure done ({timing['perception']:.1f} s)")
    shutil.rmtree(folder / "work", ignore_errors=True)
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
