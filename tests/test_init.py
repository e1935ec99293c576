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
