"""convlens: typed, hook-based interpretability for PyTorch convolutional networks.

Example:
    >>> import convlens as cl
    >>> cl.conv_output_size(224, kernel_size=11, stride=4, padding=2)
    55
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from convlens.errors import (
    AmbiguousLayerError,
    ConvlensError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    ShapeError,
)
from convlens.layers import LayerInfo, list_layers, resolve_layer
from convlens.shapes import (
    LayerShape,
    ShapeReport,
    conv_output_size,
    conv_transpose_output_size,
    trace_shapes,
)
from convlens.tap import LayerTap

try:
    __version__ = version("convlens")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AmbiguousLayerError",
    "ConvlensError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LayerInfo",
    "LayerNotFoundError",
    "LayerShape",
    "LayerTap",
    "ShapeError",
    "ShapeReport",
    "__version__",
    "conv_output_size",
    "conv_transpose_output_size",
    "list_layers",
    "resolve_layer",
    "trace_shapes",
]
