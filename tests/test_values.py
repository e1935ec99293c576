"""Walking outputs (src/convlens/_values.py): find tensors, replace the first, meta twins, signatures."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor

from convlens.core.values import (
    first_tensor,
    meta_like,
    replaced,
    signature,
    tensors,
    to_meta,
    with_first_tensor,
)


class Pair(NamedTuple):
    label: str
    left: Tensor
    right: Tensor


@dataclasses.dataclass
class Out:
    name: str
    logits: Tensor
    hidden: Tensor


@dataclasses.dataclass(frozen=True)
class FrozenOut:
    count: int
    logits: Tensor


@dataclasses.dataclass
class Info:
    name: str
    size: int


class Record(dict[str, Any]):
    """A dict subclass, as HuggingFace's ModelOutput is."""


T1, T2, T3 = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
NEW = torch.full((4,), 7.0)


# -- tensors and first_tensor ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T1, [T1]),
        ((T1, "x", [T2, {"a": T3}]), [T1, T2, T3]),
        ({"b": T2, "a": T1}, [T2, T1]),  # insertion order, not sorted
        (Pair("p", T1, T2), [T1, T2]),
        (Out("o", T2, T3), [T2, T3]),
        ([{"k": (None, T3)}, Out("o", T1, T2)], [T3, T1, T2]),
        (("no", 1, None, [2.0]), []),
        (None, []),
        ("text", []),
    ],
)
def test_tensors_and_first_tensor_depth_first_in_order(value: Any, expected: list[Tensor]) -> None:
    found = tensors(value)
    assert len(found) == len(expected)
    assert all(a is b for a, b in zip(found, expected, strict=True))
    first = first_tensor(value)
    if expected:
        assert first is expected[0]
    else:
        assert first is None


def test_a_dataclass_type_is_not_walked() -> None:
    assert tensors(Out) == []
    assert first_tensor(Out) is None


# -- with_first_tensor -----------------------------------------------------------------------------


def test_with_first_tensor_of_a_tensor_is_the_new_one() -> None:
    assert with_first_tensor(T1, NEW) is NEW


def test_with_first_tensor_in_a_tuple_and_a_list() -> None:
    out = with_first_tensor(("x", T1, T2), NEW)
    assert type(out) is tuple
    assert out[0] == "x"
    assert out[1] is NEW
    assert out[2] is T2
    listed = with_first_tensor([None, T1, T2], NEW)
    assert type(listed) is list
    assert listed[1] is NEW
    assert listed[2] is T2


def test_with_first_tensor_keeps_a_named_tuple() -> None:
    out = with_first_tensor(Pair("p", T1, T2), NEW)
    assert type(out) is Pair
    assert out.label == "p"
    assert out.left is NEW
    assert out.right is T2


def test_with_first_tensor_in_a_dict_and_a_dict_subclass() -> None:
    given = {"name": "n", "a": T1, "b": T2}
    out = with_first_tensor(given, NEW)
    assert type(out) is dict
    assert list(out) == ["name", "a", "b"]
    assert out["a"] is NEW
    assert out["b"] is T2
    assert given["a"] is T1  # the input is not modified
    for kind in (Record, OrderedDict):
        sub = kind(a=T1, b=T2)
        replaced = with_first_tensor(sub, NEW)
        assert type(replaced) is kind
        assert replaced["a"] is NEW
        assert replaced["b"] is T2
        assert sub["a"] is T1


def test_with_first_tensor_in_dataclasses_plain_and_frozen() -> None:
    given = Out("o", T1, T2)
    out = with_first_tensor(given, NEW)
    assert type(out) is Out
    assert (out.name, out.logits, out.hidden) == ("o", NEW, T2)
    assert given.logits is T1
    frozen = with_first_tensor(FrozenOut(3, T1), NEW)
    assert type(frozen) is FrozenOut
    assert frozen.count == 3
    assert frozen.logits is NEW


def test_with_first_tensor_nested_replaces_only_the_first() -> None:
    given = {"meta": ("x", 1), "outs": [Out("o", T1, T2), T3], "last": T2}
    out = with_first_tensor(given, NEW)
    assert out["meta"] == ("x", 1)
    assert out["outs"][0].logits is NEW
    assert out["outs"][0].hidden is T2
    assert out["outs"][1] is T3
    assert out["last"] is T2
    assert tensors(out) == [NEW, T2, T3, T2]


@pytest.mark.parametrize(
    "value",
    [("a", 1), ["a", None], {"k": 1}, Record(k="v"), Info("i", 2), Pair("p", None, None), 3, "text", None],  # type: ignore[arg-type]
)
def test_with_first_tensor_returns_values_without_tensors_unchanged(value: Any) -> None:
    out = with_first_tensor(value, NEW)
    assert type(out) is type(value)
    assert out == value
    assert tensors(out) == []


# -- meta twins ------------------------------------------------------------------------------------


