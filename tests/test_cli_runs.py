"""The ``advtrade`` command under faults and at scale: the user's files are never touched, a
signal leaves no half report, an interrupted run resumes to the same numbers, bad devices and
data folders fail in one line, CIFAR-10 runs end to end, seeds give spreads."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from advtrade.experiments import _cli as cli

needs_digits = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="the digits need scikit-learn"
)
TINY = [
    "--experiment", "tradeoff", "--linf-eps", "0,0.3", "--l2-eps", "0", "--epochs", "2",
    "--train-size", "300", "--eval-attack", "pgd", "--eval-steps", "5", "--quiet",
]  # fmt: skip


def _run(*args: str) -> int:
    return cli.main(list(args))


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "advtrade", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_build(parent: Path, name: str, proc: subprocess.Popen[str]) -> None:
    """Wait until the run has created its build folder (it has started working)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(f".{name}.advtrade-") for p in parent.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never started: {proc.communicate()}")


# ------------------------------------------------------------------ the user's files
@needs_digits
def test_a_folder_made_during_the_run_is_never_touched(tmp_path: Path) -> None:
    """0.1 moved the output folder aside at the end and removed it with the user's file."""
    out = tmp_path / "X"
    proc = _spawn(*TINY, "--out", str(out))
    _wait_for_build(tmp_path, "X", proc)
    out.mkdir()
    (out / "keep.txt").write_text("hi")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "hi"
    assert (tmp_path / "X-1" / "report.md").is_file() and "X-1" in err
    assert _hidden(tmp_path) == []


@needs_digits
def test_updating_a_report_keeps_the_users_additions(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert _run(*TINY, "--out", str(out)) == 0
    (out / "notes.txt").write_text("mine")
    (out / "figures" / "mine.png").write_bytes(b"not advtrade's")
    stale = out / "models" / "standard-n300-s0.pt"
    assert stale.is_file()
    assert _run(*TINY, "--seed", "1", "--out", str(out)) == 0  # a report with other models
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "figures" / "mine.png").read_bytes() == b"not advtrade's"
    assert not stale.exists()  # the earlier report's own file, not in the new one
    assert (out / "models" / "standard-n300-s1.pt").is_file()
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert "notes.txt" not in manifest and "report.md" in manifest
    assert json.loads((out / "results.json").read_text())["settings"]["seeds"] == [1]


def test_stale_build_folders_of_dead_runs_are_removed_and_only_those(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, pid in ((".r.advtrade-dead0000", dead.pid), (".r.advtrade-live0000", os.getpid())):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".pid").write_text(str(pid))
    (tmp_path / ".r.advtrade-nopid000").mkdir()  # not recognisably ours: left alone
    out = str(tmp_path / "r")
    assert _run("--experiment", "synthetic", "--quick", "--quiet", "--out", out) == 0
    assert _hidden(tmp_path) == [".r.advtrade-live0000", ".r.advtrade-nopid000"]


