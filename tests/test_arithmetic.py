from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import convlens as cl
from convlens.core import arithmetic

# -- arithmetic --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((224, 11), {"stride": 4, "padding": 2}, 55),
        ((55, 3), {"stride": 2}, 27),
        ((13, 3), {"padding": 1}, 13),
        ((32, 3), {"dilation": 2}, 28),
        ((32, 3), {"dilation": 2, "padding": 2}, 32),
        ((7, 3, 2, 0, 3), {}, 1),
        ((1, 1), {}, 1),
        ((6, 3, 2), {"ceil_mode": True}, 3),
        ((5, 2, 2, 1), {"ceil_mode": True}, 3),  # the window at 6 would start in the padding
        ((112, 3, 2, 1), {"ceil_mode": True}, 57),
        ((112, 3, 2, 1), {}, 56),
        ((1, 2, 2), {"ceil_mode": True}, 1),  # in ceil mode a window may run past the end
        ((1, 3, 3), {"ceil_mode": True}, 1),
    ],
)
def test_conv_output_size(args: tuple[Any, ...], kwargs: dict[str, Any], expected: int) -> None:
    assert cl.conv_output_size(*args, **kwargs) == expected


def test_conv_output_size_ceil_mode_matches_max_pool() -> None:
    for kernel in range(1, 5):
        for stride in range(1, 4):
            for padding in range(kernel // 2 + 1):
                for dilation in (1, 2):
                    pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=True)
                    for size in range(1, 24):
                        try:
                            real = pool(torch.zeros(1, 1, size, size)).shape[-1]
                        except RuntimeError:
                            with pytest.raises(cl.InvalidArgumentError, match="No output left"):
                                cl.conv_output_size(size, kernel, stride, padding, dilation, ceil_mode=True)
                            continue
                        got = cl.conv_output_size(size, kernel, stride, padding, dilation, ceil_mode=True)
                        assert got == real


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"size": 10, "kernel_size": 0}, cl.InvalidArgumentError, r"kernel_size must be an int >= 1; got 0"),
        (
            {"size": 10, "kernel_size": 3, "stride": 0},
            cl.InvalidArgumentError,
            r"stride must be an int >= 1; got 0",
        ),
        (
            {"size": 10, "kernel_size": 3, "padding": -1},
            cl.InvalidArgumentError,
            r"padding must be .* >= 0; got -1",
        ),
        ({"size": 10, "kernel_size": 3, "dilation": 0}, cl.InvalidArgumentError, r"dilation must be .* >= 1"),
        ({"size": 0, "kernel_size": 3}, cl.InvalidArgumentError, r"size must be an int >= 1; got 0"),
        ({"size": 10.0, "kernel_size": 3}, cl.InvalidTypeError, r"size must be an int >= 1; got float 10.0"),
        ({"size": 10, "kernel_size": True}, cl.InvalidTypeError, r"kernel_size must be an int .* got bool"),
        (
            {"size": 10, "kernel_size": 3, "ceil_mode": 1},
            cl.InvalidTypeError,
            r"ceil_mode must be True or False",
        ),
        (
            {"size": 4, "kernel_size": 11, "padding": 2},
            cl.InvalidArgumentError,
            r"No output left: .* spans 11",
        ),
        (
            {"size": 5, "kernel_size": 3, "dilation": 3},
            cl.InvalidArgumentError,
            r"at least 7 or more padding",
        ),
        (
            {"size": 1, "kernel_size": 4, "stride": 2, "ceil_mode": True},
            cl.InvalidArgumentError,
            r"spans 4, more than size \+ 2\*padding \+ stride - 1 = 1 \+ 2\*0 \+ 1 = 2\. Use an input of at least 3",
        ),
    ],
)
def test_conv_output_size_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        cl.conv_output_size(**kwargs)
    assert issubclass(error, cl.ConvlensError)


def test_conv_output_size_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        cl.conv_output_size(10, 0)


