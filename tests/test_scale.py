"""What training at scale needs, checked small on a CPU: weight averaging, the best epoch and
patience, other model and batch conventions, channels-last, compile, and attacks under AMP."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import advtrade as at
from advtrade.attacks._core import input_gradient
from advtrade.losses import cross_entropy
from advtrade.training import Callback

from .conftest import SmallCNN


def _loader(x: Tensor, y: Tensor, batch: int = 32, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=gen)


def _trainer(model: nn.Module, objective: at.training.Objective, **kwargs: object):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return at.RobustTrainer(model, opt, objective, progress=None, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ weight averaging
class _Snapshots(Callback):
    """The model's state after every optimizer step (Standard: one step per batch)."""

    def __init__(self) -> None:
        self.states: list[dict[str, Tensor]] = []

    def on_batch_end(self, trainer, batch_index, output):  # type: ignore[no-untyped-def]
        self.states.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def test_ema_is_the_exponential_average_of_every_step(digits) -> None:
    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    snapshots = _Snapshots()
    trainer = _trainer(model, at.Standard(), ema=0.8, callbacks=[snapshots])
    trainer.fit(_loader(digits.x_train[:256], digits.y_train[:256]), 2)
    assert trainer.average is not None
    expected = {k: v.double() for k, v in start.items()}
    for state in snapshots.states:  # an independent average over the recorded states
        for k, v in state.items():
            averaged = k.endswith(("weight", "bias", "mean", "var"))  # not num_batches_tracked
            expected[k] = 0.8 * expected[k] + 0.2 * v.double() if averaged else v.double()
    got = trainer.average.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)
    key = "features.1.running_mean"  # buffers are averaged too
    assert not torch.equal(got[key], model.state_dict()[key])


def test_ema_is_what_evaluate_uses_and_resumes_bit_for_bit(digits, tmp_path: Path) -> None:
    x, y = digits.x_train[:192], digits.y_train[:192]
    test = (digits.x_test, digits.y_test)

    def run(epochs: int, resume: Path | None = None) -> at.RobustTrainer:
        torch.manual_seed(0)
        model = SmallCNN(dropout=0.1)
        trainer = _trainer(model, at.AdversarialTraining(at.PGD(at.LinfBall(0.1), steps=2)),
                           ema=0.9)
        if resume is not None:
            trainer.load(resume)
        trainer.fit(_loader(x, y), epochs, checkpoint_dir=tmp_path / str(resume is None))
        return trainer

    full = run(4)
    half = run(2)
    resumed = run(4, resume=tmp_path / "True" / "last.pt")
    assert half.average is not None and resumed.average is not None and full.average is not None
    for k, v in full.average.module.state_dict().items():
        assert torch.equal(v, resumed.average.module.state_dict()[k]), k
    report = full.evaluate(test, {"clean": None})
    assert report.counts == at.evaluate(full.average.module, test).counts
    assert report.counts != at.evaluate(full.model, test).counts  # the average differs


def test_ema_arguments_are_checked(digits, tmp_path: Path) -> None:
    for bad, exc in ((1.0, ValueError), (0.0, ValueError), (-0.5, ValueError), ("0.9", TypeError)):
        with pytest.raises(exc, match="ema"):
            _trainer(SmallCNN(), at.Standard(), ema=bad)
    plain = _trainer(SmallCNN(), at.Standard())
    plain.fit(_loader(digits.x_train[:64], digits.y_train[:64]), 1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="without a weight average.*ema=0.9"):
        _trainer(SmallCNN(), at.Standard(), ema=0.9).load(tmp_path / "last.pt")


# ------------------------------------------------------------------ the best epoch, patience
@pytest.fixture(scope="module")
def overfit(digits, tmp_path_factory):
    """A run that overfits: 60 training images, 40% of their labels wrong, many epochs at a
    high learning rate; held-out accuracy rises, then falls as the noise is memorised."""
    gen = torch.Generator().manual_seed(1)
    x, y = digits.x_train[:60].clone(), digits.y_train[:60].clone()
    flip = torch.rand(60, generator=gen) < 0.4
    y[flip] = (y[flip] + torch.randint(1, 10, (int(flip.sum()),), generator=gen)) % 10
    held = (digits.x_test[:200], digits.y_test[:200])
    folder = tmp_path_factory.mktemp("best")
    torch.manual_seed(0)
    model = SmallCNN()
    trainer = at.RobustTrainer(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        at.AdversarialTraining(at.FGSM(at.LinfBall(0.05))),
        progress=None,
    )
    history = trainer.fit(_loader(x, y, batch=20), 40, [held], checkpoint_dir=folder, patience=8)
    return trainer, history, held, folder


