"""The meta-device fast path for shape-preserving functions (private to the probe).

BatchNorm, LayerNorm, GroupNorm and most activations have meta kernels that are
Python decompositions costing 0.2-1 ms a call; on meta tensors their output is
just a tensor shaped like their input. :class:`SkipShapePreserving` answers
them with a fresh meta tensor like their input (an in-place call: the input
itself, its version counter moved as the real op would move it), once a check
says the real function would accept it, so real shape errors (a BatchNorm with
the wrong channel count) still surface and the probe still sees which outputs
a later op rewrites in place.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import increment_version
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["SkipShapePreserving"]


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _channels_ok(x: Tensor, *params: Any) -> bool:
    return x.dim() >= 2 and all(p is None or p.numel() == x.shape[1] for p in params)


def _norm_ok(args: Sequence[Any], kw: Mapping[str, Any], names: Sequence[str]) -> bool:
    return _channels_ok(args[0], *(_arg(args, kw, i, n) for i, n in enumerate(names, 1)))


def _layer_norm_ok(args: Sequence[Any], kw: Mapping[str, Any]) -> bool:
    x, ns = args[0], _arg(args, kw, 1, "normalized_shape")
    ns = (ns,) if isinstance(ns, int) else tuple(ns)
    params = [_arg(args, kw, i, n) for i, n in ((2, "weight"), (3, "bias"))]
    return tuple(x.shape[x.dim() - len(ns) :]) == ns and all(
        p is None or tuple(p.shape) == ns for p in params
    )


def _group_norm_ok(args: Sequence[Any], kw: Mapping[str, Any]) -> bool:
    x, groups = args[0], _arg(args, kw, 1, "num_groups")
    weight, bias = _arg(args, kw, 2, "weight"), _arg(args, kw, 3, "bias")
    return (
        isinstance(groups, int) and groups > 0 and _channels_ok(x, weight, bias) and x.shape[1] % groups == 0
    )


def _log_softmax_ok(args: Sequence[Any], kw: Mapping[str, Any]) -> bool:
    dim, n = _arg(args, kw, 1, "dim"), max(args[0].dim(), 1)
    return isinstance(dim, int) and -n <= dim < n and _arg(args, kw, 3, "dtype") is None


def _always(_args: Sequence[Any], _kw: Mapping[str, Any]) -> bool:
    return True


_BN = ("running_mean", "running_var", "weight", "bias")
_Check = Callable[[Sequence[Any], Mapping[str, Any]], bool]
#: Functions whose output has their first argument's shape, dtype and device,
#: with the checks that make the real function accept the input. Their meta
#: kernels are Python decompositions costing 0.2-1 ms each (BatchNorm 0.5 ms).
# fmt: off
_ACTIVATIONS = (
    F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu,
    F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.softplus,
    torch.sigmoid, Tensor.sigmoid, Tensor.sigmoid_, torch.tanh, Tensor.tanh, Tensor.tanh_,
)
# fmt: on
_PRESERVING: Mapping[Any, _Check] = MappingProxyType(
    {
        **dict.fromkeys(_ACTIVATIONS, _always),
        F.batch_norm: lambda a, kw: not _arg(a, kw, 5, "training", False) and _norm_ok(a, kw, _BN),
        F.instance_norm: lambda a, kw: (
            a[0].dim() >= 3
            and _norm_ok(a, kw, _BN)
            and (not _arg(a, kw, 5, "use_input_stats", True) or math.prod(a[0].shape[2:]) > 1)
        ),
        F.layer_norm: _layer_norm_ok,
        F.group_norm: _group_norm_ok,
        F.local_response_norm: lambda a, _kw: a[0].dim() >= 3,
        F.log_softmax: _log_softmax_ok,
        F.prelu: lambda a, kw: (
            (w := _arg(a, kw, 1, "weight")) is not None
            and (w.numel() == 1 or (a[0].dim() >= 2 and a[0].shape[1] == w.numel()))
        ),
    }
)


def _inplace_position(func: Any) -> int | None:
    """Where ``func`` takes ``inplace`` positionally (None: it takes no such argument)."""
    try:
        params = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("inplace") if "inplace" in params else None


#: Position of each function's ``inplace`` argument; functions named ``*_`` are in-place by name.
_INPLACE_AT: Mapping[Any, int | None] = MappingProxyType({f: _inplace_position(f) for f in _PRESERVING})


def _inplace(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    if getattr(func, "__name__", "").endswith("_"):
        return True
    at = _INPLACE_AT.get(func)
    return at is not None and bool(_arg(args, kwargs, at, "inplace", False))


# -- functions whose output shape is a little arithmetic ------------------------------
# Each rule returns the answer, or None to let the real meta kernel judge (and raise).


def _ints(value: Any, nd: int) -> tuple[int, ...] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * nd
    if isinstance(value, Sequence) and len(value) == nd and all(type(v) is int for v in value):
        return tuple(value)
    if isinstance(value, Sequence) and len(value) == 1 and type(value[0]) is int:
        return (value[0],) * nd
    return None


def _empty(shape: Sequence[int], like: Tensor) -> Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device="meta")


def _conv(args: Sequence[Any], kw: Mapping[str, Any]) -> Tensor | None:
    """``conv1d/2d/3d(input, weight, bias, stride, padding, dilation, groups)`` of a batched input."""
    x, weight, bias = args[0], _arg(args, kw, 1, "weight"), _arg(args, kw, 2, "bias")
    groups = _arg(args, kw, 6, "groups", 1)
    if not isinstance(weight, Tensor) or not weight.is_meta or weight.dim() < 3 or type(groups) is not int:
        return None
    nd = weight.dim() - 2
    out_channels, in_per_group, *kernel = weight.shape
    if (
        x.dim() != nd + 2
        or not x.is_contiguous()
        or x.dtype != weight.dtype
        or groups < 1
        or x.shape[1] != in_per_group * groups
        or out_channels % groups
        or (bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (out_channels,)))
    ):
        return None
    stride, dilation = _ints(_arg(args, kw, 3, "stride", 1), nd), _ints(_arg(args, kw, 5, "dilation", 1), nd)
    padding = _arg(args, kw, 4, "padding", 0)
    if stride is None or dilation is None or min(stride) < 1 or min(dilation) < 1:
        return None
    if padding == "same":
        if max(stride) != 1:
            return None
        sizes = list(x.shape[2:])
    else:
        pads = (0,) * nd if padding == "valid" else _ints(padding, nd)
        if pads is None or min(pads) < 0:
            return None
        sizes = [
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, p, d, k, s in zip(x.shape[2:], pads, dilation, kernel, stride, strict=True)
        ]
    if min(sizes) < 1:
        return None
    return _empty((x.shape[0], out_channels, *sizes), x)


def _linear(args: Sequence[Any], kw: Mapping[str, Any]) -> Tensor | None:
    x, weight, bias = args[0], _arg(args, kw, 1, "weight"), _arg(args, kw, 2, "bias")
    if (
        not isinstance(weight, Tensor)
        or not weight.is_meta
        or weight.dim() != 2
        or x.dim() < 1
        or x.dtype != weight.dtype
        or x.shape[-1] != weight.shape[1]
        or (bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (weight.shape[0],)))
    ):
        return None
    return _empty((*x.shape[:-1], weight.shape[0]), x)


def _adaptive_pool2d(args: Sequence[Any], kw: Mapping[str, Any]) -> Tensor | None:
    x, size = args[0], _arg(args, kw, 1, "output_size")
    if x.dim() not in (3, 4) or min(x.shape[-3:]) < 1:
        return None
    pair = (size, size) if isinstance(size, int) or size is None else tuple(size)
    if len(pair) != 2 or not all(v is None or (type(v) is int and v >= 1) for v in pair):
        return None
    out = [x.shape[-2 + i] if v is None else v for i, v in enumerate(pair)]
    return _empty((*x.shape[:-2], *out), x)


def _same_operand(x: Tensor, other: Any) -> bool:
    """``other`` leaves ``x``'s shape and dtype as they are in an elementwise op."""
    if isinstance(other, Tensor):
        return other.is_meta and other.dtype == x.dtype and tuple(other.shape) == tuple(x.shape)
    return isinstance(other, int | float) and not isinstance(other, bool) and x.is_floating_point()


