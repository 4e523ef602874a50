"""``RobustTrainer``: (adversarial) training of a user's existing model, optimizer and scheduler.

The trainer takes the user's objects as they are — no subclassing, no re-creation, no change to
learning rates or other settings — and runs an :class:`~advtrade.training.Objective` over the
batches of a DataLoader. Around the loop sit callbacks (progress, checkpoints), an optional ε
schedule, mixed precision, gradient clipping and checkpoints from which an interrupted run resumes
bit for bit. Attacks are crafted with the model in eval mode by default (BatchNorm statistics stay
clean); the weight update always runs in the user's training mode, and ``fit`` leaves every
submodule's mode as it found it.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .. import distributed
from .._batches import DEFAULT_KEYS, BatchKeys, check_keys, unpack_batch
from .._outputs import as_class_index, as_logits
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
from ..evaluation import EvaluationReport, evaluate
from ..guard import ModelMode, model_guard
from ._callbacks import Callback, make_progress
from ._checkpoint import FORMAT, VERSION, Checkpoint, atomic_save, read_checkpoint
from ._context import TrainContext
from ._history import History, Record
from ._objectives import Objective, StepOutput
from ._schedules import EpsilonSchedule
from ._state import (
    apply_loader_states,
    check_compatible,
    class_name,
    cuda_states,
    loader_generators,
    plain_module,
    rank_states,
    restore_global_rng,
)

__all__ = ["RobustTrainer"]

TrainMode = Literal["train", "as_is"]
_OBJECTIVE_ATTACK: Any = "objective"


class RobustTrainer:
    """Trains ``model`` with ``optimizer`` on an objective, e.g. ``AdversarialTraining(PGD(...))``.

    ``scheduler`` (optional) steps once per epoch, or per batch with
    ``scheduler_interval="batch"`` (a ``ReduceLROnPlateau`` steps on the epoch's training loss).
    ``device`` is where batches go (default: the model's device); the model moves only with
    ``move_model=True``. A ``DistributedDataParallel`` model (or ``ddp=True``, which wraps it)
    trains data-parallel (see :mod:`advtrade.distributed`). ``eps_schedule`` (e.g.
    ``LinearWarmup(eps, 5)``) sets each epoch's attack budget; ``attack_mode`` crafts attacks in
    eval mode (default) or in the modes the model is in (``"as_is"``, buffers restored).
    ``train_mode="train"`` puts the model in training mode for each epoch (``"as_is"`` keeps the
    modes it had when ``fit`` started, e.g. frozen BatchNorm). ``amp`` enables autocast (float16
    with a GradScaler on CUDA, bfloat16 on CPU); ``grad_clip`` clips the global gradient norm.
    ``seed`` seeds the trainer's own generator for attacks (one stream per rank under DDP).
    ``progress`` is ``"auto"``, ``"tqdm"``, ``"plain"`` or ``None``. Loaders may yield
    ``(x, y)`` pairs or dicts; ``batch_keys`` names the inputs and labels of dict batches.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Objective,
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
        batch_keys: BatchKeys = DEFAULT_KEYS,
    ) -> None:
        check_model(model)
        check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
        if not isinstance(objective, Objective):
            hint = ""
            if isinstance(objective, Attack):
                hint = " (did you mean AdversarialTraining(attack)?)"
            raise TypeError(
                f"objective must be an advtrade Objective such as Standard(), "
                f"AdversarialTraining(attack) or TRADES(attack); got {type(objective).__name__}"
                f"{hint}"
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
        if grad_clip is not None:
            grad_clip = check_number("grad_clip", grad_clip, minimum=0.0, strict=True)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0, maximum=2**63 - 1)
        for name in ("move_model", "ddp", "amp"):
            check_bool(name, locals()[name])
        callbacks = list(callbacks)
        for cb in callbacks:
            check_type("callbacks", cb, Callback, "a sequence of advtrade Callback objects")

        current = model_device(model) or torch.device("cpu")
        self.device = torch.device(device) if device is not None else current
        if _differs(current, self.device):
            if not move_model:
                raise ValueError(
                    f"the model is on {current} but device={str(self.device)!r}; move the "
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
        self.amp = amp
        self.grad_clip = grad_clip
        self.callbacks: list[Callback] = callbacks
        self.progress = progress
        self.batch_keys = check_keys(batch_keys)
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
        self.train_loader: Iterable[Any] | None = None
        self._pending_loader_states: list[Tensor] | None = None
        self._interrupted: int | None = None  # the epoch a failed fit left half-trained
        self._num_classes: int | None = None

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything an interrupted run needs to continue bit for bit, as tensors and plain
        values: the model's, optimizer's, scheduler's and AMP scaler's state_dicts, the classes
        of the optimizer, scheduler and objective, the epoch, the history and the random states
        (attack generator, DataLoader shuffle generators, global torch RNGs, objective state).
        Data-parallel, a collective: every rank's random states are gathered."""
        pending = self._pending_loader_states
        loader_states = (
            list(pending)
            if pending is not None
            else [g.get_state() for g in loader_generators(self.train_loader)]
        )
        objective_state = self.objective.state_dict()
        rng: dict[str, Any] = {
            "trainer": self.generator.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": cuda_states(),
            "objective": objective_state or None,  # per rank: free AT's perturbation
        }
        if self.data_parallel:  # every rank's own states, in rank order
            rng["ranks"] = distributed.all_gather_object(dict(rng))
        scheduler, scaler = self.scheduler, self._scaler
        return {
            "format": FORMAT,
            "version": VERSION,
            "epoch": int(self.epoch),
            "model": plain_module(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "history": self.history.to_list(),
            "classes": {
                "optimizer": class_name(self.optimizer),
                "scheduler": class_name(scheduler),
                "objective": class_name(self.objective),
            },
            "rng": {**rng, "loader": loader_states},
        }

    def load_state_dict(
        self, state: Mapping[str, Any], *, restore_rng: bool = True, where: str = "state"
    ) -> None:
        """Restore :meth:`state_dict` into this trainer and its objects, after checking that it
        was saved from the same model (state_dict keys and shapes) and the same kinds of
        optimizer (and parameter groups), scheduler and objective: any difference raises a
        ``ValueError`` naming it, before anything is changed. ``restore_rng`` also restores the
        attack generator, the global torch RNG and (at the next ``fit``) the train loader's
        shuffle generators."""
        model = plain_module(self.model)
        check_compatible(
            state,
            model=model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            objective=self.objective,
            where=where,
        )
        rng = rank_states(dict(state["rng"]), self.data_parallel, where)
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self._scaler is not None and state.get("scaler") is not None:
            self._scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.history = History(state["history"])
        self.objective.load_state_dict(rng.get("objective") or {})
        self._interrupted = None
        if restore_rng:
            self.generator.set_state(rng["trainer"])
            restore_global_rng(rng)
            self._pending_loader_states = list(rng.get("loader") or [])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`state_dict` to ``path`` atomically; returns the path. Data-parallel,
        call it on every rank (as ``fit`` does): rank 0 writes while the others wait."""
        state = self.state_dict()
        if not self.data_parallel or distributed.is_main_process():
            atomic_save(state, path)
        if self.data_parallel:
            distributed.barrier()
        return Path(path)

    def load(self, path: str | os.PathLike[str], *, restore_rng: bool = True) -> RobustTrainer:
        """Restore a checkpoint written by :meth:`save` (see :meth:`load_state_dict`); returns
        ``self``."""
        self.load_state_dict(read_checkpoint(path), restore_rng=restore_rng, where=str(path))
        return self

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Objective,
        **kwargs: Any,
    ) -> RobustTrainer:
        """A trainer built from the given objects (and keyword options, e.g. ``scheduler=``)
        with the checkpoint at ``path`` loaded; call ``fit`` with the original ``epochs``."""
        return cls(model, optimizer, objective, **kwargs).load(path)

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
        ``checkpoint_every`` epochs and after the last one. Every argument is checked before
        any training.
        """
        epochs = check_int("epochs", epochs, minimum=1)
        check_loader("train_loader", train_loader)
        if eval_loader is not None:
            check_loader("eval_loader", eval_loader)
        if eval_attack is _OBJECTIVE_ATTACK:
            eval_attack = self.objective.attack
        if eval_attack is not None:
            check_type("eval_attack", eval_attack, Attack, "an Attack or None")
        callbacks = list(self.callbacks)
        if checkpoint_dir is not None:
            callbacks.append(Checkpoint(checkpoint_dir, every=checkpoint_every))
        if self._interrupted is not None:
            raise RuntimeError(
                f"the previous fit() stopped during epoch {self._interrupted + 1}, so the model "
                f"holds part of an epoch's updates and the trainer still counts {self.epoch} "
                f"epochs; continuing would differ from an uninterrupted run. Resume from the last "
                f"checkpoint (RobustTrainer.resume(...) or trainer.load(path)) instead"
            )
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
                self._interrupted = self.epoch
                start = time.perf_counter()
                record = self._train_epoch(train_loader, self.epoch, modes, callbacks)
                if eval_loader is not None:
                    record.update(self._eval_epoch(eval_loader, eval_attack))
                record["time"] = self._reduce([time.perf_counter() - start], "max")[0]
                self.history.append(record)
                self.epoch += 1
                self._interrupted = None
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

    def _context(self, epoch: int, eps: float | None) -> TrainContext:
        return TrainContext(
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

    def _train_epoch(
        self,
        loader: Iterable[Any],
        epoch: int,
        modes: list[tuple[nn.Module, bool]],
        callbacks: list[Callback],
    ) -> Record:
        eps = None if self.eps_schedule is None else float(self.eps_schedule(epoch))
        ctx = self._context(epoch, eps)
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
            if x.shape[0] == 0:
                continue
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
            raise ValueError(
                "train_loader yielded no batches (or only empty ones); it must yield at least "
                "one example"
            )
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
        attack = self.objective.attack
        threat = None if attack is None else attack.threat
        return threat.eps if threat is not None and isinstance(threat.eps, float) else None

    def _classes(self, x: Tensor) -> int:
        """The model's number of classes, from one small eval-mode forward pass (once)."""
        if self._num_classes is None:
            with model_guard(self.model, "eval") as net, torch.no_grad():
                self._num_classes = as_logits(net(x[:2]), min(2, x.shape[0])).shape[1]
        return self._num_classes

    def _unpack(self, batch: Any, index: int, name: str = "train_loader") -> tuple[Tensor, Tensor]:
        x, y = unpack_batch(batch, self.batch_keys, f"{name}: batch {index}")
        x = check_inputs(x, f"{name}: x of batch {index}")
        y = check_labels(y, x.shape[0], y.device, f"{name}: y of batch {index}")
        x = x.to(self.device, non_blocking=True)
        if x.shape[0] and not y.is_floating_point():
            check_label_range(y, self._classes(x), f"{name}: y of batch {index}")
        return x, y.to(self.device, non_blocking=True)

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
        if attacks is None:
            attack = self.objective.attack
            attacks = {"clean": None} | ({"robust": attack} if attack is not None else {})
        check_loader("loader", loader)
        gen = torch.Generator(device=self.device).manual_seed(self._eval_seed)
        # Iterating a DataLoader draws a seed from the global RNG; restore it afterwards so an
        # evaluation never changes the training run (dropout masks, shuffling) that follows.
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            report = evaluate(
                self.model,
                loader,
                attacks,
                device=self.device,
                generator=gen,
                amp=self.amp,
                batch_keys=self.batch_keys,
            )
        return distributed.reduce_report(report, loader) if self.data_parallel else report


def _differs(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return True
    return a.index is not None and b.index is not None and a.index != b.index
