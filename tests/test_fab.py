"""FAB against independent truths: minimal distances of linear models in closed form, the
hyperplane ∩ box projection against brute-force solvers, and the attack contract."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import advtrade as at
from advtrade.attacks import FAB
from advtrade.attacks import _hyperplane as hyperplane
from advtrade.attacks._hyperplane import (
    _solve_breakpoints,
    _sorted_breakpoints,
    project_onto_hyperplane,
)

from .conftest import SmallCNN

F64 = torch.float64
INF = math.inf


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def norm_of(threat: at.ThreatModel, delta: torch.Tensor) -> torch.Tensor:
    return threat.norm(delta)


# -- 1. closed forms: the minimal distance of linear models ------------------------------------


def linear_model(d: int, classes: int, seed: int) -> nn.Linear:
    g = gen(seed)
    model = nn.Linear(d, classes).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, d, generator=g, dtype=F64))
        model.bias.copy_(torch.randn(classes, generator=g, dtype=F64) * 0.1)
    return model


def pairwise_distance(model: nn.Linear, x: torch.Tensor, y: torch.Tensor, p: float):
    """(B, C): (z_y − z_j) / ‖w_y − w_j‖_* — the least ℓp move that lets class j tie y — with
    +inf at j = y."""
    dual = 1.0 if p == INF else 2.0
    with torch.no_grad():
        z = model(x)
        w = model.weight
        margin = z.gather(1, y[:, None]) - z
        diff = torch.linalg.vector_norm(w[y][:, None, :] - w[None], ord=dual, dim=2)
    dist = margin / diff
    return dist.scatter(1, y[:, None], INF)


@pytest.mark.parametrize("threat_cls", [at.LinfBall, at.L2Ball])
@pytest.mark.parametrize("target_classes", [None, 1])
def test_binary_linear_model_exact_minimal_distance(threat_cls, target_classes):
    """2 logits: the least ℓ∞ / ℓ2 distance to misclassification is |margin| / ‖w₀ − w₁‖₁ or ₂.
    With ε (per example) just above it every example is fooled at about that distance, and
    just below it the clean input comes back."""
    model = linear_model(16, 2, seed=1)
    g = gen(1)
    x = torch.randn(40, 16, generator=g, dtype=F64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = 1 - y[:5]  # five misclassified examples: they must come back unchanged
    threat = threat_cls(1.0, domain=None)
    dist = pairwise_distance(model, x, y, threat.p).amin(1)
    assert bool((dist[5:] > 0).all()) and bool((dist[:5] <= 0).all())
    attack = FAB(
        threat.with_eps(torch.where(dist > 0, 1.03 * dist, 1.0)),
        steps=10,
        target_classes=target_classes,
    )
    x_adv = attack(model, x, y)
    assert torch.equal(x_adv[:5], x[:5])
    found = norm_of(threat, x_adv - x)[5:]
    assert bool((model(x_adv[5:]).argmax(1) != y[5:]).all())
    assert bool((found >= dist[5:] * (1 - 1e-9)).all())  # never below the true minimum
    assert bool((found <= dist[5:] * 1.02).all())  # FAB overshoots by ~0.5% on linear models
    below = FAB(
        threat.with_eps(torch.where(dist > 0, 0.97 * dist, 1.0)),
        steps=10,
        target_classes=target_classes,
    )
    assert torch.equal(below(model, x, y), x)


def test_one_logit_and_two_logit_binary_models_agree():
    model = linear_model(6, 1, seed=2)
    g = gen(2)
    x = torch.rand(20, 6, generator=g, dtype=F64)
    with torch.no_grad():
        y = (model(x)[:, 0] > 0).long() * 2 - 1  # ±1 labels, all correct

    class TwoLogit(nn.Module):
        def forward(self, inp):
            z = model(inp)
            return torch.cat([torch.zeros_like(z), z], dim=1)

    attack = FAB(at.L2Ball(0.3), steps=8)
    torch.testing.assert_close(attack(model, x, y), attack(TwoLogit(), x, y.clamp(min=0)))


@pytest.mark.parametrize("threat_cls", [at.LinfBall, at.L2Ball])
@pytest.mark.parametrize("target_classes", [None, 4])
def test_multiclass_linear_model_pairwise_margin(threat_cls, target_classes):
    """5 classes: the least distance to misclassification is min_j (z_y − z_j)/‖w_y − w_j‖_*.
    FAB reaches it within a few percent; FAB-T over all 4 wrong classes as well."""
    model = linear_model(12, 5, seed=3)
    g = gen(3)
    x = torch.randn(60, 12, generator=g, dtype=F64)
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = threat_cls(1.0, domain=None)
    dist = pairwise_distance(model, x, y, threat.p).amin(1)
    if target_classes is None:
        # a generous ε: the nearest point found is near the minimum (FAB-T instead keeps the
        # first target's point within ε, which need not be the nearest boundary's)
        wide = FAB(threat.with_eps(2.0 * dist), steps=20)
        x_adv = wide(model, x, y)
        found = norm_of(threat, x_adv - x)
        assert bool((model(x_adv).argmax(1) != y).all())
        assert bool((found >= dist * (1 - 1e-9)).all())
        assert bool((found <= dist * 1.03).all())
    tight = FAB(threat.with_eps(1.03 * dist), steps=20, target_classes=target_classes)
    x_adv = tight(model, x, y)
    assert bool((model(x_adv).argmax(1) != y).all())
    assert bool((norm_of(threat, x_adv - x) >= dist * (1 - 1e-9)).all())
    below = FAB(threat.with_eps(0.97 * dist), steps=20, target_classes=target_classes)
    assert torch.equal(below(model, x, y), x)


def test_fab_t_with_one_target_reaches_that_targets_boundary():
    """With one target, FAB-T follows the boundary to the most likely wrong class at the clean
    input: fooled within 1.03× that pairwise distance."""
    model = linear_model(12, 5, seed=4)
    x = torch.randn(60, 12, generator=gen(4), dtype=F64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    top_wrong = z.scatter(1, y[:, None], -INF).argmax(1)
    pair = pairwise_distance(model, x, y, 2.0).gather(1, top_wrong[:, None]).squeeze(1)
    attack = FAB(at.L2Ball(1.03 * pair, domain=None), steps=20, target_classes=1)
    x_adv = attack(model, x, y)
    assert bool((model(x_adv).argmax(1) != y).all())


def test_evaluate_counts_the_closed_form_robust_examples():
    """evaluate() accepts FAB-T (it is untargeted in the contract's sense) and its robust
    accuracy sits between the closed-form counts at 0.99ε and ε."""
    model = linear_model(12, 5, seed=5)
    x = torch.randn(80, 12, generator=gen(5), dtype=F64)
    with torch.no_grad():
        y = model(x).argmax(1)
    dist = pairwise_distance(model, x, y, INF).amin(1)
    eps = float(dist.median())
    attack = FAB(at.LinfBall(eps, domain=None), steps=20, target_classes=4)
    assert attack.targeted is False
    report = at.evaluate(model, (x, y), {"fab-t": attack})
    robust = report["fab-t"] * len(y)
    assert int((dist > eps).sum()) <= round(robust) <= int((dist > 0.99 * eps).sum())


# -- 2. the projection onto hyperplane ∩ box ---------------------------------------------------


def random_problems(seed: int, n: int, rows: int, bounded: bool):
    """Points in [0, 1]^n (some on the faces), weights with some zeros, and offsets b of which
    about half put the plane out of the box's reach."""
    g = gen(seed)
    t = torch.rand(rows, n, generator=g, dtype=F64)
    on_face = torch.rand(rows, n, generator=g) < 0.2
    t = torch.where(on_face, (torch.rand(rows, n, generator=g) < 0.5).to(F64), t)
    magnitude = 10 ** (4 * torch.rand(rows, 1, generator=g, dtype=F64) - 2)
    w = torch.randn(rows, n, generator=g, dtype=F64) * magnitude
    w = torch.where(torch.rand(rows, n, generator=g) < 0.2, 0.0, w)
    w[0] = 0.0  # a row with no direction at all
    low, high = w.clamp(max=0).sum(1), w.clamp(min=0).sum(1)  # ⟨w, z⟩ over the box
    spread = (high - low).clamp_min(1e-3)
    u = torch.rand(rows, generator=g, dtype=F64)
    b = low - 0.5 * spread + 2 * spread * u
    if not bounded:
        b = (w * t).sum(1) + spread * (2 * u - 1)
    return t, w, b


def brute_force(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, p: float, bounded: bool):
    """Bisection on the Lagrange multiplier, one row at a time: the move is
    clip(−α·w) for ℓ2 and −sign(w)·min(λ, room) for ℓ∞, with α or λ found by 200 bisections
    on the (monotone) amount the move closes of the gap to the plane. Returns (d, feasible)."""
    out, feasible = torch.zeros_like(t), torch.zeros(t.shape[0], dtype=torch.bool)
    for i in range(t.shape[0]):
        ti, wi = t[i], w[i]
        c = float((wi * ti).sum() - b[i])
        s = wi * (1.0 if c >= 0 else -1.0)  # now ⟨s, d⟩ must equal −|c|
        gap = abs(c)
        room = torch.where(s > 0, ti, 1.0 - ti) if bounded else torch.full_like(ti, INF)

        def move(a, s=s, room=room):
            size = torch.full_like(room, a) if p == INF else a * s.abs()
            return torch.where(s != 0, -torch.sign(s) * torch.minimum(size, room), 0.0)

        def closes(a, s=s, move=move):
            return float(-(s * move(a)).sum())

        if float(s.abs().sum()) == 0.0:  # no direction: nothing moves
            feasible[i] = gap == 0.0
            continue
        if closes(INF) < gap:  # the plane is out of the box's reach: the nearest corner
            out[i] = move(INF)
            continue
        lo, hi = 0.0, 1.0
        while closes(hi) < gap:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if closes(mid) < gap else (lo, mid)
        out[i], feasible[i] = move(hi), True
    return out, feasible


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 9),
    p=st.sampled_from([INF, 2.0]),
    bounded=st.booleans(),
)
def test_projection_matches_brute_force(seed, n, p, bounded):
    t, w, b = random_problems(seed, n, rows=12, bounded=bounded)
    domain = (0.0, 1.0) if bounded else None
    d = project_onto_hyperplane(t, w, b, p=p, domain=domain)
    expected, feasible = brute_force(t, w, b, p, bounded)
    scale = w.abs().amax(1).clamp_min(1e-12)
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-9)
    # feasible rows land on the plane and in the box; infeasible ones on the box's nearest corner
    landed = ((w * (t + d)).sum(1) - b) / scale
    assert bool((landed[feasible].abs() < 1e-9).all())
    if bounded:
        assert bool(((t + d) >= -1e-12).all() and ((t + d) <= 1 + 1e-12).all())
    assert bool(torch.isfinite(d).all())
    # batched = one row at a time
    for i in (0, t.shape[0] - 1):
        one = project_onto_hyperplane(t[i : i + 1], w[i : i + 1], b[i : i + 1], p=p, domain=domain)
        torch.testing.assert_close(one, d[i : i + 1], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_linf_projection_is_optimal_by_linear_programming(seed):
    """The ℓ∞ projection is an LP: min s subject to |d_i| ≤ s, ⟨w, t + d⟩ = b, 0 ≤ t + d ≤ 1."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    t, w, b = random_problems(seed, 6, rows=20, bounded=True)
    d = project_onto_hyperplane(t, w, b, p=INF)
    for i in range(t.shape[0]):
        n = t.shape[1]
        cost = [0.0] * n + [1.0]
        ub_rows = [[(1.0 if j == k else 0.0) for j in range(n)] + [-1.0] for k in range(n)]
        ub_rows += [[(-1.0 if j == k else 0.0) for j in range(n)] + [-1.0] for k in range(n)]
        eq = [[*w[i].tolist(), 0.0]]
        rhs = [float(b[i] - (w[i] * t[i]).sum())]
        bounds = [(float(-t[i, k]), float(1 - t[i, k])) for k in range(n)] + [(0, None)]
        res = scipy_optimize.linprog(
            cost,
            A_ub=ub_rows,
            b_ub=[0.0] * (2 * n),
            A_eq=eq,
            b_eq=rhs,
            bounds=bounds,
            method="highs",
        )
        if res.status == 0:
            assert float(d[i].abs().max()) == pytest.approx(res.fun, rel=1e-6, abs=1e-9)
        else:  # the plane misses the box: every weighted coordinate at its face towards it
            assert res.status == 2
            c = float((w[i] * t[i]).sum() - b[i])
            corner = torch.where(w[i] * c > 0, 0.0, 1.0)
            moved = torch.where(w[i] != 0, corner, t[i])
            torch.testing.assert_close(t[i] + d[i], moved)


def test_projection_closed_forms_without_a_box():
    w = torch.tensor([[3.0, -4.0, 0.0]], dtype=F64)
    t = torch.zeros(1, 3, dtype=F64)
    b = torch.tensor([10.0], dtype=F64)
    # ℓ2: along w, b/‖w‖² · w; ℓ∞: every weighted coordinate by b/‖w‖₁
    torch.testing.assert_close(
        project_onto_hyperplane(t, w, b, p=2.0, domain=None),
        torch.tensor([[1.2, -1.6, 0.0]], dtype=F64),
    )
    torch.testing.assert_close(
        project_onto_hyperplane(t, w, b, p=INF, domain=None),
        torch.tensor([[10 / 7, -10 / 7, 0.0]], dtype=F64),
    )


def h_of(v: torch.Tensor, rho: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Σ_i v_i·min(λ, ρ_i) per row: the function both breakpoint solvers invert."""
    return (v * torch.minimum(lam[:, None], rho)).sum(1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), ties=st.booleans())