def _binary(args: Sequence[Any], kw: Mapping[str, Any]) -> Tensor | None:
    x, other = args[0], _arg(args, kw, 1, "other")
    if not _same_operand(x, other) or set(kw) - {"other", "alpha"}:
        return None
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")


def _binary_(args: Sequence[Any], kw: Mapping[str, Any]) -> Tensor | None:
    x, other = args[0], _arg(args, kw, 1, "other")
    if not _same_operand(x, other) or set(kw) - {"other", "alpha"}:
        return None
    increment_version(x)  # as the real in-place op would
    kept: Tensor = x
    return kept


_BINARY = (
    Tensor.add,
    Tensor.sub,
    Tensor.mul,
    Tensor.__add__,
    Tensor.__sub__,
    Tensor.__mul__,
    torch.add,
    torch.mul,
)
_BINARY_INPLACE = (Tensor.add_, Tensor.sub_, Tensor.mul_, Tensor.__iadd__, Tensor.__isub__, Tensor.__imul__)
#: Functions answered by a little shape arithmetic (or left to torch when it does not apply).
_COMPUTED: Mapping[Any, Callable[[Sequence[Any], Mapping[str, Any]], Tensor | None]] = MappingProxyType(
    {
        torch.conv1d: _conv,
        torch.conv2d: _conv,
        torch.conv3d: _conv,
        F.linear: _linear,
        F.adaptive_avg_pool2d: _adaptive_pool2d,
        **dict.fromkeys(_BINARY, _binary),
        **dict.fromkeys(_BINARY_INPLACE, _binary_),
    }
)


class SkipShapePreserving(TorchFunctionMode):
    """On meta tensors, answer shape-preserving and shape-arithmetic functions without their kernels."""

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if not (args and isinstance(args[0], Tensor) and args[0].is_meta and "out" not in kwargs):
            return func(*args, **kwargs)
        rule = _COMPUTED.get(func)
        if rule is not None:
            try:
                answer = rule(args, kwargs)
            except (AttributeError, IndexError, TypeError, ValueError):  # odd arguments: let torch judge
                answer = None
            if answer is not None:
                return answer
        check = _PRESERVING.get(func)
        if check is not None:
            try:
                skip = check(args, kwargs)
            except (AttributeError, IndexError, TypeError, ValueError):  # odd arguments: let torch judge
                skip = False
            if skip:
                if _inplace(func, args, kwargs):
                    increment_version(args[0])  # as the real in-place op would
                    return args[0]
                x = args[0]  # a fresh tensor (its own version counter); empty_like is slow on meta
                return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        return func(*args, **kwargs)
