"""The pieces of a trainer's state that are not a ``state_dict`` of one object: random states
(the attack generator, the DataLoader's shuffle generators, the global torch RNGs) and the checks
that a saved state fits the objects it is loaded into."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed
from ..guard import unwrap_model

__all__ = [
    "apply_loader_states",
    "check_compatible",
    "check_model_fits",
    "class_name",
    "cuda_states",
    "loader_generators",
    "plain_module",
    "rank_states",
    "restore_global_rng",
]


def class_name(obj: object) -> str | None:
    """``module.QualName`` of ``obj``'s class (``None`` for ``None``): what checkpoints record
    to refuse loading into a different optimizer, scheduler or objective."""
    if obj is None:
        return None
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def plain_module(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel and ``torch.compile`` wrappers, so checkpoints
    are interchangeable between single-process, data-parallel and compiled runs."""
    model = unwrap_model(model)
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    return unwrap_model(inner) if isinstance(inner, nn.Module) else model


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


def apply_loader_states(loader: object, states: list[Tensor]) -> None:
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


def cuda_states() -> list[Tensor]:
    """The CUDA RNG states of every device (none when CUDA is not in use)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(torch.cuda.get_rng_state_all())
    return []


def restore_global_rng(rng: Mapping[str, Any]) -> None:
    """Restore the global CPU (and, where they fit, CUDA) RNG states."""
    torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def rank_states(rng: dict[str, Any], data_parallel: bool, where: str) -> dict[str, Any]:
    """This rank's random states from a checkpoint's ``rng`` entry (data-parallel checkpoints
    hold every rank's, in rank order)."""
    ranks = rng.get("ranks")
    if not ranks:
        return rng
    world, rank = (
        (distributed.get_world_size(), distributed.get_rank()) if data_parallel else (1, 0)
    )
    if len(ranks) == world:
        return {**rng, **ranks[rank]}
    warnings.warn(
        f"checkpoint {where} was written by {len(ranks)} data-parallel processes but this run "
        f"has {world}; it continues with rank 0's random states, so attack starts and data order "
        f"differ from the original run (the weights and optimizer state are restored exactly)",
        stacklevel=4,
    )
    return {**rng, **ranks[0]}


def _model_differences(model: nn.Module, saved: Mapping[str, Tensor]) -> list[str]:
    own = model.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:5]}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:5]}")
    if shapes:
        parts.append(f"shape mismatches {shapes[:5]}")
    return parts


def _same_class(saved: str | None, given: str | None) -> bool:
    """Class names match; 0.1 checkpoints recorded none, and advtrade's own classes moved
    modules in 0.2, so only the class's own name is compared."""
    if saved is None or given is None:
        return saved is given
    return saved.rsplit(".", 1)[-1] == given.rsplit(".", 1)[-1]


def check_model_fits(model: nn.Module, saved: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` naming every difference between the saved weights ``saved`` and
    ``model`` (missing or unexpected keys, shapes) before anything is loaded."""
    differences = _model_differences(model, saved)
    if differences:
        raise ValueError(
            f"checkpoint {where} does not fit this trainer: it was saved from a different "
            f"model: " + "; ".join(differences)
        )


def check_compatible(
    state: Mapping[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    objective: object,
    where: str,
) -> None:
    """Raise ``ValueError`` naming every difference between what ``state`` was saved from and
    the objects it would be loaded into — before anything is loaded."""
    problems = []
    differences = _model_differences(model, state["model"])
    if differences:
        problems.append("it was saved from a different model: " + "; ".join(differences))
    classes = state.get("classes") or {}
    for key, obj, hint in (
        ("optimizer", optimizer, "optimizer"),
        ("scheduler", scheduler, "scheduler="),
        ("objective", objective, "objective"),
    ):
        saved, given = classes.get(key, class_name(obj)), class_name(obj)
        if key == "scheduler" and "classes" not in state:  # 0.1: only presence is known
            saved = given if (state.get("scheduler") is None) == (obj is None) else "another"
        if not _same_class(saved, given):
            problems.append(
                f"its {key} is {saved or 'none'} but the trainer's is {given or 'none'} "
                f"(pass the same kind of {hint} as in the saved run)"
            )
    saved_optimizer = state["optimizer"]
    groups = saved_optimizer.get("param_groups", []) if isinstance(saved_optimizer, dict) else []
    theirs = [len(g.get("params", [])) for g in groups]
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if theirs != ours:
        problems.append(
            f"its optimizer has parameter groups of sizes {theirs}, the trainer's {ours} (build "
            f"the optimizer as in the saved run)"
        )
    if problems:
        raise ValueError(f"checkpoint {where} does not fit this trainer: " + "; ".join(problems))
