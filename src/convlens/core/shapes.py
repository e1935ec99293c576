"""A layer-by-layer shape table traced on the meta device.

:func:`trace_shapes` runs a model on PyTorch's ``meta`` device (shapes only,
no arithmetic, no weight copied) and lists every leaf call with its input and
output shapes, parameter count, multiply-accumulates, the formula behind its
output size, and the receptive field of the spatial stack so far. The table
is a :class:`~convlens.core.report.ShapeReport`; the arithmetic behind it lives in
:mod:`convlens.core.arithmetic` (both re-exported here).

Example:
    >>> import torch.nn as nn
    >>> import convlens as cl
    >>> report = cl.trace_shapes(nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.Flatten()), (1, 3, 32, 32))
    >>> report.names, report.output_shape
    (['0', '1'], (1, 1568))
    >>> cl.conv_output_size(224, kernel_size=11, stride=4, padding=2)
    55
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from convlens.core.arithmetic import Shape, conv_output_size, conv_transpose_output_size, mismatch
from convlens.core.checks import check_choice, format_shape
from convlens.core.inputs import ForwardArgsLike, as_forward_args, check_runnable, model_device
from convlens.core.layers import unwrap, wrapper_prefix
from convlens.core.probe import check_inputs, probe, require_hooks
from convlens.core.recorder import Recorder, preserved_modes
from convlens.core.report import LayerShape, ShapeReport, build_report, shape_error
from convlens.core.values import describe, first_tensor, map_tensors, tensors
from convlens.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "LayerShape",
    "ShapeReport",
    "conv_output_size",
    "conv_transpose_output_size",
    "trace_shapes",
]

#: The mode a shape trace runs the model in: ``"eval"`` (the default) or ``"train"``.
TraceMode = Literal["eval", "train"]


def _failure(model: nn.Module, names: Mapping[int, str], rec: Recorder, err: Exception) -> str:
    """Where and why a real forward failed."""
    first = (str(err).strip().splitlines() or [""])[0]
    call = rec.culprit(err)
    if call is not None:
        return mismatch(names[id(call.module)], call.module, call.input_shape) or (
            f"{names[id(call.module)]} ({type(call.module).__name__}) failed on an input of shape "
            f"{format_shape(call.input_shape)}: {type(err).__name__}: {first}"
        )
    after = (
        f"after layer {names[id(rec.calls[rec.last].module)]!r}" if rec.last >= 0 else "before any layer ran"
    )
    return f"The forward of {type(model).__name__} failed {after}: {type(err).__name__}: {first}"


def _inputs(inputs: object, dtype: object, model: nn.Module) -> tuple[Shape | None, tuple[Any, ...]]:
    """Validate ``inputs``, a size (ints) or example inputs, before any work; messages show shapes, never values."""
    check_inputs([inputs])
    if isinstance(inputs, Tensor):
        return None, (inputs,)
    ints = isinstance(inputs, tuple | list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in inputs
    )
    if isinstance(inputs, tuple | list) and inputs and not ints and tensors(inputs):
        # A list is the model's one input (a detector's images); a tuple holds the model's inputs.
        return None, ((inputs,) if isinstance(inputs, list) else tuple(inputs))
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise InvalidTypeError(f"dtype must be a torch.dtype or None; got {type(dtype).__name__} {dtype!r}.")
    expected = (
        "a size such as (1, 3, 224, 224) or an example tensor (or a list of tensors: a detector's images, "
        "the model's one input; or a tuple of the model's inputs)"
    )
    if not isinstance(inputs, tuple | list):
        raise InvalidTypeError(f"input must be {expected}; got {describe(inputs)}.")
    if not inputs:
        raise InvalidArgumentError(
            "input size is empty; give the full shape with batch, e.g. (1, 3, 224, 224)."
        )
    for i, v in enumerate(inputs):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidTypeError(
                f"input size must hold ints (or pass example tensors); got {describe(v)} at "
                f"position {i} of {describe(inputs)}. The input may be {expected}."
            )
        if v < 1:
            raise InvalidArgumentError(
                f"input size must hold ints >= 1; got {v} at position {i} of {tuple(inputs)}."
            )
    if dtype is None:
        floats = (t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
        dtype = next(floats, torch.float32)
    return tuple(inputs), (torch.empty(inputs, dtype=dtype, device="meta"),)


def _list_is_inputs(
    model: nn.Module, items: list[Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> bool:
    """Whether ``forward`` binds a list's items as separate inputs and not the list as one (the old reading).

    A detector's ``forward(images, targets=None)`` binds the list as one: that reading wins. A
    ``forward(a, b)`` given ``[a, b]`` cannot take the list alone: its items are the inputs.
    """
    if len(items) < 2 or not all(isinstance(t, Tensor) for t in items):
        return False
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a builtin or C forward: nothing to read
        return False

    def binds(*given: Any) -> bool:
        try:
            signature.bind(*given, *args, **kwargs)
        except TypeError:
            return False
        return True

    return binds(*items) and not binds(items)


@contextlib.contextmanager
def _untouched(model: nn.Module, device: torch.device, *, training: bool) -> Iterator[None]:
    """A real forward that leaves the model as found: modes restored; in train mode, buffers and RNG too.

    Train mode updates BatchNorm's running statistics in place and draws dropout masks from the
    global generator: both are put back.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(preserved_modes(model, training=training))
        stack.enter_context(torch.no_grad())
        if training:
            stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
            saved = [(b, b.clone()) for b in model.buffers()]

            def restore() -> None:
                with torch.no_grad():
                    for buffer, value in saved:
                        buffer.copy_(value)

            stack.callback(restore)
        yield


