"""``SyntheticStream``: a distribution's samples as a reproducible, sharded, streamed dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from .._validation import check_int

__all__ = ["Labels", "Sampler", "SyntheticStream"]

Labels = Literal["sign", "index"]


class Sampler(Protocol):
    """What a stream draws from (e.g. :class:`~advtrade.synthetic.TsiprasDistribution`)."""

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        labels: Labels = "sign",
    ) -> tuple[Tensor, Tensor]: ...


def _mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 steps), for per-batch generators."""
    z = 0x9E3779B97F4A7C15
    for part in parts:
        z = (z ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        z = (z ^ (z >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 29
    return z >> 1


class SyntheticStream(IterableDataset):
    """n examples per epoch from a :class:`TsiprasDistribution`, yielded as (x, y) batches.

    Batch i of epoch e is drawn from its own generator seeded by (seed, e, i), so the stream is
    the same for every ``num_workers`` (workers and ``world_size`` ranks take every k-th batch)
    and reproducible per epoch; call :meth:`set_epoch` (like ``DistributedSampler``) for fresh
    data each epoch — without it every epoch repeats epoch 0 (a fixed, never-stored dataset).
    Memory is one batch. Use ``DataLoader(stream, batch_size=None)``.

    Examples:
        >>> from torch.utils.data import DataLoader
        >>> from advtrade import TsiprasDistribution
        >>> stream = TsiprasDistribution(d=10, p=0.9).dataset(1000, batch_size=256, seed=0)
        >>> [x.shape[0] for x, y in DataLoader(stream, batch_size=None)]
        [256, 256, 256, 232]
    """

    def __init__(
        self,
        dist: Sampler,
        n: int,
        *,
        batch_size: int = 1024,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        labels: Labels = "sign",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if not callable(getattr(dist, "sample", None)):
            raise TypeError(f"dist must be a TsiprasDistribution, got {type(dist).__name__}")
        self.dist, self.dtype, self.labels = dist, dtype, labels
        self.n = check_int("n", n, minimum=0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.world_size = check_int("world_size", world_size, minimum=1)
        self.rank = check_int("rank", rank, minimum=0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be < world_size = {world_size}, got {rank}")
        dist.sample(0, dtype=dtype, labels=labels)  # validates dtype and labels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose data the next iteration yields."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    @property
    def num_batches(self) -> int:
        """Batches per epoch over all ranks."""
        return -(-self.n // self.batch_size)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return len(range(self.rank, self.num_batches, self.world_size))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        stride = self.world_size * workers
        for i in range(self.rank + self.world_size * worker, self.num_batches, stride):
            size = min(self.batch_size, self.n - i * self.batch_size)
            gen = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, i))
            yield self.dist.sample(size, generator=gen, dtype=self.dtype, labels=self.labels)
