"""Training killed with SIGKILL, mid-epoch and mid-checkpoint-write, loses nothing.

A child process trains a small CNN on the digits with ``checkpoint_dir`` (``last.pt`` and, with
an evaluation loader, ``best.pt``), resuming from ``last.pt`` when it exists. The parent kills it
at chosen moments: after a given batch, or in the middle of writing a checkpoint (the child's
``torch.save`` is slowed down to write in small chunks and announces the write, so the kill
lands inside it). After every kill ``last.pt`` either does not exist yet or loads with
``weights_only=True``; the run that finally completes ends with weights bitwise equal to an
uninterrupted run's, and no temporary file is left in the folder.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advtrade.training import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3

CHILD = textwrap.dedent(
    """
    import io, sys, time
    from pathlib import Path
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, sys.argv[3])
    from tests.conftest import SmallCNN
    import advtrade as at
    from advtrade.datasets import load_digits
    from advtrade.training import AdversarialTraining, Callback, RobustTrainer

    folder, slow_write = Path(sys.argv[1]), sys.argv[2] == "1"
    torch.set_num_threads(1)
    if slow_write:  # write each checkpoint in small, slow chunks, announcing the write
        real_save = torch.save

        def chunked_save(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            for i in range(0, len(data), 4096):
                f.write(data[i : i + 4096])
                f.flush()
                if i == 4096:
                    print("WRITING", flush=True)
                time.sleep(0.002)

        torch.save = chunked_save

    class Announce(Callback):
        def on_batch_end(self, trainer, batch_index, output):
            print(f"BATCH {trainer.epoch} {batch_index}", flush=True)

    digits = load_digits()
    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True, dropout=0.2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    train = TensorDataset(digits.x_train[:256], digits.y_train[:256])
    loader = DataLoader(train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    held_out = DataLoader(TensorDataset(digits.x_test[:64], digits.y_test[:64]), 64)
    objective = AdversarialTraining(at.PGD(at.LinfBall(0.1), steps=2))
    kwargs = dict(scheduler=sched, progress=None, callbacks=[Announce()])
    last = folder / "last.pt"
    if last.exists():
        trainer = RobustTrainer.resume(last, model, opt, objective, **kwargs)
    else:
        trainer = RobustTrainer(model, opt, objective, **kwargs)
    trainer.fit(loader, int(sys.argv[4]), held_out, checkpoint_dir=folder)
    print("DONE", flush=True)
    """
)


def _start(folder: Path, slow_write: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    argv = [sys.executable, "-c", CHILD, str(folder), "1" if slow_write else "0", str(ROOT),
            str(EPOCHS)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _run_until(folder: Path, marker: str | None, slow_write: bool = False) -> bool:
    """Run the child until it prints ``marker`` (then SIGKILL it; True) or finishes (False)."""
    proc = _start(folder, slow_write)
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker is not None and line.strip() == marker:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return True
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return False


def _check_folder_after_kill(folder: Path) -> None:
    for name in ("last.pt", "best.pt"):
        if (folder / name).exists():
            state = torch.load(folder / name, weights_only=True)  # never a partial file
            assert read_checkpoint(folder / name)["epoch"] == state["epoch"] >= 1


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(folder / "last.pt")["model"]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    assert not _run_until(folder, None)
    assert read_checkpoint(folder / "last.pt")["epoch"] == EPOCHS
    return _final_weights(folder)


def test_kills_mid_epoch_and_mid_write_lose_nothing(reference, tmp_path: Path) -> None:
    # killed in epoch 1 before any checkpoint, inside the first write of last.pt, in the
    # middle of epoch 2, and inside a later write: each resumes from what survived
    kills = [("BATCH 0 1", False), ("WRITING", True), ("BATCH 1 2", False), ("WRITING", True)]
    for marker, slow in kills:
        assert _run_until(tmp_path, marker, slow), f"the run finished before {marker}"
        _check_folder_after_kill(tmp_path)
    assert list(tmp_path.glob(".*.tmp")), "no kill landed inside a checkpoint write"
    assert not _run_until(tmp_path, None)
    _assert_same(_final_weights(tmp_path), reference)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files were left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_random_kills_lose_nothing(reference, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    batches = [f"BATCH {e} {b}" for e in range(EPOCHS) for b in range(4)]
    for _ in range(6):
        slow = rng.random() < 0.5
        marker = "WRITING" if slow else rng.choice(batches)
        if not _run_until(tmp_path, marker, slow):
            break  # the run completed before the chosen moment
        _check_folder_after_kill(tmp_path)
    _run_until(tmp_path, None)
    _assert_same(_final_weights(tmp_path), reference)
    assert not list(tmp_path.glob(".*.tmp"))
