"""Attacks and training on a CUDA GPU keep the invariants they keep on the CPU.

Skipped without CUDA. ``ADVTRADE_TEST_DEVICE=cpu pytest tests/test_gpu.py`` runs the same tests
on the CPU (autocast in bfloat16, gloo instead of nccl), which checks the tests themselves on a
machine without a GPU.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from advtrade import FGSM, PGD, L2Ball, LinfBall
from advtrade.distributed import (
    all_gather_object,
    distributed_loader,
    init_distributed,
    shard_loader,
)
from advtrade.training import AdversarialTraining, RobustTrainer

from .conftest import SmallCNN, free_port

DEVICE = torch.device(os.environ.get("ADVTRADE_TEST_DEVICE", "cuda"))
HAS_DEVICE = DEVICE.type != "cuda" or torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not HAS_DEVICE, reason="needs a CUDA GPU")
AMP_DTYPE = torch.float16 if DEVICE.type == "cuda" else torch.bfloat16

ATTACKS = {
    "pgd-linf": PGD(LinfBall(8 / 255), steps=5),
    "pgd-l2": PGD(L2Ball(0.5), steps=5),
    "fgsm": FGSM(LinfBall(8 / 255)),
}


def _model() -> nn.Module:
    return SmallCNN(batchnorm=True)


def _data(n: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _check_attack(attack: Any, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    eps = attack.threat.eps
    assert x_adv.device == x.device and x_adv.dtype == x.dtype == torch.float32
    assert not x_adv.requires_grad
    assert bool((attack.threat.norm(x_adv - x) <= eps * (1 + 1e-5) + 1e-7).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_on_the_device(name: str, amp: bool) -> None:
    """On the device (and under autocast): x_adv stays float32 in ball ∩ domain, raises the
    loss, and the model comes back as it was (modes, parameters, buffers, gradients)."""
    attack = ATTACKS[name]
    torch.manual_seed(0)
    model = _model().to(DEVICE).train()
    x, y = (t.to(DEVICE) for t in _data())
    state = copy.deepcopy(model.state_dict())
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    with torch.autocast(DEVICE.type, dtype=AMP_DTYPE, enabled=amp):
        x_adv = attack(model, x, y, generator=gen)
    _check_attack(attack, model, x, x_adv)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        model.eval()
        ce = nn.functional.cross_entropy
        assert float(ce(model(x_adv), y)) > float(ce(model(x), y))


def test_cpu_generator_with_device_data() -> None:
    """A CPU generator drives the random start of an attack on device data, reproducibly."""
    torch.manual_seed(0)
    model = _model().to(DEVICE)
    x, y = (t.to(DEVICE) for t in _data(32))
    attack = ATTACKS["pgd-linf"]
    a = attack(model, x, y, generator=torch.Generator().manual_seed(3))
    b = attack(model, x, y, generator=torch.Generator().manual_seed(3))
    _check_attack(attack, model, x, a)
    assert torch.equal(a, b)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_one_training_epoch_on_the_device(amp: bool) -> None:
    """One PGD-AT epoch on the device, with and without mixed precision (a GradScaler on
    CUDA): finite loss, weights updated, no gradients left, modes restored."""
    torch.manual_seed(0)
    model = _model().to(DEVICE)
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    objective = AdversarialTraining(ATTACKS["pgd-linf"])
    trainer = RobustTrainer(model, opt, objective, amp=amp, progress=None)
    assert trainer.device.type == DEVICE.type
    assert (trainer._scaler is not None) == (amp and DEVICE.type == "cuda")
    x, y = _data(256)
    train = torch.utils.data.DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    test = torch.utils.data.DataLoader(TensorDataset(*_data(128, seed=1)), batch_size=64)
    model.eval()
    history = trainer.fit(train, 1, test)
    rec = history[-1]
    assert math.isfinite(rec["loss"])
    hits = 0  # the recorded clean accuracy is the trained model's, recounted by hand
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=AMP_DTYPE, enabled=amp):
        for xb, yb in test:
            hits += int((model(xb.to(DEVICE)).argmax(1) == yb.to(DEVICE)).sum())
    assert rec["eval_clean_acc"] == hits / 128
    assert rec["eval_robust_acc"] <= rec["eval_clean_acc"]
    assert not model.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def _ddp_worker(rank: int, port: int, world: int, device_type: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    backend = "nccl" if device_type == "cuda" else "gloo"
    device = init_distributed(backend, timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)
    model = _model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    objective = AdversarialTraining(ATTACKS["pgd-linf"])
    trainer = RobustTrainer(model, opt, objective, ddp=True, amp=True, progress=None)
    x, y = _data(256)
    test = shard_loader(TensorDataset(*_data(100, seed=1)), 50)
    history = trainer.fit(distributed_loader(TensorDataset(x, y), 32), 1, test)
    flat = torch.cat([t.detach().flatten().float().cpu() for t in model.state_dict().values()])
    assert all(torch.equal(flat, other) for other in all_gather_object(flat))
    assert all(h == history.to_list() for h in all_gather_object(history.to_list()))
    dist.destroy_process_group()


@pytest.mark.skipif(
    DEVICE.type == "cuda" and torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"
)
def test_two_process_amp_training_on_the_device() -> None:
    """Two ranks (nccl, one GPU each) train one mixed-precision PGD-AT epoch to identical
    weights, buffers and histories."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.spawn(_ddp_worker, args=(free_port(), 2, DEVICE.type), nprocs=2, join=True)
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved
