"""Sanity checks against gradient masking (the pitfalls listed by Athalye et al. 2018 and Croce &
Hein 2020): symptoms that a robust accuracy measures a weak attack rather than a robust model.

:func:`check_gradient_masking` runs cheap tests on one batch and returns what it found, each as a
:class:`Finding` that says what the symptom means; it also warns with
:class:`GradientMaskingWarning`, so the symptoms show up in logs and can be turned into errors in
tests (``warnings.simplefilter("error", GradientMaskingWarning)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._validation import (
    check_bool,
    check_generator,
    check_inputs,
    check_int,
    check_labels,
    check_model,
    check_number,
    check_type,
)
from ..attacks import FGSM, PGD, Square
from ..attacks._core import NoGradientError, input_gradient
from ..losses import margin_loss
from ..threats import ThreatModel
from ._evaluate import evaluate

__all__ = ["Finding", "GradientMaskingWarning", "check_gradient_masking"]


class GradientMaskingWarning(UserWarning):
    """A robust-accuracy figure looks unreliable: the attack's gradients may be masked."""


@dataclass(frozen=True)
class Finding:
    """One symptom: ``check`` names the test, ``message`` says what it means and what to do,
    ``details`` holds the measured numbers (accuracies as fractions, budgets, shares)."""

    check: str
    message: str
    details: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        numbers = ", ".join(f"{k}={v:.4g}" for k, v in self.details.items())
        return f"[{self.check}] {self.message} ({numbers})"


def _input_gradients(model: nn.Module, x: Tensor, y: Tensor) -> Tensor | None:
    """Gradient of the margin loss with respect to the input (``None`` without a graph).

    The margin loss does not saturate like cross-entropy on confident examples, so a zero
    gradient here means the model really is flat (or non-differentiable) around the input.
    """
    try:
        return input_gradient(model, x, y, margin_loss)
    except NoGradientError:  # the model cut the graph (e.g. a numpy round trip)
        return None


def _large_eps(threat: ThreatModel, x: Tensor) -> float:
    """A budget that reaches every point of the domain (ℓ∞: its width; ℓp: its diameter), or
    for unbounded data 100 times the largest input norm."""
    if threat.domain is None:
        return 100.0 * max(float(threat.norm(x).max()), 1.0)
    width = threat.domain[1] - threat.domain[0]
    d = x[0].numel()
    return width * (d ** (1.0 / threat.p) if math.isfinite(threat.p) else 1.0)


