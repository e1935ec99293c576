"""What the maximizer needs besides its loop: its recipe's names, argument checks, the input's layout.

- :data:`Param`, :data:`TransformName` and the recommended recipe (:data:`RECOMMENDED_PARAM`,
  :data:`RECOMMENDED_TRANSFORMS`), re-exported by :mod:`convlens.featureviz.maximize`;
- :func:`check_range`, :func:`check_transforms`: the value range and the random views;
- :func:`input_layout`: the memory format the model's input is made in;
- :func:`activation_part`: the terms of an objective that read the model (for the relative activation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Literal, cast

import torch
from torch import Tensor, nn

from convlens.core.checks import check_choice
from convlens.core.layouts import Layout
from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.objectives import OUTPUT, Objective

__all__ = [
    "PARAMS",
    "RECOMMENDED_PARAM",
    "RECOMMENDED_TRANSFORMS",
    "TRANSFORMS",
    "Param",
    "TransformName",
    "activation_part",
    "check_range",
    "check_transforms",
    "input_layout",
    "unit_features",
]

#: How the image is parameterized: its pixels, a 1/f-scaled Fourier spectrum, or MACO's Fourier phase.
Param = Literal["pixel", "fft", "maco"]
PARAMS = ("pixel", "fft", "maco")
#: The random views each step sees: Lucid's standard transforms or MACO's crops and noise.
TransformName = Literal["standard", "maco"]
TRANSFORMS = ("standard", "maco")
#: The recipe a user gets with ``normalize`` and nothing else (the best in bench/featureviz.py):
#: a decorrelated 1/f spectrum decaying as the photographs' amplitude does, held to a photograph's
#: spectrum by the ``naturalness`` penalty, seen through Lucid's standard transforms (with the penalty
#: they transferred best in bench/featureviz.py; without it MACO's crops did).
RECOMMENDED_PARAM: Param = "fft"
RECOMMENDED_TRANSFORMS: TransformName = "standard"


def input_layout(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> torch.memory_format:
    """How the model's input is laid out in memory: channels last for a 2-D convolutional network on CPU.

    A picture of ``C > 1`` channels reaches a model with ``nn.Conv2d`` layers as
    ``(N, C, H, W)`` with ``torch.channels_last`` strides (the same values, one copy that
    ``_evaluate`` makes anyway): oneDNN's depthwise and strided convolutions run on it
    directly, forward and backward, about 12% less time per step on EfficientNet-Lite0 on CPU
    (bench/featureviz.py's classes job); other devices keep the input as is (not measured
    there). The model's own parameters are not touched. A model that cannot take it
    (``x.view(n, -1)`` after a convolution) gets the input as is from its first step on
    (``run`` retries that step).

    Example:
        >>> import torch.nn as nn
        >>> cpu = torch.device("cpu")
        >>> input_layout(nn.Conv2d(3, 4, 3), (1, 3, 8, 8), cpu), input_layout(nn.Linear(8, 2), (1, 3, 8, 8), cpu)
        (torch.channels_last, torch.preserve_format)
    """
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if device.type == "cpu" and len(shape) == 4 and shape[1] > 1 and convolutional:
        return torch.channels_last
    return torch.preserve_format


def activation_part(objective: Objective) -> Objective | None:
    """The one term of ``objective`` that is a unit's activation, unweighted; None if there is not exactly one.

    Penalties are left out: terms that read only the image (``l1``, ``total_variation``) and
    ``diversity``. ``channel(...) - 100 * l1()`` gives ``channel(...)``; ``2 * channel(...)`` gives
    ``channel(...)``; ``channel(a) + channel(b)`` gives None (two activations: no one "relative").

    Example:
        >>> from convlens.featureviz.objectives import channel, l1
        >>> activation_part(2 * channel("conv", 3) - 0.5 * l1())
        channel('conv', 3)
        >>> activation_part(channel("a", 0) + channel("b", 0)) is None
        True
    """
    terms = objective.terms or ((1.0, objective),)
    kept = [
        leaf
        for _, leaf in terms
        if (leaf.layers or leaf.reads_output) and not leaf.name.startswith("diversity(")
    ]
    return kept[0] if len(kept) == 1 else None


def unit_features(objective: Objective, acts: Mapping[str, Tensor], image: Tensor) -> Tensor:
    """``(N, C)``: what the stability compares, the unit's layer (read as the objective reads it) averaged over positions.

    The layer is the activation term's (:func:`activation_part`; the objective's first layer otherwise); an
    objective that reads only the output compares the output's scores, one that reads neither the image.
    """
    leaf = activation_part(objective) or objective
    layers = sorted(leaf.layers)
    if layers:
        feature = objective.layouts.get(layers[0], Layout()).apply(acts[layers[0]])
    else:
        feature = acts.get(OUTPUT, image)
    return feature.mean(tuple(range(2, feature.dim()))) if feature.dim() > 2 else feature


# -- argument checks ---------------------------------------------------------------------


def check_range(value_range: object) -> tuple[float, float] | None:
    """A value range ``(lo, hi)`` as two finite floats with ``lo < hi``; None stays None.

    Raises:
        InvalidTypeError: Not a pair of numbers.
        InvalidArgumentError: Not finite, or ``lo >= hi``.
    """
    if value_range is None:
        return None
    if (
        not isinstance(value_range, Sequence)
        or len(value_range) != 2
        or not all(isinstance(v, Real) and not isinstance(v, bool) for v in value_range)
    ):
        raise InvalidTypeError(f"value_range must be None or a pair (lo, hi); got {value_range!r}.")
    low, high = (float(v) for v in value_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidArgumentError(f"value_range must be finite with lo < hi; got {value_range!r}.")
    return low, high


def check_transforms(transforms: object, picture: bool) -> TransformName | None:
    """The random views: None is ``picture`` (True: the recommended ones), False none, else a name.

    Raises:
        InvalidTypeError: Not a bool, None or a name.
        InvalidArgumentError: An unknown name (the nearest named).
    """
    if transforms is None:
        transforms = picture
    if transforms is True:
        return RECOMMENDED_TRANSFORMS
    if transforms is False:
        return None
    if not isinstance(transforms, str):
        raise InvalidTypeError(
            f"transforms must be True, False, None or one of {list(TRANSFORMS)}; got {transforms!r}."
        )
    return cast("TransformName", check_choice("transforms", transforms, TRANSFORMS))
