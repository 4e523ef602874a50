"""The Attack contract with a third-party attack that is not a dataclass.

``HandFGSM`` is what a user might write: a plain class subclassing :class:`advtrade.Attack`,
setting ``threat``/``targeted``/``mode`` in ``__init__`` and implementing ``perturb``,
``with_threat`` and ``with_mode`` (an ℓ∞ FGSM written by hand). Everywhere the library takes an
attack it must behave exactly like the library's own FGSM, which computes the same point: the
library may use only the contract's members.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import advtrade as at
from advtrade.training import CatastrophicOverfittingGuard, LinearWarmup

from .conftest import SmallCNN, train_standard


class HandFGSM(at.Attack):
    """x ± ε·sign(∇ₓ CE), clamped to the domain (a step of exactly ε stays in the ℓ∞ ball).

    Every call appends (ε, mode, model.training, batch size) to ``log``, which copies share.
    """

    def __init__(
        self,
        threat: at.LinfBall,
        *,
        targeted: bool = False,
        mode: str = "eval",
        log: list[tuple[Any, ...]] | None = None,
    ) -> None:
        if not isinstance(threat, at.LinfBall):
            raise TypeError("HandFGSM is an ℓ∞ attack")
        self.threat, self.targeted, self.mode = threat, targeted, mode
        self.log = [] if log is None else log

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        eps = self.threat.eps
        self.log.append((eps if isinstance(eps, float) else eps.clone(), self.mode, model.training))
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
        step = self.threat.eps_like(x) * grad.sign()
        return self.threat.clip_domain(x.detach() - step if self.targeted else x.detach() + step)

    def with_threat(self, threat: at.ThreatModel) -> HandFGSM:
        return HandFGSM(threat, targeted=self.targeted, mode=self.mode, log=self.log)  # type: ignore[arg-type]

    def with_mode(self, mode: str) -> HandFGSM:  # type: ignore[override]
        return HandFGSM(self.threat, targeted=self.targeted, mode=mode, log=self.log)


@pytest.fixture(scope="module")
def model_and_data(digits) -> tuple[nn.Module, Tensor, Tensor]:
    """The shared CNN at width 4, trained normally, and 200 test digits."""
    torch.manual_seed(0)
    model = train_standard(SmallCNN(width=4), digits.x_train, digits.y_train, epochs=8)
    return model, digits.x_test[:200], digits.y_test[:200]


def test_it_computes_what_the_library_fgsm_computes(model_and_data) -> None:
    """The premise of the comparisons below: the same point, bit for bit, untargeted and
    targeted, with one budget or one per example."""
    model, x, y = model_and_data
    per_example = torch.linspace(0.0, 0.2, len(y))
    for eps, targeted in itertools.product((0.1, per_example), (False, True)):
        labels = (y + 1) % 10 if targeted else y
        ours = HandFGSM(at.LinfBall(eps), targeted=targeted)(model, x, labels)
        theirs = at.PGD(
            at.LinfBall(eps), steps=1, random_start=False, targeted=targeted, select="last"
        )
        assert torch.equal(ours, theirs(model, x, labels, generator=None))


def test_evaluate_and_worst_of(model_and_data) -> None:
    model, x, y = model_and_data
    per_example = at.LinfBall(torch.linspace(0.0, 0.2, len(y)))
    for threat in (at.LinfBall(0.1), per_example):  # per-example ε: the default subset()
        ours = at.evaluate(model, (x, y), {"clean": None, "fgsm": HandFGSM(threat)})
        theirs = at.evaluate(model, (x, y), {"clean": None, "fgsm": at.FGSM(threat)})
        assert ours.counts == theirs.counts and ours.counts["fgsm"] < ours.counts["clean"]
        assert torch.equal(ours.per_example["fgsm"], theirs.per_example["fgsm"])
    threat = at.LinfBall(0.05)
    outcomes = []
    for first in (HandFGSM(threat), at.FGSM(threat)):
        union = at.WorstOf([first, at.PGD(threat, steps=5)])
        assert union.threat is threat  # one threat model: WorstOf reads HandFGSM's
        x_adv = union(model, x, y, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            outcomes.append(model(x_adv).argmax(1) == y)
    assert torch.equal(outcomes[0], outcomes[1])


def test_robust_accuracy_curve(model_and_data) -> None:
    """The curve searches ε through the defaults with_eps, subset and with_early_stop."""
    model, x, y = model_and_data
    epsilons = [0.0, 0.02, 0.05, 0.1, 0.2]
    ours = at.robust_accuracy_curve(model, (x, y), HandFGSM(at.LinfBall(0.1)), epsilons)
    theirs = at.robust_accuracy_curve(model, (x, y), at.FGSM(at.LinfBall(0.1)), epsilons)
    assert ours.counts == theirs.counts and ours.counts[0] > ours.counts[-1]
    assert torch.equal(ours.levels, theirs.levels)


def test_adversarial_training_with_schedule_as_is_mode_and_guard(digits) -> None:
    """A RobustTrainer fit with an ε warm-up, attack_mode="as_is", dropout and the overfitting
    guard at its default threat trains to the same weights and history as the library's FGSM;
    the attack sees each epoch's ε and runs on the model in training mode."""
    log: list[tuple[Any, ...]] = []
    guard_threats: list[at.ThreatModel] = []

    class Guard(CatastrophicOverfittingGuard):
        def check(self, trainer, threat):  # type: ignore[no-untyped-def]
            guard_threats.append(threat)
            return super().check(trainer, threat)

    data = TensorDataset(digits.x_train[:256], digits.y_train[:256])
    test = DataLoader(TensorDataset(digits.x_test[:64], digits.y_test[:64]), batch_size=64)
    runs = []
    for attack in (HandFGSM(at.LinfBall(0.2), log=log), at.FGSM(at.LinfBall(0.2))):
        torch.manual_seed(0)
        model = SmallCNN(width=4, dropout=0.2)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        trainer = at.RobustTrainer(
            model,
            opt,
            at.AdversarialTraining(attack),
            eps_schedule=LinearWarmup(0.2, 2),
            attack_mode="as_is",
            callbacks=[Guard(batches=2)],
            progress=None,
        )
        loader = DataLoader(data, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
        history = trainer.fit(loader, 3, test)
        runs.append((model.state_dict(), [r | {"time": 0} for r in history]))
    (ours, ours_history), (theirs, theirs_history) = runs
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items())
    assert ours_history == theirs_history and [r["eps"] for r in ours_history] == [0.1, 0.2, 0.2]
    training = [entry for entry in log if entry[1] == "as_is"]
    assert [entry[0] for entry in training] == [0.1] * 4 + [0.2] * 8  # 4 batches per epoch
    assert all(entry[2] for entry in training)  # the model was in training mode
    evaluation = [entry for entry in log if entry[1] == "eval"]  # the trainer's evaluation
    assert len(evaluation) == 3 and not any(entry[2] for entry in evaluation)
    expected = [(at.LinfBall, eps) for eps in (0.1, 0.2, 0.2)]  # the objective's, scheduled
    assert [(type(t), t.eps) for t in guard_threats] == expected * 2  # both runs


