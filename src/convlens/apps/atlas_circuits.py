"""The atlas's circuits: for each pair of consecutive drawn layers, how much each unit of one feeds the next.

:func:`~convlens.apps.atlas.build_atlas` gives every drawn layer but the first a :class:`Pair` with the
drawn layer before it, and the unit pages show the result both ways ("fed by" the earlier layer's
channels, "feeds" the later layer's units: :mod:`convlens.apps.atlas_site`). The strengths come from
:func:`~convlens.featureviz.circuits.connections`:

- **from the weights** where the later layer reads the earlier one's output through ops that keep
  each channel apart (BatchNorm, activations, pooling, flatten, residual additions): no data needed, so
  the pair costs one traced forward of one example;
- **from attribution** everywhere else (a conv, a concat or an attention between them, a block of
  several layers): the mean gradient x activation of each later unit with respect to the earlier
  layer's channels over the unit's own top examples, which the later layer's dataset pass ranks.

Whether the weights can be followed is decided by every rank alike (the later layer's pass, which is
sharded, must then rank every shown unit); rank 0 computes and writes the strengths into
``out/_cache/<circuits_key>/circuits.json``, reused by the next build. A pair measured neither way (the
layers cannot be read by attribution: the error says why) is written too, with its reason, which the
unit pages show, so that no rebuild tries again.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from convlens.core.inputs import ForwardArgs
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> pair = Pair(net, "0", "2", [0, 1], cache=Path("unused"), fingerprint="f")
    >>> wiring = pair.weights(ForwardArgs(), (1, 1, 8, 8), None)
    >>> wiring.method, wiring.path, tuple(wiring.strengths.shape)
    ('weights', 'ReLU', (2, 4))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from convlens.apps.atlas_site import CIRCUITS, circuits_key
from convlens.core.inputs import ForwardArgs
from convlens.core.layouts import ReshapeSpec
from convlens.errors import ConvlensError
from convlens.featureviz.circuits import Connections, connections
from convlens.featureviz.neurons import TopExamplesResult

__all__ = ["Pair"]


class Pair:
    """Two consecutive drawn layers: their circuits' cache folder, and how to measure them."""

    def __init__(
        self,
        model: nn.Module,
        earlier: str,
        later: str,
        units: Sequence[int],
        *,
        cache: Path,
        fingerprint: str,
    ) -> None:
        self.model, self.earlier, self.later, self.units = model, earlier, later, list(units)
        self.key = circuits_key(fingerprint, earlier, later, self.units)
        self.folder = cache / self.key
        self.done = (self.folder / CIRCUITS).is_file()

    def weights(
        self, forward_args: ForwardArgs, input_shape: Sequence[int], reshape: ReshapeSpec
    ) -> Connections | None:
        """The strengths from the weights; None where an op between the layers cannot be followed."""
        try:
            return connections(
                self.model, self.earlier, self.later, units=self.units, method="weights",
                forward_args=forward_args, input_shape=input_shape, reshape=reshape,
            )  # fmt: skip
        except ConvlensError:
            return None

    def attribution(
        self, best: TopExamplesResult, forward_args: Callable[[list[int]], ForwardArgs], reshape: ReshapeSpec
    ) -> Connections | str:
        """The strengths from attribution over each unit's top examples (``best``: every unit's, in order).

        ``forward_args``: the forward arguments of the examples at the given indices. Where the
        examples were not kept or the layers cannot be read, why not (the page says it).
        """
        if best.inputs is None:
            return "the top examples were not kept"
        try:
            return connections(
                self.model, self.earlier, self.later, best.inputs, units=self.units, method="attribution",
                forward_args=forward_args([int(i) for i in best.indices.flatten().tolist()]), reshape=reshape,
            )  # fmt: skip
        except ConvlensError as err:
            return str(err)

    def write(self, found: Connections | str) -> None:
        """Write the strengths into the cache folder (rank 0), or why there are none: either way, done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry: dict[str, object] = {"earlier": self.earlier, "later": self.later}
        if isinstance(found, str):
            entry |= {"method": "none", "reason": found, "path": "", "units": [], "strengths": []}
        else:
            entry |= {"method": found.method, "path": found.path, "units": list(found.units)}
            entry["strengths"] = found.strengths.tolist()
        (self.folder / CIRCUITS).write_text(json.dumps(entry), encoding="utf-8")
        self.done = True
