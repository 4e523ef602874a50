"""Cost of an adversarial-training epoch over its floor, (K + 1) standard epochs.

A K-step PGD adversarial-training step costs K forward/backward passes for the attack plus one
for the weight update, so one epoch should cost about (K + 1) standard epochs; the ratio printed
here is that cost over the floor (goal: <= 1.1). TRADES adds a clean forward for the attack's
target and a second forward in the loss, so its floor is a little higher. The trainer's own
overhead is measured too: a ``Standard()`` epoch over a hand-written PyTorch loop.

    python benchmarks/training.py            # digits, small CNN, K = 10, best of 5
    python benchmarks/training.py --quick    # fewer repeats and steps, a few seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from advtrade import PGD, LinfBall
from advtrade.datasets import load_dataset
from advtrade.training import TRADES, AdversarialTraining, RobustTrainer, Standard


def small_cnn(in_ch: int, side: int, num_classes: int) -> nn.Module:
    """Two convolutions and a linear head (the test suite's model, sized for the input)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * ((side + 1) // 2) ** 2, num_classes),
    )


def best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Minimum wall time of each run over ``repeats`` rounds, after one warm-up round. The runs
    alternate within a round, so a busy spell of the machine hits all of them alike."""
    for fn in runs.values():
        fn()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and PGD steps")
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist"])
    parser.add_argument("--steps", type=int, default=None, help="PGD steps K (default 10; 5 quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5; 2 quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    steps = args.steps or (5 if args.quick else 10)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    split = load_dataset(args.dataset, seed=0)
    x, y = split.x_train.to(device), split.y_train.to(device)
    if args.quick:
        x, y = x[:512], y[:512]
    loader = DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    torch.manual_seed(0)
    model = small_cnn(x.shape[1], x.shape[-1], split.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    attack = PGD(LinfBall(0.2), steps=steps)

    def plain_epoch() -> None:
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()

    def trainer_epoch(objective: object) -> Callable[[], object]:
        def run() -> object:
            trainer = RobustTrainer(model, opt, objective, progress=None)  # type: ignore[arg-type]
            return trainer.fit(loader, 1)

        return run

    t = best_times(
        {
            "plain": plain_epoch,
            "standard": trainer_epoch(Standard()),
            "at": trainer_epoch(AdversarialTraining(attack)),
            "trades": trainer_epoch(TRADES(attack)),
        },
        repeats,
    )
    plain, standard, at, trades = t["plain"], t["standard"], t["at"], t["trades"]
    floor = (steps + 1) * standard

    print(
        f"{args.dataset}: {len(x)} examples, batch {args.batch_size}, PGD-{steps}, "
        f"{args.threads} thread(s), {device}, best of {repeats}"
    )
    rows = [
        ("plain PyTorch standard epoch", plain, None),
        ("Standard() epoch / plain loop", standard, standard / plain),
        (f"AdversarialTraining(PGD-{steps}) / ({steps}+1) standard", at, at / floor),
        (f"TRADES(PGD-{steps}) / ({steps}+1) standard", trades, trades / floor),
    ]
    for name, seconds, ratio in rows:
        shown = "" if ratio is None else f"ratio {ratio:5.2f}"
        print(f"  {name:<46} {seconds * 1e3:9.1f} ms  {shown}")


if __name__ == "__main__":
    main()
