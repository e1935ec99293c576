"""Walk what a layer or a model returns: tensors inside tuples, lists, dicts and dataclasses.

Private. A layer's or a model's output may be a tensor, or a tuple, list,
dict, NamedTuple or dataclass holding tensors (HuggingFace's ``ModelOutput``
is a dict and a dataclass at once). These helpers find the tensors in it, in
order, and rebuild it with one tensor (the first, or a given one) or every
tensor replaced, keeping its type, or describe it for a message.

Example:
    >>> import dataclasses
    >>> import torch
    >>> @dataclasses.dataclass
    ... class Out:
    ...     name: str
    ...     logits: torch.Tensor
    >>> out = Out("net", torch.zeros(2, 5))
    >>> tuple(first_tensor(out).shape), len(tensors({"a": out, "b": [torch.ones(1)]}))
    ((2, 5), 2)
    >>> tuple(with_first_tensor(out, torch.ones(3)).logits.shape)
    (3,)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "describe",
    "first_tensor",
    "map_tensors",
    "meta_like",
    "model_dtype_device",
    "replaced",
    "signature",
    "tensors",
    "to_meta",
    "with_first_tensor",
]


def _is_dataclass(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _items(value: Any) -> Iterator[Any]:
    """The direct children of a container, in order (none for anything else)."""
    if isinstance(value, Mapping):
        yield from value.values()
    elif isinstance(value, tuple | list):
        yield from value
    elif _is_dataclass(value):
        for field in dataclasses.fields(value):
            yield getattr(value, field.name)


def tensors(value: Any) -> list[Tensor]:
    """Every tensor in ``value``, depth first, in order."""
    if isinstance(value, Tensor):
        return [value]
    return [t for item in _items(value) for t in tensors(item)]


def first_tensor(value: Any) -> Tensor | None:
    """The first tensor in ``value`` (itself, or inside a tuple, list, dict or dataclass)."""
    if isinstance(value, Tensor):
        return value
    for item in _items(value):
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def with_first_tensor(value: Any, new: Tensor) -> Any:
    """``value`` with its first tensor replaced by ``new``; containers keep their type."""
    if isinstance(value, Tensor):
        return new
    if isinstance(value, Mapping):
        for key, item in value.items():
            if first_tensor(item) is not None:
                out: Any = copy.copy(value)  # a dict subclass (ModelOutput) stays one
                out[key] = with_first_tensor(item, new)
                return out
        return value
    if isinstance(value, tuple | list):
        items = list(value)
        for i, item in enumerate(items):
            if first_tensor(item) is not None:
                items[i] = with_first_tensor(item, new)
                break
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if _is_dataclass(value):
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if field.init and first_tensor(item) is not None:
                return dataclasses.replace(value, **{field.name: with_first_tensor(item, new)})
    return value


def map_tensors(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``value`` with every tensor ``t`` in it replaced by ``fn(t)``; containers keep their type.

    Tuples, lists, NamedTuples, dicts (``OrderedDict`` and other dict subclasses
    stay what they are) and dataclasses are rebuilt; anything else is returned
    as it is.

    Example:
        >>> from collections import OrderedDict
        >>> out = map_tensors(OrderedDict(a=torch.zeros(2), b=(torch.ones(1), 3)), lambda t: t + 1)
        >>> type(out).__name__, out["a"].tolist(), out["b"]
        ('OrderedDict', [1.0, 1.0], (tensor([2.]), 3))
    """
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        out: Any = copy.copy(value)  # a dict subclass (OrderedDict, ModelOutput) stays one
        for key, item in value.items():
            out[key] = map_tensors(item, fn)
        return out
    if isinstance(value, tuple | list):
        items = [map_tensors(item, fn) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if _is_dataclass(value):
        changed = {
            f.name: map_tensors(getattr(value, f.name), fn) for f in dataclasses.fields(value) if f.init
        }
        return dataclasses.replace(value, **changed)
    return value


def replaced(value: Any, old: Tensor, new: Tensor) -> Any:
    """``value`` with the tensor ``old`` (by identity) replaced by ``new``; containers keep their type.

    Tuples, lists, NamedTuples, dicts (an ``OrderedDict``, an FPN's output,
    stays one) and dataclasses are rebuilt only where ``old`` is inside them;
    anything without it is returned as it is (the same object).

    Example:
        >>> a, b = torch.zeros(1), torch.ones(1)
        >>> value = {"0": a, "1": (a, b)}
        >>> out = replaced(value, b, a)
        >>> out["1"][1] is a, out["0"] is a, replaced(value, torch.zeros(1), b) is value
        (True, True, True)
    """
    if value is old:
        return new
    if isinstance(value, Mapping):
        changed = {key: replaced(item, old, new) for key, item in value.items()}
        if all(changed[key] is item for key, item in value.items()):
            return value
        out: Any = copy.copy(value)  # an OrderedDict (an FPN's output) stays one
        out.update(changed)
        return out
    if isinstance(value, tuple | list):
        items = [replaced(item, old, new) for item in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if _is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        changed = {key: replaced(item, old, new) for key, item in fields.items()}
        if any(changed[key] is not item for key, item in fields.items()):
            return dataclasses.replace(value, **changed)
    return value


def describe(value: Any, *, depth: int = 2) -> str:
    """What ``value`` is, for a message: tensors as their shape and dtype, never their values.

    Example:
        >>> describe([torch.zeros(3, 4, 5), "x"])
        "list [Tensor[3, 4, 5] float32, str 'x']"
        >>> describe((torch.zeros(2, dtype=torch.int64), {"mask": torch.ones(1, 2)}))
        'tuple (Tensor[2] int64, dict {mask: Tensor[1, 2] float32})'
    """
    if isinstance(value, Tensor):
        return f"Tensor[{', '.join(map(str, value.shape))}] {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape} ({value.dtype})"
    kind = type(value).__name__
    if isinstance(value, Mapping):
        if depth == 0:
            return f"{kind} of {len(value)} items"
        items = [f"{k}: {describe(v, depth=depth - 1)}" for k, v in list(value.items())[:4]]
        return f"{kind} {{{', '.join(items)}{', ...' if len(value) > 4 else ''}}}"
    if isinstance(value, tuple | list):
        if depth == 0:
            return f"{kind} of {len(value)} items"
        items = [describe(v, depth=depth - 1) for v in value[:4]]
        left, right = ("[", "]") if isinstance(value, list) else ("(", ")")
        return f"{kind} {left}{', '.join(items)}{', ...' if len(value) > 4 else ''}{right}"
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | str):
        text = repr(value)
        return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"
    return kind


def meta_like(tensor: Tensor) -> Tensor:
    """A meta tensor with ``tensor``'s shape, strides and dtype (``empty_like`` costs 30x more on meta)."""
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")


def to_meta(value: Any) -> Any:
    """A meta-device twin of a tensor, or of the tensors in a tuple, list or dict."""
    if isinstance(value, Tensor):
        return meta_like(value)
    if isinstance(value, tuple | list):
        return (
            type(value)(*map(to_meta, value))
            if hasattr(value, "_fields")
            else type(value)(map(to_meta, value))
        )
    if isinstance(value, dict):
        return {k: to_meta(v) for k, v in value.items()}
    return value


def signature(value: Any) -> object:
    """A hashable key for an input: shapes, dtypes and devices of its tensors, reprs of the rest."""
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device.type, value.requires_grad)
    if isinstance(value, Mapping):
        return ("map", tuple((k, signature(v)) for k, v in value.items()))
    if isinstance(value, tuple | list):
        return (type(value).__name__, tuple(signature(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.shape, str(value.dtype))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return ("value", value)


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating-point parameter or buffer (float32, CPU if none)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.float32, torch.device("cpu")
