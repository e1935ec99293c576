"""The one home of argument checks, with one wording, and plain shape mismatches in words.

Private. Every public entry point validates its arguments here before any
work: an int with a lower bound, a finite real, a string choice (with the
nearest match), a shape, a model, class or unit indices. Each message says
what was wrong, what was given and what is valid, in the same words
everywhere (``steps must be an int >= 1; got 0.``). :func:`layer_mismatch`
says what a layer expected of an input it rejects.

Example:
    >>> check_int("steps", 0, 1)
    Traceback (most recent call last):
    ...
    convlens.errors.InvalidArgumentError: steps must be an int >= 1; got 0.
    >>> check_indices("channel", [3, 1])
    (3, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from convlens.errors import (
    AmbiguousLayerError,
    ConvlensError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    did_you_mean,
)

if TYPE_CHECKING:
    from convlens.core.layers import LayerRef

__all__ = [
    "as_int",
    "call_index",
    "check_bool",
    "check_choice",
    "check_device",
    "check_indices",
    "check_int",
    "check_model",
    "check_ran",
    "check_real",
    "check_shape",
    "choices",
    "format_shape",
    "layer_mismatch",
    "require_autograd",
]


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Validate a string option against its valid choices.

    Raises:
        InvalidArgumentError: ``value`` is not one of ``choices`` (the nearest is named).

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


def as_int(value: object) -> object:
    """A numpy integer or a 0-d integer tensor as an int; anything else unchanged (checked later).

    Example:
        >>> as_int(np.int64(3)), as_int(torch.tensor(2)), as_int(True), as_int(1.5)
        (3, 2, True, 1.5)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, Tensor) and value.dim() == 0 and not value.is_floating_point():
        return value if value.dtype == torch.bool or value.is_complex() else int(value)
    return int(value) if isinstance(value, Integral) else value


def check_int(name: str, value: object, low: int) -> int:
    """Validate an integer argument that must be at least ``low`` (bool is refused).

    Raises:
        InvalidTypeError: ``value`` is not an int.
        InvalidArgumentError: ``value`` is below ``low``.

    Example:
        >>> check_int("steps", 5, 1)
        5
        >>> check_int("k", 2.0, 1)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidTypeError: k must be an int >= 1; got float 2.0.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{name} must be an int >= {low}; got {type(value).__name__} {value!r}.")
    if value < low:
        raise InvalidArgumentError(f"{name} must be an int >= {low}; got {value}.")
    return value


def check_real(name: str, value: object, *, positive: bool) -> float:
    """Validate a finite real number, ``> 0`` when ``positive``, else ``>= 0``.

    Example:
        >>> check_real("lr", 0.05, positive=True)
        0.05
        >>> check_real("l1", -1, positive=False)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: l1 must be a finite number >= 0; got -1.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidTypeError(f"{name} must be a number; got {type(value).__name__} {value!r}.")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidArgumentError(f"{name} must be a finite number {bound}; got {value!r}.")
    return number


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    """Validate a model input shape, batch first, at least two ints >= 1.

    Example:
        >>> check_shape("input_shape", [1, 3, 8, 8])
        (1, 3, 8, 8)
        >>> check_shape("input_shape", (3,))
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: input_shape must hold at least two ints >= 1, batch first, like (1, 3, 224, 224); got (3,).
    """
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise InvalidTypeError(f"{name} must be a sequence of ints like (1, 3, 224, 224); got {shape!r}.")
    values = tuple(shape)
    if len(values) < 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise InvalidArgumentError(
            f"{name} must hold at least two ints >= 1, batch first, like (1, 3, 224, 224); got {shape!r}."
        )
    return values