def test_best_epoch_is_the_highest_held_out_robust_accuracy(overfit) -> None:
    trainer, history, _, folder = overfit
    robust = history.column("eval_robust_acc")
    best = max(range(len(robust)), key=lambda i: (robust[i], -i)) + 1  # the first maximum
    assert history[-1]["best_epoch"] == best == trainer.best.epoch
    assert robust[-1] < robust[best - 1]  # it did overfit: the last epoch is worse
    for i, record in enumerate(history):  # best_epoch is the best so far, at every epoch
        assert record["best_epoch"] == max(range(i + 1), key=lambda j: (robust[j], -j)) + 1
    # patience: training stopped 8 epochs after the best one
    assert len(history) == min(best + 8, 40)
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]
    assert at.training.read_checkpoint(folder / "best.pt")["epoch"] == best


def test_load_best_restores_the_best_weights(overfit) -> None:
    trainer, history, held, folder = overfit
    attack = trainer.objective.attack
    before = trainer.evaluate(held)["robust"]
    trainer.load_best()
    after = trainer.evaluate(held)
    assert after["robust"] == history[trainer.best.epoch - 1]["eval_robust_acc"] > before
    assert trainer.epoch == len(history)  # the run's count is kept
    other = copy.deepcopy(trainer)
    other.load_best(folder)
    assert other.evaluate(held, {"clean": None, "robust": attack}).counts == after.counts


def test_best_without_a_checkpoint_folder_is_kept_in_memory(digits) -> None:
    torch.manual_seed(0)
    trainer = _trainer(SmallCNN(), at.Standard())
    held = [(digits.x_test[:100], digits.y_test[:100])]
    history = trainer.fit(_loader(digits.x_train[:128], digits.y_train[:128]), 4, held)
    trainer.load_best()
    assert trainer.evaluate(held)["clean"] == max(history.column("eval_clean_acc"))
    with pytest.raises(ValueError, match="patience needs an eval_loader"):
        trainer.fit(_loader(digits.x_train[:64], digits.y_train[:64]), 5, patience=2)
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        trainer.fit(_loader(digits.x_train[:64], digits.y_train[:64]), 5, held, patience=0)
    with pytest.raises(RuntimeError, match="no best epoch"):
        _trainer(SmallCNN(), at.Standard()).load_best()


def test_load_best_works_with_a_scheduler_and_refuses_another_model(digits, tmp_path) -> None:
    # the CLI's combination: a scheduler, a held-out set and a checkpoint folder
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    trainer = at.RobustTrainer(model, opt, at.Standard(), scheduler=sched, progress=None)
    held = [(digits.x_test[:100], digits.y_test[:100])]
    history = trainer.fit(_loader(digits.x_train[:128], digits.y_train[:128]), 3, held,
                          checkpoint_dir=tmp_path)
    trainer.load_best()
    assert trainer.evaluate(held)["clean"] == max(history.column("eval_clean_acc"))
    wider = SmallCNN(width=8)
    other = at.RobustTrainer(wider, torch.optim.SGD(wider.parameters(), lr=0.05), at.Standard(),
                             progress=None)
    with pytest.raises(ValueError, match="best does not fit.*different model"):
        other.load_best(tmp_path)


# ------------------------------------------------------------------ other conventions
@dataclass
class Output:
    """Like Hugging Face's ModelOutput: the logits are an attribute."""

    logits: Tensor
    hidden: Tensor | None = None


class Wrapped(nn.Module):
    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, pixel_values: Tensor) -> object:
        logits = self.inner(pixel_values)
        return Output(logits) if self.kind == "object" else {"logits": logits, "loss": None}


class DictData(Dataset):
    def __init__(self, x: Tensor, y: Tensor, keys: tuple[str, str]) -> None:
        self.x, self.y, self.keys = x, y, keys

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Mapping[str, Tensor]:
        return {self.keys[0]: self.x[i], self.keys[1]: self.y[i], "id": torch.tensor(i)}


@pytest.mark.parametrize("kind", ["object", "dict"])
def test_model_outputs_and_dict_batches_give_the_same_results(digits, kind: str) -> None:
    x, y = digits.x_train[:96], digits.y_train[:96]
    attack = at.PGD(at.LinfBall(0.1), steps=2)

    def run(wrap: bool) -> tuple[at.training.History, dict[str, Tensor]]:
        torch.manual_seed(0)
        inner = SmallCNN()
        model = Wrapped(inner, kind) if wrap else inner
        gen = torch.Generator().manual_seed(0)
        if wrap:
            keys = ("image", "target")
            loader = DataLoader(DictData(x, y, keys), batch_size=32, shuffle=True, generator=gen)
            trainer = _trainer(model, at.AdversarialTraining(attack), batch_keys=keys)
        else:
            loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen)
            trainer = _trainer(model, at.AdversarialTraining(attack))
        return trainer.fit(loader, 2, loader), inner.state_dict()

    (h1, w1), (h2, w2) = run(False), run(True)
    assert [{k: v for k, v in r.items() if k != "time"} for r in h1] == [
        {k: v for k, v in r.items() if k != "time"} for r in h2
    ]
    assert all(torch.equal(v, w2[k]) for k, v in w1.items())
    model = Wrapped(SmallCNN(), kind)
    x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    same = attack(model.inner, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, same)
    batches = DataLoader(DictData(x, y, ("pixel_values", "labels")), batch_size=32)
    report = at.evaluate(model, batches, {"clean": None, "pgd": attack})  # default keys
    assert report.counts == at.evaluate(model.inner, (x, y), {"clean": None, "pgd": attack}).counts


