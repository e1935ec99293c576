"""Argument checks (src/convlens/_checks.py): one wording everywhere, the right class, the builtin too."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.core.checks import (
    as_int,
    check_choice,
    check_indices,
    check_int,
    check_model,
    check_real,
    check_shape,
    format_shape,
    layer_mismatch,
)
from helpers import exact


def test_error_classes_inherit_the_matching_builtins() -> None:
    assert issubclass(cl.InvalidArgumentError, ValueError)
    assert issubclass(cl.InvalidTypeError, TypeError)
    assert issubclass(cl.InvalidArgumentError, cl.ConvlensError)
    assert issubclass(cl.InvalidTypeError, cl.ConvlensError)


# -- check_int ------------------------------------------------------------------------------------


def test_check_int_returns_valid_ints() -> None:
    assert check_int("steps", 5, 1) == 5
    assert check_int("k", 0, 0) == 0
    assert check_int("offset", -3, -3) == -3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2.0, "k must be an int >= 1; got float 2.0."),
        (True, "k must be an int >= 1; got bool True."),
        ("3", "k must be an int >= 1; got str '3'."),
        (None, "k must be an int >= 1; got NoneType None."),
    ],
)
def test_check_int_refuses_other_types(value: object, message: str) -> None:
    with pytest.raises(cl.InvalidTypeError, match=exact(message)) as info:
        check_int("k", value, 1)
    assert isinstance(info.value, TypeError)


def test_check_int_refuses_values_below_the_bound() -> None:
    with pytest.raises(cl.InvalidArgumentError, match=exact("steps must be an int >= 1; got 0.")) as info:
        check_int("steps", 0, 1)
    assert isinstance(info.value, ValueError)
    with pytest.raises(cl.InvalidArgumentError, match=exact("k must be an int >= 3; got -1.")):
        check_int("k", -1, 3)


# -- check_real -----------------------------------------------------------------------------------


def test_check_real_returns_floats() -> None:
    assert check_real("lr", 0.05, positive=True) == 0.05
    assert check_real("l1", 0, positive=False) == 0.0
    assert type(check_real("l1", 2, positive=False)) is float
    assert check_real("lr", np.float32(0.5), positive=True) == 0.5


@pytest.mark.parametrize(
    ("value", "positive", "message"),
    [
        (-1, False, "l1 must be a finite number >= 0; got -1."),
        (0, True, "l1 must be a finite number > 0; got 0."),
        (0.0, True, "l1 must be a finite number > 0; got 0.0."),
        (math.nan, True, "l1 must be a finite number > 0; got nan."),
        (math.inf, False, "l1 must be a finite number >= 0; got inf."),
        (-math.inf, False, "l1 must be a finite number >= 0; got -inf."),
    ],
)
def test_check_real_refuses_values_out_of_range(value: float, positive: bool, message: str) -> None:
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)) as info:
        check_real("l1", value, positive=positive)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "message"),
    [("0.1", "lr must be a number; got str '0.1'."), (True, "lr must be a number; got bool True.")],
)
def test_check_real_refuses_other_types(value: object, message: str) -> None:
    with pytest.raises(cl.InvalidTypeError, match=exact(message)) as info:
        check_real("lr", value, positive=True)
    assert isinstance(info.value, TypeError)


# -- check_choice ---------------------------------------------------------------------------------


def test_check_choice_returns_a_valid_choice() -> None:
    assert check_choice("mode", "real", ["meta", "real"]) == "real"


def test_check_choice_names_the_valid_choices_and_the_nearest_match() -> None:
    message = "mode must be one of 'meta', 'real'; got 'mta'. Did you mean 'meta'?"
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)) as info:
        check_choice("mode", "mta", ["meta", "real"])
    assert isinstance(info.value, ValueError)
    with pytest.raises(cl.InvalidArgumentError, match=re.escape("got 'pixels'. Did you mean 'pixel'?")):
        check_choice("param", "pixels", ["pixel", "fft", "maco"])


def test_check_choice_without_a_near_match_or_for_a_non_string() -> None:
    message = "param must be one of 'pixel', 'fft', 'maco'; got 'zzzzzz'."
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)):
        check_choice("param", "zzzzzz", ["pixel", "fft", "maco"])
    with pytest.raises(cl.InvalidArgumentError, match=exact("param must be one of 'pixel', 'fft'; got 3.")):
        check_choice("param", 3, ["pixel", "fft"])
    with pytest.raises(
        cl.InvalidArgumentError, match=exact("param must be one of 'pixel', 'fft'; got None.")
    ):
        check_choice("param", None, ["pixel", "fft"])


# -- check_shape ----------------------------------------------------------------------------------


def test_check_shape_returns_a_tuple() -> None:
    assert check_shape("input_shape", [1, 3, 8, 8]) == (1, 3, 8, 8)
    assert check_shape("input_shape", torch.Size([2, 5])) == (2, 5)


@pytest.mark.parametrize("shape", [(3,), (), (1, 0, 8), (1, -3), (1, 3.0), (True, 3)])
def test_check_shape_refuses_short_or_invalid_shapes(shape: Any) -> None:
    message = (
        f"input_shape must hold at least two ints >= 1, batch first, like (1, 3, 224, 224); got {shape!r}."
    )
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)) as info:
        check_shape("input_shape", shape)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("shape", ["1, 3", 224, None])
def test_check_shape_refuses_non_sequences(shape: object) -> None:
    message = f"input_shape must be a sequence of ints like (1, 3, 224, 224); got {shape!r}."
    with pytest.raises(cl.InvalidTypeError, match=exact(message)) as info:
        check_shape("input_shape", shape)
    assert isinstance(info.value, TypeError)


# -- check_model ----------------------------------------------------------------------------------


def test_check_model() -> None:
    net = nn.Conv2d(1, 1, 1)
    assert check_model(net) is net
    with pytest.raises(cl.InvalidTypeError, match=exact("model must be a torch.nn.Module; got str.")) as info:
        check_model("resnet18")
    assert isinstance(info.value, TypeError)
    with pytest.raises(cl.InvalidTypeError, match=exact("model must be a torch.nn.Module; got type.")):
        check_model(nn.Conv2d)  # the class, not an instance


# -- as_int and check_indices ----------------------------------------------------------------------


def test_as_int() -> None:
    assert as_int(np.int64(3)) == 3
    assert type(as_int(np.int64(3))) is int
    assert type(as_int(torch.tensor(2))) is int
    assert as_int(torch.tensor(2)) == 2
    assert as_int(True) is True
    assert as_int(1.5) == 1.5
    floating = torch.tensor(2.0)
    assert as_int(floating) is floating  # left for the check to refuse
    flag = torch.tensor(True)
    assert as_int(flag) is flag
    vector = torch.tensor([1, 2])
    assert as_int(vector) is vector


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        (np.int64(4), 4),
        (torch.tensor(5), 5),
        (np.array(6), 6),
        ([3, 1], (3, 1)),
        ((0,), (0,)),
        (range(2, 5), (2, 3, 4)),
        (np.arange(3), (0, 1, 2)),
        (np.array([4, 2], dtype=np.int32), (4, 2)),
        (torch.tensor([7, 0]), (7, 0)),
        ([np.int64(1), torch.tensor(2)], (1, 2)),
    ],
)
def test_check_indices_accepts_ints_sequences_arrays_and_tensors(value: object, expected: object) -> None:
    got = check_indices("channels", value)
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(got, tuple):
        assert all(type(v) is int for v in got)


def test_check_indices_accepts_a_reversed_numpy_array() -> None:
    order = np.argsort(np.array([0.1, 0.9, 0.5]))[::-1]  # the top units first: a negative stride
    assert check_indices("neurons", order, item="neuron") == (1, 2, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "channels must be an int or a sequence of ints; got bool True."),
        ("3", "channels must be an int or a sequence of ints; got str '3'."),
        (2.0, "channels must be an int or a sequence of ints; got float 2.0."),
        (None, "channels must be an int or a sequence of ints; got NoneType None."),
        ([1, True], "channels must hold ints; got bool True."),
        ([1, 2.0], "channels must hold ints; got float 2.0."),
        (torch.tensor([1.0]), "channels must be an int or a sequence of ints; got a 1-D tensor of torch.float32."),
        (torch.tensor(True), "channels must be an int or a sequence of ints; got a 0-D tensor of torch.bool."),
        (torch.zeros(2, 2, dtype=torch.int64), "channels must be an int or a sequence of ints; got a 2-D tensor of torch.int64."),
        (np.array([True, False]), "channels must be an int or a sequence of ints; got a 1-D tensor of torch.bool."),
    ],
)  # fmt: skip
def test_check_indices_refuses_other_types(value: object, message: str) -> None:
    with pytest.raises(cl.InvalidTypeError, match=exact(message)) as info:
        check_indices("channels", value)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "value", [[], (), range(0), np.array([], dtype=np.int64), torch.tensor([], dtype=torch.int64)]
)
def test_check_indices_refuses_an_empty_sequence(value: object) -> None:
    with pytest.raises(
        cl.InvalidArgumentError, match=exact("channels is empty: give at least one index.")
    ) as info:
        check_indices("channels", value)
    assert isinstance(info.value, ValueError)


def test_check_indices_refuses_negatives_naming_one_item() -> None:
    with pytest.raises(cl.InvalidArgumentError, match=exact("neuron -1 is out of range: indices are >= 0.")):
        check_indices("neurons", [2, -1], item="neuron")
    with pytest.raises(cl.InvalidArgumentError, match=exact("channel -2 is out of range: indices are >= 0.")):
        check_indices("channel", -2)
    with pytest.raises(cl.InvalidArgumentError, match=exact("neuron -3 is out of range: indices are >= 0.")):
        check_indices("neurons", torch.tensor([0, -3]), item="neuron")


# -- format_shape and layer_mismatch ------------------------------------------------------------------


def test_format_shape() -> None:
    assert format_shape((1, 3, 224, 224)) == "[1, 3, 224, 224]"
    assert format_shape((5,)) == "[5]"
    assert format_shape(()) == "[]"


@pytest.mark.parametrize(
    ("module", "shape", "message"),
    [
        (nn.Conv2d(64, 192, 5), (1, 3, 27, 27), "L expects 64 input channels, got 3 (Conv2d, input shape [1, 3, 27, 27])"),
        (nn.Conv2d(3, 4, 3), (2, 3, 5, 5, 5), "L expects a 3-D or 4-D input, got 5-D (Conv2d, input shape [2, 3, 5, 5, 5])"),
        (nn.Conv1d(2, 4, 3), (2, 3, 9), "L expects 2 input channels, got 3 (Conv1d, input shape [2, 3, 9])"),
        (nn.Conv3d(1, 4, 3), (1, 5, 5), "L expects a 4-D or 5-D input, got 3-D (Conv3d, input shape [1, 5, 5])"),
        (nn.ConvTranspose2d(8, 4, 3), (1, 4, 5, 5), "L expects 8 input channels, got 4 (ConvTranspose2d, input shape [1, 4, 5, 5])"),
        (nn.Linear(100, 2), (1, 144), "L expects 100 input features, got 144 (Linear, input shape [1, 144])"),
        (nn.Linear(100, 2), (), "L expects 100 input features, got a 0-D input (Linear, input shape [])"),
        (nn.BatchNorm2d(6), (1, 4, 3, 3), "L expects 6 channels, got 4 (BatchNorm2d, input shape [1, 4, 3, 3])"),
        (nn.BatchNorm1d(6), (6,), "L expects 6 channels, got none (BatchNorm1d, input shape [6])"),
        (nn.InstanceNorm2d(6, affine=True), (1, 5, 3, 3), "L expects 6 channels, got 5 (InstanceNorm2d, input shape [1, 5, 3, 3])"),
        (nn.GroupNorm(2, 8), (1, 6, 3, 3), "L expects 8 channels, got 6 (GroupNorm, input shape [1, 6, 3, 3])"),
    ],
)  # fmt: skip
def test_layer_mismatch_says_what_the_layer_expected(
    module: nn.Module, shape: tuple[int, ...], message: str
) -> None:
    assert layer_mismatch("L", module, shape) == message
    with pytest.raises((RuntimeError, ValueError)):  # and the layer really rejects that input
        module(torch.zeros(shape))


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (nn.Conv2d(3, 4, 3), (1, 3, 8, 8)),
        (nn.Conv2d(3, 4, 3), (3, 8, 8)),  # unbatched: PyTorch accepts it
        (nn.Linear(4, 2), (7, 4)),
        (nn.BatchNorm2d(4), (2, 4, 3, 3)),
        (nn.ReLU(), (1,)),
        (nn.MaxPool2d(2), (1, 2, 4, 4)),
    ],
)
def test_layer_mismatch_is_none_for_an_input_the_layer_takes(
    module: nn.Module, shape: tuple[int, ...]
) -> None:
    assert layer_mismatch("L", module, shape) is None
    module.eval()(torch.zeros(shape))  # really taken
