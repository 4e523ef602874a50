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
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .. import distributed
from .._batches import DEFAULT_KEYS, BatchKeys, check_keys
from .._outputs import as_class_index, as_logits
from .._validation import check_loader
from ..attacks import Attack
from ..evaluation import EvaluationReport, evaluate
from ..guard import ModelMode
from ._averaging import WeightAverage
from ._best import BestModel
from ._callbacks import Callback, make_progress
from ._checkpoint import Checkpoint
from ._context import TrainContext
from ._history import History, Record
from ._objectives import Objective, StepOutput
from ._options import check_fit_args, check_trainer_args, prepare_model, read_batch
from ._persistence import TrainerState
from ._schedules import EpsilonSchedule
from ._state import apply_loader_states, plain_module

__all__ = ["RobustTrainer"]

TrainMode = Literal["train", "as_is"]
_OBJECTIVE_ATTACK: Any = "objective"


class RobustTrainer(TrainerState):
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
    ``ema`` (e.g. 0.999) keeps an exponential moving average of the weights and buffers after
    every optimizer step, which evaluations and ``best.pt`` use and checkpoints resume bit for
    bit. ``channels_last`` runs the model and batches in channels-last memory format (faster
    convolutions on GPUs); ``compile`` (True or ``torch.compile`` options) compiles the model
    once. ``progress`` is ``"auto"``, ``"tqdm"``, ``"plain"`` or ``None``. Loaders may yield
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
        ema: float | None = None,
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,
        callbacks: Iterable[Callback] = (),
        progress: str | None = "auto",
        batch_keys: BatchKeys = DEFAULT_KEYS,
    ) -> None:
        grad_clip, seed, ema, callback_list = check_trainer_args(
            model,
            optimizer,
            objective,
            scheduler=scheduler,
            scheduler_interval=scheduler_interval,
            attack_mode=attack_mode,
            train_mode=train_mode,
            eps_schedule=eps_schedule,
            grad_clip=grad_clip,
            seed=seed,
            flags={
                "move_model": move_model,
                "ddp": ddp,
                "amp": amp,
                "channels_last": channels_last,
            },
            ema=ema,
            compile=compile,
            callbacks=callbacks,
        )
        self.batch_keys = check_keys(batch_keys)
        make_progress(progress)  # validate now, not at the first fit
        model, self.device = prepare_model(
            model, device, move_model=move_model, channels_last=channels_last, compile=compile
        )
        self.channels_last = channels_last
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
        self.callbacks: list[Callback] = callback_list
        self.progress = progress
        self.average = None if ema is None else WeightAverage(plain_module(model), ema)
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
        self.best = BestModel()
        self._pending_loader_states: list[Tensor] | None = None
        self._interrupted: int | None = None  # the epoch a failed fit left half-trained
        self._num_classes: int | None = None

    @property
    def evaluated_model(self) -> nn.Module:
        """The model evaluations use: the weight average when ``ema`` is set, else the model."""
        return self.model if self.average is None else self.average.module

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
        patience: int | None = None,
    ) -> History:
        """Train until ``epochs`` epochs are done in total, then return the :class:`History`.

        ``epochs`` counts from the start of the run, so a resumed trainer at epoch 2 given
        ``epochs=4`` trains two more. With ``eval_loader`` each epoch also records clean accuracy
        and robust accuracy under ``eval_attack`` (default: the objective's attack at its full
        ε; ``None``: clean only), and keeps the best epoch against robust overfitting (Rice et
        al. 2020): the one with the highest held-out robust accuracy (clean accuracy without an
        attack), recorded as ``best_epoch`` in the history, saved as ``best.pt`` beside
        ``last.pt`` (or in memory without ``checkpoint_dir``) and restored by
        :meth:`load_best`; ``patience`` stops training after that many epochs without
        improvement. ``checkpoint_dir`` saves ``last.pt`` every ``checkpoint_every`` epochs and
        after the last one. Every argument is checked before any training.
        """
        if eval_attack is _OBJECTIVE_ATTACK:
            eval_attack = self.objective.attack
        epochs, patience = check_fit_args(
            train_loader, epochs, eval_loader, eval_attack, patience, checkpoint_every
        )
        callbacks = list(self.callbacks)
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = Checkpoint(checkpoint_dir, every=checkpoint_every)
            callbacks.append(checkpoint)
            best = checkpoint.path.parent / "best.pt"
            if self.best.epoch is not None and self.best.weights is None and best.is_file():
                self.best.path = best  # a resumed run: its best epoch so far is on disk
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
                improved = eval_loader is not None and self._offer_best(record)
                self.history.append(record)
                self.epoch += 1
                self._interrupted = None
                if improved:
                    self._keep_best(None if checkpoint is None else checkpoint.path.parent)
                if patience is not None and self.best.stale >= patience:
                    self.stop_training = True
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

    def _offer_best(self, record: Record) -> bool:
        score = record.get("eval_robust_acc")
        score = record["eval_clean_acc"] if score is None else score
        improved = self.best.offer(self.epoch + 1, float(score))
        record["best_epoch"] = self.best.epoch
        return improved

    def _context(self, epoch: int, eps: float | None) -> TrainContext:
        return TrainContext(
            self.model, self.optimizer, generator=self.generator, epoch=epoch, eps=eps,
            attack_mode=self.attack_mode, amp=self.amp, device_type=self.device.type,
            scaler=self._scaler, grad_clip=self.grad_clip,
            after_step=None if self.average is None else self.average.update,
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

    def _unpack(self, batch: Any, index: int) -> tuple[Tensor, Tensor]:
        x, y, self._num_classes = read_batch(
            batch, "train_loader", index, keys=self.batch_keys, device=self.device,
            channels_last=self.channels_last, model=self.model, num_classes=self._num_classes,
        )
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
        "robust": <the objective's attack at its full ε>}``. With ``ema`` the weight average is
        evaluated (:attr:`evaluated_model`). Attacks draw from a generator with a
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
                self.evaluated_model,
                loader,
                attacks,
                device=self.device,
                generator=gen,
                amp=self.amp,
                batch_keys=self.batch_keys,
            )
        return distributed.reduce_report(report, loader) if self.data_parallel else report
