"""RobustTrainer and objectives: the contract, model hygiene, TRADES, schedules, callbacks."""

from __future__ import annotations

import copy
import io
import itertools
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advtrade import FGSM, PGD, L2Ball, LinfBall, WorstOf
from advtrade.losses import trades_kl
from advtrade.training import (
    TRADES,
    AdversarialTraining,
    Callback,
    History,
    LinearWarmup,
    LossObjective,
    Objective,
    PlainProgress,
    RobustTrainer,
    Standard,
    StepOutput,
    TrainContext,
)
from advtrade.training._callbacks import make_progress
from advtrade.training._context import configure_attack

from .conftest import SmallCNN, random_loader


def _trainer(model: nn.Module, objective: object, **kwargs: object) -> RobustTrainer:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    kwargs.setdefault("progress", None)
    return RobustTrainer(model, opt, objective, **kwargs)  # type: ignore[arg-type]


ATTACK = PGD(LinfBall(0.1), steps=2)
OBJECTIVES = [Standard(), AdversarialTraining(ATTACK), TRADES(ATTACK, beta=1.0)]


# ------------------------------------------------------------------------ the objective contract
@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: type(o).__name__)
def test_every_objective_trains_and_reports(objective: LossObjective) -> None:
    """Each objective changes the weights and fills the history with what it measured."""
    torch.manual_seed(0)
    model = SmallCNN()
    before = copy.deepcopy(model.state_dict())
    history = _trainer(model, objective).fit(random_loader(), 2, random_loader(64, seed=1))
    assert len(history) == 2 and [r["epoch"] for r in history] == [1, 2]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    rec = history[-1]
    assert math.isfinite(rec["loss"]) and rec["lr"] == 1e-3 and rec["time"] > 0
    x, y = random_loader(64, seed=1).dataset.tensors
    with torch.no_grad():
        hits = int((model.eval()(x).argmax(1) == y).sum())  # the final model, counted by hand
    assert rec["eval_clean_acc"] == hits / 64
    if rec["eval_robust_acc"] is not None:  # robust means robust and clean
        assert rec["eval_robust_acc"] <= rec["eval_clean_acc"]
    has_attack = not isinstance(objective, Standard)
    assert (rec["eval_robust_acc"] is not None) == has_attack
    assert (rec["train_robust_acc"] is not None) == has_attack
    assert (rec["train_clean_acc"] is not None) == (not isinstance(objective, AdversarialTraining))
    assert rec["eps"] == (0.1 if has_attack else None)
    json.loads(history.to_json())


