"""The trainer's checks and set-up — its arguments, its model, its batches — kept apart from
the training loop."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._batches import BatchKeys, unpack_batch
from .._outputs import as_logits
from .._validation import (
    check_bool,
    check_choice,
    check_inputs,
    check_int,
    check_label_range,
    check_labels,
    check_loader,
    check_model,
    check_number,
    check_type,
    model_device,
)
from ..attacks import Attack
from ..guard import model_guard
from ._callbacks import Callback
from ._objectives import Objective

__all__ = ["check_fit_args", "check_trainer_args", "prepare_model", "read_batch"]


def check_trainer_args(
    model: object,
    optimizer: object,
    objective: object,
    *,
    scheduler: object,
    scheduler_interval: str,
    attack_mode: str,
    train_mode: str,
    eps_schedule: object,
    grad_clip: object,
    seed: object,
    flags: Mapping[str, object],
    ema: object,
    compile: object,
    callbacks: Iterable[object],
) -> tuple[float | None, int | None, float | None, list[Callback]]:
    """Check every constructor argument of :class:`~advtrade.RobustTrainer` before anything is
    built; returns the normalised ``(grad_clip, seed, ema, callbacks)``."""
    model = check_model(model)
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    assert isinstance(model, nn.Module) and isinstance(optimizer, torch.optim.Optimizer)
    if not isinstance(objective, Objective):
        hint = ""
        if isinstance(objective, Attack):
            hint = " (did you mean AdversarialTraining(attack)?)"
        raise TypeError(
            f"objective must be an advtrade Objective such as Standard(), "
            f"AdversarialTraining(attack) or TRADES(attack); got {type(objective).__name__}{hint}"
        )
    own = {id(p) for p in model.parameters()}
    if not any(id(p) in own for g in optimizer.param_groups for p in g["params"]):
        raise ValueError(
            "optimizer holds none of the model's parameters; build it from "
            "model.parameters() of this model (was it made for another model instance?)"
        )
    if scheduler is not None and not (
        callable(getattr(scheduler, "step", None))
        and callable(getattr(scheduler, "state_dict", None))
    ):
        raise TypeError(
            f"scheduler must be a learning-rate scheduler with step() and state_dict(), got "
            f"{type(scheduler).__name__}"
        )
    check_choice("scheduler_interval", scheduler_interval, ("epoch", "batch"))
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and scheduler_interval == "batch":
        raise ValueError(
            "a ReduceLROnPlateau scheduler steps on the epoch's loss; use "
            "scheduler_interval='epoch'"
        )
    check_choice("attack_mode", attack_mode, ("eval", "as_is"))
    check_choice("train_mode", train_mode, ("train", "as_is"))
    if eps_schedule is not None and not callable(eps_schedule):
        raise TypeError(f"eps_schedule must be a callable epoch -> eps, got {eps_schedule!r}")
    clip = None
    if grad_clip is not None:
        clip = check_number("grad_clip", grad_clip, minimum=0.0, strict=True)
    seed_ = None if seed is None else check_int("seed", seed, minimum=0, maximum=2**63 - 2)
    for name, value in flags.items():
        check_bool(name, value)
    decay = None
    if ema is not None:
        decay = check_number("ema", ema, minimum=0.0, maximum=1.0, strict=True)
        if decay >= 1.0:
            raise ValueError(f"ema must be a decay in (0, 1), such as 0.999; got {ema!r}")
    if not isinstance(compile, (bool, Mapping)):
        raise TypeError(
            f"compile must be True/False or a dict of torch.compile options, got {compile!r}"
        )
    out: list[Callback] = []
    for cb in callbacks:
        out.append(check_type("callbacks", cb, Callback, "a sequence of advtrade Callback objects"))
    return clip, seed_, decay, out


def check_fit_args(
    train_loader: object,
    epochs: object,
    eval_loader: object,
    eval_attack: object,
    patience: object,
    checkpoint_every: object,
) -> tuple[int, int | None]:
    """Check ``fit``'s arguments before any training; returns ``(epochs, patience)``."""
    epochs = check_int("epochs", epochs, minimum=1)
    check_int("checkpoint_every", checkpoint_every, minimum=1)
    check_loader("train_loader", train_loader)
    if eval_loader is not None:
        check_loader("eval_loader", eval_loader)
    if eval_attack is not None:
        check_type("eval_attack", eval_attack, Attack, "an Attack or None")
    if patience is None:
        return epochs, None
    if eval_loader is None:
        raise ValueError(
            "patience needs an eval_loader: it counts epochs without a better held-out score"
        )
    return epochs, check_int("patience", patience, minimum=1)


def prepare_model(
    model: nn.Module,
    device: str | torch.device | None,
    *,
    move_model: bool,
    channels_last: bool,
    compile: bool | Mapping[str, Any],
) -> tuple[nn.Module, torch.device]:
    """The model as the trainer runs it — on ``device`` (moved only with ``move_model``), in
    channels-last memory format (in place, so the optimizer keeps its tensors), compiled — and
    the device batches go to."""
    current = model_device(model) or torch.device("cpu")
    target = torch.device(device) if device is not None else current
    differs = current.type != target.type or (
        current.index is not None and target.index is not None and current.index != target.index
    )
    if differs:
        if not move_model:
            raise ValueError(
                f"the model is on {current} but device={str(target)!r}; move the model yourself "
                f"(before building the optimizer) or pass move_model=True"
            )
        model.to(target)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile is not False:
        options = {} if compile is True else dict(compile)
        model = torch.compile(model, **options)  # type: ignore[assignment]
    return model, target


def read_batch(
    batch: Any,
    name: str,
    index: int,
    *,
    keys: BatchKeys,
    device: torch.device,
    channels_last: bool,
    model: nn.Module,
    num_classes: int | None,
) -> tuple[Tensor, Tensor, int | None]:
    """A training batch checked like an attack's inputs — x floating without NaN, labels of
    any integer dtype (converted once) in the model's range, checked on the host before the
    transfer — moved to ``device``. Returns ``(x, y, num_classes)``: the number of classes is
    found once, by a two-example eval-mode forward pass, and then reused."""
    x, y = unpack_batch(batch, keys, f"{name}: batch {index}")
    x = check_inputs(x, f"{name}: x of batch {index}")
    y = check_labels(y, x.shape[0], y.device, f"{name}: y of batch {index}")
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[0] and not y.is_floating_point():
        if num_classes is None:
            with model_guard(model, "eval") as net, torch.no_grad():
                num_classes = as_logits(net(x[:2]), min(2, x.shape[0])).shape[1]
        check_label_range(y, num_classes, f"{name}: y of batch {index}")
    return x, y.to(device, non_blocking=True), num_classes
