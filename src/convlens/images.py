"""``convlens.images``: pictures in and out: presets, loading, picture folders, importable here as before; the code lives in :mod:`convlens.models.images`."""

from convlens.models.images import *  # noqa: F403
from convlens.models.images import __all__  # noqa: F401  (the same public names)
