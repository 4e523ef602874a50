"""What determines a run's numbers: the experiments, the data, the budgets, the training and
evaluation settings — with the defaults of each dataset and of ``--quick``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EXPERIMENTS", "RunError", "Settings", "default_settings"]

EXPERIMENTS: tuple[str, ...] = ("synthetic", "tradeoff", "datasize", "perception")
class RunError(Exception):
    """A problem with the request found before or while running (bad sizes, an unusable output
    folder: exit status 2; a missing optional dependency: 1), reported in one line."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Per (dataset, quick): defaults that keep the full digits run under ~10 minutes on 2 CPU
# cores and the quick one under a minute. ε = 0 is always trained (the standard baseline).
_DEFAULTS: dict[tuple[str, bool], dict[str, Any]] = {
    ("digits", False): {
        "linf_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
        "l2_eps": (0.0, 0.25, 0.5, 1.0, 1.5),
        "linf_eval_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
        "l2_eval_eps": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
        "train_sizes": (50, 100, 200, 400, 800),
        "epochs": 20,
        "warmup": 5,
        "train_steps": 5,
        "eval_steps": 20,
    },
    ("digits", True): {
        "linf_eps": (0.0, 0.2, 0.3),
        "l2_eps": (0.0, 1.0, 1.5),
        "linf_eval_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eval_eps": (0.0, 0.5, 1.0, 1.5),
        "train_sizes": (200,),
        "epochs": 8,
        "warmup": 2,
        "train_steps": 2,
        "eval_steps": 10,
    },
    ("mnist", False): {
        "linf_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eps": (0.0, 0.5, 1.0, 2.0),
        "linf_eval_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
        "l2_eval_eps": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
        "train_sizes": (100, 300, 1000),
        "epochs": 10,
        "warmup": 3,
        "train_steps": 5,
        "eval_steps": 20,
    },
    ("mnist", True): {
        "linf_eps": (0.0, 0.1, 0.2),
        "l2_eps": (0.0, 1.0, 2.0),
        "linf_eval_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eval_eps": (0.0, 1.0, 2.0, 3.0),
        "train_sizes": (300,),
        "epochs": 4,
        "warmup": 2,
        "train_steps": 2,
        "eval_steps": 10,
    },
}


def default_settings(data: str = "digits", quick: bool = False) -> dict[str, Any]:
    """The default values of the tunable settings for ``data`` ("digits" or "mnist")."""
    return dict(_DEFAULTS[(data, bool(quick))])


@dataclass(frozen=True)
class Settings:
    """Everything that determines a run's numbers (the same settings give the same numbers).

    Budgets are sorted and always include ε = 0; ``train_size`` None trains on the whole
    training split; ``train_sizes`` are the smaller sizes of the data-size study (the full size
    is always added).
    """

    experiments: tuple[str, ...] = EXPERIMENTS
    data: str = "digits"
    quick: bool = False
    seed: int = 0
    linf_eps: tuple[float, ...] = ()
    l2_eps: tuple[float, ...] = ()
    linf_eval_eps: tuple[float, ...] = ()
    l2_eval_eps: tuple[float, ...] = ()
    train_sizes: tuple[int, ...] = ()
    train_size: int | None = None
    epochs: int = 1
    warmup: int = 1
    train_steps: int = 5
    eval_steps: int = 20
    batch_size: int = 64
    lr: float = 3e-3

    @classmethod
    def build(cls, data: str = "digits", quick: bool = False, **overrides: Any) -> Settings:
        """Defaults for ``(data, quick)`` with ``overrides`` (None values are ignored)."""
        values = default_settings(data, quick)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("linf_eps", "l2_eps", "linf_eval_eps", "l2_eval_eps"):
            values[name] = tuple(sorted({0.0, *(float(e) for e in values[name])}))
        values["train_sizes"] = tuple(sorted({int(n) for n in values["train_sizes"]}))
        values["warmup"] = min(values["warmup"], values["epochs"])
        settings = cls(data=data, quick=bool(quick), **values)
        settings.check()
        return settings

    def check(self) -> None:
        unknown = sorted(set(self.experiments) - set(EXPERIMENTS))
        if unknown or not self.experiments:
            raise RunError(f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}")
        for name in ("linf_eps", "l2_eps", "linf_eval_eps", "l2_eval_eps"):
            values = getattr(self, name)
            if not all(math.isfinite(e) and e >= 0 for e in values):
                raise RunError(f"{name}: budgets must be finite numbers >= 0, got {list(values)}")
        for name in ("epochs", "warmup", "train_steps", "eval_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise RunError(f"{name} must be >= 1, got {getattr(self, name)}")

    def train_eps(self, norm: str) -> tuple[float, ...]:
        return self.linf_eps if norm == "linf" else self.l2_eps

    def eval_eps(self, norm: str) -> tuple[float, ...]:
        return self.linf_eval_eps if norm == "linf" else self.l2_eval_eps

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


