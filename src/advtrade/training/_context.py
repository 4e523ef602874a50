"""``TrainContext``: the concrete :class:`~advtrade.training.StepContext` the trainer hands each
training step — the optimizer step, the attack generator, the ε schedule, the attack mode and
mixed precision, in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from .._amp import autocast
from ..attacks import Attack
from ..guard import ModelMode
from ._objectives import NonFiniteLossError

__all__ = ["TrainContext", "configure_attack"]


def configure_attack(attack: Attack, eps: float | None, mode: ModelMode) -> Attack:
    """``attack`` with budget ``eps`` (if not None) and model mode ``mode``, through the attack
    contract (combinators such as :class:`~advtrade.WorstOf` pass both on to every member)."""
    if eps is not None:
        attack = attack.with_eps(eps)
    return attack if attack.mode == mode else attack.with_mode(mode)


class TrainContext:
    """The concrete :class:`~advtrade.training.StepContext`: what
    :class:`~advtrade.RobustTrainer` hands each step.

    Also usable on its own to run an objective by hand (tests, custom loops): it needs only the
    model and optimizer. ``scaler`` is a ``torch.amp.GradScaler`` (CUDA AMP); ``grad_clip`` is a
    maximum global gradient norm over the optimizer's parameters; ``after_step`` runs after every
    optimizer step (the trainer's weight average).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        generator: torch.Generator | None = None,
        epoch: int = 0,
        batch_index: int = 0,
        eps: float | None = None,
        attack_mode: ModelMode = "eval",
        amp: bool = False,
        device_type: str = "cpu",
        scaler: torch.amp.GradScaler | None = None,
        grad_clip: float | None = None,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.generator = generator if generator is not None else torch.Generator()
        self.epoch = epoch
        self.batch_index = batch_index
        self.eps = eps
        self.attack_mode: ModelMode = attack_mode
        self.amp = amp
        self.device_type = device_type
        self.scaler = scaler
        self.grad_clip = grad_clip
        self.after_step = after_step
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self._configured: dict[int, tuple[Attack, Attack]] = {}

    def optimize(self, loss: Tensor, *, wrt: Sequence[Tensor] = ()) -> tuple[Tensor, ...]:
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
            raise TypeError(f"ctx.optimize needs a scalar loss tensor, got {got}")
        if not bool(torch.isfinite(loss.detach())):
            raise NonFiniteLossError(
                f"the training loss is {float(loss.detach())} at epoch {self.epoch + 1} (ctx.epoch="
                f"{self.epoch}), batch index {self.batch_index}; the weights were not updated with "
                f"it and the last checkpoint is intact (try a lower learning rate or grad_clip=, "
                f"or check the data)"
            )
        if not loss.requires_grad:
            raise ValueError(
                "the loss does not require grad: was it computed under torch.no_grad(), or are "
                "all of the model's parameters frozen?"
            )
        self.optimizer.zero_grad(set_to_none=True)
        for t in wrt:
            t.grad = None
        scaler = self.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        grads = tuple(torch.zeros_like(t) if t.grad is None else t.grad.detach() for t in wrt)
        if scaler is not None:
            if wrt:
                inv = 1.0 / scaler.get_scale()
                grads = tuple(g * inv for g in grads)
            if self.grad_clip is not None:
                scaler.unscale_(self.optimizer)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        if self.after_step is not None:
            self.after_step()
        return grads

    def autocast(self) -> AbstractContextManager[object]:
        return autocast(self.device_type, self.amp)

    def configure(self, attack: Attack) -> Attack:
        hit = self._configured.get(id(attack))
        if hit is not None and hit[0] is attack:
            return hit[1]
        out = configure_attack(attack, self.eps, self.attack_mode)
        self._configured[id(attack)] = (attack, out)
        return out

    def perturb(self, attack: Attack, x: Tensor, y: Tensor) -> Tensor:
        return self.configure(attack)(self.model, x, y, generator=self.generator)
