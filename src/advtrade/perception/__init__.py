"""Section 3 of the paper: robust models' gradients and large-ε adversarial examples look like data.

Tsipras et al. (2019) show that the input gradients of adversarially trained models highlight the
strokes and edges of the object, and that a targeted attack with a very large budget turns an
input into something a person reads as the target class — while for a standard model both look
like noise. This subpackage computes those objects (:func:`input_gradients`,
:func:`large_eps_examples`, :func:`interpolate`) and turns the visual claim into numbers
(:func:`alignment_score`): whether the gradient looks like the input, whether it and the large-ε
perturbation point towards the target class's mean image, and whether a model-free
nearest-neighbour reader sees the target in the large-ε examples. :mod:`advtrade.plotting` draws
them.
"""

from __future__ import annotations

from ._alignment import (
    Alignment,
    PerceptionPanel,
    alignment_score,
    class_means,
    nearest_neighbour_labels,
    perception_panel,
    shifted_targets,
)
from ._gradients import input_gradients, normalize_for_display
from ._large_eps import DEFAULT_RMS, interpolate, large_eps_examples, large_eps_threat

__all__ = [
    "DEFAULT_RMS",
    "Alignment",
    "PerceptionPanel",
    "alignment_score",
    "class_means",
    "input_gradients",
    "interpolate",
    "large_eps_examples",
    "large_eps_threat",
    "nearest_neighbour_labels",
    "normalize_for_display",
    "perception_panel",
    "shifted_targets",
]
