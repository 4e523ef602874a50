"""PGD cost relative to its floor, and against torchattacks when it is installed.

The floor of a K-step PGD is K forward + input-gradient backward passes over the same batch (the
cheapest way to get K input gradients). Ratios stay meaningful on noisy shared machines; each
figure is the median of several interleaved repeats.

    python benchmarks/attacks.py            # CNN and MLP on the bundled digits
    python benchmarks/attacks.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import advtrade as at
from advtrade.datasets import load_digits, load_mnist_subset


def cnn(channels: int, side: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * ((side + 3) // 4) ** 2, 10),
    )


def mlp(n: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 256), nn.ReLU(), nn.Linear(256, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def floor(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """K forward + input-gradient backward passes: what any K-step PGD must at least do."""
    params = [p.requires_grad_(False) for p in model.parameters()]
    for _ in range(steps):
        xr = x.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xr), y)
        torch.autograd.grad(loss, xr)
    for p in params:
        p.requires_grad_(True)


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def run_case(name: str, model: nn.Module, x, y, steps: int, repeats: int) -> None:
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        run_norm(name, model, x, y, steps, repeats, norm, eps)


def run_norm(name: str, model: nn.Module, x, y, steps: int, repeats: int, norm: str,
             eps: float) -> None:
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    threat = at.LinfBall(eps) if norm == "linf" else at.L2Ball(eps)
    alpha = 2.5 * eps / steps
    pgd = at.PGD(threat, steps=steps)
    pgd_es = at.PGD(threat, steps=steps, early_stop=True)
    out: dict[str, torch.Tensor] = {}
    fns: dict[str, Callable[[], object]] = {
        "floor": lambda: floor(model, x, y, steps),
        "advtrade": lambda: out.__setitem__("advtrade", pgd(model, x, y, generator=g())),
        "advtrade early-stop": lambda: out.__setitem__(
            "advtrade early-stop", pgd_es(model, x, y, generator=g())
        ),
    }
    if torchattacks is not None:
        cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        ta = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        fns["torchattacks"] = lambda: out.__setitem__("torchattacks", ta(x, y))
    t = timed(fns, repeats)
    print(f"\n{name}, PGD-{steps} {norm} eps={eps}, batch {len(x)}, clean acc "
          f"{accuracy(model, x, y):.3f}")
    print(f"  {'method':22s} {'time/floor':>10s} {'robust acc':>11s}")
    for key in fns:
        acc = f"{accuracy(model, out[key], y):11.3f}" if key in out else " " * 11
        print(f"  {key:22s} {t[key] / t['floor']:10.3f} {acc}")
    if "torchattacks" in t:
        print(f"  advtrade / torchattacks time: {t['advtrade'] / t['torchattacks']:.3f}, "
              f"early-stop / torchattacks: {t['advtrade early-stop'] / t['torchattacks']:.3f}")


def g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, digits only")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: a shared machine's other load hits less)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 3 if args.quick else args.repeats
    digits = load_digits()
    x, y = digits.x_test, digits.y_test
    run_case("digits CNN", train(cnn(1, 8), digits.x_train, digits.y_train, 10), x, y,
             args.steps, repeats)
    run_case("digits MLP", train(mlp(64), digits.x_train, digits.y_train, 10), x, y,
             args.steps, repeats)
    if not args.quick:
        mnist = load_mnist_subset()
        run_case("MNIST-subset CNN", train(cnn(1, 28), mnist.x_train, mnist.y_train, 5),
                 mnist.x_test[:512], mnist.y_test[:512], args.steps, repeats)


if __name__ == "__main__":
    main()
