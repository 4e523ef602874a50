"""AutoAttack side by side with torchattacks', on standard and PGD-trained CNNs.

For the digits and the MNIST subset, ℓ∞ and ℓ2, a standard and a PGD-trained CNN: robust
accuracy after each stage (APGD-CE, APGD-T, FAB-T, Square), the final robust accuracy and the
wall time of advtrade's ``AutoAttack`` and of torchattacks 3.5.1's — as shipped (its APGD-CE,
APGD-T and FAB-T run 10 steps) and with those three stages at the paper's 100 steps, the
comparison that matters. PGD-CE-20 is printed beside them: the gap AutoAttack closes.

    pip install --no-deps torchattacks==3.5.1   # the reference, never a dependency
    python benchmarks/autoattack.py             # all eight models (tens of minutes on a CPU)
    python benchmarks/autoattack.py --data digits   # the four digits models only
    python benchmarks/autoattack.py --quick     # digits only, 200 test examples
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

import advtrade as at
from advtrade.datasets import Split, load_digits, load_mnist_subset
from advtrade.models import small_cnn

EPS = {"digits": {"linf": 0.2, "l2": 1.0}, "mnist": {"linf": 0.2, "l2": 1.5}}


def train(split: Split, eps: float, norm: str, epochs: int, seed: int = 0) -> nn.Module:
    """A small CNN, standard (eps 0) or PGD-trained, with advtrade's trainer."""
    torch.manual_seed(seed)
    model = small_cnn(split.input_shape, split.num_classes)
    objective: at.training.Objective = at.Standard()
    schedule = None
    if eps > 0:
        threat = at.LinfBall(eps) if norm == "linf" else at.L2Ball(eps)
        objective = at.AdversarialTraining(at.PGD(threat, steps=5))
        schedule = at.training.LinearWarmup(eps, max(1, epochs // 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    trainer = at.RobustTrainer(model, optimizer, objective, eps_schedule=schedule, progress=None)
    trainer.fit(split.loaders(64, seed=seed)[0], epochs)
    return model.eval()


def robust(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def torchattacks_suite(model: nn.Module, norm: str, eps: float, steps: int) -> list:
    """torchattacks' standard AutoAttack members with APGD-CE, APGD-T and FAB-T at ``steps``
    (10 as shipped; the reference uses 100) and Square as AutoAttack configures it."""
    import torchattacks as ta

    n = "Linf" if norm == "linf" else "L2"
    return [
        ("APGD-CE", ta.APGD(model, norm=n, eps=eps, steps=steps, n_restarts=1, seed=0)),
        ("APGD-T", ta.APGDT(model, norm=n, eps=eps, steps=steps, n_restarts=1, seed=0,
                            n_classes=10)),
        ("FAB-T", ta.FAB(model, norm=n, eps=eps, steps=steps, n_restarts=1, seed=0,
                         multi_targeted=True, n_classes=10)),
        ("Square", ta.Square(model, norm=n, eps=eps, n_queries=5000, n_restarts=1, p_init=0.8,
                             resc_schedule=False, seed=0)),
    ]


def run_torchattacks(model, x, y, suite) -> tuple[list[tuple[str, float]], float, float]:
    """Each member on the examples every earlier one left robust (as AutoAttack does)."""
    start = time.perf_counter()
    with torch.no_grad():
        alive = model(x).argmax(1) == y
    stages = []
    for name, attack in suite:
        todo = alive.nonzero().squeeze(1)
        began = time.perf_counter()
        if todo.numel():
            x_adv = attack(x[todo], y[todo]).detach()
            with torch.no_grad():
                alive[todo] = model(x_adv).argmax(1) == y[todo]
        stages.append((name, float(alive.float().mean()), time.perf_counter() - began))
    return stages, float(alive.float().mean()), time.perf_counter() - start


def case(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
         reference: bool) -> dict[str, float]:
    threat = at.LinfBall(eps) if norm == "linf" else at.L2Ball(eps)
    gen = torch.Generator().manual_seed(0)
    pgd = robust(model, x, at.PGD(threat, steps=20)(model, x, y, generator=gen), y)
    start = time.perf_counter()
    x_adv, stages = at.AutoAttack(threat, seed=0, progress=None).run(model, x, y)
    ours_time = time.perf_counter() - start
    ours = robust(model, x, x_adv, y)
    print(f"\n{name}, {norm} eps={eps}, {len(x)} examples, clean "
          f"{robust(model, x, x, y):.3f}, PGD-CE-20 {pgd:.3f}")
    print("  advtrade AutoAttack     " + "  ".join(
        f"{s.name} {s.robust / s.total:.3f} ({s.seconds:.1f} s)" for s in stages)
          + f"  -> {ours:.3f} in {ours_time:6.1f} s")
    row = {"pgd": pgd, "ours": ours, "ours_time": ours_time}
    if not reference:
        return row
    for label, steps in (("torchattacks, 100 steps", 100), ("torchattacks as shipped", 10)):
        torch.manual_seed(0)
        stages_ta, acc, seconds = run_torchattacks(model, x, y,
                                                   torchattacks_suite(model, norm, eps, steps))
        print(f"  {label:23s} " + "  ".join(f"{n} {a:.3f} ({t:.1f} s)" for n, a, t in stages_ta)
              + f"  -> {acc:.3f} in {seconds:6.1f} s")
        row[label] = acc
        row[label + " time"] = seconds
    gap = 100 * (ours - row["torchattacks, 100 steps"])
    ratio = ours_time / row["torchattacks, 100 steps time"]
    print(f"  advtrade − torchattacks(100): {gap:+.1f} points; time ratio {ratio:.2f}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="digits only, 200 test examples")
    parser.add_argument("--data", choices=("all", "digits", "mnist"), default="all",
                        help="which datasets' four models to run (default: both)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import torchattacks  # noqa: F401

        reference = True
    except ImportError:
        print("torchattacks is not installed: advtrade only "
              "(pip install --no-deps torchattacks==3.5.1)")
        reference = False
    data: dict[str, Callable[[], Split]] = {"digits": load_digits, "mnist": load_mnist_subset}
    if args.quick:
        data = {"digits": load_digits}
    elif args.data != "all":
        data = {args.data: data[args.data]}
    rows = []
    for name, load in data.items():
        split = load(seed=0)
        n = 200 if args.quick else 500
        x, y = split.x_test[:n], split.y_test[:n]
        epochs = 15 if name == "digits" else 8
        for norm in ("linf", "l2"):
            eps = EPS[name][norm]
            for kind, train_eps in (("standard", 0.0), ("PGD-trained", eps)):
                model = train(split, train_eps, norm, epochs)
                rows.append(case(f"{name} {kind} CNN", model, x, y, norm, eps, reference))
    if reference:
        worst_gap = max(100 * (r["ours"] - r["torchattacks, 100 steps"]) for r in rows)
        worst_ratio = max(r["ours_time"] / r["torchattacks, 100 steps time"] for r in rows)
        total = sum(r["ours_time"] for r in rows) / sum(
            r["torchattacks, 100 steps time"] for r in rows
        )
        print(f"\nworst gap to torchattacks(100): {worst_gap:+.1f} points (goal <= +0.3); time "
              f"ratio worst {worst_ratio:.2f}, overall {total:.2f} (goal <= 0.8)")


if __name__ == "__main__":
    main()
