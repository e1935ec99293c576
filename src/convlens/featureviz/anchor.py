"""What keeps a feature accentuation close to its seed picture: a layer's representation.

Feature accentuation (Hamblin, Fel et al., 2024) starts the optimization from a real picture and
pulls, besides the objective, towards the seed's representation in an intermediate layer. Each
step the seed goes through the very random view (crop, jitter) the optimized picture goes through,
so the two are compared position by position; the penalty is the relative squared distance

``d(x) = ||a(view(x)) - a(view(seed))||^2 / ||a(view(seed))||^2``

per picture, weighted by :attr:`Anchor.weight` and subtracted from the objective.

Example:
    >>> import torch
    >>> anchor = Anchor("features.3", weight=2.0)
    >>> seed = torch.ones(2, 4, 3, 3)
    >>> anchor.distance(seed * 1.5, seed).tolist()
    [0.25, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from convlens.core.checks import check_real
from convlens.errors import InvalidTypeError

__all__ = ["Anchor"]

#: Guards the division for a seed whose representation is all zeros.
_TINY = 1e-12


@dataclass(frozen=True, slots=True)
class Anchor:
    """The layer whose representation of the seed picture the optimization stays close to.

    Args:
        layer: The layer's qualified name (``"features.6"``); its output is compared (of a layer
            that returns several tensors, the first, or the one the objective's ``Layout(part=...)``
            reads when the objective reads that layer too).
        weight: How strongly: the objective minus ``weight`` times the relative squared distance.

    Raises:
        InvalidTypeError: A layer that is not a string, or a weight that is not a real number.
        InvalidArgumentError: A negative or non-finite weight.
    """

    layer: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str):
            raise InvalidTypeError(f"Anchor layer must be a qualified layer name (str); got {self.layer!r}.")
        object.__setattr__(self, "weight", check_real("weight", self.weight, positive=False))

    def distance(self, acts: Tensor, seed: Tensor) -> Tensor:
        """``(N,)``: the relative squared distance of ``acts`` from the seed's ``seed`` activations."""
        diff = (acts - seed).flatten(1).float().square().sum(1)
        return diff / seed.flatten(1).float().square().sum(1).clamp_min(_TINY)
