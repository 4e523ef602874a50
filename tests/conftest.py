"""Shared fixtures: small models and the digits data, trained once per test session."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings
from torch import nn

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to a busy machine


class SmallCNN(nn.Module):
    """A CNN for 8×8 digits: small enough to train in seconds on a CPU."""

    def __init__(self, num_classes: int = 10, batchnorm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * 4 * 4, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 15) -> None:
    """Plain Adam training loop (an independent reference, not advtrade's trainer)."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


@pytest.fixture(scope="session")
def digits():
    pytest.importorskip("sklearn")
    from advtrade.datasets import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def digits_cnn(digits) -> nn.Module:
    """A standard-trained CNN on digits (about 97% clean test accuracy)."""
    torch.manual_seed(0)
    model = SmallCNN()
    train_standard(model, digits.x_train, digits.y_train)
    return model
