"""``RobustTrainer``: (adversarial) training of a user's existing model, optimizer and scheduler.

The trainer takes the user's objects as they are — no subclassing, no re-creation, no change to
learning rates or other settings — and runs an :class:`~advtrade.objectives.Objective` over the
batches of a DataLoader. Around the loop sit callbacks (progress, checkpoints), an optional ε
schedule, mixed precision, gradient clipping and checkpoints from which an interrupted run resumes
bit for bit. Attacks are crafted with the model in eval mode by default (BatchNorm statistics stay
clean); the weight update always runs in the user's training mode, and ``fit`` leaves every
submodule's mode as it found it.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from . import distributed
from ._outputs import as_class_index, as_logits, check_labels
from .attacks import Attack
from .callbacks import Callback, EpsilonSchedule, History, Record, make_progress
from .checkpoint import (
    Checkpoint,
    apply_loader_states,
    read_checkpoint,
    restore_trainer,
    write_checkpoint,
)
from .guard import ModelMode
from .objectives import NonFiniteLossError, StepOutput, TrainContext

if TYPE_CHECKING:
    from .evaluation import EvaluationReport

__all__ = ["NonFiniteLossError", "RobustTrainer"]  # NonFiniteLossError lives in objectives

TrainMode = Literal["train", "as_is"]
_OBJECTIVE_ATTACK: Any = "objective"


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


class RobustTrainer:
    """Trains ``model`` with ``optimizer`` on an objective, e.g. ``AdversarialTraining(PGD(...))``.

    ``scheduler`` (optional) steps once per epoch, or per batch with
    ``scheduler_interval="batch"`` (a ``ReduceLROnPlateau`` steps on the epoch's training loss).
    ``device`` is where batches go (default: the model's device); the model moves only with
    ``move_model=True``. A ``DistributedDataParallel`` model (or ``ddp=True``, which wraps it)
    trains data-parallel (see :mod:`advtrade.distributed`). ``eps_schedule`` (e.g.
    ``linear_warmup(eps, 5)``) sets each epoch's attack budget; ``attack_mode`` crafts attacks in
    eval mode (default) or in the modes the model is in (``"as_is"``, buffers restored).
    ``train_mode="train"`` puts the model in training mode for each epoch (``"as_is"`` keeps the
    modes it had when ``fit`` started, e.g. frozen BatchNorm). ``amp`` enables autocast (float16
    with a GradScaler on CUDA, bfloat16 on CPU); ``grad_clip`` clips the global gradient norm.
    ``seed`` seeds the trainer's own generator for attacks (one stream per rank under DDP).
    ``progress`` is ``"auto"``, ``"tqdm"``, ``"plain"`` or ``None``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Any,
        *,
        scheduler: Any = None,
        scheduler_interval: Literal["epoch", "batch"] = "epoch",
        device: str | torch.device | None = None,
        move_model: bool = False,
        ddp: bool = False,
        eps_schedule: EpsilonSchedule | None = None,
        attack_mode: ModelMode = "eval",
        train_mode: TrainMode = "train",
        amp: bool = False,
        grad_clip: float | None = None,
        seed: int | None = 0,
        callbacks: Iterable[Callback] = (),
        progress: str | None = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if not callable(getattr(objective, "train_step", None)):
            hint = ""
            if isinstance(objective, Attack):
                hint = " (did you mean AdversarialTraining(attack)?)"
            raise TypeError(
                f"objective must implement train_step(x, y, ctx) -> StepOutput, such as "
                f"Standard(), AdversarialTraining(attack) or TRADES(attack); got "
                f"{type(objective).__name__}{hint}"
            )
        own = {id(p) for p in model.parameters()}
        held = [p for g in optimizer.param_groups for p in g["params"]]
        if not any(id(p) in own for p in held):
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
        _check_choice("scheduler_interval", scheduler_interval, ("epoch", "batch"))
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if plateau and scheduler_interval == "batch":
            raise ValueError(
                "a ReduceLROnPlateau scheduler steps on the epoch's loss; use "
                "scheduler_interval='epoch'"
            )
        _check_choice("attack_mode", attack_mode, ("eval", "as_is"))
        _check_choice("train_mode", train_mode, ("train", "as_is"))
        if eps_schedule is not None and not callable(eps_schedule):
            raise TypeError(f"eps_schedule must be a callable epoch -> eps, got {eps_schedule!r}")
        if grad_clip is not None and (
            isinstance(grad_clip, bool)
            or not isinstance(grad_clip, (int, float))
            or not 0 < grad_clip < math.inf
        ):
            raise ValueError(f"grad_clip must be a finite number > 0 (or None), got {grad_clip!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be an integer >= 0 (or None), got {seed!r}")

        model_device = _model_device(model)
        self.device = torch.device(device) if device is not None else model_device
        if _differs(model_device, self.device):
            if not move_model:
                raise ValueError(
                    f"the model is on {model_device} but device={str(self.device)!r}; move the "
                    f"model yourself (before building the optimizer) or pass move_model=True"
                )
            model.to(self.device)
        if ddp:
            model = distributed.wrap_ddp(model)
        self.data_parallel = distributed.is_ddp(model)

        self.model = model
        self.optimizer = optimizer
        self.objective = objective
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.eps_schedule = eps_schedule
        self.attack_mode: ModelMode = attack_mode
        self.train_mode: TrainMode = train_mode
        self.amp = bool(amp)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.callbacks: list[Callback] = list(callbacks)
        self.progress = progress
        make_progress(progress)  # validate now, not at the first fit
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self._eval_seed = int(self.generator.initial_seed()) + 1
        if self.data_parallel and seed is not None:  # each rank draws its own attack starts
            self.generator.manual_seed(distributed.rank_seed(seed, distributed.get_rank()))
        self._scaler = (
            torch.amp.GradScaler("cuda") if self.amp and self.device.type == "cuda" else None
        )
        self.history = History()
        self.epoch = 0
        self.stop_training = False
        self.max_epochs: int | None = None
        self.train_loader: Any = None
        self._pending_loader_states: list[Tensor] | None = None

    # ------------------------------------------------------------------------------ training
    def fit(
        self,
        train_loader: Iterable[Any],
        epochs: int,
        eval_loader: Iterable[Any] | None = None,
        *,
        eval_attack: Attack | None = _OBJECTIVE_ATTACK,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
    ) -> History:
        """Train until ``epochs`` epochs are done in total, then return the :class:`History`.

        ``epochs`` counts from the start of the run, so a resumed trainer at epoch 2 given
        ``epochs=4`` trains two more. With ``eval_loader`` each epoch also records clean accuracy
        and robust accuracy under ``eval_attack`` (default: the objective's attack at its full
        ε; ``None``: clean only). ``checkpoint_dir`` saves ``last.pt`` there every
        ``checkpoint_every`` epochs and after the last one.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        _check_loader("train_loader", train_loader)
        if eval_loader is not None:
            _check_loader("eval_loader", eval_loader)
        if eval_attack is _OBJECTIVE_ATTACK:
            eval_attack = getattr(self.objective, "attack", None)
        if eval_attack is not None and not isinstance(eval_attack, Attack):
            raise TypeError(f"eval_attack must be an Attack or None, got {eval_attack!r}")
        callbacks = list(self.callbacks)
        if checkpoint_dir is not None:
            callbacks.append(Checkpoint(checkpoint_dir, every=checkpoint_every))
        show = not self.data_parallel or distributed.is_main_process()
        progress = make_progress(self.progress) if show else None
        if progress is not None:
            callbacks.append(progress)
        if self.epoch >= epochs:
            warnings.warn(
                f"the trainer has already trained {self.epoch} epochs >= epochs={epochs}; nothing "
                f"to do (epochs counts the whole run, including resumed epochs)",
                stacklevel=2,
            )
            return self.history

        self.train_loader, self.max_epochs, self.stop_training = train_loader, epochs, False
        if self._pending_loader_states is not None:
            apply_loader_states(train_loader, self._pending_loader_states)
            self._pending_loader_states = None
        modes = [(m, m.training) for m in self.model.modules()]
        try:
            for cb in callbacks:
                cb.on_fit_start(self)
            while self.epoch < epochs and not self.stop_training:
                start = time.perf_counter()
                record = self._train_epoch(train_loader, self.epoch, modes, callbacks)
                if eval_loader is not None:
                    record.update(self._eval_epoch(eval_loader, eval_attack))
                record["time"] = self._reduce([time.perf_counter() - start], "max")[0]
                self.history.append(record)
                self.epoch += 1
                for cb in callbacks:
                    cb.on_epoch_end(self, self.history[-1])
                if self.data_parallel:  # a callback that stops one rank stops them all
                    self.stop_training = bool(self._reduce([self.stop_training], "max")[0])
            for cb in callbacks:
                cb.on_fit_end(self)
        finally:
            for module, flag in modes:
                module.training = flag
            self.optimizer.zero_grad(set_to_none=True)  # leave no gradients in the user's model
        return self.history

    def _train_epoch(
        self,
        loader: Iterable[Any],
        epoch: int,
        modes: list[tuple[nn.Module, bool]],
        callbacks: list[Callback],
    ) -> Record:
        eps = None if self.eps_schedule is None else float(self.eps_schedule(epoch))
        ctx = TrainContext(
            self.model,
            self.optimizer,
            generator=self.generator,
            epoch=epoch,
            eps=eps,
            attack_mode=self.attack_mode,
            amp=self.amp,
            device_type=self.device.type,
            scaler=self._scaler,
            grad_clip=self.grad_clip,
        )
        lr = float(self.optimizer.param_groups[0]["lr"])
        distributed.set_epoch(loader, epoch)  # DistributedSampler / SyntheticStream reshuffle
        for cb in callbacks:
            cb.on_epoch_start(self, epoch)
        zero = torch.zeros((), device=self.device)
        n, loss_sum = 0, zero.clone()
        counts = {"clean": [zero.clone(), 0], "robust": [zero.clone(), 0]}
        for index, batch in enumerate(loader):
            self._set_train_modes(modes)  # re-asserted per batch: callbacks may evaluate
            x, y = self._unpack(batch, index)
            ctx.batch_index = index
            out = self.objective.train_step(x, y, ctx)
            if not isinstance(out, StepOutput):
                raise TypeError(
                    f"objective.train_step must return a StepOutput, got {type(out).__name__}"
                )
            n += x.shape[0]
            loss_sum += out.loss.detach().float().to(self.device) * x.shape[0]
            for key, logits in (("clean", out.logits_clean), ("robust", out.logits_adv)):
                if logits is not None:
                    logits = as_logits(logits, x.shape[0])
                    hit = logits.argmax(1) == as_class_index(y, logits.shape[1])
                    counts[key][0] += hit.sum()
                    counts[key][1] += x.shape[0]
            if self.scheduler is not None and self.scheduler_interval == "batch":
                self.scheduler.step()
            for cb in callbacks:
                cb.on_batch_end(self, index, out)
        if n == 0:
            raise ValueError("train_loader yielded no batches; it must hold at least one batch")
        distributed.sync_buffers(self.model)  # rank 0's BatchNorm statistics everywhere
        # Sums and counts are reduced over ranks (not means of means): every rank's history is
        # global, so schedulers and callbacks decide the same everywhere.
        loss, total, *sums = self._reduce([loss_sum, n, *counts["clean"], *counts["robust"]])
        record: Record = {"epoch": epoch + 1, "loss": loss / total}
        for key, hits, seen in zip(counts, sums[::2], sums[1::2]):
            record[f"train_{key}_acc"] = hits / seen if seen else None
        record["eps"] = eps if eps is not None else self._objective_eps()
        record["lr"] = lr
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(record["loss"])
            else:
                self.scheduler.step()
        return record

    def _reduce(self, values: list[Any], op: str = "sum") -> list[float]:
        return distributed.reduce_floats(values, self.device, op, enabled=self.data_parallel)

    def _set_train_modes(self, modes: list[tuple[nn.Module, bool]]) -> None:
        if self.train_mode == "train":
            self.model.train()
        else:
            for module, flag in modes:
                module.training = flag

    def _objective_eps(self) -> float | None:
        threat = getattr(getattr(self.objective, "attack", None), "threat", None)
        eps = getattr(threat, "eps", None)
        return eps if isinstance(eps, float) else None

    def _unpack(self, batch: Any, index: int, name: str = "train_loader") -> tuple[Tensor, Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            what = f"a {type(batch).__name__}" + (
                f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
            )
            raise TypeError(
                f"{name} must yield (x, y) pairs (a tuple or list of two tensors); batch "
                f"{index} is {what}"
            )
        x, y = batch
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(
                f"{name}: x of batch {index} must be a floating-point tensor, got {got}"
            )
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True) if isinstance(y, Tensor) else y
        check_labels(y, x.shape[0], x.device, name=f"{name}: y of batch {index}")
        return x, y

    # ------------------------------------------------------------------------------ evaluation
    def _eval_epoch(self, loader: Iterable[Any], attack: Attack | None) -> Record:
        attacks: dict[str, Attack | None] = {"clean": None}
        if attack is not None:
            attacks["robust"] = attack
        report = self.evaluate(loader, attacks)
        return {
            "eval_clean_acc": report["clean"],
            "eval_robust_acc": None if attack is None else report["robust"],
        }

    def evaluate(
        self, loader: Iterable[Any], attacks: Mapping[str, Attack | None] | None = None
    ) -> EvaluationReport:
        """Clean and robust accuracy of the model on ``loader`` (see :func:`advtrade.evaluate`).

        ``attacks`` maps names to attacks (``None`` = clean); by default ``{"clean": None,
        "robust": <the objective's attack at its full ε>}``. Attacks draw from a generator with a
        fixed seed, so evaluations are comparable across epochs, and the global RNG is restored
        afterwards, so evaluating never changes the training run. The model comes back as it
        was (modes, parameters, buffers). Data-parallel, call it on every rank with this rank's
        shard (:func:`advtrade.distributed.shard_loader`): the counts are summed over ranks.
        """
        from .evaluation import evaluate

        if attacks is None:
            attack = getattr(self.objective, "attack", None)
            attacks = {"clean": None} | ({"robust": attack} if attack is not None else {})
        _check_loader("loader", loader)
        gen = torch.Generator(device=self.device).manual_seed(self._eval_seed)
        # Iterating a DataLoader draws a seed from the global RNG; restore it afterwards so an
        # evaluation never changes the training run (dropout masks, shuffling) that follows.
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            report = evaluate(self.model, loader, attacks, device=self.device, generator=gen)
        return distributed.reduce_report(report, loader) if self.data_parallel else report

    # ------------------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint (model, optimizer, scheduler, epoch, history, RNG states) to
        ``path`` atomically; returns the path. Data-parallel, call it on every rank (as ``fit``
        does): rank 0 writes every rank's random states while the others wait at a barrier."""
        write_checkpoint(self, path)
        return Path(path)

    def load(self, path: str | os.PathLike[str], *, restore_rng: bool = True) -> RobustTrainer:
        """Restore a checkpoint written by :meth:`save` into this trainer and its objects.

        Checks first that it was saved from the same model (state_dict keys and shapes) and an
        optimizer of the same layout. ``restore_rng`` also restores the attack generator, the
        global torch RNG and (at the next ``fit``) the train loader's shuffle generator, so the
        run continues bit for bit. Returns ``self``.
        """
        state = read_checkpoint(path)
        restore_trainer(self, state, Path(path), restore_rng=restore_rng)
        return self

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Any,
        **kwargs: Any,
    ) -> RobustTrainer:
        """A trainer built from the given objects (and keyword options, e.g. ``scheduler=``)
        with the checkpoint at ``path`` loaded; call ``fit`` with the original ``epochs``."""
        return cls(model, optimizer, objective, **kwargs).load(path)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _differs(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return True
    return a.index is not None and b.index is not None and a.index != b.index


def _check_loader(name: str, loader: object) -> None:
    if isinstance(loader, (Tensor, str, bytes)) or not hasattr(loader, "__iter__"):
        raise TypeError(
            f"{name} must be an iterable of (x, y) batches such as a DataLoader, got "
            f"{type(loader).__name__}"
        )
    try:
        size = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return
    if size == 0:
        raise ValueError(f"{name} is empty (len 0); it must yield at least one (x, y) batch")
