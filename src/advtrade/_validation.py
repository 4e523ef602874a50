"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
with a message that names the argument, shows what was received and says what is expected, and
returns the value in its canonical form (a Python ``int``/``float``, labels as ``torch.long``), so
callers validate and normalise in one line. Nothing here imports the rest of advtrade.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sized
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "check_bool",
    "check_choice",
    "check_generator",
    "check_inputs",
    "check_int",
    "check_label_range",
    "check_labels",
    "check_loader",
    "check_model",
    "check_number",
    "check_output_dir",
    "check_type",
    "is_int",
    "model_device",
]

T = TypeVar("T")


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound optional)."""
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    out = int(value)  # type: ignore[arg-type]
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise ValueError(f"{name} must be an integer {_range(minimum, maximum)}, got {out}")
    return out


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float`` (finite unless ``finite=False``) in the range; with ``strict``
    the minimum itself is excluded (``> minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    out = float(value)
    low = minimum is not None and (out <= minimum if strict else out < minimum)
    if math.isnan(out) or (finite and math.isinf(out)) or low or (
        maximum is not None and out > maximum
    ):
        what = "a finite number" if finite else "a number"
        raise ValueError(f"{name} must be {what} {_range(minimum, maximum, strict)}, got {value!r}")
    return out


def _range(low: float | None, high: float | None, strict: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if strict else '['}{low}, {high}]"
    if low is not None:
        return f"{'>' if strict else '>='} {low}"
    if high is not None:
        return f"<= {high}"
    return ""


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool (numbers such as 0/1 are refused: they hide mistakes)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: T, choices: Collection[Any]) -> T:
    """``value`` if it is one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # unhashable
        ok = False
    if not ok:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
    return value


def check_type(name: str, value: T, types: type | tuple[type, ...], expected: str) -> T:
    """``value`` if it is an instance of ``types``; ``expected`` says what to pass instead."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    return value


def check_model(model: object, name: str = "model") -> nn.Module:
    """``model`` if it is a ``torch.nn.Module``."""
    return check_type(name, model, nn.Module, "a torch.nn.Module")  # type: ignore[return-value]


def check_generator(generator: object) -> torch.Generator | None:
    """``generator`` if it is ``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        got = type(generator).__name__
        raise TypeError(f"generator must be a torch.Generator or None, got {got}")
    return generator


def check_inputs(x: object, name: str = "x", *, min_ndim: int = 1) -> Tensor:
    """``x`` if it is a floating-point batch (B, ...) with no NaN (infinities are left to the
    threat model's domain check, which names the values)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < min_ndim:
        got = type(x).__name__
        if isinstance(x, Tensor):
            got = f"dtype {x.dtype}, shape {tuple(x.shape)}"
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, ...), got {got}")
    if x.numel() and x.device.type != "meta" and bool(torch.isnan(x).any()):
        nan = torch.isnan(x)
        count = int((nan.flatten(1).any(1) if x.ndim > 1 else nan).sum())
        raise ValueError(
            f"{name} contains NaN values ({count} of {x.shape[0]} examples); clean the data "
            f"before attacking or evaluating (NaN inputs give meaningless predictions)"
        )
    return x


def check_labels(y: object, batch_size: int, device: torch.device, name: str = "y") -> Tensor:
    """Labels for a batch of ``batch_size``: integer class indices of any integer dtype
    (returned as ``torch.long``), or a floating (B, C) distribution target (returned as is)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a tensor of class labels, got {type(y).__name__}")
    if y.device != device:
        raise ValueError(
            f"{name} is on {y.device} but x is on {device}; move both to the model's device"
        )
    soft = y.is_floating_point() and y.ndim == 2
    if y.shape[0:1] != (batch_size,) or (y.ndim != 1 and not soft):
        raise ValueError(
            f"{name} must have shape ({batch_size},) to match x (or ({batch_size}, C) for a "
            f"distribution target), got {tuple(y.shape)}"
        )
    if soft:
        return y
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {y.dtype}; convert with "
            f"{name}.long()"
        )
    return y if y.dtype == torch.long else y.long()


def check_label_range(y: Tensor, num_classes: int, name: str = "y") -> None:
    """Check that labels fit a model with ``num_classes`` outputs: [0, C) in general, and
    {-1, 0, 1} for two classes (±1 labels of a one-logit binary model)."""
    if y.is_floating_point():
        if y.shape[1] != num_classes:
            raise ValueError(
                f"{name} has {y.shape[1]} columns but the model outputs {num_classes} classes"
            )
        return
    if y.numel() == 0:
        return
    low = -1 if num_classes == 2 else 0
    lo, hi = (int(v) for v in torch.aminmax(y))
    if lo < low or hi >= num_classes:
        raise ValueError(
            f"{name} holds labels in [{lo}, {hi}] but the model outputs {num_classes} classes; "
            f"labels must lie in [{low}, {num_classes - 1}]"
            + (" (for two classes: 0/1, or -1/+1 with +1 the second class)" if low < 0 else "")
        )


def check_loader(name: str, loader: object) -> None:
    """Check that ``loader`` can be iterated for batches and is not known to be empty."""
    if isinstance(loader, (Tensor, str, bytes)) or not hasattr(loader, "__iter__"):
        raise TypeError(
            f"{name} must be an iterable of batches such as a DataLoader, got "
            f"{type(loader).__name__}"
        )
    if isinstance(loader, Sized) and len(loader) == 0:
        raise ValueError(f"{name} is empty (len 0); it must yield at least one batch")


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (``None`` for a stateless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def check_output_dir(name: str, path: object) -> Path:
    """``path`` as a ``Path`` that is, or can become, a folder: it must not be an existing file
    or lie under one, and it must not be a dangling symbolic link."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    out = Path(path)
    if out.is_symlink() and not out.exists():
        raise ValueError(f"{name}={str(out)!r} is a symbolic link to a missing target")
    for candidate in (out, *out.parents):
        if os.path.lexists(candidate):
            if not candidate.is_dir():
                where = "is" if candidate == out else f"lies under {str(candidate)!r}, which is"
                raise ValueError(f"{name}={str(out)!r} {where} an existing file, not a folder")
            break
    return out
