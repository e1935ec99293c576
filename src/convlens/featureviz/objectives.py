"""Objectives for activation maximization: what an image should excite, as an algebra.

An :class:`Objective` maps what a forward recorded (the activations of the
layers it reads, by qualified name, and the model's output under
:data:`OUTPUT`) and the image being optimized to **one value per sample**,
shape ``(N,)``. **Higher is better**: the maximizer ascends it. Objectives
combine linearly, ``channel("features.10", 5) - 1e-3 * l1()`` or
``0.5 * neuron("classifier.4", 7) + class_logit(3)``, and ``sum(objs)``
works. Every objective knows the layers it reads (:attr:`Objective.layers`),
so the maximizer taps only those and stops the forward after the last one.

Objectives do not know the model: layer names and indices are checked
against it when an :class:`~convlens.featureviz.maximize.ActivationMaximizer` (or a
:class:`~convlens.featureviz.neurons.NeuronVisualizer`) is built, before any work.

The objectives that read channels (:func:`channel`, :func:`neuron`, :func:`diversity`) take ``reshape=``, the same
spelling as the CAM family (:mod:`convlens.core.layouts`): ``"channels_last"`` for a Swin or
ConvNeXt stage's ``(N, H, W, C)``, ``"vit"`` for tokens, a callable, or
:class:`~convlens.Layout` ``(part=...)`` to read another tensor of a layer that returns several
(the first is read unless ``reshape=Layout(part=...)`` says otherwise). Channels are counted after
the reshape. Without ``reshape=``, the maximizer refuses a layer whose output looks channels last,
before any work, rather than take its rows for channels.

Example:
    >>> import torch
    >>> from convlens.featureviz.objectives import channel, class_logit, l1
    >>> obj = channel("features.10", 5) - 1e-3 * l1()
    >>> obj
    channel('features.10', 5) - 0.001 * l1()
    >>> sorted(obj.layers)
    ['features.10']
    >>> acts = {"features.10": torch.ones(2, 8, 3, 3)}
    >>> obj(acts, torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2])
    >>> sum([class_logit(3), 0.5 * class_logit(4)])
    class_logit(3) + 0.5 * class_logit(4)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from numbers import Real
from types import MappingProxyType
from typing import Final

import torch
from torch import Tensor

from convlens.core.checks import check_indices
from convlens.core.layouts import Layout, ReshapeSpec, as_layout
from convlens.errors import ConvlensError, InvalidArgumentError, InvalidTypeError

__all__ = [
    "OUTPUT",
    "Objective",
    "channel",
    "class_logit",
    "diversity",
    "l1",
    "neuron",
    "total_variation",
]

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
#: One index for every sample, or one index per sample (a sequence or 1-D integer tensor).
Index = int | Sequence[int] | Tensor


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Objective:
    """A function of one forward's activations and the image, one value per sample; higher is better.

    Build objectives with :func:`channel`, :func:`neuron`, :func:`class_logit`,
    :func:`l1` and :func:`total_variation`, and combine them with ``+``, ``-``,
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


# -- leaves ----------------------------------------------------------------------


def _check_layer(layer: object) -> str:
    if not isinstance(layer, str):
        raise InvalidTypeError(
            f"layer must be a qualified name such as 'features.10'; got {type(layer).__name__} {layer!r}. "
            "Objectives do not know the model: name layers by string."
        )
    return layer


def _check_index(what: str, index: object) -> int | tuple[int, ...]:
    """An int >= 0, or a non-empty sequence of them (one per sample)."""
    return check_indices(what, index)


def _pick(tensor: Tensor, index: int | tuple[int, ...], what: str) -> Tensor:
    """``tensor[:, index]``, or ``tensor[n, index[n]]`` for one index per sample."""
    if isinstance(index, int):
        return tensor[:, index]
    if len(index) != tensor.shape[0]:
        raise InvalidArgumentError(
            f"{what} lists {len(index)} indices for a batch of {tensor.shape[0]}; give one per sample."
        )
    rows = torch.arange(tensor.shape[0], device=tensor.device)
    return tensor[rows, torch.tensor(index, device=tensor.device)]


#: Read the first tensor of a layer's output as it is.
_AS_RETURNED: Final = Layout()


def _read(activations: Activations, layer: str, layout: Layout) -> Tensor:
    """The layer's tensor as ``(N, C, *spatial)``: the one the layout picks, reshaped."""
    value: object = activations[layer]
    return layout.apply(value if isinstance(value, Tensor) else layout.pick(value))


