"""``convlens.tap``: LayerTap, activations and gradients by layer name, importable here as before; the code lives in :mod:`convlens.core.tap`."""

from convlens.core.tap import *  # noqa: F403
from convlens.core.tap import __all__  # noqa: F401  (the same public names)
