"""``report.md``: what the run measured, with its uncertainty, and which of the paper's claims
the numbers support.

Everything here reads the results dict of :func:`advtrade.experiments.run`; nothing computes new
numbers, so the Markdown, the CSV files and ``results.json`` always agree. A finding claims an
effect only when the uncertainty ranges of the two numbers it compares do not overlap: min–max
over seeds, or with one seed the binomial 95% interval of the test-set accuracy.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ._folder import ReportFolder
from ._format import cell, eps_text, md_table, pct, range_of, separated
from ._models import NORM_LABELS
from ._tables import write_figures, write_tables

__all__ = ["write_report"]


def _synthetic_md(s: dict[str, Any], figures: dict[str, str]) -> list[str]:
    a, b = s["theorem_2_1"], s["theorem_2_2"]
    lines = [
        "## 1. The synthetic distribution (exact, closed form)",
        "",
        f"Theorem 2.1 setting: d = {a['d']}, p = {a['p']}, η = 3/√d = {a['eta']:.4f}; robust "
        f"accuracy against ℓ∞ perturbations of ε = 2η = {a['eps']:.4f}. Any classifier with "
        f"standard accuracy 1 − δ has robust accuracy at most {a['ratio']:.3g}·δ "
        f"(99% standard allows at most {pct(a['bound_at_99'])}% robust).",
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
    lines += md_table(["classifier", "standard %", "robust %", "bound %", "x1 share"], rows)
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
    lines += md_table(["classifier", "standard %", "robust %", "x1 share"], rows)
    if "synthetic_frontier" in figures:
        lines += [f"![frontier]({figures['synthetic_frontier']})", ""]
    return lines


def _uncertainty_note(seeds: list[int]) -> str:
    if len(seeds) > 1:
        return (
            f"Cells are the mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}) with the "
            "min–max over seeds in parentheses."
        )
    return (
        "One seed: cells give the test accuracy and, in brackets, its binomial 95% interval "
        "(the uncertainty of a finite test set; a second seed would also show the training "
        "noise: pass --seeds 0,1,2)."
    )



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
        [name, *(pct(s[k]) if k.endswith("rate") else f"{s[k]:.3f}" for k in keys)]
        for name, s in p["scores"].items()
    ]
    lines += md_table(["model", *keys], rows)
    if p.get("figure"):
        lines += [f"![perception]({p['figure']})", ""]
    elif p.get("figure_note"):
        lines += [f"No figure: {p['figure_note']}.", ""]
    return lines



def _tradeoff_md(t: dict[str, dict[str, Any]], attack: str, figures: dict[str, str]) -> list[str]:
    first = next(iter(t.values()))
    lines = [
        "## 2. Clean and robust accuracy vs the training ε",
        "",
        "One model per training ε (PGD adversarial training; ε = 0 is standard training). Columns "
        f"give test accuracy (%) clean and under **{attack}** at each evaluation ε (the whole "
        "curve comes from one `robust_accuracy_curve`). " + _uncertainty_note(first["seeds"]),
        "",
    ]
    for norm, r in t.items():
        header = ["training ε", "clean", *[f"ε={e:g}" for e in r["eval_eps"] if e > 0]]
        keep = [j for j, e in enumerate(r["eval_eps"]) if e > 0]
        clean_iv = r.get("clean_interval") or [None] * len(r["train_eps"])
        robust_iv = r.get("robust_interval") or [[None] * len(r["eval_eps"])] * len(r["train_eps"])
        rows = [
            [
                f"{eps:g}",
                cell(r["clean_spread"][i], clean_iv[i]),
                *[cell(r["robust_spread"][i][j], robust_iv[i][j]) for j in keep],
            ]
            for i, eps in enumerate(r["train_eps"])
        ]
        lines += [f"### {NORM_LABELS[norm]}", "", *md_table(header, rows)]
        for key in (f"tradeoff_{norm}", f"robust_curves_{norm}"):
            if key in figures:
                lines += [f"![{key}]({figures[key]})", ""]
    return lines


def _datasize_md(t: dict[str, dict[str, Any]], figures: dict[str, str]) -> list[str]:
    first = next(iter(t.values()))
    lines = [
        "## 3. Clean accuracy vs training-set size",
        "",
        "Every model takes the same number of optimiser steps (smaller sets train for more "
        "epochs). The paper: with little data a small ε can raise clean accuracy; with all the "
        "data adversarial training costs clean accuracy (whether this run supports either is in "
        "the findings above). " + _uncertainty_note(first["seeds"]),
        "",
    ]
    for norm, r in t.items():
        header = ["training ε", *[f"n={n}" for n in r["train_sizes"]]]
        iv = r.get("clean_interval") or [[None] * len(r["train_sizes"])] * len(r["train_eps"])
        rows = [
            [f"{e:g}", *[cell(c, v) for c, v in zip(row, iv_row)]]
            for e, row, iv_row in zip(r["train_eps"], r["clean_spread"], iv)
        ]
        lines += [f"### {NORM_LABELS[norm]} (clean accuracy %)", "", *md_table(header, rows)]
        if f"datasize_{norm}" in figures:
            lines += [f"![datasize_{norm}]({figures[f'datasize_{norm}']})", ""]
    return lines


def _compare(a: tuple[dict[str, Any], Any], b: tuple[dict[str, Any], Any]) -> tuple[float, str]:
    """Difference b − a in points, and whether it exceeds the uncertainty."""
    delta = 100 * (b[0]["mean"] - a[0]["mean"])
    beyond = separated(range_of(*a), range_of(*b))
    return delta, "beyond the uncertainty" if beyond else "within the uncertainty"


def _tradeoff_findings(norm: str, r: dict[str, Any]) -> list[str]:
    n = len(r["train_eps"])
    clean = [(r["clean_spread"][i], (r.get("clean_interval") or [None] * n)[i]) for i in range(n)]
    eps = r["train_eps"]
    # robust accuracy at the middle non-zero evaluation budget, a choice that does not look at
    # the numbers: at the smallest budgets every model is robust, at the largest none is
    nonzero = [k for k, e in enumerate(r["eval_eps"]) if e > 0] or [0]
    j = nonzero[len(nonzero) // 2]
    riv = r.get("robust_interval")
    robust = [(r["robust_spread"][i][j], None if riv is None else riv[i][j]) for i in range(n)]
    d_clean, c_note = _compare(clean[0], clean[-1])
    d_robust, r_note = _compare(robust[0], robust[-1])
    label = NORM_LABELS[norm]
    out = [
        f"- {label} trade-off: training at ε = {eps[-1]:g} changes clean accuracy by "
        f"{d_clean:+.1f} points ({pct(clean[0][0]['mean'])}% → {pct(clean[-1][0]['mean'])}%, "
        f"{c_note}) and robust accuracy at ε = {r['eval_eps'][j]:g} by {d_robust:+.1f} points "
        f"({pct(robust[0][0]['mean'])}% → {pct(robust[-1][0]['mean'])}%, {r_note})."
    ]
    if n > 2:
        best = max(range(1, n), key=lambda i: clean[i][0]["mean"])
        d_best, b_note = _compare(clean[0], clean[best])
        if d_best > 0:
            verdict = "a gain" if b_note.startswith("beyond") else "not an effect this run can show"
            out.append(
                f"- {label}: the most accurate robust model (ε = {eps[best]:g}) is "
                f"{d_best:+.1f} points from the standard model's clean accuracy, {b_note}: "
                f"{verdict}."
            )
    return out


def _datasize_findings(norm: str, r: dict[str, Any]) -> list[str]:
    if len(r["train_eps"]) < 2:
        return []
    iv = r.get("clean_interval")

    def at(i: int, c: int) -> tuple[dict[str, Any], Any]:
        return r["clean_spread"][i][c], None if iv is None else iv[i][c]

    small_n, full_n = r["train_sizes"][0], r["train_sizes"][-1]
    d_small, n_small = _compare(at(0, 0), at(1, 0))
    d_full, n_full = _compare(at(0, -1), at(len(r["train_eps"]) - 1, -1))
    gain = d_small > 0 and n_small.startswith("beyond")
    cost = d_full < 0 and n_full.startswith("beyond")
    verdict = {
        (True, True): "the run supports both halves of the paper's claim",
        (False, True): "the run supports the cost at full size but shows no small-data gain",
        (True, False): "the run shows a small-data gain but no cost at full size",
        (False, False): "the run supports neither half of the paper's claim at this size",
    }[(gain, cost)]
    label = NORM_LABELS[norm]
    return [
        f"- {label} data size: with n = {small_n} the smallest ε ({r['train_eps'][1]:g}) changes "
        f"clean accuracy by {d_small:+.1f} points ({n_small}); with n = {full_n} the largest ε "
        f"({r['train_eps'][-1]:g}) by {d_full:+.1f} points ({n_full}): {verdict}."
    ]


def _findings(results: dict[str, Any]) -> list[str]:
    out = []
    for norm, r in results.get("tradeoff", {}).items():
        out += _tradeoff_findings(norm, r)
    for norm, r in results.get("datasize", {}).items():
        out += _datasize_findings(norm, r)
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
    attack = results.get("evaluation", {}).get("attack", "")
    seeds = ", ".join(map(str, s["seeds"]))
    lines = [
        "# advtrade report: robustness may be at odds with accuracy",
        "",
        f"advtrade {run['advtrade_version']} · data: {where} · seed(s) {seeds} · "
        f"{'quick' if s['quick'] else 'full'} run · {run['seconds']['total']:.0f} s on "
        f"{run['threads']} thread(s), device {results.get('device', 'cpu')} · experiments: "
        f"{', '.join(s['experiments'])}",
        "",
        "Reproduces the trade-off of Tsipras et al., *Robustness May Be at Odds with Accuracy* "
        "(ICLR 2019). All numbers are in `results.json`, timings in `run.json`, the trained "
        "models' weights in `models/`. The same settings and seeds give the same numbers on the "
        "same machine, thread count and device; elsewhere floating-point differences move "
        "accuracies by about a point, so read them with their spread."
        + (f" Every robust accuracy is measured with {attack}." if attack else ""),
        "",
        *_findings(results),
    ]
    if "synthetic" in results:
        lines += _synthetic_md(results["synthetic"], figures)
    if "tradeoff" in results:
        lines += _tradeoff_md(results["tradeoff"], attack, figures)
    if "datasize" in results:
        lines += _datasize_md(results["datasize"], figures)
    if "perception" in results:
        lines += _perception_md(results["perception"])
    if not figures and importlib.util.find_spec("matplotlib") is None:
        lines += ["No figures: matplotlib is not installed (pip install 'advtrade[plot]').", ""]
    optimizer = "Adam" if s["optimizer"] == "adam" else "SGD with momentum 0.9"
    lines += [
        "## Settings",
        "",
        f"{s['model']} models trained with {optimizer} (lr {s['lr']:g}, weight decay "
        f"{s['weight_decay']:g}, batch {s['batch_size']}, cosine decay"
        f"{', random crop and flip' if s['augment'] else ''}) for {s['epochs']} epochs at full "
        f"size, PGD adversarial training with {s['train_steps']} steps and ε warm-up over "
        f"{s['warmup']} epochs; evaluation with {attack or s['eval_attack']}. Training ε: ℓ∞ "
        f"{eps_text(s['linf_eps'])}; ℓ2 {eps_text(s['l2_eps'])}. Evaluation ε: ℓ∞ "
        f"{eps_text(s['linf_eval_eps'])}; ℓ2 {eps_text(s['l2_eval_eps'])}. Data-size study: n "
        f"= {', '.join(map(str, s['train_sizes'])) or '–'} and the full training set, at ε = 0 "
        "and the smallest and largest non-zero training ε of each norm.",
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
    write_tables(folder, results)
    figures = write_figures(folder, results)
    folder.write_text("report.md", _markdown(results, run, figures))
