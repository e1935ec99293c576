"""convlens: typed, hook-based interpretability for PyTorch convolutional networks.

Example:
    >>> import convlens as cl
    >>> cl.conv_output_size(224, kernel_size=11, stride=4, padding=2)
    55
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from convlens import images, objectives, zoo
from convlens.atlas import AtlasResult, build_atlas
from convlens.cam import (
    CAMResult,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from convlens.errors import (
    AmbiguousLayerError,
    ConvlensError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    RandomWeightsWarning,
    ShapeError,
    UnsupportedModelError,
    WeightsUnavailableError,
)
from convlens.evaluation import EvaluationResult, EvaluationRow, evaluate
from convlens.faithfulness import FaithfulnessResult, deletion, insertion
from convlens.layers import LayerInfo, list_layers, resolve_layer
from convlens.maximize import ActivationMaximizer, MaximizationResult
from convlens.neurons import NeuronVisualizer, TopExamplesResult
from convlens.objectives import Objective
from convlens.render import FilterRenderer, overlay, plot_feature_maps, plot_top_examples
from convlens.saliency import GuidedBackprop, GuidedGradCAM, Saliency, SaliencyResult
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
    "ActivationMaximizer",
    "AmbiguousLayerError",
    "AtlasResult",
    "CAMResult",
    "ConvlensError",
    "EigenCAM",
    "EvaluationResult",
    "EvaluationRow",
    "FaithfulnessResult",
    "FilterRenderer",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LayerCAM",
    "LayerInfo",
    "LayerNotFoundError",
    "LayerShape",
    "LayerTap",
    "MaximizationResult",
    "NeuronVisualizer",
    "Objective",
    "RandomWeightsWarning",
    "Saliency",
    "SaliencyResult",
    "ScoreCAM",
    "ShapeError",
    "ShapeReport",
    "TopExamplesResult",
    "UnsupportedModelError",
    "WeightsUnavailableError",
    "XGradCAM",
    "__version__",
    "build_atlas",
    "conv_output_size",
    "conv_transpose_output_size",
    "deletion",
    "evaluate",
    "images",
    "insertion",
    "list_layers",
    "objectives",
    "overlay",
    "plot_feature_maps",
    "plot_top_examples",
    "resolve_layer",
    "trace_shapes",
    "zoo",
]