def check_gradient_masking(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 20,
    epsilons: Sequence[float] | None = None,
    tolerance: float = 0.03,
    gap: float = 0.1,
    share: float = 0.1,
    queries: int = 1000,
    generator: torch.Generator | None = None,
    warn: bool = True,
) -> list[Finding]:
    """Look for signs of gradient masking on one batch; return (and warn about) what is found.

    The checks, with PGD of ``steps`` steps under ``threat`` (a float ε):

    - ``zero_gradients`` / ``nonfinite_gradients``: more than ``share`` of the inputs have an
      all-zero or NaN/inf input gradient, so gradient attacks cannot move (shattered or
      quantised gradients); attack those with transfer, BPDA or gradient-free attacks.
    - ``not_monotone``: robust accuracy rises by more than ``tolerance`` as ε grows over
      ``epsilons`` (default ε·(1/4, 1/2, 1, 2, 4)); a larger ball contains the smaller one.
    - ``large_eps``: accuracy stays above ``tolerance`` at a budget covering the whole domain
      (ℓ∞: its width), where every input can be turned into any other.
    - ``more_steps``: 4× the steps and 3 restarts lower accuracy by more than ``gap``: the
      attack had not converged, so the reported figure overstates robustness.
    - ``fgsm_stronger``: one FGSM step beats PGD by more than ``tolerance``, a classic sign of
      a loss surface that misleads iterative attacks.
    - ``gradient_free``: the gradient-free :class:`~advtrade.attacks.Square` (``queries``
      queries) beats PGD by more than ``tolerance`` — on a healthy model it is the weaker of the
      two, so the gradients must be hiding the model's weaknesses. It also runs on models
      without any input gradient, against their clean accuracy.

    Examples:
        A model that rounds its input has a zero gradient almost everywhere: gradient attacks
        cannot move, and its robust accuracy would be an overestimate.

        >>> import torch
        >>> from torch import nn
        >>> from advtrade import LinfBall, check_gradient_masking
        >>> linear = nn.Linear(2, 2, bias=False)
        >>> linear.weight = nn.Parameter(torch.eye(2))  # logits = x
        >>> x = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> y = torch.tensor([0, 0, 0])
        >>> gen = torch.Generator().manual_seed(0)
        >>> check_gradient_masking(linear, x, y, LinfBall(0.1), generator=gen)
        []
        >>> class Round(nn.Module):
        ...     def forward(self, x):
        ...         return torch.round(x * 3) / 3
        >>> masked = nn.Sequential(Round(), linear)
        >>> gen = torch.Generator().manual_seed(0)
        >>> threat = LinfBall(0.1)
        >>> findings = check_gradient_masking(masked, x, y, threat, generator=gen, warn=False)
        >>> [finding.check for finding in findings]
        ['zero_gradients', 'large_eps']
    """
    check_model(model)
    check_type("threat", threat, ThreatModel, "a ThreatModel such as LinfBall(eps)")
    if not isinstance(threat.eps, float) or threat.eps <= 0:
        raise ValueError(f"threat.eps must be a float > 0 for these checks, got {threat.eps!r}")
    x = check_inputs(x)
    if x.shape[0] == 0:
        raise ValueError("x must be a non-empty batch (B, ...): there is nothing to check")
    y = check_labels(y, x.shape[0], x.device)
    threat.check_domain(x)
    for name, value in (("tolerance", tolerance), ("gap", gap), ("share", share)):
        check_number(name, value, minimum=0.0, maximum=1.0)
    check_int("steps", steps, minimum=1)
    check_int("queries", queries, minimum=1)
    check_generator(generator)
    check_bool("warn", warn)
    eps = threat.eps
    epsilons = sorted(epsilons) if epsilons is not None else [eps * k for k in (0.25, 0.5, 1, 2, 4)]
    findings: list[Finding] = []

    grad = _input_gradients(model, x, y)
    connected = grad is not None
    grad = (torch.zeros_like(x) if grad is None else grad).flatten(1)
    bad = ~torch.isfinite(grad).all(dim=1)
    zero = (grad == 0).all(dim=1) & ~bad
    for name, mask, what in (
        ("zero_gradients", zero, "are exactly zero"),
        ("nonfinite_gradients", bad, "contain NaN or inf"),
    ):
        fraction = float(mask.float().mean())
        if fraction > share:
            findings.append(
                Finding(
                    name,
                    f"the input gradients of {fraction:.0%} of the inputs {what}: "
                    "gradient-based attacks cannot move from them (masked, shattered or quantised "
                    "gradients), so their robust accuracy is an overestimate; use BPDA, transfer "
                    "or gradient-free attacks",
                    {"share": fraction},
                )
            )

    square = Square(threat, queries=queries)
    if not connected:  # no input gradient at all: gradient attacks cannot even run
        acc = evaluate(model, (x, y), {"square": square}, generator=generator).accuracies
        _gradient_free(findings, acc["square"], acc["clean"], "clean accuracy", tolerance)
        return _report(findings, warn)

    def pgd(budget: float, **kwargs: int) -> PGD:
        return PGD(threat.with_eps(budget), steps=kwargs.pop("steps", steps), **kwargs)

    large = _large_eps(threat, x)
    attacks = {f"eps={e:.6g}": pgd(e) for e in epsilons}
    attacks |= {"large": pgd(large), "strong": pgd(eps, steps=4 * steps, restarts=3)}
    attacks |= {"pgd": pgd(eps), "fgsm": FGSM(threat), "square": square}
    acc = evaluate(model, (x, y), attacks, generator=generator).accuracies

    curve = [acc[f"eps={e:.6g}"] for e in epsilons]
    rises = [(a, b, e) for a, b, e in zip(curve, curve[1:], epsilons[1:]) if b > a + tolerance]
    if rises:
        a, b, e = max(rises, key=lambda r: r[1] - r[0])
        findings.append(
            Finding(
                "not_monotone",
                "robust accuracy rises with ε although a larger ball contains the smaller one: "
                "the attack fails on easy budgets, a sign of masked gradients or a bad step size",
                {"eps": e, "accuracy_before": a, "accuracy_after": b},
            )
        )
    if acc["large"] > tolerance:
        findings.append(
            Finding(
                "large_eps",
                f"robust accuracy stays at {acc['large']:.1%} with ε = {large:.4g}, a budget that "
                "reaches every input of the domain: a working attack gets 0%, so the attack is "
                "blocked (masked gradients) and smaller-ε figures are unreliable too",
                {"eps": large, "accuracy": acc["large"]},
            )
        )
    if acc["pgd"] - acc["strong"] > gap:
        findings.append(
            Finding(
                "more_steps",
                f"{4 * steps} steps with 3 restarts lower robust accuracy from {acc['pgd']:.1%} "
                f"to {acc['strong']:.1%}: the {steps}-step attack has not converged, report the "
                "stronger one (or APGD, which needs no step-size tuning)",
                {"eps": eps, "accuracy": acc["pgd"], "accuracy_strong": acc["strong"]},
            )
        )
    if acc["fgsm"] < acc["pgd"] - tolerance:
        findings.append(
            Finding(
                "fgsm_stronger",
                f"one FGSM step ({acc['fgsm']:.1%}) beats {steps}-step PGD ({acc['pgd']:.1%}): "
                "the iterative attack is misled by the loss surface (gradient masking)",
                {"eps": eps, "accuracy_fgsm": acc["fgsm"], "accuracy_pgd": acc["pgd"]},
            )
        )
    _gradient_free(findings, acc["square"], acc["pgd"], f"{steps}-step PGD", tolerance)
    return _report(findings, warn)


def _gradient_free(
    findings: list[Finding], square: float, other: float, what: str, tolerance: float
) -> None:
    if square < other - tolerance:
        findings.append(
            Finding(
                "gradient_free",
                f"the gradient-free Square attack ({square:.1%}) beats {what} ({other:.1%}): "
                "gradients hide the model's weaknesses (masked, shattered or non-differentiable "
                "gradients), so gradient-based robust accuracy overstates robustness; report "
                "AutoAttack, which includes Square",
                {"accuracy_square": square, "accuracy_other": other},
            )
        )


def _report(findings: list[Finding], warn: bool) -> list[Finding]:
    if warn:
        for finding in findings:
            warnings.warn(str(finding), GradientMaskingWarning, stacklevel=3)
    return findings
