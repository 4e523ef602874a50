"""The report's CSV tables and figures (PNG, when matplotlib is installed), from the results."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from ._folder import ReportFolder
from ._format import csv_text
from ._models import NORM_LABELS
from ._tradeoff import NORMS

__all__ = ["write_figures", "write_tables"]


def write_tables(folder: ReportFolder, results: dict[str, Any]) -> list[str]:
    """The CSV files: synthetic results, every model's curve (one row per seed and budget), and
    the trade-off and data-size tables (mean, min and max over seeds)."""
    written = []
    if "synthetic" in results:
        rows: list[list[Any]] = [
            ["setting", "classifier", "standard", "robust", "bound", "x1_share"]
        ]
        for key in ("theorem_2_1", "theorem_2_2"):
            for c in results["synthetic"][key]["classifiers"]:
                rows.append([key, c["name"], c["standard"], c["robust"], c["bound"], c["x1_share"]])
        folder.write_text("synthetic_classifiers.csv", csv_text(rows))
        f = results["synthetic"]["theorem_2_1"]["frontier"]
        cols = ("t", "standard", "robust", "bound")
        frontier = [list(cols), *zip(*(f[c] for c in cols))]
        folder.write_text("synthetic_frontier.csv", csv_text(frontier))
        written += ["synthetic_classifiers.csv", "synthetic_frontier.csv"]
    if "models" in results:
        rows = [["model", "norm", "train_eps", "train_size", "seed", "epochs", "clean",
                 "eval_eps", "robust"]]
        for m in results["models"]:
            for norm, curve in m["curves"].items():
                for eps, acc in zip(curve["eval_eps"], curve["robust"]):
                    rows.append([m["key"], norm, m["train_eps"], m["train_size"], m["seed"],
                                 m["epochs"], curve["clean"], eps, acc])
        folder.write_text("robust_curves.csv", csv_text(rows))
        written.append("robust_curves.csv")
    if "tradeoff" in results:
        rows = [["norm", "train_eps", "seeds", "clean", "clean_min", "clean_max", "eval_eps",
                 "robust", "robust_min", "robust_max"]]
        for norm, t in results["tradeoff"].items():
            for i, eps in enumerate(t["train_eps"]):
                c = t["clean_spread"][i]
                for e, r in zip(t["eval_eps"], t["robust_spread"][i]):
                    rows.append([norm, eps, len(t["seeds"]), c["mean"], c["min"], c["max"], e,
                                 r["mean"], r["min"], r["max"]])
        folder.write_text("tradeoff.csv", csv_text(rows))
        written.append("tradeoff.csv")
    if "datasize" in results:
        rows = [["norm", "train_eps", "train_size", "epochs", "seeds", "clean", "clean_min",
                 "clean_max"]]
        for norm, t in results["datasize"].items():
            for eps, epochs, spread in zip(t["train_eps"], t["epochs"], t["clean_spread"]):
                for n, ep, c in zip(t["train_sizes"], epochs, spread):
                    rows.append([norm, eps, n, ep, len(t["seeds"]), c["mean"], c["min"], c["max"]])
        folder.write_text("datasize.csv", csv_text(rows))
        written.append("datasize.csv")
    return written


def write_figures(folder: ReportFolder, results: dict[str, Any]) -> dict[str, str]:
    """Line plots via :func:`advtrade.plotting.save_curves`; {} when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        return {}
    from ..plotting import save_curves

    figures: dict[str, str] = {}

    def save(key: str, x: Sequence[float], ys: dict[str, Sequence[float]], **kw: Any) -> None:
        name = f"figures/{key}.png"
        save_curves(folder.path / name, x, ys, ylim=(0.0, 1.02), **kw)
        figures[key] = name

    if "synthetic" in results:
        s = results["synthetic"]["theorem_2_1"]
        f = s["frontier"]
        save(
            "synthetic_frontier",
            f["t"],
            {
                "standard accuracy": f["standard"],
                "robust accuracy": f["robust"],
                "Theorem 2.1 bound on robust": f["bound"],
            },
            xlabel="t: w(t) = t·e1 + (1−t)·(0, 1, …, 1)/√d  (0: averaging, 1: sign(x1))",
            ylabel="accuracy",
            title=f"synthetic, d={s['d']}, p={s['p']}, ℓ∞ ε = 2η = {s['eps']:.3f}",
        )
    short = results.get("evaluation", {}).get("eval_attack", "pgd")
    for norm in NORMS:
        label = NORM_LABELS[norm]
        if "tradeoff" in results:
            t = results["tradeoff"][norm]
            seeds = len(t["seeds"])
            ys = {"clean": t["clean"]}
            spreads = {"clean": t["clean_spread"]}
            for j, e in enumerate(t["eval_eps"]):
                if e in t["train_eps"] and e > 0:
                    ys[f"robust at ε={e:g}"] = [row[j] for row in t["robust"]]
                    spreads[f"robust at ε={e:g}"] = [row[j] for row in t["robust_spread"]]
            bands = {  # the min–max over seeds around each mean
                k: ([c["min"] for c in v], [c["max"] for c in v]) for k, v in spreads.items()
            } if seeds > 1 else None
            save(
                f"tradeoff_{norm}",
                t["train_eps"],
                ys,
                xlabel=f"training ε ({label})",
                ylabel="test accuracy",
                title=f"accuracy vs training ε, {label}"
                + (f" (mean, min–max over {seeds} seeds)" if seeds > 1 else ""),
                bands=bands,
            )
            curves = {f"trained ε={e:g}": row for e, row in zip(t["train_eps"], t["robust"])}
            save(
                f"robust_curves_{norm}",
                t["eval_eps"],
                curves,
                xlabel=f"evaluation ε ({label})",
                ylabel=f"robust accuracy ({short})",
                title=f"robust accuracy vs ε, {label}",
            )
        if "datasize" in results:
            t = results["datasize"][norm]
            ys = {f"ε={e:g}": row for e, row in zip(t["train_eps"], t["clean"])}
            save(
                f"datasize_{norm}",
                t["train_sizes"],
                ys,
                xlabel="training examples",
                ylabel="clean test accuracy",
                title=f"clean accuracy vs data, {label} training",
            )
    return figures
