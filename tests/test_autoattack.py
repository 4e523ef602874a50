"""AutoAttack, EOT, and the gradient-free check against gradient masking."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import advtrade as at
from advtrade.attacks import APGD, APGDT, FAB, Square
from advtrade.attacks._core import Ascent
from advtrade.evaluation import check_gradient_masking
from advtrade.losses import cross_entropy

from .conftest import SmallCNN


class Quantise(nn.Module):
    """round(4x)/4 before the model: a non-differentiable input quantisation."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(torch.round(x * 4) / 4)


def _linear_problem(n: int = 300, classes: int = 5, dim: int = 12, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(dim, classes)
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, dim, generator=gen))
        model.bias.copy_(torch.randn(classes, generator=gen))
    x = torch.randn(n, dim, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _linf_distance(model: nn.Linear, x: Tensor, y: Tensor) -> Tensor:
    """The exact ℓ∞ distance to the decision boundary of a linear classifier (unbounded
    inputs): min over j ≠ y of (z_y − z_j) / ‖w_y − w_j‖₁."""
    with torch.no_grad():
        z = model(x)
        w = model.weight
        margins = z.gather(1, y[:, None]) - z
        norms = (w[y][:, None, :] - w[None, :, :]).abs().sum(-1)
        ratio = margins / norms.clamp_min(1e-12)
        ratio[torch.arange(len(y)), y] = torch.inf
    return ratio.min(dim=1).values


def test_autoattack_is_exact_on_a_linear_model() -> None:
    """On a linear model the robust set is known in closed form; AutoAttack must find every
    example whose distance to the boundary is below ε and no other."""
    model, x, y = _linear_problem()
    eps = 0.15
    distance = _linf_distance(model, x, y)
    attack = at.AutoAttack(at.LinfBall(eps, domain=None), steps=30, queries=200, progress=None)
    x_adv, stages = attack.run(model, x, y)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    clear = (distance - eps).abs() > 1e-3  # leave out examples on the threshold
    assert torch.equal(fooled[clear], (distance < eps)[clear])
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert [s.name for s in stages] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    robust = [s.robust for s in stages]
    assert robust == sorted(robust, reverse=True) and robust[-1] == int((~fooled).sum())


def test_standard_autoattack_is_at_least_as_strong_as_pgd(digits, digits_cnn) -> None:
    x, y = digits.x_test[:200], digits.y_test[:200]
    threat = at.LinfBall(0.1)
    aa = at.AutoAttack(threat, steps=20, queries=300, progress=None)
    report = at.evaluate(digits_cnn, (x, y), {"pgd": at.PGD(threat, steps=20), "aa": aa})
    assert report["aa"] <= report["pgd"]
    x_adv, stages = aa.run(digits_cnn, x, y)
    assert stages[-1].robust == report.counts["aa"]  # run and evaluate agree
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and float(x_adv.min()) >= 0


def test_autoattack_plugs_in_wherever_an_attack_does(digits, digits_cnn) -> None:
    x, y = digits.x_test[:96], digits.y_test[:96]
    aa = at.AutoAttack(at.LinfBall(0.1), steps=5, queries=50, target_classes=2, progress=None)
    curve = at.robust_accuracy_curve(digits_cnn, (x, y), aa, [0.05, 0.1])
    single = at.evaluate(digits_cnn, (x, y), {"aa": aa.with_eps(0.05)})
    assert curve.counts[0] <= single.counts["aa"] + 2  # the search agrees with one run
    worst = at.WorstOf([at.FGSM(at.LinfBall(0.1)), aa])
    assert at.evaluate(digits_cnn, (x, y), {"w": worst})["w"] <= at.evaluate(
        digits_cnn, (x, y), {"aa": aa}
    )["aa"]
    torch.manual_seed(0)
    model = SmallCNN()
    trainer = at.RobustTrainer(
        model,
        torch.optim.Adam(model.parameters(), 1e-3),
        at.AdversarialTraining(at.PGD(at.LinfBall(0.1), steps=2)),
        progress=None,
    )
    history = trainer.fit([(x, y)], 1, [(x, y)], eval_attack=aa)
    assert history[-1]["eval_robust_acc"] == at.evaluate(
        model, (x, y), {"aa": aa}, generator=torch.Generator().manual_seed(trainer._eval_seed)
    )["aa"]


def test_progress_shows_each_attack_and_the_robust_count(digits, digits_cnn, capsys) -> None:
    x, y = digits.x_test[:40], digits.y_test[:40]
    aa = at.AutoAttack(at.L2Ball(0.5), steps=3, queries=20, target_classes=2, progress="plain")
    _, stages = aa.run(digits_cnn, x, y)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"AutoAttack {stage}" for stage in stages]
    assert all(f"{s.robust}/40 robust" in line for s, line in zip(stages, err))


