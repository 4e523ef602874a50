"""The attack contract: everything advtrade uses of an attack, declared in one class.

An attack is an immutable configuration called as ``attack(model, x, y, *, generator=None)``.
The library (evaluation, objectives, the trainer, combinators) uses exactly the members declared
on :class:`Attack` and nothing else, so any class that implements them — a dataclass or not —
works everywhere. The contract is checked when an attack is constructed, and the inputs and
the output are checked once per call in the final :meth:`Attack.__call__`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, final

import torch
from torch import Tensor, nn
from typing_extensions import Self

from .._validation import check_generator, check_inputs, check_labels, check_model
from ..guard import ModelMode, model_guard
from ..threats import Eps, ThreatModel

__all__ = ["Attack"]


class _AttackMeta(ABCMeta):
    """Checks the declared attributes of every attack right after it is constructed."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        attack = super().__call__(*args, **kwargs)
        _check_contract(attack)
        return attack


def _check_contract(attack: Attack) -> None:
    name = type(attack).__name__
    try:
        threat, targeted, mode = attack.threat, attack.targeted, attack.mode
    except AttributeError as exc:
        raise TypeError(f"{name} does not implement the Attack contract: {exc}") from None
    if threat is not None and not isinstance(threat, ThreatModel):
        raise TypeError(
            f"{name}: threat must be a ThreatModel such as LinfBall(eps) or L2Ball(eps) (or None "
            f"for an attack without a single threat model), got {type(threat).__name__}"
        )
    if not isinstance(targeted, bool):
        raise TypeError(f"{name}: targeted must be True or False, got {targeted!r}")
    if mode not in ("eval", "as_is"):
        raise ValueError(f"{name}: mode must be 'eval' or 'as_is', got {mode!r}")


@contextmanager
def _autograd_on() -> Iterator[None]:
    """Gradients on, even when the caller is under ``torch.no_grad()`` or
    ``torch.inference_mode()`` (an attack needs input gradients)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


class Attack(metaclass=_AttackMeta):
    """Base class and contract of attacks: ``attack(model, x, y, *, generator=None) -> x_adv``.

    A subclass sets three attributes (checked at construction) and implements three methods:

    - ``threat``: the :class:`~advtrade.ThreatModel` every output lies in (``None`` for an
      attack without a single one, e.g. a :class:`~advtrade.WorstOf` over different norms);
    - ``targeted``: whether ``y`` holds target classes rather than the true labels;
    - ``mode``: ``"eval"`` or ``"as_is"``, how the model runs (see
      :func:`~advtrade.model_guard`);
    - :meth:`perturb`: the attack itself, on checked inputs and a guarded model;
    - :meth:`with_threat` and :meth:`with_mode`: the same attack with another threat model or
      model mode (how the trainer's ε schedule, per-example budgets and ``attack_mode`` reach
      it).

    :meth:`with_eps`, :meth:`subset` and :meth:`with_early_stop` have defaults built on these.
    The call checks the inputs (x floating, without NaN, inside the threat's domain; labels of
    any integer dtype matching the batch), runs :meth:`perturb` inside
    :func:`~advtrade.model_guard` with gradients enabled (also under ``torch.no_grad`` or
    ``torch.inference_mode``), and returns a detached batch of the same shape, dtype and
    device, after checking that it is finite.
    """

    threat: ThreatModel | None
    targeted: bool = False
    mode: ModelMode = "eval"

    @final
    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        check_model(model)
        check_generator(generator)
        with _autograd_on():
            if x.is_inference() if isinstance(x, Tensor) else False:
                x = x.clone()
            x = check_inputs(x)
            if isinstance(y, Tensor) and y.is_inference():
                y = y.clone()
            y = check_labels(y, x.shape[0], x.device)
            if x.shape[0] == 0:
                return x.detach().clone()
            self.check_domain(x)
            with model_guard(model, self.mode) as net:
                x_adv = self.perturb(net, x.detach(), y, generator=generator)
        if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape or x_adv.dtype != x.dtype:
            got = (
                f"{x_adv.dtype} {tuple(x_adv.shape)}" if isinstance(x_adv, Tensor) else x_adv
            )
            raise RuntimeError(
                f"{type(self).__name__}.perturb must return a tensor like x ({x.dtype} "
                f"{tuple(x.shape)}), got {got}"
            )
        if not bool(torch.isfinite(x_adv).all()):
            raise RuntimeError(
                f"{type(self).__name__} produced non-finite adversarial examples; advtrade never "
                f"returns them (is the model's input gradient NaN everywhere?)"
            )
        return x_adv.detach()

    @abstractmethod
    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        """Compute adversarial examples; inputs are already checked and the model guarded.

        ``y`` holds ``torch.long`` labels (or a floating (B, C) distribution target).
        """

    @abstractmethod
    def with_threat(self, threat: ThreatModel) -> Self:
        """The same attack under ``threat`` (same norm; another budget or per-example budgets)."""

    @abstractmethod
    def with_mode(self, mode: ModelMode) -> Self:
        """The same attack running the model in ``mode``."""

    def with_eps(self, eps: Eps) -> Self:
        """The same attack with budget ``eps`` (a float, or one budget per example)."""
        if self.threat is None:
            raise TypeError(
                f"{type(self).__name__} has no single threat model, so it has no budget to set"
            )
        return self.with_threat(self.threat.with_eps(eps))

    def subset(self, index: Tensor) -> Self:
        """The attack for the examples ``index`` of a batch (differs only for per-example ε)."""
        threat = self.threat
        if threat is None or isinstance(threat.eps, float):
            return self
        return self.with_threat(threat.select(index))

    def with_early_stop(self) -> Self:
        """The attack with early stopping, when it has it: each example leaves the attack at its
        first success, which changes no outcome and saves work (default: ``self``)."""
        return self

    def check_domain(self, x: Tensor) -> None:
        """Raise ``ValueError`` if ``x`` lies outside the threat model's domain."""
        if self.threat is not None:
            self.threat.check_domain(x)