def check_model(model: object) -> nn.Module:
    """Validate that ``model`` is an ``nn.Module``.

    Example:
        >>> check_model("resnet18")
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidTypeError: model must be a torch.nn.Module; got str.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    return model


def check_indices(name: str, value: object, *, item: str | None = None) -> int | tuple[int, ...]:
    """An index >= 0, or a non-empty sequence of them (list, tuple, 1-D integer tensor or array).

    ``item`` names one index in messages (``"neuron"`` for ``neurons``); by default ``name``.

    Raises:
        InvalidTypeError: Not an int or a sequence of ints.
        InvalidArgumentError: An empty sequence or a negative index.

    Example:
        >>> check_indices("neurons", np.arange(3), item="neuron")
        (0, 1, 2)
        >>> check_indices("neurons", [2, -1], item="neuron")
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: neuron -1 is out of range: indices are >= 0.
    """
    item = item or name
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value.copy())  # a reversed view has negative strides
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool or value.dim() > 1:
            raise InvalidTypeError(
                f"{name} must be an int or a sequence of ints; got a {value.dim()}-D tensor of {value.dtype}."
            )
        value = int(value) if value.dim() == 0 else value.tolist()
    single = as_int(value)
    if isinstance(single, int) and not isinstance(single, bool):
        values: list[object] = [single]
    elif isinstance(value, Sequence | range) and not isinstance(value, str | bytes):
        values = [as_int(v) for v in value]
        if not values:
            raise InvalidArgumentError(f"{name} is empty: give at least one index.")
    else:
        raise InvalidTypeError(
            f"{name} must be an int or a sequence of ints; got {type(value).__name__} {value!r}."
        )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidTypeError(f"{name} must hold ints; got {type(v).__name__} {v!r}.")
        if v < 0:
            raise InvalidArgumentError(f"{item} {v} is out of range: indices are >= 0.")
    ints = [v for v in values if isinstance(v, int)]
    return ints[0] if isinstance(single, int) and not isinstance(single, bool) else tuple(ints)


def format_shape(shape: tuple[int, ...]) -> str:
    """``[1, 3, 224, 224]``, the way the shape table prints shapes.

    Example:
        >>> format_shape((1, 3, 224, 224))
        '[1, 3, 224, 224]'
    """
    return "[" + ", ".join(map(str, shape)) + "]"


def layer_mismatch(name: str, module: nn.Module, shape: tuple[int, ...]) -> str | None:
    """What ``module`` expected and an input of ``shape`` lacked, if it is a plain mismatch.

    Covers convolutions (rank, channels), linear layers (features) and
    normalization layers (channels); None for anything else.

    Example:
        >>> from torch import nn
        >>> layer_mismatch("features.3", nn.Conv2d(64, 192, 5), (1, 3, 27, 27))
        'features.3 expects 64 input channels, got 3 (Conv2d, input shape [1, 3, 27, 27])'
    """
    where = f" ({type(module).__name__}, input shape {format_shape(shape)})"
    if isinstance(module, _ConvNd):
        nd = len(module.kernel_size)
        if len(shape) not in {nd + 1, nd + 2}:
            return f"{name} expects a {nd + 1}-D or {nd + 2}-D input, got {len(shape)}-D{where}"
        if shape[-nd - 1] != module.in_channels:
            return f"{name} expects {module.in_channels} input channels, got {shape[-nd - 1]}{where}"
    if isinstance(module, nn.Linear) and (not shape or shape[-1] != module.in_features):
        got = shape[-1] if shape else "a 0-D input"
        return f"{name} expects {module.in_features} input features, got {got}{where}"
    if isinstance(module, _BatchNorm | _InstanceNorm | nn.GroupNorm):
        want = module.num_channels if isinstance(module, nn.GroupNorm) else module.num_features
        if len(shape) < 2 or shape[1] != want:
            return f"{name} expects {want} channels, got {shape[1] if len(shape) >= 2 else 'none'}{where}"
    return None


def choices(literal: Any) -> tuple[str, ...]:
    """The choices of a string ``Literal`` type, in order: the one list a check and a signature share.

    Example:
        >>> from typing import Literal
        >>> choices(Literal["zeros", "blur"])
        ('zeros', 'blur')
    """
    return tuple(str(c) for c in get_args(literal))


def check_bool(name: str, value: object) -> bool:
    """Validate a flag: ``True`` or ``False``, nothing truthy in their place.

    Raises:
        InvalidTypeError: ``value`` is not a bool.

    Example:
        >>> check_bool("progress", 1)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidTypeError: progress must be True or False; got int 1.
    """
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}.")
    return value


def require_autograd(who: str, *, call: str = "call it", no_grad_ok: bool = True) -> None:
    """Fail before any work where ``torch.inference_mode()`` has turned autograd off.

    ``who`` names the entry point. ``torch.no_grad()`` is fine for entry points
    that switch autograd on themselves (all of them, where ``no_grad_ok``).

    Raises:
        ConvlensError: inference mode is on.

    Example:
        >>> import torch
        >>> with torch.inference_mode():
        ...     require_autograd("GradCAM")
        Traceback (most recent call last):
        ...
        convlens.errors.ConvlensError: GradCAM needs autograd, which torch.inference_mode() turns off; call it outside inference_mode (torch.no_grad() is fine).
    """
    if torch.is_inference_mode_enabled():
        hint = " (torch.no_grad() is fine)" if no_grad_ok else ""
        raise ConvlensError(
            f"{who} needs autograd, which torch.inference_mode() turns off; {call} outside inference_mode{hint}."
        )


def check_ran(ref: LayerRef, calls: int, *, model: str, tense: str = "runs") -> int:
    """The layer must run, and a reused one must be named per call (``name#i``); returns the call.

    ``calls`` is how many times the layer ran (or runs, from the probe) in one
    forward of the model named ``model``.

    Raises:
        LayerNotFoundError: The layer never runs, or ``#i`` is past its last call.
        AmbiguousLayerError: A bare name of a module that runs more than once.

    Example:
        >>> from torch import nn
        >>> from convlens.core.layers import LayerRef
        >>> check_ran(LayerRef("fc", nn.Linear(1, 1)), 0, model="Net")
        Traceback (most recent call last):
        ...
        convlens.errors.LayerNotFoundError: Layer 'fc' does not run in the forward of Net.
    """
    if calls == 0:
        raise LayerNotFoundError(f"Layer {ref.name!r} does not run in the forward of {model}.")
    return call_index(ref, calls, tense=tense)


def check_device(device: object) -> torch.device:
    """A device string or object that this machine has: ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'``.

    Raises:
        InvalidArgumentError: not a device, or not available here (the available ones are listed).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("gpu")
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got 'gpu'.
    """
    message = f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}."
    if not isinstance(device, str | torch.device):
        raise InvalidArgumentError(message)
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidArgumentError(message) from err
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (where.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(where.type, False):
        raise InvalidArgumentError(
            f"device {str(where)!r} is not available on this machine; choose from "
            f"{', '.join(repr(name) for name, ok in available.items() if ok)}."
        )
    return where


def call_index(ref: LayerRef, calls: int, *, tense: str = "runs") -> int:
    """Which call of a layer that ran ``calls`` (>= 1) times ``ref`` names.

    The bare name of a module that ran more than once is ambiguous; ``#i``
    must be one of its calls. ``tense`` words the message ("runs" when the
    count comes from a probe, "ran" when it was recorded).

    Raises:
        AmbiguousLayerError: A bare name of a module that ran more than once.
        LayerNotFoundError: ``#i`` past the last call.

    Example:
        >>> from torch import nn
        >>> from convlens.core.layers import LayerRef
        >>> call_index(LayerRef("relu", nn.ReLU(), 1), 3)
        1
        >>> call_index(LayerRef("relu", nn.ReLU()), 2)
        Traceback (most recent call last):
        ...
        convlens.errors.AmbiguousLayerError: Layer 'relu' runs 2 times in one forward; name the call: 'relu#0', 'relu#1'.
    """
    if ref.call is None and calls > 1:
        named = ", ".join(f"'{ref.name}#{i}'" for i in range(calls))
        raise AmbiguousLayerError(
            f"Layer {ref.name!r} {tense} {calls} times in one forward; name the call: {named}."
        )
    call = ref.call or 0
    if call >= calls:
        raise LayerNotFoundError(
            f"Layer {ref.key!r} does not exist: {ref.name!r} {tense} {calls} time"
            f"{'s' if calls > 1 else ''} (#0 to #{calls - 1})."
        )
    return call