class _Complete(at.Attack):
    def __init__(self, **members: Any) -> None:
        for name, value in members.items():
            setattr(self, name, value)

    def perturb(self, model, x, y, *, generator):  # type: ignore[no-untyped-def]
        return x

    def with_threat(self, threat):  # type: ignore[no-untyped-def]
        return self

    def with_mode(self, mode):  # type: ignore[no-untyped-def]
        return self


def test_an_incomplete_attack_fails_at_construction_with_a_clear_message() -> None:
    class NoWithMode(at.Attack):
        def __init__(self) -> None:
            self.threat = at.LinfBall(0.1)

        def perturb(self, model, x, y, *, generator):  # type: ignore[no-untyped-def]
            return x

        def with_threat(self, threat):  # type: ignore[no-untyped-def]
            return self

    with pytest.raises(TypeError, match="abstract method '?with_mode"):
        NoWithMode()  # type: ignore[abstract]
    with pytest.raises(TypeError, match=r"_Complete does not implement the Attack contract.*"):
        _Complete()  # no threat
    with pytest.raises(TypeError, match="threat must be a ThreatModel"):
        _Complete(threat=0.1)
    with pytest.raises(TypeError, match="targeted must be True or False"):
        _Complete(threat=at.LinfBall(0.1), targeted="yes")
    with pytest.raises(ValueError, match="mode must be 'eval' or 'as_is'"):
        _Complete(threat=at.LinfBall(0.1), mode="train")
    complete = _Complete(threat=None)  # an attack without a single threat model is allowed
    assert (complete.targeted, complete.mode) == (False, "eval")  # the contract's defaults
    with pytest.raises(TypeError, match="no single threat model"):
        complete.with_eps(0.1)
