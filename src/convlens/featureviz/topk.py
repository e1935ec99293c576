"""The running top-k of :meth:`~convlens.featureviz.neurons.NeuronVisualizer.top_examples`.

What one pass over the data keeps (``units x k`` values, positions, argmax and inputs, never every
activation), how batches are read, and the receptive-field boxes of the peaks.

Example:
    >>> import torch
    >>> top = RunningTop([0], 2, keep_inputs=False, spatial=())
    >>> top.update(torch.tensor([[1.0, 3.0, 2.0]]), torch.arange(3), torch.zeros(3, 1), None)
    >>> top.positions.tolist(), top.values.tolist()
    ([[1, 2]], [[3.0, 2.0]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from convlens.core.arithmetic import Shape
from convlens.core.distributed import merge_top, ranked, share_rows
from convlens.core.inputs import NO_ARGS, ForwardArgs
from convlens.core.memo import SETTINGS, recall, remember, structure
from convlens.core.shapes import trace_shapes
from convlens.errors import ConvlensError

__all__ = ["Field", "RunningTop", "peak_boxes", "receptive_field", "unravel"]


class RunningTop:
    """The ``k`` highest values per unit seen so far, their positions, argmax and (optionally) inputs.

    Memory is ``units x k`` values and positions, plus the inputs of at most
    ``units x k`` distinct examples, whatever the data's size; ties go to the
    lower position.
    """

    @classmethod
    def start(
        cls, units: list[int] | None, k: int, *, keep_inputs: bool, shape: tuple[int, ...], ordered: bool
    ) -> RunningTop:
        """An empty top for a layer of (reshaped) output ``shape``; ``units`` None: every unit."""
        if units is None:
            units = list(range(shape[1] if len(shape) > 1 else 1))
        return cls(units, k, keep_inputs=keep_inputs, spatial=shape[2:], ordered=ordered)

    def __init__(
        self, units: list[int], k: int, *, keep_inputs: bool, spatial: tuple[int, ...], ordered: bool = False
    ) -> None:
        self.units, self.k, self.keep_inputs, self.spatial = units, k, keep_inputs, spatial
        self.ordered = ordered  # positions only increase: the kept ones precede the batch's
        self.index: Tensor | None = None  # the units as a tensor, on the data's device
        self.values: Tensor | None = None  # (units, <= k)
        self.positions: Tensor | None = None
        self.argmax: Tensor | None = None  # (units, <= k) flat position in the layer's grid
        self.kept: dict[int, Tensor] = {}  # position -> input, for every position in the top
        self.attached: dict[int, Tensor] = {}  # position -> its row of update's ``attach``
        self.every = False  # the units are every unit of the layer, in order
        self._wanted: tuple[Tensor, bool] = (torch.empty(0, 0, dtype=torch.long), False)

    def pick(self, per_unit: Tensor) -> Tensor:
        """The columns of ``per_unit`` (``(B, all units)``) that are ranked, ``(B, units)``."""
        if self.index is None or self.index.device != per_unit.device:
            self.index = torch.tensor(self.units, device=per_unit.device)
            self.every = self.units == list(range(per_unit.shape[1]))
        if self.every:
            return per_unit  # every unit, in order: no copy
        return per_unit.index_select(1, self.index)

    def update(
        self, values: Tensor, positions: Tensor, x: Tensor, maps: Tensor | None, attach: Tensor | None = None
    ) -> None:
        """Merge one batch: ``values`` is ``(units, B)``, ``positions`` ``(B,)``.

        ``maps`` is the layer's ``(B, all units, positions)`` output; its
        argmax is taken for the new winners only. With ``keep_inputs``, each
        winner's input is kept, and its row of ``attach`` (``(B, ...)``) too.
        """
        units, batch = values.shape
        at = positions.expand(units, batch)
        local = torch.arange(batch, device=values.device).expand(units, batch)  # -1: kept from before
        where = torch.zeros_like(at)
        if self.values is not None and self.positions is not None and self.argmax is not None:
            values = torch.cat([self.values, values], dim=1)
            at = torch.cat([self.positions, at], dim=1)
            local = torch.cat([torch.full_like(self.positions, -1), local], dim=1)
            where = torch.cat([self.argmax, where], dim=1)
        ranking = ranked(values, at, [local, where], ordered=self.ordered)
        values, at, local, where = (part[:, : self.k] for part in ranking)
        if maps is not None:
            index = torch.tensor(self.units, device=maps.device) if self.index is None else self.index
            new = local >= 0
            rows = new.nonzero(as_tuple=True)[0]
            if len(rows):
                where[new] = maps[local[new], index[rows]].argmax(-1)
        self.values, self.positions, self.argmax = values, at, where
        if self.keep_inputs:
            fresh = torch.unique(at[local >= 0]).tolist()
            if fresh:
                rows_of = {int(p): i for i, p in enumerate(positions.tolist())}
                picked = x.index_select(0, torch.tensor([rows_of[p] for p in fresh], device=x.device))
                self.kept.update((p, row.clone()) for p, row in zip(fresh, picked, strict=True))
                if attach is not None:
                    rows = torch.tensor([rows_of[p] for p in fresh], device=attach.device)
                    extra = attach.index_select(0, rows)
                    self.attached.update((p, row.clone()) for p, row in zip(fresh, extra, strict=True))
            live = set(torch.unique(at).tolist())
            for p in [p for p in self.kept if p not in live]:
                del self.kept[p]
                self.attached.pop(p, None)

    def result(self, merge: bool, sample: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Positions, values, inputs and argmax, ``(units, <= k)``, merged over the ranks when ``merge``.

        After it, :meth:`attached_rows` gives the kept rows of ``attach`` for the same positions.
        """
        units = len(self.units)
        empty = torch.empty((units, 0), device=sample.device)
        values = empty if self.values is None else self.values
        positions = empty.long() if self.positions is None else self.positions
        argmax = empty.long() if self.argmax is None else self.argmax
        values, positions, (argmax,) = merge_top(values, positions, [argmax], self.k, merge)
        inputs = None
        if self.keep_inputs:
            wanted, inverse = torch.unique(positions, sorted=True, return_inverse=True)
            rows = share_rows(self.kept, wanted.tolist(), sample, merge)
            inputs = rows[inverse]
        self._wanted = (positions, merge)
        return positions, values, inputs, argmax if self.spatial else None

    def attached_rows(self, like: Tensor) -> Tensor:
        """``(units, <= k, ...)`` the ``attach`` rows of :meth:`result`'s positions (``like``: one row's shape)."""
        positions, merge = self._wanted
        wanted, inverse = torch.unique(positions, sorted=True, return_inverse=True)
        return share_rows(self.attached, wanted.tolist(), like, merge)[inverse]