def test_newton_and_sorted_breakpoint_solvers_agree_and_solve(seed, n, ties):
    """Newton's solve (and its sorted fallback, forced with ``newton_steps=0``) returns the
    λ whose h(λ) = c, the same as the sorted solve, and +inf exactly where c > h(∞)."""
    g = gen(seed)
    rows = 16
    v = torch.rand(rows, n, generator=g, dtype=F64)
    v[v < 0.2] = 0.0  # coordinates that carry no weight
    rho = torch.rand(rows, n, generator=g, dtype=F64)
    if ties:  # many equal breakpoints and coordinates already at their face
        rho = (rho * 4).floor() / 4
    top = (v * rho).sum(1)
    c = top * torch.rand(rows, generator=g, dtype=F64) * 1.2  # about 1 in 6 rows infeasible
    c[0] = 0.0
    newton = _solve_breakpoints(v, rho, c)
    fallback = _solve_breakpoints(v, rho, c, newton_steps=0)
    sorted_ = _sorted_breakpoints(v, rho, c)
    feasible = c <= top
    assert torch.equal(torch.isinf(newton), ~feasible)
    assert torch.equal(torch.isinf(sorted_), ~feasible)
    torch.testing.assert_close(newton, sorted_, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fallback, sorted_, rtol=0, atol=0)
    torch.testing.assert_close(h_of(v, rho, newton)[feasible], c[feasible], rtol=1e-12, atol=1e-12)
    assert bool((newton[feasible] >= 0).all())


