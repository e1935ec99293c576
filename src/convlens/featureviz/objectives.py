"""Objectives for activation maximization: what an image should excite, as an algebra.

An :class:`Objective` maps what a forward recorded (the activations of the
layers it reads, by qualified name, and the model's output under
:data:`OUTPUT`) and the image being optimized to **one value per sample**,
shape ``(N,)``. **Higher is better**: the maximizer ascends it. Objectives
combine linearly, ``channel("features.10", 5) - 1e-3 * l1()`` or
``0.5 * neuron("classifier.4", 7) + class_logit(3)``, and ``sum(objs)``
works. Every objective knows the layers it reads (:attr:`Objective.layers`),
so the maximizer taps only those and stops the forward after the last one.
The type and its algebra live in :mod:`convlens.featureviz.algebra`; this module
holds the leaves and re-exports :class:`Objective` and :data:`OUTPUT`.

Objectives do not know the model: layer names and indices are checked
against it when an :class:`~convlens.featureviz.maximize.ActivationMaximizer` (or a
:class:`~convlens.featureviz.neurons.NeuronVisualizer`) is built, before any work.

The objectives that read channels (:func:`channel`, :func:`neuron`, :func:`direction`,
:func:`direction_neuron`, :func:`diversity`) take ``reshape=``, the same spelling as the CAM family (:mod:`convlens.core.layouts`): ``"channels_last"`` for a Swin or
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

from collections.abc import Sequence
from typing import Final

import torch
from torch import Tensor

from convlens.core.checks import check_indices, check_real
from convlens.core.layouts import Layout, ReshapeSpec, as_layout
from convlens.errors import ConvlensError, InvalidArgumentError, InvalidTypeError
from convlens.featureviz.algebra import OUTPUT, Activations, Check, Objective, Shapes

__all__ = [
    "OUTPUT",
    "Objective",
    "channel",
    "class_logit",
    "direction",
    "direction_neuron",
    "diversity",
    "l1",
    "neuron",
    "total_variation",
]

#: One index for every sample, or one index per sample (a sequence or 1-D integer tensor).
Index = int | Sequence[int] | Tensor


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


#: Where in a layer's grid a neuron sits: ``(row, col)`` for 2-D maps, an int for 1-D; None: the centre.
Position = int | Sequence[int] | None


def _check_position(position: object) -> tuple[int, ...] | None:
    """``position`` as a tuple of ints >= 0; None stays None (the centre, found when the shape is known)."""
    if position is None:
        return None
    if isinstance(position, bool) or not isinstance(position, int | Sequence):
        raise InvalidTypeError(f"position must be an int or a tuple of ints; got {position!r}.")
    pos = (position,) if isinstance(position, int) else tuple(position)
    if not pos or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pos):
        raise InvalidArgumentError(f"position must hold ints >= 0; got {position!r}.")
    return pos


def _spot(spatial: Sequence[int], pos: tuple[int, ...] | None) -> tuple[int, ...]:
    """The position in a grid of size ``spatial``: ``pos``, or the centre ``size // 2`` along each dimension."""
    return tuple(s // 2 for s in spatial) if pos is None else pos


def _at(acts: Tensor, layer: str, pos: tuple[int, ...] | None) -> Tensor:
    """``(N, C, *spatial)`` at one position (the centre by default) as ``(N, C)``; ``(N, C)`` as it is."""
    if acts.dim() == 2:
        if pos is not None:
            raise InvalidArgumentError(f"layer {layer!r} has no positions; leave position=None.")
        return acts
    spot = _spot(acts.shape[2:], pos)
    if len(spot) != acts.dim() - 2:
        raise InvalidArgumentError(
            f"position {spot} has {len(spot)} entries; layer {layer!r} has {acts.dim() - 2} spatial dimensions."
        )
    key: tuple[slice | int, ...] = (slice(None), slice(None), *spot)
    return acts[key]


def _position_check(layer: str, pos: tuple[int, ...] | None, layout: Layout) -> Check:
    """Check the position against the layer's grid, after the layout's reshape."""

    def check(shapes: Shapes) -> None:
        shape = reshaped_shape(shapes[layer], layout) if layer in shapes else None
        if shape is None or len(shape) < 3:
            if shape is not None and pos is not None:
                raise InvalidArgumentError(
                    f"layer {layer!r} gives {shape}, without positions; leave position=None."
                )
            return
        spatial = shape[2:]
        spot = _spot(spatial, pos)
        if len(spot) != len(spatial) or any(p >= s for p, s in zip(spot, spatial, strict=False)):
            raise InvalidArgumentError(
                f"position {spot} is outside the {tuple(spatial)} feature map of layer {layer!r}."
            )

    return check


def _position_repr(position: Position, pos: tuple[int, ...] | None) -> str:
    """``", position=..."`` as it was given; empty for the centre."""
    return "" if pos is None else f", position={pos[0] if isinstance(position, int) else pos}"


def neuron(layer: str, index: Index, *, position: Position = None, reshape: ReshapeSpec = None) -> Objective:
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
    pos = _check_position(position)

    def fn(activations: Activations, image: Tensor) -> Tensor:
        return _pick(_at(_read(activations, layer, layout), layer, pos), idx, "neuron")

    return Objective(
        fn,
        name=f"neuron({layer!r}, {_index_repr(idx)}{_position_repr(position, pos)}{_layout_repr(layout)})",
        layers=frozenset({layer}),
        checks=(_index_check(layer, idx, "neuron", layout=layout), _position_check(layer, pos, layout)),
        layouts={layer: layout},
    )


# -- directions in a layer's channel space (Lucid's direction, direction_neuron) -----------------

#: Lucid's ``_dot_cossim``: the epsilon added to both lengths in the cosine, and the floor under it.
_COSSIM_EPS: Final = 1e-4
_COSSIM_FLOOR: Final = 0.1


def _check_vector(vector: object, what: str) -> Tensor:
    """A direction ``(C,)`` or one per image ``(B, C)``: real, finite, no row all zeros; a detached float copy."""
    if not isinstance(vector, Tensor):
        try:
            vector = torch.as_tensor(vector, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise InvalidTypeError(
                f"{what} needs a vector of numbers, shape (C,) or (B, C); got {type(vector).__name__}."
            ) from err
    if vector.is_complex() or vector.dim() not in (1, 2) or 0 in vector.shape:
        raise InvalidArgumentError(
            f"{what} needs a real vector of shape (C,), one direction for every image, or (B, C), one "
            f"per image; got {vector.dtype} of shape {tuple(vector.shape)}."
        )
    vector = vector.detach().to(torch.promote_types(vector.dtype, torch.float32)).clone()
    if not bool(torch.isfinite(vector).all()):
        raise InvalidArgumentError(f"{what}'s vector must be finite; it holds nan or inf.")
    zero = (vector == 0).all(dim=-1).reshape(-1).nonzero().flatten().tolist()
    if zero:
        rows = "" if vector.dim() == 1 else f" (rows {zero})"
        raise InvalidArgumentError(f"{what}'s vector is all zeros{rows}: it points nowhere.")
    return vector


def _vector_fits(what: str, layer: str, vector: Tensor, shape: tuple[int, ...], after: str = "") -> None:
    """The vector against the layer's ``(N, C, ...)`` shape: one value per channel, one row per image."""
    where = "the model output" if layer == OUTPUT else f"layer {layer!r}"
    if len(shape) < 2:
        raise InvalidArgumentError(
            f"{what} needs an output of shape (N, channels, ...); {where} gives {shape}{after}."
        )
    word = "unit" if len(shape) == 2 else "channel"
    if vector.shape[-1] != shape[1]:
        raise InvalidArgumentError(
            f"{what}'s vector has {vector.shape[-1]} values, but {where} has {shape[1]} {word}s{after}: "
            f"give one value per {word}."
        )
    if vector.dim() == 2 and vector.shape[0] != shape[0]:
        raise InvalidArgumentError(
            f"{what}'s vector holds {vector.shape[0]} directions, one per image, for a batch of {shape[0]}: "
            f"give one row per image, or one ({shape[1]},) vector for every image."
        )


def _vector_check(what: str, layer: str, vector: Tensor, layout: Layout) -> Check:
    after = f" after {layout.describe()}" if layout.reshapes else ""

    def check(shapes: Shapes) -> None:
        shape = reshaped_shape(shapes[layer], layout) if layer in shapes else None
        if shape is not None:
            _vector_fits(what, layer, vector, shape, after)

    return check


def _dot_cossim(acts: Tensor, vector: Tensor, cossim_pow: float) -> Tensor:
    """Per sample, the mean over positions of ``a . v``, times ``max(0.1, cos(a, v)) ** cossim_pow``.

    ``acts`` is ``(N, C, P)`` (P positions), ``vector`` ``(C,)`` or ``(N, C)``; float32 at least.
    """
    work = torch.promote_types(acts.dtype, torch.float32)
    acts = acts.to(work)
    v = vector.to(device=acts.device, dtype=work).expand(acts.shape[0], -1)
    dot = torch.einsum("ncp,nc->np", acts, v)
    if cossim_pow == 0:
        return dot.mean(1)
    lengths = (_COSSIM_EPS + acts.norm(dim=1)) * (_COSSIM_EPS + v.norm(dim=1, keepdim=True))
    weight: Tensor = (dot / lengths).clamp_min(_COSSIM_FLOOR).pow(cossim_pow)
    return (dot * weight).mean(1)


def _direction_name(
    what: str, layer: str, vector: Tensor, *, position: str, power: float, layout: Layout
) -> str:
    """``what('layer', <vector of C>, position=..., cossim_pow=..., reshape=...)``, the options as given."""
    size = vector.shape[-1]
    shown = f"<vector of {size}>" if vector.dim() == 1 else f"<{vector.shape[0]} vectors of {size}>"
    cossim = f", cossim_pow={power:g}" if power else ""
    return f"{what}({layer!r}, {shown}{position}{cossim}{_layout_repr(layout)})"


def direction(
    layer: str, vector: Tensor | Sequence[float], *, cossim_pow: float = 0.0, reshape: ReshapeSpec = None
) -> Objective:
    """A direction in the layer's channel space: ``a . v`` at every position, averaged (Lucid's ``direction``).

    A channel is a direction along one axis (``channel(layer, c)`` is ``direction(layer, e_c)``); a
    concept (a row of :attr:`convlens.ConceptsResult.bank`) or any mix of channels is another.
    Per sample, the value is the mean over the layer's positions of the dot product of the
    activation vector ``a`` (``C`` values at one position) with ``vector``; it scales with the
    vector's length. With ``cossim_pow > 0`` each position's dot product is weighted by
    ``max(0.1, cos(a, v)) ** cossim_pow`` (Lucid's ``_dot_cossim``, the cosine computed as
    ``a . v / ((1e-4 + |a|) (1e-4 + |v|))``): an image then gains by pointing the activations *along*
    the direction, not only by making them large; Lucid's building-blocks notebook draws neuron
    groups this way (with ``cossim_pow=1``).

    Args:
        layer: Qualified name of the layer (``"features.3"``, ``"layer4.1.relu#1"``).
        vector: ``(C,)``, the direction for every image, or ``(B, C)``, row ``b`` for image ``b``
            of a batch of ``B`` (a bank of concepts drawn at once); a tensor, a NumPy array or a
            list of numbers. Copied; its device and dtype follow the layer's when it is read.
        cossim_pow: The power of the floored cosine; 0: the plain dot product.
        reshape: How the layer's output becomes ``(N, C, *spatial)``, as for :func:`channel`;
            ``C`` is counted after the reshape.

    Returns:
        The objective; per sample ``n``, ``mean over positions p of a[n, :, p] . v[n]``
        (times the floored cosine to the power ``cossim_pow``), float32 at least.

    Raises:
        InvalidArgumentError: A vector that is not ``(C,)`` or ``(B, C)``, not finite, or all zeros
            (a row of zeros); a negative ``cossim_pow``; an unknown ``reshape`` preset. Against the
            model (when a maximizer is built, or at the first evaluation): a vector whose length is
            not the layer's number of channels, or whose ``B`` is not the batch (both sizes named).
        InvalidTypeError: A vector that is not numbers; a ``layer`` that is not a name.

    Example:
        >>> import torch
        >>> acts = {"conv": torch.tensor([[[[1.0, 0.0]], [[2.0, 4.0]]]])}  # (1, 2, 1, 2): a = (1, 2), (0, 4)
        >>> direction("conv", [1.0, 1.0])(acts, torch.zeros(1)).tolist()  # (3 + 4) / 2
        [3.5]
        >>> direction("conv", torch.eye(2), cossim_pow=1)
        direction('conv', <2 vectors of 2>, cossim_pow=1)
        >>> direction("conv", [1.0, 0.0, 0.0]).validate({"conv": (1, 2, 1, 2)})
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: direction's vector has 3 values, but layer 'conv' has 2 channels: give one value per channel.

    References:
        Lucid, ``lucid/optvis/objectives.py``: ``direction``, ``direction_neuron`` and
        ``_dot_cossim``. https://github.com/tensorflow/lucid/blob/master/lucid/optvis/objectives.py
        Olah et al., "The Building Blocks of Interpretability", Distill 2018 (neuron groups).
        https://distill.pub/2018/building-blocks/
    """
    layer = _check_layer(layer)
    vec = _check_vector(vector, "direction")
    power = check_real("cossim_pow", cossim_pow, positive=False)
    layout = as_layout(reshape)

    def fn(activations: Activations, image: Tensor) -> Tensor:
        acts = _read(activations, layer, layout)
        _vector_fits("direction", layer, vec, tuple(acts.shape))
        return _dot_cossim(acts.flatten(2) if acts.dim() > 2 else acts.unsqueeze(-1), vec, power)

    return Objective(
        fn,
        name=_direction_name("direction", layer, vec, position="", power=power, layout=layout),
        layers=frozenset({layer}),
        checks=(_vector_check("direction", layer, vec, layout),),
        layouts={layer: layout},
    )


def direction_neuron(
    layer: str,
    vector: Tensor | Sequence[float],
    *,
    position: Position = None,
    cossim_pow: float = 0.0,
    reshape: ReshapeSpec = None,
) -> Objective:
    """A direction at one position of the layer's grid (Lucid's ``direction_neuron``).

    :func:`direction` at a single position, as :func:`neuron` is :func:`channel` at one: per sample,
    ``a . v`` for the activation vector ``a`` at ``position`` (the centre by default), times
    ``max(0.1, cos(a, v)) ** cossim_pow`` when ``cossim_pow > 0``. For a layer without positions
    (a Linear layer's ``(N, F)``) it is the dot product with the whole output.

    Args:
        layer: Qualified name of the layer.
        vector: ``(C,)`` or ``(B, C)``, as for :func:`direction`.
        position: As for :func:`neuron`: ``(row, col)`` for 2-D maps, an int for 1-D; None: the
            centre, ``size // 2`` along each dimension; must be None for a layer without positions.
        cossim_pow: The power of the floored cosine; 0: the plain dot product.
        reshape: As for :func:`channel` (positions are then in the reshaped grid).

    Returns:
        The objective; per sample ``n``, ``a[n, :, row, col] . v[n]`` (times the floored cosine to
        the power ``cossim_pow``).

    Raises:
        InvalidArgumentError: As :func:`direction`, and a negative position entry; against the model,
            a position outside the layer's grid, or a position for a layer without one.
        InvalidTypeError: As :func:`direction`, and a position that is not ints.

    Example:
        >>> import torch
        >>> acts = {"conv": torch.arange(18.0).view(1, 2, 3, 3)}  # the centre holds (4, 13)
        >>> direction_neuron("conv", [1.0, -1.0])(acts, torch.zeros(1)).tolist()
        [-9.0]
        >>> direction_neuron("conv", [0.0, 2.0], position=(0, 1))
        direction_neuron('conv', <vector of 2>, position=(0, 1))

    References:
        Lucid, ``lucid/optvis/objectives.py``: ``direction_neuron``.
        https://github.com/tensorflow/lucid/blob/master/lucid/optvis/objectives.py
    """
    layer = _check_layer(layer)
    vec = _check_vector(vector, "direction_neuron")
    pos = _check_position(position)
    power = check_real("cossim_pow", cossim_pow, positive=False)
    layout = as_layout(reshape)

    def fn(activations: Activations, image: Tensor) -> Tensor:
        acts = _read(activations, layer, layout)
        _vector_fits("direction_neuron", layer, vec, tuple(acts.shape))
        return _dot_cossim(_at(acts, layer, pos).unsqueeze(-1), vec, power)

    return Objective(
        fn,
        name=_direction_name(
            "direction_neuron", layer, vec, position=_position_repr(position, pos), power=power, layout=layout
        ),
        layers=frozenset({layer}),
        checks=(_vector_check("direction_neuron", layer, vec, layout), _position_check(layer, pos, layout)),
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
