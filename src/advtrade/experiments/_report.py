"""The report's tables (CSV), figures (PNG, when matplotlib is installed) and ``report.md``.

Everything here reads the results dict of :func:`advtrade.experiments.run`; nothing computes new
numbers, so the Markdown, the CSV files and ``results.json`` always agree.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Sequence
from typing import Any

from ._folder import ReportFolder
from ._models import NORM_LABELS
from ._tradeoff import NORMS

__all__ = ["write_report"]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _eps(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


# --------------------------------------------------------------------------- CSV files


def _write_tables(folder: ReportFolder, results: dict[str, Any]) -> list[str]:
    written = []
    if "synthetic" in results:
        rows: list[list[Any]] = [
            ["setting", "classifier", "standard", "robust", "bound", "x1_share"]
        ]
        for key in ("theorem_2_1", "theorem_2_2"):
            for c in results["synthetic"][key]["classifiers"]:
                rows.append([key, c["name"], c["standard"], c["robust"], c["bound"], c["x1_share"]])
        folder.write_text("synthetic_classifiers.csv", _csv(rows))
        f = results["synthetic"]["theorem_2_1"]["frontier"]
        cols = ("t", "standard", "robust", "bound")
        frontier = [list(cols), *zip(*(f[c] for c in cols))]
        folder.write_text("synthetic_frontier.csv", _csv(frontier))
        written += ["synthetic_classifiers.csv", "synthetic_frontier.csv"]
    if "models" in results:
        rows = [["model", "norm", "train_eps", "train_size", "epochs", "eval_eps", "robust"]]
        for m in results["models"]:
            for norm, curve in m["curves"].items():
                for eps, acc in zip(curve["eval_eps"], curve["robust"]):
                    rows.append([m["key"], norm, m["train_eps"], m["train_size"], m["epochs"]])
                    rows[-1] += [eps, acc]
        folder.write_text("robust_curves.csv", _csv(rows))
        written.append("robust_curves.csv")
    if "tradeoff" in results:
        rows = [["norm", "train_eps", "clean", "eval_eps", "robust"]]
        for norm, t in results["tradeoff"].items():
            for eps, clean, curve in zip(t["train_eps"], t["clean"], t["robust"]):
                rows += [[norm, eps, clean, e, r] for e, r in zip(t["eval_eps"], curve)]
        folder.write_text("tradeoff.csv", _csv(rows))
        written.append("tradeoff.csv")
    if "datasize" in results:
        rows = [["norm", "train_eps", "train_size", "epochs", "clean"]]
        for norm, t in results["datasize"].items():
            for eps, epochs, clean in zip(t["train_eps"], t["epochs"], t["clean"]):
                rows += [[norm, eps, *v] for v in zip(t["train_sizes"], epochs, clean)]
        folder.write_text("datasize.csv", _csv(rows))
        written.append("datasize.csv")
    return written


# --------------------------------------------------------------------------- figures


def _write_figures(folder: ReportFolder, results: dict[str, Any]) -> dict[str, str]:
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
    for norm in NORMS:
        label = NORM_LABELS[norm]
        if "tradeoff" in results:
            t = results["tradeoff"][norm]
            ys = {"clean": t["clean"]}
            for j, e in enumerate(t["eval_eps"]):
                if e in t["train_eps"] and e > 0:
                    ys[f"robust at ε={e:g}"] = [row[j] for row in t["robust"]]
            save(
                f"tradeoff_{norm}",
                t["train_eps"],
                ys,
                xlabel=f"training ε ({label})",
                ylabel="test accuracy",
                title=f"accuracy vs training ε, {label}",
            )
            curves = {f"trained ε={e:g}": row for e, row in zip(t["train_eps"], t["robust"])}
            save(
                f"robust_curves_{norm}",
                t["eval_eps"],
                curves,
                xlabel=f"evaluation ε ({label})",
                ylabel="robust accuracy (PGD)",
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


# --------------------------------------------------------------------------- report.md


def _synthetic_md(s: dict[str, Any], figures: dict[str, str]) -> list[str]:
    a, b = s["theorem_2_1"], s["theorem_2_2"]
    lines = [
        "## 1. The synthetic distribution (exact, closed form)",
        "",
        f"Theorem 2.1 setting: d = {a['d']}, p = {a['p']}, η = 3/√d = {a['eta']:.4f}; robust "
        f"accuracy against ℓ∞ perturbations of ε = 2η = {a['eps']:.4f}. Any classifier with "
        f"standard accuracy 1 − δ has robust accuracy at most {a['ratio']:.3g}·δ "
        f"(99% standard allows at most {_pct(a['bound_at_99'])}% robust).",
        "",
    ]
    rows = [
        [
            c["name"],
            f"{100 * c['standard']:.2f}",
            f"{100 * c['robust']:.2f}",
            f"{100 * c['bound']:.2f}",
            f"{c['x1_share']:.3f}",
        ]
        for c in a["classifiers"]
    ]
    lines += _md_table(["classifier", "standard %", "robust %", "bound %", "x1 share"], rows)
    holds = "holds" if a["frontier"]["bound_holds"] else "is VIOLATED"
    lines += [
        f"Along the frontier w(t) ({len(a['frontier']['t'])} points) the bound {holds}.",
        "",
        f"Theorem 2.2 setting: d = {b['d']}, p = {b['p']}, η = 4/√d = {b['eta']:.4f}, "
        f"ε = 2η = {b['eps']:.4f}: the two training procedures pick different features.",
        "",
    ]
    rows = [
        [
            c["name"],
            f"{100 * c['standard']:.2f}",
            f"{100 * c['robust']:.2f}",
            f"{c['x1_share']:.3f}",
        ]
        for c in b["classifiers"]
    ]
    lines += _md_table(["classifier", "standard %", "robust %", "x1 share"], rows)
    if "synthetic_frontier" in figures:
        lines += [f"![frontier]({figures['synthetic_frontier']})", ""]
    return lines


def _tradeoff_md(t: dict[str, dict[str, Any]], figures: dict[str, str]) -> list[str]:
    lines = [
        "## 2. Clean and robust accuracy vs the training ε",
        "",
        "One CNN per training ε (PGD adversarial training; ε = 0 is standard training). Columns "
        "give test accuracy (%) clean and under a PGD attack at each evaluation ε (the whole "
        "curve comes from one `robust_accuracy_curve`).",
        "",
    ]
    for norm, r in t.items():
        header = ["training ε", "clean", *[f"ε={e:g}" for e in r["eval_eps"] if e > 0]]
        keep = [j for j, e in enumerate(r["eval_eps"]) if e > 0]
        rows = [
            [f"{eps:g}", _pct(clean), *[_pct(row[j]) for j in keep]]
            for eps, clean, row in zip(r["train_eps"], r["clean"], r["robust"])
        ]
        lines += [f"### {NORM_LABELS[norm]}", "", *_md_table(header, rows)]
        for key in (f"tradeoff_{norm}", f"robust_curves_{norm}"):
            if key in figures:
                lines += [f"![{key}]({figures[key]})", ""]
    return lines


def _datasize_md(t: dict[str, dict[str, Any]], figures: dict[str, str]) -> list[str]:
    lines = [
        "## 3. Clean accuracy vs training-set size",
        "",
        "Every model takes the same number of optimiser steps (smaller sets train for more "
        "epochs). The paper: with little data a small ε can raise clean accuracy; with all the "
        "data adversarial training costs clean accuracy.",
        "",
    ]
    for norm, r in t.items():
        header = ["training ε", *[f"n={n}" for n in r["train_sizes"]]]
        rows = [[f"{e:g}", *map(_pct, row)] for e, row in zip(r["train_eps"], r["clean"])]
        lines += [f"### {NORM_LABELS[norm]} (clean accuracy %)", "", *_md_table(header, rows)]
        if f"datasize_{norm}" in figures:
            lines += [f"![datasize_{norm}]({figures[f'datasize_{norm}']})", ""]
    return lines


def _perception_md(p: dict[str, Any]) -> list[str]:
    lines = ["## 4. Perceptually aligned gradients (section 3)", ""]
    if "skipped" in p:
        return [*lines, f"Skipped: {p['skipped']}.", ""]
    lines += [
        f"On {p['n']} test inputs, each driven to the next class by a large-ε targeted "
        f"ℓ2 PGD ({p['steps']} steps); see `advtrade.perception.Alignment` for each score "
        "(cosines: higher means more image-like; hit rates in %).",
        "",
    ]
    keys = list(next(iter(p["scores"].values())))
    rows = [
        [name, *(_pct(s[k]) if k.endswith("rate") else f"{s[k]:.3f}" for k in keys)]
        for name, s in p["scores"].items()
    ]
    lines += _md_table(["model", *keys], rows)
    if p.get("figure"):
        lines += [f"![perception]({p['figure']})", ""]
    elif p.get("figure_note"):
        lines += [f"No figure: {p['figure_note']}.", ""]
    return lines


def _findings(results: dict[str, Any]) -> list[str]:
    """One line per norm and study: the numbers the paper's claims are about."""
    out = []
    for norm, r in results.get("tradeoff", {}).items():
        clean, eps = r["clean"], r["train_eps"]
        best = max(range(len(clean)), key=lambda i: clean[i])
        # Robust accuracy at the largest training budget (or the nearest evaluation ε below it).
        j = max((k for k, e in enumerate(r["eval_eps"]) if e <= eps[-1]), default=0)
        robust = [row[j] for row in r["robust"]]
        out.append(
            f"- {NORM_LABELS[norm]} trade-off: clean accuracy {_pct(clean[0])}% for the standard "
            f"model, {_pct(clean[-1])}% at training ε = {eps[-1]:g} (highest {_pct(clean[best])}% "
            f"at ε = {eps[best]:g}); robust accuracy at ε = {r['eval_eps'][j]:g}: "
            f"{_pct(robust[0])}% for the standard model, {_pct(robust[-1])}% at training "
            f"ε = {eps[-1]:g}."
        )
    for norm, r in results.get("datasize", {}).items():
        if len(r["train_eps"]) < 2:
            continue
        cols = [0, len(r["train_sizes"]) - 1]
        gaps = "; ".join(
            f"n = {r['train_sizes'][c]}: "
            + ", ".join(f"{100 * (row[c] - r['clean'][0][c]):+.1f}" for row in r["clean"][1:])
            for c in cols
        )
        eps = ", ".join(f"{e:g}" for e in r["train_eps"][1:])
        out.append(
            f"- {NORM_LABELS[norm]} data size: clean accuracy of ε = {eps} minus the standard "
            f"model's, in points: {gaps}."
        )
    return ["## Findings", "", *out, ""] if out else []


