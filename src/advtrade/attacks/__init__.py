"""Attacks: the :class:`Attack` contract, the ascent core they share, and the attacks.

* :class:`PGD` (and its one-step configuration :class:`FGSM`), :class:`APGD` and
  :class:`APGDT` — gradient attacks under any threat model;
* :class:`WorstOf` — per example, the worst case over several attacks.

Every attack is an immutable configuration called as ``attack(model, x, y, *, generator=None)``
that leaves the model exactly as it was (see :func:`advtrade.model_guard`).
"""

from __future__ import annotations

from ._apgd import APGD, APGDT
from ._base import Attack
from ._combinators import WorstOf
from ._fab import FAB
from ._pgd import FGSM, PGD

__all__ = ["APGD", "APGDT", "FAB", "FGSM", "PGD", "Attack", "WorstOf"]
