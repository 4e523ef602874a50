"""Benchmark the robust-evaluation tools on a digits CNN.

1. Accuracy-vs-ε curve over 8 budgets: time and forward rows of ``robust_accuracy_curve`` over one
   PGD at the largest ε and over one PGD per ε (ours, and torchattacks' if installed), with the
   accuracies side by side.
2. APGD: time over its floor (``steps`` forward+backward passes on the same batch), and against
   ``torchattacks.APGD`` at equal settings (time ratio, robust-accuracy difference).

    python benchmarks/evaluation.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from advtrade.attacks import APGD, PGD
from advtrade.datasets import load_digits
from advtrade.evaluation import robust_accuracy_curve
from advtrade.threats import L2Ball, LinfBall

try:
    import torchattacks
except ImportError:  # a peer library, only for comparison
    torchattacks = None

GRIDS = {
    "linf": [0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2],
    "l2": [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0],
}


class Counting(nn.Module):
    """Counts the rows the wrapped model is run on (a deterministic proxy for time)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.model(x)


def digits_cnn(epochs: int, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    split = load_digits()
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 16, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train, _ = split.loaders(64, seed=0)
    for _ in range(epochs):
        for x, y in train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            optimizer.step()
    return model.eval(), split.x_test.to(device), split.y_test.to(device)


def timed(
    jobs: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Least wall time of each job over ``repeats`` runs, after one warm-up run each.

    The runs are interleaved, so a busy spell of a shared machine hits every job alike, and
    the least time is the estimate least disturbed by other processes.
    """
    best = dict.fromkeys(jobs, float("inf"))
    for job in jobs.values():
        job()
    for _ in range(repeats):
        for name, job in jobs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            job()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def rows(fn: Callable[[nn.Module], object], model: nn.Module) -> int:
    """Rows of input the model is run on during ``fn(model)``."""
    counting = Counting(model)
    fn(counting)
    return counting.rows


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def gen(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(0)


def bench_curve(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int, repeats: int
) -> None:
    grid, device = GRIDS[norm], x.device
    pgd = PGD(LinfBall(grid[-1]) if norm == "linf" else L2Ball(grid[-1]), steps=steps)
    result = robust_accuracy_curve(model, (x, y), pgd, grid, generator=gen(device))
    each = [accuracy(model, pgd.with_eps(e)(model, x, y, generator=gen(device)), y) for e in grid]
    jobs: dict[str, Callable[[nn.Module], object]] = {
        "curve": lambda m: robust_accuracy_curve(m, (x, y), pgd, grid, generator=gen(device)),
        "one": lambda m: pgd(m, x, y, generator=gen(device)),
        "each": lambda m: [pgd.with_eps(e)(m, x, y, generator=gen(device)) for e in grid],
    }
    r = {k: rows(f, model) for k, f in jobs.items()}
    timing: dict[str, Callable[[], object]] = {k: lambda f=f: f(model) for k, f in jobs.items()}
    theirs: list[float] = []
    if torchattacks is not None:
        kind = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        attacks = [kind(model, eps=e, alpha=2.5 * e / steps, steps=steps) for e in grid]
        theirs = [accuracy(model, a(x, y), y) for a in attacks]
        timing["torchattacks"] = lambda: [a(x, y) for a in attacks]
    t = timed(timing, repeats, device)
    print(
        f"\n[curve] {norm}, {len(grid)} budgets, PGD-{steps}, {x.shape[0]} examples, "
        f"{result.rounds} rounds, least time of {repeats} runs"
    )
    for what, table in (("time", t), ("rows", r)):
        print(
            f"  {what}: curve / one PGD at eps={grid[-1]}: {table['curve'] / table['one']:5.2f}x"
            f"   curve / one PGD per eps: {table['curve'] / table['each']:5.2f}x"
            f"   one PGD per eps / one PGD: {table['each'] / table['one']:5.2f}x"
        )
    if theirs:
        print(
            f"  torchattacks one PGD per eps / our one PGD: {t['torchattacks'] / t['one']:5.2f}x"
            f"   / our curve: {t['torchattacks'] / t['curve']:5.2f}x"
        )
    print(f"  {'eps':>6} {'curve':>7} {'PGD/eps':>8}" + (f" {'TA PGD/eps':>10}" if theirs else ""))
    for i, e in enumerate(grid):
        line = f"  {e:>6.3g} {result.accuracies[i]:>7.3f} {each[i]:>8.3f}"
        print(line + (f" {theirs[i]:>10.3f}" if theirs else ""))
    diff = max(abs(a - b) for a, b in zip(result.accuracies, each))
    print(f"  max |curve - PGD per eps| = {100 * diff:.2f} points")


def floor(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> None:
    """The cost floor of a ``steps``-step attack: that many forward+backward input passes."""
    params = [p.requires_grad_(False) for p in model.parameters()]
    try:
        for _ in range(steps):
            xg = x.detach().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xg), y, reduction="none")
            torch.autograd.grad(loss.sum(), xg)
    finally:
        for p in params:
            p.requires_grad_(True)


def bench_apgd(model: nn.Module, x: Tensor, y: Tensor, steps: int, repeats: int) -> None:
    """APGD on the correctly classified examples (torchattacks attacks only those, and so does
    ``evaluate``); accuracies are robust accuracies over the whole test set."""
    device, total = x.device, x.shape[0]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct], y[correct]
    print(
        f"\n[apgd] {steps} steps, the {x.shape[0]} correct of {total} examples, least time of "
        f"{repeats} runs"
    )
    for norm, eps in (("Linf", 0.1), ("L2", 0.75)):
        threat = LinfBall(eps) if norm == "Linf" else L2Ball(eps)
        for loss in ("ce", "dlr"):
            ours = APGD(threat, steps=steps, loss=loss)
            jobs: dict[str, Callable[[], object]] = {
                "floor": lambda: floor(model, x, y, steps),
                "ours": lambda a=ours: a(model, x, y, generator=gen(device)),
            }
            if torchattacks is not None:
                ta = torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, loss=loss, seed=0)
                jobs["theirs"] = lambda a=ta: a(x, y)
            t = timed(jobs, repeats, device)
            acc = accuracy(model, ours(model, x, y, generator=gen(device)), y) * len(y) / total
            line = (
                f"  {norm:>4} {loss:>3}: acc {acc:.3f}   time / floor "
                f"({steps} fwd+bwd): {t['ours'] / t['floor']:5.3f}x"
            )
            if torchattacks is not None:
                acc_ta = accuracy(model, ta(x, y), y) * len(y) / total
                line += (
                    f"   torchattacks: acc {acc_ta:.3f} (ours - theirs "
                    f"{100 * (acc - acc_ta):+.2f} pts), time ours/theirs "
                    f"{t['ours'] / t['theirs']:4.2f}x"
                )
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, steps and repeats")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args()
    device = torch.device(args.device)
    epochs, steps, apgd_steps, repeats = (5, 10, 20, 1) if args.quick else (15, 10, 100, 5)
    model, x, y = digits_cnn(epochs, device)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"torchattacks {'yes' if torchattacks else 'not installed'}; "
        f"clean accuracy {accuracy(model, x, y):.3f}"
    )
    for norm in ("linf", "l2"):
        bench_curve(model, x, y, norm, steps, repeats)
    bench_apgd(model, x, y, apgd_steps, repeats)


if __name__ == "__main__":
    main()
