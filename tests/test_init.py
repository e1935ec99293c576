from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import convlens as cl


def test_import_is_light() -> None:
    code = "import sys, convlens; print('torchvision' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_version_from_metadata() -> None:
    assert cl.__version__ == version("convlens")


def test_public_names_exist_and_errors_inherit_builtins() -> None:
    for name in cl.__all__:
        assert hasattr(cl, name), name
    assert issubclass(cl.LayerNotFoundError, KeyError)
    assert issubclass(cl.AmbiguousLayerError, KeyError)
    assert issubclass(cl.ShapeError, ValueError)
    for error in (cl.LayerNotFoundError, cl.AmbiguousLayerError, cl.ShapeError, cl.InvalidArgumentError):
        assert issubclass(error, cl.ConvlensError)
    assert issubclass(cl.InvalidTypeError, TypeError)


#: The public API, written out: adding or dropping a public name is a deliberate edit of this list.
PUBLIC_NAMES = [
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
    "MethodNotFoundError",
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
    "figure_grid",
    "images",
    "insertion",
    "list_layers",
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


def test_public_names_are_exactly_the_golden_list() -> None:
    assert len(cl.__all__) == len(set(cl.__all__)), "a name is listed twice in __all__"
    assert sorted(cl.__all__) == PUBLIC_NAMES


def test_every_public_name_is_importable_from_convlens() -> None:
    star: dict[str, object] = {}
    exec("from convlens import *", star)  # fails if __all__ names something convlens lacks
    assert set(PUBLIC_NAMES) <= star.keys()
    for name in PUBLIC_NAMES:
        namespace: dict[str, object] = {}
        exec(f"from convlens import {name}", namespace)
        assert namespace[name] is getattr(cl, name)
