"""Bad input to threat models and attacks gets a clear error that names the argument."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import advtrade as at


@pytest.mark.parametrize("norm", [at.LinfBall, at.L2Ball])
@pytest.mark.parametrize("eps", [-0.1, math.nan, math.inf, -math.inf])
def test_bad_eps(norm, eps):
    with pytest.raises(ValueError, match="eps"):
        norm(eps)


def test_bad_eps_tensor_and_type():
    with pytest.raises(ValueError, match="eps"):
        at.LinfBall(torch.tensor([0.1, -0.2]))
    with pytest.raises(ValueError, match="eps"):
        at.LinfBall(torch.tensor([0.1, math.nan]))
    with pytest.raises(ValueError, match="eps"):
        at.LinfBall(torch.ones(2, 2))
    with pytest.raises(TypeError, match="eps"):
        at.LinfBall("0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("domain", [(1.0, 0.0), (0.0, math.inf), (0.5, 0.5)])
def test_bad_domain(domain):
    with pytest.raises(ValueError, match="domain"):
        at.LinfBall(0.1, domain=domain)
    with pytest.raises(TypeError, match="domain"):
        at.LinfBall(0.1, domain="01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -1.0}, "step_size"),
        ({"step_size": math.nan}, "step_size"),
        ({"loss": "ce"}, "loss"),
        ({"mode": "train"}, "mode"),
    ],
)
def test_bad_pgd_arguments(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        at.PGD(at.LinfBall(0.1), **kwargs)


def test_bad_threat_and_worst_of():
    with pytest.raises(TypeError, match="threat"):
        at.PGD(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attacks"):
        at.WorstOf([])
    with pytest.raises(ValueError, match="targeted"):
        at.WorstOf([at.FGSM(at.LinfBall(0.1)), at.FGSM(at.LinfBall(0.1), targeted=True)])


@pytest.fixture
def setup():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    return model, torch.rand(5, 3, 4), torch.randint(0, 4, (5,)), at.PGD(at.LinfBall(0.1), steps=2)


def test_x_outside_domain(setup):
    model, x, y, attack = setup
    with pytest.raises(ValueError, match=r"x has values in .* outside the threat model's domain"):
        attack(model, x * 255, y)


def test_x_not_float(setup):
    model, x, y, attack = setup
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        attack(model, (x * 255).long(), y)


@pytest.mark.parametrize(
    "y,error,match",
    [
        (torch.zeros(4).long(), ValueError, r"y must have shape \(5,\)"),
        (torch.zeros(5, 1).long(), ValueError, r"y must have shape \(5,\)"),
        (torch.zeros(5), TypeError, "integer class indices"),
        (torch.tensor([0, 1, 2, 3, 4]), ValueError, r"labels in \[0, 4\].*4 classes"),
        (torch.tensor([0, 1, 2, 3, -1]), ValueError, "labels must lie in"),
        ([0, 1, 2, 3, 0], TypeError, "y must be a tensor"),
    ],
)
def test_bad_labels(setup, y, error, match):
    model, x, _, attack = setup
    with pytest.raises(error, match=match):
        attack(model, x, y)


@pytest.mark.parametrize("shape", [(5, 4, 2), (4, 3), (5, 1, 1), ()])
def test_model_output_of_wrong_shape(setup, shape):
    _, x, y, attack = setup

    class Bad(nn.Module):
        def forward(self, inp):
            return torch.zeros(shape, requires_grad=True) + inp.sum() * 0

    with pytest.raises(ValueError, match="the model's output has shape"):
        attack(Bad(), x, y)


def test_model_output_not_a_tensor(setup):
    _, x, y, attack = setup

    class Tuple(nn.Module):
        def forward(self, inp):
            return (inp.flatten(1)[:, :4],)

    with pytest.raises(TypeError, match="must return a tensor of logits"):
        attack(Tuple(), x, y)


def test_not_a_model_and_bad_generator(setup):
    model, x, y, attack = setup
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        attack(lambda t: t, x, y)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        attack(model, x, y, generator=0)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_x_and_y_on_different_devices(setup):
    model, x, y, attack = setup
    with pytest.raises(ValueError, match="y is on"):
        attack(model, x, y.cuda())


def test_x_and_y_on_different_devices_meta(setup):
    """The device check runs before anything touches the data, so a meta tensor shows it."""
    model, x, y, attack = setup
    with pytest.raises(ValueError, match="y is on meta but x is on cpu"):
        attack(model, x, y.to("meta"))


def test_per_example_eps_of_wrong_length(setup):
    model, x, y, _ = setup
    with pytest.raises(ValueError, match=r"eps has one budget per example \(3\)"):
        at.PGD(at.LinfBall(torch.full((3,), 0.1)))(model, x, y)


def test_normalize_validates():
    with pytest.raises(ValueError, match="std"):
        at.Normalize([0.5], [0.0])
    with pytest.raises(ValueError, match="same length"):
        at.Normalize([0.5, 0.5], [0.2])
