"""``convlens.shapes``: the shape arithmetic and trace_shapes, importable here as before; the code lives in :mod:`convlens.core.shapes`."""

from convlens.core.shapes import *  # noqa: F403
from convlens.core.shapes import __all__  # noqa: F401  (the same public names)