def test_binary_one_logit_model_with_sign_labels() -> None:
    """A (B, 1)-logit model with ±1 labels trains with the logistic loss."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen)
    y = torch.where(x[:, 0] > 0, 1, -1)
    loader = DataLoader(TensorDataset(x, y), batch_size=50)
    model = nn.Linear(5, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    objective = AdversarialTraining(FGSM(LinfBall(0.05, domain=None)))
    hist = RobustTrainer(model, opt, objective, progress=None).fit(loader, 5, loader)
    assert hist[-1]["eval_clean_acc"] > 0.9 and hist[-1]["train_robust_acc"] > 0.8


def test_custom_replay_objective_uses_ctx_optimize_several_times() -> None:
    """A 'free'-style objective: m optimizer steps per batch, each backward reused for the
    perturbation through ``ctx.optimize(loss, wrt=(delta,))``."""

    class Replay(Objective):
        def __init__(self, m: int, eps: float) -> None:
            self.m, self.eps = m, eps
            self.grads: list[Tensor] = []
            self.steps = 0

        def train_step(self, x: Tensor, y: Tensor, ctx: TrainContext) -> StepOutput:
            delta = torch.zeros_like(x, requires_grad=True)
            for _ in range(self.m):
                with ctx.autocast():
                    logits = ctx.model(x + delta)
                    loss = nn.functional.cross_entropy(logits, y)
                (g,) = ctx.optimize(loss, wrt=(delta,))
                self.grads.append(g)
                self.steps += 1
                delta = (delta + self.eps * g.sign()).clamp(-self.eps, self.eps)
                delta = delta.detach().requires_grad_(True)
            return StepOutput(loss.detach(), None, logits.detach())

    torch.manual_seed(0)
    model = SmallCNN()
    objective = Replay(3, 0.1)
    loader = random_loader(64, 32)
    hist = _trainer(model, objective).fit(loader, 1)
    assert objective.steps == 3 * len(loader)
    assert all(g.shape == (32, 1, 8, 8) and g.abs().sum() > 0 for g in objective.grads)
    assert hist[0]["train_robust_acc"] is not None


# ------------------------------------------------------------------------ modes and hygiene
class Spy(nn.Module):
    """Records, per forward call, the phase (weight update / attack / no-grad) and the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[str, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            phase = "nograd"
        else:
            phase = "update" if self.scale.requires_grad else "attack"
        self.calls.append((phase, self.training))
        return x * self.scale


@pytest.mark.parametrize("attack_mode", ["eval", "as_is"])
def test_weight_updates_run_in_training_mode_and_attacks_in_attack_mode(attack_mode: str) -> None:
    """The peer bug: after a per-epoch evaluation the next epoch's updates ran in eval mode."""

    torch.manual_seed(0)
    spy = Spy()
    model = nn.Sequential(spy, SmallCNN(batchnorm=True, dropout=0.1))
    model.eval()  # the user left it in eval mode; fit trains in training mode anyway
    objective = AdversarialTraining(PGD(LinfBall(0.1), steps=2))
    trainer = _trainer(model, objective, attack_mode=attack_mode)
    evaluate = trainer.evaluate

    def marked_evaluate(*args, **kwargs):  # type: ignore[no-untyped-def]
        spy.calls.append(("eval_start", False))
        out = evaluate(*args, **kwargs)
        spy.calls.append(("eval_end", False))
        return out

    trainer.evaluate = marked_evaluate  # type: ignore[method-assign]
    trainer.fit(random_loader(64), 3, random_loader(32, seed=1))
    # the one-off probe for the number of classes (label checks): eval mode, no gradients
    assert spy.calls.pop(0) == ("nograd", False)
    updates = [mode for phase, mode in spy.calls if phase == "update"]
    assert len(updates) == 3 * 2 and all(updates)
    phase, training, evaluation = "train", [], []
    for kind, mode in spy.calls:
        if kind in ("eval_start", "eval_end"):
            phase = "eval" if kind == "eval_start" else "train"
        elif kind != "update":
            (training if phase == "train" else evaluation).append(mode)
    assert training and all(m == (attack_mode == "as_is") for m in training)
    assert evaluation and not any(evaluation)  # evaluation always runs in eval mode
    assert not any(m.training for m in model.modules())  # the user's modes are back


def test_train_mode_as_is_keeps_frozen_batchnorm() -> None:
    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True)
    bn = model.features[1]
    bn.eval()  # frozen statistics
    stats = bn.running_mean.clone()
    _trainer(model, Standard(), train_mode="as_is").fit(random_loader(), 1)
    assert torch.equal(bn.running_mean, stats) and not bn.training and model.training


def test_fit_changes_only_parameters_buffers_and_optimizer_state() -> None:
    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True, dropout=0.2)
    model.features.eval()
    model.head[2].bias.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    params = list(model.parameters())
    attrs = {name: set(vars(m)) for name, m in model.named_modules()}
    objective = TRADES(PGD(LinfBall(0.1), steps=2))
    trainer = RobustTrainer(model, opt, objective, progress=None)
    trainer.fit(random_loader(), 2, random_loader(32, seed=1))
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert all(p.grad is None for p in model.parameters())
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert {name: set(vars(m)) for name, m in model.named_modules()} == attrs
    assert opt.state  # momentum buffers: the optimizer state did change


