"""Square Attack (Andriushchenko et al., ECCV 2020): a score-based black-box attack.

Square is a random search that only reads the model's logits: each query changes the current
point inside one random square window and keeps the change if the margin drops. It needs no
gradient, so a model that masks its gradients (input quantisation, argmax preprocessing,
non-differentiable layers) cannot hide from it; that is why AutoAttack runs it last, as the
check on the gradient attacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .._validation import check_bool, check_choice, check_number
from ..guard import ModelMode
from ..losses import margin_loss
from ..threats import L2Ball, LinfBall, ThreatModel
from ._base import Attack
from ._core import Ascent, Best, Point, check_iterative, pick_rows

__all__ = ["Square"]

# AutoAttack's p schedule with resc_schedule=False: (last iteration, divisor of p_init).
_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def _p(p_init: float, it: int) -> float:
    """The fraction of the image's pixels a window covers at (0-based) iteration ``it``."""
    for last, divisor in _SCHEDULE:
        if it <= last:
            return p_init / divisor
    return p_init / 512


def _window(p: float, h: int, w: int, *, l2: bool) -> tuple[int, int]:
    """Window height and width covering about ``p·h·w`` pixels.

    As in the reference: side ``round(√(p·h·w))``, at least 1 (ℓ∞) or 3 and odd (ℓ2), at most
    the image. Where that side does not fit the shorter image side (non-square or flat inputs),
    the window spans the shorter side and stretches along the longer one to keep its area.
    """
    area = p * h * w
    smallest = 3 if l2 else 1
    s = max(round(math.sqrt(area)), smallest)
    if l2 and s % 2 == 0:
        s += 1
    if s <= min(h, w):
        return s, s
    if h <= w:
        return h, min(w, max(round(area / h), min(smallest, w)))
    return min(h, max(round(area / w), min(smallest, h))), w


def _rectangles(a: int, b: int) -> Tensor:
    """An (a, b) bump: nested rectangles around the centre with weights 1, 1/4, 1/9, ...,
    of unit ℓ2 norm (float64, CPU)."""
    out = torch.zeros(a, b, dtype=torch.float64)
    if a == 0 or b == 0:
        return out
    ca, cb = a // 2, b // 2
    for n in range(max(ca, cb) + 1):
        out[max(ca - n, 0) : ca + n + 1, max(cb - n, 0) : cb + n + 1] += 1.0 / (n + 1) ** 2
    return out / out.norm()


