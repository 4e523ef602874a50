"""evaluate() and robust_accuracy_curve(): exact counts, worst-of, reports, errors, model state,
and a curve that matches one PGD per ε for a fraction of the passes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advtrade.attacks import APGD, FGSM, PGD, WorstOf
from advtrade.evaluation import (
    WORST_OF,
    EvaluationReport,
    RobustAccuracyCurve,
    evaluate,
    robust_accuracy_curve,
)
from advtrade.threats import L2Ball, LinfBall

from .conftest import Counting, SmallCNN, assert_untouched, snapshot, train_standard


@pytest.fixture(scope="module")
def trained(digits) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The shared CNN at width 4 (these tests run hundreds of attack passes over the whole test
    set), trained normally on digits, and the 449 test examples."""
    torch.manual_seed(0)
    model = train_standard(SmallCNN(width=4), digits.x_train, digits.y_train, epochs=8)
    return model, digits.x_test, digits.y_test


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def attacks() -> dict[str, PGD | None]:
    threat = LinfBall(0.1)
    return {"clean": None, "pgd": PGD(threat, steps=5), "fgsm": FGSM(threat)}


def test_counts_match_a_hand_written_loop(trained) -> None:
    model, x, y = trained
    report = evaluate(model, loader(x, y), attacks(), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    expected = dict.fromkeys(["clean", "pgd", "fgsm", WORST_OF], 0)
    for xb, yb in loader(x, y):
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        survived = ok.clone()
        for name, attack in attacks().items():
            if attack is None:
                continue
            x_adv = attack(model, xb[ok], yb[ok], generator=g)
            with torch.no_grad():
                robust = torch.zeros_like(ok)
                robust[ok] = model(x_adv).argmax(1) == yb[ok]
            expected[name] += int(robust.sum())
            survived &= robust
        expected["clean"] += int(ok.sum())
        expected[WORST_OF] += int(survived.sum())
    assert report.counts == expected
    assert list(report.counts) == ["clean", "pgd", "fgsm", WORST_OF]
    assert report.n == len(y) and report.counts["clean"] == expected["clean"]
    assert report.counts[WORST_OF] == expected[WORST_OF]
    assert report["pgd"] == pytest.approx(expected["pgd"] / len(y))


def test_worst_of_is_per_example_and_below_every_attack(trained) -> None:
    model, x, y = trained
    report = evaluate(model, (x, y), attacks(), generator=torch.Generator().manual_seed(0))
    rows = report.per_example
    assert rows[WORST_OF].shape == y.shape
    assert torch.equal(rows[WORST_OF], rows["clean"] & rows["pgd"] & rows["fgsm"])
    for name in ("pgd", "fgsm"):
        assert bool((rows[WORST_OF] <= rows[name]).all())
        assert bool((rows[name] <= rows["clean"]).all())  # misclassified clean = not robust
    assert report.counts[WORST_OF] <= min(report.counts["pgd"], report.counts["fgsm"])
    assert min(report.counts["pgd"], report.counts["fgsm"]) < report.counts["clean"]


def test_report_table_dict_and_json_round_trip(trained) -> None:
    model, x, y = trained
    report = evaluate(model, (x, y), attacks(), generator=torch.Generator().manual_seed(0))
    text = str(report)
    for name, count in report.counts.items():
        assert name in text and str(count) in text
    data = json.loads(report.to_json())
    assert data["counts"] == report.counts and data["n"] == len(y)
    assert data["accuracy"]["pgd"] == pytest.approx(report["pgd"])
    assert EvaluationReport.from_json(report.to_json()) == report
    assert EvaluationReport.from_dict(report.to_dict()).accuracies == report.accuracies


def test_reports_of_shards_add_up(trained) -> None:
    model, x, y = trained
    fgsm = {"fgsm": FGSM(LinfBall(0.1))}  # deterministic, so shards reproduce the whole
    whole = evaluate(model, (x, y), fgsm)
    parts = evaluate(model, (x[:200], y[:200]), fgsm) + evaluate(model, (x[200:], y[200:]), fgsm)
    assert parts == whole
    assert torch.equal(parts.per_example[WORST_OF], whole.per_example[WORST_OF])
    with pytest.raises(ValueError, match="columns"):
        _ = whole + evaluate(model, (x, y))


def test_clean_only_renamed_clean_and_max_batches(trained) -> None:
    model, x, y = trained
    plain = evaluate(model, loader(x, y))
    assert list(plain.counts) == ["clean"] and plain.robust_accuracy == plain.clean_accuracy
    named = evaluate(model, loader(x, y), {"natural": None, "fgsm": FGSM(LinfBall(0.1))})
    assert list(named.counts) == ["natural", "fgsm", WORST_OF]
    assert named.clean_name == "natural" and named.counts["natural"] == plain.counts["clean"]
    assert named.counts["fgsm"] == named.counts[WORST_OF]
    assert evaluate(model, loader(x, y), max_batches=2, device="cpu").n == 128


def test_per_example_budgets_and_skipped_examples_are_not_attacked(trained) -> None:
    model, x, y = trained
    eps = torch.linspace(0.0, 0.2, len(y))
    report = evaluate(model, (x, y), {"pgd": PGD(LinfBall(eps), steps=5)})
    rows = report.per_example["pgd"]
    assert bool(rows[:20].float().mean() > rows[-20:].float().mean())
    counting = Counting(model)
    evaluate(counting, (x, y), {"fgsm": FGSM(LinfBall(0.1))})
    evaluated = counting.rows
    counting.reset()
    correct = report.per_example["clean"]
    FGSM(LinfBall(0.1))(counting, x[correct], y[correct])
    # one clean pass, the attack on the correct examples only, their adversarial check
    assert evaluated == len(y) + counting.rows + report.counts["clean"]


def test_errors() -> None:
    model = nn.Linear(4, 3)
    x, y = torch.rand(6, 4), torch.randint(0, 3, (6,))
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, loader(x[:0], y[:0]))
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, [])
    with pytest.raises(TypeError, match="mapping"):
        evaluate(model, (x, y), [PGD(LinfBall(0.1))])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Attack or None"):
        evaluate(model, (x, y), {"pgd": "pgd"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="worst-of"):
        evaluate(model, (x, y), {WORST_OF: PGD(LinfBall(0.1))})
    with pytest.raises(ValueError, match="targeted"):
        evaluate(model, (x, y), {"t": PGD(LinfBall(0.1), targeted=True)})
    with pytest.raises(ValueError, match="max_batches"):
        evaluate(model, (x, y), max_batches=0)
    with pytest.raises(TypeError, match="pair"):
        evaluate(model, [(x, y, y)])
    with pytest.raises(ValueError, match="shape"):
        evaluate(model, [(x, y[:3])])


def test_model_state_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model[3].requires_grad_(False)
    model[0].weight.grad = torch.full_like(model[0].weight, 2.0)
    before = snapshot(model)
    x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    evaluate(model, loader(x, y, 8), {"pgd": PGD(LinfBall(0.1), steps=3), "clean": None})
    robust_accuracy_curve(model, (x, y), PGD(L2Ball(1.0), steps=3), [0.1, 0.5])
    assert_untouched(before, model)


EPSILONS = {
    "linf": [0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2],
    "l2": [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0],
}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_curve_matches_one_pgd_per_eps(trained, norm) -> None:
    model, x, y = trained
    threat = LinfBall(0.1) if norm == "linf" else L2Ball(1.0)
    pgd, epsilons = PGD(threat, steps=10, restarts=2), EPSILONS[norm]  # 2 restarts: less noise
    g = torch.Generator().manual_seed(0)
    curve = robust_accuracy_curve(model, loader(x, y, 100), pgd, epsilons, generator=g)
    full = [evaluate(model, (x, y), {"p": pgd.with_eps(e)}, generator=g)["p"] for e in epsilons]
    assert curve.epsilons == tuple(epsilons) and curve.n == len(y)
    assert all(b <= a for a, b in zip(curve.counts, curve.counts[1:]))  # non-increasing
    assert curve.counts[0] <= curve.clean_count
    for ours, reference in zip(curve.accuracies, full):
        assert abs(ours - reference) <= 0.02
    assert curve.rounds <= 4  # ⌈log2(8 + 1)⌉


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_curve_costs_fewer_passes(trained, norm) -> None:
    model, x, y = trained
    threat = LinfBall(0.1) if norm == "linf" else L2Ball(1.0)
    pgd, epsilons = PGD(threat, steps=10), EPSILONS[norm]
    counting = Counting(model)
    robust_accuracy_curve(counting, loader(x, y, 100), pgd, epsilons)
    curve_rows = counting.rows
    counting.reset()
    for e in epsilons:
        evaluate(counting, (x, y), {"p": pgd.with_eps(e)})
    per_eps_rows = counting.rows
    counting.reset()
    pgd.with_eps(epsilons[-1])(counting, x, y)
    assert curve_rows < 0.35 * per_eps_rows
    assert curve_rows < 3 * counting.rows  # one PGD at the largest budget


def test_curve_is_exact_for_a_linear_model() -> None:
    """For a linear binary model under ℓ2 without domain, the robustness radius of an example
    is |margin| / ‖w‖, and PGD finds it, so the curve has a closed form."""
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(5, 1)
    x = torch.randn(400, 5, generator=g)
    with torch.no_grad():
        z = model(x).squeeze(1)
        radius = z.abs() / model.weight.norm()
    y = (z > 0).long()
    y[:40] = 1 - y[:40]  # misclassified: radius 0
    radius[:40] = 0.0
    epsilons = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0]
    attack = PGD(L2Ball(1.0, domain=None), steps=10, random_start=False)
    curve = robust_accuracy_curve(model, (x, y), attack, epsilons, generator=g)
    expected = [int((radius > e).sum()) if e > 0 else 360 for e in epsilons]
    assert curve.clean_count == 360
    assert curve.counts == tuple(expected)
    assert curve.levels is not None and curve.levels.shape == (400,)


