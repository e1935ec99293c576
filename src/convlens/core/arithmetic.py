"""Convolution arithmetic: output sizes, formulas, MACs and receptive fields of one layer.

The two public functions work out an output length from a layer's numbers.
The rest (package-public, not exported from :mod:`convlens`) reads a conv or
pooling module's geometry and is what the shape table is built from.

Example:
    >>> from torch import nn
    >>> from convlens.core.arithmetic import conv_output_size, formula, window
    >>> conv_output_size(224, kernel_size=11, stride=4, padding=2)
    55
    >>> conv_transpose_output_size(7, kernel_size=4, stride=2, padding=1)
    14
    >>> conv = nn.Conv2d(3, 64, 11, stride=4, padding=2)
    >>> window(conv).kernel, window(conv).stride
    ((11, 11), (4, 4))
    >>> formula(conv, (1, 3, 224, 224), (1, 64, 55, 55))
    'floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import nn
from torch.nn.modules.conv import _ConvNd

from convlens.core.checks import check_bool, check_int, format_shape, layer_mismatch
from convlens.errors import InvalidArgumentError

__all__ = ["conv_output_size", "conv_transpose_output_size"]

#: A tensor shape.
Shape = tuple[int, ...]
#: A receptive field or jump: one int when every spatial dimension agrees.
Extent = int | tuple[int, ...] | None
#: The receptive field, jump and start per spatial dimension, None where undefined.
#: ``start`` is the input pixel where output position 0's field begins (negative
#: inside the padding): output position ``i`` sees ``start + i * jump`` onwards.
RF = tuple[Shape, Shape, Shape] | None


# -- arithmetic ----------------------------------------------------------------


def conv_output_size(  # noqa: PLR0917 - the contract's signature, torch's argument order
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a convolution or pooling along one dimension.

    ``floor((size + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1``,
    with ``ceil`` instead of ``floor`` when ``ceil_mode`` (pooling), where, as
    in PyTorch, a last window that would start in the right padding is dropped.

    Args:
        size: Input length (>= 1).
        kernel_size: Window length (>= 1).
        stride: Step between windows (>= 1).
        padding: Zeros added on each side (>= 0).
        dilation: Spacing between window elements (>= 1).
        ceil_mode: Round up instead of down (pooling layers' ``ceil_mode``): the
            last window may then run past the end of the input.

    Returns:
        The output length, at least 1.

    Raises:
        InvalidTypeError: An argument is not an int (``bool`` included).
        InvalidArgumentError: An argument is out of range, or the window does
            not fit the padded input (no output left).

    Example:
        >>> conv_output_size(224, kernel_size=11, stride=4, padding=2)
        55
        >>> conv_output_size(6, kernel_size=3, stride=2, ceil_mode=True), conv_output_size(6, 3, 2)
        (3, 2)
        >>> conv_output_size(5, kernel_size=3, dilation=3)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: No output left: kernel_size=3 with dilation=3 spans 7, more than size + 2*padding = 5 + 2*0 = 5. Use an input of at least 7 or more padding.
    """
    size, k = check_int("size", size, 1), check_int("kernel_size", kernel_size, 1)
    s, p, d = (
        check_int("stride", stride, 1),
        check_int("padding", padding, 0),
        check_int("dilation", dilation, 1),
    )
    check_bool("ceil_mode", ceil_mode)
    span = d * (k - 1) + 1
    slack = s - 1 if ceil_mode else 0  # with ceil_mode the last window may run past the end
    if size + 2 * p + slack < span:
        extra = f" + stride - 1 = {size} + 2*{p} + {slack}" if ceil_mode else f" = {size} + 2*{p}"
        raise InvalidArgumentError(
            f"No output left: kernel_size={k} with dilation={d} spans {span}, more than size + 2*padding"
            f"{extra} = {size + 2 * p + slack}. Use an input of at least {span - 2 * p - slack} or more padding."
        )
    out = (size + 2 * p - span + slack) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window would start in the right padding
        out -= 1
    return out