def test_newton_breakpoint_solve_that_needs_many_steps_and_its_fallback(monkeypatch):
    """Breakpoints 1, 2, …, 30 with unit weights and c = h(∞) − 0.5: each Newton step only
    halves the distance to the last segment, so Newton lands on the root 29.5 at step 6 and
    stands still at step 7; capped earlier, the row still moving finishes on the sorted solve,
    with the same answer."""
    rho = torch.arange(1.0, 31.0, dtype=F64)[None]
    v = torch.ones_like(rho)
    c = torch.tensor([float(rho.sum()) - 0.5], dtype=F64)
    expected = torch.tensor([29.5], dtype=F64)
    calls = []

    def counted(*args):
        calls.append(args[0].shape[0])
        return _sorted_breakpoints(*args)

    monkeypatch.setattr(hyperplane, "_sorted_breakpoints", counted)
    torch.testing.assert_close(_solve_breakpoints(v, rho, c), expected, rtol=0, atol=1e-12)
    assert calls == []  # Newton alone within its default budget
    for cap in (3, 6):
        torch.testing.assert_close(
            _solve_breakpoints(v, rho, c, newton_steps=cap), expected, rtol=0, atol=1e-12
        )
    assert calls == [1, 1]  # the row was still moving after 3 and after 6 steps
    torch.testing.assert_close(
        _solve_breakpoints(v, rho, c, newton_steps=7), expected, rtol=0, atol=1e-12
    )
    assert calls == [1, 1]  # 7 steps: on the root and confirmed


