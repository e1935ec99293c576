"""Exception types raised by convlens.

Every error derives from :class:`ConvlensError` and from the builtin that
matches its meaning, so ``except KeyError`` and ``except ConvlensError`` both
catch a missing layer.

Example:
    >>> import convlens as cl
    >>> issubclass(cl.LayerNotFoundError, KeyError)
    True
    >>> str(cl.LayerNotFoundError("no layer 'x'"))
    "no layer 'x'"
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

__all__ = [
    "AmbiguousLayerError",
    "ConvlensError",
    "DeviceMismatchError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LayerNotFoundError",
    "MethodNotFoundError",
    "RandomWeightsWarning",
    "ShapeError",
    "UnsupportedModelError",
    "WeightsUnavailableError",
]


class ConvlensError(Exception):
    """Base class of every error convlens raises on purpose."""

    def __str__(self) -> str:
        # KeyError's own __str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class LayerNotFoundError(ConvlensError, KeyError):
    """A layer name or module that the model does not have (or did not run)."""


class AmbiguousLayerError(ConvlensError, KeyError):
    """The bare name of a module that ran more than once; use ``name#i``."""


class TracedRows(Protocol):
    """The rows traced before a failure, as :class:`ShapeError` carries them.

    :class:`~convlens.core.report.ShapeReport` is one; errors.py names no higher module, so
    the report is described here by the parts a caller reads.
    """

    @property
    def rows(self) -> Sequence[Any]:
        """One row per leaf call, in call order."""

    @property
    def names(self) -> list[str]:
        """The row names, in call order."""

    @property
    def traced(self) -> str:
        """``"meta"`` or ``"real"``: how the rows were traced."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __getitem__(self, key: str | int, /) -> Any:
        """The row of a leaf call by name or position."""

    def to_markdown(self) -> str:
        """The rows as a markdown table."""


class ShapeError(ConvlensError, ValueError):
    """An input whose shape a layer of the model rejects.

    Attributes:
        report: The rows traced before the failure, when
            :func:`convlens.trace_shapes` raised it; None otherwise.
    """

    def __init__(self, message: str, *, report: TracedRows | None = None) -> None:
        super().__init__(message)
        self.report = report


class WeightsUnavailableError(ConvlensError, RuntimeError):
    """Pretrained weights that cannot be had (not cached, and no network)."""


class RandomWeightsWarning(UserWarning):
    """``weights="auto"`` fell back to random initialisation."""


class InvalidArgumentError(ConvlensError, ValueError):
    """An argument with a value outside its valid range or choices."""


class MethodNotFoundError(InvalidArgumentError, KeyError):
    """A method name that is not a known CAM method, or not in a result (a ``KeyError`` and a ``ValueError``)."""


class InvalidTypeError(ConvlensError, TypeError):
    """An argument of the wrong type."""


class UnsupportedModelError(ConvlensError, TypeError):
    """A model that a primitive cannot look inside, such as TorchScript where hooks never run.

    Also a model that cannot do what the primitive needs: a quantized model asked for gradients,
    a model on the ``meta`` device that holds no data.
    """


class DeviceMismatchError(ConvlensError, ValueError):
    """The model and its input (or its forward arguments) live on different devices."""


def nearest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` closest to ``word``.

    A name ending in a number (``"features.13"``) is closest to the name with
    the same stem and the nearest number (``"features.12"``); otherwise the
    ranking is :func:`difflib.get_close_matches`.

    Example:
        >>> nearest("features.13", ["features.3", "features.12", "classifier.1"])
        ['features.12']
        >>> nearest("layer4.1.conv3", ["layer4.1.conv2", "layer4.1.bn2", "fc"])
        ['layer4.1.conv2']
        >>> nearest("clasifier.weight", ["classifier.weight", "classifier.bias", "fc"])
        ['classifier.weight', 'classifier.bias']
    """
    pool = list(choices)
    stem, number = _split_number(word)
    if number is not None:
        same_stem = [
            (abs(num - number), c)
            for c in pool
            for s, num in [_split_number(c)]
            if s == stem and num is not None
        ]
        if same_stem:
            return [min(same_stem)[1]]
    return difflib.get_close_matches(word, pool, n=n, cutoff=0.5)


def _split_number(name: str) -> tuple[str, int | None]:
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (name, None) if match is None else (match[1], int(match[2]))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'a' or 'b'?"`` or an empty string.

    Example:
        >>> did_you_mean("gradcam+", ["gradcam", "gradcam++"])
        " Did you mean 'gradcam++' or 'gradcam'?"
    """
    close = nearest(word, choices)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