def _pseudo_gaussian(h: int, w: int) -> tuple[Tensor, Tensor]:
    """The two orientations of the ℓ2 window pattern ("meta pseudo-gaussian"): a positive bump
    in one half and a negative one in the other, split across the rows and across the columns
    (for a square window, transposes of each other). Unit ℓ2 norm, float64, CPU."""
    rows = torch.cat([_rectangles(h // 2, w), -_rectangles(h - h // 2, w)], dim=0)
    cols = torch.cat([_rectangles(h, w // 2), -_rectangles(h, w - w // 2)], dim=1)
    return rows / rows.norm(), cols / cols.norm()


def _norm(v: Tensor, dims: tuple[int, ...]) -> Tensor:
    return v.square().sum(dim=dims, keepdim=True).sqrt()


def _safe_div(v: Tensor, norm: Tensor) -> Tensor:
    """``v / norm`` where the norm is positive, 0 where it is 0 (no guard to underflow in fp16)."""
    return v / torch.where(norm > 0, norm, torch.ones_like(norm))


def _draw(generator: torch.Generator | None, size: tuple[int, ...], device: torch.device) -> Tensor:
    """Uniform [0, 1) floats drawn on the generator's device, then moved to ``device``."""
    where = device if generator is None else generator.device
    return torch.rand(size, generator=generator, device=where).to(device)


def _windows(u: Tensor, sh: int, sw: int, h: int, w: int) -> tuple[Tensor, Tensor]:
    """The rows (B, m, sh) and columns (B, m, sw) of m random sh × sw windows per example in
    an H × W image, from uniforms ``u`` (B, 2m): each window's (top, left) corner is uniform
    over every position where it fits."""
    m = u.shape[1] // 2
    free = torch.tensor([h - sh + 1, w - sw + 1] * m, device=u.device)
    corner = torch.minimum((u * free.to(u.dtype)).long(), free - 1)
    rows = corner[:, 0::2, None] + torch.arange(sh, device=u.device)
    cols = corner[:, 1::2, None] + torch.arange(sw, device=u.device)
    return rows, cols


def _pixels(rows: Tensor, cols: Tensor, w: int) -> Tensor:
    """(B, m, sh·sw) flat pixel indices (row-major over an H × W image) of the windows
    :func:`_windows` drew: their pixels, gathered or scattered without touching the rest."""
    n, m, sh = rows.shape
    return (rows[..., :, None] * w + cols[..., None, :]).view(n, m, sh * cols.shape[-1])


@dataclass(frozen=True)
class Square(Attack):
    """Square Attack (Andriushchenko et al., ECCV 2020): gradient-free random search on the
    margin, for ℓ∞ and ℓ2 threat models; AutoAttack's check on gradient masking.

    Each query changes the current point in one random square window covering a fraction p of
    the pixels (p shrinks from ``p_init`` on AutoAttack's fixed schedule) and keeps the change
    if the margin ``z_y − max_{j≠y} z_j`` drops (targeted: if ``z_t − max_{j≠t} z_j`` grows).
    ℓ∞ starts from vertical stripes of ±ε and sets the window to x ± ε (one random sign per
    channel); ℓ2 starts from a grid of ±bumps and moves the perturbation's mass from a second
    random window into the first one, rescaled to ‖δ‖₂ = ε. Every point is clipped to ball ∩
    domain. Windows and signs are drawn per example (as in the paper; AutoAttack shares them
    across the batch), at no extra query. Only forward passes run, under ``torch.no_grad``.

    Inputs are images (B, C, H, W); flat inputs (B, D) are searched as one row of D pixels
    (windows become segments). Each example stops being queried at its first success, which is
    what it returns (AutoAttack's choice); an example never fooled returns the highest-margin
    point queried, its clean input included. Cost per example: one forward at the clean input,
    then at most ``queries`` forwards per restart (``restarts`` rerun the examples still
    robust from a new random start); an example misclassified at the start costs one forward.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from advtrade import LinfBall
        >>> from advtrade.attacks import Square
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> model[1].weight = nn.Parameter(torch.tensor([[1.0, -1.0, 1.0, -1.0], [0.0] * 4]))
        >>> x, y = torch.tensor([[[[0.55, 0.5], [0.5, 0.5]]]]), torch.tensor([0])
        >>> model(x).argmax(1)  # z0 = x00 − x01 + x10 − x11 = 0.05 > z1 = 0
        tensor([0])
        >>> attack = Square(LinfBall(0.05), queries=100)
        >>> x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(0))
        >>> model(x_adv).argmax(1), bool((x_adv - x).abs().max() <= 0.05 + 1e-6)
        (tensor([1]), True)
    """

    threat: ThreatModel
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    targeted: bool = False
    mode: ModelMode = "eval"

    def __post_init__(self) -> None:
        check_iterative(self, self.threat, queries=self.queries, restarts=self.restarts)
        if not isinstance(self.threat, (LinfBall, L2Ball)):
            raise TypeError(
                f"Square supports LinfBall and L2Ball threat models, got "
                f"{type(self.threat).__name__}"
            )
        check_number("p_init", self.p_init, minimum=0.0, maximum=1.0, strict=True)
        check_bool("targeted", self.targeted)
        check_choice("mode", self.mode, ("eval", "as_is"))

    def with_threat(self, threat: ThreatModel) -> Square:
        return replace(self, threat=threat)

    def with_mode(self, mode: ModelMode) -> Square:
        return replace(self, mode=mode)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None
    ) -> Tensor:
        if y.is_floating_point():
            raise TypeError("Square needs class labels y, not a distribution target")
        if x.ndim == 2:
            image = x.view(x.shape[0], 1, 1, x.shape[1])
        elif x.ndim == 4:
            image = x
        else:
            raise ValueError(
                f"Square attacks images of shape (B, C, H, W) or flat inputs of shape (B, D); "
                f"got x of shape {tuple(x.shape)}"
            )
        self.threat.eps_like(x)  # one budget per example, or raise
        if image[0].numel() == 0:
            return x.clone()
        ascent = Ascent(model, y, margin_loss, targeted=self.targeted)

        def query(run: Ascent, z: Tensor) -> Point:
            return run(z.reshape(z.shape[0], *x.shape[1:]), grad=False)

        best = Best.start(image, query(ascent, image))  # also checks labels and logits
        for _ in range(self.restarts):
            todo = (~best.fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            threat = self.threat.select(todo)
            result = self._run(ascent.select(todo), query, image[todo], threat, generator)
            best.merge(todo, result)
        return best.x.reshape(x.shape)

    def _run(
        self,
        ascent: Ascent,
        query: Callable[[Ascent, Tensor], Point],
        x: Tensor,
        threat: ThreatModel,
        generator: torch.Generator | None,
    ) -> Best:
        """One run from a random start on examples (B, C, H, W) all still robust: the
        highest-objective point of each, or its first success."""
        n, c, h, w = x.shape
        l2 = isinstance(threat, L2Ball)
        eps_all = torch.as_tensor(threat.eps_like(x), dtype=x.dtype, device=x.device)
        eps_all = eps_all.expand(n, 1, 1, 1)
        project = threat.projector(x)
        if l2:
            start = x + eps_all * self._blocks(x, generator)
        else:
            signs = _draw(generator, (n, c, 1, w), x.device) < 0.5
            start = x + eps_all * torch.where(signs, -1.0, 1.0).to(x.dtype)
        cur = project(start)
        point = query(ascent, cur)
        assert point.fooled is not None
        obj = torch.nan_to_num(point.objective, nan=-torch.inf)
        out = Best(cur, point.fooled.clone(), obj)
        active = torch.arange(n, device=x.device)
        fooled = point.fooled
        x_act, eps = x, eps_all
        patterns: dict[tuple[int, int], tuple[Tensor, ...]] = {}  # ℓ2 bumps by window size
        for it in range(self.queries - 1):
            if bool(fooled.any()):  # the fooled examples leave: keep the rest
                keep = ~fooled
                active, x_act, cur, obj = active[keep], x_act[keep], cur[keep], obj[keep]
                if active.numel() == 0:
                    break
                eps, ascent = eps[keep], ascent.select(keep)
                project = threat.select(active).projector(x_act)
            sh, sw = _window(_p(self.p_init, it), h, w, l2=l2)
            if l2:
                if (sh, sw) not in patterns:
                    patterns[sh, sw] = tuple(
                        t.to(device=x.device, dtype=x.dtype) for t in _pseudo_gaussian(sh, sw)
                    )
                candidate = project(
                    self._l2_step(x_act, cur, eps, sh, sw, patterns[sh, sw], generator)
                )
            else:
                candidate = project(self._linf_step(cur, eps, sh, sw, generator))
            point = query(ascent, candidate)
            assert point.fooled is not None
            fooled = point.fooled
            better = fooled | (point.objective > obj)  # NaN never improves
            cur = pick_rows(better, candidate, cur)
            obj = torch.where(better, point.objective, obj)
            if bool(fooled.any()):
                rows = (active[fooled],)
                out.x = out.x.index_put(rows, cur[fooled])
                out.loss = out.loss.index_put(rows, obj[fooled])
                out.fooled = out.fooled.index_put(rows, fooled[fooled])
        else:
            keep = ~fooled
            active, cur, obj = active[keep], cur[keep], obj[keep]
        out.x = out.x.index_put((active,), cur)
        out.loss = out.loss.index_put((active,), obj)
        return out

    @staticmethod
    def _linf_step(
        cur: Tensor, eps: Tensor, sh: int, sw: int, generator: torch.Generator | None
    ) -> Tensor:
        """``cur`` with one random window per example moved by 2ε·σ (σ = ±1 per channel); the
        projection then sets the window to x ± ε. Only the window's pixels are computed."""
        n, c, h, w = cur.shape
        u = _draw(generator, (n, 2 + c), cur.device)
        index = _pixels(*_windows(u[:, :2], sh, sw, h, w), w).expand(n, c, sh * sw)
        sign = torch.where(u[:, 2:] < 0.5, -2.0, 2.0).to(cur.dtype).view(n, c, 1)
        flat = cur.reshape(n, c, h * w)
        moved = torch.addcmul(flat.gather(2, index), eps.view(n, 1, 1), sign)
        return flat.clone().scatter_(2, index, moved).view_as(cur)

    @staticmethod
    def _l2_step(
        x: Tensor,
        cur: Tensor,
        eps: Tensor,
        sh: int,
        sw: int,
        patterns: tuple[Tensor, ...],
        generator: torch.Generator | None,
    ) -> Tensor:
        """The reference's ℓ2 update: per channel, the mass of δ in windows W1 ∪ W2 (and any
        unused budget) goes to W1 as a ±bump added to W1's old direction; W2 is zeroed; the
        whole perturbation is rescaled to ‖δ‖₂ = ε. The windows are gathered and scattered,
        so apart from δ's norms and the final rescale no step touches the whole image."""
        n, c, h, w = x.shape
        k = sh * sw
        u = _draw(generator, (n, 5 + c), x.device)
        rows, cols = _windows(u[:, :4], sh, sw, h, w)  # W1 and W2
        pixels = _pixels(rows, cols, w)
        in1, in2 = pixels[:, :1].expand(n, c, k), pixels[:, 1:].expand(n, c, k)
        # which pixels of W2 lie in W1 as well
        r, cl = rows[:, 1], cols[:, 1]
        r = (r >= rows[:, :1, 0]) & (r <= rows[:, :1, -1])
        cl = (cl >= cols[:, :1, 0]) & (cl <= cols[:, :1, -1])
        overlap = (r[:, :, None] & cl[:, None, :]).view(n, 1, k)
        pattern = torch.where(
            (u[:, 4] < 0.5).view(n, 1), patterns[0].reshape(1, k), patterns[1].reshape(1, k)
        )
        sign = torch.where(u[:, 5:] < 0.5, -1.0, 1.0).to(x.dtype).view(n, c, 1)
        delta = (cur - x).reshape(n, c, h * w)
        old = delta.gather(2, in1)  # δ on W1, per channel
        only2 = delta.gather(2, in2).masked_fill(overlap, 0.0)  # δ on W2 \ W1
        old_norm = _norm(old, (-1,))
        new = torch.addcmul(_safe_div(old, old_norm), pattern[:, None, :], sign)
        eps = eps.view(n, 1, 1)
        spare = (eps.square() - _norm(delta, (1, 2)).square()).clamp_min(0) / c
        size = (spare + old_norm.square() + _norm(only2, (-1,)).square()).sqrt()
        new = _safe_div(new, _norm(new, (-1,))) * size
        delta = delta.clone().scatter_(2, in2, 0.0).scatter_(2, in1, new)
        return torch.addcmul(
            x, _safe_div(delta, _norm(delta, (1, 2))).view_as(x), eps.view(n, 1, 1, 1)
        )

    @staticmethod
    def _blocks(x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The ℓ2 start's direction (unit norm): a grid of about 5 × 5 blocks of side ~H/5,
        each holding a ±bump in a random orientation, with a random sign per channel."""
        n, c, h, w = x.shape
        bh, bw = max(h // 5, 1), max(w // 5, 1)
        tops = [max((h - 5 * bh) // 2, 0) + k * bh for k in range(h // bh)]
        lefts = [max((w - 5 * bw) // 2, 0) + k * bw for k in range(w // bw)]
        tops, lefts = [t for t in tops if t + bh <= h], [v for v in lefts if v + bw <= w]
        rows, cols = _pseudo_gaussian(bh, bw)
        rows, cols = rows.to(x.device, x.dtype), cols.to(x.device, x.dtype)
        u = _draw(generator, (len(tops) * len(lefts), n, 1 + c), x.device)
        delta = torch.zeros_like(x)
        for k, (top, left) in enumerate((t, v) for t in tops for v in lefts):
            pattern = torch.where((u[k, :, 0] < 0.5).view(n, 1, 1), rows, cols)
            sign = torch.where(u[k, :, 1:] < 0.5, -1.0, 1.0).to(x.dtype).view(n, c, 1, 1)
            delta[:, :, top : top + bh, left : left + bw] += pattern[:, None] * sign
        return _safe_div(delta, _norm(delta, (1, 2, 3)))
