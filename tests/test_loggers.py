"""CSV and TensorBoard loggers: what they write equals the history, resumed runs log each epoch
once, foreign files are never touched, rank 0 alone writes, tensorboard is optional."""

from __future__ import annotations

import csv
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import advtrade.distributed
from advtrade import PGD, LinfBall
from advtrade.training import (
    AdversarialTraining,
    Callback,
    CSVLogger,
    History,
    RobustTrainer,
    TensorBoardLogger,
)

OBJECTIVE = AdversarialTraining(PGD(LinfBall(0.1), steps=2))
TAGS = {
    "loss": "loss",
    "train_clean_acc": "clean_acc/train",
    "train_robust_acc": "robust_acc/train",
    "eval_clean_acc": "clean_acc/eval",
    "eval_robust_acc": "robust_acc/eval",
    "eps": "eps",
    "lr": "lr",
    "time": "time",
}


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=gen)
    return TensorDataset(x, (x[:, 0] > 0.5).long() + (x[:, 1] > 0.5).long())


def _trainer(callbacks: Sequence[Callback] = (), **kwargs: Any) -> RobustTrainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return RobustTrainer(
        model, opt, OBJECTIVE, scheduler=sched, callbacks=callbacks, progress=None, **kwargs
    )


def _loaders() -> tuple[DataLoader, DataLoader]:
    train = DataLoader(
        _data(48, 0), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    return train, DataLoader(_data(16, 1), batch_size=16)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and the rows as records: int epochs, floats, None for empty cells."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = []
        for cells in reader:
            row: dict[str, Any] = {}
            for key, cell in zip(header, cells, strict=True):
                row[key] = None if cell == "" else int(cell) if key == "epoch" else float(cell)
            rows.append(row)
    return header, rows


def _as_csv_records(history: History, header: list[str]) -> list[dict[str, Any]]:
    return [{k: r.get(k) for k in header} for r in history]


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def _f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


class AddKey(Callback):
    """Adds an extra key to the records from epoch 2 on (before the loggers see them)."""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if record["epoch"] >= 2:
            record["extra_metric"] = 0.25 * record["epoch"]


class CountSteps(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_batch_end(self, trainer: Any, batch_index: int, output: Any) -> None:
        self.steps += 1


# ------------------------------------------------------------------------------ CSV
def test_csv_log_equals_the_history_and_widens_for_new_keys(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    trainer = _trainer([AddKey(), CSVLogger(path)])
    train, evaluation = _loaders()
    trainer.fit(train, 3, evaluation)
    header, rows = _read_csv(path)
    assert header == [*CSVLogger.COLUMNS, "best_epoch", "extra_metric"]  # fit's own extra key
    assert rows == _as_csv_records(trainer.history, header)
    assert len(rows) == 3 and rows[0]["extra_metric"] is None
    # every base column was measured in this run except train_clean_acc (AT sees no clean
    # logits), which is an empty cell
    assert all(r["train_clean_acc"] is None for r in trainer.history)
    assert all(r[k] is not None for r in rows for k in CSVLogger.COLUMNS if k != "train_clean_acc")
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]  # no temporary file left


def test_resumed_run_logs_each_epoch_once(tmp_path: Path) -> None:
    """A run checkpoints at epoch 2, logs epoch 3 and dies; the resumed run drops that row
    (and the TensorBoard step 3) and logs 3 and 4 itself."""
    path, tb = tmp_path / "log.csv", tmp_path / "tb"
    first = _trainer([CSVLogger(path), TensorBoardLogger(tb)])
    train, evaluation = _loaders()
    first.fit(train, 2, evaluation)
    first.save(tmp_path / "at2.pt")
    first.fit(train, 3, evaluation)  # the epoch after the checkpoint, lost with the crash
    _, rows = _read_csv(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    stale = rows[2]

    torch.manual_seed(5)  # make the resumed epoch 3 differ from the lost one
    resumed = _trainer([CSVLogger(path), TensorBoardLogger(tb)])
    resumed.load(tmp_path / "at2.pt", restore_rng=False)
    resumed.fit(train, 4, evaluation)

    header, rows = _read_csv(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows == _as_csv_records(resumed.history, header)
    assert rows[2] != stale
    scalars = _scalars(tb)
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["loss"]] == [_f32(r["loss"]) for r in resumed.history]


def test_a_log_gets_the_epochs_it_missed_from_the_history(tmp_path: Path) -> None:
    """Epochs trained without the logger are written from the history when it comes back; a
    logger added to a trained trainer starts its log with the whole history."""
    path, late = tmp_path / "log.csv", tmp_path / "late.csv"
    logger = CSVLogger(path)
    trainer = _trainer([AddKey(), logger])
    train, evaluation = _loaders()
    trainer.fit(train, 1, evaluation)
    trainer.callbacks.remove(logger)
    trainer.fit(train, 2, evaluation)  # epoch 2 (with the extra key) is not logged
    trainer.callbacks += [CSVLogger(path), CSVLogger(late)]
    trainer.fit(train, 3, evaluation)
    for log in (path, late):
        header, rows = _read_csv(log)
        assert header == [*CSVLogger.COLUMNS, "best_epoch", "extra_metric"]  # fit's own extra key
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert rows == _as_csv_records(trainer.history, header)


def test_a_symbolic_link_keeps_pointing_at_the_log(tmp_path: Path) -> None:
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_bytes(b"")
    link.symlink_to(target)
    trainer = _trainer([AddKey(), CSVLogger(link)])
    trainer.fit(_loaders()[0], 2)  # epoch 2 rewrites the file with a wider header
    assert link.is_symlink() and link.resolve() == target.resolve()
    header, rows = _read_csv(target)
    assert rows == _as_csv_records(trainer.history, header) and len(rows) == 2


def test_append_adds_a_new_run_after_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    train, evaluation = _loaders()
    a = _trainer([CSVLogger(path)])
    a.fit(train, 1, evaluation)
    b = _trainer([CSVLogger(path, append=True)])
    b.fit(train, 2, evaluation)
    header, rows = _read_csv(path)
    assert [r["epoch"] for r in rows] == [1, 1, 2]
    assert rows == _as_csv_records(a.history, header) + _as_csv_records(b.history, header)


def _advtrade_log(path: Path) -> None:
    trainer = _trainer([CSVLogger(path)])
    trainer.fit(_loaders()[0], 1)


FOREIGN = {
    "other csv": b"name,score\nalice,3\n",
    "binary": bytes(range(256)) * 4,
    "text": b"epoch loss\n1 0.5\n",
    "header only, no newline": b"epoch,loss",
    "log with a torn row": (
        b"epoch,loss,train_clean_acc,train_robust_acc,eval_clean_acc,eval_robust_acc,eps,lr,"
        b"time\n1,0.5,,0.4,,,0.1,0.1,0.2\nx,y\n"
    ),
}


@pytest.mark.parametrize("name", FOREIGN)
@pytest.mark.parametrize("append", [False, True])
def test_a_foreign_file_is_never_touched(tmp_path: Path, name: str, append: bool) -> None:
    path, content = tmp_path / "log.csv", FOREIGN[name]
    path.write_bytes(content)
    spy = CountSteps()
    trainer = _trainer([CSVLogger(path, append=append), spy])
    before = [p.detach().clone() for p in trainer.model.parameters()]
    message = "line 3 is not a row of it" if "torn" in name else "not an advtrade CSV log"
    with pytest.raises(FileExistsError, match=message):
        trainer.fit(_loaders()[0], 2)
    assert path.read_bytes() == content
    assert spy.steps == 0 and trainer.epoch == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_a_log_of_an_earlier_run_needs_append(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    _advtrade_log(path)
    content = path.read_bytes()
    spy = CountSteps()
    trainer = _trainer([CSVLogger(path), spy])
    with pytest.raises(FileExistsError, match="append=True"):
        trainer.fit(_loaders()[0], 2)
    assert path.read_bytes() == content and spy.steps == 0


def test_a_resume_refuses_the_log_of_another_run(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    _advtrade_log(path)  # another run's epoch 1
    trainer = _trainer()
    trainer.optimizer.param_groups[0]["lr"] = 0.05
    trainer.fit(_loaders()[0], 1)
    content = path.read_bytes()
    trainer.callbacks.append(CSVLogger(path, append=True))
    with pytest.raises(FileExistsError, match="another run"):
        trainer.fit(_loaders()[0], 2)
    assert path.read_bytes() == content and trainer.epoch == 1


def test_an_empty_file_or_a_header_only_log_is_used(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(b"")
    trainer = _trainer([CSVLogger(path)])
    trainer.fit(_loaders()[0], 1)
    header, rows = _read_csv(path)
    assert rows == _as_csv_records(trainer.history, header)
    path.write_text(",".join(CSVLogger.COLUMNS) + "\n", encoding="utf-8")
    trainer = _trainer([CSVLogger(path)])
    trainer.fit(_loaders()[0], 1)
    assert _read_csv(path)[1] == _as_csv_records(trainer.history, header)


def test_csv_path_checks(tmp_path: Path) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="folder, not a file"):
        CSVLogger(tmp_path)
    with pytest.raises(ValueError, match="lies under"):
        CSVLogger(afile / "log.csv")
    with pytest.raises(TypeError, match="path must be a path"):
        CSVLogger(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="append must be True or False"):
        CSVLogger(tmp_path / "log.csv", append=1)  # type: ignore[arg-type]
    (tmp_path / "dangling").symlink_to(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="symbolic link"):
        CSVLogger(tmp_path / "dangling")
    CSVLogger(tmp_path / "new" / "folder" / "log.csv")  # folders that can be made are fine
    assert afile.read_text() == "x"


# ------------------------------------------------------------------------------ TensorBoard
def test_tensorboard_scalars_equal_the_history(tmp_path: Path) -> None:
    trainer = _trainer([AddKey(), TensorBoardLogger(tmp_path)])
    train, evaluation = _loaders()
    trainer.fit(train, 3, evaluation)
    scalars = _scalars(tmp_path)
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in trainer.history:
        for key, value in record.items():
            if key != "epoch" and value is not None:
                tag = TAGS.get(key, key)
                expected.setdefault(tag, []).append((record["epoch"], _f32(value)))
    assert "clean_acc/train" not in expected  # None in every epoch: not logged
    assert {"loss", "robust_acc/train", "clean_acc/eval", "robust_acc/eval"} <= set(expected)
    assert scalars == expected
    assert scalars["extra_metric"] == [(2, 0.5), (3, 0.75)]


class FailInEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        if epoch == self.epoch:
            raise RuntimeError("boom")


def test_a_failed_fit_keeps_what_was_logged(tmp_path: Path) -> None:
    path, tb = tmp_path / "log.csv", tmp_path / "tb"
    tb_logger = TensorBoardLogger(tb)
    trainer = _trainer([CSVLogger(path), tb_logger, FailInEpoch(1)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(_loaders()[0], 3)
    header, rows = _read_csv(path)
    assert rows == _as_csv_records(trainer.history, header) and len(rows) == 1
    assert _scalars(tb)["loss"] == [(1, _f32(trainer.history[0]["loss"]))]
    assert tb_logger._writer is not None  # open until the next fit or close()
    tb_logger.close()
    assert tb_logger._writer is None


CRASH = """
import os, sys
from advtrade.training import Callback, CSVLogger, TensorBoardLogger
from tests.test_loggers import _loaders, _trainer

class Die(Callback):
    def on_epoch_start(self, trainer, epoch):
        if epoch == 1:
            os._exit(3)  # a hard crash: no exception handling, no buffers flushed at exit

trainer = _trainer([CSVLogger(sys.argv[1]), TensorBoardLogger(sys.argv[2]), Die()])
trainer.fit(_loaders()[0], 3)
"""


def test_a_crashed_process_loses_no_logged_epoch(tmp_path: Path) -> None:
    path, tb = tmp_path / "log.csv", tmp_path / "tb"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(path), str(tb)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 3, done.stderr
    _, rows = _read_csv(path)
    assert [r["epoch"] for r in rows] == [1]
    assert _scalars(tb)["loss"] == [(1, _f32(rows[0]["loss"]))]


def test_missing_tensorboard_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'advtrade\[log\]'"):
        TensorBoardLogger(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ DDP
def test_only_the_main_process_writes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(advtrade.distributed, "is_main_process", lambda: False)
    path, tb = tmp_path / "log.csv", tmp_path / "tb"
    path.write_bytes(b"foreign")  # rank 0 checks it; other ranks do not look
    trainer = _trainer([CSVLogger(path), TensorBoardLogger(tb)])
    trainer.fit(_loaders()[0], 2)
    assert path.read_bytes() == b"foreign"
    assert not tb.exists() or not any(tb.iterdir())
    shutil.rmtree(tb, ignore_errors=True)
