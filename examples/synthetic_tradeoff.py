"""The robustness–accuracy trade-off of Tsipras et al. (2019), computed exactly.

On the paper's distribution (x1 = ±y with probability p; d Gaussian features N(η·y, 1)), prints
the standard accuracy, the ℓ∞ robust accuracy at ε = 2η and the Theorem 2.1 bound for the
named linear classifiers and for the exact soft-margin SVM minimisers of Theorem 2.2 (standard
and adversarial training), then plots the trade-off frontier — all in closed form, no sampling.

    python examples/synthetic_tradeoff.py [--quick] [--out DIR] [--d 1000] [--p 0.95]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from advtrade.synthetic import LinearClassifier, TradeoffFrontier, TsiprasDistribution
from advtrade.threats import LinfBall


def table(dist: TsiprasDistribution, eps: float) -> list[tuple[str, LinearClassifier]]:
    """The named classifiers and the two SVM minimisers (λ tuned so that ||w||_2 = 1)."""
    rows = [
        ("averaging  (0, 1/d, ..., 1/d)", dist.averaging_classifier()),
        ("robust     sign(x1)", dist.robust_classifier()),
        ("Bayes      log(p/(1-p)), 2*eta", dist.bayes_classifier()),
        ("SVM, standard training", dist.svm_minimizer().classifier),
    ]
    if eps < 2 * dist.p - 1:  # Theorem 2.2's condition; beyond it the minimiser is w = 0
        train = LinfBall(eps, domain=None)
        rows.append(("SVM, adversarial (eps_tr = 2eta)", dist.svm_minimizer(train).classifier))
    return rows


def plot(dist: TsiprasDistribution, frontier: TradeoffFrontier, points: dict, path: Path) -> bool:
    """Save the frontier figure; False (with a hint) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: pip install 'advtrade[plot]' to save the figure")
        return False
    std, rob = frontier.standard.numpy(), frontier.robust.numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    grid = [dist.p + (1 - dist.p) * i / 200 for i in range(201)]
    bound = dist.theorem_2_1_bound(grid).numpy()
    left.fill_between(grid, bound, 1.0, color="0.9", label="ruled out by Theorem 2.1")
    left.plot(grid, bound, color="0.4", lw=1, ls="--", label="Theorem 2.1 bound")
    left.plot(std, rob, color="C0", lw=2, label="w(t) = t·e1 + (1−t)·(0,1,…,1)/√d")
    markers = ["o", "s", "^", "D", "*"]  # distinct shapes: some points coincide
    for i, (name, (s, r)) in enumerate(points.items()):
        left.scatter(
            [s],
            [r],
            s=150 - 25 * i,
            marker=markers[i % 5],
            facecolors="none",
            edgecolors=f"C{i + 1}",
            linewidths=1.8,
            zorder=3,
            label=name,
        )
    left.set(xlim=(dist.p - 0.01, 1.0), ylim=(-0.02, 1.0), xlabel="standard accuracy")
    left.set(ylabel=f"robust accuracy (ℓ∞, ε = 2η = {2 * dist.eta:.3f})")
    left.set_title("accuracy vs robustness of linear classifiers")
    left.legend(fontsize=7, loc="lower left")
    t = frontier.t.numpy()
    right.plot(t, std, label="standard accuracy")
    right.plot(t, rob, label="robust accuracy")
    right.plot(t, frontier.bound.numpy(), ls="--", color="0.4", lw=1, label="bound from standard")
    right.set(xlabel="t  (0: averaging classifier, 1: sign(x1))", ylabel="accuracy", ylim=(0, 1.02))
    right.set_title(f"along the path (d = {dist.d}, p = {dist.p}, η = 3/√d)")
    right.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 100 and a coarser frontier")
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic"), help="figure folder")
    parser.add_argument("--d", type=int, default=None, help="number of Gaussian features")
    parser.add_argument("--p", type=float, default=0.95, help="P[x1 = y]")
    args = parser.parse_args()
    d = args.d or (100 if args.quick else 1000)
    dist = TsiprasDistribution(d, args.p)  # eta = 3/sqrt(d)
    eps = 2 * dist.eta
    threat = LinfBall(eps, domain=None)
    print(f"d = {d}, p = {dist.p}, eta = 3/sqrt(d) = {dist.eta:.4f}, l_inf eps = 2*eta = {eps:.4f}")
    print(f"{'classifier':34s} {'standard':>9s} {'robust':>9s} {'bound':>7s} {'|w1|/|w|_1':>10s}")
    points = {}
    for name, (w, b) in table(dist, eps):
        std = float(dist.standard_accuracy(w, b))
        rob = float(dist.robust_accuracy(w, b, threat))
        share = float(w[0].abs() / w.abs().sum())
        bound = float(dist.theorem_2_1_bound(std))
        print(f"{name:34s} {std:9.5f} {rob:9.5f} {bound:7.4f} {share:10.4f}")
        points[name.split("  ")[0].strip()] = (std, rob)
    ratio, at_99 = dist.p / (1 - dist.p), float(dist.theorem_2_1_bound(0.99))
    print(f"Theorem 2.1 (eps >= 2*eta): robust <= min(1, {ratio:.3g}*(1 - standard)); e.g.")
    print(f"standard accuracy 99% allows robust accuracy at most {at_99:.0%}")
    frontier = dist.tradeoff_frontier(threat, n=101 if args.quick else 401)
    assert bool((frontier.robust <= frontier.bound + 1e-12).all())
    path = args.out / "synthetic_tradeoff.png"
    if plot(dist, frontier, points, path):
        print(f"saved {path}")
    assert math.isclose(frontier.standard[0].item(), 0.5 * math.erfc(-3 / math.sqrt(2)))


if __name__ == "__main__":
    main()
