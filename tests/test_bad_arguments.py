"""Property: every public function and class refuses a bad argument with a named error.

Hypothesis draws an entry point and an invalid value for one of its arguments (out of range,
wrong sign, NaN, infinite where a finite value is needed, wrong type) and asserts a
``ValueError`` or ``TypeError`` whose message names that argument, raised before any work.
A second property draws valid values for the same arguments and asserts that no error is
raised, so a check that refuses everything would fail too.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import advtrade as at
from advtrade import datasets, evaluation, models, perception, plotting, synthetic, training

T = at.LinfBall(0.1)
X = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=2)


def _curves(**kwargs: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        plotting.save_curves(Path(folder) / "curves.png", [0, 1], {"a": [0.5, 1.0]}, **kwargs)


def _trainer(**kwargs: Any) -> training.RobustTrainer:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return training.RobustTrainer(model, opt, at.Standard(), progress=None, **kwargs)


@dataclass(frozen=True)
class Arg:
    """One argument of one entry point: how to call it with ``value``, the name its error must
    give, the kind of value it takes, and one valid value of that kind."""

    where: str
    call: Callable[[Any], object]
    name: str
    kind: str
    valid: Any
    optional: bool = False  # None is a valid value (a default to compute, or "off")
    low: int | None = None  # a count's own minimum, when above 1


NAN, INF = math.nan, math.inf
BAD: dict[str, st.SearchStrategy[Any]] = {
    # a whole number >= 1
    "count": st.one_of(
        st.integers(max_value=0),
        st.floats(0.1, 50).filter(lambda v: not v.is_integer()),
        st.sampled_from([True, "3", None, NAN]),
    ),
    # a whole number >= 0
    "index": st.one_of(st.integers(max_value=-1), st.sampled_from([1.5, "0", None, False])),
    # a finite number > 0
    "positive": st.one_of(
        st.floats(max_value=0.0), st.sampled_from([NAN, INF, -INF, "1", None, True])
    ),
    # a finite number >= 0
    "nonnegative": st.one_of(
        st.floats(max_value=-1e-6), st.sampled_from([NAN, INF, "0.1", None, True])
    ),
    # a number in (0, 1)
    "fraction": st.one_of(
        st.floats(max_value=0.0), st.floats(min_value=1.0), st.sampled_from([NAN, "0.5", None])
    ),
    # a number in (0, 1]
    "share": st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=1.0, exclude_min=True),
        st.sampled_from([NAN, "0.5", None]),
    ),
    # a number in [0, 1]
    "unit": st.one_of(
        st.floats(max_value=0.0, exclude_max=True),
        st.floats(min_value=1.0, exclude_min=True),
        st.sampled_from([NAN, "0.5", None]),
    ),
}
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "count": st.integers(1, 3),
    "index": st.integers(0, 3),
    "positive": st.floats(0.01, 0.5),
    "nonnegative": st.floats(0.0, 0.5),
    "fraction": st.floats(0.05, 0.95),
    "share": st.floats(0.05, 1.0),
    "unit": st.floats(0.0, 1.0),
}

ARGS = [
    Arg("LinfBall", lambda v: at.LinfBall(v), "eps", "nonnegative", 0.1),
    Arg("L2Ball", lambda v: at.L2Ball(v), "eps", "nonnegative", 0.1),
    Arg("PGD", lambda v: at.PGD(T, steps=v), "steps", "count", 2),
    Arg("PGD", lambda v: at.PGD(T, restarts=v), "restarts", "count", 2),
    Arg("PGD", lambda v: at.PGD(T, eot=v), "eot", "count", 2),
    Arg("PGD", lambda v: at.PGD(T, step_size=v), "step_size", "positive", 0.1, optional=True),
    Arg("FGSM", lambda v: at.FGSM(T, step_size=v), "step_size", "positive", 0.1, optional=True),
    Arg("APGD", lambda v: at.APGD(T, steps=v), "steps", "count", 2),
    Arg("APGD", lambda v: at.APGD(T, initial_step=v), "initial_step", "positive", 1.0),
    Arg("APGD", lambda v: at.APGD(T, rho=v), "rho", "unit", 0.75),
    Arg("APGDT", lambda v: at.attacks.APGDT(T, target_classes=v), "target_classes", "count", 2),
    Arg("FAB", lambda v: at.attacks.FAB(T, steps=v), "steps", "count", 2),
    Arg("FAB", lambda v: at.attacks.FAB(T, beta=v), "beta", "share", 0.9),
    Arg("Square", lambda v: at.attacks.Square(T, queries=v), "queries", "count", 10),
    Arg("Square", lambda v: at.attacks.Square(T, p_init=v), "p_init", "share", 0.8),
    Arg("AutoAttack", lambda v: at.AutoAttack(T, steps=v), "steps", "count", 5),
    Arg("AutoAttack", lambda v: at.AutoAttack(T, queries=v), "queries", "count", 5),
    Arg("AutoAttack", lambda v: at.AutoAttack(T, eot=v), "eot", "count", 2),
    Arg("TRADES", lambda v: at.TRADES(at.PGD(T), beta=v), "beta", "nonnegative", 6.0),
    Arg("Fast AT", lambda v: at.FastAdversarialTraining(T, step_size=v), "step_size",
        "positive", 0.1, optional=True),
    Arg("Free AT", lambda v: at.FreeAdversarialTraining(T, replays=v), "replays", "count", 4),
    Arg("LinearWarmup", lambda v: training.LinearWarmup(0.1, v), "epochs", "count", 2),
    Arg("LinearWarmup", lambda v: training.LinearWarmup(v, 2), "eps", "nonnegative", 0.1),
    Arg("Checkpoint", lambda v: training.Checkpoint("unused", every=v), "every", "count", 1),
    Arg("RobustTrainer", lambda v: _trainer(ema=v), "ema", "fraction", 0.9, optional=True),
    Arg("RobustTrainer", lambda v: _trainer(grad_clip=v), "grad_clip", "positive", 1.0,
        optional=True),
    Arg("RobustTrainer", lambda v: _trainer(seed=v), "seed", "index", 0, optional=True),
    Arg("fit", lambda v: _trainer().fit(_loader(), v), "epochs", "count", 1),
    Arg("fit", lambda v: _trainer().fit(_loader(), 1, _loader(), patience=v), "patience",
        "count", 1, optional=True),
    Arg("fit", lambda v: _trainer().fit(_loader(), 1, checkpoint_every=v), "checkpoint_every",
        "count", 1),
    Arg("CatastrophicOverfittingGuard",
        lambda v: training.CatastrophicOverfittingGuard(T, batches=v), "batches", "count", 2),
    Arg("CatastrophicOverfittingGuard",
        lambda v: training.CatastrophicOverfittingGuard(T, gap=v), "gap", "share", 0.3),
    Arg("evaluate", lambda v: at.evaluate(_model(), _loader(), max_batches=v), "max_batches",
        "count", 1, optional=True),
    Arg("robust_accuracy_curve",
        lambda v: at.robust_accuracy_curve(_model(), _loader(), at.PGD(T, steps=1), [v]),
        "epsilons", "nonnegative", 0.1),
    Arg("check_gradient_masking",
        lambda v: at.check_gradient_masking(_model(), X, Y, T, steps=v, queries=5), "steps",
        "count", 1),
    Arg("wilson_interval", lambda v: evaluation.wilson_interval(3, 10, v), "confidence",
        "share", 0.9),
    Arg("wilson_interval", lambda v: evaluation.wilson_interval(v, 10), "k", "index", 3),
    Arg("TsiprasDistribution", lambda v: synthetic.TsiprasDistribution(v, 0.9), "d", "count",
        3),
    Arg("TsiprasDistribution.sample",
        lambda v: synthetic.TsiprasDistribution(3, 0.9).sample(v), "n", "index", 3),
    Arg("SyntheticStream",
        lambda v: synthetic.SyntheticStream(synthetic.TsiprasDistribution(3, 0.9), 8,
                                            batch_size=v), "batch_size", "count", 4),
    Arg("interpolate", lambda v: perception.interpolate(X, X, v), "n", "count", 3, low=2),
    Arg("normalize_for_display", lambda v: perception.normalize_for_display(X, v),
        "percentile", "positive", 99.0),
    Arg("large_eps_threat", lambda v: perception.large_eps_threat(X, v), "rms", "positive",
        0.3),
    Arg("nearest_neighbour_labels",
        lambda v: perception.nearest_neighbour_labels(X, X, Y, k=v), "k", "count", 2),
    Arg("random_crop_flip", lambda v: datasets.random_crop_flip(X, padding=v), "padding",
        "index", 1),
    Arg("load_digits", lambda v: datasets.load_digits(test_fraction=v), "test_fraction",
        "fraction", 0.25),
    Arg("preact_resnet18", lambda v: models.preact_resnet18(num_classes=v), "num_classes",
        "count", 10, low=2),
    Arg("wide_resnet", lambda v: models.wide_resnet(depth=10, widen_factor=v), "widen_factor",
        "count", 1),
]
if importlib.util.find_spec("matplotlib") is not None:  # the plot extra
    ARGS.append(Arg("save_curves", lambda v: _curves(dpi=v), "dpi", "count", 50, low=10))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_arguments_raise_a_named_error(data: st.DataObject) -> None:
    arg = data.draw(st.sampled_from(ARGS), label="entry point")
    bad = BAD[arg.kind].filter(lambda v: not (arg.optional and v is None))
    if arg.low is not None:  # a whole number >= 1 that is still too small
        bad = st.one_of(bad, st.integers(1, arg.low - 1))
    value = data.draw(bad, label=f"{arg.where}({arg.name}=...)")
    with pytest.raises((ValueError, TypeError)) as info:
        arg.call(value)
    assert arg.name in str(info.value), f"{arg.where}: {info.value}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_arguments_of_the_same_kinds_are_accepted(data: st.DataObject) -> None:
    arg = data.draw(st.sampled_from(ARGS), label="entry point")
    fixed = data.draw(st.sampled_from([arg.valid, None]), label="valid or drawn")
    value = arg.valid if fixed is not None else data.draw(GOOD[arg.kind])
    if arg.low is not None:
        value = max(value, arg.low)
    if arg.name == "k" and arg.where == "nearest_neighbour_labels":
        value = min(value, len(X))
    if arg.name == "k" and arg.where == "wilson_interval":
        value = min(value, 10)
    arg.call(value)