def test_evaluate_leaves_model_untouched(digits_cnn: nn.Module, digits) -> None:
    model = copy.deepcopy(digits_cnn)
    model.train()
    model.features[0].eval()
    modes = [m.training for m in model.modules()]
    state = copy.deepcopy(model.state_dict())
    trainer = _trainer(model, AdversarialTraining(PGD(LinfBall(0.1), steps=3)))
    loader = DataLoader(TensorDataset(digits.x_test[:64], digits.y_test[:64]), batch_size=32)
    report = trainer.evaluate(loader)
    assert set(report.accuracies) >= {"clean", "robust"}
    assert report["robust"] <= report["clean"]
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------ TRADES
def test_trades_inner_attack_maximises_the_kl(digits_cnn: nn.Module, digits) -> None:
    model = digits_cnn
    x, _ = digits.x_test[:128], digits.y_test[:128]
    objective = TRADES(PGD(LinfBall(0.1), steps=10))
    assert objective.inner_attack.loss is trades_kl and objective.attack.loss is None
    with torch.no_grad():
        clean = model(x)
    gen = torch.Generator().manual_seed(0)
    x_adv = objective.inner_attack(model, x, clean, generator=gen)
    x_rand = LinfBall(0.1).random_start(x, gen)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        kl_adv, kl_rand = trades_kl(model(x_adv), clean), trades_kl(model(x_rand), clean)
    assert float((kl_adv >= kl_rand).float().mean()) > 0.95
    assert float(kl_adv.mean()) > 5 * float(kl_rand.mean())


def test_trades_beta_zero_has_the_standard_gradient() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = TrainContext(model, opt, generator=torch.Generator().manual_seed(0))
    grads = []
    for objective in (Standard(), TRADES(PGD(LinfBall(0.1), steps=2), beta=0.0)):
        loss, _, _ = objective.loss(model, x, y, ctx)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads))
    # with beta > 0 the KL term adds to the loss exactly
    objective = TRADES(PGD(LinfBall(0.1), steps=2), beta=2.0)
    ctx = TrainContext(model, opt, generator=torch.Generator().manual_seed(1))
    loss, clean, adv = objective.loss(model, x, y, ctx)
    assert clean is not None and adv is not None
    # Zhang et al.'s loss: CE + β·KL(p_clean ‖ p_adv) averaged over the batch (KLDivLoss summed,
    # divided by the batch size), by PyTorch's own KL divergence
    kl = nn.functional.kl_div(
        nn.functional.log_softmax(adv, dim=1), nn.functional.softmax(clean, dim=1),
        reduction="batchmean",
    )  # fmt: skip
    expected = nn.functional.cross_entropy(clean, y) + 2.0 * kl
    assert float(kl.detach()) > 1e-4  # the KL term is not negligible, so the check covers it
    torch.testing.assert_close(loss, expected)


# ------------------------------------------------------------------------ ε schedules
def test_linear_warmup_values() -> None:
    schedule = LinearWarmup(0.3, 3)
    assert [schedule(e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    assert LinearWarmup(0.3, 2, start=0.1)(0) == pytest.approx(0.2)


@given(
    eps=st.floats(0.0, 10.0),
    frac=st.floats(0.0, 1.0),
    epochs=st.integers(1, 20),
)
def test_linear_warmup_is_monotone_bounded_and_reaches_eps(
    eps: float, frac: float, epochs: int
) -> None:
    start = eps * frac
    schedule = LinearWarmup(eps, epochs, start=start)
    values = [schedule(e) for e in range(epochs + 3)]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values))
    assert all(start - 1e-12 <= v <= eps + 1e-12 for v in values)
    assert values[epochs - 1 :] == pytest.approx([eps] * 4)


def test_eps_schedule_reaches_the_attack() -> None:
    seen: list[float] = []

    class Probe(AdversarialTraining):
        def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
            seen.append(ctx.configure(self.attack).threat.eps)
            return super().loss(model, x, y, ctx)

    torch.manual_seed(0)
    objective = Probe(PGD(LinfBall(0.3), steps=1, step_size=0.1))
    hist = _trainer(SmallCNN(), objective, eps_schedule=LinearWarmup(0.3, 3)).fit(
        random_loader(64), 4, random_loader(32, seed=1)
    )
    assert hist.column("eps") == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert seen == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3])


