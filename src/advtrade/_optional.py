"""Optional dependencies: whether they are installed, and the error that names their extra."""

from __future__ import annotations

import importlib.util

__all__ = ["tqdm_available"]


def tqdm_available() -> bool:
    """Whether the optional dependency tqdm is installed (``advtrade[progress]``)."""
    return importlib.util.find_spec("tqdm") is not None
