"""Data-parallel training under ``torchrun``: process groups, sharded loaders, metric reduction.

:class:`~advtrade.RobustTrainer` runs data-parallel when its model is a
``DistributedDataParallel`` (DDP) wrapper — wrap it yourself, with :func:`wrap_ddp`, or pass
``ddp=True``. Then, on every rank:

* the training forward goes through the wrapper, so weight gradients are all-reduced; attacks
  (and evaluation) run on the inner module inside :func:`~advtrade.guard.model_guard`, with
  parameters not requiring gradients, so an attack's forward/backward passes issue no collective,
  leave no gradient and never touch DDP's reducer: a rank may attack any number of batches;
* the train loader's sampler (and dataset) get ``set_epoch(epoch)`` before each epoch, so a
  ``DistributedSampler`` reshuffles — and a resumed run reshuffles the same way;
* the history holds global numbers: loss and accuracy sums and counts are all-reduced (not
  means of means), and evaluations sum the counts of each rank's shard, so every rank's history
  is the same and callbacks (early stopping, ``ReduceLROnPlateau``) decide the same;
* each rank draws attack starts from its own generator (seeded from ``seed`` and the rank);
  checkpoints hold every rank's random states, are written by rank 0 while the others wait at
  a barrier, hold the inner module's state_dict (interchangeable with single-process runs) and
  resume on every rank; progress is shown on rank 0 only.

A ``DistributedSampler`` pads each rank's share with repeated examples so that all ranks run the
same number of steps (DDP needs that: a rank with fewer batches hangs the others), which is right
for training but counts some examples twice in an evaluation. :func:`shard_loader` shards without
padding for exact evaluation; :func:`distributed_loader` builds the training loader. Under CUDA,
``amp=True`` trains in float16 with a ``GradScaler``, while attacks keep ``x_adv`` in the input's
dtype, so projections stay exact. To combine with ``torch.compile``, compile the module, then
wrap it: ``wrap_ddp(torch.compile(model))`` (attacks run the compiled module; checkpoints hold
the plain module's keys).

Collectives must be reached by every rank, so: call ``trainer.evaluate`` and ``trainer.save``
on every rank (for a rank-0-only evaluation use :func:`advtrade.evaluate`); give every rank the
same number of training batches (a streamed dataset such as ``SyntheticStream`` with
``world_size`` needs a batch count divisible by it); a callback that decides on per-rank data
should reduce it first (:func:`all_reduce`) — decisions on the history are already global. An
error on one rank (say a non-finite loss) stops that rank; ``torchrun`` then stops the others.
``attack_mode="as_is"`` with ``SyncBatchNorm`` would issue collectives inside attacks: keep the
default eval-mode attacks there.
"""

from __future__ import annotations

import datetime
import functools
import operator
import os
import socket
import warnings
from collections.abc import Iterator, Sequence, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .evaluation import EvaluationReport

__all__ = [
    "ShardSampler",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "distributed_loader",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_ddp",
    "is_main_process",
    "rank_seed",
    "reduce_floats",
    "reduce_report",
    "set_epoch",
    "shard_loader",
    "sync_buffers",
    "wrap_ddp",
]


