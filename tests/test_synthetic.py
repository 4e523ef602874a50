"""advtrade.synthetic: the sampler, the closed forms against Monte Carlo and advtrade's own
attacks, the paper's numbers, Theorems 2.1 and 2.2, and argument checking."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader

from advtrade.synthetic import LinearClassifier, SyntheticStream, TsiprasDistribution
from advtrade.synthetic._theory import theorem_2_1_bound
from advtrade.threats import L2Ball, LinfBall


def Phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def mc_tolerance(a: float, n: int) -> float:
    """4 binomial standard errors at the exact accuracy (at least that of one error in n)."""
    return 4.0 * math.sqrt(max(a * (1 - a), 1.0 / n) / n) + 1e-9


def linear_model(w: torch.Tensor, b: float) -> nn.Linear:
    model = nn.Linear(w.numel(), 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w[None])
        model.bias.fill_(b)
    return model


@st.composite
def problems(draw, max_d: int = 24):
    """(dist, w, b, threat): weights sometimes with no Gaussian part (a deterministic margin)."""
    d = draw(st.integers(1, max_d))
    p = draw(st.floats(0.5, 0.99))
    eta = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    dist = TsiprasDistribution(d, p, eta)
    weight = st.floats(-2.0, 2.0, allow_subnormal=False)
    w = torch.tensor(draw(st.lists(weight, min_size=d + 1, max_size=d + 1)), dtype=torch.float64)
    if draw(st.booleans()):
        w[1:] = 0.0
    b = draw(st.floats(-1.0, 1.0, allow_subnormal=False))
    kind = draw(st.sampled_from([LinfBall, L2Ball]))
    eps = draw(st.floats(0.0, 1.2, allow_subnormal=False))
    return dist, w, b, kind(eps, domain=None)


def margins_off_ties(dist: TsiprasDistribution, w: torch.Tensor, b: float, shift: float) -> bool:
    """False if a deterministic margin (no Gaussian weight) sits within rounding of 0."""
    if bool((w[1:] != 0).any()):
        return True
    return all(abs(y * b + s * float(w[0]) - shift) > 1e-9 for y in (-1, 1) for s in (-1, 1))


# -- 1. closed forms against Monte Carlo and advtrade's attacks ---------------------------------


@settings(max_examples=12, deadline=None)
@given(problems())
# A zero weight on x1 and ε = 1: random-start PGD fools some examples before its last step.
@example(
    (
        TsiprasDistribution(d=1, p=0.5, eta=3.0),
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        0.0,
        LinfBall(eps=1.0, domain=None),
    )
)
def test_closed_forms_match_monte_carlo_and_advtrade_attacks(problem):
    from advtrade.attacks import FGSM, PGD
    from advtrade.losses import margin_loss

    dist, w, b, threat = problem
    shift = threat.eps * float(threat.dual_norm(w))
    assume(margins_off_ties(dist, w, b, 0.0) and margins_off_ties(dist, w, b, shift))
    n, m = 100_000, 2000
    gen = torch.Generator().manual_seed(1)
    x, y = dist.sample(n, generator=gen, dtype=torch.float64)

    def margin(xs: torch.Tensor) -> torch.Tensor:
        return y[: len(xs)] * (xs @ w + b)

    def mc(xs: torch.Tensor) -> float:
        return float((margin(xs) > 0).double().mean())

    std, rob = float(dist.standard_accuracy(w, b)), float(dist.robust_accuracy(w, b, threat))
    assert abs(mc(x) - std) <= mc_tolerance(std, n)
    # The analytic worst case: every coordinate against y·w (ℓ∞), or along −y·w (ℓ2).
    norm2 = float(w.norm())
    step = w.sign() if isinstance(threat, LinfBall) else w / (norm2 if norm2 > 0 else 1.0)
    x_worst = x - threat.eps * (y[:, None] * step)  # (float · int tensor would be float32)
    assert abs(mc(x_worst) - rob) <= mc_tolerance(rob, n)
    # advtrade's own attacks on the same linear model (one logit, labels ±1): FGSM finds that
    # worst case example by example; PGD keeping its worst iterate never beats it (and under ℓ∞
    # reaches it too); PGD's default keeps a successful iterate, so it fools exactly the examples
    # that the worst case fools.
    model = linear_model(w, b)
    x_fgsm = FGSM(threat, loss=margin_loss)(model, x[:m], y[:m])
    torch.testing.assert_close(margin(x_fgsm), margin(x_worst[:m]), rtol=1e-12, atol=1e-9)
    assert abs(mc(x_fgsm) - rob) <= mc_tolerance(rob, m)
    x_pgd = PGD(threat, steps=3, select="best")(model, x[:m], y[:m], generator=gen)
    assert bool((margin(x_pgd) >= margin(x_worst[:m]) - 1e-9 * (1 + margin(x_pgd).abs())).all())
    if isinstance(threat, LinfBall):
        torch.testing.assert_close(margin(x_pgd), margin(x_worst[:m]), rtol=1e-12, atol=1e-9)
        x_success = PGD(threat, steps=3)(model, x[:m], y[:m], generator=gen)
        assert torch.equal(margin(x_success) > 0, margin(x_worst[:m]) > 0)
    # The exact (adversarial) hinge loss against its sample mean.
    for xs, thr in ((x, None), (x_worst, threat)):
        losses = torch.relu(1 - y * (xs @ w + b))
        se = float(losses.std()) / math.sqrt(n)
        assert abs(float(losses.mean()) - float(dist.hinge_loss(w, b, thr))) <= 4 * se + 1e-9


def test_ties_on_the_decision_boundary():
    dist = TsiprasDistribution(5, 0.9)
    e1 = dist.robust_classifier()
    # At eps = 1 the adversary moves x1 exactly onto the boundary: sign(0) = 0 is an error.
    assert float(dist.robust_accuracy(*e1, LinfBall(1.0))) == 0.0
    assert float(dist.robust_accuracy(*e1, LinfBall(1.0), ties="half")) == pytest.approx(0.45)
    zero = torch.zeros(dist.dim)
    assert float(dist.standard_accuracy(zero)) == 0.0
    assert float(dist.standard_accuracy(zero, ties="half")) == 0.5  # the paper's coin flip
    # The sampler agrees: examples with x1 = y land exactly on the boundary, the rest beyond.
    x, y = dist.sample(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = (x - y[:, None] * e1.w.sign()) @ e1.w
    agree = x[:, 0] == y
    assert bool((score[agree] == 0).all()) and bool((y * score)[~agree].lt(0).all())


def test_batches_of_classifiers_and_of_budgets():
    dist = TsiprasDistribution(7, 0.8, 0.4)
    W = torch.randn(5, dist.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = torch.linspace(-0.5, 0.5, 5, dtype=torch.float64)
    threat = L2Ball(0.3, domain=None)
    batch = dist.robust_accuracy(W, b, threat)
    assert batch.shape == (5,) and batch.dtype == torch.float64
    for i in range(5):
        assert float(batch[i]) == pytest.approx(float(dist.robust_accuracy(W[i], b[i], threat)))
        assert float(dist.hinge_loss(W, b, threat, 0.1)[i]) == pytest.approx(
            float(dist.hinge_loss(W[i].tolist(), float(b[i]), threat, 0.1))
        )
    eps = torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64)
    curve = dist.robust_accuracy(W[0], 0.2, LinfBall(eps, domain=None))
    expect = [float(dist.robust_accuracy(W[0], 0.2, LinfBall(float(e)))) for e in eps]
    assert curve.tolist() == pytest.approx(expect)
    assert bool((curve[1:] <= curve[:-1]).all())
    with pytest.raises(ValueError, match="does not broadcast"):
        dist.robust_accuracy(W, torch.zeros(3))


def test_linear_classifier_from_module():
    dist = TsiprasDistribution(3, 0.9)
    one, two = nn.Linear(4, 1, dtype=torch.float64), nn.Linear(4, 2, dtype=torch.float64)
    x, _ = dist.sample(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for module in (one, two):
        w, b = LinearClassifier.from_module(module)
        out = module(x).detach()
        score = out[:, 0] if out.shape[1] == 1 else out[:, 1] - out[:, 0]
        torch.testing.assert_close(x @ w + b, score)
    # x1 alone (z = x1, or z1 − z0 = x1) is right with probability p = 0.9, in closed form
    with torch.no_grad():
        for module in (one, two):
            module.weight.zero_()
            module.bias.zero_()
            module.weight[-1, 0] = 1.0
    for module in (one, two):
        classifier = LinearClassifier.from_module(module)
        assert float(dist.standard_accuracy(classifier)) == pytest.approx(0.9, abs=1e-12)
    with pytest.raises(TypeError, match="nn.Linear"):
        LinearClassifier.from_module(nn.Linear(4, 3))


@pytest.mark.parametrize("threat", [None, LinfBall(0.2), L2Ball(0.2)])
def test_hinge_loss_is_differentiable_even_without_gaussian_weights(threat):
    dist = TsiprasDistribution(4, 0.9, 0.3)
    w = torch.tensor([0.7, 0.3, -0.2, 0.1, 0.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: dist.hinge_loss(w, b, threat, 0.1), (w, b))
    w0 = torch.tensor([0.7, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(dist.hinge_loss(w0, 0.0, threat), w0)
    assert bool(torch.isfinite(grad).all())


# -- 2. the paper's numbers and Theorem 2.1 ----------------------------------------------------


@pytest.mark.parametrize("d", [1, 10, 100, 1000, 100_000])
def test_averaging_classifier_matches_the_paper(d):
    dist = TsiprasDistribution(d, 0.95)  # eta = 3/sqrt(d)
    avg = dist.averaging_classifier()
    assert dist.eta == pytest.approx(3 / math.sqrt(d))
    assert float(dist.standard_accuracy(*avg)) == pytest.approx(Phi(3.0), abs=1e-10)
    assert Phi(3.0) == pytest.approx(0.99865, abs=1e-5)
    robust = float(dist.robust_accuracy(*avg, LinfBall(2 * dist.eta)))
    assert robust == pytest.approx(Phi(-3.0), abs=1e-10) and robust == pytest.approx(0.00135, 1e-2)
    for eps in (0.0, 0.5 * dist.eta, 1.5 * dist.eta):  # Φ((η − ε)√d)
        got = float(dist.robust_accuracy(*avg, LinfBall(eps)))
        assert got == pytest.approx(Phi((dist.eta - eps) * math.sqrt(d)), abs=1e-10)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.95])
def test_robust_classifier_keeps_p_below_eps_one(p):
    dist = TsiprasDistribution(50, p)
    e1 = dist.robust_classifier()
    assert float(dist.standard_accuracy(*e1)) == pytest.approx(p, abs=1e-15)
    for eps in (0.0, 2 * dist.eta, 0.5, 0.999):
        for threat in (LinfBall(eps), L2Ball(eps)):
            assert float(dist.robust_accuracy(*e1, threat)) == pytest.approx(p, abs=1e-15)
    assert float(dist.robust_accuracy(*e1, LinfBall(1.5))) == 0.0
    # sign(x1) meets the Theorem 2.1 bound with equality: the bound is tight.
    assert float(dist.theorem_2_1_bound(p)) == pytest.approx(p)


def test_theorem_2_1_bound_values():
    assert float(theorem_2_1_bound(0.99, 0.95)) == pytest.approx(0.19)
    assert float(theorem_2_1_bound(0.99, 0.9)) == pytest.approx(0.09)
    assert float(theorem_2_1_bound(0.5, 0.9)) == 1.0
    assert float(theorem_2_1_bound(0.5, 0.9, clip=False)) == pytest.approx(4.5)
    dist = TsiprasDistribution(100, 0.9)
    assert dist.theorem_2_1_applies(LinfBall(2 * dist.eta))
    assert not dist.theorem_2_1_applies(LinfBall(1.9 * dist.eta))
    assert dist.theorem_2_1_applies(L2Ball(2 * dist.eta * 10))
    assert not dist.theorem_2_1_applies(L2Ball(2 * dist.eta * 9.9))
    with pytest.raises(ValueError, match="p must"):
        theorem_2_1_bound(0.9, 1.0)


@settings(max_examples=15, deadline=None)
@given(problems(max_d=200), st.floats(1.0, 3.0))
def test_no_linear_classifier_beats_theorem_2_1_or_bayes(problem, factor):
    dist, w, b, _ = problem
    std = dist.standard_accuracy(w, b)
    # (ties="half": with p = 1/2 and η = 0 the Bayes rule is w = 0, a coin flip)
    bayes = dist.standard_accuracy(dist.bayes_classifier(), ties="half")
    assert float(std) <= float(bayes) + 1e-12
    for threat in (LinfBall(factor * 2 * dist.eta), L2Ball(factor * 2 * dist.eta * dist.d**0.5)):
        assert dist.theorem_2_1_applies(threat)
        robust = float(dist.robust_accuracy(w, b, threat))
        assert robust <= float(dist.theorem_2_1_bound(std)) + 1e-12


def test_tradeoff_frontier():
    dist = TsiprasDistribution(1000, 0.95)
    f = dist.tradeoff_frontier(n=101)
    assert f.bound_applies and f.t.shape == f.standard.shape == f.robust.shape == (101,)
    assert float(f.standard[0]) == pytest.approx(Phi(3.0), abs=1e-12)
    assert float(f.robust[0]) == pytest.approx(Phi(-3.0), abs=1e-12)
    assert float(f.standard[-1]) == pytest.approx(0.95) and float(f.robust[-1]) == pytest.approx(
        0.95
    )
    assert bool((f.robust <= f.bound + 1e-12).all())
    mid = 60
    w = torch.full((dist.dim,), float(f.v[mid]), dtype=torch.float64)
    w[0] = float(f.w1[mid])
    assert float(f.robust[mid]) == pytest.approx(float(dist.robust_accuracy(w, 0, f.threat)))
    assert not dist.tradeoff_frontier(LinfBall(dist.eta)).bound_applies


# -- 3. Theorem 2.2 on the exact losses --------------------------------------------------------

THEOREM_2_2 = [(200, 0.9), (1000, 0.95), (100, 0.975), (400, 0.75), (2500, 0.6)]


@pytest.mark.parametrize("d,p", THEOREM_2_2)
def test_theorem_2_2_standard_training_uses_non_robust_features(d, p):
    dist = TsiprasDistribution(d, p, 4 / math.sqrt(d))
    sol = dist.svm_minimizer()  # λ tuned so that ||w*||_2 = 1
    assert sol.norm == pytest.approx(1.0, abs=1e-6) and sol.lam > 0
    assert float(dist.standard_accuracy(sol.w)) > 0.99
    for eps in (2 * dist.eta, 3 * dist.eta, 0.9):
        assert float(dist.robust_accuracy(sol.w, 0.0, LinfBall(eps))) < 0.01
    assert math.sqrt(d) * sol.v >= 1 / math.sqrt(2)  # pooled Gaussian weight
    assert sol.robust_share < 0.05


@pytest.mark.parametrize("d,p", THEOREM_2_2)
def test_theorem_2_2_adversarial_training_uses_only_x1(d, p):
    dist = TsiprasDistribution(d, p, 4 / math.sqrt(d))
    lo, hi = 2 * dist.eta, 2 * p - 1
    assert lo < hi  # inside the theorem's conditions
    for eps_tr in (lo, (lo + hi) / 2, hi - 1e-3):
        train = LinfBall(eps_tr, domain=None)
        tuned, fixed = dist.svm_minimizer(train), dist.svm_minimizer(train, lam=0.01)
        # On the line v = 0 the objective is p(1 − (1 − ε)w1)₊ + (1 − p)(1 + (1 + ε)w1) + λw1²/2.
        assert fixed.w1 == pytest.approx(min(1 / (1 - eps_tr), (hi - eps_tr) / 0.01), rel=1e-9)
        assert tuned.w1 == pytest.approx(1.0, abs=1e-6)
        for sol in (tuned, fixed):
            assert sol.v == 0.0 and sol.w1 > 0 and sol.robust_share == 1.0
            for eps in (0.0, 0.5, 0.99):
                assert float(dist.robust_accuracy(sol.w, 0.0, LinfBall(eps))) == pytest.approx(p)


@pytest.mark.parametrize(
    "d,p,eta,threat,lam",
    [
        (200, 0.9, 4 / math.sqrt(200), None, 0.002),
        (200, 0.9, 4 / math.sqrt(200), LinfBall(0.6, domain=None), 0.05),
        (30, 0.8, 0.1, L2Ball(0.3, domain=None), 0.01),
        (30, 0.8, 0.1, LinfBall(0.05, domain=None), 0.0),
    ],
)
def test_svm_minimizer_has_no_descent_direction(d, p, eta, threat, lam):
    """A convex function with no descent direction from a point is minimal there: probe the
    full (d+1)-dimensional exact hinge objective around the reported minimiser."""
    dist = TsiprasDistribution(d, p, eta)
    sol = dist.svm_minimizer(threat, lam=lam)
    base = float(dist.hinge_loss(sol.w, 0.0, threat, lam))
    assert base == pytest.approx(sol.objective, abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    sym = torch.zeros(2, dist.dim, dtype=torch.float64)
    sym[0, 0], sym[1, 1:] = 1.0, 1.0 / math.sqrt(d)
    angles = torch.linspace(0, 2 * math.pi, 33, dtype=torch.float64)[:-1]
    dirs = torch.cat(
        [
            torch.cos(angles)[:, None] * sym[0] + torch.sin(angles)[:, None] * sym[1],
            torch.randn(64, dist.dim, generator=gen, dtype=torch.float64),
        ]
    )
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    for h in (1e-2, 1e-4):
        W = sol.w + h * dirs
        values = dist.hinge_loss(W, 0.0, threat, lam)
        assert float(values.min()) >= base - 1e-12
    # Symmetry: b = 0 is optimal too (the objective is even in b at the symmetric minimiser).
    for b in (1e-3, -1e-3):
        assert float(dist.hinge_loss(sol.w, b, threat, lam)) >= base - 1e-12


@pytest.mark.parametrize("threat,lam", [(None, 0.01), (LinfBall(0.5, domain=None), 0.05)])
def test_symmetric_reduction_agrees_with_full_lbfgs(threat, lam):
    """Minimise the exact objective over the full (w, b) with LBFGS: the same value, b ≈ 0, and
    equal Gaussian weights (standard) or Gaussian weights ≈ 0 (adversarial)."""
    dist = TsiprasDistribution(8, 0.9, 0.2)
    sol = dist.svm_minimizer(threat, lam=lam)
    w = torch.randn(dist.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = (0.1 * w).requires_grad_(True)
    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = dist.hinge_loss(w, b, threat, lam)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    w, b = w.detach(), float(b.detach())
    value = float(dist.hinge_loss(w, b, threat, lam))
    assert sol.objective <= value + 1e-12 and value <= sol.objective + 1e-7
    assert abs(b) < 1e-5 and float(w[0]) == pytest.approx(sol.w1, abs=1e-5)
    assert float(w[1:].max() - w[1:].min()) < 1e-5
    assert float(w[1:].abs().max()) == pytest.approx(abs(sol.v), abs=1e-5)


def test_reduced_objective_matches_hinge_loss():
    from advtrade.synthetic._svm import symmetric_objective

    dist = TsiprasDistribution(50, 0.85, 0.3)
    for threat, q in ((None, 1.0), (LinfBall(0.2), 1.0), (L2Ball(0.7), 2.0)):
        eps = 0.0 if threat is None else threat.eps
        for w1, v in ((0.3, 0.05), (1.0, 0.0), (0.0, 0.0), (0.0, 0.2)):
            w = torch.full((dist.dim,), v, dtype=torch.float64)
            w[0] = w1
            got = symmetric_objective(w1, v, d=50, p=0.85, eta=0.3, eps=eps, q=q, lam=0.1)
            assert got == pytest.approx(float(dist.hinge_loss(w, 0.0, threat, 0.1)), rel=1e-12)


@pytest.mark.parametrize("d,p", [(200, 0.9), (100, 0.975)])
def test_pitfall_training_radius_beyond_2p_minus_1_gives_zero(d, p):
    dist = TsiprasDistribution(d, p, 4 / math.sqrt(d))
    for eps_tr in (2 * p - 1, 2 * p - 1 + 0.05, 1.5):
        train = LinfBall(eps_tr, domain=None)
        sol = dist.svm_minimizer(train, lam=0.01)
        assert sol.w1 == 0.0 and sol.v == 0.0 and sol.objective == 1.0
        assert float(dist.standard_accuracy(sol.w, ties="half")) == 0.5
        with pytest.raises(ValueError, match="zero vector"):
            dist.svm_minimizer(train)
    # Just below 2p - 1 the robust feature survives.
    assert dist.svm_minimizer(LinfBall(2 * p - 1 - 1e-3), lam=0.01).w1 > 0


# -- 4. the sampler, streaming, and argument checking ------------------------------------------


def test_sample_shapes_labels_and_statistics():
    dist = TsiprasDistribution(50, 0.8, 0.25)
    n = 200_000
    x, y = dist.sample(n, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 51) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.unique().tolist()) == {-1, 1}
    assert abs(float((y == 1).double().mean()) - 0.5) <= mc_tolerance(0.5, n)
    assert set(x[:, 0].unique().tolist()) == {-1.0, 1.0}
    assert abs(float((x[:, 0] == y).double().mean()) - 0.8) <= mc_tolerance(0.8, n)
    g = x[:, 1:].double() * y[:, None]  # N(η, 1) entries
    assert float(g.mean()) == pytest.approx(0.25, abs=4 / math.sqrt(g.numel()))
    assert float(g.var()) == pytest.approx(1.0, abs=0.01)
    x2, y_index = dist.sample(n, generator=torch.Generator().manual_seed(0), labels="index")
    torch.testing.assert_close(x2, x)
    assert torch.equal(y_index, (y + 1) // 2)
    xb, _ = dist.sample(10, dtype=torch.bfloat16)
    assert xb.dtype == torch.bfloat16 and xb.shape == (10, 51)
    assert dist.sample(0)[0].shape == (0, 51)


def test_sampling_is_deterministic_per_seed():
    dist = TsiprasDistribution(20, 0.9)

    def draw(seed):
        return dist.sample(100, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    a, b, c = draw(3), draw(3), draw(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    before = torch.random.get_rng_state()
    draw(5)
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is untouched


def test_batches_stream_with_bounded_memory():
    dist = TsiprasDistribution(1000, 0.95)
    it = dist.batches(10**6, 4096, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # lazy: 10^6 x 1001 is never allocated
        x, y = next(it)
        assert x.shape == (4096, 1001) and y.shape == (4096,)
    sizes = [x.shape[0] for x, _ in TsiprasDistribution(3, 0.9).batches(10_005, 1000)]
    assert sizes == [1000] * 10 + [5]
    small = TsiprasDistribution(3, 0.9)
    one = [b[0] for b in small.batches(300, 128, generator=torch.Generator().manual_seed(1))]
    two = [b[0] for b in small.batches(300, 128, generator=torch.Generator().manual_seed(1))]
    assert all(torch.equal(u, v) for u, v in zip(one, two))


def test_streaming_dataset_is_reproducible_per_epoch_worker_and_rank():
    dist = TsiprasDistribution(10, 0.9)
    stream = dist.dataset(1000, batch_size=96, seed=7)
    assert len(stream) == 11
    epoch0 = [x for x, _ in DataLoader(stream, batch_size=None)]
    assert [x.shape[0] for x in epoch0] == [96] * 10 + [40]
    assert all(torch.equal(u, v) for u, v in zip(epoch0, [x for x, _ in stream]))
    workers = [x for x, _ in DataLoader(stream, batch_size=None, num_workers=2)]
    assert len(workers) == 11 and all(torch.equal(u, v) for u, v in zip(epoch0, workers))
    stream.set_epoch(1)
    epoch1 = [x for x, _ in stream]
    assert not torch.equal(epoch0[0], epoch1[0])
    stream.set_epoch(0)
    assert torch.equal(next(iter(stream))[0], epoch0[0])
    ranks = [dist.dataset(1000, batch_size=96, seed=7, rank=r, world_size=2) for r in (0, 1)]
    assert [len(r) for r in ranks] == [6, 5]
    shards = [x for r in ranks for x, _ in r]
    assert sorted(float(x.sum()) for x in shards) == sorted(float(x.sum()) for x in epoch0)
    tds = dist.tensor_dataset(50, generator=torch.Generator().manual_seed(0), labels="index")
    assert len(tds) == 50 and tds[0][0].shape == (11,) and int(tds[0][1]) in (0, 1)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"d": 0, "p": 0.9}, ValueError, "d must"),
        ({"d": True, "p": 0.9}, TypeError, "d must be an integer"),
        ({"d": 2.5, "p": 0.9}, TypeError, "d must be an integer"),
        ({"d": 5, "p": 1.0}, ValueError, "p must"),
        ({"d": 5, "p": 0.4}, ValueError, "p must"),
        ({"d": 5, "p": float("nan")}, ValueError, "p must"),
        ({"d": 5, "p": "0.9"}, TypeError, "p must be a number"),
        ({"d": 5, "p": 0.9, "eta": -0.1}, ValueError, "eta must"),
        ({"d": 5, "p": 0.9, "eta": math.inf}, ValueError, "eta must"),
    ],
)
def test_bad_distribution_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        TsiprasDistribution(**kwargs)


def test_bad_call_arguments():
    dist = TsiprasDistribution(4, 0.9)
    w = torch.ones(5)
    cases = [
        (lambda: dist.sample(-1), ValueError, "n must"),
        (lambda: dist.sample(3, labels="onehot"), ValueError, "labels must"),
        (lambda: dist.sample(3, dtype=torch.int64), TypeError, "dtype must"),
        (lambda: dist.sample(3, generator=0), TypeError, "generator must"),
        (lambda: next(dist.batches(10, 0)), ValueError, "batch_size must"),
        (lambda: dist.standard_accuracy(torch.ones(4)), ValueError, r"w must have shape \(5,\)"),
        (lambda: dist.standard_accuracy(torch.ones(2, 3, 5)), ValueError, "w must have shape"),
        (lambda: dist.standard_accuracy([1, 2, "a", 4, 5]), TypeError, "w must be a tensor"),
        (lambda: dist.standard_accuracy(w * math.nan), ValueError, "w must be finite"),
        (lambda: dist.hinge_loss(w * math.inf), ValueError, "w must be finite"),
        (lambda: dist.standard_accuracy(w, math.inf), ValueError, "b must be finite"),
        (lambda: dist.robust_accuracy(w, LinfBall(0.1)), TypeError, "threat="),
        (lambda: dist.robust_accuracy(w, 0.0, 0.1), TypeError, "threat must"),
        (lambda: dist.standard_accuracy(w, ties="random"), ValueError, "ties must"),
        (lambda: dist.svm_minimizer(lam=-1.0), ValueError, "lam must"),
        (lambda: dist.svm_minimizer(norm=0.0), ValueError, "norm must"),
        (lambda: dist.svm_minimizer(lam=0.1, norm=1.0), ValueError, "not both"),
        (lambda: dist.svm_minimizer(LinfBall(torch.ones(3))), TypeError, "float eps"),
        (lambda: dist.tradeoff_frontier(n=1), ValueError, "n must"),
        (lambda: dist.dataset(10, rank=2, world_size=2), ValueError, "rank must"),
        (lambda: dist.dataset(10, labels="x"), ValueError, "labels must"),
        (lambda: SyntheticStream(object(), 10), TypeError, "dist must"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