def test_conv_transpose_output_size_matches_conv_transpose2d() -> None:
    for kernel in (1, 2, 3, 4):
        for stride in (1, 2, 3):
            for dilation in (1, 2):
                for padding in range(3):
                    for output_padding in range(max(stride, dilation)):
                        layer = nn.ConvTranspose2d(
                            1, 1, kernel, stride, padding, output_padding, dilation=dilation
                        )
                        for size in (1, 2, 5):
                            expected = (size - 1) * stride - 2 * padding + dilation * (kernel - 1)
                            if expected + output_padding + 1 < 1:
                                with pytest.raises(cl.InvalidArgumentError, match="No output left"):
                                    cl.conv_transpose_output_size(
                                        size, kernel, stride, padding, output_padding, dilation
                                    )
                                continue
                            real = layer(torch.zeros(1, 1, size, size)).shape[-1]
                            got = cl.conv_transpose_output_size(
                                size, kernel, stride, padding, output_padding, dilation
                            )
                            assert got == real


def test_conv_transpose_output_size_errors() -> None:
    with pytest.raises(
        cl.InvalidArgumentError, match=r"output_padding must be smaller .* \(here < 2\); got 2"
    ):
        cl.conv_transpose_output_size(7, 3, stride=2, output_padding=2)
    with pytest.raises(cl.InvalidArgumentError, match="output_padding must be an int >= 0; got -1"):
        cl.conv_transpose_output_size(7, 3, output_padding=-1)
    with pytest.raises(cl.InvalidTypeError, match="stride must be an int"):
        cl.conv_transpose_output_size(7, 3, stride=2.0)  # type: ignore[arg-type]


# -- formulas of other layers ---------------------------------------------------------


