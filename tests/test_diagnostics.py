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
    assert [f.check for f in findings] == ["zero_gradients"]  # attacks cannot run at all


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
