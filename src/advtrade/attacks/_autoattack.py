"""AutoAttack (Croce & Hein, ICML 2020): the ensemble the field reports robust accuracy under.

Standard version: APGD-CE, APGD-T (targeted DLR over the 9 most likely wrong classes), FAB-T (9
targets) and Square (5000 queries), each on the examples every earlier attack left robust — two
gradient attacks with different losses, a minimum-norm attack and a gradient-free one, so a
model that masks one kind of gradient cannot hide from the others. The "rand" version, for
randomised models, runs APGD-CE and APGD-DLR with expectation over transformation (20 draws).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from .._optional import tqdm_available
from .._outputs import as_class_index, as_logits
from .._validation import check_choice, check_int
from ..guard import ModelMode
from ..threats import ThreatModel
from ._apgd import APGD, APGDT
from ._base import Attack
from ._core import check_iterative, success
from ._fab import FAB
from ._square import Square

__all__ = ["AutoAttack", "Stage"]

Version = Literal["standard", "rand"]


@dataclass(frozen=True)
class Stage:
    """One attack of an AutoAttack run: its name, the examples still robust after it (of
    ``total``) and the seconds it took."""

    name: str
    robust: int
    total: int
    seconds: float

    def __str__(self) -> str:
        share = self.robust / max(self.total, 1)
        return f"{self.name}: {self.robust}/{self.total} robust ({share:.2%}, {self.seconds:.1f} s)"


@dataclass(frozen=True)
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020) under ``threat``: ``version="standard"`` or ``"rand"``.

    Standard: APGD-CE (``steps``), APGD-T and FAB-T over the ``target_classes`` most likely
    wrong classes (``steps`` each), and Square (``queries``). Rand: APGD-CE and APGD-DLR with
    ``eot`` gradient draws. Each attack runs only on the examples every earlier one left robust
    (and none on examples misclassified clean), so the ensemble costs little more than APGD-CE
    on a weak model. With C classes at most C − 1 targets exist; APGD-T needs four classes and
    is left out below that (as is the DLR loss below three). The defaults are the paper's.

    Randomness comes from the call's ``generator``, or from one seeded with ``seed``.
    ``progress`` shows each attack and the robust count after it: ``"auto"`` (a tqdm bar in an
    interactive terminal with tqdm installed, else nothing), ``"tqdm"``, ``"plain"`` (a line per
    attack on stderr) or ``None``. :meth:`run` also returns the per-attack counts.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import AutoAttack, LinfBall
        >>> model = nn.Linear(4, 4, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(4))  # logits = x
        >>> x = torch.tensor([[0.6, 0.45, 0.1, 0.0], [0.9, 0.1, 0.0, 0.0]])
        >>> y = torch.tensor([0, 0])
        >>> attack = AutoAttack(LinfBall(0.1), steps=10, queries=50, progress=None)
        >>> x_adv, stages = attack.run(model, x, y)
        >>> model(x_adv).argmax(1)  # the first is fooled, the second is robust at ε = 0.1
        tensor([1, 0])
        >>> [stage.robust for stage in stages]
        [1, 1, 1, 1]
    """

    threat: ThreatModel
    version: Version = "standard"
    seed: int = 0
    steps: int = 100
    target_classes: int = 9
    queries: int = 5000
    eot: int = 20
    progress: str | None = "auto"
    mode: ModelMode = "eval"
    targeted: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_iterative(
            self,
            self.threat,
            steps=self.steps,
            target_classes=self.target_classes,
            queries=self.queries,
            eot=self.eot,
        )
        check_choice("version", self.version, ("standard", "rand"))
        check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)
        check_choice("progress", self.progress, ("auto", "tqdm", "plain", None))
        check_choice("mode", self.mode, ("eval", "as_is"))

    def with_threat(self, threat: ThreatModel) -> AutoAttack:
        return replace(self, threat=threat)

    def with_mode(self, mode: ModelMode) -> AutoAttack:
        return replace(self, mode=mode)

    def attacks(self, num_classes: int) -> list[tuple[str, Attack]]:
        """The ensemble for a model with ``num_classes`` outputs, in order, with names."""
        t, n = self.threat, self.steps
        targets = min(self.target_classes, num_classes - 1)
        if self.version == "rand":
            ce = APGD(t, steps=n, loss="ce", eot=self.eot, early_stop=True, mode=self.mode)
            out: list[tuple[str, Attack]] = [("APGD-CE", ce)]
            if num_classes >= 3:
                dlr = APGD(t, steps=n, loss="dlr", eot=self.eot, early_stop=True, mode=self.mode)
                out.append(("APGD-DLR", dlr))
            return out
        # Early stopping drops each example at its first success within ε: the same robust
        # set as the reference (which iterates on), for less work.
        out = [("APGD-CE", APGD(t, steps=n, loss="ce", early_stop=True, mode=self.mode))]
        if num_classes >= 4:
            apgdt = APGDT(t, steps=n, target_classes=targets, early_stop=True, mode=self.mode)
            out.append(("APGD-T", apgdt))
        fab = FAB(t, steps=n, target_classes=targets, early_stop=True, mode=self.mode)
        out.append(("FAB-T", fab))
        out.append(("Square", Square(t, queries=self.queries, p_init=0.8, mode=self.mode)))
        return out

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        return self._run(model, x, y, generator)[0]

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, list[Stage]]:
        """The adversarial examples and, per attack, the examples still robust after it.

        Checks the inputs and guards the model exactly as calling the attack does."""
        stages: list[Stage] = []
        x_adv = _Recorded(self, stages)(model, x, y, generator=generator)
        return x_adv, stages

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, list[Stage]]:
        if y.is_floating_point():
            raise TypeError("AutoAttack needs class labels y, not a distribution target")
        if generator is None:
            device = "cpu" if x.device.type == "cpu" else x.device
            generator = torch.Generator(device=device).manual_seed(self.seed)
        with torch.no_grad():
            logits = as_logits(model(x), x.shape[0])
        labels = as_class_index(y, logits.shape[1])
        robust = ~success(logits, labels, False)
        x_adv = x.clone()
        stages: list[Stage] = []
        attacks = self.attacks(logits.shape[1])
        show = _Progress(self.progress, len(attacks))
        try:
            for name, attack in attacks:
                start = time.perf_counter()
                todo = robust.nonzero().squeeze(1)
                if todo.numel() > 0:
                    found = attack.subset(todo)(model, x[todo], y[todo], generator=generator)
                    with torch.no_grad():
                        fooled = success(as_logits(model(found), todo.numel()), labels[todo], False)
                    x_adv[todo[fooled]] = found[fooled]
                    robust[todo[fooled]] = False
                stage = Stage(name, int(robust.sum()), x.shape[0], time.perf_counter() - start)
                stages.append(stage)
                show.step(stage)
        finally:
            show.close()
        return x_adv, stages


