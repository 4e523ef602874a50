"""Adversarially train a model you already have, with the optimizer you already have.

The model, optimizer and scheduler below are ordinary PyTorch objects; advtrade takes them as
they are (no subclassing, no wrapper, no change to the learning rate). The six lines marked
``# advtrade`` are all it takes to train with PGD adversarial training, evaluate clean and under
a stronger attack, and keep a checkpoint to resume from.

    python examples/wrap_existing_model.py --quick     # about 10 s on a laptop CPU
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from advtrade import PGD, LinfBall
from advtrade.datasets import load_digits
from advtrade.training import AdversarialTraining, LinearWarmup, RobustTrainer


class MyNet(nn.Module):
    """Any model that maps a batch of images in [0, 1] to logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(64 * 4 * 4, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs only")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    args = parser.parse_args()
    epochs = args.epochs or (6 if args.quick else 20)
    ckpt_dir = args.checkpoint_dir or Path(tempfile.mkdtemp(prefix="advtrade-"))

    # Your existing objects: data, model, optimizer, scheduler.
    torch.manual_seed(0)
    train_loader, test_loader = load_digits(seed=0).loaders(batch_size=64, seed=0)
    model = MyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    eps = 0.2
    attack = PGD(LinfBall(eps), steps=5)  # advtrade
    objective = AdversarialTraining(attack)  # advtrade
    trainer = RobustTrainer(  # advtrade
        model, optimizer, objective, scheduler=scheduler, eps_schedule=LinearWarmup(eps, 3)
    )
    history = trainer.fit(train_loader, epochs, test_loader, checkpoint_dir=ckpt_dir)  # advtrade
    strong = {"clean": None, "pgd-20": PGD(LinfBall(eps), steps=20, restarts=2)}
    report = trainer.evaluate(test_loader, strong)  # advtrade

    print(history)
    print(report)
    print(f"checkpoint: {ckpt_dir / 'last.pt'}")

    # Later, or after a crash: build the same kind of objects and resume from the checkpoint;
    # fit(train_loader, epochs) would then continue where the run stopped (epochs counts the
    # whole run), bit for bit on CPU.
    model2 = MyNet()
    optimizer2 = torch.optim.Adam(model2.parameters(), lr=3e-3)
    scheduler2 = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer2, T_max=epochs)
    resumed = RobustTrainer.resume(  # advtrade
        ckpt_dir / "last.pt", model2, optimizer2, objective, scheduler=scheduler2
    )
    same = all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values())
    )
    print(f"resumed at epoch {resumed.epoch}; same weights: {same}")


if __name__ == "__main__":
    main()
