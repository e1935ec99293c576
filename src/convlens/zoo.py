"""``convlens.zoo``: the model zoo and its weights, importable here as before; the code lives in :mod:`convlens.models.zoo`."""

from convlens.models.zoo import *  # noqa: F403
from convlens.models.zoo import __all__  # noqa: F401  (the same public names)