def test_meta_like_keeps_shape_strides_and_dtype() -> None:
    base = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    transposed = base.transpose(0, 2)  # strides (1, 4, 12): not contiguous
    twin = meta_like(transposed)
    assert twin.is_meta
    assert twin.device.type == "meta"
    assert twin.shape == (4, 3, 2)
    assert twin.stride() == (1, 4, 12)
    assert twin.dtype == torch.float64
    assert meta_like(torch.zeros(2, 2, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_to_meta_of_tensors_and_containers() -> None:
    x = torch.ones(2, 3)
    twin = to_meta(x)
    assert twin.is_meta
    assert twin.shape == (2, 3)
    assert not x.is_meta
    out = to_meta((x, [x, 5], {"k": x, "s": "v"}, Pair("p", x, x)))
    assert type(out) is tuple
    assert out[0].is_meta
    assert type(out[1]) is list
    assert out[1][0].is_meta
    assert out[1][1] == 5
    assert out[2]["k"].is_meta
    assert out[2]["s"] == "v"
    assert type(out[3]) is Pair
    assert out[3].label == "p"
    assert out[3].left.is_meta
    assert out[3].right.is_meta
    marker = object()
    assert to_meta(marker) is marker
    assert to_meta(None) is None


# -- signatures ------------------------------------------------------------------------------------


def test_signature_is_equal_for_same_shapes_and_dtypes() -> None:
    a = (torch.zeros(2, 3), {"k": torch.ones(4)}, 5)
    b = (torch.randn(2, 3), {"k": torch.full((4,), 9.0)}, 5)
    assert signature(a) == signature(b)
    assert hash(signature(a)) == hash(signature(b))


@pytest.mark.parametrize(
    "other",
    [
        torch.zeros(2, 4),
        torch.zeros(2, 3, dtype=torch.float64),
        torch.zeros(2, 3, device="meta"),
        torch.zeros(2, 3, requires_grad=True),
        torch.zeros(6).view(2, 3)[:, :2],
    ],
    ids=["shape", "dtype", "device", "requires_grad", "other shape by view"],
)
def test_signature_differs_for_another_shape_dtype_device_or_requires_grad(other: Tensor) -> None:
    assert signature(torch.zeros(2, 3)) != signature(other)


def test_signature_differs_for_other_plain_values_and_containers() -> None:
    x = torch.zeros(1)
    assert signature((x, 1)) != signature((x, 2))
    assert signature((x,)) != signature([x])
    assert signature({"a": x}) != signature({"b": x})
    assert signature(np.zeros((2, 3), dtype=np.float32)) == signature(np.ones((2, 3), dtype=np.float32))
    assert signature(np.zeros((2, 3), dtype=np.float32)) != signature(np.zeros((2, 3)))


def test_signature_is_hashable_for_unhashable_values() -> None:
    odd = {1, 2}  # a set: unhashable, and not a container the walk knows
    key = signature((torch.zeros(1), odd, [bytearray(b"x")], {"k": [odd]}))
    assert isinstance(hash(key), int)
    twin = {1, 2}  # equal to odd but another object: its key may not claim to know they are the same
    assert signature(odd) != signature(twin)
    # the same object beside other tensor values: one key (the cache must find it again)
    assert signature((torch.zeros(1), odd)) == signature((torch.ones(1), odd))
    assert {key: 1}[key] == 1


# -- replaced: one tensor, by identity -------------------------------------------------------


def test_replaced_swaps_the_tensor_by_identity_wherever_it_is_and_keeps_container_types() -> None:
    given = OrderedDict(a=T1, b=Pair("p", T2, T1), c=[Out("o", T3, T1)], d=FrozenOut(1, T2))
    out = replaced(given, T1, NEW)
    assert type(out) is OrderedDict
    assert out["a"] is NEW
    assert type(out["b"]) is Pair
    assert (out["b"].label, out["b"].left, out["b"].right) == ("p", T2, NEW)
    assert type(out["c"]) is list
    assert (out["c"][0].logits, out["c"][0].hidden) == (T3, NEW)
    assert out["d"] is given["d"]  # nothing to replace inside: the same object
    assert given["a"] is T1  # the input is not modified
    equal = T1.clone()
    assert replaced((equal, T1), T1, NEW) == (equal, NEW)  # an equal tensor is another tensor


@pytest.mark.parametrize("value", [("a", T2), [T3], {"k": T2}, Out("o", T2, T3), Record(k=T2), T2, None])
def test_replaced_returns_a_value_without_the_tensor_as_it_is(value: Any) -> None:
    assert replaced(value, T1, NEW) is value


def test_the_leaf_forward_uses_the_one_replaced() -> None:
    """The CAM family's and the concepts' forward with a leaf (core/leaf.py) swaps outputs with it."""
    from convlens.attribution import cam
    from convlens.core import leaf

    assert vars(leaf)["replaced"] is replaced  # imported, not written again
    assert "replaced" not in leaf.__all__
    assert vars(cam)["forward_with_leaf"] is leaf.forward_with_leaf