def test_a_model_output_without_logits_is_a_clear_error() -> None:
    class NoLogits(nn.Module):
        def forward(self, x: Tensor) -> object:
            return (x.flatten(1),)

    with pytest.raises(TypeError, match=r"\.logits tensor or a dict with a 'logits' tensor"):
        at.PGD(at.LinfBall(0.1))(NoLogits(), torch.rand(2, 3), torch.tensor([0, 1]))


# ------------------------------------------------------------------ channels-last, compile
def test_channels_last_keeps_the_memory_format_and_trains_alike(digits) -> None:
    x = digits.x_train[:128].repeat(1, 3, 1, 1)  # 3 channels: channels-last is not trivial
    y = digits.y_train[:128]

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * 64, 10))

    net = model().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    for attack in (at.PGD(at.LinfBall(0.1), steps=2), at.PGD(at.L2Ball(0.5), steps=2)):
        out = attack(net, xc, y, generator=torch.Generator().manual_seed(0))
        assert out.is_contiguous(memory_format=torch.channels_last)
    objective = at.AdversarialTraining(at.PGD(at.LinfBall(0.1), steps=2))
    last = _trainer(model(), objective, channels_last=True)
    plain = _trainer(model(), objective)
    h_last, h_plain = last.fit(_loader(x, y), 2), plain.fit(_loader(x, y), 2)
    assert next(last.model.parameters()).is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(h_last.column("loss"), h_plain.column("loss")):
        assert a == pytest.approx(b, rel=1e-3)


def test_compile_compiles_once_and_attacks_never_recompile(digits) -> None:
    dynamo = pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    x, y = digits.x_train[:128], digits.y_train[:128]
    loader = DataLoader(TensorDataset(x, y), batch_size=32)  # equal batches: no new shapes
    trainer = _trainer(SmallCNN(), at.AdversarialTraining(at.PGD(at.LinfBall(0.1), steps=3)),
                       compile={"backend": "eager"})
    trainer.fit(loader, 1)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0  # it did compile
    trainer.fit(loader, 3)  # two more epochs: 24 attack steps and 8 updates
    assert counters["stats"]["unique_graphs"] == graphs


# ------------------------------------------------------------------ attacks under AMP
def _confident(scale: float) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    x = torch.rand(512, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
        model[3].weight.mul_(scale)
        model[3].bias.mul_(scale)
    return model, x, y


def test_float16_attack_gradients_of_confident_examples_do_not_underflow() -> None:
    """0.1 computed the loss gradient through the half-precision backward as is: examples with
    a margin over ~17 nats got an all-zero input gradient (PGD could not move them)."""
    model, x, y = _confident(50.0)
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        plain = F.cross_entropy(model(xg), y, reduction="sum")
    (g_plain,) = torch.autograd.grad(plain, xg)
    zero = g_plain.flatten(1).abs().sum(1) == 0
    assert zero.any()  # the failure exists in this setting
    with torch.autocast("cpu", dtype=torch.float16):
        g = input_gradient(model, x, y, cross_entropy)
    exact = input_gradient(copy.deepcopy(model).double(), x.double(), y, cross_entropy)
    assert not (g.flatten(1).abs().sum(1) == 0).any()
    cos = F.cosine_similarity(g.flatten(1).double(), exact.flatten(1), dim=1)
    assert float(cos.min()) > 0.99  # every direction is right, the zero rows included


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attacks_under_autocast_keep_the_input_dtype_and_the_ball(
    digits, digits_cnn, dtype
) -> None:
    x, y = digits.x_test[:128], digits.y_test[:128]
    for threat in (at.LinfBall(0.1), at.L2Ball(0.5)):
        with torch.autocast("cpu", dtype=dtype):
            x_adv = at.PGD(threat, steps=5)(digits_cnn, x, y, generator=torch.Generator())
        assert x_adv.dtype == torch.float32
        assert float(threat.norm(x_adv - x).max()) <= threat.eps + 1e-6
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    amp = at.evaluate(digits_cnn, (x, y), {"pgd": at.PGD(at.LinfBall(0.1))}, amp=True)
    full = at.evaluate(digits_cnn, (x, y), {"pgd": at.PGD(at.LinfBall(0.1))})
    assert abs(amp["pgd"] - full["pgd"]) <= 0.05
