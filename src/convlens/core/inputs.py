"""What a forward needs besides the image: the model's other arguments, and a model that can run.

**Forward arguments.** Every entry point that runs a model takes ``forward_args=``: the model's
other forward arguments, passed on every forward it makes (the probe's included), after the input::

    forward_args=(mask,)                               # model(x, mask)
    forward_args={"temperature": 2.0}                  # model(x, temperature=2.0)
    forward_args=ForwardArgs(mask, temperature=2.0)    # model(x, mask, temperature=2.0)

Where the work splits or repeats the batch (deletion's perturbed copies, a dataset's batches), a
tensor among them whose first dimension is the batch size follows the batch: it is indexed with the
same rows. Every other value (a scalar, a tensor of another length) is passed as it is.

**A model that can run.** :func:`check_runnable` fails before any work, with a typed error saying
why and what to do, for a quantized model asked for gradients, a model on the ``meta`` device, and
a model and input on different devices.

Example:
    >>> import torch
    >>> extra = as_forward_args({"temperature": 2.0})
    >>> extra
    ForwardArgs(temperature=2.0)
    >>> mask = torch.ones(4, 1, 8, 8)
    >>> rows = ForwardArgs(mask, scale=3).take(torch.tensor([0, 0, 3]), batch=4)
    >>> tuple(rows.args[0].shape), rows.kwargs
    ((3, 1, 8, 8), {'scale': 3})
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from convlens.errors import DeviceMismatchError, InvalidArgumentError, InvalidTypeError, UnsupportedModelError

__all__ = [
    "NO_ARGS",
    "ForwardArgs",
    "ForwardArgsLike",
    "as_forward_args",
    "check_runnable",
    "guess_input_shape",
    "is_quantized",
    "model_device",
]


class ForwardArgs:
    """The model's forward arguments after the input: ``model(x, *args, **kwargs)``.

    Immutable; compare equal when their values are the same objects.

    Example:
        >>> from torch import nn
        >>> ForwardArgs(1, mode="fast")
        ForwardArgs(1, mode='fast')
        >>> bool(ForwardArgs()), ForwardArgs(2).call(lambda x, k: x * k, 3)
        (False, 6)
    """

    __slots__ = ("_args", "_kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args: tuple[Any, ...] = args
        self._kwargs: dict[str, Any] = kwargs

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments after the input."""
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments (a copy: the object stays immutable)."""
        return dict(self._kwargs)

    def call(self, model: Any, *inputs: Any) -> Any:
        """``model(*inputs, *args, **kwargs)``."""
        return model(*inputs, *self._args, **self._kwargs)

    def values(self) -> Iterator[Any]:
        """Every argument, positional then keyword."""
        yield from self._args
        yield from self._kwargs.values()

    def tensors(self) -> list[Tensor]:
        """The tensors among the arguments (one level into tuples, lists and dicts)."""
        found: list[Tensor] = []
        for value in self.values():
            inner = value.values() if isinstance(value, Mapping) else value
            if isinstance(value, Tensor):
                found.append(value)
            elif isinstance(value, tuple | list | Mapping):
                found.extend(v for v in inner if isinstance(v, Tensor))
        return found

    def take(self, rows: Tensor | slice, *, batch: int) -> ForwardArgs:
        """The arguments for the rows ``rows`` of a batch of ``batch``: batched tensors follow.

        A tensor whose first dimension is ``batch`` is indexed with ``rows`` (also one level into
        tuples, lists and dicts); everything else is passed unchanged.
        """
        if not self:
            return self

        def pick(value: Any, depth: int = 0) -> Any:
            if isinstance(value, Tensor):
                return value[rows] if value.dim() > 0 and value.shape[0] == batch else value
            if depth == 0 and isinstance(value, Mapping):
                return {k: pick(v, 1) for k, v in value.items()}
            if depth == 0 and isinstance(value, tuple | list) and not hasattr(value, "_fields"):
                return type(value)(pick(v, 1) for v in value)
            return value

        return ForwardArgs(*(pick(v) for v in self._args), **{k: pick(v) for k, v in self._kwargs.items()})

    def __bool__(self) -> bool:
        return bool(self._args or self._kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ForwardArgs):
            return NotImplemented
        same_args = len(self._args) == len(other._args) and all(
            a is b for a, b in zip(self._args, other._args, strict=True)
        )
        same_kwargs = self._kwargs.keys() == other._kwargs.keys() and all(
            v is other._kwargs[k] for k, v in self._kwargs.items()
        )
        return same_args and same_kwargs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [_short(v) for v in self._args] + [f"{k}={_short(v)}" for k, v in self._kwargs.items()]
        return f"ForwardArgs({', '.join(parts)})"


def _short(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)}"
    return repr(value)


#: No forward arguments: ``model(x)``.
NO_ARGS = ForwardArgs()

#: What ``forward_args=`` accepts.
ForwardArgsLike = ForwardArgs | tuple[Any, ...] | Mapping[str, Any] | None


def as_forward_args(value: object) -> ForwardArgs:
    """``forward_args=`` as a :class:`ForwardArgs`: None, a tuple, a dict, or one already.

    Raises:
        InvalidTypeError: anything else (a list or a lone tensor is ambiguous: wrap it in a tuple).

    Example:
        >>> as_forward_args(None), as_forward_args((1, 2))
        (ForwardArgs(), ForwardArgs(1, 2))
        >>> as_forward_args([1])
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidTypeError: forward_args must be a tuple of positional arguments, a dict of keyword arguments, or convlens.ForwardArgs(*args, **kwargs) for both; got list. A single argument goes in a tuple: forward_args=(value,).
    """
    if value is None:
        return NO_ARGS
    if isinstance(value, ForwardArgs):
        return value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return ForwardArgs(*value)
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return ForwardArgs(**value)
    raise InvalidTypeError(
        "forward_args must be a tuple of positional arguments, a dict of keyword arguments, or "
        f"convlens.ForwardArgs(*args, **kwargs) for both; got {type(value).__name__}. "
        "A single argument goes in a tuple: forward_args=(value,)."
    )


# -- a model that can run --------------------------------------------------------------------------

_QUANTIZED = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")


def is_quantized(model: nn.Module) -> bool:
    """Whether the model holds PyTorch's quantized modules (eager-mode static or dynamic quantization).

    Read from the modules' classes only: called before every gradient entry point's work, it stays cheap.

    Example:
        >>> from torch import nn
        >>> is_quantized(nn.Conv2d(1, 1, 1))
        False
    """
    return any(type(module).__module__.startswith(_QUANTIZED) for module in model.modules())


def model_device(model: nn.Module) -> torch.device | None:
    """The one device of every parameter and buffer; None where there are none, or several."""
    devices = {t.device for t in [*model.parameters(), *model.buffers()]}
    return devices.pop() if len(devices) == 1 else None


def _input_tensors(inputs: Any, depth: int = 0) -> Iterator[Tensor]:
    if isinstance(inputs, Tensor):
        yield inputs
    elif depth < 3 and isinstance(inputs, tuple | list):
        for value in inputs:
            yield from _input_tensors(value, depth + 1)
    elif depth < 3 and isinstance(inputs, Mapping):
        for value in inputs.values():
            yield from _input_tensors(value, depth + 1)


def _cpu_scalar(tensor: Tensor) -> bool:
    """A 0-dim CPU tensor (a temperature): PyTorch combines it with tensors on any device."""
    return tensor.dim() == 0 and tensor.device.type == "cpu"


def check_runnable(
    model: nn.Module,
    inputs: Any = (),
    *,
    who: str,
    gradients: bool = False,
    forward_args: ForwardArgs = NO_ARGS,
) -> None:
    """Fail before any work where ``model`` cannot run on ``inputs`` the way ``who`` needs it to.

    Args:
        model: The user's model.
        inputs: The input, or a tuple or list of them (a detector's list of images).
        who: The entry point, named in the messages.
        gradients: Whether the entry point differentiates through the model.
        forward_args: The model's other forward arguments; their tensors must share the device too.

    A model on the ``meta`` device given only meta inputs, where no gradients are needed, is a
    shapes-only run (``LayerTap.run`` records meta activations) and passes.

    Raises:
        UnsupportedModelError: a quantized model where gradients are needed (use the float model, or
            dequantize), or a model whose parameters live on the ``meta`` device given real inputs
            or asked for gradients (load its weights).
        DeviceMismatchError: the model and a tensor of the input or of ``forward_args`` live on
            different devices; both are named. A 0-dim CPU tensor (a temperature) is not checked:
            PyTorch combines it with tensors on any device.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> check_runnable(nn.Conv2d(1, 1, 1, device="meta"), torch.zeros(1, 1, 4, 4), who="GradCAM")
        Traceback (most recent call last):
        ...
        convlens.errors.UnsupportedModelError: GradCAM cannot run a model on the meta device: it holds no data (its parameters are shapes only). Load its weights first, e.g. model.to_empty(device="cpu") then model.load_state_dict(state), or build it on a real device.
    """
    given = [t for t in [*_input_tensors(inputs), *forward_args.tensors()] if not _cpu_scalar(t)]
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    if first is not None and not first.is_meta and all(t.device == first.device for t in given):
        device: torch.device | None = first.device  # the common case, without a walk over every tensor
    else:
        device = model_device(model)
    shapes_only = not gradients and bool(given) and all(t.is_meta for t in given)
    if device is not None and device.type == "meta" and not shapes_only:
        raise UnsupportedModelError(
            f"{who} cannot run a model on the meta device: it holds no data (its parameters are shapes "
            'only). Load its weights first, e.g. model.to_empty(device="cpu") then '
            "model.load_state_dict(state), or build it on a real device."
        )
    if gradients and is_quantized(model):
        raise UnsupportedModelError(
            f"{who} needs gradients through the model, and a quantized model has none (PyTorch's "
            "quantized kernels do not differentiate). Use the float model before quantization, or "
            "dequantize it; LayerTap (without grads), NeuronVisualizer.top_examples and FilterRenderer "
            "work on the quantized model itself."
        )
    if device is None:
        return
    for what, tensors in (
        ("the input", _input_tensors(inputs)),
        ("forward_args", iter(forward_args.tensors())),
    ):
        for tensor in tensors:
            if tensor.device != device and not _cpu_scalar(tensor):
                raise DeviceMismatchError(
                    f"{who}: the model is on {device} but a tensor of {what} is on {tensor.device}. "
                    f"Move them to one device first, e.g. x.to({str(device)!r}) or model.to({str(tensor.device)!r})."
                )


def guess_input_shape(model: nn.Module, *, who: str) -> tuple[int, ...]:
    """One input of ``model``, batch of 1 first, where the caller was given none.

    The model's own ``input_shape`` attribute (a tuple of ints) when it declares one (the digits CNN
    and AlphaGo's policy net do), else ``(1, 3, 224, 224)`` for a model whose first ``Conv2d`` reads
    3 channels. ``model`` is the module itself (unwrapped).

    Raises:
        InvalidArgumentError: Neither: ``who`` cannot guess, and the message says to pass ``input_shape``.

    Example:
        >>> guess_input_shape(nn.Sequential(nn.Conv2d(3, 8, 3)), who="example")
        (1, 3, 224, 224)
    """
    declared = getattr(model, "input_shape", None)
    if isinstance(declared, tuple) and declared and all(isinstance(v, int) for v in declared):
        return (1, *declared[1:])
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels == 3:
        return (1, 3, 224, 224)
    raise InvalidArgumentError(
        f"{who} cannot guess the input size of {type(model).__name__}; pass input_shape=(1, C, H, W)."
    )
