"""The exact projection onto a hyperplane intersected with the input box, FAB's inner solve.

For each row, the point of least ℓ∞ or ℓ2 distance to ``t`` on ``{z : ⟨w, z⟩ = b}`` with ``z``
inside the domain. The reference solver of Croce & Hein (2020) sorts the breakpoints where
coordinates hit the box; here Newton's method finds the same root in a few passes over the
row, vectorised over the batch, with the sorted search kept as its fallback.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..threats import Domain

__all__ = ["project_onto_hyperplane", "step_to_plane"]

_L2_NEGLIGIBLE = 1e-12  # ℓ2: weights below this fraction of the largest one count as zero


# -- the projection onto hyperplane ∩ box -----------------------------------------------------


def step_to_plane(t: Tensor, w: Tensor, c: Tensor, p: float, domain: Domain) -> Tensor:
    """For each row: the ``d`` of least ℓp norm (p = ∞ or 2) with ``⟨w, d⟩ = −c`` and ``t + d``
    in the box ``domain`` (unbounded for ``None``); where no such ``d`` exists, the ``d`` that
    moves every coordinate to its face towards the plane (the corner where ⟨w, ·⟩ comes
    closest to b).

    Rows are independent problems: ``t`` and ``w`` are (N, n), ``c`` = ⟨w, t⟩ − b is (N,).
    Coordinates with ``w_i = 0`` never move.

    With the orientation fixed so that c ≥ 0, coordinate i moves by ``−sign(w_i)·m_i`` with room
    ``r_i`` to its face. For ℓ∞, ``m_i = min(λ, r_i)``; for ℓ2 (KKT) ``m_i = min(α|w_i|, r_i)``
    = ``|w_i|·min(α, r_i/|w_i|)``. Both are ``Σ v_i·min(λ, ρ_i) = c`` for a scalar λ
    (ℓ∞: v = |w|, ρ = r; ℓ2: v = w², ρ = r/|w|), a nondecreasing, concave, piecewise-linear
    function of λ with breakpoints at the ρ_i, solved exactly by :func:`_solve_breakpoints`.
    """
    # Orient each row so that c ≥ 0 and scale its largest |w_i| to 1 (the problem is invariant
    # to scaling w and c together); coordinate i then moves by toward_i·m_i, m_i ≥ 0.
    a = w.abs()
    scale = a.amax(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    a = a.div_(scale[:, None])
    toward = w.sign().mul_(torch.where(c < 0, 1.0, -1.0).to(w.dtype)[:, None])
    c = c.abs() / scale
    if p == 2.0:
        a = F.threshold(a, _L2_NEGLIGIBLE, 0.0)  # negligible weights: exactly zero
        v = a * a
    else:
        v = a
    if domain is None:  # no face: λ = c / Σv
        total = v.sum(dim=1)
        lam = torch.where(total > 0, c / torch.where(total > 0, total, 1.0), 0.0)
        m = lam[:, None].expand_as(a)
    else:
        low, high = domain
        # room to the face each coordinate moves to: t − low moving down, high − t up (an
        # exact 0/1 lerp on a float mask; torch.where on a (N, n) bool mask is far slower)
        down = torch.lt(toward, 0, out=torch.empty_like(t))
        room = torch.lerp(high - t, t - low, down).clamp_min_(0.0)
        # ℓ2: ρ = r/|w| (finite where w_i = 0, whose v_i = 0 then keeps it out of the sums)
        rho = room.div_(a.clamp_min(_L2_NEGLIGIBLE)) if p == 2.0 else room
        lam = _solve_breakpoints(v, rho, c)
        m = torch.minimum(lam[:, None], rho)
    if p == 2.0:
        m = a * m
    return toward * m


def _solve_breakpoints(v: Tensor, rho: Tensor, c: Tensor, newton_steps: int = 32) -> Tensor:
    """The least λ ≥ 0 with ``Σ_i v_i·min(λ, ρ_i) = c`` per row (v, ρ ≥ 0, c ≥ 0), or +inf
    where even λ = ∞ falls short.

    Newton's method from λ = 0 on h(λ) = Σ v_i·min(λ, ρ_i), which is concave, nondecreasing
    and piecewise linear: each step lands at or below the root and past every breakpoint its
    tangent skips, and the step from inside the root's segment lands on the root exactly and
    then stands still. On FAB's projections for MNIST a row needs 2 steps on average and at
    most 5, each one pass over the row, where a sort costs several times that. Only rows that
    still move are carried to the next step; rows still moving after ``newton_steps`` (a
    pathological spread of breakpoints) get the sorted solve, :func:`_sorted_breakpoints`.
    """
    vr = v * rho
    feasible = vr.sum(dim=1) >= c  # h(∞) = Σ v_i ρ_i reaches c
    lam = torch.zeros_like(c)
    live = torch.arange(c.shape[0], device=c.device)  # rows whose λ may still move
    rows_v, rows_rho, rows_vr, rows_c = v, rho, vr, c
    if not bool(feasible.all()):
        live, rows_v, rows_rho, rows_vr, rows_c = (
            t[feasible] for t in (live, rows_v, rows_rho, rows_vr, rows_c)
        )
    at = lam[live]
    for _ in range(newton_steps):
        if live.numel() == 0:
            break
        # coordinates still below their face, as a float mask (written directly: a bool
        # comparison and a cast cost ten times more on the CPU)
        free = torch.gt(rows_rho, at[:, None], out=torch.empty_like(rows_rho))
        slope = (free * rows_v).sum(dim=1)
        fixed = torch.addcmul(rows_vr, free, rows_vr, value=-1).sum(dim=1)  # Σ_saturated vρ
        new = (rows_c - fixed) / torch.where(slope > 0, slope, 1.0)
        moved = (slope > 0) & (new > at)
        lam[live] = torch.where(moved, new, at)
        if not bool(moved.all()):
            keep = moved.nonzero().squeeze(1)
            live, rows_v, rows_rho, rows_vr, rows_c, new = (
                t.index_select(0, keep) for t in (live, rows_v, rows_rho, rows_vr, rows_c, new)
            )
        at = new
    if live.numel() > 0:
        lam[live] = _sorted_breakpoints(v[live], rho[live], c[live])
    return torch.where(feasible, lam, torch.full_like(lam, math.inf))


def _sorted_breakpoints(v: Tensor, rho: Tensor, c: Tensor) -> Tensor:
    """:func:`_solve_breakpoints` by sorting: evaluate h at every sorted breakpoint (one sort
    and two cumulative sums) and solve on the segment that holds the root."""
    n = v.shape[1]
    rho_s, order = rho.sort(dim=1)
    v_s = v.gather(1, order)
    prefix = torch.cumsum(v_s * rho_s, dim=1)  # Σ_{i≤j} v_i ρ_i
    suffix = torch.cumsum(v_s.flip(1), dim=1).flip(1)  # Σ_{i≥j} v_i
    after = F.pad(suffix[:, 1:], (0, 1))  # Σ_{i>j} v_i
    at_breaks = torch.cummax(prefix + rho_s * after, dim=1).values  # the sum at λ = ρ_(j)
    k = (at_breaks < c[:, None]).sum(dim=1)  # the solution lies in (ρ_(k−1), ρ_(k)]
    feasible = k < n
    kk = k.clamp(max=n - 1)[:, None]
    before = F.pad(prefix, (1, 0)).gather(1, k[:, None]).squeeze(1)  # Σ_{i<k} v_i ρ_i
    slope = suffix.gather(1, kk).squeeze(1)  # Σ_{i≥k} v_i
    lam = torch.where(slope > 0, (c - before) / torch.where(slope > 0, slope, 1.0), 0.0)
    lower = F.pad(rho_s, (1, 0)).gather(1, k[:, None]).squeeze(1)  # ρ_(k−1), 0 for k = 0
    lam = torch.minimum(torch.maximum(lam, lower), rho_s.gather(1, kk).squeeze(1))
    return torch.where(feasible, lam, torch.full_like(lam, math.inf))


def project_onto_hyperplane(
    t: Tensor, w: Tensor, b: Tensor, *, p: float, domain: Domain = (0.0, 1.0)
) -> Tensor:
    """The smallest move ``d`` (in ℓ∞ or ℓ2) from each row of ``t`` onto ``{z : ⟨w, z⟩ = b}``
    with ``t + d`` inside the box ``domain`` (``None``: unbounded), or, where the plane misses
    the box, the move to the corner where ``⟨w, ·⟩`` comes closest to ``b`` (every coordinate
    to its face towards the plane).

    ``t`` and ``w`` are (N, n), ``b`` is (N,); batched, a few passes per row. This is FAB's
    projection; coordinates with ``w_i = 0`` stay where they are.

    Examples:
        >>> import torch
        >>> t, w, b = torch.tensor([[0.2, 0.9]]), torch.tensor([[1.0, 2.0]]), torch.tensor([2.4])
        >>> project_onto_hyperplane(t, w, b, p=2.0, domain=None)  # along w: 0.9 + 0.16 > 1
        tensor([[0.0800, 0.1600]])
        >>> project_onto_hyperplane(t, w, b, p=2.0)  # in [0, 1]: the second coordinate stops
        tensor([[0.2000, 0.1000]])
    """
    if p not in (math.inf, 2.0):
        raise ValueError(f"p must be inf or 2, got {p!r}")
    c = (w * t).sum(dim=1) - b
    return step_to_plane(t, w, c, p, domain)
