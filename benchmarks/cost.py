"""The price of robustness: cheaper adversarial training measured against PGD adversarial training.

For standard training, PGD-K adversarial training, TRADES (PGD-K inner maximisation), fast
(FGSM from a random start, step 1.25ε) and free training (m replays) this prints

* the wall time of one epoch relative to a standard epoch (best of a few epochs, the methods
  alternating so that a busy spell of the shared machine hits all of them alike);
* clean and robust accuracy at equal epochs (E each) and after the same training time (the time
  PGD-K needs for E epochs; training time counts epochs × the best epoch time, so it does not
  move with the machine's load). Free training's equal-cost epoch count in the paper, E/m, is
  the budget column's point of view.

Two problems: the bundled 8×8 digits with a small CNN (robust accuracy under PGD-20 on the test
set) and the synthetic distribution of Tsipras et al. with a linear model (exact robust
accuracy, closed form). With matplotlib it also writes robust accuracy against training time.
Goal: a fast epoch within 2.2× a standard epoch, with robust accuracy within 5 points of PGD-K
at equal epochs.

    OMP_NUM_THREADS=1 python benchmarks/cost.py            # E = 15 (digits), 20 (synthetic)
    OMP_NUM_THREADS=1 python benchmarks/cost.py --quick    # fewer epochs, about a minute
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advtrade import PGD, LinfBall, ThreatModel, TsiprasDistribution
from advtrade.datasets import load_digits
from advtrade.evaluation import evaluate
from advtrade.training import (
    TRADES,
    AdversarialTraining,
    FastAdversarialTraining,
    FreeAdversarialTraining,
    RobustTrainer,
    Standard,
)

Scores = Callable[[nn.Module], tuple[float, float]]  # model -> (clean, robust) accuracy


@dataclass
class Problem:
    """A dataset, a model factory, an optimizer factory and an exact or attack-based scorer."""

    name: str
    loader: DataLoader
    make_model: Callable[[], nn.Module]
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    threat: ThreatModel
    score: Scores
    epochs: int
    robust_label: str


@dataclass
class Result:
    """One method on one problem: best epoch time and (clean, robust) after each epoch."""

    epoch_time: float = math.inf
    scores: list[tuple[float, float]] = field(default_factory=list)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def digits_problem(epochs: int, n_test: int) -> Problem:
    split = load_digits(seed=0)
    loader, _ = split.loaders(64, seed=0)
    x_test, y_test = split.x_test[:n_test], split.y_test[:n_test]
    threat = LinfBall(0.2)
    strong = PGD(threat, steps=20)

    def score(model: nn.Module) -> tuple[float, float]:
        report = evaluate(
            model,
            DataLoader(TensorDataset(x_test, y_test), batch_size=256),
            {"clean": None, "pgd20": strong},
            generator=torch.Generator().manual_seed(1),
        )
        return report["clean"], report["pgd20"]

    return Problem(
        "digits (small CNN, l_inf eps=0.2)",
        loader,
        small_cnn,
        lambda m: torch.optim.Adam(m.parameters(), lr=3e-3),
        threat,
        score,
        epochs,
        "PGD-20",
    )


def synthetic_problem(epochs: int) -> Problem:
    d, p = 200, 0.9
    dist = TsiprasDistribution(d, p, 4 / math.sqrt(d))
    x, y = dist.sample(2000, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(
        TensorDataset(x, y), 100, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    threat = LinfBall(2 * dist.eta, domain=None)

    def score(model: nn.Module) -> tuple[float, float]:
        w, b = model.weight.detach()[0].double(), model.bias.detach().double()[0]
        return float(dist.standard_accuracy(w, b)), float(dist.robust_accuracy(w, b, threat))

    return Problem(
        f"synthetic (linear, d={d}, p={p}, eps=2*eta)",
        loader,
        lambda: nn.Linear(d + 1, 1),
        lambda m: torch.optim.Adam(m.parameters(), lr=0.005),  # free-4 oscillates at 0.02
        threat,
        score,
        epochs,
        "exact",
    )


def methods(threat: ThreatModel, steps: int, replays: int) -> dict[str, Callable[[], object]]:
    """Fresh objectives by name (free training keeps state, so each run builds its own)."""
    pgd = PGD(threat, steps=steps)
    return {
        "standard": Standard,
        f"pgd-{steps}": lambda: AdversarialTraining(pgd),
        "trades": lambda: TRADES(pgd, beta=6.0),
        "fast": lambda: FastAdversarialTraining(threat),
        f"free-{replays}": lambda: FreeAdversarialTraining(threat, replays=replays),
    }


def trainer(problem: Problem, objective: object, seed: int = 0) -> RobustTrainer:
    torch.manual_seed(seed)
    model = problem.make_model()
    return RobustTrainer(model, problem.make_optimizer(model), objective, progress=None)  # type: ignore[arg-type]


def time_epochs(problem: Problem, made: dict[str, Callable[[], object]], rounds: int) -> dict:
    """Best epoch time of each method; the methods alternate within each round."""
    runs = {name: trainer(problem, make()) for name, make in made.items()}
    best = dict.fromkeys(runs, math.inf)
    for r in range(rounds + 1):  # round 0 warms up
        for name, tr in runs.items():
            start = time.perf_counter()
            tr.fit(problem.loader, tr.epoch + 1)
            if r:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def run(problem: Problem, steps: int, replays: int, rounds: int) -> dict[str, Result]:
    made = methods(problem.threat, steps, replays)
    times = time_epochs(problem, made, rounds)
    budget = problem.epochs * times[f"pgd-{steps}"]
    results: dict[str, Result] = {}
    for name, make in made.items():
        result = Result(times[name])
        total = max(problem.epochs, int(budget // result.epoch_time))
        tr = trainer(problem, make())
        result.scores.append(problem.score(tr.model))
        for epoch in range(1, total + 1):
            tr.fit(problem.loader, epoch)
            result.scores.append(problem.score(tr.model))
        results[name] = result
    return results


def report(problem: Problem, results: dict[str, Result], steps: int) -> str:
    std = results["standard"].epoch_time
    budget = problem.epochs * results[f"pgd-{steps}"].epoch_time
    e = problem.epochs
    lines = [
        f"{problem.name}: E = {e} epochs; budget = E epochs of PGD-{steps} = "
        f"{budget / std:.1f} standard epochs; robust = {problem.robust_label}",
        f"  {'method':<10} {'ms/epoch':>9} {'x std':>6} | {'clean@E':>7} {'robust@E':>8} | "
        f"{'epochs@B':>8} {'clean@B':>7} {'robust@B':>8}",
    ]
    for name, r in results.items():
        nb = int(budget // r.epoch_time)
        (ce, re), (cb, rb) = r.scores[e], r.scores[nb]
        lines.append(
            f"  {name:<10} {r.epoch_time * 1e3:9.1f} {r.epoch_time / std:6.2f} | {ce:7.3f} "
            f"{re:8.3f} | {nb:8d} {cb:7.3f} {rb:8.3f}"
        )
    fast, pgd = results["fast"], results[f"pgd-{steps}"]
    ratio = fast.epoch_time / std
    gap = pgd.scores[e][1] - fast.scores[e][1]
    verdict = "met" if ratio <= 2.2 and gap <= 0.05 else "NOT met"
    lines.append(
        f"  goal (fast <= 2.2x standard, robust within 0.05 of PGD-{steps} at E): "
        f"{ratio:.2f}x, {gap:+.3f} -> {verdict}"
    )
    return "\n".join(lines)


def plot(path: Path, problems: list[tuple[Problem, dict[str, Result]]], steps: int) -> Path:
    """Robust accuracy against training time (in standard epochs), one panel per problem."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'advtrade[plot]')")
        return path
    fig = Figure(figsize=(6 * len(problems), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    for i, (problem, results) in enumerate(problems):
        ax = fig.add_subplot(1, len(problems), i + 1)
        std = results["standard"].epoch_time
        for name, r in results.items():
            xs = [k * r.epoch_time / std for k in range(len(r.scores))]
            ax.plot(xs, [s[1] for s in r.scores], marker="o", markersize=3, label=name)
        budget = problem.epochs * results[f"pgd-{steps}"].epoch_time / std
        ax.axvline(budget, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("training time (standard epochs)")
        ax.set_ylabel(f"robust accuracy ({problem.robust_label})")
        ax.set_title(problem.name, fontsize="small")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and test examples")
    parser.add_argument("--steps", type=int, default=7, help="PGD steps K for PGD-AT and TRADES")
    parser.add_argument("--replays", type=int, default=4, help="free training's m")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/out/cost.png"))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    e_digits, e_synth = (6, 8) if args.quick else (15, 20)
    rounds = 2 if args.quick else 4
    problems = [
        digits_problem(e_digits, 200 if args.quick else 360),
        synthetic_problem(e_synth),
    ]
    done = []
    for problem in problems:
        results = run(problem, args.steps, args.replays, rounds)
        print(report(problem, results, args.steps), flush=True)
        done.append((problem, results))
    print(f"plot: {plot(args.plot, done, args.steps)}")


if __name__ == "__main__":
    main()
