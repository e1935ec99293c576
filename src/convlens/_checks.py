"""Plain shape mismatches, said in words: what a layer expected and what it got.

Private: used by :mod:`convlens.tap` (LayerTap, Grad-CAM, saliency probes) and
:mod:`convlens.shapes` to turn PyTorch's shape errors into a
:class:`~convlens.ShapeError` that names the layer.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ["format_shape", "layer_mismatch"]


def format_shape(shape: tuple[int, ...]) -> str:
    """``[1, 3, 224, 224]``, the way the shape table prints shapes.

    Example:
        >>> format_shape((1, 3, 224, 224))
        '[1, 3, 224, 224]'
    """
    return "[" + ", ".join(map(str, shape)) + "]"


def layer_mismatch(name: str, module: nn.Module, shape: tuple[int, ...]) -> str | None:
    """What ``module`` expected and an input of ``shape`` lacked, if it is a plain mismatch.

    Covers convolutions (rank, channels), linear layers (features) and
    normalization layers (channels); None for anything else.

    Example:
        >>> from torch import nn
        >>> layer_mismatch("features.3", nn.Conv2d(64, 192, 5), (1, 3, 27, 27))
        'features.3 expects 64 input channels, got 3 (Conv2d, input shape [1, 3, 27, 27])'
    """
    where = f" ({type(module).__name__}, input shape {format_shape(shape)})"
    if isinstance(module, _ConvNd):
        nd = len(module.kernel_size)
        if len(shape) not in {nd + 1, nd + 2}:
            return f"{name} expects a {nd + 1}-D or {nd + 2}-D input, got {len(shape)}-D{where}"
        if shape[-nd - 1] != module.in_channels:
            return f"{name} expects {module.in_channels} input channels, got {shape[-nd - 1]}{where}"
    if isinstance(module, nn.Linear) and (not shape or shape[-1] != module.in_features):
        got = shape[-1] if shape else "a 0-D input"
        return f"{name} expects {module.in_features} input features, got {got}{where}"
    if isinstance(module, _BatchNorm | _InstanceNorm | nn.GroupNorm):
        want = module.num_channels if isinstance(module, nn.GroupNorm) else module.num_features
        if len(shape) < 2 or shape[1] != want:
            return f"{name} expects {want} channels, got {shape[1] if len(shape) >= 2 else 'none'}{where}"
    return None
