"""Bad input and misbehaving models: each case was found by trying advtrade as a hostile user
would (issue "nothing lost, nothing silent"); each test failed before its fix."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import advtrade as at
from advtrade.attacks import APGD, APGDT
from advtrade.perception import input_gradients, large_eps_examples
from advtrade.training import read_checkpoint

from .conftest import SmallCNN


class Gamma(nn.Module):
    """Gamma correction before a linear layer: d/dx x^(1/2.2) is infinite at x = 0."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.clamp(min=0) ** (1 / 2.2))


class Floor(nn.Module):
    """The same model with the input floored at 1e-6: finite gradients everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.clamp(min=1e-6) ** (1 / 2.2))


# ------------------------------------------------------------------ non-finite gradients
def test_l2_direction_of_an_infinite_gradient_is_finite() -> None:
    grad = torch.tensor([[math.inf, 1.0, 0.5], [math.nan, 2.0, 0.0], [-math.inf, math.inf, 0.0]])
    direction = at.L2Ball(1.0).ascent_direction(grad)
    # ±inf counts as ± the example's largest finite entry, NaN as 0
    expected = torch.tensor([[1.0, 1.0, 0.5], [0.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    torch.testing.assert_close(direction, expected / expected.norm(dim=1, keepdim=True))
    sign = at.LinfBall(1.0).ascent_direction(torch.tensor([[math.nan, -math.inf, 3.0]]))
    assert torch.equal(sign, torch.tensor([[0.0, -1.0, 1.0]]))


@pytest.mark.parametrize("name", ["pgd", "apgd", "fgsm"])
def test_l2_attacks_on_an_infinite_input_gradient_stay_finite_and_strong(
    digits, digits_cnn, name: str
) -> None:
    """0.1 returned NaN rows (357 of 449) and counted them as successes: robust accuracy fell
    from about 85% to 9.4%, silently."""
    x, y = digits.x_test, digits.y_test
    threat = at.L2Ball(1.0)
    attack = {
        "pgd": at.PGD(threat, steps=10),
        "apgd": APGD(threat, steps=10),
        "fgsm": at.FGSM(threat),
    }[name]
    gamma, floor = Gamma(digits_cnn), Floor(digits_cnn)
    gen = torch.Generator().manual_seed(0)
    x_adv = attack(gamma, x, y, generator=gen)
    assert torch.isfinite(x_adv).all()
    assert float(threat.norm(x_adv - x).max()) <= 1.0 + 1e-5
    robust = at.evaluate(gamma, (x, y), {"a": attack}, generator=gen)["a"]
    # the floored model cannot move pixels at 0 (clamp has no gradient there), so the attack on
    # the real gamma curve must be at least as strong, and finite all along
    reference = at.evaluate(floor, (x, y), {"a": attack}, generator=gen)["a"]
    assert robust <= reference + 0.02, (robust, reference)


# ------------------------------------------------------------------ NaN logits and inputs
class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) * math.nan


def test_nan_logits_raise_in_evaluate_and_every_attack() -> None:
    x, y = torch.rand(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="non-finite logits"):
        at.evaluate(NaNModel(), (x, y))
    for attack in (at.PGD(at.LinfBall(0.1)), at.FGSM(at.LinfBall(0.1)), APGD(at.LinfBall(0.1))):
        with pytest.raises(ValueError, match="non-finite logits"):
            attack(NaNModel(), x, y)


def test_nan_inputs_raise_naming_the_input() -> None:
    model = nn.Linear(4, 3)
    x, y = torch.rand(10, 4), torch.zeros(10, dtype=torch.long)
    x[3, 1] = math.nan
    with pytest.raises(ValueError, match=r"x .*contains NaN"):
        at.PGD(at.LinfBall(0.1))(model, x, y)
    with pytest.raises(ValueError, match=r"x of batch 0 contains NaN"):
        at.evaluate(model, (x, y))
    trainer = at.RobustTrainer(model, torch.optim.SGD(model.parameters(), 0.1), at.Standard(),
                               progress=None)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"train_loader: x of batch 0 contains NaN"):
        trainer.fit([(x, y)], 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------------ empty batches
def test_empty_batches_give_empty_results() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.rand(0, 1, 4, 4), torch.zeros(0, dtype=torch.long)
    for attack in (
        at.PGD(at.LinfBall(0.1)),
        at.FGSM(at.L2Ball(0.5)),
        APGD(at.LinfBall(0.1), steps=5),
        APGDT(at.LinfBall(0.1), steps=5, target_classes=3),
        at.WorstOf([at.FGSM(at.LinfBall(0.1))]),
    ):
        out = attack(model, x, y)
        assert out.shape == x.shape
    full = (torch.rand(6, 1, 4, 4), torch.randint(0, 10, (6,)))
    batches = [full, (x, y)]  # an empty last batch is skipped
    report = at.evaluate(model, batches, {"clean": None, "pgd": at.PGD(at.LinfBall(0.1))})
    assert report.n == 6
    assert at.evaluate(model, [full])["clean"] == report["clean"]
    curve = at.robust_accuracy_curve(model, batches, at.PGD(at.LinfBall(0.1)), [0.1])
    assert curve.n == 6
    with pytest.raises(ValueError, match="only empty batches"):
        at.evaluate(model, [(x, y)])
    with pytest.raises(ValueError, match="empty batch"):
        input_gradients(model, x, y)
    with pytest.raises(ValueError, match="empty batch"):
        large_eps_examples(model, x, y)


# ------------------------------------------------------------------ label dtypes
@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
def test_every_integer_label_dtype_works_like_long(digits, digits_cnn, dtype) -> None:
    x, y = digits.x_test[:64], digits.y_test[:64]
    pgd = at.PGD(at.LinfBall(0.1), steps=3)
    worst = at.WorstOf([at.FGSM(at.LinfBall(0.1)), pgd])
    for attack in (pgd, worst, APGD(at.LinfBall(0.1), steps=3)):
        a = attack(digits_cnn, x, y, generator=torch.Generator().manual_seed(0))
        b = attack(digits_cnn, x, y.to(dtype), generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b)
    report = at.evaluate(digits_cnn, (x, y.to(dtype)), {"clean": None})
    assert report.counts == at.evaluate(digits_cnn, (x, y), {"clean": None}).counts


# ------------------------------------------------------------------ inference mode, as_is BN
def test_attack_under_inference_mode_runs(digits, digits_cnn) -> None:
    x, y = digits.x_test[:32], digits.y_test[:32]
    attack = at.PGD(at.LinfBall(0.1), steps=3)
    expected = attack(digits_cnn, x, y, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        got = attack(digits_cnn, xi, yi, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, expected)


def test_as_is_batchnorm_narrowed_to_one_example_explains_itself() -> None:
    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    y[1] = (y[1] + 1) % 10  # evaluate attacks only the example classified correctly: one
    attack = at.PGD(at.LinfBall(0.1), steps=2, mode="as_is")
    with pytest.raises(ValueError, match=r"BatchNorm layers in training mode \(mode='as_is'\)"):
        at.evaluate(model, (x, y), {"pgd": attack})
    with pytest.raises(ValueError, match="narrowed its batch to one"):
        attack(model, x[:1], y[:1])
    assert model.training  # the model is left as it was
    at.evaluate(model, (x, y), {"pgd": attack.with_mode("eval")})  # the suggested fix works


# ------------------------------------------------------------------ one label check for all
def test_standard_training_checks_labels_like_the_attacks() -> None:
    binary = nn.Linear(3, 1)
    x = torch.rand(8, 3)
    bad = torch.tensor([-5, 1] * 4)
    opt = torch.optim.SGD(binary.parameters(), lr=0.1)
    trainer = at.RobustTrainer(binary, opt, at.Standard(), progress=None)
    with pytest.raises(ValueError, match=r"labels in \[-5, 1\].*\[-1, 1\]"):
        trainer.fit([(x, bad)], 1)
    with pytest.raises(ValueError, match=r"labels in \[-5, 1\]"):
        at.PGD(at.LinfBall(0.1, domain=None))(binary, x, bad)
    multi = nn.Linear(3, 4)
    trainer = at.RobustTrainer(multi, torch.optim.SGD(multi.parameters(), 0.1), at.Standard(),
                               progress=None)
    with pytest.raises(ValueError, match=r"y of batch 0 holds labels in \[0, 4\]"):
        trainer.fit([(x, torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))], 1)


# ------------------------------------------------------------------ checkpoints and resume
def _digits_trainer(digits, objective: at.training.Objective, optimizer: str = "sgd",
                    scheduler: str | None = None) -> at.RobustTrainer:
    torch.manual_seed(0)
    model = SmallCNN()
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(model.parameters(), 1e-2)
    sched = None
    if scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    elif scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 4)
    return at.RobustTrainer(model, opt, objective, scheduler=sched, progress=None)


@pytest.fixture(scope="module")
def saved(digits, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    loader = digits.loaders(128, seed=0)[0]
    _digits_trainer(digits, at.Standard(), "sgd", "step").fit(loader, 1, checkpoint_dir=folder)
    free = _digits_trainer(digits, at.FreeAdversarialTraining(at.LinfBall(0.1), replays=2))
    free.fit(loader, 1, checkpoint_dir=folder / "free")
    return folder


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: _digits_trainer(d, at.Standard(), "adam", "step"), r"optimizer is .*SGD.*Adam"),
        (lambda d: _digits_trainer(d, at.Standard(), "sgd", "cosine"),
         r"scheduler is .*StepLR.*CosineAnnealingLR"),
        (lambda d: _digits_trainer(d, at.Standard(), "sgd", None), r"scheduler is .*StepLR.*none"),
    ],
)
def test_resume_into_other_objects_is_refused_before_training(digits, saved, make, match) -> None:
    trainer = make(digits)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        trainer.load(saved / "last.pt")
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert trainer.epoch == 0


def test_free_checkpoint_into_standard_is_refused(digits, saved) -> None:
    trainer = _digits_trainer(digits, at.Standard())
    with pytest.raises(ValueError, match=r"objective is .*FreeAdversarialTraining.*Standard"):
        trainer.load(saved / "free" / "last.pt")


def test_a_file_with_only_the_marker_names_what_is_missing(tmp_path: Path) -> None:
    torch.save({"format": "advtrade.checkpoint", "version": 2}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"incomplete advtrade checkpoint: it lacks \['epoch'"):
        read_checkpoint(tmp_path / "x.pt")


def test_orphaned_temporary_files_are_removed_and_only_those(digits, tmp_path: Path) -> None:
    ours = [".last.pt.advtrade-ab12cd34.tmp", ".last.pt.x9_k2m1q.tmp"]  # 0.2 and 0.1 names
    theirs = [".last.pt.notes.tmp", "last.pt.bak", ".best.pt.advtrade-ab12cd34.tmp.keep"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"partial")
    trainer = _digits_trainer(digits, at.Standard())
    trainer.fit(digits.loaders(256, seed=0)[0], 1, checkpoint_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["last.pt", *theirs])


def test_checkpoint_dir_that_is_a_file_fails_before_training(digits, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    trainer = _digits_trainer(digits, at.Standard())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ValueError, match="checkpoint_dir=.*existing file"):
        trainer.fit(digits.loaders(256, seed=0)[0], 1, checkpoint_dir=tmp_path / "file")
    with pytest.raises(ValueError, match="checkpoint_dir=.*lies under"):
        trainer.fit(digits.loaders(256, seed=0)[0], 1, checkpoint_dir=tmp_path / "file" / "sub")
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert (tmp_path / "file").read_text() == "mine"


class _Interrupt(at.training.Callback):
    def __init__(self, at_batch: int) -> None:
        self.at_batch, self.seen = at_batch, 0

    def on_batch_end(self, trainer, batch_index, output):  # type: ignore[no-untyped-def]
        self.seen += 1
        if self.seen == self.at_batch:
            raise KeyboardInterrupt


def test_fit_again_after_an_interrupted_epoch_is_refused(digits, tmp_path: Path) -> None:
    loader = digits.loaders(128, seed=0)[0]
    trainer = _digits_trainer(digits, at.Standard())
    trainer.callbacks.append(_Interrupt(at_batch=len(loader) + 3))  # during epoch 2
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(loader, 3, checkpoint_dir=tmp_path)
    trainer.callbacks.clear()
    with pytest.raises(RuntimeError, match="stopped during epoch 2.*Resume from the last"):
        trainer.fit(loader, 3, checkpoint_dir=tmp_path)
    trainer.load(tmp_path / "last.pt")  # the documented way back
    trainer.fit(loader, 3, checkpoint_dir=tmp_path)
    straight = _digits_trainer(digits, at.Standard())
    straight.fit(digits.loaders(128, seed=0)[0], 3)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key]), key
