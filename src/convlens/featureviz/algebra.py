"""The :class:`Objective` type and its algebra: weighted sums of leaf objectives.

An objective maps what one forward recorded (the activations of the layers it reads, by qualified
name, and the model's output under :data:`OUTPUT`) and the image being optimized to one value per
sample, higher is better. The leaves (``channel``, ``neuron``, ``direction``, ...) live in
:mod:`convlens.featureviz.objectives`, which re-exports everything here; this module holds what they
share: the type, ``+``, ``-``, scalar ``*`` and ``/``, ``sum()``, and the ``repr`` of a combination.

Example:
    >>> import torch
    >>> twice_red = 2 * Objective(lambda acts, image: image[:, 0].flatten(1).mean(1), name="red()")
    >>> twice_red, twice_red.layers
    (2 * red(), frozenset())
    >>> twice_red({}, torch.ones(1, 3, 2, 2)).tolist()
    [2.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from numbers import Real
from types import MappingProxyType
from typing import Final

from torch import Tensor

from convlens.core.layouts import Layout
from convlens.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["OUTPUT", "Activations", "Check", "Objective", "ObjectiveFn", "Shapes"]

#: The key of the model's output among the activations an objective reads.
#: It is the root module's qualified name in ``named_modules()`` (the empty
#: string), so it cannot clash with any layer's name.
OUTPUT: Final = ""

#: ``{layer name or OUTPUT: tensor}`` recorded by one forward.
Activations = Mapping[str, Tensor]
#: ``{layer name or OUTPUT: output shape}`` from a shape-only pass, for :meth:`Objective.validate`.
Shapes = Mapping[str, tuple[int, ...]]
ObjectiveFn = Callable[[Activations, Tensor], Tensor]
Check = Callable[[Shapes], None]


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Objective:
    """A function of one forward's activations and the image, one value per sample; higher is better.

    Build objectives with the leaves of :mod:`convlens.featureviz.objectives` (``channel``,
    ``neuron``, ``direction``, ``class_logit``, ``l1``, ...), and combine them with ``+``, ``-``,
    unary ``-``, and ``*`` or ``/`` by a real number. Adding ``0`` gives the
    objective back (so ``sum(objectives)`` works); any other operand makes the
    operator return ``NotImplemented`` (Python then raises ``TypeError``).
    Every combination is a weighted sum of leaf objectives, kept in
    :attr:`terms` and shown by ``repr``.

    Args:
        fn: ``fn(activations, image) -> (N,)``. ``activations`` maps each name
            in ``layers`` to that layer's output (the model's output under
            :data:`OUTPUT`); ``image`` is the image being optimized, before
            any random augmentation, ``(N, C, ...)``.
        name: What ``repr`` shows, e.g. ``"mean_red()"``.
        layers: The qualified layer names (``"features.10"``, ``"relu#1"``)
            that ``fn`` reads; :data:`OUTPUT` here stands for the model's
            output and is kept apart, in :attr:`reads_output`.
        reads_output: Whether ``fn`` reads the model's output (set for you
            when ``layers`` holds :data:`OUTPUT`).
        checks: Functions that validate the objective against the layers'
            output shapes (``{name: shape}``) and raise
            :class:`~convlens.errors.InvalidArgumentError` when it cannot apply.
        terms: ``((weight, leaf), ...)`` for a combination; empty for a leaf.
        layouts: ``{layer: Layout}`` for the layers whose channels ``fn`` reads: which tensor of
            the layer's output the forward hands to ``fn`` (``activations[layer]``, the first
            unless ``Layout(part=...)``) and how ``fn`` reshapes it to ``(N, C, *spatial)``. A
            layer read without a reshape is checked not to look channels last. A combination
            reads each layer through one layout.

    Raises:
        InvalidTypeError: ``fn`` not callable, ``name`` not a string, or a
            layer name that is not a string.
        InvalidArgumentError: A combination that reads one layer through two layouts.

    Example:
        >>> import torch
        >>> from convlens.featureviz.objectives import neuron
        >>> red = Objective(lambda acts, image: image[:, 0].flatten(1).mean(1), name="mean_red()")
        >>> obj = -red / 2 + neuron("fc", 1)
        >>> obj, sorted(obj.layers)
        (-0.5 * mean_red() + neuron('fc', 1), ['fc'])
        >>> obj({"fc": torch.tensor([[0.0, 4.0]])}, torch.ones(1, 3, 2, 2)).tolist()
        [3.5]
        >>> neuron("fc", 1) * neuron("fc", 2)
        Traceback (most recent call last):
        ...
        TypeError: unsupported operand type(s) for *: 'Objective' and 'Objective'
    """

    fn: ObjectiveFn
    _: KW_ONLY
    name: str
    layers: frozenset[str] = frozenset()
    reads_output: bool = False
    checks: tuple[Check, ...] = ()
    terms: tuple[tuple[float, Objective], ...] = field(default=())
    layouts: Mapping[str, Layout] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InvalidTypeError(f"fn must be callable; got {type(self.fn).__name__}.")
        if not isinstance(self.name, str):
            raise InvalidTypeError(f"name must be a string; got {type(self.name).__name__}.")
        layers = frozenset(self.layers)
        for layer in layers:
            if not isinstance(layer, str):
                raise InvalidTypeError(f"layers must be qualified names (str); got {layer!r}.")
        object.__setattr__(self, "layers", layers - {OUTPUT})
        object.__setattr__(self, "reads_output", bool(self.reads_output) or OUTPUT in layers)
        object.__setattr__(self, "checks", tuple(self.checks))
        layouts = dict(self.layouts)
        for layer, layout in layouts.items():
            if layer not in self.layers or not isinstance(layout, Layout):
                raise InvalidTypeError(
                    f"layouts must map layers the objective reads to convlens.Layout; got {layer!r}: {layout!r}."
                )
        object.__setattr__(self, "layouts", MappingProxyType(layouts))

    def __call__(self, activations: Activations, image: Tensor) -> Tensor:
        """Evaluate the objective: one value per sample, shape ``(N,)``."""
        return self.fn(activations, image)

    def validate(self, shapes: Shapes) -> None:
        """Check the objective against the output shapes of the layers it reads.

        ``shapes[layer]`` is the shape of the tensor the forward hands over (the one the layer's
        layout picks); checks of a reshaping objective reshape it themselves.

        Raises:
            InvalidArgumentError: An index out of range for its layer, a
                position outside the feature map, a per-sample index list of the
                wrong length, or a layer output of the wrong rank.

        Example:
            >>> from convlens.featureviz.objectives import channel
            >>> channel("features.10", 300).validate({"features.10": (1, 256, 13, 13)})
            Traceback (most recent call last):
            ...
            convlens.errors.InvalidArgumentError: channel 300 is out of range: layer 'features.10' has 256 channels (0 to 255).
        """
        for check in self.checks:
            check(shapes)

    def __repr__(self) -> str:
        return _render(self._weighted())

    # -- the algebra ------------------------------------------------------------------

    def _weighted(self) -> tuple[tuple[float, Objective], ...]:
        return self.terms or ((1.0, self),)

    def __add__(self, other: object) -> Objective:
        if _is_zero(other):
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return _combine((*self._weighted(), *other._weighted()))

    def __radd__(self, other: object) -> Objective:
        if _is_zero(other):
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return _combine((*other._weighted(), *self._weighted()))

    def __sub__(self, other: object) -> Objective:
        if _is_zero(other):
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __neg__(self) -> Objective:
        return _combine(tuple((-w, leaf) for w, leaf in self._weighted()))

    def __mul__(self, other: object) -> Objective:
        if not _is_scalar(other):
            return NotImplemented
        factor = _finite(other, "multiply")
        return _combine(tuple((w * factor, leaf) for w, leaf in self._weighted()))

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Objective:
        if not _is_scalar(other):
            return NotImplemented
        divisor = _finite(other, "divide")
        if divisor == 0:
            raise InvalidArgumentError(f"cannot divide the objective {self!r} by zero.")
        return _combine(tuple((w / divisor, leaf) for w, leaf in self._weighted()))


def _is_scalar(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_zero(value: object) -> bool:
    return _is_scalar(value) and value == 0


def _finite(value: object, verb: str) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise InvalidArgumentError(f"cannot {verb} an objective by {number}; use a finite number.")
    return number


def _combine(terms: tuple[tuple[float, Objective], ...]) -> Objective:
    """The weighted sum of leaf objectives."""

    def fn(activations: Activations, image: Tensor) -> Tensor:
        values = [
            value if weight == 1 else value * weight
            for weight, leaf in terms
            for value in [leaf.fn(activations, image)]
        ]
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    layouts: dict[str, Layout] = {}
    for _, leaf in terms:
        for layer, layout in leaf.layouts.items():
            if layouts.setdefault(layer, layout) != layout:
                raise InvalidArgumentError(
                    f"an objective reads each layer through one layout; {_render(terms)} reads {layer!r} "
                    f"two ways: {layouts[layer].describe()}, and {layout.describe()}. Give each term the "
                    "same reshape=."
                )
    return Objective(
        fn,
        name=_render(terms),
        layers=frozenset().union(*(leaf.layers for _, leaf in terms)),
        reads_output=any(leaf.reads_output for _, leaf in terms),
        checks=tuple(check for _, leaf in terms for check in leaf.checks),
        terms=terms,
        layouts=layouts,
    )


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _compound(name: str) -> bool:
    """Whether a leaf's name needs parentheses next to a weight (``"a + b"``, ``"-a"``)."""
    return name.startswith("-") or " + " in name or " - " in name


def _render(terms: tuple[tuple[float, Objective], ...]) -> str:
    parts: list[str] = []
    for i, (weight, leaf) in enumerate(terms):
        name = f"({leaf.name})" if _compound(leaf.name) else leaf.name
        magnitude = abs(weight)
        body = name if magnitude == 1 else f"{_number(magnitude)} * {name}"
        negative = weight < 0 or (weight == 0 and math.copysign(1.0, weight) < 0)
        if i == 0:
            parts.append(f"-{body}" if negative else body)
        else:
            parts.append(f"{'-' if negative else '+'} {body}")
    return " ".join(parts)
