"""What a trainer saves and restores: ``state_dict``/``load_state_dict``, checkpoint files, and
the best epoch's weights — the trainer's persistence, apart from its training loop."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed
from ._averaging import WeightAverage
from ._best import BestModel
from ._checkpoint import FORMAT, VERSION, atomic_save, read_checkpoint
from ._history import History
from ._objectives import Objective
from ._state import (
    check_compatible,
    check_model_fits,
    class_name,
    cuda_states,
    loader_generators,
    plain_module,
    rank_states,
    restore_global_rng,
)

__all__ = ["TrainerState"]


class TrainerState:
    """The persistence of :class:`~advtrade.RobustTrainer` (its base class): everything here
    reads and writes the trainer's state only through these methods."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective
    scheduler: Any
    average: WeightAverage | None
    generator: torch.Generator
    history: History
    best: BestModel
    epoch: int
    data_parallel: bool
    train_loader: Iterable[Any] | None
    _scaler: torch.amp.GradScaler | None
    _pending_loader_states: list[Tensor] | None
    _interrupted: int | None

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
            "best": self.best.state_dict(),
            "ema": None if self.average is None else self.average.state_dict(),
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
        saved_ema = state.get("ema")
        ema = None if self.average is None else self.average.decay
        if (saved_ema is None) != (self.average is None):
            raise ValueError(
                f"checkpoint {where} was saved {'without' if saved_ema is None else 'with'} a "
                f"weight average but the trainer has ema={ema}; pass the same ema= as in the "
                f"saved run"
            )
        rng = rank_states(dict(state["rng"]), self.data_parallel, where)
        if self.average is not None:
            self.average.load_state_dict(saved_ema)
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self._scaler is not None and state.get("scaler") is not None:
            self._scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best.load_state_dict(state.get("best") or {})
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

    def load(self, path: str | os.PathLike[str], *, restore_rng: bool = True) -> Any:
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
    ) -> Any:
        """A trainer built from the given objects (and keyword options, e.g. ``scheduler=``)
        with the checkpoint at ``path`` loaded; call ``fit`` with the original ``epochs``."""
        return cls(model, optimizer, objective, **kwargs).load(path)

    def _keep_best(self, folder: Path | None) -> None:
        """Save the epoch just finished as the best: ``best.pt`` (a full checkpoint) in the
        checkpoint folder, else a copy of the weights in memory."""
        if folder is not None:
            self.best.path = self.save(folder / "best.pt")
            self.best.weights = None
            return
        weights = {"model": plain_module(self.model).state_dict()}
        if self.average is not None:
            weights["ema"] = self.average.state_dict()
        self.best.keep(weights)

    def load_best(self, checkpoint_dir: str | os.PathLike[str] | None = None) -> Any:
        """Restore the weights (and weight average) of the best epoch of the last ``fit`` with
        an ``eval_loader``: from ``checkpoint_dir/best.pt`` when given (or after a resume), else
        from memory. The optimizer, the epoch count and the history stay as they are, so the
        trainer still knows the whole run. Returns ``self``."""
        path = self.best.path if checkpoint_dir is None else Path(checkpoint_dir) / "best.pt"
        if path is not None:
            state = read_checkpoint(path)
            weights = {"model": state["model"], "ema": state.get("ema")}
        elif self.best.weights is not None:
            weights = self.best.weights
        else:
            raise RuntimeError(
                "no best epoch is known: fit with an eval_loader first (without checkpoint_dir "
                "the best weights are kept in memory), or pass the checkpoint_dir holding best.pt"
            )
        check_model_fits(plain_module(self.model), weights["model"], "best")
        plain_module(self.model).load_state_dict(weights["model"])
        if self.average is not None and weights.get("ema") is not None:
            self.average.load_state_dict(weights["ema"])
        return self