def reshaped_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...] | None:
    """``shape`` after the layout's reshape (on a meta twin); None where the reshape needs values.

    Example:
        >>> reshaped_shape((2, 7, 7, 96), Layout(reshape="channels_last"))
        (2, 96, 7, 7)
    """
    if not layout.reshapes:
        return shape
    try:
        return tuple(layout.apply(torch.empty(shape, device="meta")).shape)
    except ConvlensError:
        raise
    except Exception:  # noqa: BLE001 - a user's reshape that reads values: checked when it runs
        return None


def _index_check(
    layer: str,
    index: int | tuple[int, ...],
    what: str,
    unit: str | None = None,
    layout: Layout = _AS_RETURNED,
) -> Check:
    """Check an index against dimension 1 of the layer's output after the layout's reshape.

    ``unit`` None: units or channels by rank.
    """
    after = f" after {layout.describe()}" if layout.reshapes else ""

    def check(shapes: Shapes) -> None:
        if layer not in shapes:
            return
        shape = reshaped_shape(shapes[layer], layout)
        if shape is None:
            return
        where = "the model output" if layer == OUTPUT else f"layer {layer!r}"
        if len(shape) < 2:
            raise InvalidArgumentError(
                f"{what} needs an output of shape (N, {unit or 'channel'}s, ...); {where} gives {shape}{after}."
            )
        word = unit or ("unit" if len(shape) == 2 else "channel")
        values = [index] if isinstance(index, int) else list(index)
        if not isinstance(index, int) and len(values) != shape[0]:
            raise InvalidArgumentError(
                f"{what} lists {len(values)} indices for a batch of {shape[0]}; give one per sample."
            )
        count = shape[1]
        for v in values:
            if v >= count:
                raise InvalidArgumentError(
                    f"{what} {v} is out of range: {where} has {count} {word}s{after} (0 to {count - 1})."
                )

    return check


def _index_repr(index: int | tuple[int, ...]) -> str:
    return str(index) if isinstance(index, int) else str(list(index))


def channel(layer: str, index: Index, *, reshape: ReshapeSpec = None) -> Objective:
    """The mean activation of one channel over all positions.

    The lecture's degree of activation of filter k is ``a^k = sum_ij a^k_ij``;
    this is its mean, ``a^k / (H * W)``: the same maximizer, on a scale that
    does not depend on the feature map's size. For a layer without positions
    (a Linear layer's ``(N, F)`` output) it is the unit's value.

    Args:
        layer: Qualified name of the layer (``"features.10"``, ``"layer1.0.relu#1"``).
        index: The channel, or one channel per sample (a sequence of length N).
        reshape: How the layer's output becomes ``(N, C, *spatial)`` (``"channels_last"``,
            ``"vit"``, a callable, or :class:`~convlens.Layout` with the ``part`` of a layer that
            returns several tensors); None: it already is, and the first tensor is read.

    Returns:
        The objective; per sample, ``mean over positions of activation[n, index]``.

    Raises:
        InvalidArgumentError: An unknown ``reshape`` preset (the nearest is named).
        InvalidTypeError: A ``reshape`` that is not a name, a callable or a Layout.

    Example:
        >>> import torch
        >>> obj = channel("conv", 1)
        >>> obj({"conv": torch.arange(8.0).view(1, 2, 2, 2)}, torch.zeros(1)).tolist()
        [5.5]
        >>> channel("conv", [0, 1])({"conv": torch.arange(8.0).view(1, 2, 2, 2).repeat(2, 1, 1, 1)}, torch.zeros(2)).tolist()
        [1.5, 5.5]

        A Swin or ConvNeXt stage gives ``(N, H, W, C)``; channels are counted after the reshape:

        >>> nhwc = channel("stage", 5, reshape="channels_last")
        >>> nhwc
        channel('stage', 5, reshape='channels_last')
        >>> nhwc({"stage": torch.ones(1, 7, 7, 96)}, torch.zeros(1)).shape
        torch.Size([1])
        >>> channel("stage", 100, reshape="channels_last").validate({"stage": (1, 7, 7, 96)})
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: channel 100 is out of range: layer 'stage' has 96 channels after reshape='channels_last' (0 to 95).
    """
    layer = _check_layer(layer)
    idx = _check_index("channel", index)
    layout = as_layout(reshape)

    def fn(activations: Activations, image: Tensor) -> Tensor:
        picked = _pick(_read(activations, layer, layout), idx, "channel")
        return picked if picked.dim() == 1 else picked.flatten(1).mean(1)

    return Objective(
        fn,
        name=f"channel({layer!r}, {_index_repr(idx)}{_layout_repr(layout)})",
        layers=frozenset({layer}),
        checks=(_index_check(layer, idx, "channel", layout=layout),),
        layouts={layer: layout},
    )


def _layout_repr(layout: Layout) -> str:
    """``", reshape=..."`` as the objective was built; empty for the first tensor as returned."""
    if layout == _AS_RETURNED:
        return ""
    if layout.part is not None:
        return f", reshape={layout!r}"
    return f", reshape={layout.reshape!r}" if isinstance(layout.reshape, str) else ", reshape=<callable>"


