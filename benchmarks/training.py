"""Cost of a training step of each method, as a ratio to a standard step, and its peak memory.

A K-step PGD adversarial-training step costs K forward/backward passes for the attack plus one
for the weight update, so its floor is (K + 1) standard steps (goal: ratio <= 1.1 (K + 1)).
Fast AT (one attack step + the update) has a floor of 2 (goal <= 2.2); free AT with m replays
makes m optimizer steps per batch (floor m); TRADES-K adds a clean forward for the attack's
target and a second forward in its loss (floor about K + 2). Mixed precision (bfloat16
autocast on CPU, float16 on CUDA) should not be slower than float32.

Every figure is seconds per batch of ``RobustTrainer.fit`` over a loader of random batches
(random data is fine for timing), the best of ``--repeats`` rounds in which the methods
alternate, so that a busy spell of a shared machine hits all of them alike. Peak memory is
measured per method: on CUDA ``max_memory_allocated``, on CPU the peak resident set of a fresh
process that runs only that method.

    python benchmarks/training.py                 # PreAct ResNet-18, 3x32x32, batch 32, CPU
    python benchmarks/training.py --quick         # fewer methods and repeats
    python benchmarks/training.py --model small-cnn --dataset digits   # the trainer's overhead
    python benchmarks/training.py --device cuda --amp --channels-last --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advtrade import PGD, LinfBall
from advtrade.datasets import load_dataset
from advtrade.models import preact_resnet18
from advtrade.training import (
    TRADES,
    AdversarialTraining,
    FastAdversarialTraining,
    FreeAdversarialTraining,
    Objective,
    RobustTrainer,
    Standard,
)

EPS = 8 / 255


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


@dataclass(frozen=True)
class Method:
    """A training method: how to build its objective, its cost floor and whether it runs under
    mixed precision. The floor counts ``passes`` input-gradient passes (the attack's forward +
    backward in eval mode) plus ``steps`` standard training steps."""

    name: str
    make: Callable[[], Objective]
    passes: int
    steps: int
    amp: bool = False

    @property
    def standard_steps(self) -> int:
        """The issue's coarse floor: every pass counted as a standard step."""
        return self.passes + self.steps


def methods(quick: bool, amp: bool) -> list[Method]:
    """Standard, PGD-K AT for K in (2, 7, 10), fast, free (m = 4) and TRADES-10; with ``amp``,
    standard and PGD-7 AT again under mixed precision."""
    threat = LinfBall(EPS)
    steps = (2, 7) if quick else (2, 7, 10)
    out = [Method("standard", Standard, 0, 1)]
    for k in steps:
        out.append(Method(f"PGD-{k} AT", lambda k=k: AdversarialTraining(PGD(threat, steps=k)),
                          k, 1))
    out.append(Method("fast AT", lambda: FastAdversarialTraining(threat), 1, 1))
    if not quick:
        # free: m training steps whose backward also gives the input gradient; TRADES: the
        # attack's passes, and an update through a clean and an adversarial forward
        out.append(Method("free AT (m=4)", lambda: FreeAdversarialTraining(threat, 4), 0, 4))
        out.append(Method("TRADES-10", lambda: TRADES(PGD(threat, steps=10)), 10, 2))
    if amp:
        out.append(Method("standard, amp", Standard, 0, 1, amp=True))
        out.append(Method("PGD-7 AT, amp", lambda: AdversarialTraining(PGD(threat, steps=7)),
                          7, 1, amp=True))
    return out


def problem(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, DataLoader]:
    """The model and a loader of ``--batches`` batches (random CIFAR-shaped data, or the
    bundled digits for the small CNN)."""
    torch.manual_seed(0)
    if args.model == "preact-resnet18":
        g = torch.Generator().manual_seed(0)
        n = args.batch_size * args.batches
        x, y = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
        model: nn.Module = preact_resnet18(num_classes=10)
    else:
        split = load_dataset(args.dataset, seed=0)
        n = min(len(split.x_train), args.batch_size * args.batches)
        x, y = split.x_train[:n], split.y_train[:n]
        model = small_cnn(x.shape[1], x.shape[-1], split.num_classes)
    loader = DataLoader(TensorDataset(x.to(device), y.to(device)), batch_size=args.batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    return model.to(device), loader


def epoch_runner(
    method: Method, model: nn.Module, loader: DataLoader, args: argparse.Namespace
) -> Callable[[], None]:
    """One epoch of ``RobustTrainer.fit`` with the method (a fresh trainer each time, as a user
    would build it; the model and optimizer carry over)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> None:
        trainer = RobustTrainer(model, opt, method.make(), amp=method.amp,
                                channels_last=args.channels_last, progress=None)
        trainer.fit(loader, 1)
        if next(model.parameters()).is_cuda:
            torch.cuda.synchronize()

    return run


def plain_loop(model: nn.Module, loader: DataLoader) -> Callable[[], None]:
    """A hand-written standard epoch: the reference for the trainer's own overhead."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> None:
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        if xb.is_cuda:
            torch.cuda.synchronize()

    return run


def gradient_pass(model: nn.Module, loader: DataLoader) -> Callable[[], None]:
    """One input-gradient pass per batch in eval mode: the unit an attack step costs."""

    def run() -> None:
        model.eval()
        for xb, yb in loader:
            xr = xb.detach().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xr), yb, reduction="sum")
            torch.autograd.grad(loss, xr)
        if xb.is_cuda:
            torch.cuda.synchronize()

    return run


