"""FAB (Croce & Hein, ICML 2020): the fast adaptive boundary attack, untargeted and FAB-T.

FAB is a *minimum-norm* attack: rather than climbing a loss inside the ε-ball it searches for
the adversarial point closest to the input, then keeps it only if it lies within ε. Each step
linearises the model at the current iterate, picks the decision boundary that looks closest,
and projects both the iterate and the clean input onto that hyperplane intersected with the
input domain (an exact solve, :func:`project_onto_hyperplane`); the step mixes the two
projections, biased towards the clean input, and overshoots by ``eta``. Once an iterate is
adversarial it is pulled back towards the clean input by ``beta``, so the iterates trace the
boundary inwards. For a linear model the first step is already the exact minimal-norm point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .._outputs import as_logits
from .._validation import check_bool, check_choice, check_int, check_number
from ..guard import ModelMode
from ..losses import margin_loss
from ..threats import ThreatModel
from ._base import Attack
from ._core import Ascent, check_iterative, per_example, pick_rows
from ._hyperplane import project_onto_hyperplane, step_to_plane

__all__ = ["FAB", "project_onto_hyperplane"]

_MIN_STEP = 1e-8  # floor of the two projection lengths in FAB's bias weight (the reference's)


# -- the linearised boundary ------------------------------------------------------------------


def _margin_to_target(logits: Tensor, pairs: Tensor) -> Tensor:
    """``z_t − z_y`` for rows ``[y, t]`` of ``pairs``: positive once t beats y."""
    return logits.gather(1, pairs[:, 1:]).squeeze(1) - logits.gather(1, pairs[:, :1]).squeeze(1)


def _finite(g: Tensor) -> Tensor:
    """``g`` with NaN as 0 and ±inf as the largest finite values (a finite hyperplane)."""
    big = torch.finfo(g.dtype).max
    return torch.nan_to_num(g, nan=0.0, posinf=big, neginf=-big)


def _closest_boundary(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel
) -> tuple[Tensor, Tensor]:
    """At ``x``: ``f = z_k − z_y`` and ``w = ∇ₓ(z_k − z_y)`` (flattened) for the class k ≠ y
    whose linearised boundary is nearest, ``|f| / ‖w‖_*``. One forward pass and one backward
    pass per class (the Jacobian), keeping only the running nearest."""
    x = x.detach().requires_grad_(True)
    logits = as_logits(model(x), x.shape[0])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    diff = logits - logits.gather(1, y[:, None])
    n, classes = diff.shape
    best = torch.full((n,), math.inf, device=x.device, dtype=diff.dtype)
    f = torch.zeros(n, device=x.device, dtype=diff.dtype)
    w = torch.zeros(n, x[0].numel(), device=x.device, dtype=x.dtype)
    for k in range(classes):
        (g,) = torch.autograd.grad(diff[:, k].sum(), x, retain_graph=k < classes - 1)
        g = _finite(g.flatten(1))
        fk = diff[:, k].detach()
        norm = threat.dual_norm(g.to(diff.dtype), dim=1)
        dist = fk.abs() / torch.where(norm > 0, norm, 1.0)
        dist = torch.where((norm > 0) & (y != k) & torch.isfinite(fk), dist, math.inf)
        nearer = dist < best
        best = torch.where(nearer, dist, best)
        f = torch.where(nearer, fk, f)
        w = torch.where(nearer[:, None], g, w)
    return f, w


# -- the attack -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FAB(Attack):
    """FAB (Croce & Hein 2020), the minimum-norm attack of AutoAttack, for ℓ∞ and ℓ2.

    Each of ``steps`` iterations linearises the model at the iterate x₁, takes the boundary
    between the true class and the class k whose linearised boundary is nearest, and projects
    both x₁ and the clean x₀ onto that hyperplane ∩ domain (``d₁``, ``d₀``, exact solves). The
    next iterate is ``(1−α)(x₁ + eta·d₁) + α(x₀ + eta·d₀)`` with ``α = min(‖d₁‖/(‖d₁‖+‖d₀‖),
    alpha_max)``; an adversarial iterate is recorded if it is the nearest so far and then pulled
    back to ``x₀ + beta·(x₁ − x₀)``. The result, per example, is the nearest adversarial point
    found when its norm is at most ε (so inside ball ∩ domain), and the clean input otherwise:
    FAB never projects a too-distant point into the ball. Examples misclassified at the input
    come back unchanged; ``restarts`` rerun the examples not yet fooled within ε from random
    starts in the ball of radius ε/2 (the threat's own random start; the first run starts at
    x₀ unless ``random_start``).

    FAB-T: ``target_classes=k`` replaces the nearest-boundary choice by one run per target, the
    1st … k-th most likely wrong class at the clean input (``restarts`` runs each, only on the
    examples still robust), each linearising only ``z_t − z_y``: one backward pass per step
    instead of one per class. AutoAttack uses ``FAB(threat, target_classes=9)``. There is no
    ``targeted=True``: in advtrade ``targeted`` means that ``y`` holds *target* classes (and
    :func:`~advtrade.evaluate` refuses such attacks), whereas FAB-T takes the *true* labels and
    succeeds on any misclassification, as in AutoAttack; so ``targeted`` stays ``False`` and the
    target count is its own field. With C classes at most C − 1 targets exist (checked at the
    call).

    Cost per run: ``steps`` × (one forward pass and C backward passes — one with FAB-T — plus a
    forward pass to check the new iterate).

    Examples:
        A linear model whose logits are the input itself: class 0 wins iff x0 > x1, so the
        nearest misclassified point of (0.6, 0.4) is 0.1 away in ℓ∞.

        >>> import torch
        >>> from torch import nn
        >>> from advtrade import LinfBall
        >>> from advtrade.attacks import FAB
        >>> model = nn.Linear(2, 2, bias=False)
        >>> model.weight = nn.Parameter(torch.eye(2))
        >>> x, y = torch.tensor([[0.6, 0.4]]), torch.tensor([0])
        >>> x_adv = FAB(LinfBall(0.15), steps=10)(model, x, y)
        >>> model(x_adv).argmax(1), round(float((x_adv - x).abs().max()), 2)
        (tensor([1]), 0.1)
        >>> torch.equal(FAB(LinfBall(0.09), steps=10)(model, x, y), x)  # none within ε
        True
    """

    threat: ThreatModel
    steps: int = 100
    restarts: int = 1
    target_classes: int | None = None
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    random_start: bool = False
    early_stop: bool = False
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        check_iterative(self, self.threat, steps=self.steps, restarts=self.restarts)
        if self.threat.p not in (math.inf, 2.0):
            raise TypeError(
                f"FAB supports the ℓ∞ and ℓ2 threat models (LinfBall, L2Ball), got "
                f"{type(self.threat).__name__} with p={self.threat.p}"
            )
        if self.target_classes is not None:
            check_int("target_classes", self.target_classes, minimum=1)
        check_number("alpha_max", self.alpha_max, minimum=0.0, maximum=1.0)
        check_number("eta", self.eta, minimum=1.0)
        check_number("beta", self.beta, minimum=0.0, maximum=1.0, strict=True)
        check_bool("random_start", self.random_start)
        check_choice("mode", self.mode, ("eval", "as_is"))

    def with_threat(self, threat: ThreatModel) -> FAB:
        return replace(self, threat=threat)

    def with_early_stop(self) -> FAB:
        return replace(self, early_stop=True)

    def with_mode(self, mode: ModelMode) -> FAB:
        return replace(self, mode=mode)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        if y.is_floating_point():
            raise TypeError("FAB needs class labels y, not a distribution target")
        check = Ascent(model, y, margin_loss)
        clean = check(x, grad=False)
        y = check.y  # class indices (±1 binary labels mapped to 0/1)
        classes = clean.logits.shape[1]
        targets: list[int | None] = [None]
        ranked = None
        if self.target_classes is not None:
            if self.target_classes > classes - 1:
                raise ValueError(
                    f"target_classes={self.target_classes} needs a model with at least "
                    f"{self.target_classes + 1} classes; this model outputs {classes}. Use "
                    f"target_classes <= {classes - 1}"
                )
            # Wrong classes by decreasing clean score: column k is each example's (k+1)-th target.
            masked = clean.logits.scatter(1, y[:, None], -math.inf)
            ranked = masked.argsort(dim=1, descending=True)
            targets = list(range(self.target_classes))
        assert clean.fooled is not None
        robust = ~clean.fooled
        out = x
        for k in targets:
            for restart in range(self.restarts):
                todo = robust.nonzero().squeeze(1)
                if todo.numel() == 0:
                    return out
                target = None if ranked is None or k is None else ranked[todo, k]
                found, ok = self._run(
                    model,
                    x[todo],
                    y[todo],
                    target,
                    self.threat.select(todo),
                    self.random_start or restart > 0,
                    generator,
                )
                out = out.index_put((todo[ok],), found[ok])
                robust[todo[ok]] = False
        return out

    def _run(
        self,
        model: nn.Module,
        x0: Tensor,
        y: Tensor,
        target: Tensor | None,
        threat: ThreatModel,
        random: bool,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """One FAB run from x₀ (or a random start): each example's nearest adversarial point
        found (x₀ where none), and whether it was found within ε."""
        n, dtype = x0.shape[0], x0.dtype
        work = torch.promote_types(dtype, torch.float32)  # the projections' precision
        if target is None:
            check = Ascent(model, y, margin_loss)

            def boundary(z: Tensor) -> tuple[Tensor, Tensor]:
                return _closest_boundary(model, z, y, threat)

        else:
            check = Ascent(model, y, _margin_to_target, loss_target=torch.stack([y, target], 1))

            def boundary(z: Tensor) -> tuple[Tensor, Tensor]:
                point = check(z, score=False)
                assert point.grad is not None
                return point.objective.detach(), _finite(point.grad.flatten(1))

        start = x0
        if random:
            half = threat.eps / 2
            start = threat.with_eps(half).random_start(x0, generator)
        eps_all = threat.eps
        if isinstance(eps_all, Tensor):
            eps_all = eps_all.to(device=x0.device, dtype=work)
        x1 = start.to(work)
        origin = x0.to(work)
        best = x0
        best_norm = torch.full((n,), math.inf, device=x0.device, dtype=work)
        # with early_stop, an example leaves once it has an adversarial point within ε
        out, out_norm = best, best_norm.clone()
        active = torch.arange(n, device=x0.device)
        for _ in range(self.steps):
            flat0 = origin.flatten(1)
            f, w = boundary(x1.to(dtype))
            with torch.no_grad():
                f, w = f.to(work), w.to(work)
                flat1 = x1.flatten(1)
                # c = ⟨w, t⟩ − b for the plane {z : f + ⟨w, z − x₁⟩ = 0}, at t = x₁ and t = x₀
                c = torch.cat([f, f + ((flat0 - flat1) * w).sum(dim=1)])
                d = step_to_plane(
                    torch.cat([flat1, flat0]), torch.cat([w, w]), c, threat.p, threat.domain
                )
                lengths = threat.norm(d).clamp_min(_MIN_STEP)
                m = x1.shape[0]
                a1, a0 = lengths[:m], lengths[m:]
                alpha = (a1 / (a1 + a0)).clamp(0.0, self.alpha_max)[:, None]
                moved = (1 - alpha) * (flat1 + self.eta * d[:m]) + alpha * (
                    flat0 + self.eta * d[m:]
                )
                x1 = threat.clip_domain(moved.view_as(origin))
                x1 = torch.where(torch.isfinite(x1), x1, origin)
                candidate = x1.to(dtype)
            fooled = check(candidate, grad=False).fooled
            assert fooled is not None
            with torch.no_grad():
                dist = threat.norm(candidate.to(work) - origin)
                nearer = fooled & (dist < best_norm)
                best = pick_rows(nearer, candidate, best)
                best_norm = torch.where(nearer, dist, best_norm)
                x1 = torch.where(per_example(fooled, x1), torch.lerp(origin, x1, self.beta), x1)
            if self.early_stop:
                eps = eps_all if not isinstance(eps_all, Tensor) else eps_all[active]
                done = best_norm <= eps
                if bool(done.any()):
                    out = out.index_put((active[done],), best[done])
                    out_norm = out_norm.index_put((active[done],), best_norm[done])
                    keep = ~done
                    if not bool(keep.any()):
                        return out, out_norm <= eps_all
                    active, x1, origin, best, best_norm, y = (
                        t[keep] for t in (active, x1, origin, best, best_norm, y)
                    )
                    check = check.select(keep)
                    threat = threat.select(keep.nonzero().squeeze(1))
                    if target is not None:
                        target = target[keep]
        if self.early_stop:
            out = out.index_put((active,), best)
            out_norm = out_norm.index_put((active,), best_norm)
            return out, out_norm <= eps_all
        eps = threat.eps
        if isinstance(eps, Tensor):
            eps = eps.to(device=x0.device, dtype=work)
        ok = best_norm <= eps
        return best, ok
