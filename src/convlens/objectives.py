"""``convlens.objectives``: the objective algebra for feature visualization, importable here as before; the code lives in :mod:`convlens.featureviz.objectives`."""

from convlens.featureviz.objectives import *  # noqa: F403
from convlens.featureviz.objectives import __all__  # noqa: F401  (the same public names)
