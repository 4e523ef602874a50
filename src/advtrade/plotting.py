"""Figures: image grids for the paper's section 3 and simple curves (matplotlib, optional extra).

matplotlib is imported lazily (``pip install 'advtrade[plot]'``) and only through its
object-oriented API with the Agg canvas: nothing here touches pyplot's global state, opens a
window or changes the user's backend. Every helper writes a PNG of a size fixed in pixels and
returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ._validation import check_int
from .perception import PerceptionPanel, normalize_for_display

__all__ = ["require_matplotlib", "save_curves", "save_image_grid", "save_perception_figure"]

_TITLE_PX = 20  # height of a block title line
_LABEL_PX = 16  # height of a column-label line
_ROW_LABEL_PX = 44  # width of the row-label margin


def require_matplotlib() -> ModuleType:
    """Import and return matplotlib, or raise an ImportError naming the ``plot`` extra."""
    try:
        import matplotlib
        from matplotlib.backends import backend_agg  # noqa: F401  (fail early if Agg is absent)
    except ImportError as exc:
        raise ImportError(
            "advtrade's figures need the optional dependency 'matplotlib'; install it with: "
            "pip install 'advtrade[plot]'"
        ) from exc
    return matplotlib


def _check_path(path: str | Path) -> Path:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png (figures are written as PNG), got {str(out)!r}")
    return out


def _check_images(images: object, name: str, ndim: int = 4) -> Tensor:
    """Images must be a real tensor (..., C, H, W) with C in {1, 3} and ``ndim`` dimensions."""
    layout = "(B, C, H, W)" if ndim == 4 else "(rows, cols, C, H, W)"
    if not isinstance(images, Tensor) or images.is_complex() or images.dtype == torch.bool:
        got = type(images).__name__ if not isinstance(images, Tensor) else f"dtype {images.dtype}"
        raise TypeError(f"{name} must be a real tensor of images {layout}, got {got}")
    if images.ndim != ndim or images.shape[-3] not in (1, 3) or min(images.shape) == 0:
        raise ValueError(
            f"{name} must be non-empty images of shape {layout} with C = 1 (grey) or 3 (RGB) "
            f"channels, got shape {tuple(images.shape)}"
        )
    return images.detach().float().cpu()


def _new_figure(width_px: int, height_px: int, dpi: int) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)  # only once every argument has been checked
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _draw_block(
    fig: Any,
    images: Tensor,
    *,
    left: int,
    top: int,
    cell: int,
    size: tuple[int, int],
    title: str | None,
    col_labels: Sequence[str] | None,
) -> None:
    """Draw a (rows, cols, C, H, W) grid whose top-left corner is at pixel (left, top)."""
    width, height = size
    fontsize = max(6.0, min(10.0, cell / 6)) * 72 / fig.dpi
    if title:
        block_w = images.shape[1] * cell
        fig.text(
            (left + block_w / 2) / width,
            1 - (top + _TITLE_PX / 2) / height,
            title,
            ha="center",
            va="center",
            fontsize=fontsize * 1.2,
            weight="bold",
        )
        top += _TITLE_PX
    if col_labels is not None:
        for j, label in enumerate(col_labels):
            fig.text(
                (left + (j + 0.5) * cell) / width,
                1 - (top + _LABEL_PX / 2) / height,
                str(label),
                ha="center",
                va="center",
                fontsize=fontsize,
            )
        top += _LABEL_PX
    for i in range(images.shape[0]):
        for j in range(images.shape[1]):
            rect = (
                (left + j * cell + 1) / width,
                1 - (top + (i + 1) * cell - 1) / height,
                (cell - 2) / width,
                (cell - 2) / height,
            )
            ax = fig.add_axes(rect)
            ax.set_axis_off()
            img = images[i, j].clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")


def _check_labels(labels: Sequence[str] | None, count: int, name: str) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(v) for v in labels]
    if len(labels) != count:
        raise ValueError(f"{name} must have {count} entries, got {len(labels)}")
    return labels


def _draw_row_labels(
    fig: Any, labels: list[str], top: int, cell: int, size: tuple[int, int]
) -> None:
    width, height = size
    fontsize = max(6.0, min(10.0, cell / 6)) * 72 / fig.dpi
    for i, label in enumerate(labels):
        fig.text(
            (_ROW_LABEL_PX - 4) / width,
            1 - (top + (i + 0.5) * cell) / height,
            label,
            ha="right",
            va="center",
            fontsize=fontsize,
        )


def save_image_grid(
    path: str | Path,
    images: Tensor,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_px: int = 48,
    dpi: int = 100,
) -> Path:
    """Save a (rows, cols, C, H, W) tensor of images in [0, 1] as a PNG grid; returns the path.

    C is 1 (grey) or 3 (RGB); values outside [0, 1] are clipped. The image is exactly
    ``cols·cell_px (+44 with row labels)`` pixels wide and ``rows·cell_px (+20 with a title,
    +16 with column labels)`` high.
    """
    out = _check_path(path)
    grid = _check_images(images, "images", ndim=5)
    cell, dpi = check_int("cell_px", cell_px, minimum=8), check_int("dpi", dpi, minimum=10)
    rows, cols = grid.shape[:2]
    rlabels = _check_labels(row_labels, rows, "row_labels")
    clabels = _check_labels(col_labels, cols, "col_labels")
    left = _ROW_LABEL_PX if rlabels else 0
    top = (_TITLE_PX if title else 0) + (_LABEL_PX if clabels else 0)
    size = (left + cols * cell, top + rows * cell)
    fig = _new_figure(*size, dpi)
    _draw_block(fig, grid, left=left, top=0, cell=cell, size=size, title=title, col_labels=clabels)
    if rlabels:
        _draw_row_labels(fig, rlabels, top, cell, size)
    return _save(fig, out, dpi)


def save_perception_figure(
    path: str | Path,
    panels: Mapping[str, PerceptionPanel],
    *,
    n: int = 5,
    max_rows: int = 10,
    percentile: float = 99.0,
    cell_px: int = 48,
    dpi: int = 100,
) -> Path:
    """The paper's section-3 figure: for each model side by side, gradients, large-ε examples
    and the interpolation from each input to its large-ε example; returns the PNG path.

    ``panels`` maps a model name (e.g. "standard", "robust") to its
    :class:`~advtrade.perception.PerceptionPanel` for the same inputs. The first column shows
    the inputs; each model's block shows −∇ₓL(x, y) (signed, see
    :func:`~advtrade.perception.normalize_for_display`), then x + t·(x_adv − x) for
    t = 1/(n−1), …, 1 (the last is the large-ε example). Rows are labelled "y→target".
    """
    out = _check_path(path)
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError("panels must be a non-empty mapping of model name -> PerceptionPanel")
    n = check_int("n", n, minimum=2)
    rows_max = check_int("max_rows", max_rows, minimum=1)
    cell, dpi = check_int("cell_px", cell_px, minimum=8), check_int("dpi", dpi, minimum=10)
    first = next(iter(panels.values()))
    for name, panel in panels.items():
        if not isinstance(panel, PerceptionPanel):
            raise TypeError(f"panels[{name!r}] must be a PerceptionPanel, got {type(panel)}")
        _check_images(panel.x, f"panels[{name!r}].x")
        if panel.x.shape != first.x.shape or not torch.equal(panel.x, first.x):
            raise ValueError("every panel must show the same inputs x (same tensor values)")
    x = _check_images(first.x, "x")[:rows_max]
    rows = x.shape[0]
    ts = [k / (n - 1) for k in range(1, n)]
    labels = ["−∇ₓL"] + [f"t={t:.2g}" for t in ts[:-1]] + ["x_adv"]
    blocks = []
    for panel in panels.values():
        grad = normalize_for_display(-panel.gradient[:rows].detach().float().cpu(), percentile)
        path_imgs = panel.path(n)[:rows, 1:].detach().float().cpu()
        blocks.append(torch.cat([grad.unsqueeze(1), path_imgs], dim=1))
    gap = cell // 2
    widths = [cell] + [b.shape[1] * cell for b in blocks]
    size = (_ROW_LABEL_PX + sum(widths) + gap * len(blocks), _TITLE_PX + _LABEL_PX + rows * cell)
    fig = _new_figure(*size, dpi)
    kw = {"top": 0, "cell": cell, "size": size}
    _draw_block(fig, x.unsqueeze(1), left=_ROW_LABEL_PX, title="input", col_labels=["x"], **kw)
    left = _ROW_LABEL_PX + cell + gap
    for (name, _), block in zip(panels.items(), blocks):
        _draw_block(fig, block, left=left, title=name, col_labels=labels, **kw)
        left += block.shape[1] * cell + gap
    y, target = first.y[:rows].tolist(), first.target[:rows].tolist()
    _draw_row_labels(
        fig, [f"{a}→{b}" for a, b in zip(y, target)], _TITLE_PX + _LABEL_PX, cell, size
    )
    return _save(fig, out, dpi)


def _check_bands(
    bands: object, lines: Mapping[str, Sequence[float]], n: int
) -> dict[str, tuple[list[float], list[float]]]:
    if bands is None:
        return {}
    if not isinstance(bands, Mapping):
        raise TypeError("bands must map line labels to (low, high) sequences")
    out = {}
    for label, pair in bands.items():
        if str(label) not in lines:
            raise ValueError(f"bands[{label!r}] names no line; lines are {sorted(lines)}")
        low, high = ([float(v) for v in side] for side in pair)
        if len(low) != n or len(high) != n:
            raise ValueError(f"bands[{label!r}] needs {n} low and {n} high values")
        out[str(label)] = (low, high)
    return out


def save_curves(
    path: str | Path,
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str | None = None,
    size_px: tuple[int, int] = (640, 480),
    dpi: int = 100,
    ylim: tuple[float, float] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Path:
    """Save lines ``ys[label]`` against the shared ``x`` (e.g. accuracy vs ε) as a PNG of
    exactly ``size_px`` (width, height) pixels; returns the path. NaN values leave gaps.
    ``bands[label] = (low, high)`` shades a range around that line (e.g. min–max over seeds)."""
    out = _check_path(path)
    xs = [float(v) for v in x]
    if not xs:
        raise ValueError("x must hold at least one value")
    if not isinstance(ys, Mapping) or not ys:
        raise TypeError("ys must be a non-empty mapping of label -> sequence of y values")
    lines = {str(k): [math.nan if v is None else float(v) for v in vals] for k, vals in ys.items()}
    for label, vals in lines.items():
        if len(vals) != len(xs):
            raise ValueError(f"ys[{label!r}] has {len(vals)} values but x has {len(xs)}")
    if not (isinstance(size_px, tuple) and len(size_px) == 2):
        raise ValueError(f"size_px must be a (width, height) pair of integers, got {size_px!r}")
    width, height = (check_int("size_px", v, minimum=16) for v in size_px)
    dpi = check_int("dpi", dpi, minimum=10)
    ranges = _check_bands(bands, lines, len(xs))
    fig = _new_figure(width, height, dpi)
    ax = fig.add_subplot(1, 1, 1)
    for label, vals in lines.items():
        (line,) = ax.plot(xs, vals, marker="o", markersize=4, label=label)
        if label in ranges:
            ax.fill_between(xs, *ranges[label], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out, dpi)
