"""Checkpoints of a training run: written atomically, read with ``weights_only=True``.

A checkpoint holds everything an interrupted run needs to continue bit for bit: the model's,
optimizer's, scheduler's and AMP scaler's state_dicts, the epoch count, the history (plain lists,
dicts and floats) and the random states — the trainer's attack generator, the DataLoader's shuffle
generator(s), and the global torch RNG (dropout, loaders without a generator). Files are written to
a temporary file in the target directory and moved into place with ``os.replace``, so a crash
during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import distributed
from .callbacks import Callback, History, Record
from .guard import unwrap_model

if TYPE_CHECKING:
    from .training import RobustTrainer

__all__ = ["Checkpoint", "atomic_save", "read_checkpoint", "write_checkpoint"]

FORMAT = "advtrade.checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same directory and
    ``os.replace``: readers see the old file or the complete new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :meth:`RobustTrainer.save` (``weights_only=True``, on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable advtrade checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an advtrade checkpoint (no '{FORMAT}' marker)")
    if state.get("version") != VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {state.get('version')!r}; this advtrade "
            f"reads version {VERSION}"
        )
    return state


# --------------------------------------------------------------------------- random states


def loader_generators(loader: object) -> list[torch.Generator]:
    """The ``torch.Generator`` objects that drive a DataLoader's shuffling (deduplicated)."""
    sampler = getattr(loader, "sampler", None)
    inner = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    found: list[torch.Generator] = []
    for obj in (loader, sampler, inner):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _cuda_states() -> list[torch.Tensor]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(torch.cuda.get_rng_state_all())
    return []


def apply_loader_states(loader: object, states: list[torch.Tensor]) -> None:
    """Restore saved shuffle-generator states into ``loader`` (warn if they do not fit)."""
    gens = loader_generators(loader)
    if len(gens) != len(states):
        warnings.warn(
            f"the checkpoint holds {len(states)} DataLoader generator state(s) but train_loader "
            f"has {len(gens)} generator(s); the batch order will differ from the original run "
            f"(build the loader with a torch.Generator, as in the original run)",
            stacklevel=3,
        )
        return
    for gen, state in zip(gens, states):
        gen.set_state(state)


# --------------------------------------------------------------------------- trainer state


