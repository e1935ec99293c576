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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: errors.py imports nothing of convlens at run time
    from convlens.shapes import ShapeReport

__all__ = [
    "AmbiguousLayerError",
    "ConvlensError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LayerNotFoundError",
    "RandomWeightsWarning",
    "ShapeError",
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


class ShapeError(ConvlensError, ValueError):
    """An input whose shape a layer of the model rejects.

    Attributes:
        report: The rows traced before the failure, when
            :func:`convlens.trace_shapes` raised it; None otherwise.
    """

    def __init__(self, message: str, *, report: ShapeReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class WeightsUnavailableError(ConvlensError, RuntimeError):
    """Pretrained weights that cannot be had (not cached, and no network)."""


class RandomWeightsWarning(UserWarning):
    """``weights="auto"`` fell back to random initialisation."""


class InvalidArgumentError(ConvlensError, ValueError):
    """An argument with a value outside its valid range or choices."""


class InvalidTypeError(ConvlensError, TypeError):
    """An argument of the wrong type."""


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


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Validate a string option against its valid choices.

    Args:
        name: The argument's name, for the message.
        value: What the caller passed.
        choices: The valid strings.

    Returns:
        ``value``, now known to be one of ``choices``.

    Raises:
        InvalidArgumentError: ``value`` is not one of ``choices``.

    Example:
        >>> check_choice("mode", "meta", ["meta", "real"])
        'meta'
        >>> check_choice("mode", "mta", ["meta", "real"])
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: mode must be one of 'meta', 'real'; got 'mta'. Did you mean 'meta'?
    """
    if isinstance(value, str) and value in choices:
        return value
    valid = ", ".join(repr(c) for c in choices)
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise InvalidArgumentError(f"{name} must be one of {valid}; got {value!r}.{hint}")


def check_int(name: str, value: object, low: int) -> int:
    """Validate an integer argument that must be at least ``low`` (bool is refused).

    Raises:
        InvalidTypeError: ``value`` is not an int.
        InvalidArgumentError: ``value`` is below ``low``.

    Example:
        >>> check_int("steps", 5, 1)
        5
        >>> check_int("steps", 0, 1)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: steps must be an int >= 1; got 0.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{name} must be an int >= {low}; got {type(value).__name__} {value!r}.")
    if value < low:
        raise InvalidArgumentError(f"{name} must be an int >= {low}; got {value}.")
    return value