def test_formulas_ceil_transposed_per_dimension_and_3d() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(1, 0)),
        nn.MaxPool2d(2, 2, padding=1, ceil_mode=True),
        nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
        nn.AdaptiveAvgPool2d((2, 3)),
    )
    report = cl.trace_shapes(net, (1, 1, 9, 11))
    assert report["0"].formula == (
        "floor((9 + 2*1 - 1*(3-1) - 1) / 1) + 1 = 9; floor((11 + 2*0 - 1*(5-1) - 1) / 2) + 1 = 4"
    )
    assert (
        report["1"].formula
        == "ceil((9 + 2*1 - 1*(2-1) - 1) / 2) + 1 - 1 = 5; ceil((4 + 2*1 - 1*(2-1) - 1) / 2) + 1 = 3"
    )
    assert (
        report["2"].formula == "(5 - 1)*2 - 2*1 + 1*(3-1) + 1 + 1 = 10; (3 - 1)*2 - 2*1 + 1*(3-1) + 1 + 1 = 6"
    )
    assert report["3"].formula == "adaptive: 10 -> 2; adaptive: 6 -> 3"
    assert report["0"].receptive_field == (3, 5)
    assert report["0"].jump == (1, 2)
    assert report["2"].receptive_field is None  # undefined after a transposed conv
    assert report["2"].macs == 1 * 2 * 5 * 3 * 2 * 9  # in elements * out/groups * kernel

    conv3d = cl.trace_shapes(nn.Conv3d(2, 4, 3, stride=2, groups=2), (1, 2, 7, 7, 7))
    (row,) = conv3d
    assert row.name == ""  # the model itself is the only leaf
    assert row.formula == "floor((7 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 3"
    assert row.macs == 4 * 3 * 3 * 3 * (2 // 2) * 27
    assert "(root)" in str(conv3d)


def test_conv1d_and_same_padding() -> None:
    net = nn.Sequential(nn.Conv1d(2, 3, 5, padding="same", dilation=2), nn.Conv1d(3, 3, 3, padding="valid"))
    report = cl.trace_shapes(net, (4, 2, 16))
    assert report["0"].formula == "same: 16 -> 16"
    assert report["1"].formula == "floor((16 + 2*0 - 1*(3-1) - 1) / 1) + 1 = 14"
    assert (report["0"].receptive_field, report["1"].receptive_field) == (9, 11)


# -- layer geometry helpers --------------------------------------------------------------------


def test_window_of_conv_pool_and_other_layers() -> None:
    conv = arithmetic.window(nn.ConvTranspose2d(1, 1, (3, 5), stride=2, padding=1, output_padding=1))
    assert conv == arithmetic.Window((3, 5), (2, 2), (1, 1), (1, 1), (1, 1), False, True)
    pool = arithmetic.window(nn.MaxPool1d(3, ceil_mode=True))
    assert pool == arithmetic.Window((3,), (3,), (0,), (1,), (0,), True, False)  # stride defaults to kernel
    assert arithmetic.window(nn.AdaptiveAvgPool2d(1)) is None
    assert arithmetic.window(nn.ReLU()) is None
    assert (arithmetic.adaptive_dims(nn.AdaptiveMaxPool3d(2)), arithmetic.adaptive_dims(nn.ReLU())) == (3, 0)
    assert arithmetic.ntuple(3, 2) == (3, 3)
    assert arithmetic.ntuple([1, 2], 2) == (1, 2)


def test_rf_step_extent_and_macs() -> None:
    start: arithmetic.RF = ((1, 1), (1, 1), (0, 0))
    conv = nn.Conv2d(1, 1, 3, stride=2, dilation=2)
    after = arithmetic.rf_step(conv, start, (1, 1, 9, 9), (1, 1, 3, 3))
    assert after == ((5, 5), (2, 2), (0, 0))
    assert arithmetic.rf_step(nn.Flatten(), after, (1, 1, 3, 3), (1, 9)) is None
    assert arithmetic.rf_step(nn.AdaptiveAvgPool2d(1), after, (1, 1, 3, 3), (1, 1, 1, 1)) == (
        (9, 9),
        (6, 6),
        (0, 0),
    )
    padded = nn.Conv2d(1, 1, 3, stride=2, padding=(1, 2))  # the field starts inside the padding
    assert arithmetic.rf_step(padded, after, (1, 1, 3, 3), (1, 1, 2, 3)) == ((9, 9), (4, 4), (-2, -4))
    same = nn.Conv2d(1, 1, 4, padding="same")  # PyTorch pads 1 on the left, 2 on the right
    assert arithmetic.rf_step(same, start, (1, 1, 8, 8), (1, 1, 8, 8)) == ((4, 4), (1, 1), (-1, -1))
    assert (arithmetic.extent((5, 5)), arithmetic.extent((3, 5)), arithmetic.extent(None)) == (
        5,
        (3, 5),
        None,
    )
    assert arithmetic.macs(conv, (1, 1, 9, 9), (1, 1, 3, 3)) == 9 * 9
    assert arithmetic.macs(nn.ReLU(), (1, 4), (1, 4)) == 0


def test_mismatch_says_what_the_layer_expected() -> None:
    conv = nn.Conv2d(3, 4, 5)
    assert arithmetic.mismatch("c", conv, (1, 3, 8, 8)) is None
    assert arithmetic.mismatch("c", conv, (1, 2, 8, 8)) == (
        "c expects 3 input channels, got 2 (Conv2d, input shape [1, 2, 8, 8])"
    )
    assert arithmetic.mismatch("p", nn.MaxPool2d(3), (1, 3, 2, 2)) == (
        "p gets a spatial size of [2, 2], too small (MaxPool2d, input shape [1, 3, 2, 2]): "
        "No output left: kernel_size=3 with dilation=1 spans 3, more than size + 2*padding = 2 + 2*0 = 2. "
        "Use an input of at least 3 or more padding."
    )
    assert arithmetic.mismatch("r", nn.ReLU(), (1,)) is None
