"""ε schedules: the attack budget of each epoch, as a callable ``epoch -> eps``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._validation import check_int, check_number

__all__ = ["EpsilonSchedule", "LinearWarmup"]


class EpsilonSchedule(Protocol):
    """The attack budget of each epoch: ``schedule(epoch) -> eps`` (epochs count from 0)."""

    def __call__(self, epoch: int, /) -> float: ...


@dataclass(frozen=True)
class LinearWarmup:
    """ε grows linearly over the first ``epochs`` epochs, then stays at ``eps``.

    Epoch ``e`` (from 0) trains at ``start + (eps - start)·min(1, (e + 1) / epochs)``, so the
    first epoch already trains at a non-zero budget and epoch ``epochs - 1`` at the full one.
    Warm-up helps large budgets (ℓ∞ 0.3 on MNIST) and cheap single-step methods converge.
    """

    eps: float
    epochs: int
    start: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_number("eps", self.eps, minimum=0.0))
        object.__setattr__(self, "start", check_number("start", self.start, minimum=0.0))
        object.__setattr__(self, "epochs", check_int("epochs", self.epochs, minimum=1))

    def __call__(self, epoch: int, /) -> float:
        frac = min(1.0, (epoch + 1) / self.epochs)
        return float(self.start + (self.eps - self.start) * frac)
