"""``evaluate``: clean accuracy, robust accuracy per attack and the per-example worst case."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from .._amp import autocast
from .._batches import DEFAULT_KEYS, BatchKeys, check_keys, unpack_batch
from .._outputs import as_class_index, as_logits, check_finite_logits
from .._validation import (
    check_bool,
    check_generator,
    check_inputs,
    check_int,
    check_label_range,
    check_labels,
    check_model,
    model_device,
)
from ..attacks import Attack
from ..guard import model_guard
from ._report import WORST_OF, EvaluationReport

__all__ = ["Batches", "correct", "evaluate", "iter_batches"]

Batches = Iterable[Any] | tuple[Tensor, Tensor]
"""A loader of ``(x, y)`` pairs or dict batches, or one ``(x, y)`` pair of tensors."""


def _check_attacks(attacks: Mapping[str, Attack | None] | None) -> tuple[str, dict[str, Attack]]:
    """Validate the mapping; return the clean column's name and the attacks in order."""
    if attacks is None:
        return "clean", {}
    if not isinstance(attacks, Mapping):
        raise TypeError(
            f"attacks must be a mapping name -> Attack (or None for clean accuracy), got "
            f"{type(attacks).__name__}; e.g. {{'clean': None, 'pgd': PGD(LinfBall(0.1))}}"
        )
    clean = [name for name, a in attacks.items() if a is None]
    for name, attack in attacks.items():
        if not isinstance(name, str) or not name or name == WORST_OF:
            raise ValueError(
                f"attack names must be non-empty strings other than {WORST_OF!r}, got {name!r}"
            )
        if attack is None:
            continue
        if not isinstance(attack, Attack):
            raise TypeError(
                f"attacks[{name!r}] must be an Attack or None (clean), got {type(attack).__name__}"
            )
        if attack.targeted:
            raise ValueError(
                f"attacks[{name!r}] is targeted; robust accuracy needs untargeted attacks "
                f"(the loader's labels are the true classes)"
            )
        if name == "clean" and not clean:
            raise ValueError("the name 'clean' is reserved for clean accuracy (None)")
    return (clean[0] if clean else "clean"), {k: a for k, a in attacks.items() if a is not None}


def iter_batches(
    data: Batches,
    device: torch.device | str | None,
    max_batches: int | None,
    model: nn.Module,
    keys: BatchKeys = DEFAULT_KEYS,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Checked ``(x, y)`` batches (labels as ``torch.long``) from a loader or one pair of
    tensors, moved to ``device`` (default: the model's); empty batches are skipped."""
    if max_batches is not None:
        check_int("max_batches", max_batches, minimum=1)
    target = torch.device(device) if device is not None else model_device(model)
    pair = isinstance(data, (tuple, list)) and len(data) == 2
    if pair and all(isinstance(t, Tensor) for t in data):  # type: ignore[union-attr]
        data = [tuple(data)]  # type: ignore[arg-type]
    count = 0
    for index, batch in enumerate(data):
        if max_batches is not None and index >= max_batches:
            break
        x, y = unpack_batch(batch, keys, f"batch {index}")
        if target is not None:
            x, y = x.to(target), y.to(target)
        x = check_inputs(x, f"x of batch {index}")
        y = check_labels(y, x.shape[0], x.device, f"y of batch {index}")
        count += 1
        if x.shape[0]:
            yield x, y
    if count == 0:
        raise ValueError("the loader yielded no batches; there is nothing to evaluate")


def correct(model: nn.Module, x: Tensor, y: Tensor, where: str = "") -> Tensor:
    """(B,) bool: the model (in eval mode, no gradients) classifies ``x`` as ``y``; non-finite
    logits raise instead of being counted."""
    with model_guard(model, "eval") as net, torch.no_grad():
        logits = as_logits(net(x), x.shape[0])
    check_finite_logits(logits, where or "on the evaluated inputs")
    check_label_range(y, logits.shape[1])
    return logits.argmax(dim=1) == as_class_index(y, logits.shape[1])


def evaluate(
    model: nn.Module,
    loader: Batches,
    attacks: Mapping[str, Attack | None] | None = None,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    max_batches: int | None = None,
    amp: bool = False,
    batch_keys: BatchKeys = DEFAULT_KEYS,
) -> EvaluationReport:
    """Clean accuracy, robust accuracy per attack and the per-example worst case over attacks.

    ``loader`` yields ``(x, y)`` batches or dict batches (``batch_keys`` name the inputs and
    labels), or is one ``(x, y)`` pair of tensors; ``attacks`` maps column names to attacks,
    ``None`` meaning clean accuracy. Each attack runs only on the examples classified correctly
    clean (the others are non-robust anyway), so counts are exact and the cost is lower. Batches
    move to ``device`` (default: the model's). ``amp`` runs the model and the attacks under
    autocast (bfloat16 on CPU, float16 on CUDA). The model is evaluated in eval mode and comes
    back untouched (mode, gradients, buffers). A model that returns NaN logits raises a
    ``ValueError``: a NaN prediction is never counted.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import PGD, LinfBall, evaluate
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))  # logits = x: class 0 iff x0 > x1
        >>> x = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> y = torch.tensor([0, 0, 0])
        >>> report = evaluate(model, (x, y), {"clean": None, "pgd": PGD(LinfBall(0.15))})
        >>> report.counts
        {'clean': 2, 'pgd': 1, 'worst-of': 1}
        >>> round(report["pgd"], 4)
        0.3333
        >>> print(report)
        evaluation  correct / total   accuracy
        clean             2 / 3         66.67%
        pgd               1 / 3         33.33%
        worst-of          1 / 3         33.33%
    """
    clean_name, named = _check_attacks(attacks)
    check_model(model)
    check_generator(generator)
    check_bool("amp", amp)
    keys = check_keys(batch_keys)
    columns = [clean_name, *named] + ([WORST_OF] if named else [])
    outcome: dict[str, list[Tensor]] = {name: [] for name in columns}
    seconds = dict.fromkeys(columns, 0.0)
    n = 0
    for x, y in iter_batches(loader, device, max_batches, model, keys):
        precision = autocast(x.device.type) if amp else nullcontext()
        with precision:
            start = time.perf_counter()
            ok = correct(model, x, y, "on clean inputs")
            seconds[clean_name] += time.perf_counter() - start
            outcome[clean_name].append(ok.cpu())
            survived = ok.clone()
            todo = ok.nonzero().squeeze(1)
            for name, attack in named.items():
                start = time.perf_counter()
                robust = torch.zeros_like(ok)
                if todo.numel() > 0:
                    x_adv = attack.subset(todo)(model, x[todo], y[todo], generator=generator)
                    robust[todo] = correct(model, x_adv, y[todo], f"on the outputs of {name!r}")
                seconds[name] += time.perf_counter() - start
                outcome[name].append(robust.cpu())
                survived &= robust
        if named:
            outcome[WORST_OF].append(survived.cpu())
        n += x.shape[0]
    if n == 0:
        raise ValueError("the loader yielded only empty batches; there is nothing to evaluate")
    # Columns in the mapping's order; every None entry is the clean column under its own name.
    aliases = {k for k, a in (attacks or {}).items() if a is None}
    order = list(attacks or {})
    order = ([] if clean_name in order else [clean_name]) + order + ([WORST_OF] if named else [])
    per_example = {k: torch.cat(outcome[clean_name if k in aliases else k]) for k in order}
    counts = {k: int(v.sum()) for k, v in per_example.items()}
    seconds = {k: seconds[k] for k in order if k in seconds and k != WORST_OF}
    return EvaluationReport(n, counts, clean_name, seconds, per_example)
