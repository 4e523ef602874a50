"""Checkpoints: bit-for-bit resume, atomic writes, a NaN loss that leaves the last one intact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advtrade import PGD, LinfBall
from advtrade.training import (
    AdversarialTraining,
    Callback,
    Checkpoint,
    NonFiniteLossError,
    RobustTrainer,
    Standard,
    read_checkpoint,
)

from .conftest import SmallCNN

OBJECTIVE = AdversarialTraining(PGD(LinfBall(0.1), steps=2))


def _objects(digits, init_seed: int = 0):  # type: ignore[no-untyped-def]
    """Fresh model (dropout and BatchNorm), optimizer, scheduler and shuffled loader."""
    torch.manual_seed(init_seed)
    model = SmallCNN(batchnorm=True, dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    data = TensorDataset(digits.x_train[:256], digits.y_train[:256])
    loader = DataLoader(
        data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    return model, opt, sched, loader


def _eval_loader(digits) -> DataLoader:  # type: ignore[no-untyped-def]
    return DataLoader(TensorDataset(digits.x_test[:64], digits.y_test[:64]), batch_size=64)


def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(digits, tmp_path: Path) -> None:
    model, opt, sched, loader = _objects(digits)
    torch.manual_seed(0)  # the global RNG drives dropout
    full = RobustTrainer(model, opt, OBJECTIVE, scheduler=sched, progress=None)
    full.fit(loader, 4, _eval_loader(digits))  # evaluation must not disturb training's RNG

    model2, opt2, sched2, loader2 = _objects(digits)
    torch.manual_seed(0)
    first = RobustTrainer(model2, opt2, OBJECTIVE, scheduler=sched2, progress=None)
    first.fit(loader2, 2, checkpoint_dir=tmp_path)
    path = tmp_path / "last.pt"
    assert read_checkpoint(path)["epoch"] == 2
    del first, model2, opt2, sched2, loader2

    torch.manual_seed(1234)  # the crash: everything random is elsewhere now
    model3, opt3, sched3, loader3 = _objects(digits, init_seed=99)
    resumed = RobustTrainer.resume(path, model3, opt3, OBJECTIVE, scheduler=sched3, progress=None)
    assert resumed.epoch == 2 and len(resumed.history) == 2
    resumed.fit(loader3, 4, _eval_loader(digits), checkpoint_dir=tmp_path / "resumed")

    for (name, a), b in zip(model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), name
    assert opt3.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    keys = ("loss", "train_robust_acc", "eval_clean_acc", "eval_robust_acc", "lr", "eps")
    rows = [[r.get(k) for k in keys] for r in resumed.history]
    assert rows[2:] == [[r[k] for k in keys] for r in full.history][2:]
    assert torch.equal(resumed.generator.get_state(), full.generator.get_state())
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 4

    # Negative control: the same resume without the saved random states ends elsewhere.
    model4, opt4, sched4, loader4 = _objects(digits)
    control = RobustTrainer(model4, opt4, OBJECTIVE, scheduler=sched4, progress=None)
    control.load(path, restore_rng=False).fit(loader4, 4)
    assert not torch.equal(model4.features[0].weight, model.features[0].weight)


def test_checkpoint_loads_with_plain_weights_only(digits, tmp_path: Path) -> None:
    model, opt, sched, loader = _objects(digits)
    trainer = RobustTrainer(model, opt, Standard(), scheduler=sched, progress=None)
    trainer.fit(loader, 1)
    trainer.save(tmp_path / "ck.pt")
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["epoch"] == 1 and state["history"] == trainer.history.to_list()
    assert set(state["rng"]) == {"trainer", "torch", "cuda", "objective", "loader"}
    assert state["rng"]["objective"] is None  # Standard() carries no state
    assert len(state["rng"]["loader"]) == 1


def _raise_midway(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
    f.write(b"partial garbage")
    raise OSError("disk full")


@pytest.mark.parametrize("failure", ["torch.save", "os.replace"])
def test_crash_during_save_keeps_the_previous_checkpoint(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    model, opt, sched, loader = _objects(digits)
    trainer = RobustTrainer(model, opt, Standard(), scheduler=sched, progress=None)
    trainer.fit(loader, 1)
    path = tmp_path / "last.pt"
    trainer.save(path)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(loader, 2)
    with monkeypatch.context() as m:
        if failure == "torch.save":
            m.setattr(torch, "save", _raise_midway)
        else:

            def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
                raise OSError("rename failed")

            m.setattr(os, "replace", fail)
        with pytest.raises(OSError):
            trainer.save(path)
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    state = read_checkpoint(path)
    assert state["epoch"] == 1
    assert all(torch.equal(state["model"][k], v) for k, v in saved.items())


def test_nan_loss_raises_naming_epoch_and_batch_and_keeps_checkpoint(
    digits, tmp_path: Path
) -> None:
    x = digits.x_train[:100].clone()
    y = digits.y_train[:100]
    loader = DataLoader(TensorDataset(x, y), batch_size=10)

    class Poison(Callback):
        def on_epoch_end(self, trainer, record):  # type: ignore[no-untyped-def]
            x[25] = 3e38  # finite, but overflows the forward pass: batch index 2, next epoch

    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RobustTrainer(model, opt, Standard(), callbacks=[Poison()], progress=None)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 .*batch index 2"):
        trainer.fit(loader, 3, checkpoint_dir=tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # NaN never reached weights
    state = read_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    # With the data repaired, resuming from that checkpoint ends where an uninterrupted run on
    # clean data ends (Standard training without dropout: nothing random after the init).
    x[25] = digits.x_train[25]
    fresh = SmallCNN()
    resumed = RobustTrainer.resume(
        tmp_path / "last.pt",
        fresh,
        torch.optim.SGD(fresh.parameters(), lr=0.1),
        Standard(),
        progress=None,
    )
    assert resumed.epoch == 1
    resumed.fit(loader, 3)
    torch.manual_seed(0)
    clean = SmallCNN()
    opt = torch.optim.SGD(clean.parameters(), lr=0.1)
    history = RobustTrainer(clean, opt, Standard(), progress=None).fit(loader, 3)
    for (name, a), b in zip(clean.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in history]


def test_checkpoint_callback_every_and_last(digits, tmp_path: Path) -> None:
    model, opt, _, loader = _objects(digits)
    trainer = RobustTrainer(model, opt, Standard(), progress=None)
    saves: list[int] = []
    save = trainer.save

    def spy(path):  # type: ignore[no-untyped-def]
        saves.append(trainer.epoch)
        return save(path)

    trainer.save = spy  # type: ignore[method-assign]
    trainer.fit(loader, 5, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert saves == [2, 4, 5] and read_checkpoint(tmp_path / "last.pt")["epoch"] == 5
    with pytest.raises(ValueError, match="checkpoint_every"):
        Checkpoint(tmp_path, every=0)


def test_checkpoint_from_another_model_is_refused(digits, tmp_path: Path) -> None:
    model, opt, _, loader = _objects(digits)
    trainer = RobustTrainer(model, opt, Standard(), progress=None)
    trainer.fit(loader, 1)
    trainer.save(tmp_path / "ck.pt")
    other = SmallCNN(num_classes=5)
    with pytest.raises(ValueError, match=r"different model.*shape mismatches.*head\.2\.weight"):
        RobustTrainer.resume(
            tmp_path / "ck.pt", other, torch.optim.Adam(other.parameters()), Standard()
        )
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"different model.*missing keys.*unexpected keys"):
        RobustTrainer.resume(
            tmp_path / "ck.pt", linear, torch.optim.Adam(linear.parameters()), Standard()
        )
    same = SmallCNN(batchnorm=True, dropout=0.2)
    sgd = torch.optim.SGD(same.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(sgd, 1)
    with pytest.raises(ValueError, match="scheduler"):
        RobustTrainer.resume(tmp_path / "ck.pt", same, sgd, Standard(), scheduler=sched)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable advtrade checkpoint"):
        trainer.load(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not an advtrade checkpoint"):
        trainer.load(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError):
        trainer.load(tmp_path / "missing.pt")


def test_atomic_writes_keep_permissions_and_leave_no_temporary_file(tmp_path) -> None:
    """Checkpoints and rewritten logs go through one atomic write: a new file gets the
    permissions ``open`` would give it, a replaced file keeps its own."""
    import stat

    from advtrade.training._checkpoint import atomic_save, atomic_write

    umask = os.umask(0)
    os.umask(umask)
    new = tmp_path / "new.pt"
    atomic_save({"a": torch.ones(2)}, new)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
    old = tmp_path / "log.csv"
    old.write_text("x\n")
    old.chmod(0o640)
    atomic_write(old, lambda fh: fh.write(b"y\n"))
    assert old.read_text() == "y\n" and stat.S_IMODE(old.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "new.pt"]