def _plain_module(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel and ``torch.compile`` wrappers, so checkpoints
    are interchangeable between single-process, data-parallel and compiled runs."""
    model = unwrap_model(model)
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    return unwrap_model(inner) if isinstance(inner, nn.Module) else model


def trainer_state(trainer: RobustTrainer) -> dict[str, Any]:
    """Everything :func:`restore_trainer` needs, as tensors and plain Python values."""
    pending = trainer._pending_loader_states
    if pending is not None:
        loader_states = list(pending)
    else:
        loader_states = [g.get_state() for g in loader_generators(trainer.train_loader)]
    scheduler, scaler = trainer.scheduler, trainer._scaler
    rng: dict[str, Any] = {
        "trainer": trainer.generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": _cuda_states(),
        # per-rank state of objectives that carry some (free AT's perturbation buffer)
        "objective": state_dict() if callable(state_dict := getattr(
            trainer.objective, "state_dict", None
        )) else None,
    }
    if getattr(trainer, "data_parallel", False):  # every rank's own states, in rank order
        rng["ranks"] = distributed.all_gather_object(dict(rng))
    return {
        "format": FORMAT,
        "version": VERSION,
        "epoch": int(trainer.epoch),
        "model": _plain_module(trainer.model).state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "history": trainer.history.to_list(),
        "rng": {**rng, "loader": loader_states},
    }


def write_checkpoint(trainer: RobustTrainer, path: str | os.PathLike[str]) -> None:
    """Save ``trainer`` to ``path``; data-parallel, a collective: every rank's random states
    are gathered, rank 0 writes and the other ranks wait at a barrier until the file is in place."""
    state = trainer_state(trainer)
    data_parallel = getattr(trainer, "data_parallel", False)
    if not data_parallel or distributed.is_main_process():
        atomic_save(state, path)
    if data_parallel:
        distributed.barrier()


def check_model_state(model: nn.Module, saved: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise ``ValueError`` naming the differences if ``saved`` is not a state of ``model``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:5]}")
        raise ValueError(
            f"checkpoint {path} was saved from a different model (its state_dict does not match "
            f"the model's): " + "; ".join(parts)
        )


def _check_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, path: Path) -> None:
    groups = saved.get("param_groups", []) if isinstance(saved, dict) else []
    theirs = [len(g.get("params", [])) for g in groups]
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if theirs != ours:
        raise ValueError(
            f"checkpoint {path} holds an optimizer state for parameter groups of sizes {theirs}, "
            f"but optimizer has groups of sizes {ours}; build the optimizer as in the saved run"
        )


def restore_trainer(
    trainer: RobustTrainer, state: Mapping[str, Any], path: Path, *, restore_rng: bool = True
) -> None:
    """Load ``state`` (from :func:`read_checkpoint`) into ``trainer`` after checking it fits."""
    model = _plain_module(trainer.model)
    check_model_state(model, state["model"], path)
    _check_optimizer_state(trainer.optimizer, state["optimizer"], path)
    has_sched = state.get("scheduler") is not None
    if has_sched != (trainer.scheduler is not None):
        saved, given = ("a", "no") if has_sched else ("no", "a")
        raise ValueError(
            f"checkpoint {path} holds {saved} scheduler state but the trainer has {given} "
            f"scheduler; pass the same kind of scheduler= as in the saved run"
        )
    model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer._scaler is not None and state.get("scaler") is not None:
        trainer._scaler.load_state_dict(state["scaler"])
    trainer.epoch = int(state["epoch"])
    trainer.history = History(state["history"])
    rng = _rank_rng(trainer, state["rng"], path)
    load_objective = getattr(trainer.objective, "load_state_dict", None)
    if rng.get("objective") is not None and callable(load_objective):
        load_objective(rng["objective"])
    if not restore_rng:
        return
    trainer.generator.set_state(rng["trainer"])
    torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    trainer._pending_loader_states = list(rng.get("loader") or [])


def _rank_rng(trainer: RobustTrainer, rng: dict[str, Any], path: Path) -> dict[str, Any]:
    """The random states of this rank from a data-parallel checkpoint (else ``rng`` itself)."""
    ranks = rng.get("ranks")
    if not ranks:
        return rng
    parallel = getattr(trainer, "data_parallel", False)
    world, rank = (distributed.get_world_size(), distributed.get_rank()) if parallel else (1, 0)
    if len(ranks) == world:
        return {**rng, **ranks[rank]}
    warnings.warn(
        f"checkpoint {path} was written by {len(ranks)} data-parallel processes but this run has "
        f"{world}; it continues with rank 0's random states, so attack starts and data order "
        f"differ from the original run (the weights and optimizer state are restored exactly)",
        stacklevel=4,
    )
    return {**rng, **ranks[0]}


class Checkpoint(Callback):
    """Saves the trainer to ``dirname/filename`` every ``every`` epochs and after the last one.

    Each save replaces the previous file atomically, so ``dirname/filename`` is always the last
    complete checkpoint; resume with ``RobustTrainer.resume(path, model, optimizer, objective)``.
    """

    def __init__(
        self, dirname: str | os.PathLike[str], every: int = 1, filename: str = "last.pt"
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {every!r}")
        if not isinstance(filename, str) or not filename or os.sep in filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.path = Path(dirname) / filename
        self.every = every

    def on_epoch_end(self, trainer: RobustTrainer, record: Record) -> None:
        max_epochs = getattr(trainer, "max_epochs", None)
        last = max_epochs is not None and trainer.epoch >= max_epochs
        if trainer.epoch % self.every == 0 or last or trainer.stop_training:
            trainer.save(self.path)
