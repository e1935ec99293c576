"""convlens: typed, hook-based interpretability for PyTorch convolutional networks.

Example:
    >>> import convlens as cl
    >>> cl.conv_output_size(224, kernel_size=11, stride=4, padding=2)
    55
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from convlens import images, objectives, shapes, tap, zoo  # noqa: F401  (cl.tap and cl.shapes, as before)
from convlens.apps.atlas import AtlasResult, build_atlas
from convlens.attribution.cam import (
    CAMResult,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from convlens.attribution.detection import BoxScoreTarget, SegmentationTarget
from convlens.attribution.evaluation import EvaluationResult, EvaluationRow, evaluate
from convlens.attribution.faithfulness import FaithfulnessResult, deletion, insertion
from convlens.attribution.saliency import GuidedBackprop, GuidedGradCAM, Saliency, SaliencyResult
from convlens.core.inputs import ForwardArgs
from convlens.core.layers import LayerInfo, list_layers, resolve_layer
from convlens.core.layouts import Layout
from convlens.core.shapes import (
    LayerShape,
    ShapeReport,
    conv_output_size,
    conv_transpose_output_size,
    trace_shapes,
)
from convlens.core.tap import LayerTap
from convlens.core.targets import ScoreTarget
from convlens.errors import (
    AmbiguousLayerError,
    ConvlensError,
    DeviceMismatchError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    MethodNotFoundError,
    RandomWeightsWarning,
    ShapeError,
    UnsupportedModelError,
    WeightsUnavailableError,
)
from convlens.featureviz.accentuate import accentuate
from convlens.featureviz.anchor import Anchor
from convlens.featureviz.circuits import Connections, connections
from convlens.featureviz.concept_pictures import concept_pictures
from convlens.featureviz.concept_result import ConceptsResult
from convlens.featureviz.concepts import concepts
from convlens.featureviz.maximize import ActivationMaximizer, MaximizationResult
from convlens.featureviz.neurons import NeuronVisualizer, TopExamplesResult
from convlens.featureviz.objectives import Objective
from convlens.featureviz.quality import Quality, Transfer
from convlens.render import (
    FilterRenderer,
    figure_grid,
    masked,
    overlay,
    plot_cam,
    plot_feature_maps,
    plot_images,
    plot_top_examples,
)

try:
    __version__ = version("convlens")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "ActivationMaximizer",
    "AmbiguousLayerError",
    "Anchor",
    "AtlasResult",
    "BoxScoreTarget",
    "CAMResult",
    "ConceptsResult",
    "Connections",
    "ConvlensError",
    "DeviceMismatchError",
    "EigenCAM",
    "EvaluationResult",
    "EvaluationRow",
    "FaithfulnessResult",
    "FilterRenderer",
    "ForwardArgs",
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
    "Layout",
    "MaximizationResult",
    "MethodNotFoundError",
    "NeuronVisualizer",
    "Objective",
    "Quality",
    "RandomWeightsWarning",
    "Saliency",
    "SaliencyResult",
    "ScoreCAM",
    "ScoreTarget",
    "SegmentationTarget",
    "ShapeError",
    "ShapeReport",
    "TopExamplesResult",
    "Transfer",
    "UnsupportedModelError",
    "WeightsUnavailableError",
    "XGradCAM",
    "__version__",
    "accentuate",
    "build_atlas",
    "concept_pictures",
    "concepts",
    "connections",
    "conv_output_size",
    "conv_transpose_output_size",
    "deletion",
    "evaluate",
    "figure_grid",
    "images",
    "insertion",
    "list_layers",
    "masked",
    "objectives",
    "overlay",
    "plot_cam",
    "plot_feature_maps",
    "plot_images",
    "plot_top_examples",
    "resolve_layer",
    "trace_shapes",
    "zoo",
]