def _markdown(results: dict[str, Any], run: dict[str, Any], figures: dict[str, str]) -> str:
    s = results["settings"]
    data = results.get("data")
    where = (
        f"{data['name']} ({data['train']} train / {data['test']} test images, "
        f"{'×'.join(map(str, data['input_shape'][1:]))})"
        if data
        else s["data"]
    )
    lines = [
        "# advtrade report: robustness may be at odds with accuracy",
        "",
        f"advtrade {run['advtrade_version']} · data: {where} · seed {s['seed']} · "
        f"{'quick' if s['quick'] else 'full'} run · {run['seconds']['total']:.0f} s on "
        f"{run['threads']} thread(s) · experiments: {', '.join(s['experiments'])}",
        "",
        "Reproduces the trade-off of Tsipras et al., *Robustness May Be at Odds with Accuracy* "
        "(ICLR 2019). All numbers are in `results.json` (the same settings and seed give the "
        "same numbers); timings in `run.json`.",
        "",
        *_findings(results),
    ]
    if "synthetic" in results:
        lines += _synthetic_md(results["synthetic"], figures)
    if "tradeoff" in results:
        lines += _tradeoff_md(results["tradeoff"], figures)
    if "datasize" in results:
        lines += _datasize_md(results["datasize"], figures)
    if "perception" in results:
        lines += _perception_md(results["perception"])
    if not figures and importlib.util.find_spec("matplotlib") is None:
        lines += ["No figures: matplotlib is not installed (pip install 'advtrade[plot]').", ""]
    lines += [
        "## Settings",
        "",
        f"Small CNNs trained with Adam (lr {s['lr']:g}, batch {s['batch_size']}, cosine decay) "
        f"for {s['epochs']} epochs at full size, PGD adversarial training with "
        f"{s['train_steps']} steps and ε warm-up over {s['warmup']} epochs; evaluation with "
        f"{s['eval_steps']}-step PGD. Training ε: ℓ∞ {_eps(s['linf_eps'])}; ℓ2 "
        f"{_eps(s['l2_eps'])}. Evaluation ε: ℓ∞ {_eps(s['linf_eval_eps'])}; ℓ2 "
        f"{_eps(s['l2_eval_eps'])}. Data-size study: n = "
        f"{', '.join(map(str, s['train_sizes']))} and the full training set, at ε = 0 and the "
        "smallest and largest non-zero training ε of each norm.",
        "",
        "## Reproduce",
        "",
        "```bash",
        run["command"],
        "```",
        "",
        "complete: true",
        "",
    ]
    return "\n".join(lines)


def write_report(folder: ReportFolder, results: dict[str, Any], run: dict[str, Any]) -> None:
    """CSV tables, figures, then ``report.md`` (last: it marks a finished report)."""
    _write_tables(folder, results)
    figures = _write_figures(folder, results)
    folder.write_text("report.md", _markdown(results, run, figures))