def best_times(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Minimum wall time of each run over ``repeats`` alternating rounds, after a warm-up."""
    for fn in runs.values():
        fn()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _peak_rss_kb() -> float:
    """This process's peak resident set in KiB. Linux's ``VmHWM`` starts afresh at ``exec``,
    whereas ``ru_maxrss`` carries over the parent's peak at ``fork``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_memory_mb(method: Method, args: argparse.Namespace, device: torch.device) -> float:
    """Peak memory of one epoch of ``method``: CUDA's allocator peak, or on CPU the peak
    resident set of a fresh process that runs only this method."""
    if device.type == "cuda":
        model, loader = problem(args, device)
        torch.cuda.reset_peak_memory_stats(device)
        epoch_runner(method, model, loader, args)()
        return torch.cuda.max_memory_allocated(device) / 2**20
    argv = [sys.executable, __file__, "--memory-of", method.name, *sys.argv[1:]]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer methods, one timed round")
    parser.add_argument("--model", default="preact-resnet18", choices=["preact-resnet18",
                                                                       "small-cnn"])
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist"],
                        help="data of --model small-cnn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=None, help="per epoch (default 2; 8 "
                        "for the small CNN)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (3; 1 quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="also time mixed precision")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batches = args.batches or (2 if args.model == "preact-resnet18" else 8)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    todo = methods(args.quick, args.amp or device.type == "cuda")

    if args.memory_of is not None:  # child: one method, report the process's peak
        method = next(m for m in todo if m.name == args.memory_of)
        model, loader = problem(args, device)
        epoch_runner(method, model, loader, args)()
        print(json.dumps({"peak_mb": _peak_rss_kb() / 1024}))
        return

    model, loader = problem(args, device)
    runs = {m.name: epoch_runner(m, model, loader, args) for m in todo}
    runs["plain loop"] = plain_loop(model, loader)
    runs["gradient pass"] = gradient_pass(model, loader)
    t = best_times(runs, repeats)
    per_batch = {name: seconds / len(loader) for name, seconds in t.items()}
    standard, grad = per_batch["standard"], per_batch["gradient pass"]
    memory = {} if args.no_memory else {m.name: peak_memory_mb(m, args, device) for m in todo}

    print(f"{args.model}, batch {args.batch_size} x {len(loader)}, {device}, "
          f"{torch.get_num_threads()} thread(s), channels_last={args.channels_last}, "
          f"best of {repeats}")
    print(f"  an input-gradient pass costs {grad / standard:.2f} standard steps; columns: "
          f"time / standard step, / (passes + steps) standard steps (the coarse floor), "
          f"/ (passes x pass + steps x step) (the tight floor)")
    print(f"  {'method':<16} {'s/batch':>8} {'img/s':>8} {'/standard':>9} {'/coarse':>8} "
          f"{'/tight':>7} {'peak MB':>8}")
    for m in todo:
        sec = per_batch[m.name]
        ratio = sec / standard
        tight = sec / (m.passes * grad + m.steps * standard)
        mem = f"{memory[m.name]:8.0f}" if m.name in memory else " " * 8
        print(f"  {m.name:<16} {sec:8.3f} {args.batch_size / sec:8.1f} {ratio:9.2f} "
              f"{ratio / m.standard_steps:8.3f} {tight:7.3f} {mem}")
    if "standard, amp" in per_batch:
        print(f"  amp / fp32: standard {per_batch['standard, amp'] / standard:.2f}, PGD-7 AT "
              f"{per_batch['PGD-7 AT, amp'] / per_batch['PGD-7 AT']:.2f}")
    print(f"  trainer overhead: Standard() step / hand-written PyTorch step "
          f"{standard / per_batch['plain loop']:.3f}")


if __name__ == "__main__":
    main()
