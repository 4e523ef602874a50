"""What advtrade needs from a user's model: a batch in, logits out.

Models may return (B, C) logits; one logit per example ((B,) or (B, 1)) for binary problems, which
:func:`as_logits` turns into two-class logits ``[0, z]`` so that every loss and attack works
unchanged (softmax([0, z])[1] = sigmoid(z), so cross-entropy is the logistic loss); or an object
that holds the logits, as Hugging Face models do: a ``ModelOutput`` (or anything) with a
``.logits`` attribute, or a mapping with a ``"logits"`` key.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["as_class_index", "as_logits", "check_finite_logits"]


def _unwrap(output: object) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        logits = output["logits"]
    else:
        logits = getattr(output, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"the model must return a tensor of logits, an object with a .logits tensor or a "
            f"dict with a 'logits' tensor; got {type(output).__name__}. Wrap models that return "
            f"tuples so that forward returns the logits"
        )
    return logits


def as_logits(output: object, batch_size: int) -> Tensor:
    """Validate a model's output and return (B, C) logits (one-logit outputs become ``[0, z]``)."""
    output = _unwrap(output)
    if output.ndim == 2 and output.shape[0] == batch_size and output.shape[1] > 1:
        return output
    if output.shape in ((batch_size,), (batch_size, 1)):
        z = output.reshape(batch_size, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)
    raise ValueError(
        f"the model's output has shape {tuple(output.shape)} for a batch of {batch_size}; expected "
        f"logits of shape (B, C) with C >= 2, or one logit per example, (B,) or (B, 1)"
    )


def as_class_index(y: Tensor, num_classes: int) -> Tensor:
    """Class indices for labels; binary labels in {-1, +1} map to {0, 1} (+1 ↔ class 1)."""
    return y.clamp(min=0) if num_classes == 2 and not y.is_floating_point() else y


def check_finite_logits(logits: Tensor, where: str) -> None:
    """Raise ``ValueError`` if the model returned NaN or infinite logits: a prediction computed
    from them (argmax of NaN) would be counted as a result, silently."""
    bad = ~torch.isfinite(logits).all(dim=1)
    if bool(bad.any()):
        raise ValueError(
            f"the model returned non-finite logits (NaN or inf) for {int(bad.sum())} of "
            f"{logits.shape[0]} examples {where}; advtrade never counts such predictions. Check "
            f"the model (e.g. log or sqrt of a non-positive value, a diverged training run)"
        )
