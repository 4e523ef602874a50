"""Adversarial training on several processes with torchrun: DDP over gloo (CPU) or nccl (GPUs).

Every process runs this same script. Each trains on its own share of the digits training set
(``distributed_loader``), gradients are averaged by DistributedDataParallel, and each evaluates
its own shard of the test set (``shard_loader``, no padding); the trainer sums the counts over
processes, so the printed accuracies are those of the whole test set. Rank 0 prints and writes
the checkpoint; ``--resume`` continues a run from it on every rank.

    torchrun --nproc_per_node=2 examples/distributed_training.py --quick
    torchrun --nproc_per_node=2 examples/distributed_training.py --quick --resume  # after a crash
    python examples/distributed_training.py --quick       # the same script on one process

On CPU, give each process its own cores (``OMP_NUM_THREADS=1`` or more); on GPUs, run one
process per GPU and training uses mixed precision (``amp=True``).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from advtrade import PGD, LinfBall
from advtrade.datasets import load_digits
from advtrade.distributed import (
    distributed_loader,
    get_world_size,
    init_distributed,
    is_main_process,
    shard_loader,
)
from advtrade.training import AdversarialTraining, LinearWarmup, RobustTrainer


def make_model() -> nn.Module:
    """A small CNN for 8×8 digits in [0, 1]."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs, fewer PGD steps")
    parser.add_argument(
        "--epochs", type=int, default=None, help="total epochs (default 20; 4 quick)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="examples per process per step")
    parser.add_argument("--eps", type=float, default=0.2, help="l-inf budget")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    epochs = args.epochs or (4 if args.quick else 20)
    steps = 3 if args.quick else 7
    ckpt_dir = args.checkpoint_dir or Path(tempfile.gettempdir()) / "advtrade-ddp-example"

    device = init_distributed()  # nccl + cuda:LOCAL_RANK on GPUs, else gloo + cpu
    split = load_digits(seed=0)
    train_loader = distributed_loader(TensorDataset(split.x_train, split.y_train), args.batch_size)
    test_loader = shard_loader(TensorDataset(split.x_test, split.y_test), 256)

    torch.manual_seed(0)  # DDP also copies rank 0's initial weights to every rank
    model = make_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    objective = AdversarialTraining(PGD(LinfBall(args.eps), steps=steps))
    options = {
        "scheduler": scheduler,
        "ddp": True,  # wrap in DistributedDataParallel
        "amp": device.type == "cuda",
        "eps_schedule": LinearWarmup(args.eps, 2),
        "progress": "plain",  # shown on rank 0 only
    }
    if args.resume:
        trainer = RobustTrainer.resume(ckpt_dir / "last.pt", model, optimizer, objective, **options)
    else:
        trainer = RobustTrainer(model, optimizer, objective, **options)

    history = trainer.fit(train_loader, epochs, test_loader, checkpoint_dir=ckpt_dir)
    strong = {"clean": None, "pgd-20": PGD(LinfBall(args.eps), steps=20)}
    report = trainer.evaluate(test_loader, strong)  # on every rank: counts summed over ranks
    if is_main_process():
        print(f"{get_world_size()} process(es) on {device.type}")
        print(history)
        print(report)
        print(f"checkpoint: {ckpt_dir / 'last.pt'} (an interrupted run continues with --resume)")
    # Release the DDP model (its reducer holds gloo work) before leaving the group, so no gloo
    # thread still owns tensors when Python shuts down.
    del trainer, model
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
