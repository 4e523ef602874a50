"""Bad input to the trainer, objectives and schedules: clear errors naming the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advtrade import PGD, LinfBall
from advtrade.losses import margin_loss, trades_kl
from advtrade.training import (
    TRADES,
    AdversarialTraining,
    LinearWarmup,
    RobustTrainer,
    Standard,
    TrainContext,
)
from advtrade.training._callbacks import make_progress

from .conftest import SmallCNN

X = torch.rand(8, 1, 8, 8)
Y = torch.randint(0, 10, (8,))
LOADER = DataLoader(TensorDataset(X, Y), batch_size=4)


def _trainer(**kwargs: object) -> RobustTrainer:
    model = SmallCNN()
    return RobustTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), Standard(), **kwargs)  # type: ignore[arg-type]


def test_constructor_arguments() -> None:
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        RobustTrainer(lambda x: x, opt, Standard())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        RobustTrainer(model, "adam", Standard())  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"objective must be an advtrade Objective.*AdversarialTraining"
    ):
        RobustTrainer(model, opt, PGD(LinfBall(0.1)))
    with pytest.raises(ValueError, match="optimizer holds none of the model's parameters"):
        RobustTrainer(SmallCNN(), opt, Standard())
    bad = {
        "scheduler": ("not a scheduler", TypeError, "scheduler must be"),
        "scheduler_interval": ("step", ValueError, "scheduler_interval must be one of"),
        "attack_mode": ("train", ValueError, "attack_mode must be one of"),
        "train_mode": ("eval", ValueError, "train_mode must be one of"),
        "grad_clip": (0.0, ValueError, "grad_clip must be"),
        "seed": (-1, ValueError, "seed must be"),
        "progress": ("fancy", ValueError, "progress must be"),
        "eps_schedule": (0.3, TypeError, "eps_schedule must be a callable"),
    }
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        RobustTrainer(model, opt, Standard(), scheduler=plateau, scheduler_interval="batch")
    for name, (value, exc, message) in bad.items():
        with pytest.raises(exc, match=message):
            _trainer(**{name: value})


@pytest.mark.parametrize(
    ("epochs", "exc"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_epochs_must_be_a_positive_integer(epochs: object, exc: type) -> None:
    with pytest.raises(exc, match="epochs must be an integer"):
        _trainer(progress=None).fit(LOADER, epochs)  # type: ignore[arg-type]


def test_empty_loaders() -> None:
    empty = DataLoader(TensorDataset(X[:0], Y[:0]), batch_size=4)
    with pytest.raises(ValueError, match="train_loader is empty"):
        _trainer(progress=None).fit(empty, 1)
    with pytest.raises(ValueError, match="eval_loader is empty"):
        _trainer(progress=None).fit(LOADER, 1, empty)

    class NoLen:
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(())

    with pytest.raises(ValueError, match="train_loader yielded no batches"):
        _trainer(progress=None).fit(NoLen(), 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_loader must be an iterable"):
        _trainer(progress=None).fit(X, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("batches", "exc", "message"),
    [
        ([{"x": X, "y": Y}], TypeError, r"batch 0 is a dict without the key\(s\) \['pixel"),
        ([(X, Y, Y)], TypeError, r"batch 0 is a tuple of length 3"),
        ([X], TypeError, r"batch 0 is a Tensor"),
        ([(X, Y), (X.long(), Y)], TypeError, r"x of batch 1 must be a floating-point"),
        ([(X, Y.float())], TypeError, r"y of batch 0 must hold integer class indices"),
        ([(X, Y[:3])], ValueError, r"y of batch 0 must have shape \(8,\)"),
    ],
)
def test_batches_of_the_wrong_form(batches: list, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message):
        _trainer(progress=None).fit(batches, 1)


def test_fit_arguments() -> None:
    with pytest.raises(TypeError, match="eval_attack must be an Attack or None"):
        _trainer(progress=None).fit(LOADER, 1, LOADER, eval_attack="pgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
        _trainer(progress=None).fit(LOADER, 1, checkpoint_dir="unused", checkpoint_every=0)


def test_objective_must_return_a_step_output() -> None:
    class Bad(Standard):
        def train_step(self, x, y, ctx):  # type: ignore[no-untyped-def]
            super().train_step(x, y, ctx)
            return 0.5

    model = SmallCNN()
    trainer = RobustTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), Bad(), progress=None
    )
    with pytest.raises(TypeError, match="must return a StepOutput"):
        trainer.fit(LOADER, 1)


def test_ctx_optimize_checks_the_loss() -> None:
    model = SmallCNN()
    ctx = TrainContext(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="scalar loss tensor, got shape \\(8, 10\\)"):
        ctx.optimize(model(X))
    with pytest.raises(ValueError, match="does not require grad"):
        ctx.optimize(torch.tensor(1.0))
    with pytest.raises(FloatingPointError, match=r"epoch 1 \(ctx.epoch=0\), batch index 0"):
        ctx.optimize(model(X).sum() * float("inf"))


def test_objective_arguments() -> None:
    attack = PGD(LinfBall(0.1))
    with pytest.raises(TypeError, match="AdversarialTraining: attack must be an advtrade Attack"):
        AdversarialTraining(nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TRADES owns its inner loss.*margin_loss"):
        TRADES(PGD(LinfBall(0.1), loss=margin_loss))
    assert TRADES(PGD(LinfBall(0.1), loss=trades_kl)).inner_attack.loss is trades_kl
    with pytest.raises(ValueError, match="untargeted"):
        TRADES(PGD(LinfBall(0.1), targeted=True))
    for beta, exc in ((-1.0, ValueError), (float("inf"), ValueError), ("6", TypeError)):
        with pytest.raises(exc, match="beta must be"):
            TRADES(attack, beta=beta)  # type: ignore[arg-type]
    for kwargs in ({"eps": -0.1, "epochs": 2}, {"eps": 0.1, "epochs": 0}):
        with pytest.raises(ValueError, match="must be"):
            LinearWarmup(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="progress must be"):
        make_progress("loud")
