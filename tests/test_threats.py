"""Threat models: the ℓ2 steepest-ascent direction at the edges of floating point, and the
random start on the ball's surface.

A confident example's input gradient can be tiny (1e-30, or subnormal in float32); an ℓ2
attack must still step along g/‖g‖, which a naive float32 ‖g‖ (whose square underflows to 0)
cannot give. The truth is g/‖g‖ computed in float64, or, where float64 underflows too, after
scaling g by a power of two (exact).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import advtrade as at
from advtrade.threats import L2Ball

F32, F64 = torch.float32, torch.float64


def _reference(grad: torch.Tensor, power_of_two: int = 0) -> torch.Tensor:
    """g/‖g‖ per example in float64, from g scaled by 2**power_of_two (an exact scaling)."""
    g = grad.to(F64) * 2.0**power_of_two
    return g / g.flatten(1).norm(dim=1).view(-1, *([1] * (g.ndim - 1)))


CASES = {  # dtype, scale of g, exact rescaling for the reference, tolerance, subnormal g
    "f32-1": (F32, 1.0, 0, 1e-6, False),
    "f32-1e-30": (F32, 1e-30, 0, 1e-6, False),  # ‖g‖² = 1e-60 underflows in float32
    "f32-1e-40": (F32, 1e-40, 0, 1e-6, True),
    "f64-1e-200": (F64, 1e-200, 600, 1e-12, False),  # ‖g‖² underflows in float64
    "f64-1e-310": (F64, 1e-310, 1000, 1e-12, True),
    "f16-1e-6": (torch.float16, 1e-6, 0, 2e-3, True),
    "bf16-1e-40": (torch.bfloat16, 1e-40, 0, 1e-2, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_l2_direction_of_tiny_gradients(case: str) -> None:
    dtype, scale, power_of_two, rtol, subnormal = CASES[case]
    gen = torch.Generator().manual_seed(0)
    grad = (torch.randn(6, 3, 4, 4, generator=gen, dtype=F64) * scale).to(dtype)
    assert bool((grad != 0).any(dim=(1, 2, 3)).all())  # the inputs did not underflow to 0
    assert (float(grad.abs().max()) < torch.finfo(dtype).tiny) == subnormal
    direction = L2Ball(1.0).ascent_direction(grad)
    assert direction.dtype == dtype and direction.shape == grad.shape
    torch.testing.assert_close(direction.to(F64), _reference(grad, power_of_two), rtol=rtol, atol=0)
    norms = direction.to(F64).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(6, dtype=F64), rtol=10 * rtol, atol=0)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_l2_direction_across_scales_in_one_batch(dtype) -> None:
    """Rows from 1e-36 to 1e36 in one batch (each row's norm decides between the one-division
    path and the rescaled one): every row is g/‖g‖ and has unit norm, and a batch of ordinary
    rows takes exactly that division."""
    gen = torch.Generator().manual_seed(1)
    scales = torch.logspace(-36, 36, 25, dtype=F64).view(-1, 1, 1, 1)
    grad = (torch.randn(25, 3, 8, 8, generator=gen, dtype=F64) * scales).to(dtype)
    direction = L2Ball(1.0).ascent_direction(grad)
    torch.testing.assert_close(direction.to(F64), _reference(grad), rtol=1e-6, atol=0)
    ordinary = grad[8:17]  # scales 1e-12 .. 1e12
    expected = ordinary / ordinary.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.equal(L2Ball(1.0).ascent_direction(ordinary), expected)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_l2_direction_of_zero_and_non_finite_gradients(dtype) -> None:
    """A zero gradient gives a zero step (no NaN); NaN counts as 0 and ±inf as ± the row's
    largest finite magnitude, so the direction is finite and the infinite entries share it
    with the finite ones (an attack is not spent on them alone)."""
    inf, nan = float("inf"), float("nan")
    grad = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # zero
            [1e-40, 0.0, 0.0, 0.0],  # tiny, next to a zero row: unaffected by it
            [inf, 1.0, nan, 0.0],  # one infinite entry: as large as the largest finite one
            [-inf, inf, 2.0, nan],  # two: both as large as 2
            [nan, nan, nan, nan],  # nothing finite: zero
        ],
        dtype=dtype,
    )
    direction = L2Ball(1.0).ascent_direction(grad)
    assert bool(torch.isfinite(direction).all())
    s, t = 0.5**0.5, 3**-0.5
    expected = torch.tensor(
        [[0, 0, 0, 0], [1, 0, 0, 0], [s, s, 0, 0], [-t, t, t, 0], [0, 0, 0, 0]], dtype=dtype
    )
    torch.testing.assert_close(direction, expected, rtol=1e-6, atol=1e-30)
    assert torch.equal(direction[[0, 4]], torch.zeros(2, 4, dtype=dtype))


@given(
    norm=st.sampled_from(["linf", "l2"]),
    batch=st.integers(1, 6),
    dim=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    per_example=st.booleans(),
)
def test_surface_start_lies_on_the_sphere(norm, batch, dim, seed, per_example) -> None:
    g = torch.Generator().manual_seed(seed)
    eps = torch.rand(batch, generator=g, dtype=F64) + 0.1 if per_example else 0.3
    cls = at.LinfBall if norm == "linf" else at.L2Ball
    x = torch.randn(batch, dim, generator=g, dtype=F64)
    threat = cls(eps, domain=None)
    start = threat.surface_start(x, torch.Generator().manual_seed(seed))
    expected = eps if per_example else torch.full((batch,), eps, dtype=F64)
    torch.testing.assert_close(threat.norm(start - x), expected)
    again = threat.surface_start(x, torch.Generator().manual_seed(seed))
    assert torch.equal(start, again)  # one seed, one start
    # inside a domain it is clipped, and stays inside ball ∩ domain
    box = cls(eps).surface_start(x.sigmoid(), torch.Generator().manual_seed(seed))
    assert bool(((box >= 0) & (box <= 1)).all())
    assert bool((cls(eps).norm(box - x.sigmoid()) <= expected + 1e-12).all())
