"""advtrade.losses.trades_kl against PyTorch's own KL divergence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from advtrade.losses import trades_kl


def _kl_div(logits_adv: torch.Tensor, logits_clean: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p_clean ‖ p_adv) by torch.nn.functional.kl_div."""
    log_adv = F.log_softmax(logits_adv, dim=1)
    return F.kl_div(log_adv, F.softmax(logits_clean, dim=1), reduction="none").sum(dim=1)


@given(
    batch=st.integers(1, 6),
    classes=st.integers(2, 12),
    scale=st.sampled_from([1e-3, 1.0, 10.0, 60.0]),  # 60: probabilities underflow to 0
    seed=st.integers(0, 2**16),
)
def test_trades_kl_is_the_per_example_kl_divergence(batch, classes, scale, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    adv = (torch.randn(batch, classes, generator=gen, dtype=torch.float64) * scale).requires_grad_()
    clean = torch.randn(batch, classes, generator=gen, dtype=torch.float64) * scale
    clean.requires_grad_()
    ours, theirs = trades_kl(adv, clean), _kl_div(adv, clean)
    assert ours.shape == (batch,)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    # ... and so are its gradients, through both arguments (TRADES trains through both)
    weights = torch.rand(batch, generator=gen, dtype=torch.float64)
    ours_grad = torch.autograd.grad((ours * weights).sum(), (adv, clean))
    theirs_grad = torch.autograd.grad((theirs * weights).sum(), (adv, clean))
    for a, b in zip(ours_grad, theirs_grad):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_trades_kl_is_zero_exactly_for_the_same_prediction() -> None:
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(5, 10, generator=gen, dtype=torch.float64)
    shifted = clean + torch.randn(5, 1, generator=gen, dtype=torch.float64)  # same softmax
    torch.testing.assert_close(trades_kl(shifted, clean), torch.zeros(5, dtype=torch.float64))
    assert bool((trades_kl(clean.flip(1), clean) > 0).all())
