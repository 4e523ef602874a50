"""advtrade.plotting: PNG files of the documented pixel size, clear errors, a clear message
when matplotlib is missing."""

from __future__ import annotations

import dataclasses
import importlib
import sys

import pytest
import torch
from torch import nn

from advtrade import plotting
from advtrade.perception import perception_panel, shifted_targets


@pytest.fixture
def image():
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    return lambda path: imread(str(path))


@pytest.fixture(scope="module")
def panels():
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    out = {}
    for name in ("standard", "robust"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        out[name] = perception_panel(model, x, y, shifted_targets(y, 10), steps=3)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_has_the_documented_size(tmp_path, image, channels):
    grid = torch.rand(2, 3, channels, 8, 8)
    path = plotting.save_image_grid(tmp_path / "a" / "grid.png", grid, cell_px=40)
    assert path == tmp_path / "a" / "grid.png" and path.is_file()
    assert image(path).shape[:2] == (2 * 40, 3 * 40)
    labelled = plotting.save_image_grid(
        tmp_path / "b.png", grid, row_labels=["r0", "r1"], col_labels="abc", title="T", cell_px=40
    )
    assert image(labelled).shape[:2] == (20 + 16 + 2 * 40, 44 + 3 * 40)


def test_perception_figure_has_the_documented_size(tmp_path, image, panels):
    path = plotting.save_perception_figure(tmp_path / "fig.png", panels, n=4, cell_px=32)
    width = 44 + 32 + 2 * (16 + 4 * 32)  # row labels, inputs, 2 × (gap + gradient + 3 steps)
    assert image(path).shape[:2] == (20 + 16 + 4 * 32, width)
    few = plotting.save_perception_figure(tmp_path / "few.png", panels, max_rows=2, cell_px=32)
    assert image(few).shape[0] == 20 + 16 + 2 * 32


def test_curves_have_the_requested_size(tmp_path, image):
    path = plotting.save_curves(
        tmp_path / "curves.png",
        [0.0, 0.1, 0.2],
        {"standard": [0.98, 0.5, 0.1], "robust": [0.95, 0.9, None]},
        xlabel="ε",
        ylabel="accuracy",
        title="accuracy vs ε",
        size_px=(320, 240),
    )
    assert image(path).shape[:2] == (240, 320)


def test_bands_shade_the_range_around_a_line(tmp_path, image):
    x, ys = [0.0, 0.1, 0.2], {"robust": [0.9, 0.6, 0.3]}
    plain = image(plotting.save_curves(tmp_path / "plain.png", x, ys, size_px=(320, 240)))
    band = {"robust": ([0.8, 0.4, 0.1], [0.95, 0.8, 0.5])}
    shaded = image(plotting.save_curves(tmp_path / "band.png", x, ys, size_px=(320, 240),
                                        bands=band))
    assert shaded.shape == plain.shape
    # the shaded pixels are lighter tints of the line's colour: many pixels change
    assert float((abs(shaded - plain).sum(-1) > 0.05).mean()) > 0.05
    with pytest.raises(ValueError, match="names no line"):
        plotting.save_curves(tmp_path / "c.png", x, ys, bands={"other": band["robust"]})
    with pytest.raises(ValueError, match="needs 3 low and 3 high"):
        plotting.save_curves(tmp_path / "c.png", x, ys, bands={"robust": ([0.1], [0.2])})


@pytest.mark.parametrize(
    "shape", [(2, 3, 8, 8), (2, 3, 2, 8, 8), (2, 3, 4, 8, 8), (2, 0, 1, 8, 8), (6, 64)]
)
def test_non_image_shapes_are_clear_errors(tmp_path, shape):
    with pytest.raises(ValueError, match=r"C = 1 \(grey\) or 3 \(RGB\)"):
        plotting.save_image_grid(tmp_path / "g.png", torch.rand(shape))


def test_perception_figure_rejects_flat_inputs(tmp_path):
    x, y = torch.rand(3, 64), torch.tensor([0, 1, 2])
    panel = perception_panel(nn.Linear(64, 10), x, y, shifted_targets(y, 10), steps=2)
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        plotting.save_perception_figure(tmp_path / "f.png", {"flat": panel})


def test_bad_arguments_are_clear_errors(tmp_path, panels):
    grid = torch.rand(1, 1, 1, 4, 4)
    with pytest.raises(TypeError, match="images must be a real tensor"):
        plotting.save_image_grid(tmp_path / "g.png", grid.numpy())
    with pytest.raises(ValueError, match=r"must end in \.png"):
        plotting.save_image_grid(tmp_path / "g.pdf", grid)
    with pytest.raises(ValueError, match="row_labels must have 1 entries"):
        plotting.save_image_grid(tmp_path / "g.png", grid, row_labels=["a", "b"])
    with pytest.raises(ValueError, match="cell_px"):
        plotting.save_image_grid(tmp_path / "g.png", grid, cell_px=0)
    with pytest.raises(TypeError, match="panels must be a non-empty mapping"):
        plotting.save_perception_figure(tmp_path / "f.png", {})
    first = next(iter(panels.values()))
    other = {**panels, "other inputs": dataclasses.replace(first, x=1 - first.x)}
    with pytest.raises(ValueError, match="every panel must show the same inputs"):
        plotting.save_perception_figure(tmp_path / "f.png", other)
    with pytest.raises(TypeError, match=r"panels\['bad'\] must be a PerceptionPanel"):
        plotting.save_perception_figure(tmp_path / "f.png", {"bad": first.x})
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        plotting.save_perception_figure(tmp_path / "f.png", panels, n=1)
    with pytest.raises(ValueError, match=r"ys\['a'\] has 1 values but x has 2"):
        plotting.save_curves(tmp_path / "c.png", [0, 1], {"a": [1.0]})


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    importlib.reload(plotting)  # importing advtrade.plotting itself needs no matplotlib
    with pytest.raises(ImportError, match=r"pip install 'advtrade\[plot\]'"):
        plotting.require_matplotlib()
    with pytest.raises(ImportError, match=r"advtrade\[plot\]"):
        plotting.save_curves(tmp_path / "c.png", [0, 1], {"a": [1.0, 2.0]})
    with pytest.raises(ImportError, match=r"advtrade\[plot\]"):
        plotting.save_image_grid(tmp_path / "g.png", torch.rand(1, 1, 1, 4, 4))
