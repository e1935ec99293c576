"""convlens.core.layouts: reshape= presets, which tensor of a multi-tensor output, channels-last hints."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

import convlens as cl
from convlens.core.layouts import as_layout, channels_last_hint, tokens_to_grid
from helpers import exact


@pytest.mark.parametrize("prefix", [0, 1, 5])  # a grid alone, a class token, a class token and 4 registers
def test_vit_drops_the_leading_tokens_and_keeps_the_grid_in_row_major_order(prefix: int) -> None:
    n, side, width = 2, 7, 5
    grid = torch.randn(n, side, side, width)
    tokens = torch.cat([torch.randn(n, prefix, width), grid.reshape(n, side * side, width)], dim=1)
    out = as_layout("vit").apply(tokens)
    assert out.shape == (n, width, side, side)
    assert torch.equal(out, grid.permute(0, 3, 1, 2))


@pytest.mark.parametrize("prefix", [2, 8])  # a class and a distillation token (DeiT); 8 tokens at most
def test_vit_takes_up_to_8_tokens_before_the_grid(prefix: int) -> None:
    grid = torch.randn(1, 14, 14, 6)
    tokens = torch.cat([torch.randn(1, prefix, 6), grid.reshape(1, 196, 6)], dim=1)
    assert torch.equal(tokens_to_grid(tokens), grid.permute(0, 3, 1, 2))


def test_vit_refuses_a_grid_that_is_not_square() -> None:
    tokens = torch.randn(2, 14 * 16, 6)  # a 14x16 grid alone
    message = (
        'reshape="vit" expects a square grid of patches after at most 8 other tokens (a class token, a '
        "distillation token, registers); got L=224 tokens (shape (2, 224, 6)): the largest square grid, "
        "14x14 = 196, leaves 28 tokens before it. A grid that is not square (H x W) needs a callable"
    )
    with pytest.raises(cl.InvalidArgumentError, match="^" + re.escape(message)):
        as_layout("vit").apply(tokens)  # 28 patches would be lost
    with pytest.raises(cl.InvalidArgumentError, match="leaves 9 tokens"):
        tokens_to_grid(torch.randn(1, 9 + 49, 6))


def test_vit_equals_pytorch_grad_cams_documented_reshape_transform() -> None:
    tokens = torch.randn(3, 197, 192)
    documented = tokens[:, 1:, :].reshape(3, 14, 14, 192).transpose(2, 3).transpose(1, 2)
    assert torch.equal(tokens_to_grid(tokens), documented)


def test_channels_last_moves_the_last_axis_to_the_channels_for_any_rank() -> None:
    x = torch.randn(2, 4, 6, 3)
    assert torch.equal(as_layout("channels_last").apply(x), x.permute(0, 3, 1, 2))
    v = torch.randn(2, 4, 5, 6, 3)
    assert torch.equal(as_layout("channels_last").apply(v), v.permute(0, 4, 1, 2, 3))


def test_a_reshape_passes_gradients_back_through_the_same_positions() -> None:
    tokens = torch.randn(1, 1 + 4, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(as_layout("vit").apply(tokens)[0, 2, 1, 0], [tokens])
    expected = torch.zeros_like(tokens)
    expected[0, 1 + 2, 2] = 1  # row 1, column 0 of a 2x2 grid is token 2 after the class token
    assert torch.equal(grad, expected)


def test_unknown_presets_and_types_are_refused_with_the_choices() -> None:
    message = "reshape must be one of 'vit', 'channels_last' or a callable; got 'channel_last'. Did you mean 'channels_last'?"
    with pytest.raises(cl.InvalidArgumentError, match=exact(message)):
        as_layout("channel_last")
    with pytest.raises(cl.InvalidTypeError, match=r"reshape must be a preset name .*got int"):
        as_layout(3)
    with pytest.raises(cl.InvalidTypeError, match="Layout part must be an int or a dict key; got float"):
        cl.Layout(part=1.0)  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidArgumentError, match=r'reshape="vit" expects tokens \(N, L, C\); got a 4-D'):
        as_layout("vit").apply(torch.zeros(1, 3, 4, 4))


def test_a_callable_and_a_layout_pass_through() -> None:
    fn = torch.flatten
    assert as_layout(fn).reshape is fn
    layout = cl.Layout(part=1, reshape="channels_last")
    assert as_layout(layout) is layout
    assert as_layout(None).describe() == "as returned"
    assert layout.describe() == "part 1, reshape='channels_last'"
    assert not as_layout(None).reshapes
    assert layout.reshapes


def test_pick_reads_the_part_of_a_tuple_or_a_dict() -> None:
    high, low = torch.zeros(1, 8, 4, 4), torch.ones(1, 16, 2, 2)
    assert as_layout(None).pick((high, low)) is high  # the first tensor unless a part is named
    assert cl.Layout(part=1).pick((high, low)) is low
    assert cl.Layout(part=-1).pick([high, low]) is low
    assert cl.Layout(part="1").pick(OrderedDict([("0", high), ("1", low)])) is low
    assert cl.Layout(part=0).pick(high) is high
    with pytest.raises(
        cl.InvalidArgumentError,
        match=exact("Layout part=2: the layer returned 2 tensor(s) (valid parts 0 to 1)."),
    ):
        cl.Layout(part=2).pick((high, low))
    with pytest.raises(
        cl.InvalidArgumentError,
        match=r"no tensor under that key; its keys: \['0', 'pool'\]. Did you mean 'pool'",
    ):
        cl.Layout(part="pol").pick({"0": high, "pool": low})
    with pytest.raises(cl.InvalidArgumentError, match="the layer returned a single tensor"):
        cl.Layout(part=1).pick(high)


def test_channels_last_hint_names_the_module_that_makes_the_last_axis_the_features() -> None:
    swin_like = nn.Sequential(nn.LayerNorm(96), nn.Linear(96, 96))
    assert channels_last_hint(swin_like, (1, 56, 56, 96)) == "Linear"
    assert channels_last_hint(nn.LayerNorm(96), (1, 56, 56, 96)) == "LayerNorm"
    assert channels_last_hint(nn.Conv2d(3, 96, 3), (1, 96, 54, 54)) is None
    assert channels_last_hint(swin_like, (1, 96, 7, 96)) is None  # dimension 1 is as wide: cannot tell
    assert channels_last_hint(swin_like, (1, 96)) is None
