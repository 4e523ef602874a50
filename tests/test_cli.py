"""The ``advtrade`` command: the quick run's report shows the trade-off, runs are reproducible,
and bad requests fail in one line without leaving a report behind."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import advtrade
from advtrade.experiments import FORMAT
from advtrade.experiments import _cli as cli

needs_digits = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="the digits need scikit-learn"
)

TINY = [
    "--experiment", "synthetic,tradeoff", "--linf-eps", "0,0.3", "--l2-eps", "0,1.5",
    "--epochs", "2", "--train-size", "300", "--eval-attack", "pgd", "--quiet",
]  # fmt: skip


def _run(*args: str) -> int:
    return cli.main(list(args))


def _leftovers(parent: Path) -> list[str]:
    """Hidden partial folders a run may have left next to its report."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick run (about 20-30 s on one CPU thread) shared by the report tests."""
    out = tmp_path_factory.mktemp("quick") / "report"
    assert _run("--quick", "--out", str(out), "--quiet") == 0
    return out


@pytest.fixture(scope="module")
def results(quick: Path) -> dict:
    return json.loads((quick / "results.json").read_text())


# --------------------------------------------------------------------------- the quick report


@needs_digits
def test_quick_report_is_complete(quick: Path, results: dict) -> None:
    assert results["format"] == FORMAT and results["complete"] is True
    for name in ("report.md", "run.json", "tradeoff.csv", "datasize.csv", "robust_curves.csv"):
        assert (quick / name).is_file(), name
    assert (quick / "report.md").read_text().rstrip().endswith("complete: true")
    assert set(results) >= {"synthetic", "tradeoff", "datasize", "perception", "models"}
    assert _leftovers(quick.parent) == []
    run = json.loads((quick / "run.json").read_text())
    assert run["advtrade_version"] == advtrade.__version__ and run["threads"] == 1


@needs_digits
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_quick_report_shows_the_tradeoff(results: dict, norm: str) -> None:
    table = results["tradeoff"][norm]
    assert table["train_eps"][0] == 0.0 and len(table["train_eps"]) >= 2
    clean, last = table["clean"], [curve[-1] for curve in table["robust"]]
    # The standard model is the most accurate and the least robust at the largest budget.
    assert clean[0] > max(clean[1:]), clean
    assert last[0] <= min(last[1:]) and last[0] < max(last[1:]), last
    assert table["eval_eps"][-1] == max(table["eval_eps"]) > 0
    for curve in table["robust"]:  # robust accuracy never rises with ε
        assert all(a >= b for a, b in itertools.pairwise(curve))


@needs_digits
def test_quick_report_synthetic_numbers_are_exact(results: dict) -> None:
    s = results["synthetic"]["theorem_2_1"]
    rows = {row["name"].split()[0]: row for row in s["classifiers"]}
    phi3 = 0.5 * math.erfc(-3 / math.sqrt(2))  # η = 3/√d and ε = 2η: Φ(3) and Φ(−3)
    assert rows["averaging"]["standard"] == pytest.approx(phi3, abs=1e-9)
    assert rows["averaging"]["robust"] == pytest.approx(1 - phi3, abs=1e-9)
    assert rows["robust"]["standard"] == pytest.approx(0.95) == rows["robust"]["robust"]
    assert s["frontier"]["bound_holds"]
    assert all(r <= b + 1e-12 for r, b in zip(s["frontier"]["robust"], s["frontier"]["bound"]))