def trace_shapes(
    model: nn.Module,
    input: Sequence[int] | Tensor | Sequence[Any],
    *,
    forward_args: ForwardArgsLike = None,
    mode: TraceMode = "eval",
    dtype: torch.dtype | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> ShapeReport:
    """Trace the shapes of every leaf call of one forward, without arithmetic.

    The model runs once on the meta device (parameters swapped for meta twins
    for the call only; nothing is copied or computed), in eval mode (or train
    mode, see ``mode``), with hooks on its leaf modules that are removed
    afterwards: the same probe every convlens entry point runs before real
    work, so a model that rejects the input gets the same
    :class:`~convlens.ShapeError` here as everywhere. Shape-preserving
    functions (BatchNorm, LayerNorm, GroupNorm, activations, whose meta
    kernels are slow) answer with a tensor like their input once checked that
    the real function would accept it; this goes through a thread-local
    :class:`~torch.overrides.TorchFunctionMode`, so no module is patched.

    A forward that cannot run on meta (``.item()``, ``if x.sum() > 0``,
    ``nonzero``, numpy, a detector's box selection, quantized kernels) falls
    back to one real forward without autograd on the model's device, on
    zeros or on a copy of the example input; the report says so
    (``traced="real"``). A model on the meta device whose forward cannot run
    on meta has no such fallback: :class:`~convlens.UnsupportedModelError`.

    Wrappers (``nn.DataParallel``, ``DistributedDataParallel``,
    ``torch.compile``) are looked through, their model run eagerly, and the
    rows are named as ``named_modules()`` of the wrapper names them
    (``"module.layer4"``, ``"_orig_mod.layer4"``); the report's indexing and
    ``in`` take the wrapped model's own names too (``report["layer4"]``).

    The receptive field follows each tensor from the layer that made it; a
    tensor made between layers (``torch.cat``, ``a * b``) takes the field of
    the last layer that ran, so for branching networks it is an approximation
    (an in-place residual sum keeps the main path's field).

    Args:
        model: Any ``nn.Module``; left exactly as found (no hooks, same
            parameters, buffers, training and ``requires_grad`` flags).
        input: The input size with batch (``(1, 3, 224, 224)``), an example
            tensor, a list of tensors (a detector's images: the model's one
            input, ``model([img])``), or a tuple of the model's inputs
            (``(x, mask)``, or ``([img],)``). Deprecated: a list of tensors
            whose items ``forward`` takes as separate inputs and that it cannot
            take as one (``forward(a, b)`` given ``[a, b]``) is read as a tuple
            of inputs, as before, with a ``DeprecationWarning``.
        forward_args: The model's other forward arguments, after the input: a
            tuple (positional), a dict (keyword) or
            :class:`~convlens.ForwardArgs` for both.
        mode: ``"eval"`` (the default) traces the model in eval mode;
            ``"train"`` in train mode, where some models run more layers
            (GoogLeNet's and Inception's auxiliary classifiers). Training flags
            are restored after; a real fallback forward in train mode also
            puts back BatchNorm's running statistics and the global RNG.
        dtype: Dtype of the input made from a size; defaults to the model's
            first floating-point parameter's, else float32.
        kwargs: Deprecated: keyword inputs of the model's forward; use
            ``forward_args={...}``.

    Returns:
        A :class:`~convlens.core.report.ShapeReport`; ``print`` it for a table.

    Raises:
        InvalidTypeError: ``model`` is not a module, ``input`` not a size or
            tensors (the message describes what was given by its shapes), or
            inputs that do not fit the model's ``forward`` (a required argument
            missing from ``forward_args``).
        InvalidArgumentError: A size entry below 1, an empty size, lazy modules
            not yet initialized, or ``mode`` not one of ``"eval"``, ``"train"``.
        UnsupportedModelError: A TorchScript model (hooks cannot see inside
            it), or a meta-device model whose forward cannot run on meta.
        ShapeError: A layer rejects what it receives; the message names it,
            what it expected and what it got, ``err.report`` holds the rows
            traced before it, and the original error is the ``__cause__``.

    Shape:
        ``input``: whatever the model takes, e.g. :math:`(N, C, H, W)`.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import convlens as cl
        >>> net = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2))
        >>> report = cl.trace_shapes(net, (1, 3, 224, 224))
        >>> report["0"].output_shape, report["2"].output_shape
        ((1, 64, 55, 55), (1, 64, 27, 27))
        >>> report["0"].formula
        'floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55'
        >>> cl.trace_shapes(nn.DataParallel(net), (1, 3, 224, 224)).names
        ['module.0', 'module.1', 'module.2']
        >>> class Gated(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(3, 4, 3)
        ...     def forward(self, x, gate, *, scale):
        ...         return self.conv(x * gate) * scale
        >>> gate = torch.ones(1, 3, 8, 8)
        >>> cl.trace_shapes(Gated(), (1, 3, 8, 8), forward_args=cl.ForwardArgs(gate, scale=2.0))["conv"].output_shape
        (1, 4, 6, 6)
        >>> cl.trace_shapes(net, (1, 1, 224, 224))
        Traceback (most recent call last):
        ...
        convlens.errors.ShapeError: 0 expects 3 input channels, got 1 (Conv2d, input shape [1, 1, 224, 224]). ...
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    training = check_choice("mode", mode, get_args(TraceMode)) == "train"
    extra = as_forward_args(forward_args)
    if kwargs is not None:
        warnings.warn(
            "trace_shapes(kwargs=...) is deprecated, use forward_args={...} (same meaning); kwargs= will be "
            "removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        clash = sorted(set(kwargs) & set(extra.kwargs))
        if clash:
            raise InvalidArgumentError(
                f"trace_shapes got {', '.join(clash)} both in kwargs= and in forward_args; give each once."
            )
    lazy = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if is_lazy(t)]
    if lazy:
        raise InvalidArgumentError(
            f"{type(model).__name__} has uninitialized lazy parameters ({', '.join(repr(n) for n in lazy[:3])}); "
            "run one forward first: trace_shapes leaves the model as found, so it cannot initialize them."
        )
    prefix = wrapper_prefix(model)
    model = unwrap(model)
    require_hooks(model, "trace_shapes")
    size, inputs = _inputs(input, dtype, model)
    keywords = {**dict(kwargs or {}), **extra.kwargs}
    if isinstance(input, list) and _list_is_inputs(model, input, extra.args, keywords):
        warnings.warn(
            f"trace_shapes(model, [a, b]): a list of {len(input)} tensors as the model's several inputs is "
            "deprecated; pass a tuple (trace_shapes(model, (a, b))). A list is the model's one input (a "
            f"detector's images); it is read as several here because {type(model).__name__}.forward takes "
            "the items and not the list, until the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        inputs = tuple(input)
    args = (*inputs, *extra.args)
    first = first_tensor(inputs)
    input_shape = () if first is None else tuple(first.shape)
    seen = probe(model, args, keywords, trace=True, training=training, prefix=prefix)
    seen.check()
    if seen.complete:
        return build_report(
            model,
            seen.names,
            seen.calls,
            input_shape=input_shape,
            output_shape=seen.output_shape or (),
            traced="meta",
            prefix=prefix,
        )
    # The meta pass could not run the whole forward: one real forward, on the model's device.
    check_runnable(model, (), who="trace_shapes", forward_args=extra)
    names = seen.names
    leaves = [m for m in model.modules() if id(m) in names]
    device = model_device(model) or next(
        (t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu")
    )
    real = (
        (torch.zeros(size, dtype=inputs[0].dtype, device=device),)
        if size
        else map_tensors(inputs, lambda t: t.detach().to(device, copy=True))
    )
    rec = Recorder(model, {}, trace=leaves)
    try:
        with rec.attached(), rec.owned(), _untouched(model, device, training=training):
            output = first_tensor(model(*real, *extra.args, **keywords))
    except Exception as err:
        message = _failure(model, names, rec, err)
        raise shape_error(
            model, names, rec.calls, message, input_shape=input_shape, real=True, prefix=prefix
        ) from err
    note = f"{seen.failure}; ran on {device}"
    output_shape = () if output is None else tuple(output.shape)
    return build_report(
        model,
        names,
        rec.calls,
        input_shape=input_shape,
        output_shape=output_shape,
        traced="real",
        note=note,
        prefix=prefix,
    )