# -- 3. the attack contract ----------------------------------------------------------------------


def tiny_model(features: int, dtype: torch.dtype, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, classes)).to(
        dtype
    )


@settings(max_examples=20, deadline=None)
@given(
    shape=st.sampled_from([(5, 3), (4, 1, 3, 3), (1, 6)]),
    eps=st.floats(0.0, 2.0),
    per_example=st.booleans(),
    norm=st.sampled_from([at.LinfBall, at.L2Ball]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    targets=st.sampled_from([None, 2]),
    restarts=st.integers(1, 2),
    seed=st.integers(0, 2**16),
    bounded=st.booleans(),
)
def test_output_in_ball_and_domain(
    shape, eps, per_example, norm, dtype, targets, restarts, seed, bounded
):
    g = gen(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    if not bounded:
        x = 3 * x - 1
    n = shape[0]
    features = math.prod(shape[1:])
    model = tiny_model(features, dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    budget = torch.rand(n, generator=g, dtype=dtype) * eps if per_example else eps
    threat = norm(budget, domain=(0.0, 1.0) if bounded else None)
    x_adv = FAB(
        threat, steps=3, restarts=restarts, target_classes=targets, random_start=bool(seed % 2)
    )(model, x, y, generator=g)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool(torch.isfinite(x_adv).all())
    if bounded:
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    limit = budget if per_example else torch.full((n,), eps, dtype=dtype)
    assert bool((threat.norm(x_adv - x) <= limit).all())
    # each example is the clean input or misclassified
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    same = (x_adv == x).flatten(1).all(1)
    assert bool((same | wrong).all())


def snapshot(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
    )


def assert_same(a, b) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    for (ra, ga), (rb, gb) in zip(a[2], b[2]):
        assert ra == rb
        assert (ga is None and gb is None) or torch.equal(ga, gb)


@pytest.mark.parametrize(
    ("mode", "target_classes", "restarts", "bn_training"),
    [
        ("eval", None, 2, True),
        ("eval", 3, 2, True),
        ("as_is", None, 1, True),
        ("as_is", 3, 2, False),
    ],
)
def test_model_state_untouched(mode, target_classes, restarts, bn_training):
    """Modes, grads, requires_grad and BatchNorm statistics come back exactly as they were (a
    training BatchNorm under mode='as_is' needs batches of two, so only one run there)."""
    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True)
    model.train()
    model(torch.rand(16, 1, 8, 8)).sum().backward()  # populated grads, moved BN statistics
    model.head[2].weight.grad = None
    model.features[0].bias.requires_grad_(False)
    model.features[1].train(bn_training)
    x = torch.rand(8, 1, 8, 8, generator=gen(0))
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct: every run attacks the whole batch
    before = snapshot(model)
    attack = FAB(
        at.L2Ball(1.0), steps=3, restarts=restarts, target_classes=target_classes, mode=mode
    )
    x_adv = attack(model, x, y, generator=gen(1))
    assert_same(before, snapshot(model))
    assert not x_adv.requires_grad and x_adv.grad_fn is None


def test_deterministic_with_a_seeded_generator_and_global_rng_untouched():
    model = tiny_model(6, torch.float32)
    x = torch.rand(30, 6, generator=gen(7))
    y = torch.randint(0, 4, (30,), generator=gen(8))
    attack = FAB(at.LinfBall(0.2), steps=4, restarts=3, random_start=True)
    state = torch.get_rng_state()
    g = gen(5)
    a = attack(model, x, y, generator=g)
    assert not torch.equal(g.get_state(), gen(5).get_state())  # the random starts used it
    b = attack(model, x, y, generator=gen(5))
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_per_example_eps_subset_and_with_eps():
    """A (B,) ε gives each example what a float ε gives it; subset() and with_eps() agree."""
    model = linear_model(8, 3, seed=9)
    x = torch.randn(40, 8, generator=gen(9), dtype=F64)
    with torch.no_grad():
        y = model(x).argmax(1)
    small, large = 0.3, 0.8
    eps = torch.where(torch.arange(40) % 2 == 0, small, large).to(F64)
    attack = FAB(at.L2Ball(small, domain=None), steps=6)
    mixed = attack.with_eps(eps)(model, x, y)
    assert mixed.dtype == F64
    torch.testing.assert_close(mixed[::2], attack(model, x, y)[::2], rtol=0, atol=0)
    torch.testing.assert_close(
        mixed[1::2], attack.with_eps(large)(model, x, y)[1::2], rtol=0, atol=0
    )
    index = torch.arange(5, 25)
    part = attack.with_eps(eps).subset(index)(model, x[index], y[index])
    torch.testing.assert_close(part, mixed[index], rtol=0, atol=0)
    assert attack.with_mode("as_is").mode == "as_is"
    assert attack.with_threat(at.LinfBall(0.1)).threat.p == INF


def test_fab_t_on_digits_at_least_as_strong_as_pgd(digits, digits_cnn):
    x, y = digits.x_test[:150], digits.y_test[:150]
    threat = at.LinfBall(0.1)

    def accuracy(x_adv):
        with torch.no_grad():
            return float((digits_cnn(x_adv).argmax(1) == y).float().mean())

    pgd = accuracy(at.PGD(threat, steps=20)(digits_cnn, x, y, generator=gen(0)))
    x_adv = FAB(threat, steps=30, target_classes=9)(digits_cnn, x, y)
    fab = accuracy(x_adv)
    assert accuracy(x) > pgd > 0.1  # an informative budget
    assert fab <= pgd + 0.05
    assert bool((threat.norm(x_adv - x) <= 0.1).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


# -- 4. bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"target_classes": 0}, "target_classes"),
        ({"target_classes": 2.0}, "target_classes"),
        ({"alpha_max": -0.1}, "alpha_max"),
        ({"alpha_max": 1.5}, "alpha_max"),
        ({"eta": 0.5}, "eta"),
        ({"eta": math.nan}, "eta"),
        ({"beta": 0.0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"random_start": 1}, "random_start"),
        ({"mode": "train"}, "mode"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        FAB(at.LinfBall(0.1), **kwargs)


def test_bad_threat_and_targeted_keyword():
    with pytest.raises(TypeError, match="threat"):
        FAB(0.1)  # type: ignore[arg-type]

    class L1Ball(at.L2Ball):
        p = 1.0
        dual_p = INF

    with pytest.raises(TypeError, match="ℓ∞ and ℓ2"):
        FAB(L1Ball(1.0))
    with pytest.raises(TypeError, match="targeted"):
        FAB(at.LinfBall(0.1), targeted=True)  # type: ignore[call-arg]


def test_call_time_errors():
    model = tiny_model(6, torch.float32, classes=4)
    x, y = torch.rand(3, 6), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="target_classes=4"):
        FAB(at.LinfBall(0.1), steps=2, target_classes=4)(model, x, y)
    FAB(at.LinfBall(0.1), steps=2, target_classes=3)(model, x, y)  # C − 1 targets is fine
    with pytest.raises(TypeError, match="class labels"):
        FAB(at.LinfBall(0.1), steps=2)(model, x, torch.rand(3, 4))
    with pytest.raises(ValueError, match="labels"):
        FAB(at.LinfBall(0.1), steps=2)(model, x, torch.tensor([0, 1, 7]))
