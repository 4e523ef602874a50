"""What determines a run's numbers: the experiments, the data, the budgets, the training and
evaluation settings — with the defaults of each dataset and of ``--quick``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "DATASETS",
    "DEVICES",
    "EVAL_ATTACKS",
    "EXPERIMENTS",
    "RunError",
    "Settings",
    "default_settings",
]

EXPERIMENTS: tuple[str, ...] = ("synthetic", "tradeoff", "datasize", "perception")
DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10")
EVAL_ATTACKS: tuple[str, ...] = ("pgd", "apgd", "autoattack")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


class RunError(Exception):
    """A problem with the request found before or while running (bad sizes, an unusable output
    folder, a device that is not there: exit status 2; a missing optional dependency: 1),
    reported in one line."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_SMALL = {"model": "small_cnn", "optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0}
_SMALL |= {"batch_size": 64, "augment": False, "train_size": None, "test_size": None}

# Per (dataset, quick): the full digits run takes minutes on 2 CPU cores and the quick one about a
# minute; CIFAR-10 is the PGD-AT recipe of Rice et al. (2020) for one GPU. ε = 0 is always
# trained (the standard baseline).
_DEFAULTS: dict[tuple[str, bool], dict[str, Any]] = {
    ("digits", False): _SMALL
    | {
        "experiments": EXPERIMENTS,
        "linf_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
        "l2_eps": (0.0, 0.25, 0.5, 1.0, 1.5),
        "linf_eval_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
        "l2_eval_eps": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
        "train_sizes": (50, 100, 200, 400, 800),
        "epochs": 20,
        "warmup": 5,
        "train_steps": 5,
        "eval_steps": 100,
        "eval_attack": "autoattack",
    },
    ("digits", True): _SMALL
    | {
        "experiments": EXPERIMENTS,
        "linf_eps": (0.0, 0.2, 0.3),
        "l2_eps": (0.0, 1.0, 1.5),
        "linf_eval_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eval_eps": (0.0, 0.5, 1.0, 1.5),
        "train_sizes": (200,),
        "epochs": 8,
        "warmup": 2,
        "train_steps": 2,
        "eval_steps": 20,
        "eval_attack": "apgd",
    },
    ("mnist", False): _SMALL
    | {
        "experiments": EXPERIMENTS,
        "linf_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eps": (0.0, 0.5, 1.0, 2.0),
        "linf_eval_eps": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
        "l2_eval_eps": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
        "train_sizes": (100, 300, 1000),
        "epochs": 10,
        "warmup": 3,
        "train_steps": 5,
        "eval_steps": 100,
        "eval_attack": "autoattack",
    },
    ("mnist", True): _SMALL
    | {
        "experiments": EXPERIMENTS,
        "linf_eps": (0.0, 0.1, 0.2),
        "l2_eps": (0.0, 1.0, 2.0),
        "linf_eval_eps": (0.0, 0.1, 0.2, 0.3),
        "l2_eval_eps": (0.0, 1.0, 2.0, 3.0),
        "train_sizes": (300,),
        "epochs": 4,
        "warmup": 2,
        "train_steps": 2,
        "eval_steps": 20,
        "eval_attack": "apgd",
    },
    ("cifar10", False): {
        "experiments": ("synthetic", "tradeoff"),
        "model": "preact_resnet18",
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "augment": True,
        "train_size": None,
        "test_size": None,
        "validation_size": 1000,
        "linf_eps": (0.0, 8 / 255),
        "l2_eps": (0.0, 0.5),
        "linf_eval_eps": (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
        "l2_eval_eps": (0.0, 0.25, 0.5, 1.0),
        "train_sizes": (),
        "epochs": 100,
        "warmup": 1,
        "train_steps": 10,
        "eval_steps": 100,
        "eval_attack": "autoattack",
    },
    ("cifar10", True): {
        "experiments": ("synthetic", "tradeoff"),
        "model": "preact_resnet18",
        "optimizer": "sgd",
        "lr": 0.05,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "augment": True,
        "train_size": 256,
        "test_size": 128,
        "validation_size": 32,
        "linf_eps": (0.0, 8 / 255),
        "l2_eps": (0.0, 0.5),
        "linf_eval_eps": (0.0, 8 / 255),
        "l2_eval_eps": (0.0, 0.5),
        "train_sizes": (),
        "epochs": 1,
        "warmup": 1,
        "train_steps": 2,
        "eval_steps": 5,
        "eval_attack": "apgd",
    },
}


def default_settings(data: str = "digits", quick: bool = False) -> dict[str, Any]:
    """The default values of the tunable settings for ``data`` (see :data:`DATASETS`)."""
    if data not in DATASETS:
        raise RunError(f"unknown dataset {data!r}; choose from {', '.join(DATASETS)}")
    return dict(_DEFAULTS[(data, bool(quick))])


@dataclass(frozen=True)
class Settings:
    """Everything that determines a run's numbers.

    The same settings give the same numbers on the same machine with the same thread count and
    device (floating-point reductions differ across machines: a run elsewhere moved accuracies
    by up to 1.6 points); report numbers with their spread over ``seeds``. Budgets are sorted
    and always include ε = 0; ``train_size`` None trains on the whole training split;
    ``train_sizes`` are the smaller sizes of the data-size study (the full size is added). With
    ``validation_size`` > 0 that many training examples are held out and every model ends at its
    best epoch on them (held-out PGD robust accuracy: early stopping against robust overfitting,
    Rice et al. 2020). The data split uses the first seed for every seed, so seeds vary
    initialisation, data order and attack starts only.
    """

    experiments: tuple[str, ...] = EXPERIMENTS
    data: str = "digits"
    quick: bool = False
    seeds: tuple[int, ...] = (0,)
    linf_eps: tuple[float, ...] = ()
    l2_eps: tuple[float, ...] = ()
    linf_eval_eps: tuple[float, ...] = ()
    l2_eval_eps: tuple[float, ...] = ()
    train_sizes: tuple[int, ...] = ()
    train_size: int | None = None
    test_size: int | None = None
    validation_size: int = 0
    epochs: int = 1
    warmup: int = 1
    train_steps: int = 5
    eval_steps: int = 20
    eval_attack: str = "autoattack"
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    augment: bool = False
    model: str = "small_cnn"
    amp: bool = False
    device: str = "auto"
    data_dir: str | None = field(default=None, compare=False)

    @property
    def seed(self) -> int:
        """The first seed: the data split's (and the synthetic experiment's)."""
        return self.seeds[0]

    @classmethod
    def build(cls, data: str = "digits", quick: bool = False, **overrides: Any) -> Settings:
        """Defaults for ``(data, quick)`` with ``overrides`` (None values are ignored)."""
        values = default_settings(data, quick)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("linf_eps", "l2_eps", "linf_eval_eps", "l2_eval_eps"):
            values[name] = tuple(sorted({0.0, *(float(e) for e in values[name])}))
        values["train_sizes"] = tuple(sorted({int(n) for n in values["train_sizes"]}))
        values["warmup"] = min(values["warmup"], values["epochs"])
        values["seeds"] = tuple(dict.fromkeys(int(s) for s in values.get("seeds", (0,))))
        values["experiments"] = tuple(values["experiments"])
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
        if self.validation_size < 0:
            raise RunError(f"validation_size must be >= 0, got {self.validation_size}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise RunError(f"seeds must be integers >= 0, got {list(self.seeds)}")
        for name, value, choices in (
            ("data", self.data, DATASETS),
            ("eval_attack", self.eval_attack, EVAL_ATTACKS),
            ("device", self.device, DEVICES),
            ("model", self.model, ("small_cnn", "preact_resnet18")),
            ("optimizer", self.optimizer, ("adam", "sgd")),
        ):
            if value not in choices:
                raise RunError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.data == "cifar10" and self.data_dir is None:
            raise RunError(
                "--data cifar10 needs --data-dir DIR, the folder holding cifar-10-batches-bin "
                "(advtrade never downloads data)"
            )

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