def conv_transpose_output_size(  # noqa: PLR0917 - torch's argument order
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one dimension.

    ``(size - 1)*stride - 2*padding + dilation*(kernel_size-1) + output_padding + 1``.

    Args:
        size: Input length (>= 1).
        kernel_size: Window length (>= 1).
        stride: Step between windows (>= 1).
        padding: Implicit padding removed from each side (>= 0).
        output_padding: Extra length on one side, smaller than ``stride`` or ``dilation``.
        dilation: Spacing between window elements (>= 1).

    Returns:
        The output length, at least 1.

    Raises:
        InvalidTypeError: An argument is not an int.
        InvalidArgumentError: An argument is out of range, or nothing is left.

    Example:
        >>> conv_transpose_output_size(7, kernel_size=3, stride=2, padding=1, output_padding=1)
        14
        >>> conv_transpose_output_size(7, kernel_size=3, stride=2, output_padding=2)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: output_padding must be smaller than stride or dilation (here < 2); got 2.
    """
    size, k = check_int("size", size, 1), check_int("kernel_size", kernel_size, 1)
    s, p, d = (
        check_int("stride", stride, 1),
        check_int("padding", padding, 0),
        check_int("dilation", dilation, 1),
    )
    op = check_int("output_padding", output_padding, 0)
    if op >= max(s, d):
        raise InvalidArgumentError(
            f"output_padding must be smaller than stride or dilation (here < {max(s, d)}); got {op}."
        )
    out = (size - 1) * s - 2 * p + d * (k - 1) + op + 1
    if out < 1:
        raise InvalidArgumentError(
            f"No output left: ({size} - 1)*{s} - 2*{p} + {d}*({k}-1) + {op} + 1 = {out}; "
            f"use padding < {(((size - 1) * s + d * (k - 1) + op) // 2) + 1}."
        )
    return out


# -- layer geometry ----------------------------------------------------------------

_POOLS: tuple[tuple[tuple[type[nn.Module], ...], int], ...] = (
    ((nn.MaxPool1d, nn.AvgPool1d, nn.LPPool1d), 1),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d), 2),
    ((nn.MaxPool3d, nn.AvgPool3d, nn.LPPool3d), 3),
)
_ADAPTIVE: tuple[tuple[tuple[type[nn.Module], ...], int], ...] = (
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d), 1),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), 2),
    ((nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d), 3),
)

#: Padding layers: they move where a receptive field starts.
_PADS = (
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
    nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d,
)  # fmt: skip


class Window(NamedTuple):
    """A sliding-window layer's numbers, one entry per spatial dimension."""

    kernel: Shape
    stride: Shape
    padding: Shape | str
    dilation: Shape
    output_padding: Shape
    ceil_mode: bool
    transposed: bool


def ntuple(value: Any, nd: int) -> Shape:
    """``value`` as a tuple of ``nd`` ints: a sequence converted, a scalar repeated."""
    return tuple(int(v) for v in value) if isinstance(value, Sequence) else (int(value),) * nd


def window(module: nn.Module) -> Window | None:
    """The window of a conv or (non-adaptive) pooling layer, else None."""
    if isinstance(module, _ConvNd):
        nd = len(module.kernel_size)
        pad = module.padding if isinstance(module.padding, str) else ntuple(module.padding, nd)
        return Window(
            ntuple(module.kernel_size, nd),
            ntuple(module.stride, nd),
            pad,
            ntuple(module.dilation, nd),
            ntuple(module.output_padding, nd),
            False,
            module.transposed,
        )
    for classes, nd in _POOLS:
        if isinstance(module, classes):
            m: Any = module
            kernel = ntuple(m.kernel_size, nd)
            stride = kernel if m.stride is None else ntuple(m.stride, nd)
            padding, dilation = ntuple(getattr(m, "padding", 0), nd), ntuple(getattr(m, "dilation", 1), nd)
            return Window(kernel, stride, padding, dilation, (0,) * nd, bool(m.ceil_mode), False)
    return None


def adaptive_dims(module: nn.Module) -> int:
    """The spatial dimensions of an adaptive pooling layer (1 to 3), else 0."""
    return next((nd for classes, nd in _ADAPTIVE if isinstance(module, classes)), 0)


def dim_formula(w: Window, i: int, size: int) -> tuple[str, int]:
    """One spatial dimension's formula text and value (raises InvalidArgumentError)."""
    k, s, d, op = w.kernel[i], w.stride[i], w.dilation[i], w.output_padding[i]
    if w.transposed:
        p = 0 if isinstance(w.padding, str) else w.padding[i]
        out = conv_transpose_output_size(size, k, s, p, op, d)
        return f"({size} - 1)*{s} - 2*{p} + {d}*({k}-1) + {op} + 1 = {out}", out
    if w.padding == "same":
        return f"same: {size} -> {size}", size
    p = 0 if isinstance(w.padding, str) else w.padding[i]
    out = conv_output_size(size, k, s, p, d, w.ceil_mode)
    body = f"(({size} + 2*{p} - {d}*({k}-1) - 1) / {s}) + 1"
    if not w.ceil_mode:
        return f"floor{body} = {out}", out
    full = -(-(size + 2 * p - d * (k - 1) - 1) // s) + 1
    return f"ceil{body}{' - 1' if full != out else ''} = {out}", out


def formula(module: nn.Module, in_shape: Shape, out_shape: Shape) -> str:
    """The layer's own arithmetic, or "" when it has none (or it disagrees with the trace)."""
    w = window(module)
    nd = len(w.kernel) if w is not None else adaptive_dims(module)
    if nd == 0 or len(in_shape) < nd or len(out_shape) < nd:
        return ""
    sizes, outs = in_shape[-nd:], out_shape[-nd:]
    if w is None:
        texts = [f"adaptive: {i} -> {o}" for i, o in zip(sizes, outs, strict=True)]
    else:
        try:
            pairs = [dim_formula(w, i, size) for i, size in enumerate(sizes)]
        except InvalidArgumentError:
            return ""
        if tuple(value for _, value in pairs) != outs:
            return ""
        texts = [text for text, _ in pairs]
    return texts[0] if len(set(texts)) == 1 else "; ".join(texts)


def macs(module: nn.Module, in_shape: Shape, out_shape: Shape) -> int:
    """Multiply-accumulates of one call of a conv or linear layer, 0 for anything else."""
    if isinstance(module, _ConvNd):
        kernel = math.prod(ntuple(module.kernel_size, 1))
        if module.transposed:
            return math.prod(in_shape) * (module.out_channels // module.groups) * kernel
        return math.prod(out_shape) * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return math.prod(out_shape) * module.in_features
    return 0


def rf_step(module: nn.Module, state: RF, in_shape: Shape, out_shape: Shape) -> RF:
    """Receptive field, jump and start after ``module``: rf += (k-1)*d*jump; start -= pad*jump; jump *= stride."""
    if state is None:
        return None
    rf, jump, start = state
    nd = len(rf)
    pads = _explicit_padding(module, nd)
    if pads is not None:  # a padding layer: the field and jump stay, the start moves into the padding
        return rf, jump, tuple(s0 - p * j for s0, p, j in zip(start, pads, jump, strict=True))
    w = window(module)
    adaptive = adaptive_dims(module)
    if w is None and not adaptive:
        same = (
            len(in_shape) == len(out_shape)
            and in_shape[len(in_shape) - nd :] == out_shape[len(out_shape) - nd :]
        )
        return state if same else None
    if w is None:
        sizes, outs = in_shape[-nd:], out_shape[-nd:]
        if adaptive != nd or any(i % o for i, o in zip(sizes, outs, strict=True)):
            return None
        w = Window(
            tuple(i // o for i, o in zip(sizes, outs, strict=True)),
            (),
            (0,) * nd,
            (1,) * nd,
            (),
            False,
            False,
        )
        w = w._replace(stride=w.kernel)
    if w.transposed or len(w.kernel) != nd:
        return None
    grown = tuple(r + (k - 1) * d * j for r, k, d, j in zip(rf, w.kernel, w.dilation, jump, strict=True))
    if w.padding == "same":  # PyTorch pads the left with half the total, rounded down
        pad: Shape = tuple((d * (k - 1)) // 2 for k, d in zip(w.kernel, w.dilation, strict=True))
    else:
        pad = (0,) * nd if isinstance(w.padding, str) else w.padding
    moved = tuple(s0 - p * j for s0, p, j in zip(start, pad, jump, strict=True))
    return grown, tuple(j * s for j, s in zip(jump, w.stride, strict=True)), moved


def _explicit_padding(module: nn.Module, nd: int) -> Shape | None:
    """The leading padding per spatial dimension of a padding layer (``nn.ZeroPad2d``, ...), else None."""
    if not isinstance(module, _PADS):
        return None
    pad = ntuple(getattr(module, "padding", 0), 2 * nd)
    if len(pad) != 2 * nd:
        return None
    return tuple(pad[2 * (nd - 1 - i)] for i in range(nd))  # PyTorch lists the last dimension first


def extent(values: Shape | None) -> Extent:
    """One int when every dimension agrees, else the tuple (None stays None)."""
    if values is None:
        return None
    return values[0] if len(set(values)) == 1 else values


def mismatch(name: str, module: nn.Module, shape: Shape) -> str | None:
    """What ``module`` expected and ``shape`` lacked, when it is a plain shape mismatch."""
    plain = layer_mismatch(name, module, shape)
    if plain is not None:
        return plain
    where = f" ({type(module).__name__}, input shape {format_shape(shape)})"
    w = window(module)
    if w is not None and len(shape) >= len(w.kernel):
        sizes = shape[len(shape) - len(w.kernel) :]
        try:
            for i, size in enumerate(sizes):
                dim_formula(w, i, size)
        except InvalidArgumentError as err:
            return f"{name} gets a spatial size of {format_shape(sizes)}, too small{where}: {err}"
    return None
