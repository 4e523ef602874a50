"""Mixed precision in one place: the autocast dtype advtrade uses on each device."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

__all__ = ["amp_dtype", "autocast"]


def amp_dtype(device_type: str) -> torch.dtype:
    """bfloat16 on CPU (fast there, and no underflow), float16 on accelerators."""
    return torch.bfloat16 if device_type == "cpu" else torch.float16


def autocast(device_type: str, enabled: bool = True) -> AbstractContextManager[object]:
    """``torch.autocast`` on ``device_type`` with :func:`amp_dtype` (a no-op when disabled)."""
    return torch.autocast(device_type, dtype=amp_dtype(device_type), enabled=enabled)