def unravel(flat: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """Flat positions in a ``spatial`` grid as ``(..., len(spatial))`` coordinates."""
    coords = []
    for size in reversed(spatial):
        coords.append(flat % size)
        flat = flat // size
    return torch.stack(coords[::-1], dim=-1)


Field = tuple[Shape, Shape, Shape]


def receptive_field(
    model: nn.Module, layer: str, input_shape: tuple[int, ...], forward_args: ForwardArgs = NO_ARGS
) -> Field | None:
    """The layer's receptive field, jump and start per spatial dimension (trace_shapes), or None.

    ``layer`` is a row name of ``trace_shapes(model, ...)``: the canonical name (``name#i`` for a
    call) of the model as given, so pass the wrapped model and its own names. ``forward_args`` are
    those of one input of ``input_shape`` (a batched tensor among them has one row). None where the
    trace fails or the layer has no field.

    Remembered per model, structure, layer, input shape and the forward arguments' signature (each
    tensor's shape and dtype, each plain setting's value, every other value's type:
    :func:`convlens.core.memo.remember` keeps plain values only), so a fresh NeuronVisualizer on the
    same model traces it once.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, stride=2))
        >>> receptive_field(net, "1", (1, 1, 9, 9))
        ((5, 5), (2, 2), (0, 0))
    """
    key = ("receptive field", layer, input_shape, _signature(forward_args), structure(model))
    known = recall(model, key)
    if isinstance(known, tuple) and len(known) == 2 and known[0] == "field":
        return known[1]  # type: ignore[no-any-return]
    field = _trace_field(model, layer, input_shape, forward_args)
    remember(model, key, ("field", field))
    return field


def _signature(forward_args: ForwardArgs) -> tuple[object, ...]:
    """What of the forward arguments a trace's shapes can depend on, as plain values."""

    def one(value: object) -> object:
        if isinstance(value, Tensor):
            return ("tensor", tuple(value.shape), str(value.dtype))
        if type(value) in SETTINGS and not isinstance(value, tuple):
            return value
        if isinstance(value, tuple | list):
            return (type(value).__name__, *(one(v) for v in value))
        return type(value).__name__

    return (
        *(one(v) for v in forward_args.args),
        *((k, one(v)) for k, v in sorted(forward_args.kwargs.items())),
    )


def _trace_field(
    model: nn.Module, layer: str, input_shape: tuple[int, ...], forward_args: ForwardArgs
) -> Field | None:
    try:
        report = trace_shapes(model, input_shape, forward_args=forward_args)
    except ConvlensError:
        return None
    rows = [r for r in report.rows if r.name == layer] or [
        r for r in report.rows if r.name.startswith(layer + ".")
    ]
    if not rows:
        return None
    row = rows[-1]
    nd = len(input_shape) - 2
    parts = (row.receptive_field, row.jump, row.start)
    if any(p is None for p in parts):
        return None
    rf, jump, begin = ((p,) * nd if isinstance(p, int) else tuple(p) for p in parts)  # type: ignore[arg-type]
    return rf, jump, begin


def peak_boxes(where: Tensor, field: tuple[Shape, Shape, Shape], size: tuple[int, ...]) -> Tensor:
    """The input window each position sees, ``(..., 2 * nd)``: starts then ends, clipped to ``size``."""
    rf, jump, begin = (torch.tensor(p, device=where.device) for p in field)
    lo = begin + where * jump
    bounds = torch.tensor(size, device=where.device)
    return torch.cat([lo.clamp(min=0), (lo + rf).clamp(max=bounds)], dim=-1)
