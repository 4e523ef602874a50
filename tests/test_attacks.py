"""Attacks against independent truths: closed forms for linear models, properties, invariants."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import advtrade as at
from advtrade.losses import cross_entropy

from .conftest import Counting, SmallCNN, assert_untouched, snapshot

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. exactness on linear models -------------------------------------------------------------


def linear_binary(d: int, seed: int) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = gen(seed)
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=F64))
        model.bias.copy_(torch.randn(1, generator=g, dtype=F64) * 0.1)
    x = 0.3 + 0.4 * torch.rand(64, d, generator=g, dtype=F64)  # away from the [0, 1] boundary
    y = torch.randint(0, 2, (64,), generator=g) * 2 - 1  # labels in {-1, +1}
    return model, x, y


def signed_margin(model: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y.to(F64) * model(x).squeeze(1)


@pytest.mark.parametrize("threat_cls", [at.LinfBall, at.L2Ball])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_reaches_closed_form_worst_case_binary(threat_cls, seed):
    model, x, y = linear_binary(20, seed)
    threat = threat_cls(0.1)
    x_adv = at.PGD(threat, steps=10, random_start=False)(model, x, y)
    expected = signed_margin(model, x, y) - 0.1 * threat.dual_norm(model.weight[0])
    torch.testing.assert_close(signed_margin(model, x_adv, y), expected, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("threat_cls", [at.LinfBall, at.L2Ball])
def test_fgsm_is_exact_in_one_step_for_linear_models(threat_cls):
    model, x, y = linear_binary(30, 5)
    threat = threat_cls(0.05)
    x_adv = at.FGSM(threat)(model, x, y)
    expected = signed_margin(model, x, y) - 0.05 * threat.dual_norm(model.weight[0])
    torch.testing.assert_close(signed_margin(model, x_adv, y), expected, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("threat_cls", [at.LinfBall, at.L2Ball])
def test_pgd_exact_for_multiclass_pairwise_margin(threat_cls):
    """5-class linear model; the loss is the margin toward one fixed other class j, whose worst
    case is (z_y − z_j) − ε‖w_y − w_j‖_* in closed form."""
    g = gen(3)
    model = nn.Linear(12, 5).double()
    x = 0.3 + 0.4 * torch.rand(40, 12, generator=g, dtype=F64)
    y = torch.randint(0, 5, (40,), generator=g)
    j = (y + 1) % 5

    def pairwise(logits, labels):
        return logits.gather(1, ((labels + 1) % 5)[:, None]).squeeze(1) - logits.gather(
            1, labels[:, None]
        ).squeeze(1)

    threat = threat_cls(0.2, domain=None)
    x_adv = at.PGD(threat, steps=12, random_start=False, loss=pairwise)(model, x, y)
    w = model.weight.detach()
    diff = w[y] - w[j]
    clean = (model(x).gather(1, y[:, None]) - model(x).gather(1, j[:, None])).squeeze(1)
    expected = clean - 0.2 * threat.dual_norm(diff)
    got = (model(x_adv).gather(1, y[:, None]) - model(x_adv).gather(1, j[:, None])).squeeze(1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-10)


def test_two_class_logits_and_one_logit_models_agree():
    """A (B, 2) model with logits [0, z] and the one-logit model z are attacked identically."""
    model, x, y = linear_binary(10, 7)

    class TwoLogit(nn.Module):
        def forward(self, inp):
            z = model(inp)
            return torch.cat([torch.zeros_like(z), z], dim=1)

    attack = at.PGD(at.LinfBall(0.1), steps=5)
    a = attack(model, x, y, generator=gen(1))
    b = attack(TwoLogit(), x, y.clamp(min=0), generator=gen(1))
    torch.testing.assert_close(a, b)


def test_targeted_worst_of_takes_per_example_the_first_attack_that_reaches_the_target():
    """Two-class linear model, target = the class it does not predict, gap = z_pred − z_target.
    A targeted ℓ∞ FGSM of ε1 moves x by ε1·sign(Δ) (Δ = w_target − w_pred) and closes the gap
    by G1 = ε1‖Δ‖₁; a targeted ℓ2 FGSM of ε2 moves x by ε2·Δ/‖Δ‖₂ and closes it by G2 = ε2‖Δ‖₂
    = 2·G1. WorstOf([ℓ∞, ℓ2]) returns the ℓ∞ point where gap < G1 (the first attack reaches the
    target, the second never runs there) and the ℓ2 point elsewhere (it reaches the target
    where gap < G2, and gets closer than the ℓ∞ point where neither does)."""
    g = gen(11)
    model = nn.Linear(6, 2).double()
    x = torch.randn(200, 6, generator=g, dtype=F64)
    with torch.no_grad():
        z = model(x)
    pred = z.argmax(1)
    target = 1 - pred
    gap = (z.gather(1, pred[:, None]) - z.gather(1, target[:, None])).squeeze(1)
    w = model.weight.detach()
    delta = w[target] - w[pred]  # (B, 6): ±(w1 − w0)
    g1 = 0.37 * float(gap.median())  # G1 and G2 split the examples three ways, without ties
    assert bool((((gap - g1).abs() > 1e-9) & ((gap - 2 * g1).abs() > 1e-9)).all())
    eps1, eps2 = g1 / float(delta[0].abs().sum()), 2 * g1 / float(delta[0].norm())
    linf = at.FGSM(at.LinfBall(eps1, domain=None), targeted=True)
    l2 = at.FGSM(at.L2Ball(eps2, domain=None), targeted=True)
    counting = Counting(model)
    x_adv = at.WorstOf([linf, l2])(counting, x, target)
    first = gap < g1
    expected = torch.where(
        first[:, None], x + eps1 * delta.sign(), x + eps2 * delta / delta.norm(dim=1, keepdim=True)
    )
    torch.testing.assert_close(x_adv, expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        hit = model(x_adv).argmax(1) == target
    assert torch.equal(hit, gap < 2 * g1)
    assert 0 < int(first.sum()) < int(hit.sum()) < 200  # every case occurs
    # each FGSM: one forward+backward (its step's point is returned unscored); WorstOf scores
    # the point
    assert counting.rows == 2 * 200 + 2 * (200 - int(first.sum()))


# -- 2. properties --------------------------------------------------------------------------


def tiny_model(shape: tuple[int, ...], dtype: torch.dtype, classes: int = 3) -> nn.Module:
    n = 1
    for s in shape[1:]:
        n *= s
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 8), nn.Tanh(), nn.Linear(8, classes)).to(dtype)


shapes = st.sampled_from([(5, 3), (4, 1, 4, 4), (3, 2, 3, 3), (1, 7)])
attack_kinds = st.sampled_from(["pgd", "pgd-restarts", "pgd-early", "fgsm", "worst-of"])


def build(kind: str, threat: at.ThreatModel) -> at.Attack:
    return {
        "pgd": lambda: at.PGD(threat, steps=4),
        "pgd-restarts": lambda: at.PGD(threat, steps=3, restarts=2),
        "pgd-early": lambda: at.PGD(threat, steps=4, early_stop=True),
        "fgsm": lambda: at.FGSM(threat),
        "worst-of": lambda: at.WorstOf([at.FGSM(threat), at.PGD(threat, steps=3)]),
    }[kind]()


@given(
    shape=shapes,
    eps=st.floats(0.0, 2.0),
    per_example=st.booleans(),
    norm=st.sampled_from([at.LinfBall, at.L2Ball]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    kind=attack_kinds,
    seed=st.integers(0, 2**16),
    bounded=st.booleans(),
)
def test_attack_stays_in_ball_and_domain(shape, eps, per_example, norm, dtype, kind, seed, bounded):
    g = gen(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    if not bounded:
        x = x * 6 - 3
    y = torch.randint(0, 3, (shape[0],), generator=g)
    budget = torch.rand(shape[0], generator=g, dtype=torch.float64) * eps if per_example else eps
    threat = norm(budget, domain=(0.0, 1.0) if bounded else None)
    attack = build(kind, threat)
    x_adv = attack(tiny_model(shape, dtype), x, y, generator=gen(seed + 1))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    limit = budget if per_example else torch.full((shape[0],), float(eps), dtype=torch.float64)
    slack = 1e-6 if dtype == torch.float32 else 1e-12
    assert (threat.norm((x_adv - x).double()) <= limit * (1 + slack) + slack).all()
    if bounded:
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    again = attack(tiny_model(shape, dtype), x, y, generator=gen(seed + 1))
    assert torch.equal(x_adv, again)  # same seed, same result


@given(
    shape=shapes,
    eps=st.floats(0.01, 1.0),
    norm=st.sampled_from([at.LinfBall, at.L2Ball]),
    steps=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_loss_never_below_clean_loss_without_random_start(shape, eps, norm, steps, seed):
    g = gen(seed)
    x = torch.rand(shape, generator=g, dtype=F64)
    y = torch.randint(0, 3, (shape[0],), generator=g)
    model = tiny_model(shape, F64)
    for attack in (
        at.PGD(norm(eps), steps=steps, random_start=False, step_size=eps),  # large steps overshoot
        at.FGSM(norm(eps)),
    ):
        x_adv = attack(model, x, y)
        with torch.no_grad():
            assert (cross_entropy(model(x_adv), y) >= cross_entropy(model(x), y)).all()


# -- 3. model hygiene -----------------------------------------------------------------------


def prepared_model(config: str) -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True, dropout=0.3)
    x = torch.rand(16, 1, 8, 8)
    model.train()
    model(x).sum().backward()  # populated .grad and moved BN statistics
    model.head[2].weight.grad = None  # a mix of None and populated grads
    model.features[0].bias.requires_grad_(False)  # a frozen parameter
    if config == "eval":
        model.eval()
    elif config == "frozen-bn":  # a frozen BatchNorm inside a training model
        model.features[1].eval()
    return model


ATTACKS = {
    "pgd": lambda t: at.PGD(t, steps=3),
    "pgd-as-is": lambda t: at.PGD(t, steps=3, mode="as_is"),
    "pgd-restarts-early": lambda t: at.PGD(t, steps=3, restarts=2, early_stop=True),
    "pgd-targeted": lambda t: at.PGD(t, steps=3, targeted=True),
    "fgsm": lambda t: at.FGSM(t),
    "worst-of": lambda t: at.WorstOf([at.FGSM(t), at.PGD(t, steps=2, mode="as_is")]),
}


@pytest.mark.parametrize("config", ["train", "eval", "frozen-bn"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("norm", [at.LinfBall, at.L2Ball])
def test_attack_leaves_model_untouched(config, name, norm):
    model = prepared_model(config)
    before = snapshot(model)
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    x_adv = ATTACKS[name](norm(0.3))(model, x, y, generator=gen(0))
    assert_untouched(before, model)
    assert not x_adv.requires_grad and x_adv.grad_fn is None  # no autograd graph kept alive


def test_model_restored_when_the_model_raises():
    model = prepared_model("train")
    before = snapshot(model)
    calls = {"n": 0}

    def boom(module, inputs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("boom")

    handle = model.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        at.PGD(at.LinfBall(0.1), steps=5)(model, torch.rand(4, 1, 8, 8), torch.zeros(4).long())
    handle.remove()
    assert_untouched(before, model)


def test_eval_mode_is_the_default_and_as_is_keeps_train_mode():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            seen.append(self.training)
            return self.lin(x)

    model = Spy().train()
    x, y = torch.rand(5, 4), torch.zeros(5).long()
    at.PGD(at.LinfBall(0.1), steps=2)(model, x, y)
    assert not any(seen)
    seen.clear()
    at.PGD(at.LinfBall(0.1), steps=2, mode="as_is")(model, x, y)
    assert all(seen) and model.training


# -- 4. strength on a trained CNN -----------------------------------------------------------


@pytest.mark.parametrize(
    "norm,epsilons",
    [
        (at.LinfBall, [0.0, 0.05, 0.1, 0.2, 0.4]),
        (at.L2Ball, [0.0, 0.5, 1.0, 2.0, 4.0]),
    ],
)
def test_robust_accuracy_falls_with_eps_and_reaches_zero(digits_cnn, digits, norm, epsilons):
    x, y = digits.x_test[:200], digits.y_test[:200]
    accs = []
    for eps in epsilons:
        x_adv = at.PGD(norm(eps), steps=20)(digits_cnn, x, y, generator=gen(0))
        with torch.no_grad():
            accs.append((digits_cnn(x_adv).argmax(1) == y).float().mean().item())
    assert accs[0] > 0.9
    assert all(a >= b for a, b in itertools.pairwise(accs)), accs
    assert accs[-1] == 0.0, accs


@pytest.mark.parametrize("threat", [at.LinfBall(0.1), at.L2Ball(0.75)], ids=["linf", "l2"])
def test_success_finds_what_best_finds_in_one_pass_less(digits_cnn, digits, threat) -> None:
    x, y = digits.x_test[:200], digits.y_test[:200]
    model = Counting(digits_cnn)
    out, rows = {}, {}
    for select in ("success", "best", "last"):
        model.reset()
        out[select] = at.PGD(threat, steps=6, select=select)(model, x, y, generator=gen(5))
        rows[select] = model.rows
    assert rows["success"] == rows["last"] == 6 * 200 and rows["best"] == 7 * 200
    with torch.no_grad():
        logits = {k: digits_cnn(v) for k, v in out.items()}
    fooled = {k: v.argmax(1) != y for k, v in logits.items()}
    assert torch.equal(fooled["success"], fooled["best"])  # the same robust accuracy
    assert bool((fooled["last"] <= fooled["success"]).all())  # never fewer than the last iterate
    assert 0 < int(fooled["success"].sum()) < 200
    # examples no iterate fooled: "success" ends at the last iterate, "best" at the max loss
    keep = ~fooled["best"]
    torch.testing.assert_close(out["success"][keep], out["last"][keep])
    loss = {k: cross_entropy(v, y) for k, v in logits.items()}
    assert bool((loss["best"][keep] >= loss["last"][keep] - 1e-6).all())


def test_early_stop_gives_the_same_accuracy_with_less_work(digits_cnn, digits):
    x, y = digits.x_test[:200], digits.y_test[:200]
    model = Counting(digits_cnn)
    results = {}
    for early in (False, True):
        model.reset()
        x_adv = at.PGD(at.LinfBall(0.1), steps=10, early_stop=early)(model, x, y, generator=gen(4))
        with torch.no_grad():
            results[early] = ((digits_cnn(x_adv).argmax(1) == y), model.rows)
    # the model is batch-independent in eval mode, so unfooled trajectories are identical
    assert torch.equal(results[False][0], results[True][0])
    assert results[False][1] == 10 * 200  # exactly one pass per step, no scoring pass
    assert results[True][1] < 0.75 * results[False][1]


def test_restarts_and_worst_of_never_weaken_the_attack(digits_cnn, digits):
    x, y = digits.x_test[:300], digits.y_test[:300]
    threat = at.LinfBall(0.06)

    def robust(x_adv):
        with torch.no_grad():
            return digits_cnn(x_adv).argmax(1) == y

    one = robust(at.PGD(threat, steps=5)(digits_cnn, x, y, generator=gen(9)))
    three = robust(at.PGD(threat, steps=5, restarts=3)(digits_cnn, x, y, generator=gen(9)))
    assert (three <= one).all()  # the first restart is the single run
    fgsm = robust(at.FGSM(threat)(digits_cnn, x, y))
    pgd = robust(at.PGD(threat, steps=5, random_start=False)(digits_cnn, x, y))
    both = robust(
        at.WorstOf([at.FGSM(threat), at.PGD(threat, steps=5, random_start=False)])(digits_cnn, x, y)
    )
    assert (both <= fgsm).all() and (both <= pgd).all()
    assert both.sum() <= min(fgsm.sum(), pgd.sum())


def test_targeted_attack_reaches_its_targets(digits_cnn, digits):
    x = digits.x_test[:100]
    target = (digits.y_test[:100] + 3) % 10
    x_adv = at.PGD(at.L2Ball(4.0), steps=30, targeted=True)(digits_cnn, x, target)
    with torch.no_grad():
        hit = (digits_cnn(x_adv).argmax(1) == target).float().mean().item()
    assert hit > 0.95


def test_per_example_eps_matches_separate_attacks(digits_cnn, digits):
    x, y = digits.x_test[:20], digits.y_test[:20]
    eps = torch.tensor([0.05, 0.1] * 10)
    joint = at.PGD(at.LinfBall(eps), steps=5, random_start=False)(digits_cnn, x, y)
    for value in (0.05, 0.1):
        idx = (eps == value).nonzero().squeeze(1)
        alone = at.PGD(at.LinfBall(value), steps=5, random_start=False)(digits_cnn, x[idx], y[idx])
        torch.testing.assert_close(joint[idx], alone)


def test_attacks_are_immutable_and_with_eps_scales_step():
    attack = at.PGD(at.LinfBall(0.1), steps=4, step_size=0.05)
    with pytest.raises(AttributeError):
        attack.steps = 3  # type: ignore[misc]
    wider = attack.with_eps(0.2)
    assert wider.threat.eps == 0.2 and wider.step_size == pytest.approx(0.1)
    assert attack.threat.eps == 0.1
    assert copy.deepcopy(attack).steps == 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_pick_rows_is_exactly_a_per_example_where(dtype) -> None:
    """The attacks' row selection (a lerp on the CPU) returns bit for bit what torch.where does,
    for points of any magnitude and sign, including zeros."""
    from advtrade.attacks._core import pick_rows

    gen = torch.Generator().manual_seed(0)
    a = (
        torch.randn(64, 3, 5, 5, generator=gen)
        * 10.0 ** torch.randint(-3, 4, (64, 1, 1, 1), generator=gen)
    ).to(dtype)
    b = (torch.randn(64, 3, 5, 5, generator=gen) * 100).to(dtype)
    a[0], b[1] = 0.0, -0.0
    rows = torch.rand(64, generator=gen) < 0.5
    rows[:2] = torch.tensor([False, True])
    expected = torch.where(rows.view(-1, 1, 1, 1), a, b)
    got = pick_rows(rows, a, b)
    assert got.dtype == dtype and torch.equal(got, expected)