@needs_digits
def test_quick_report_datasize_and_models(results: dict) -> None:
    full = results["data"]["train"]
    for norm in ("linf", "l2"):
        table = results["datasize"][norm]
        assert table["train_sizes"][-1] == full and len(table["train_sizes"]) >= 2
        assert len(table["clean"]) == len(table["train_eps"])
        epochs = table["epochs"][0]
        assert epochs[0] > epochs[-1]  # smaller sets train longer: equal optimiser steps
    keys = [m["key"] for m in results["models"]]
    assert len(keys) == len(set(keys))
    standard = next(m for m in results["models"] if m["key"] == f"standard-n{full}-s0")
    assert set(standard["curves"]) == {"linf", "l2"}  # one standard model serves both norms
    # the data-size study's smaller models are measured clean only (no attack is spent on
    # them); the full-size ones carry the trade-off's robust curves
    for m in results["models"]:
        curve = next(iter(m["curves"].values()))
        assert 0 < curve["clean"] <= 1 and len(curve["clean_interval"]) == 2
        assert bool(curve["robust"]) == (m["train_size"] == full), m["key"]


@needs_digits
def test_quick_report_figures(quick: Path, results: dict) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib" in (quick / "report.md").read_text()
        return
    for name in ("synthetic_frontier", "tradeoff_linf", "robust_curves_l2", "datasize_linf"):
        png = quick / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    if "skipped" not in results["perception"]:
        assert (quick / results["perception"]["figure"]).is_file()


# --------------------------------------------------------------------------- reproducibility


@needs_digits
def test_same_seed_same_numbers(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(*TINY, "--out", str(a)) == 0
    assert _run(*TINY, "--out", str(b)) == 0
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    assert (a / "tradeoff.csv").read_bytes() == (b / "tradeoff.csv").read_bytes()
    # A second run into the same folder replaces the earlier report, leaving nothing else.
    assert _run("--experiment", "synthetic", "--seed", "1", "--quiet", "--out", str(a)) == 0
    assert json.loads((a / "results.json").read_text())["settings"]["seeds"] == [1]
    assert not (a / "tradeoff.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@needs_digits
def test_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in TINY if a != "--quiet"] + ["--experiment", "tradeoff"]
    assert _run(*args, "--progress", "plain", "--out", str(tmp_path / "r")) == 0
    out, err = capsys.readouterr()
    assert "[1/3] standard" in err and "[3/3]" in err
    assert "report.md" in out


# --------------------------------------------------------------------------- bad requests


def _fails(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    code = _run(*args, "--out", str(out), "--quiet")
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "report.md").exists()
    return err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--experiment", "nonsense"], "nonsense"),
        (["--experiment", "tradeoff,fig9"], "fig9"),
        (["--linf-eps", "0,-0.1"], "-0.1"),
        (["--l2-eps", "0,abc"], "abc"),
        (["--l2-eval-eps", ","], "comma-separated"),
        (["--linf-eps", "0,nan"], "nan"),
        (["--epochs", "0"], "--epochs"),
        (["--seed", "-1"], "seed"),
        (["--data", "cifar"], "cifar"),
        pytest.param(["--train-size", "3"], "--train-size", marks=needs_digits),
        pytest.param(
            ["--experiment", "datasize", "--train-sizes", "5"], "--train-sizes", marks=needs_digits
        ),
    ],
)
def test_bad_input_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    err = _fails(capsys, tmp_path / "report", *args)
    assert needle in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_output_under_a_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    err = _fails(capsys, blocker / "report", "--experiment", "synthetic")
    assert str(blocker) in err and "not a folder" in err
    assert blocker.read_text() == "not a folder"


def test_foreign_folder_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    err = _fails(capsys, mine, "--experiment", "synthetic")
    assert "not empty" in err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    assert _leftovers(tmp_path) == []