def test_configure_attack_scales_step_and_recurses_into_worst_of() -> None:
    attack = PGD(LinfBall(0.2), steps=2, step_size=0.1)
    out = configure_attack(attack, 0.1, "as_is")
    assert out.threat.eps == 0.1 and out.step_size == pytest.approx(0.05) and out.mode == "as_is"
    combo = configure_attack(WorstOf([attack, PGD(L2Ball(1.0))]), 0.05, "as_is")
    assert [a.threat.eps for a in combo.attacks] == [0.05, 0.05]
    assert combo.mode == "as_is" and all(a.mode == "as_is" for a in combo.attacks)
    assert configure_attack(attack, None, "eval") is attack


# ------------------------------------------------------------------------ options
def test_scheduler_epoch_and_batch_intervals() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    trainer = RobustTrainer(model, opt, Standard(), scheduler=sched, progress=None)
    hist = trainer.fit(random_loader(), 3)
    assert hist.column("lr") == pytest.approx([0.1, 0.05, 0.025])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    trainer = RobustTrainer(
        model, opt, Standard(), scheduler=sched, scheduler_interval="batch", progress=None
    )
    trainer.fit(random_loader(96, 32), 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 8)


def test_reduce_lr_on_plateau_steps_on_the_epochs_training_loss() -> None:
    """ReduceLROnPlateau(factor=0.1, patience=2) is stepped once per epoch with the epoch's
    training loss, the mean over examples. The scripted per-batch losses (batches of 3 and 1)
    give epoch losses 1, 0.5, 0.5, ...: no improvement after epoch 2, so the lr is cut after
    epochs 5 and 8 (more than `patience` epochs without improvement, counting restarting at a
    cut). The last batch's loss and the mean of the batch losses keep falling, so a scheduler
    fed either would never cut."""

    class Scripted(Objective):
        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def train_step(self, x: Tensor, y: Tensor, ctx: TrainContext) -> StepOutput:
            last = 1.0 - 0.1 * ctx.epoch  # the last batch: 1.0, 0.9, 0.8, ...
            epoch_loss = 1.0 if ctx.epoch == 0 else 0.5
            value = last if x.shape[0] == 1 else (4 * epoch_loss - last) / 3
            self.seen.append((ctx.epoch, x.shape[0]))
            return StepOutput(torch.tensor(value), None, None)

    model = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=2)
    objective = Scripted()
    loader = DataLoader(TensorDataset(torch.rand(4, 2), torch.tensor([0, 1, 2, 0])), batch_size=3)
    trainer = RobustTrainer(model, opt, objective, scheduler=plateau, progress=None)
    hist = trainer.fit(loader, 8)
    assert objective.seen == [(e, n) for e in range(8) for n in (3, 1)]
    assert hist.column("loss") == pytest.approx([1.0] + [0.5] * 7)
    assert hist.column("lr") == pytest.approx([0.1] * 5 + [0.01] * 3)  # the lr each epoch used
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)


def test_grad_clip_bounds_the_update() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = DataLoader(TensorDataset(torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))))
    RobustTrainer(model, opt, Standard(), grad_clip=1e-3, progress=None).fit(
        DataLoader(loader.dataset, batch_size=8), 1
    )
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert 0 < float(step.norm()) <= 1e-3 * (1 + 1e-4)


def test_amp_on_cpu_trains_in_bfloat16() -> None:
    dtypes: list[torch.dtype] = []

    class Probe(Standard):
        def loss(self, model, x, y, ctx):  # type: ignore[no-untyped-def]
            out = super().loss(model, x, y, ctx)
            dtypes.append(out[1].dtype)
            return out

    torch.manual_seed(0)
    model = SmallCNN()
    hist = _trainer(model, Probe(), amp=True).fit(random_loader(), 1)
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(hist[0]["loss"])


