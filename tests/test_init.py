from __future__ import annotations

import pkgutil
import subprocess
import sys
import types
from importlib.metadata import version

import pytest

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


def test_public_names_are_exactly_the_golden_list() -> None:
    assert len(cl.__all__) == len(set(cl.__all__)), "a name is listed twice in __all__"
    assert sorted(cl.__all__) == PUBLIC_NAMES


def test_every_public_name_is_importable_from_convlens() -> None:
    star: dict[str, object] = {}
    exec("from convlens import *", star)  # fails if __all__ names something convlens lacks
    assert set(PUBLIC_NAMES) <= star.keys()


def test_every_public_name_is_defined_inside_convlens() -> None:
    """A public name is convlens's own: not a re-exported torch, numpy or typing object."""
    for name in PUBLIC_NAMES:
        value = getattr(cl, name)
        if isinstance(value, types.ModuleType):
            assert value.__name__.startswith("convlens."), f"{name} is the module {value.__name__}"
        elif isinstance(value, str):
            assert name == "__version__", name
        else:
            module = getattr(value, "__module__", None)
            assert isinstance(module, str), f"{name} has no __module__"
            assert module.startswith("convlens."), f"{name} comes from {module}"


def _public_modules() -> list[str]:
    """Every convlens module whose dotted name has no ``_private`` part."""
    names = [cl.__name__]
    for info in pkgutil.walk_packages(cl.__path__, prefix="convlens."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


#: Run in a fresh interpreter: import each module first, alone, with no convlens module loaded before
#: it (torch and the other dependencies stay loaded: they are not what is tested, and they are slow).
_IMPORT_EACH_FIRST = """
import importlib, sys, traceback
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "convlens" or m.startswith("convlens.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        print(f"{name}: {type(err).__name__}: {err}")
"""


@pytest.mark.slow
def test_every_public_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    """Import order cannot hide a cycle: each module is imported first, before any other convlens module."""
    modules = _public_modules()
    assert {"convlens.tap", "convlens.shapes", "convlens.render", "convlens.core.recorder"} <= set(modules)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_FIRST, *modules], capture_output=True, text=True, check=True
    )
    assert done.stdout == "", done.stdout
