"""Shared test helpers, used by every test module (import them with ``from .conftest import``):

- :class:`SmallCNN`, the one small CNN of the suite (a ``width`` knob for the tests that attack
  it thousands of times and a ``batchnorm``/``dropout`` switch for the hygiene tests);
- :func:`train_standard`, the one independent training loop (plain Adam, optionally on PGD
  examples), a reference that never goes through advtrade's trainer;
- :class:`Counting`, the one model wrapper that counts forward calls, rows, grad-enabled
  forwards and backward passes (a deterministic proxy for an attack's or a step's cost);
- :func:`free_port`, a free TCP port on 127.0.0.1 for process groups;
- :func:`random_loader`, a shuffled loader of random 8×8 images and labels (seeded);
- :func:`snapshot` and :func:`assert_untouched`, to check that code leaves a model as it was;
- the ``digits`` data and ``digits_cnn`` (a SmallCNN trained once per session).

Worker processes spawned by tests/test_distributed.py import this module too, so it must stay
importable outside pytest's collection (no fixtures are needed there).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest
import torch
from hypothesis import settings
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to a busy machine


class SmallCNN(nn.Module):
    """A CNN for 8×8 one-channel digits: small enough to train in seconds on a CPU.

    Two 3×3 convolutions (``width`` and ``2·width`` channels, the second with stride 2) and a
    linear head. ``width=4`` is eight times cheaper per pass than the default 16, for tests that
    run many attacks over the whole test set.
    """

    def __init__(
        self, num_classes: int = 10, batchnorm: bool = False, dropout: float = 0.0, width: int = 16
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 4 * 4, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_standard(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int = 15,
    attack: Callable[..., Tensor] | None = None,
) -> nn.Module:
    """Plain Adam training loop (an independent reference, not advtrade's trainer).

    Adam (lr 3e-3) on cross-entropy over shuffled batches of 64; with ``attack``, each batch is
    first replaced by ``attack(model, xb, yb)`` (Madry et al.'s adversarial training). One
    generator (seed 0) draws the shuffles and the attacks' random starts. Returns the model in
    eval mode.
    """
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            xb, yb = x[perm[i : i + 64]], y[perm[i : i + 64]]
            if attack is not None:
                xb = attack(model, xb, yb, generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()


class Counting(nn.Module):
    """Runs ``inner`` and counts: ``calls`` (forward calls), ``rows`` (examples forwarded),
    ``grad_calls`` (forward calls with autograd enabled) and ``backwards`` (backward passes
    through the output)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.calls = self.rows = self.grad_calls = self.backwards = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        self.grad_calls += torch.is_grad_enabled()
        out = self.inner(x)
        if out.requires_grad:
            out.register_hook(self._backward)
        return out

    def _backward(self, grad: Tensor) -> None:
        self.backwards += 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_loader(n: int = 96, batch: int = 32, seed: int = 0, classes: int = 10) -> DataLoader:
    """A loader of ``n`` uniform random 1×8×8 images with random labels, shuffled by its own
    generator (seeded with ``seed``; reseed ``loader.generator`` to replay an epoch)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    shuffle = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=shuffle)


def snapshot(model: nn.Module) -> dict[str, list]:
    """Everything about a model that code which only reads it must leave alone: each module's
    mode, each parameter's requires_grad and .grad, and every parameter and buffer value."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": [(k, v.clone()) for k, v in model.state_dict().items()],
    }


def assert_untouched(before: dict[str, list], model: nn.Module) -> None:
    """``model`` is as :func:`snapshot` saw it (bit for bit)."""
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for u, v in zip(before["grad"], after["grad"], strict=True):
        assert (u is None and v is None) or (u is not None and v is not None and torch.equal(u, v))
    assert [k for k, _ in after["state"]] == [k for k, _ in before["state"]]
    for (name, u), (_, v) in zip(before["state"], after["state"]):
        assert torch.equal(u, v), name


@pytest.fixture(scope="session")
def digits():
    pytest.importorskip("sklearn")
    from advtrade.datasets import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def digits_cnn(digits) -> nn.Module:
    """A standard-trained SmallCNN on digits (about 97% clean test accuracy). Shared: tests must
    not change it (attacks and evaluation leave a model as it was, and tests check that)."""
    torch.manual_seed(0)
    return train_standard(SmallCNN(), digits.x_train, digits.y_train)
