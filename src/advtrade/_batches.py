"""Batches as users' loaders yield them: ``(x, y)`` pairs or dicts such as Hugging Face's
``{"pixel_values": x, "labels": y}`` (keys settable)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["DEFAULT_KEYS", "BatchKeys", "check_keys", "unpack_batch"]

BatchKeys = tuple[str, str]
"""The keys of the inputs and the labels in dict batches."""

DEFAULT_KEYS: BatchKeys = ("pixel_values", "labels")


def check_keys(keys: object) -> BatchKeys:
    """``keys`` if it is a pair of distinct strings."""
    if (
        not isinstance(keys, (tuple, list))
        or len(keys) != 2
        or not all(isinstance(k, str) for k in keys)
        or keys[0] == keys[1]
    ):
        raise TypeError(
            f"batch_keys must be a pair of distinct strings (inputs key, labels key), such as "
            f"('pixel_values', 'labels'); got {keys!r}"
        )
    return (keys[0], keys[1])


def unpack_batch(batch: Any, keys: BatchKeys, where: str) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from a pair or a dict batch; ``where`` names the batch in errors."""
    if isinstance(batch, Mapping):
        missing = [k for k in keys if k not in batch]
        if missing:
            raise TypeError(
                f"{where} is a dict without the key(s) {missing} (it has "
                f"{sorted(map(str, batch))}); pass batch_keys=(inputs key, labels key)"
            )
        x, y = batch[keys[0]], batch[keys[1]]
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
    else:
        size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise TypeError(
            f"{where} is a {type(batch).__name__}{size}; loaders must yield (x, y) pairs or "
            f"dicts with keys {list(keys)} (set batch_keys for other keys)"
        )
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(
            f"{where} must hold tensors, got ({type(x).__name__}, {type(y).__name__})"
        )
    return x, y