def test_rand_version_uses_eot_and_beats_single_draws() -> None:
    """A randomised model: Gaussian noise (σ = 1) on the input of a small ReLU network in every
    forward pass. Expectation over transformation (the average of 20 gradient draws) finds
    more adversarial examples than one draw per step (measured: 67% → 56% robust)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    inner = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 5))
    x = torch.randn(300, 12, generator=gen)
    with torch.no_grad():
        y = inner(x).argmax(1)

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor) -> Tensor:
            return self.inner(x + torch.randn_like(x))

    threat = at.LinfBall(0.15, domain=None)
    rand = at.AutoAttack(threat, version="rand", steps=20, eot=20, progress=None)
    assert [name for name, _ in rand.attacks(5)] == ["APGD-CE", "APGD-DLR"]
    results = {}
    for name, attack in (("one", APGD(threat, steps=20)), ("eot", APGD(threat, steps=20, eot=20))):
        torch.manual_seed(0)
        x_adv = attack(Noisy(), x, y, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            results[name] = float((inner(x_adv).argmax(1) == y).float().mean())  # noise-free
    assert results["eot"] < results["one"] - 0.05, results


def test_eot_averages_gradients_in_one_batched_pass() -> None:
    calls = []

    class Count(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(6, 3)

        def forward(self, x: Tensor) -> Tensor:
            calls.append(x.shape[0])
            return self.linear(x)

    model = Count()
    x, y = torch.rand(4, 6), torch.tensor([0, 1, 2, 0])
    one = Ascent(model, y, cross_entropy)(x)
    many = Ascent(model, y, cross_entropy, eot=5)(x)
    assert calls == [4, 20]  # one forward of 5 × 4 rows
    assert one.grad is not None and many.grad is not None
    torch.testing.assert_close(many.grad, one.grad)  # a deterministic model: the same average
    torch.testing.assert_close(many.objective, one.objective)


def test_gradient_free_check_catches_input_quantisation(digits, digits_cnn) -> None:
    """PGD reports the quantised model robust; Square does not; the diagnostics say so."""
    x, y = digits.x_test[:120], digits.y_test[:120]
    masked = Quantise(digits_cnn)
    threat = at.LinfBall(0.15)
    report = at.evaluate(
        masked, (x, y), {"pgd": at.PGD(threat, steps=20), "square": Square(threat, queries=500)}
    )
    assert report["pgd"] > 0.8 and report["square"] < report["pgd"] - 0.4
    findings = check_gradient_masking(masked, x, y, threat, queries=500, warn=False)
    found = {f.check: f for f in findings}
    assert "gradient_free" in found
    assert found["gradient_free"].details["accuracy_square"] < 0.5
    quiet = check_gradient_masking(digits_cnn, x, y, threat, queries=500, warn=False)
    assert "gradient_free" not in {f.check for f in quiet}


def test_bad_arguments_name_themselves(digits_cnn) -> None:
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    threat = at.LinfBall(0.1)
    with pytest.raises(ValueError, match="target_classes=10 needs a model with at least 11"):
        APGDT(threat, target_classes=10)(digits_cnn, x, y)
    with pytest.raises(ValueError, match="target_classes"):
        FAB(threat, target_classes=10)(digits_cnn, x, y)
    for kwargs, name in (({"queries": 0}, "queries"), ({"eot": 0}, "eot"), ({"steps": 0}, "steps")):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            at.AutoAttack(threat, **kwargs)
    with pytest.raises(ValueError, match="queries"):
        Square(threat, queries=0)
    with pytest.raises(ValueError, match="eot"):
        at.PGD(threat, eot=0)
    with pytest.raises(ValueError, match="version must be one of"):
        at.AutoAttack(threat, version="plus")  # type: ignore[arg-type]

    class NaN(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.full((x.shape[0], 10), float("nan"))

    with pytest.raises(ValueError, match="non-finite logits"):
        at.AutoAttack(threat, steps=2, queries=5, progress=None)(NaN(), x, y)