# ------------------------------------------------------------------------ callbacks, history
def test_callbacks_see_every_hook_in_order_and_can_stop() -> None:
    events: list[str] = []

    class Recorder(Callback):
        def on_fit_start(self, trainer):  # type: ignore[no-untyped-def]
            events.append("fit_start")

        def on_epoch_start(self, trainer, epoch):  # type: ignore[no-untyped-def]
            events.append(f"epoch_start {epoch}")

        def on_batch_end(self, trainer, batch_index, output):  # type: ignore[no-untyped-def]
            assert output.loss.ndim == 0 and output.logits_clean.shape == (32, 10)
            events.append(f"batch {batch_index}")

        def on_epoch_end(self, trainer, record):  # type: ignore[no-untyped-def]
            events.append(f"epoch_end {record['epoch']}")
            trainer.stop_training = record["epoch"] == 2

        def on_fit_end(self, trainer):  # type: ignore[no-untyped-def]
            events.append("fit_end")

    torch.manual_seed(0)
    trainer = _trainer(SmallCNN(), Standard(), callbacks=[Recorder(), Callback()])
    trainer.fit(random_loader(64, 32), 5)
    assert events == [
        "fit_start",
        *("epoch_start 0", "batch 0", "batch 1", "epoch_end 1"),
        *("epoch_start 1", "batch 0", "batch 1", "epoch_end 2"),
        "fit_end",
    ]
    assert trainer.epoch == 2


def test_history_table_json_and_columns() -> None:
    hist = History([{"epoch": 1, "loss": 0.5, "eval_robust_acc": None, "time": 1.25, "x": 3}])
    hist.append({"epoch": 2, "loss": 0.25, "eval_robust_acc": 0.5, "time": 1.0})
    assert hist.column("loss") == [0.5, 0.25] and hist.column("x") == [3, None]
    assert History(json.loads(hist.to_json())) == hist
    lines = str(hist).splitlines()
    assert lines[0].split() == ["epoch", "loss", "eval_robust_acc", "time", "x"]
    assert lines[1].split() == ["1", "0.5", "-", "1.25", "3"]
    assert "History(2 epochs)" in repr(hist)


def test_progress_modes(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    torch.manual_seed(0)
    _trainer(SmallCNN(), Standard(), progress="plain").fit(random_loader(), 2)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("epoch 1/2  loss ")
    _trainer(SmallCNN(), Standard(), progress=None).fit(random_loader(), 1)
    assert capsys.readouterr() == ("", "")
    buf = io.StringIO()
    _trainer(SmallCNN(), Standard(), callbacks=[PlainProgress(buf)]).fit(random_loader(), 1)
    assert buf.getvalue().startswith("epoch 1/1")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert isinstance(make_progress("auto"), PlainProgress)
    with pytest.raises(ImportError, match="advtrade\\[progress\\]"):
        make_progress("tqdm")


def test_tqdm_progress_when_installed(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    torch.manual_seed(0)
    _trainer(SmallCNN(), Standard(), progress="tqdm").fit(random_loader(), 1)
    assert "epoch 1/1" in capsys.readouterr().err


def test_fit_counts_epochs_over_the_whole_run() -> None:
    torch.manual_seed(0)
    trainer = _trainer(SmallCNN(), Standard())
    trainer.fit(random_loader(), 1)
    trainer.fit(random_loader(), 3)
    assert trainer.epoch == 3 and len(trainer.history) == 3
    with pytest.warns(UserWarning, match="already trained 3 epochs"):
        trainer.fit(random_loader(), 2)
    assert trainer.epoch == 3


def test_device_and_move_model() -> None:
    model = SmallCNN()
    trainer = _trainer(model, Standard(), device="cpu")
    assert trainer.device == torch.device("cpu") and trainer.generator.device.type == "cpu"
    with pytest.raises(ValueError, match="move_model=True"):
        _trainer(SmallCNN(), Standard(), device="meta")
