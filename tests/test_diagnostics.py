"""Gradient-masking checks: they fire on a model that masks its gradients and stay quiet on a
normally trained one."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advtrade.evaluation import GradientMaskingWarning, check_gradient_masking
from advtrade.threats import L2Ball, LinfBall

from .conftest import train_standard


class Quantise(nn.Module):
    """Rounds every pixel to 0 or 1: the classifier after it is fine, but the input gradient
    is exactly zero everywhere (a classic accidental gradient mask)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)


class Detach(nn.Module):
    """Cuts the autograd graph, as a numpy round trip in a preprocessing layer would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


def mlp(*front: nn.Module) -> nn.Module:
    """An MLP rather than the shared SmallCNN: one check runs ~400 attack passes, a tenth of
    the cost on it."""
    return nn.Sequential(*front, nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def models(digits) -> dict[str, nn.Module]:
    x, y = digits.x_train, digits.y_train
    torch.manual_seed(0)
    normal = train_standard(mlp(), x, y, epochs=8)
    masked = train_standard(mlp(Quantise()), x, y, epochs=8)
    return {"normal": normal, "masked": masked}


@pytest.fixture(scope="module")
def batch(digits) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.x_test[:200], digits.y_test[:200]


@pytest.mark.parametrize("threat", [LinfBall(0.05), L2Ball(0.5)], ids=["linf", "l2"])
def test_quiet_on_a_normal_model(models, batch, threat) -> None:
    x, y = batch
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        findings = check_gradient_masking(
            models["normal"], x, y, threat, generator=torch.Generator().manual_seed(0)
        )
    assert findings == []


@pytest.mark.parametrize("threat", [LinfBall(0.05), L2Ball(0.5)], ids=["linf", "l2"])
def test_fires_on_a_quantising_model(models, batch, threat) -> None:
    x, y = batch
    model = models["masked"]
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.8  # a decent classifier
    with pytest.warns(GradientMaskingWarning) as record:
        findings = check_gradient_masking(
            model, x, y, threat, generator=torch.Generator().manual_seed(0)
        )
    checks = {f.check for f in findings}
    assert len(record) == len(findings) and "zero_gradients" in str(record[0].message)
    assert {"zero_gradients", "large_eps"} <= checks
    zero = next(f for f in findings if f.check == "zero_gradients")
    assert zero.details["share"] == 1.0 and "zero" in str(zero)
    assert [str(w.message) for w in record] == [str(f) for f in findings]


def test_non_finite_and_missing_gradients(batch) -> None:
    x, y = batch
    torch.manual_seed(0)
    sqrt_model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    sqrt_model.insert(0, type("Sqrt", (nn.Module,), {"forward": lambda self, x: x.sqrt()})())
    findings = check_gradient_masking(sqrt_model, x, y, LinfBall(0.05), warn=False)
    assert "nonfinite_gradients" in {f.check for f in findings}  # d sqrt(x)/dx = inf at 0
    cut = mlp(Detach())
    findings = check_gradient_masking(cut, x, y, LinfBall(0.05), warn=False)
    # gradient attacks cannot run at all; the gradient-free Square still finds the weaknesses
    assert [f.check for f in findings] == ["zero_gradients", "gradient_free"]


def test_argument_errors(models, batch) -> None:
    x, y = batch
    model = models["normal"]
    with pytest.raises(ValueError, match="eps"):
        check_gradient_masking(model, x, y, LinfBall(torch.full((200,), 0.1)))
    with pytest.raises(TypeError, match="threat"):
        check_gradient_masking(model, x, y, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        check_gradient_masking(model, x, y, LinfBall(0.1), tolerance=2.0)
    with pytest.raises(ValueError, match="domain"):
        check_gradient_masking(model, x + 1.0, y, LinfBall(0.1))


# ------------------------------------------------------------- hand-written masking models
# One-dimensional models of a single input x ∈ [0, 1], every example at x0 = 0.5 with label 0
# and threat LinfBall(0.1). The logits are [m(t), 0] with t = x − x0: class 0 iff m > 0. m is
# a smooth part minus 3·1[t ∈ pocket]; the indicator carries no gradient (a comparison), so
# the attacks follow the smooth part and succeed only by landing in a pocket. With ε = 0.1 the
# check runs PGD-20 (step 2.5ε'/20 = ε'/8, random start) at ε' = ε·(1/4, 1/2, 1, 2, 4) and at
# ε' = 1 (the domain), PGD-80 with 3 restarts (step ε/32) and FGSM (one step of ε) at ε.


class Pocketed(nn.Module):
    def __init__(self, smooth, pocket) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.smooth, self.pocket = smooth, pocket

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x[:, 0] - 0.5
        m = self.smooth(t) - 3.0 * self.pocket(t).to(x.dtype)
        return torch.stack([m, torch.zeros_like(m)], dim=1)


def _rising(t: torch.Tensor) -> torch.Tensor:
    """Margin 1 − t > 0 on the domain: the loss grows with x, every attack walks right."""
    return 1.0 - t


MASKING_MODELS = {
    # m = 1 − 3t: walks right, wrong only past t = 1/3, so PGD fails up to ε' = 0.2 and wins
    # from ε' = 0.4 on; FGSM and PGD agree; nothing fires.
    "control": Pocketed(lambda t: 1.0 - 3.0 * t, lambda t: torch.zeros_like(t, dtype=torch.bool)),
    # A pocket of half-width 1e-5 exactly at x0 + ε/2 (and everything past t = 0.45): at
    # ε' = ε/2 every walk is clipped onto the ball's edge, the pocket (accuracy 0); at ε' = ε
    # it walks in steps of ε/8 over the pocket to the edge t = 0.1 (accuracy ≈ 1, landing on it
    # has probability ~2e-5/0.0125 per example); at ε' = 2ε, 4ε the same (edges 0.2, 0.4) and
    # at ε' = 1 it reaches t ≥ 0.45. Accuracy rises from 0 to 1 between ε/2 and ε.
    "not_monotone": Pocketed(_rising, lambda t: ((t - 0.05).abs() <= 1e-5) | (t >= 0.45)),
    # A pocket of width 0.004 at t = 0.07 inside the ball (and everything past t = 0.15): the
    # 80-step walk (steps of ε/32 = 0.0031 < 0.004) cannot jump it, so every run started left
    # of it (probability 0.85) lands in it, and with 3 restarts accuracy is ≤ 0.15³ + noise;
    # the 20-step walk (steps 0.0125) lands in it with probability ~0.004/0.0125 only
    # (accuracy ≈ 0.7). The ε' ≥ 2ε runs all reach t ≥ 0.15 (accuracy 0): monotone.
    "more_steps": Pocketed(_rising, lambda t: ((t - 0.07).abs() <= 0.002) | (t >= 0.15)),
    # The margin's slope is −1 at x0 (a dip of width ~0.002: m = 1 + t − 0.004·tanh(t/0.002))
    # and +1 everywhere else, and the pockets lie at the ball's right edge (t ≥ ε − 1e-4) and
    # beyond its left edge (t ≤ −ε − 1e-4). FGSM follows the slope at x0 to the right edge
    # (accuracy 0); PGD from a random start walks left to t = −ε, bouncing out of the dip by
    # steps of ε/8 that never reach the right edge (accuracy 1 but for starts within 1e-4 of
    # it); at ε' ≥ 2ε the walk left crosses −ε − 1e-4 (accuracy 0), so the curve is monotone.
    "fgsm_stronger": Pocketed(
        lambda t: 1.0 + t - 0.004 * torch.tanh(t / 0.002),
        lambda t: (t >= 0.1 - 1e-4) | (t <= -0.1 - 1e-4),
    ),
}


@pytest.mark.parametrize("name", list(MASKING_MODELS))
def test_each_attack_failure_fires_its_own_finding(name: str) -> None:
    """Each hand-written model fires exactly its finding, with the accuracies its construction
    gives; the same construction without a pocket (control) fires nothing."""
    model = MASKING_MODELS[name]
    x, y = torch.full((200, 1), 0.5), torch.zeros(200, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        findings = check_gradient_masking(model, x, y, LinfBall(0.1), generator=gen)
    # a pocket FGSM lands in is also found by the gradient-free Square: both fire
    extra = ["gradient_free"] if name == "fgsm_stronger" else []
    assert [f.check for f in findings] == ([] if name == "control" else [name, *extra])
    assert [str(w.message) for w in caught] == [str(f) for f in findings]
    if name == "control":
        return
    details = findings[0].details
    assert details["eps"] == pytest.approx(0.1)
    if name == "not_monotone":
        assert details["accuracy_before"] == 0.0 and details["accuracy_after"] >= 0.95
    elif name == "more_steps":
        assert details["accuracy_strong"] <= 0.05 and 0.5 <= details["accuracy"] <= 0.9
    else:
        assert details["accuracy_fgsm"] == 0.0 and details["accuracy_pgd"] >= 0.95