# ------------------------------------------------------------------ signals
@needs_digits
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_leaves_no_half_report_and_no_hidden_folder(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    (tmp_path / "mine.txt").write_text("mine")
    out = tmp_path / "X"
    proc = _spawn(*TINY, "--out", str(out))
    _wait_for_build(tmp_path, "X", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "no report was written" in err
    assert not out.exists() and _hidden(tmp_path) == []
    assert (tmp_path / "mine.txt").read_text() == "mine"
    partial = tmp_path / "X.partial"
    if partial.exists():  # only when a model had started: kept to resume, and said so
        assert "--resume" in err and any(partial.glob("*/*.pt"))


# ------------------------------------------------------------------ resume
@needs_digits
def test_an_interrupted_run_resumes_to_the_same_numbers_and_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from advtrade.training._trainer import RobustTrainer

    straight = tmp_path / "straight"
    assert _run(*TINY, "--out", str(straight)) == 0
    calls = {"epochs": 0}
    original = RobustTrainer._train_epoch

    def interrupted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["epochs"] += 1
        if calls["epochs"] == 4:  # the second epoch of the second model
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(RobustTrainer, "_train_epoch", interrupted)
    assert _run(*TINY, "--out", str(out)) == 130
    monkeypatch.setattr(RobustTrainer, "_train_epoch", original)
    partial = tmp_path / "resumed.partial"
    assert len(list(partial.glob("*/record.json"))) == 1 and not out.exists()
    assert _run(*TINY, "--out", str(out)) == 2  # without --resume: refused, nothing lost
    assert len(list(partial.glob("*/record.json"))) == 1
    assert _run(*TINY, "--epochs", "3", "--out", str(out), "--resume") == 2  # other settings
    assert _run(*TINY, "--out", str(out), "--resume") == 0
    assert not partial.exists()
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert a["tradeoff"] == b["tradeoff"] and a["models"] == b["models"]
    for path in (straight / "models").iterdir():
        mine = torch.load(out / "models" / path.name, weights_only=True)
        theirs = torch.load(path, weights_only=True)
        assert all(torch.equal(v, mine[k]) for k, v in theirs.items()), path.name


# ------------------------------------------------------------------ bad requests
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", str(2**70)], "the seed must be in"),
        (["--threads", "100000"], "--threads 100000 is more than"),
        (["--data", "cifar10"], "needs --data-dir"),
        (["--seeds", "0,-1"], "is not an integer|must be in"),
        (["--eval-attack", "fgsm"], "invalid choice"),
    ],
)
def test_bad_requests_fail_in_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _run(*args, "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("advtrade: error:")
    assert pytest.importorskip("re").search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_missing_devices_and_data_folders_fail_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not torch.cuda.is_available():
        assert _run("--device", "cuda", "--quiet", "--out", str(tmp_path / "r")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no CUDA device" in err
    data = tmp_path / "data"
    data.mkdir()
    assert _run("--data", "cifar10", "--data-dir", str(data), "--quiet",
                "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data_batch_1.bin" in err and "data_batch_5.bin" in err
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    assert _run("--quick", "--quiet", "--out", str(link)) == 2
    assert "dangling symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "data"]


# ------------------------------------------------------------------ CIFAR-10 and seeds
def _fake_cifar(root: Path, train: int = 80, test: int = 40) -> None:
    """A CIFAR-10 folder in the binary layout: random images and labels."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}.bin", train // 5) for i in range(1, 6)),
                    ("test_batch.bin", test)]:
        labels = rng.integers(0, 10, (n, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())


def test_cifar10_quick_runs_end_to_end_on_a_cpu(tmp_path: Path) -> None:
    _fake_cifar(tmp_path / "data")
    out = tmp_path / "report"
    args = ["--data", "cifar10", "--data-dir", str(tmp_path / "data"), "--quick", "--device",
            "cpu", "--train-size", "48", "--test-size", "16", "--l2-eps", "0", "--quiet"]
    assert _run(*args, "--out", str(out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["name"] == "cifar10" and results["data"]["input_shape"] == [3, 32, 32]
    assert results["settings"]["model"] == "preact_resnet18"
    assert results["tradeoff"]["linf"]["train_eps"] == [0.0, 8 / 255]
    assert "APGD-CE and APGD-T" in results["evaluation"]["attack"]
    assert results["data"]["train"] == 48  # 32 of them held out to pick each model's best epoch
    assert all(1 <= m["best_epoch"] <= m["epochs"] for m in results["models"])
    key = results["tradeoff"]["linf"]["models"][1][0]
    weights = torch.load(out / "models" / f"{key}.pt", weights_only=True)
    assert weights["linear.weight"].shape == (10, 512)


@needs_digits
def test_seeds_give_means_and_spreads(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert _run(*TINY, "--seeds", "0,1", "--out", str(out)) == 0
    results = json.loads((out / "results.json").read_text())
    row = results["tradeoff"]["linf"]
    assert row["seeds"] == [0, 1] and "clean_interval" not in row
    for spread, mean in zip(row["clean_spread"], row["clean"]):
        assert len(spread["runs"]) == 2 and spread["min"] <= mean <= spread["max"]
        assert mean == pytest.approx(sum(spread["runs"]) / 2)
    per_model = {m["key"]: m["clean"] for m in results["models"]}
    assert row["clean_spread"][0]["runs"] == [per_model["standard-n300-s0"],
                                              per_model["standard-n300-s1"]]
    report = (out / "report.md").read_text()
    assert "mean over 2 seeds" in report and "PGD-5 with cross-entropy" in report
