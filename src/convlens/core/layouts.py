"""``reshape=``: how a layer's output becomes ``(N, C, *spatial)``, one spelling for every primitive.

Every primitive that reads channels or makes a map from a layer (the CAM family, guided Grad-CAM,
``evaluate``, ``NeuronVisualizer.top_examples``, the ``channel`` and ``neuron`` objectives, the atlas)
takes the same ``reshape=``:

- ``None``: the output already is ``(N, C, *spatial)`` (a conv layer's, a Linear layer's ``(N, C)``);
- ``"vit"``: tokens ``(N, L, C)``: a class token (and register or distillation tokens) before a
  square grid of ``s * s`` patches, or the grid alone, to ``(N, C, s, s)``: the prefix is the
  ``L - s*s`` tokens before the largest square grid that fits, at most 8 (more is refused: a grid
  that is not square needs a callable);
- ``"channels_last"``: ``(N, *spatial, C)`` as Swin and ConvNeXt stages and timm's NHWC blocks give,
  to ``(N, C, *spatial)``;
- a callable from the tensor to ``(N, C, *spatial)`` (pytorch-grad-cam's ``reshape_transform``);
- :class:`Layout` ``(part=..., reshape=...)``: for a layer that returns several tensors (a tuple,
  list or dict: one per branch of a multi-resolution stage), which one to read, then how to reshape
  it. Without it, the first tensor is read.

The reshape must only rearrange values (index, permute, view): gradients pass through it the same way.

Example:
    >>> import torch
    >>> as_layout("vit").apply(torch.zeros(2, 1 + 196, 192)).shape
    torch.Size([2, 192, 14, 14])
    >>> as_layout("channels_last").apply(torch.zeros(2, 7, 7, 768)).shape
    torch.Size([2, 768, 7, 7])
    >>> as_layout(Layout(part=1)).pick((torch.zeros(1, 8, 4, 4), torch.zeros(1, 16, 2, 2))).shape
    torch.Size([1, 16, 2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from convlens.core.checks import choices
from convlens.core.values import tensors
from convlens.errors import InvalidArgumentError, InvalidTypeError, did_you_mean

__all__ = [
    "Layout",
    "Reshape",
    "ReshapeName",
    "ReshapeSpec",
    "as_layout",
    "channels_last_hint",
    "tokens_to_grid",
]

#: The named layouts ``reshape=`` accepts.
ReshapeName = Literal["vit", "channels_last"]

#: A function from a layer's output tensor to ``(N, C, *spatial)``.
Reshape = Callable[[Tensor], Tensor]


#: The most tokens ``reshape="vit"`` drops before the grid: a class token, a distillation token and
#: a few registers. More would be a grid that is not square, read wrong.
_MAX_PREFIX_TOKENS = 8


def tokens_to_grid(tokens: Tensor) -> Tensor:
    """``(N, L, C)`` tokens to ``(N, C, s, s)``: drop the ``L - s*s`` leading tokens, ``s = isqrt(L)``.

    At most 8 leading tokens are dropped: a class token, a distillation
    token and a few registers. More means the grid is not square (a 14x16 grid is ``L = 224``: 28
    patches would be lost), and is refused; such a grid needs a callable ``reshape=``.

    Raises:
        InvalidArgumentError: not ``(N, L, C)``, or more than 8 tokens before the largest square grid.

    Example:
        >>> import torch
        >>> tokens_to_grid(torch.zeros(1, 4 + 1 + 49, 8)).shape   # 4 registers, a class token, 7x7
        torch.Size([1, 8, 7, 7])
        >>> tokens_to_grid(torch.zeros(1, 14 * 16, 8))
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: reshape="vit" expects a square grid of patches after at most 8 other tokens (a class token, a distillation token, registers); got L=224 tokens (shape (1, 224, 8)): the largest square grid, 14x14 = 196, leaves 28 tokens before it. ...
    """
    if tokens.dim() != 3:
        raise InvalidArgumentError(
            f'reshape="vit" expects tokens (N, L, C); got a {tokens.dim()}-D tensor of shape '
            f'{tuple(tokens.shape)}. For (N, H, W, C) use reshape="channels_last".'
        )
    n, length, width = tokens.shape
    side = math.isqrt(length)
    prefix = length - side * side
    if prefix > _MAX_PREFIX_TOKENS:
        raise InvalidArgumentError(
            f'reshape="vit" expects a square grid of patches after at most {_MAX_PREFIX_TOKENS} other tokens '
            f"(a class token, a distillation token, registers); got L={length} tokens (shape "
            f"{tuple(tokens.shape)}): the largest square grid, {side}x{side} = {side * side}, leaves {prefix} "
            "tokens before it. A grid that is not square (H x W) needs a callable, e.g. "
            "reshape=lambda t: t[:, -H * W:].reshape(t.shape[0], H, W, t.shape[2]).permute(0, 3, 1, 2)."
        )
    grid = tokens[:, prefix:]
    return grid.reshape(n, side, side, width).permute(0, 3, 1, 2)


def _channels_last(tensor: Tensor) -> Tensor:
    if tensor.dim() < 3:
        raise InvalidArgumentError(
            f'reshape="channels_last" expects (N, *spatial, C); got shape {tuple(tensor.shape)}.'
        )
    return tensor.movedim(-1, 1)


_PRESETS: dict[str, Reshape] = {"vit": tokens_to_grid, "channels_last": _channels_last}


@dataclass(frozen=True, slots=True)
class Layout:
    """Which tensor of a layer's output to read, and how to reshape it to ``(N, C, *spatial)``.

    Args:
        part: For a layer returning several tensors: the position among them (in the order a
            tuple, list or dict holds them) or a dict key. None: the first.
        reshape: ``None``, a preset name (``"vit"``, ``"channels_last"``) or a callable.

    Example:
        >>> import torch
        >>> out = {"high": torch.zeros(1, 18, 8, 8), "low": torch.zeros(1, 36, 4, 4)}
        >>> Layout(part="low").pick(out).shape
        torch.Size([1, 36, 4, 4])
        >>> Layout(part=1, reshape="channels_last")
        Layout(part=1, reshape='channels_last')
    """

    part: int | str | None = None
    reshape: ReshapeName | Reshape | None = None

    def __post_init__(self) -> None:
        if self.part is not None and not isinstance(self.part, int | str):
            raise InvalidTypeError(
                f"Layout part must be an int or a dict key; got {type(self.part).__name__}."
            )
        if isinstance(self.reshape, str):
            valid = choices(ReshapeName)
            if self.reshape not in valid:
                raise InvalidArgumentError(
                    f"reshape must be one of {', '.join(map(repr, valid))} or a callable; got "
                    f"{self.reshape!r}.{did_you_mean(self.reshape, valid)}"
                )
        elif self.reshape is not None and not callable(self.reshape):
            raise InvalidTypeError(
                f"reshape must be a preset name ({', '.join(map(repr, get_args(ReshapeName)))}), a callable "
                f"from the layer's output to (N, C, *spatial), or convlens.Layout; got {type(self.reshape).__name__}."
            )

    @property
    def reshapes(self) -> bool:
        """Whether the tensor is rearranged at all."""
        return self.reshape is not None

    def pick(self, output: Any) -> Tensor:
        """The tensor of ``output`` this layout reads.

        Raises:
            InvalidArgumentError: ``part`` names no tensor of the output (the choices are listed).
        """
        if isinstance(output, Tensor):
            if self.part not in (None, 0):
                raise InvalidArgumentError(f"Layout part={self.part!r}: the layer returned a single tensor.")
            return output
        if isinstance(self.part, str):
            if not isinstance(output, Mapping) or not isinstance(output.get(self.part), Tensor):
                keys = (
                    [k for k, v in output.items() if isinstance(v, Tensor)]
                    if isinstance(output, Mapping)
                    else []
                )
                raise InvalidArgumentError(
                    f"Layout part={self.part!r}: the layer's output has no tensor under that key; "
                    f"its keys: {keys or type(output).__name__}.{did_you_mean(self.part, map(str, keys))}"
                )
            value: Tensor = output[self.part]
            return value
        found = tensors(output)
        index = self.part or 0
        if not found or not -len(found) <= index < len(found):
            raise InvalidArgumentError(
                f"Layout part={index}: the layer returned {len(found)} tensor(s) (valid parts 0 to {len(found) - 1})."
            )
        return found[index]

    def apply(self, tensor: Tensor) -> Tensor:
        """``tensor`` rearranged to ``(N, C, *spatial)``."""
        if self.reshape is None:
            return tensor
        fn = _PRESETS[self.reshape] if isinstance(self.reshape, str) else self.reshape
        return fn(tensor)

    def describe(self) -> str:
        """The layout in words, for messages: ``"part 1, reshape='vit'"``."""
        words = [] if self.part is None else [f"part {self.part!r}"]
        if self.reshape is not None:
            words.append(
                f"reshape={self.reshape!r}" if isinstance(self.reshape, str) else "reshape=<callable>"
            )
        return ", ".join(words) or "as returned"


#: What ``reshape=`` accepts.
ReshapeSpec = ReshapeName | Reshape | Layout | None


def as_layout(spec: object) -> Layout:
    """``reshape=`` as a :class:`Layout`, checked before any work.

    Raises:
        InvalidArgumentError: an unknown preset name (the nearest is named).
        InvalidTypeError: not a name, a callable or a Layout.

    Example:
        >>> as_layout("vti")
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: reshape must be one of 'vit', 'channels_last' or a callable; got 'vti'. Did you mean 'vit'?
    """
    if isinstance(spec, Layout):
        return spec
    return Layout(reshape=spec)  # type: ignore[arg-type]  # checked in __post_init__


def channels_last_hint(layer: nn.Module, shape: tuple[int, ...]) -> str | None:
    """The kind of module inside ``layer`` that says its output ``shape`` is channels last, if one does.

    A Linear or LayerNorm inside the layer (itself included) of width ``shape[-1]``, while dimension 1
    has another size and no convolution there makes ``shape[1]`` channels, means the output is
    ``(N, *spatial, C)`` (a Swin stage, a ConvNeXt block, timm's NHWC layers).

    Example:
        >>> from torch import nn
        >>> channels_last_hint(nn.Sequential(nn.LayerNorm(96), nn.Linear(96, 96)), (1, 56, 56, 96))
        'Linear'
        >>> channels_last_hint(nn.Conv2d(3, 96, 3), (1, 96, 56, 56)) is None
        True
    """
    if len(shape) < 3 or shape[1] == shape[-1]:
        return None
    found = None
    for module in layer.modules():
        if isinstance(module, _ConvNd) and module.out_channels == shape[1]:
            return None
        if isinstance(module, nn.Linear) and module.out_features == shape[-1]:
            found = "Linear"
        elif isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape[-1:]) == (shape[-1],):
            found = found or "LayerNorm"
    return found
