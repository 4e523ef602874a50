"""Standard CIFAR data augmentation on tensors: random crop after zero padding, random flip.

No torchvision needed. :func:`random_crop_flip` augments a whole batch at once (any device);
:class:`Augmented` wraps a map-style dataset so that item ``i`` of epoch ``e`` is augmented with
randomness that depends only on ``(seed, e, i)``: the same in every DataLoader worker, under any
sampler order and after resuming from a checkpoint, and never drawn from the global RNG.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._validation import check_bool, check_int

__all__ = ["Augmented", "random_crop_flip"]


def random_crop_flip(
    x: Tensor,
    *,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Randomly crop and flip each image of a batch ``(B, C, H, W)``, the CIFAR recipe.

    Each image is zero-padded by ``padding`` pixels on every side and cropped back to ``H x W``
    at an offset drawn uniformly from ``{0, ..., 2 * padding}`` (rows and columns
    independently); with ``flip=True`` the crop is then mirrored left-right with probability
    1/2. Works on any device and dtype and returns a new tensor of the same shape, dtype and
    device; one vectorised gather, no loop over the batch. The random draws come from
    ``generator`` (on the generator's device, then moved to ``x``'s), or from torch's global
    CPU RNG when it is None. ``padding=0, flip=False`` returns an unchanged copy.

    Examples:
        >>> import torch
        >>> from advtrade.datasets import random_crop_flip
        >>> x = torch.rand(8, 3, 32, 32)
        >>> out = random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(0))
        >>> out.shape, out.dtype
        (torch.Size([8, 3, 32, 32]), torch.float32)
        >>> torch.equal(random_crop_flip(x, padding=0, flip=False), x)
        True
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}; "
            f"use x[None] for a single image"
        )
    padding = check_int("padding", padding, minimum=0)
    flip = check_bool("flip", flip)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if padding == 0 and not flip:
        return x.clone()
    b, c, h, w = x.shape
    draw_on = torch.device("cpu") if generator is None else generator.device
    rows = torch.arange(h, device=x.device).expand(b, h)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if padding:
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=draw_on)
        offsets = offsets.to(x.device)
        rows = rows + offsets[0, :, None]
        cols = cols + offsets[1, :, None]
    if flip:
        mirrored = torch.randint(0, 2, (b,), generator=generator, device=draw_on).to(x.device)
        cols = torch.where(mirrored[:, None].bool(), cols.flip(1), cols)
    padded = x
    if padding:
        padded = x.new_zeros((b, c, h + 2 * padding, w + 2 * padding))
        padded[:, :, padding : padding + h, padding : padding + w] = x
    # One gather over the flattened padded planes; the same pixel indices for every channel.
    width = w + 2 * padding
    index = (rows[:, :, None] * width + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    flat = padded.reshape(b, c, (h + 2 * padding) * width)
    return flat.gather(2, index).reshape(b, c, h, w)


def _item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 64-bit generator seed that depends only on ``(seed, epoch, index)``."""
    state = np.random.SeedSequence((seed, epoch, index)).generate_state(1, dtype=np.uint64)
    return int(state[0])


class Augmented(Dataset):
    """A map-style dataset of ``(x, y)`` pairs, ``x`` an image ``(C, H, W)``, with each ``x``
    passed through :func:`random_crop_flip` (``padding``, ``flip``).

    Item ``i`` in epoch ``e`` uses a private ``torch.Generator`` seeded from
    ``(seed, e, i)`` alone, so an epoch's augmented data is reproducible whatever the sampler
    order, the number of DataLoader workers or a resume from a checkpoint, and the global RNG
    is never touched. Call :meth:`set_epoch` each epoch (advtrade's trainer does) for fresh
    augmentations; without it every epoch repeats epoch 0's. Workers see a new epoch when the
    loader re-creates them each epoch (``persistent_workers=False``, the default).

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from advtrade.datasets import Augmented
        >>> data = Augmented(TensorDataset(torch.rand(10, 3, 32, 32), torch.arange(10)), seed=0)
        >>> x, y = data[7]
        >>> x.shape, int(y)
        (torch.Size([3, 32, 32]), 7)
        >>> torch.equal(Augmented(data.dataset, seed=0)[7][0], x)  # same (seed, epoch, index)
        True
        >>> data.set_epoch(1)
        >>> torch.equal(data[7][0], x)
        False
    """

    def __init__(
        self, dataset: Dataset, *, padding: int = 4, flip: bool = True, seed: int = 0
    ) -> None:
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                f"dataset must be a map-style dataset with __getitem__ and __len__, got "
                f"{type(dataset).__name__}; an IterableDataset cannot be indexed per item"
            )
        self.dataset = dataset
        self.padding = check_int("padding", padding, minimum=0)
        self.flip = check_bool("flip", flip)
        self.seed = check_int("seed", seed, minimum=0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations the next reads use (also forwarded to the
        wrapped dataset when it has a ``set_epoch``)."""
        self.epoch = check_int("epoch", epoch, minimum=0)
        inner = getattr(self.dataset, "set_epoch", None)
        if callable(inner):
            inner(self.epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(
                f"Augmented takes one integer index, got {type(index).__name__} {index!r}"
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} items")
        i %= n  # dataset[-1] and dataset[n - 1] are the same item, augmented the same way
        item = self.dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(
                f"Augmented needs items (x, y); item {i} of the wrapped dataset is a "
                f"{type(item).__name__}"
            )
        x, *rest = item
        if not isinstance(x, Tensor) or x.ndim != 3:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(
                f"Augmented needs items (x, y) with x a tensor (C, H, W); item {i} has x of {got}"
            )
        generator = torch.Generator().manual_seed(_item_seed(self.seed, self.epoch, i))
        out = random_crop_flip(x[None], padding=self.padding, flip=self.flip, generator=generator)
        return (out[0], *rest)

    def __repr__(self) -> str:
        return (
            f"Augmented({type(self.dataset).__name__} of {len(self)}, padding={self.padding}, "
            f"flip={self.flip}, seed={self.seed}, epoch={self.epoch})"
        )