def neuron(
    layer: str, index: Index, *, position: int | Sequence[int] | None = None, reshape: ReshapeSpec = None
) -> Objective:
    """One unit: unit ``index`` of a Linear layer, or channel ``index`` at one position of a conv layer.

    Args:
        layer: Qualified name of the layer.
        index: The unit or channel, or one per sample (a sequence of length N).
        position: For a layer with positions ``(N, C, *spatial)``: the
            position, ``(row, col)`` for 2-D maps (an int for 1-D). Defaults
            to the centre, ``size // 2`` along each dimension. Must be None
            for a layer without positions.
        reshape: How the layer's output becomes ``(N, C, *spatial)``, as for :func:`channel`
            (positions are then in the reshaped grid).

    Returns:
        The objective; per sample, ``activation[n, index, row, col]`` or
        ``activation[n, index]``.

    Raises:
        InvalidArgumentError: A negative index or position entry, or an unknown ``reshape`` preset.
        InvalidTypeError: A ``reshape`` that is not a name, a callable or a Layout.

    Example:
        >>> import torch
        >>> acts = {"conv": torch.arange(18.0).view(1, 2, 3, 3), "fc": torch.tensor([[1.0, 7.0]])}
        >>> neuron("conv", 1)(acts, torch.zeros(1)).tolist(), neuron("fc", 1)(acts, torch.zeros(1)).tolist()
        ([13.0], [7.0])
        >>> neuron("conv", 0, position=(0, 2))
        neuron('conv', 0, position=(0, 2))
    """
    layer = _check_layer(layer)
    idx = _check_index("neuron", index)
    layout = as_layout(reshape)
    pos: tuple[int, ...] | None = None
    if position is not None:
        if isinstance(position, bool) or not isinstance(position, int | Sequence):
            raise InvalidTypeError(f"position must be an int or a tuple of ints; got {position!r}.")
        pos = (position,) if isinstance(position, int) else tuple(position)
        if not pos or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pos):
            raise InvalidArgumentError(f"position must hold ints >= 0; got {position!r}.")

    def where(shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(s // 2 for s in shape) if pos is None else pos

    def fn(activations: Activations, image: Tensor) -> Tensor:
        picked = _pick(_read(activations, layer, layout), idx, "neuron")
        if picked.dim() == 1:
            if pos is not None:
                raise InvalidArgumentError(f"layer {layer!r} has no positions; leave position=None.")
            return picked
        spot = where(picked.shape[1:])
        if len(spot) != picked.dim() - 1:
            raise InvalidArgumentError(
                f"position {spot} has {len(spot)} entries; layer {layer!r} has {picked.dim() - 1} "
                "spatial dimensions."
            )
        key: tuple[slice | int, ...] = (slice(None), *spot)
        return picked[key]

    index_check = _index_check(layer, idx, "neuron", layout=layout)

    def check(shapes: Shapes) -> None:
        index_check(shapes)
        shape = reshaped_shape(shapes[layer], layout) if layer in shapes else None
        if shape is None or len(shape) < 3:
            if shape is not None and pos is not None:
                raise InvalidArgumentError(
                    f"layer {layer!r} gives {shape}, without positions; leave position=None."
                )
            return
        spatial = shape[2:]
        spot = where(spatial)
        if len(spot) != len(spatial) or any(p >= s for p, s in zip(spot, spatial, strict=False)):
            raise InvalidArgumentError(
                f"position {spot} is outside the {tuple(spatial)} feature map of layer {layer!r}."
            )

    suffix = "" if pos is None else f", position={pos[0] if isinstance(position, int) else pos}"
    return Objective(
        fn,
        name=f"neuron({layer!r}, {_index_repr(idx)}{suffix}{_layout_repr(layout)})",
        layers=frozenset({layer}),
        checks=(check,),
        layouts={layer: layout},
    )


def class_logit(index: Index) -> Objective:
    """The model's output for a class: the logit ``y^i`` (needs the whole forward).

    Reads the model's output (:data:`OUTPUT`), which must be ``(N, classes)``;
    a tuple or dict output is read at its first tensor.

    Args:
        index: The class, or one class per sample (a sequence of length N).

    Example:
        >>> import torch
        >>> obj = class_logit(2)
        >>> obj.layers, obj.reads_output
        (frozenset(), True)
        >>> obj({OUTPUT: torch.tensor([[0.0, 1.0, 5.0]])}, torch.zeros(1)).tolist()
        [5.0]
    """
    idx = _check_index("class", index)

    def fn(activations: Activations, image: Tensor) -> Tensor:
        return _pick(activations[OUTPUT], idx, "class")

    def check(shapes: Shapes) -> None:
        if OUTPUT in shapes and len(shapes[OUTPUT]) != 2:
            raise InvalidArgumentError(
                f"class_logit needs a model output of shape (N, classes); the model gives {shapes[OUTPUT]}. "
                "Use channel() or neuron() on a layer instead."
            )
        _index_check(OUTPUT, idx, "class", "score")(shapes)

    return Objective(fn, name=f"class_logit({_index_repr(idx)})", layers=frozenset({OUTPUT}), checks=(check,))


def l1() -> Objective:
    """The mean absolute pixel value of the image, ``mean |x|`` per sample (the lecture's "ink").

    Subtract it to ask for little ink: ``class_logit(3) - 0.1 * l1()`` is the
    lecture's ``y^i - sum_ij |x_ij|`` up to the weight (a mean, not a sum).

    Example:
        >>> import torch
        >>> l1()({}, torch.tensor([[[-1.0, 3.0]], [[0.0, 0.0]]])).tolist()
        [2.0, 0.0]
    """
    return Objective(lambda activations, image: image.abs().flatten(1).mean(1), name="l1()")


def total_variation() -> Objective:
    """The mean absolute difference between neighbouring pixels, per sample.

    Summed over the spatial dimensions (each a mean over its neighbour pairs);
    subtract it for smoother images.

    Example:
        >>> import torch
        >>> total_variation()({}, torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])).tolist()
        [1.0]
    """

    def fn(activations: Activations, image: Tensor) -> Tensor:
        total = image.new_zeros(image.shape[0])
        for dim in range(2, image.dim()):
            if image.shape[dim] > 1:
                total = total + image.diff(dim=dim).abs().flatten(1).mean(1)
        return total

    return Objective(fn, name="total_variation()")


def diversity(layer: str, *, reshape: ReshapeSpec = None) -> Objective:
    """How different each image of a batch is from the others, in style (Lucid's diversity).

    Each image's Gram matrix of the layer's channels, ``G = A A^T`` over
    positions (``A`` is ``(C, H * W)``), normalized to unit Frobenius norm;
    per sample, the value is **minus** the mean cosine similarity of its Gram
    matrix to the other images' (``-(1 / (N - 1)) * sum_{j != i} <G_i, G_j>``),
    so higher is more diverse; 0 for a batch of one. Add it to a unit's
    objective, weighted, to get several different images of one unit:
    ``channel("blocks.8", 5) + 2 * diversity("blocks.8")`` with a batch of 4
    (the channel's mean activation sets the scale of a useful weight). Lucent's
    diversity objective is ``N - 1`` times the mean over the batch (Lucid's is
    its negative); this one's weight does not depend on the batch size.

    Args:
        layer: Qualified name of the layer whose channels' Gram matrices are compared.
        reshape: How the layer's output becomes ``(N, C, *spatial)``, as for :func:`channel`
            (``"channels_last"`` for a Swin or ConvNeXt stage's ``(N, H, W, C)``); None: it
            already is, and the first tensor is read. The maximizer refuses, before any work, a
            layer that looks channels last read without it. Combined with :func:`channel` on the
            same layer, both must read it the same way.

    Raises:
        InvalidArgumentError: An unknown ``reshape`` preset (the nearest is named).
        InvalidTypeError: A ``reshape`` that is not a name, a callable or a Layout.

    Example:
        >>> import torch
        >>> same = torch.ones(2, 3, 4, 4)
        >>> diversity("conv")({"conv": same}, torch.zeros(2)).round(decimals=4).tolist()
        [-1.0, -1.0]
        >>> apart = torch.zeros(2, 2, 1, 1)
        >>> apart[0, 0] = apart[1, 1] = 1.0
        >>> diversity("conv")({"conv": apart}, torch.zeros(2)).round(decimals=4).tolist()
        [0.0, 0.0]
        >>> diversity("stage", reshape="channels_last")  # channels along the last dimension
        diversity('stage', reshape='channels_last')

    References:
        Olah et al., "Feature Visualization", Distill 2017, section "Diversity".
    """
    layer = _check_layer(layer)
    layout = as_layout(reshape)

    def fn(activations: Activations, image: Tensor) -> Tensor:
        acts = _read(activations, layer, layout)
        n = acts.shape[0]
        flat = acts.flatten(2) if acts.dim() > 2 else acts.unsqueeze(-1)
        grams = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1, eps=1e-10)
        if n == 1:
            return grams.sum(1) * 0
        similarity = grams @ grams.T
        return (similarity.diagonal() - similarity.sum(1)) / (n - 1)

    return Objective(
        fn,
        name=f"diversity({layer!r}{_layout_repr(layout)})",
        layers=frozenset({layer}),
        layouts={layer: layout},
    )