# --------------------------------------------------------------------------- process group
def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank in the default group (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    """The number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the rank that prints and writes."""
    return get_rank() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(
    backend: str | None = None, *, timeout: datetime.timedelta | None = None
) -> torch.device:
    """Join the process group that ``torchrun`` describes and return this process's device.

    ``backend`` defaults to ``"nccl"`` when CUDA is available (device ``cuda:LOCAL_RANK``, made
    current) and ``"gloo"`` otherwise (device ``cpu``). Without torchrun's environment
    (no ``WORLD_SIZE``) it starts a one-process group on 127.0.0.1, so the same script also runs
    with plain ``python``. Calling it again returns the device without re-initialising.
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo", "mpi", "ucc"):
        raise ValueError(f"backend must be 'nccl', 'gloo', 'mpi', 'ucc' or None, got {backend!r}")
    device = torch.device("cpu")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend='nccl' needs CUDA; use backend='gloo' on CPU")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if _active():
        return device
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend, **kwargs)  # env:// — RANK, MASTER_ADDR, MASTER_PORT
    else:
        url = f"tcp://127.0.0.1:{_free_port()}"
        dist.init_process_group(backend, init_method=url, rank=0, world_size=1, **kwargs)
    return device


def wrap_ddp(
    model: nn.Module, device: str | torch.device | None = None, **kwargs: Any
) -> DistributedDataParallel:
    """``model`` (moved to ``device`` if given) in a ``DistributedDataParallel`` wrapper.

    On CUDA the wrapper gets ``device_ids=[device]``; ``kwargs`` go to DDP (e.g.
    ``find_unused_parameters=True``). An already wrapped model is returned as it is. Needs an
    initialised process group (see :func:`init_distributed`).
    """
    if isinstance(model, DistributedDataParallel):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not _active():
        raise RuntimeError(
            "wrapping a model in DistributedDataParallel needs an initialised process group; "
            "call advtrade.distributed.init_distributed() first (launch with torchrun)"
        )
    if device is not None:
        model.to(device)
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    on = tensor.device if tensor is not None else torch.device("cpu")
    if on.type == "cuda":
        kwargs.setdefault("device_ids", [on])
    return DistributedDataParallel(model, **kwargs)


def is_ddp(model: nn.Module) -> bool:
    """True if ``model`` is a ``DistributedDataParallel`` wrapper (the trainer then runs
    data-parallel: reduced metrics, per-rank generators, rank-0 checkpoints and progress)."""
    return isinstance(model, DistributedDataParallel)


def rank_seed(seed: int, rank: int) -> int:
    """The attack-generator seed of ``rank``: ``seed`` on rank 0, a distinct stream elsewhere."""
    return (seed + 0x9E3779B97F4A7C15 * rank) % 2**63


# --------------------------------------------------------------------------- loaders
class ShardSampler(Sampler[int]):
    """Rank ``rank``'s contiguous block of ``range(n)``: every index exactly once over all ranks.

    Unlike ``DistributedSampler`` it never pads, so the per-rank counts of an evaluation sum to
    exact totals (shards differ in length by at most one; fine for evaluation, which issues no
    collective per batch, but not for DDP training). Rank order is the dataset's order.

    >>> tuple(len(ShardSampler(10, rank=r, world_size=3)) for r in range(3))
    (3, 3, 4)
    >>> tuple(ShardSampler(10, rank=2, world_size=3))
    (6, 7, 8, 9)
    """

    def __init__(
        self, data: Sized | int, *, rank: int | None = None, world_size: int | None = None
    ) -> None:
        n = data if isinstance(data, int) else len(data)
        self.world_size = get_world_size() if world_size is None else world_size
        self.rank = get_rank() if rank is None else rank
        if isinstance(n, bool) or n < 0:
            raise ValueError(f"data must be a sized dataset or a length >= 0, got {data!r}")
        if not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {self.world_size!r}")
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank must be an integer in [0, {self.world_size}), got {self.rank!r}"
            )
        self.start = n * self.rank // self.world_size
        self.stop = n * (self.rank + 1) // self.world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def shard_loader(dataset: Dataset[Any], batch_size: int, **kwargs: Any) -> DataLoader[Any]:
    """An evaluation loader over this rank's :class:`ShardSampler` block (no padding, no
    shuffling), so reduced evaluation counts are exact; ``kwargs`` go to the DataLoader."""
    sampler = ShardSampler(len(dataset))  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)


def distributed_loader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    **kwargs: Any,
) -> DataLoader[Any]:
    """A training loader over this rank's ``DistributedSampler`` share (``batch_size`` per rank).

    Every rank gets the same number of batches, as DDP requires: the share is padded with
    repeated examples, or with ``drop_last`` the uneven tail and the incomplete last batch are
    dropped. The shuffle depends on ``seed`` and the epoch the trainer sets, so it needs no
    generator state to resume. Works without a process group (one rank).
    """
    sampler = DistributedSampler(
        dataset,
        num_replicas=get_world_size(),
        rank=get_rank(),
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(dataset, batch_size, sampler=sampler, drop_last=drop_last, **kwargs)


def set_epoch(loader: object, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's sampler, batch sampler and dataset where they
    have one (``DistributedSampler``, :class:`~advtrade.SyntheticStream`): fresh shuffles and
    data each epoch, identical on every rank and in a resumed run."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    parts = (
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
        getattr(loader, "dataset", None),
    )
    seen: set[int] = set()
    for part in parts:
        method = getattr(part, "set_epoch", None)
        if part is not None and id(part) not in seen and callable(method):
            seen.add(id(part))
            method(epoch)


# --------------------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: Tensor, op: str = "sum") -> Tensor:
    """``values`` reduced over all ranks (``op`` is ``"sum"`` or ``"max"``), as a new tensor on
    the input's device; a copy without a process group. A collective: call it on every rank."""
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    if not _active():
        return values.clone()
    out = values.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out, op=ops[op])
    return out.to(values.device)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without a process group."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_floats(
    values: Sequence[Tensor | float], device: torch.device, op: str = "sum", *, enabled: bool = True
) -> list[float]:
    """Numbers or 0-d tensors as Python floats (float64), reduced over ranks when ``enabled``:
    the trainer's epoch sums and counts in one collective and one device synchronisation."""
    out = torch.stack([torch.as_tensor(v, device=device).double() for v in values])
    return (all_reduce(out, op) if enabled else out).tolist()


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, as DDP does before each
    forward by default: after an epoch's last forward each rank holds its own statistics, so the
    trainer syncs them before evaluating and checkpointing. A no-op for other models and for DDP
    that does not sync buffers (``broadcast_buffers=False``)."""
    syncs = getattr(model, "will_sync_module_buffers", None)  # DDP's own test of the flag
    if not (_active() and is_ddp(model) and callable(syncs) and syncs()):
        return
    device = _comm_device()
    for buffer in model.module.buffers():
        if buffer.device == device:
            dist.broadcast(buffer, src=0)
        else:
            moved = buffer.to(device)
            dist.broadcast(moved, src=0)
            buffer.copy_(moved)


def barrier() -> None:
    """Wait until every rank gets here (a no-op without a process group)."""
    if _active():
        dist.barrier()


def reduce_report(report: EvaluationReport, loader: object = None) -> EvaluationReport:
    """The report of all ranks' shards together: counts and ``n`` summed, per-example outcomes
    concatenated in rank order (the dataset's order with :func:`shard_loader`), seconds summed.

    A collective: call it on every rank; without a process group the report is returned. Warns
    if ``loader`` (the loader evaluated) is plainly not sharded, as every rank then counted all
    of it.
    """
    if not _active():
        return report
    plain = (torch.utils.data.SequentialSampler, torch.utils.data.RandomSampler)
    if get_world_size() > 1 and isinstance(getattr(loader, "sampler", None), plain):
        warnings.warn(
            f"the evaluation loader is not sharded across ranks: each of the {get_world_size()} "
            f"ranks evaluated all of it and the counts are summed; use "
            f"advtrade.distributed.shard_loader (or evaluate on one rank with advtrade.evaluate)",
            stacklevel=3,
        )
    return functools.reduce(operator.add, all_gather_object(report))