@needs_digits
def test_failed_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advtrade.experiments._tradeoff as tradeoff

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tradeoff, "train_model", broken)
    out = tmp_path / "report"
    assert _run(*TINY, "--out", str(out)) == 130
    assert list(tmp_path.iterdir()) == []

    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(tradeoff, "train_model", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # bugs keep their traceback
        _run(*TINY, "--out", str(out))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- entry points


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--version") == 0
    assert capsys.readouterr().out.strip() == f"advtrade {advtrade.__version__}"


def test_python_dash_m_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "advtrade", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"advtrade {advtrade.__version__}"


def test_console_script_version() -> None:
    script = shutil.which("advtrade", path=os.path.dirname(sys.executable))
    script = script or shutil.which("advtrade")
    if script is None:
        pytest.skip("the advtrade console script is not installed")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"advtrade {advtrade.__version__}"


def test_list_parsers() -> None:
    assert cli.eps_list("0.2, 0,8/255,0.2") == (0.0, 8 / 255, 0.2)
    assert cli.size_list("400,50,50") == (50, 400)
    assert cli.experiment_list("all") == ("synthetic", "tradeoff", "datasize", "perception")
    assert cli.experiment_list("tradeoff,synthetic") == ("synthetic", "tradeoff")


# --------------------------------------------------------------------------- report = data


def _md_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(the nearest heading above, header cells, rows of cells) of every Markdown table."""
    tables, heading, block = [], "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            assert set("".join(block[1])) <= {"-"}, block[1]  # the separator row
            tables.append((heading, block[0], block[2:]))
            block = []
        if line.startswith("#"):
            heading = line
    return tables


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _close(text: str, value: float, decimals: int, scale: float) -> bool:
    return abs(float(text) - scale * value) <= 0.5 * 10.0**-decimals + 1e-9


def _shown(
    cell: str,
    value: float,
    decimals: int,
    scale: float = 1.0,
    interval: list[float] | None = None,
) -> bool:
    """The cell shows ``scale * value`` rounded to ``decimals`` places (half a unit of the last
    place, plus float slack, apart) and, when given, the interval as ``[low–high]``."""
    number, _, rest = cell.partition(" ")
    if interval is None:
        return rest == "" and _close(number, value, decimals, scale)
    low, high = rest.strip("[]").split("–")
    return (
        _close(number, value, decimals, scale)
        and _close(low, interval[0], decimals, scale)
        and _close(high, interval[1], decimals, scale)
    )


NORM_OF_LABEL = {"ℓ∞": "linf", "ℓ2": "l2"}


@needs_digits
def test_report_tables_equal_results_json_and_csv(quick: Path, results: dict) -> None:
    """Every number of report.md's tables is the entry of results.json it stands for, rounded as
    shown (accuracies in % to 2 or 1 places, shares and cosines to 3); the CSV files hold the
    same entries unrounded (Python's float repr round-trips)."""
    tables = _md_tables((quick / "report.md").read_text(encoding="utf-8"))
    checked = 0

    # 1. synthetic classifiers: two tables, Theorem 2.1 (with the bound) then 2.2
    synthetic = [t for t in tables if t[0].startswith("## 1.")]
    assert [t[1] for t in synthetic] == [
        ["classifier", "standard %", "robust %", "bound %", "x1 share"],
        ["classifier", "standard %", "robust %", "x1 share"],
    ]
    csv_classifiers = _csv_rows(quick / "synthetic_classifiers.csv")
    for (_, header, rows), key in zip(synthetic, ("theorem_2_1", "theorem_2_2")):
        entries = results["synthetic"][key]["classifiers"]
        csv_rows = [r for r in csv_classifiers if r["setting"] == key]
        assert (
            [r[0] for r in rows]
            == [c["name"] for c in entries]
            == [r["classifier"] for r in csv_rows]
        )
        for row, entry, csv_row in zip(rows, entries, csv_rows):
            for cell, column in zip(row[1:], header[1:]):
                field = {"standard %": "standard", "robust %": "robust", "bound %": "bound"}
                name = field.get(column, "x1_share")
                percent = column.endswith("%")
                assert _shown(cell, entry[name], 2 if percent else 3, 100 if percent else 1)
                assert float(csv_row[name]) == entry[name]
                checked += 1

    # 2. trade-off: one table per norm; clean, then robust at each evaluation ε > 0
    trade_csv = _csv_rows(quick / "tradeoff.csv")
    curves_csv = _csv_rows(quick / "robust_curves.csv")
    models = {m["key"]: m for m in results["models"]}
    trade = [t for t in tables if t[0].startswith("### ") and "clean accuracy" not in t[0]]
    trade = [t for t in trade if t[1][:2] == ["training ε", "clean"]]
    assert sorted(NORM_OF_LABEL[t[0][4:]] for t in trade) == sorted(results["tradeoff"])
    for heading, header, rows in trade:
        norm = NORM_OF_LABEL[heading[4:]]
        r = results["tradeoff"][norm]
        shown_eps = [e for e in r["eval_eps"] if e > 0]
        assert [float(h.removeprefix("ε=")) for h in header[2:]] == shown_eps
        assert [float(row[0]) for row in rows] == r["train_eps"]
        for i, row in enumerate(rows):  # one seed: each accuracy with its binomial interval
            assert _shown(row[1], r["clean"][i], 1, 100, r["clean_interval"][i])
            checked += 1
            for cell, eps in zip(row[2:], shown_eps):
                j = r["eval_eps"].index(eps)
                assert _shown(cell, r["robust"][i][j], 1, 100, r["robust_interval"][i][j])
                checked += 1
        grid = {
            (float(c["train_eps"]), float(c["eval_eps"])): (float(c["clean"]), float(c["robust"]))
            for c in trade_csv
            if c["norm"] == norm
        }
        assert grid == {
            (eps, e): (r["clean"][i], r["robust"][i][j])
            for i, eps in enumerate(r["train_eps"])
            for j, e in enumerate(r["eval_eps"])
        }
        # ... and each row is that model's curve, as robust_curves.csv lists it
        for i, (key,) in enumerate(r["models"]):  # one model per training ε (one seed)
            assert models[key]["curves"][norm]["robust"] == r["robust"][i]
            listed = [c for c in curves_csv if c["model"] == key and c["norm"] == norm]
            assert [float(c["eval_eps"]) for c in listed] == r["eval_eps"]
            assert [float(c["robust"]) for c in listed] == r["robust"][i]
    assert len(curves_csv) == sum(
        len(c["eval_eps"]) for m in results["models"] for c in m["curves"].values()
    )

    # 3. data size: one table per norm, clean accuracy per (training ε, n)
    size_csv = _csv_rows(quick / "datasize.csv")
    sizes = [t for t in tables if t[0].startswith("### ") and "clean accuracy" in t[0]]
    assert sorted(NORM_OF_LABEL[t[0][4:].split()[0]] for t in sizes) == sorted(results["datasize"])
    for heading, header, rows in sizes:
        norm = NORM_OF_LABEL[heading[4:].split()[0]]
        r = results["datasize"][norm]
        assert header[1:] == [f"n={n}" for n in r["train_sizes"]]
        assert [float(row[0]) for row in rows] == r["train_eps"]
        for i, row in enumerate(rows):
            for k, cell in enumerate(row[1:]):
                assert _shown(cell, r["clean"][i][k], 1, 100, r["clean_interval"][i][k])
                checked += 1
        listed = {
            (float(c["train_eps"]), int(c["train_size"])): (int(c["epochs"]), float(c["clean"]))
            for c in size_csv
            if c["norm"] == norm
        }
        assert listed == {
            (eps, n): (r["epochs"][i][k], r["clean"][i][k])
            for i, eps in enumerate(r["train_eps"])
            for k, n in enumerate(r["train_sizes"])
        }

    # 4. perception: hit rates in %, cosines to 3 places
    p = results["perception"]
    perception = [t for t in tables if t[0].startswith("## 4.")]
    if "skipped" in p:
        assert perception == []
    else:
        ((_, header, rows),) = perception
        assert [row[0] for row in rows] == list(p["scores"])
        for row in rows:
            scores = p["scores"][row[0]]
            assert header[1:] == list(scores)
            for cell, key in zip(row[1:], header[1:]):
                rate = key.endswith("rate")
                assert _shown(cell, scores[key], 1 if rate else 3, 100 if rate else 1)
                checked += 1
    assert len(tables) == len(synthetic) + len(trade) + len(sizes) + len(perception)
    assert checked > 50