class _Recorded(Attack):
    """AutoAttack through the checked call, keeping the stages (what :meth:`AutoAttack.run`
    returns)."""

    def __init__(self, attack: AutoAttack, stages: list[Stage]) -> None:
        self.attack, self.stages = attack, stages
        self.threat, self.mode = attack.threat, attack.mode

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        x_adv, stages = self.attack._run(model, x, y, generator)
        self.stages.extend(stages)
        return x_adv

    def with_threat(self, threat: ThreatModel) -> _Recorded:
        return _Recorded(self.attack.with_threat(threat), self.stages)

    def with_mode(self, mode: ModelMode) -> _Recorded:
        return _Recorded(self.attack.with_mode(mode), self.stages)


class _Progress:
    """Per-attack progress of one AutoAttack run (see ``AutoAttack.progress``)."""

    def __init__(self, mode: str | None, total: int) -> None:
        if mode == "auto":
            mode = "tqdm" if tqdm_available() and sys.stderr.isatty() else None
        if mode == "tqdm" and not tqdm_available():
            mode = "plain"
        self.mode, self._bar = mode, None
        if mode == "tqdm":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="AutoAttack", leave=False, dynamic_ncols=True)

    def step(self, stage: Stage) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"{stage.name}: {stage.robust}/{stage.total} robust")
            self._bar.update(1)
        elif self.mode == "plain":
            print(f"AutoAttack {stage}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

