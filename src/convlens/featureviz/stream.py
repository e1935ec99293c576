"""A layer's activations over a dataset, batch after batch: what a dataset-level pass reads.

One home for what every pass over the data does before and around the forward: the data as this
rank's shard, each batch moved to the model's device and dtype, the forward arguments' rows
following the batch, the checks on the first batch (the layer runs, its output is channels first),
the layer's output picked, reshaped and dequantized, and the receptive field of its grid. A pass
either stops right after the layer without autograd (:meth:`LayerStream.batches`) or, for a score's
gradient, runs the whole model with the layer's output as an autograd leaf
(``batches(gradient=True)``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> stream = LayerStream(net, "1", TensorDataset(torch.rand(5, 1, 6, 6)), who="example", batch_size=2)
    >>> [tuple(b.activations.shape) for b in stream.batches()]
    [(2, 2, 4, 4), (2, 2, 4, 4), (1, 2, 4, 4)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from convlens.core.checks import check_int
from convlens.core.distributed import BATCH_SIZE, Shard, data_length, shard
from convlens.core.inputs import ForwardArgs, ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import LayerSpec, resolve_layer
from convlens.core.layouts import Layout, ReshapeSpec, as_layout
from convlens.core.leaf import forward_with_leaf
from convlens.core.probe import Probe
from convlens.core.recorder import grad_mode_restored, preserved_modes
from convlens.core.tap import LayerTap
from convlens.core.values import model_dtype_device
from convlens.errors import InvalidArgumentError, ShapeError
from convlens.featureviz.forward import check_channels_first, layer_shapes
from convlens.featureviz.topk import Field, receptive_field

__all__ = ["Batch", "LayerReader", "LayerStream"]


@dataclass(frozen=True, slots=True)
class LayerReader:
    """Runs the model up to one layer (no autograd, stopped after it) and reads its output."""

    tap: LayerTap
    layout: Layout
    dtype: torch.dtype
    device: torch.device

    def read(self, x: Tensor, forward_args: ForwardArgs) -> Tensor:
        """The layer's output for ``x``: picked, reshaped to ``(N, C, *grid)``, dequantized."""
        x = x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)
        self.tap.run(x, forward_args=forward_args)
        # The tap holds this one layer, under the name the user gave.
        if self.layout.part in (None, 0):
            acts = next(iter(self.tap.activations.values()))
        else:
            acts = self.layout.pick(next(iter(self.tap.outputs.values())))
        return self.layout.apply(acts.dequantize() if acts.is_quantized else acts)


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of a pass: its inputs, positions in the data, labels and the layer's activations.

    Attributes:
        x: ``(B, *sample)`` on the model's device.
        positions: ``(B,)`` int64 positions of the examples in the data.
        labels: The batch's ``y`` when its items are ``(x, y, ...)``, else None.
        activations: ``(B, C, *grid)`` the layer's output (picked, reshaped, dequantized); with
            ``gradient=True`` it requires grad and ``output`` depends on it.
        output: The model's output (None when the forward stopped after the layer).
        forward_args: This batch's forward arguments (their rows for it).
        leaf: With ``gradient=True``, the layer's own output as the autograd leaf the rest of the
            network read (``activations`` is it reshaped): take gradients with respect to it.
    """

    x: Tensor
    positions: Tensor
    labels: Any
    activations: Tensor
    output: Any
    forward_args: ForwardArgs
    leaf: Tensor | None = None


class LayerStream:
    """Passes over ``data`` reading ``layer`` of ``model``; see the module docstring.

    Raises:
        LayerNotFoundError: No such layer.
        InvalidTypeError: ``data`` is not a Dataset, DataLoader or iterable of batches.
        UnsupportedModelError: A model on the meta device (or quantized, with ``gradients``).
        DeviceMismatchError: ``forward_args`` on another device than the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layer: LayerSpec,
        data: Any,
        *,
        who: str,
        reshape: ReshapeSpec = None,
        batch_size: int = BATCH_SIZE,
        num_workers: int = 0,
        forward_args: ForwardArgsLike = None,
        gradients: bool = False,
    ) -> None:
        self.who = who
        self.ref = resolve_layer(model, layer)
        self.layout: Layout = as_layout(reshape)
        self.extra = as_forward_args(forward_args)
        self.tap = LayerTap(model, [layer])
        check_runnable(self.tap.module, who=who, gradients=gradients, forward_args=self.extra)
        self.shard: Shard = shard(
            data,
            batch_size=check_int("batch_size", batch_size, 1),
            num_workers=check_int("num_workers", num_workers, 0),
        )
        self.examples = data_length(data)
        self.dtype, self.device = model_dtype_device(self.tap.module)
        self.reader = LayerReader(self.tap, self.layout, self.dtype, self.device)
        self.sample: Tensor | None = None  # the first example, once a pass has started
        self.sample_args = self.extra  # the forward arguments of the sample alone
        self.probe: Probe | None = None
        #: Called on the first batch, before any work, once the probe has run: a caller's checks
        #: against the layer's shape (``shape``) and the model's output (``probe.output_shape``).
        self.checks: list[Callable[[LayerStream], None]] = []
        self.shape: tuple[int, ...] = ()  # the layer's output shape on the first batch (before reshape)
        self.first_labels: Any = None  # the first batch's y (None when its items are x alone)

    @property
    def layer(self) -> str:
        """The layer's name as the user gave it."""
        return self.ref.key

    def batches(self, *, gradient: bool = False, progress: bool = False, desc: str = "") -> Iterator[Batch]:
        """One pass; ``gradient``: the whole forward, the activation an autograd leaf of the output."""
        tap = self.tap
        chunks = self.shard.chunks(progress=progress, desc=desc or self.who)
        with tap.steady():
            for chunk in chunks:
                x, labels = chunk.split()
                if x.dim() < 2:
                    raise ShapeError(f"a batch of inputs must be (N, ...); got shape {tuple(x.shape)}.")
                if x.is_meta:
                    check_runnable(tap.module, x, who=self.who, forward_args=self.extra)
                x = x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)
                if self.sample is None:
                    self.first_labels = labels
                    self._first(x, chunk.positions)
                if not len(x):
                    continue
                rows = (
                    self.extra
                    if self.examples is None
                    else self.extra.take(chunk.positions, batch=self.examples)
                )
                output = None
                if gradient:
                    with preserved_modes(tap.module, training=False), grad_mode_restored():
                        probe = self.probe
                        leaf, output = forward_with_leaf(
                            tap.module, self.ref, self.layout, x, rows,
                            rewritten=None if probe is None else probe.rewritten,
                        )  # fmt: skip
                        acts = self.layout.apply(leaf)
                        yield Batch(x, chunk.positions, labels, acts, output, rows, leaf)
                    continue
                yield Batch(x, chunk.positions, labels, self.reader.read(x, rows), output, rows)
        if self.sample is None:
            raise InvalidArgumentError("data is empty: there are no examples to read.")

    def field(self) -> Field | None:
        """The layer's receptive field on one input of the sample's shape (None after a reshape)."""
        if self.sample is None or self.layout != Layout():
            return None
        call = self.ref.name if self.ref.call is None else f"{self.ref.name}#{self.ref.call}"
        return receptive_field(self.tap.module, call, (1, *self.sample.shape), self.sample_args)

    def _first(self, x: Tensor, positions: Tensor) -> None:
        """Before any work: the layer runs on this input and its output is channels first."""
        first = x if len(x) else torch.zeros((1, *x.shape[1:]), dtype=x.dtype, device=self.device)
        at = positions if len(x) else positions.new_zeros(1)
        rows = self.extra if self.examples is None else self.extra.take(at, batch=self.examples)
        self.probe = self.tap.probe(first, *rows.args, **rows.kwargs)
        shapes = layer_shapes(
            self.tap.module, {self.ref.key: self.ref}, tuple(first.shape), dtype=x.dtype, device=self.device,
            needs_output=False, probe=self.probe, forward_args=rows, layouts={self.ref.key: self.layout},
            example=first,
        )  # fmt: skip
        check_channels_first(self.who, self.ref.key, self.ref.module, shapes[self.ref.key], self.layout)
        self.shape = shapes[self.ref.key]
        self.sample = first[0]
        self.sample_args = rows if self.examples is None else self.extra.take(at[:1], batch=self.examples)
        for check in self.checks:
            check(self)
