"""Square: finds what gradient masking hides, is exact on linear models, stays in ball ∩ domain,
never computes a gradient, and spends at most ``queries`` forwards per example after the first."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advtrade import PGD, L2Ball, LinfBall, evaluate
from advtrade.attacks import Square
from advtrade.losses import margin_loss
from advtrade.threats import ThreatModel


class Counting(nn.Module):
    """Counts the forward calls and the rows the wrapped model is run on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows, self.calls = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows, self.calls = self.rows + x.shape[0], self.calls + 1
        return self.model(x)


class Quantised(nn.Module):
    """``model(round(k·x)/k)``: the input quantisation zeroes every input gradient."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


class NoGrad(nn.Module):
    """Fails if it is ever run with autograd recording."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "Square ran the model with gradients enabled"
        return self.model(x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def within(threat: ThreatModel, x: torch.Tensor, x_adv: torch.Tensor, eps: torch.Tensor) -> bool:
    ok = bool((threat.norm(x_adv - x) <= eps * (1 + 1e-5) + 1e-6).all())
    if threat.domain is not None:
        low, high = threat.domain
        ok = ok and float(x_adv.min()) >= low and float(x_adv.max()) <= high
    return ok


def linear(d: int, classes: int, seed: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).to(dtype)


# -- what it is for ------------------------------------------------------------------------------
def test_finds_what_gradient_masking_hides(digits, digits_cnn) -> None:
    model = Quantised(digits_cnn)
    x, y = digits.x_test[:200], digits.y_test[:200]
    threat = LinfBall(0.15)
    g = torch.Generator().manual_seed(0)
    pgd = accuracy(model, PGD(threat, steps=20)(model, x, y, generator=g), y)
    x_adv = Square(threat, queries=300)(model, x, y, generator=g)
    square = accuracy(model, x_adv, y)
    assert accuracy(model, x, y) > 0.9
    assert pgd > 0.85  # the gradient is zero: PGD sees a robust model
    assert square < 0.25  # measured 0.09 (0.01 with 1000 queries)
    assert within(threat, x, x_adv, torch.full((200,), 0.15))


@pytest.mark.parametrize("shape", [(12,), (1, 4, 4), (3, 4, 4)])
def test_linear_model_fooled_exactly_below_the_closed_form_threshold(shape) -> None:
    """A linear binary score w·x + b loses at most ε‖w‖₁ under ℓ∞ (at the corner sign(w))."""
    g = torch.Generator().manual_seed(0)
    d = torch.Size(shape).numel()
    model = linear(d, 1, seed=0)
    x = torch.randn(300, *shape, generator=g)
    with torch.no_grad():
        z = model(x).squeeze(1)
    y = (z > 0).long()
    eps = 0.1
    margin, threshold = z.abs(), eps * model[1].weight.abs().sum()
    threat = LinfBall(eps, domain=None)
    x_adv = Square(threat, queries=600)(model, x, y, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fooled = (model(x_adv).squeeze(1) > 0).long() != y
    assert within(threat, x, x_adv, torch.full((300,), eps))
    assert not bool(fooled[margin >= threshold].any())  # no false success, ever
    inside = margin < 0.8 * threshold
    assert int(inside.sum()) > 30
    assert float(fooled[inside].float().mean()) > 0.97  # measured 1.0


def test_l2_as_strong_as_gradient_attacks(digits, digits_cnn) -> None:
    x, y = digits.x_test[:150], digits.y_test[:150]
    threat = L2Ball(1.0)
    g = torch.Generator().manual_seed(0)
    square = accuracy(digits_cnn, Square(threat, queries=300)(digits_cnn, x, y, generator=g), y)
    pgd = accuracy(digits_cnn, PGD(threat, steps=20)(digits_cnn, x, y, generator=g), y)
    assert square < 0.3  # measured 0.14; clean 0.96
    assert square < pgd + 0.15  # black-box with 300 queries against a 20-step white-box


def test_not_weaker_than_the_reference(digits, digits_cnn) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits.x_test[:150], digits.y_test[:150]
    for norm, threat in (("Linf", LinfBall(0.1)), ("L2", L2Ball(0.75))):
        ours = Square(threat, queries=200)(
            digits_cnn, x, y, generator=torch.Generator().manual_seed(0)
        )
        theirs = torchattacks.Square(
            digits_cnn,
            norm=norm,
            eps=float(threat.eps),
            n_queries=200,
            resc_schedule=False,
            seed=0,
        )(x, y)
        assert accuracy(digits_cnn, ours, y) <= accuracy(digits_cnn, theirs, y) + 0.02


def test_targeted_reaches_the_target(digits, digits_cnn) -> None:
    x, y = digits.x_test[:100], digits.y_test[:100]
    target = (y + 1) % 10
    x_adv = Square(LinfBall(0.3), queries=300, targeted=True)(
        digits_cnn, x, target, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        pred = digits_cnn(x_adv).argmax(1)
    assert float((pred == target).float().mean()) > 0.5  # measured 0.72 (targeted PGD-50: 0.98)


# -- properties ------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    norm=st.sampled_from(["linf", "l2"]),
    shape=st.sampled_from([(1, 8, 8), (3, 5, 7), (2, 6, 3), (1, 1, 1), (1, 1, 9), (7,)]),
    eps=st.floats(0.0, 1.5),
    per_example=st.booleans(),
    bounded=st.booleans(),
    double=st.booleans(),
    queries=st.integers(1, 25),
    seed=st.integers(0, 2**16),
)
def test_output_in_ball_and_domain_within_budget(
    norm, shape, eps, per_example, bounded, double, queries, seed
) -> None:
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if double else torch.float32
    n, d = 6, torch.Size(shape).numel()
    x = (torch.rand if bounded else torch.randn)((n, *shape), generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    budget = torch.rand(n, generator=g, dtype=dtype) * eps if per_example else eps
    domain = (0.0, 1.0) if bounded else None
    threat = (LinfBall if norm == "linf" else L2Ball)(budget, domain=domain)
    model = Counting(linear(d, 3, seed, dtype))
    x_adv = Square(threat, queries=queries)(model, x, y, generator=g)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool(torch.isfinite(x_adv).all())
    limit = budget if per_example else torch.full((n,), eps, dtype=dtype)
    assert within(threat, x, x_adv, limit)
    assert model.rows <= n * (queries + 1)


# -- the window steps against a per-example, slice-by-slice oracle -------------------------------
def _corner(u: torch.Tensor, free: int) -> int:
    return min(int(float(u) * free), free - 1)


def oracle_linf_step(cur, eps, sh, sw, u):
    """Per example: the window at (top, left) moved by 2ε per channel, with sign −/+ as the
    channel's uniform is below/above 1/2; everything else unchanged."""
    out = cur.clone()
    n, c, h, w = cur.shape
    for i in range(n):
        top, left = _corner(u[i, 0], h - sh + 1), _corner(u[i, 1], w - sw + 1)
        for ch in range(c):
            step = -2.0 if float(u[i, 2 + ch]) < 0.5 else 2.0
            out[i, ch, top : top + sh, left : left + sw] += step * float(eps[i])
    return out


def oracle_l2_step(x, cur, eps, sh, sw, patterns, u):
    """The reference's ℓ2 update, one example and one channel at a time, with slices: W1's
    channel gets its old direction plus a signed bump, scaled to the mass of δ in W1 ∪ W2 plus
    an equal share of the unused budget; W2 \\ W1 is zeroed; δ is rescaled to norm ε."""
    out = torch.empty_like(x)
    n, c, h, w = x.shape
    for i in range(n):
        t1, l1 = _corner(u[i, 0], h - sh + 1), _corner(u[i, 1], w - sw + 1)
        t2, l2 = _corner(u[i, 2], h - sh + 1), _corner(u[i, 3], w - sw + 1)
        bump = patterns[0] if float(u[i, 4]) < 0.5 else patterns[1]
        delta = cur[i] - x[i]
        both = torch.zeros(h, w, dtype=torch.bool)
        both[t1 : t1 + sh, l1 : l1 + sw] = True
        both[t2 : t2 + sh, l2 : l2 + sw] = True
        spare = max(float(eps[i]) ** 2 - float(delta.norm()) ** 2, 0.0) / c
        new = delta.clone()
        new[:, t2 : t2 + sh, l2 : l2 + sw] = 0.0
        for ch in range(c):
            old = delta[ch, t1 : t1 + sh, l1 : l1 + sw]
            sign = -1.0 if float(u[i, 5 + ch]) < 0.5 else 1.0
            d = sign * bump + (old / old.norm() if float(old.norm()) > 0 else 0.0)
            size = (spare + float(delta[ch][both].norm()) ** 2) ** 0.5
            new[ch, t1 : t1 + sh, l1 : l1 + sw] = d / d.norm() * size if d.norm() > 0 else 0.0
        out[i] = x[i] + float(eps[i]) * new / new.norm()
    return out


@settings(max_examples=30, deadline=None)
@given(
    c=st.sampled_from([1, 3]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_window_steps_match_a_per_example_oracle(c, h, w, data, seed) -> None:
    """The gathered/scattered window steps equal the slice-by-slice reference update on
    overlapping and disjoint windows, every window size, flat rows (h = 1) and δ with zero
    channels: ℓ∞ bit for bit, ℓ2 to float64 rounding."""
    from advtrade.attacks._square import _pseudo_gaussian

    sh, sw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    g = torch.Generator().manual_seed(seed)
    n, dt = 5, torch.float64
    x = torch.rand(n, c, h, w, generator=g, dtype=dt)
    eps = torch.rand(n, generator=g, dtype=dt) + 0.1
    delta = torch.randn(n, c, h, w, generator=g, dtype=dt)
    delta[0] = 0.0  # no perturbation yet: every norm is zero
    delta[1, 0] = 0.0  # one empty channel
    cur = x + delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1) * 0.5

    def uniforms(k: int) -> torch.Tensor:  # what each step draws from the same seed
        return torch.rand(n, k, generator=torch.Generator().manual_seed(seed))

    linf = Square._linf_step(cur, eps.view(n, 1, 1, 1), sh, sw, torch.Generator().manual_seed(seed))
    assert torch.equal(linf, oracle_linf_step(cur, eps, sh, sw, uniforms(2 + c)))

    if h * w > 1 and (sh, sw) != (1, 1):
        patterns = tuple(t.to(dt) for t in _pseudo_gaussian(sh, sw))
        step = Square._l2_step(
            x, cur, eps.view(n, 1, 1, 1), sh, sw, patterns, torch.Generator().manual_seed(seed)
        )
        expected = oracle_l2_step(x, cur, eps, sh, sw, patterns, uniforms(5 + c))
        torch.testing.assert_close(step, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close((step - x).flatten(1).norm(dim=1), eps, rtol=1e-12, atol=0)


@dataclass
class Log:
    inputs: list[torch.Tensor]
    logits: list[torch.Tensor]


class Tagged(nn.Module):
    """A linear model on the first D features of (B, D + 1) inputs whose last feature is the
    example's index (never moved by more than ε < 0.5), logging every row it is run on."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.net, self.log = linear(d, 3, seed=3), Log([], [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x[:, :-1])
        self.log.inputs.append(x.clone())
        self.log.logits.append(logits.clone())
        return logits


@pytest.mark.parametrize(
    "threat", [LinfBall(0.3, domain=None), L2Ball(0.45, domain=None)], ids=["linf", "l2"]
)
def test_per_example_queries_first_success_and_best_point(threat) -> None:
    """Per example: at most ``queries`` + 1 forwards, the first at the clean input; none after
    its first success, which is what it returns; else the highest-margin point queried. Every
    other query lies on the sphere of the ball (ℓ∞: a vertex)."""
    g = torch.Generator().manual_seed(0)
    n, d, queries = 40, 8, 30
    x = torch.cat([torch.randn(n, d, generator=g), torch.arange(n)[:, None].float()], dim=1)
    model = Tagged(d)
    y = torch.randint(0, 3, (n,), generator=g)
    x_adv = Square(threat, queries=queries)(model, x, y, generator=g)
    inputs, logits = torch.cat(model.log.inputs), torch.cat(model.log.logits)
    owner = inputs[:, -1].round().long()
    outcomes = set()
    for b in range(n):
        mine, z = inputs[owner == b], logits[owner == b]
        fooled = z.argmax(1) != y[b]
        assert 1 <= mine.shape[0] <= queries + 1
        assert torch.equal(mine[0], x[b])
        delta = mine[1:] - x[b]
        if isinstance(threat, LinfBall):
            assert torch.allclose(delta.abs(), torch.full_like(delta, 0.3))
        else:
            assert torch.allclose(delta.norm(dim=1), torch.full((delta.shape[0],), 0.45))
        if bool(fooled.any()):
            first = int(fooled.nonzero()[0])
            assert first == mine.shape[0] - 1  # no query after the first success
            assert torch.equal(x_adv[b], mine[first])
            outcomes.add("clean" if first == 0 else "fooled")
        else:
            assert mine.shape[0] == queries + 1
            objective = margin_loss(z, y[b].expand(z.shape[0]))
            best = int(objective.argmax())
            assert torch.equal(x_adv[b], mine[best])
            outcomes.add("robust")
    assert outcomes == {"clean", "fooled", "robust"}  # the test covers all three cases


def test_query_count_and_early_termination() -> None:
    """A model that is fooled already costs one forward; one that cannot be fooled costs
    exactly 1 + restarts·queries forwards per example."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = torch.rand(10, 1, 4, 4)
    with torch.no_grad():
        pred = model(x).argmax(1)
    counting = Counting(model)
    attack = Square(LinfBall(0.0), queries=20, restarts=2)  # ε = 0: never fooled
    assert torch.equal(attack(counting, x, (pred + 1) % 4), x)
    assert (counting.calls, counting.rows) == (1, 10)
    counting = Counting(model)
    attack(counting, x, pred)
    assert counting.rows == 10 * (1 + 2 * 20)
    mixed = torch.where(torch.arange(10) < 4, pred, (pred + 1) % 4)
    counting = Counting(model)
    Square(LinfBall(0.0), queries=20)(counting, x, mixed)
    assert counting.rows == 10 + 4 * 20


def test_no_gradient_is_ever_computed(digits, digits_cnn) -> None:
    x, y = digits.x_test[:20], digits.y_test[:20]
    model = NoGrad(digits_cnn)
    grads = [None if p.grad is None else p.grad.clone() for p in digits_cnn.parameters()]
    with torch.enable_grad():
        for threat in (LinfBall(0.1), L2Ball(0.5)):
            x_adv = Square(threat, queries=20)(model, x, y)
            assert not x_adv.requires_grad
    for p, g in zip(digits_cnn.parameters(), grads):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)


def test_argmax_preprocessing_works() -> None:
    """A model with no autograd path at all (argmax-based preprocessing)."""

    class Argmax(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hot = nn.functional.one_hot(x.flatten(1).argmax(1), x[0].numel())
            return hot[:, :3].float() * 5

    x = torch.zeros(4, 1, 3, 3)
    x[:, 0, 0, 0] = 0.5
    x_adv = Square(LinfBall(0.3), queries=50)(Argmax(), x, torch.zeros(4, dtype=torch.long))
    with torch.no_grad():
        assert bool((Argmax()(x_adv).argmax(1) != 0).all())


@pytest.mark.parametrize("mode", ["eval", "as_is"])
def test_model_state_untouched(mode) -> None:
    from .conftest import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(batchnorm=True, dropout=0.3).train()
    model.head[2].weight.grad = torch.ones_like(model.head[2].weight)
    model.features[0].bias.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    Square(LinfBall(0.1), queries=10, mode=mode)(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model.head[2].weight.grad, torch.ones_like(model.head[2].weight))
    assert model.features[0].weight.grad is None
    assert not model.features[0].bias.requires_grad and model.features[0].weight.requires_grad
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_deterministic_and_leaves_the_global_rng_alone() -> None:
    model = linear(48, 5, seed=0)
    x, y = torch.rand(12, 3, 4, 4), torch.randint(0, 5, (12,))
    outputs = []
    rng = torch.get_rng_state()
    for seed in (0, 0, 1):
        for threat in (LinfBall(0.05), L2Ball(0.3)):
            attack = Square(threat, queries=30)
            outputs.append(attack(model, x, y, generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(outputs[0], outputs[2]) and torch.equal(outputs[1], outputs[3])
    assert not torch.equal(outputs[0], outputs[4]) and not torch.equal(outputs[1], outputs[5])


def test_per_example_eps_and_evaluate(digits, digits_cnn) -> None:
    x, y = digits.x_test[:60], digits.y_test[:60]
    eps = torch.linspace(0.0, 0.3, 60)
    threat = LinfBall(eps)
    x_adv = Square(threat, queries=100)(digits_cnn, x, y, generator=torch.Generator())
    assert within(threat, x, x_adv, eps)
    assert torch.equal(x_adv[0], x[0])  # ε = 0: the clean input
    with torch.no_grad():
        fooled = digits_cnn(x_adv).argmax(1) != y
    assert float(fooled[:20].float().mean()) < float(fooled[40:].float().mean())
    attack = Square(LinfBall(0.15), queries=50)
    assert attack.with_eps(0.2).threat.eps == 0.2 and attack.with_mode("as_is").mode == "as_is"
    report = evaluate(digits_cnn, (x, y), {"clean": None, "square": attack})
    assert report["square"] < report.clean_accuracy


# -- bad arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"queries": 0}, ValueError, "queries"),
        ({"queries": 2.5}, TypeError, "queries"),
        ({"restarts": 0}, ValueError, "restarts"),
        ({"p_init": 0.0}, ValueError, "p_init"),
        ({"p_init": 1.5}, ValueError, "p_init"),
        ({"p_init": float("nan")}, ValueError, "p_init"),
        ({"targeted": 1}, TypeError, "targeted"),
        ({"mode": "train"}, ValueError, "mode"),
        ({"threat": 0.1}, TypeError, "threat"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    kwargs = {"threat": LinfBall(0.1), **kwargs}
    with pytest.raises(error, match=match):
        Square(**kwargs)


def test_bad_inputs() -> None:
    class Other(LinfBall):
        pass

    class L1Ball(ThreatModel):
        p, dual_p = 1.0, float("inf")

        def ascent_direction(self, grad):
            return grad

        def _project_delta(self, delta, eps):
            return delta

        def _random_delta(self, x, eps, generator):
            return torch.zeros_like(x)

    with pytest.raises(TypeError, match="LinfBall and L2Ball"):
        Square(L1Ball(0.1))
    assert Square(Other(0.1)).threat.eps == 0.1  # subclasses are fine
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Square(LinfBall(0.1))(model, torch.rand(2, 3, 3), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="class labels"):
        Square(LinfBall(0.1))(model, torch.rand(2, 9), torch.rand(2, 3).softmax(1))
    with pytest.raises(ValueError, match="labels"):
        Square(LinfBall(0.1))(model, torch.rand(2, 9), torch.tensor([0, 7]))