def test_curve_with_apgd_report_and_errors(trained) -> None:
    model, x, y = trained
    curve = robust_accuracy_curve(model, (x, y), APGD(LinfBall(0.1), steps=10), [0.2, 0.0, 0.1])
    assert curve.epsilons == (0.0, 0.1, 0.2)  # sorted
    assert curve.counts[0] == curve.clean_count  # ε = 0 is clean accuracy
    assert RobustAccuracyCurve.from_json(curve.to_json()) == curve
    assert "eps=0.1" in str(curve) and "LinfBall" in str(curve)
    fgsm = robust_accuracy_curve(model, (x, y), FGSM(LinfBall(0.1)), [0.05, 0.1])
    assert fgsm.counts[1] <= fgsm.counts[0] <= fgsm.clean_count
    with pytest.raises(ValueError, match="epsilons"):
        robust_accuracy_curve(model, (x, y), PGD(LinfBall(0.1)), [])
    with pytest.raises(ValueError, match="epsilons"):
        robust_accuracy_curve(model, (x, y), PGD(LinfBall(0.1)), [0.1, -0.1])
    union = WorstOf([FGSM(LinfBall(0.1)), FGSM(L2Ball(0.5))])  # no single threat model
    with pytest.raises(TypeError, match="single threat model"):
        robust_accuracy_curve(model, (x, y), union, [0.1])
    # a WorstOf of one norm has one threat model, so the curve searches over its ε
    both = robust_accuracy_curve(model, (x, y), WorstOf([FGSM(LinfBall(0.1))]), [0.05, 0.1])
    assert both.counts == fgsm.counts
