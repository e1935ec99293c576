"""What a unit likes: the image it likes best, and the dataset images that excite it most.

The lecture's "find an image maximizing the output of neuron ``j``",
``x* = argmax_x a_j`` (with an L1 penalty for "no ink",
``x* = argmax_x a_j - l1 * mean |x|``), one image per unit in one batched
optimization; and its data-driven counterpart, the top-k dataset examples.

The vocabulary (docs/architecture.md): a *unit* is what a layer has one of per
output feature: a feature of a Linear layer, its activation the feature's
value, or a *channel* of a conv layer (one feature map, the lecture's filter
``k``), its activation the channel's mean over positions, ``a^k / (H * W)``;
both :meth:`NeuronVisualizer.maximize` and
:meth:`NeuronVisualizer.top_examples` use that same activation. A *neuron* is
one unit at one position (:func:`convlens.objectives.neuron`); for a Linear
layer the two coincide. The old keywords ``maximize(neurons=...)`` and
``top_examples(neuron=...)`` still work for this release, with a
``DeprecationWarning``.

Example:
    >>> from convlens.featureviz.neurons import NeuronVisualizer
    >>> from convlens.models.zoo import digits_cnn, digits_dataset
    >>> nv = NeuronVisualizer(digits_cnn(), "classifier.0")
    >>> nv.maximize(range(4), steps=5).image.shape
    torch.Size([4, 1, 28, 28])
    >>> best = nv.top_examples(digits_dataset("test"), unit=3, k=9)
    >>> best.indices.shape, best.inputs.shape
    (torch.Size([9]), torch.Size([9, 1, 28, 28]))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from convlens.core import display
from convlens.core.checks import as_int, check_bool, check_indices, check_int, check_real, check_shape
from convlens.core.deprecation import UNSET, Unset, renamed, renamed_attribute
from convlens.core.inputs import ForwardArgsLike, as_forward_args, check_runnable, guess_input_shape
from convlens.core.layers import LayerSpec, resolve_layer, unwrap
from convlens.core.layouts import ReshapeSpec, as_layout
from convlens.core.probe import require_hooks
from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.maximize import (
    ActivationMaximizer,
    MaximizationResult,
    Normalize,
    Param,
    TransformName,
)
from convlens.featureviz.objectives import Objective, channel, reshaped_shape
from convlens.featureviz.objectives import l1 as l1_penalty
from convlens.featureviz.quality import Transfer
from convlens.featureviz.stream import LayerStream
from convlens.featureviz.topk import (
    RunningTop,
    peak_boxes,
    unravel,
)

__all__ = ["NeuronVisualizer", "TopExamplesResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopExamplesResult:
    """The dataset examples that excite a unit most, highest first; tensors on the model's device.

    Attributes:
        indices: ``(k,)`` int64 positions of the examples in the data (in the
            order a DataLoader yields them), highest activation first; ties
            go to the lower position.
            For several units, ``(units, k)``: row ``u`` is unit ``unit[u]``.
        activations: ``(k,)`` (or ``(units, k)``) the unit's activation for each
            example, in the layer's dtype.
        inputs: ``(k, *sample shape)`` (or ``(units, k, *sample shape)``) the
            examples themselves; None with ``keep_inputs=False``.
        layer: The layer's qualified name.
        unit: The unit (a channel of a conv layer) ranked, or the list of them.
        positions: For a conv layer, ``(k, nd)`` (or ``(units, k, nd)``) int64
            where in the layer's output grid the channel peaked for each
            example (row, column for a 2-d layer; the first maximum in raster
            order); None for a layer without spatial dimensions.
        boxes: ``(k, 2 * nd)`` (or ``(units, k, 2 * nd)``) int64 the input
            window that position sees, its receptive field from
            :func:`~convlens.trace_shapes` (start + position * jump, size
            receptive field), clipped to the input: ``(top, left, bottom,
            right)`` for a 2-d layer, ends exclusive. None without
            ``positions`` or where the field is undefined (after a reshape).
    """

    indices: Tensor
    activations: Tensor
    inputs: Tensor | None
    layer: str
    unit: int | list[int]
    positions: Tensor | None = None
    boxes: Tensor | None = None

    @property
    def neuron(self) -> int | list[int]:
        """The old name of :attr:`unit` (same value), kept for this release with a DeprecationWarning."""
        renamed_attribute("TopExamplesResult", "neuron", "unit")
        return self.unit

    def crops(self) -> list[Tensor]:
        """The patch of each kept input inside its box: the part of the picture that excited the channel.

        Returns:
            One ``(C, h, w)`` tensor per example, in the order of
            ``indices.flatten()`` (sizes differ where a box meets the border).

        Raises:
            InvalidArgumentError: No inputs were kept (``keep_inputs=False``),
                or no boxes (a layer without spatial dimensions or receptive field).

        Example:
            >>> import torch.nn as nn
            >>> from torch.utils.data import TensorDataset
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            >>> best = NeuronVisualizer(net, "2").top_examples(TensorDataset(torch.randn(5, 1, 8, 8)), k=2)
            >>> best.boxes.shape, [tuple(c.shape[1:]) for c in best.crops()][0][0] <= 4
            (torch.Size([2, 2, 4]), True)
        """
        if self.inputs is None:
            raise InvalidArgumentError("no inputs were kept: call top_examples with keep_inputs=True.")
        if self.boxes is None:
            raise InvalidArgumentError(
                f"layer {self.layer!r} has no receptive-field boxes (no spatial grid, or one after a reshape)."
            )
        nd = self.boxes.shape[-1] // 2
        inputs = self.inputs.reshape(-1, *self.inputs.shape[self.indices.dim() :])
        out = []
        for picture, box in zip(inputs, self.boxes.reshape(-1, 2 * nd).tolist(), strict=True):
            window = tuple(slice(a, b) for a, b in zip(box[:nd], box[nd:], strict=True))
            out.append(picture[(..., *window)])
        return out

    def _repr_html_(self) -> str:
        """The examples as a grid, for Jupyter: one row per unit, its ``k`` examples highest first.

        Under each example its index in the data and its activation; with
        ``boxes``, the receptive field of the peak is outlined in yellow.
        Pictures are shown as they are when inside [0, 1], else each
        stretched to [0, 1]. At most ``MAX_ITEMS`` (32) pictures are drawn
        (whole rows), a line says how many were left out. Without inputs
        (``keep_inputs=False``), a table of the indices and activations (at
        most 64 rows).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
            >>> data = TensorDataset(torch.rand(6, 1, 8, 8))
            >>> best = NeuronVisualizer(net, "1").top_examples(data, k=3)
            >>> best._repr_html_().count("<img")
            6
            >>> NeuronVisualizer(net, "1").top_examples(data, unit=0, k=3, keep_inputs=False)._repr_html_().count("<img")
            0
        """
        single = self.indices.dim() == 1
        units = [self.unit] if isinstance(self.unit, int) else list(self.unit)
        indices = (self.indices[None] if single else self.indices).tolist()
        values = (self.activations[None] if single else self.activations).double().tolist()
        kind = "channel" if self.positions is not None else "unit"
        k = len(indices[0]) if indices else 0
        title = display.heading(
            "TopExamplesResult",
            f"layer {self.layer!r}: the top {k} examples of {len(units)} {kind}{'s' if len(units) != 1 else ''}",
        )
        header = [kind, *(f"{j + 1}" for j in range(k))]
        if self.inputs is None:
            shown = display.cap(len(units), display.MAX_ROWS)
            rows = [
                [
                    str(units[u]),
                    *(
                        display.Html(f"#{i}<br>{display.number(v)}")
                        for i, v in zip(indices[u], values[u], strict=True)
                    ),
                ]
                for u in range(shown)
            ]
            body = display.table(header, rows, align="l" + "r" * k, caption="index in the data, activation")
            return display.block(title, body, display.left_out(shown, len(units), f"{kind}s"))
        columns = display.cap(k)
        shown = display.cap(len(units), max(1, display.MAX_ITEMS // max(columns, 1)))
        inputs = self.inputs[None] if single else self.inputs
        boxes = None if self.boxes is None else (self.boxes[None] if single else self.boxes)
        rows = []
        for u in range(shown):
            row: list[str] = [str(units[u])]
            for j in range(columns):
                sample = inputs[u, j]
                box = None if boxes is None else display.box_in_plane(boxes[u, j].tolist(), sample.shape[1:])
                index, value = indices[u][j], display.number(values[u][j])
                tag = display.image_tag(display.picture(sample), box=box, alt=f"example {index}")
                row.append(display.cell(tag, f"#{index}", value))
            rows.append(row)
        outlined = "; the peak's receptive field in yellow" if boxes is not None else ""
        body = display.table(header[: columns + 1], rows, caption=f"index in the data, activation{outlined}")
        return display.block(
            title,
            body,
            display.left_out(shown, len(units), f"{kind}s"),
            display.left_out(columns, k, "examples of each row"),
        )


class NeuronVisualizer:
    """Visualize the units of one layer: maximizing images and top dataset examples.

    Args:
        model: Any ``nn.Module``; left as found.
        layer: The layer, by qualified name (``"classifier.4"``,
            ``"layer1.0.relu#1"``) or module.
        input_shape: The model input for one image, batch of 1 first, e.g.
            ``(1, 3, 224, 224)``; needed by :meth:`maximize` only. None: a
            model that declares an ``input_shape`` attribute gets it
            (convlens's own do: the digits CNN says ``(1, 1, 28, 28)``), and a
            model whose first convolution takes 3 channels gets ImageNet's
            ``(1, 3, 224, 224)``; any other model must say.
        reshape: How the layer's output becomes ``(N, C, *spatial)`` before its units are read,
            the same ``reshape=`` as the CAM family: ``"channels_last"`` for a Swin or ConvNeXt
            stage's ``(N, H, W, C)``, ``"vit"`` for tokens, a callable, or
            :class:`~convlens.Layout` ``(part=...)`` for a layer that returns several tensors
            (one per branch): the first tensor is read unless ``reshape=Layout(part=...)`` says
            otherwise. None: the output already is ``(N, C, ...)``; one that looks channels last
            is refused before any work rather than read at the wrong dimension.

    Raises:
        LayerNotFoundError: No such layer (the message names the nearest).
        InvalidArgumentError: An ``input_shape`` whose batch is not 1, or an unknown ``reshape``.
        InvalidTypeError: A ``reshape`` that is not a name, a callable or a Layout.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 5))
        >>> nv = NeuronVisualizer(net, "3", input_shape=(1, 3, 16, 16))
        >>> res = nv.maximize([0, 4], l1=1e-3, steps=4)
        >>> res.image.shape, res.values.shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2]))
        >>> nv.maximize([5])
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: channel 5 is out of range: layer '3' has 5 units (0 to 4).

        A stage that computes along the last dimension (Swin, ConvNeXt) is read with ``reshape=``:

        >>> from torch.utils.data import TensorDataset
        >>> swin_like = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8))  # (N, H, W, 3) to (N, H, W, 8)
        >>> data = TensorDataset(torch.randn(5, 6, 6, 3))
        >>> NeuronVisualizer(swin_like, "1").top_examples(data, None, 2)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: NeuronVisualizer.top_examples reads channels at dimension 1 ... Pass reshape='channels_last' ...
        >>> NeuronVisualizer(swin_like, "1", reshape="channels_last").top_examples(data, None, 2).indices.shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec,
        *,
        input_shape: Sequence[int] | None = None,
        reshape: ReshapeSpec = None,
    ) -> None:
        self.model = model
        require_hooks(unwrap(model), "NeuronVisualizer")
        self.ref = resolve_layer(model, layer)
        self.layer = self.ref.key
        self.layout = as_layout(reshape)
        self.input_shape = None if input_shape is None else check_shape("input_shape", input_shape)
        if self.input_shape is not None and self.input_shape[0] != 1:
            raise InvalidArgumentError(
                f"input_shape is the input for one image, batch of 1 first, like (1, 3, 224, 224); "
                f"got {self.input_shape}."
            )

    def __repr__(self) -> str:
        return f"NeuronVisualizer({type(self.model).__name__}, layer={self.layer!r})"

    def maximize(
        self,
        units: int | Iterable[int] | None = None,
        *,
        l1: float = 0.0,
        steps: int = 256,
        seed: int = 0,
        lr: float | None = None,
        normalize: Normalize | None = None,
        param: Param | None = None,
        value_range: tuple[float, float] | None = None,
        transforms: bool | TransformName | None = None,
        forward_args: ForwardArgsLike = None,
        reference: float | Sequence[float] | Tensor | None = None,
        seeds: int = 1,
        transfer: Transfer | None = None,
        neurons: int | Iterable[int] | Unset = UNSET,
    ) -> MaximizationResult:
        """One image per unit, ``x*_j = argmax_x a_j(x) - l1 * mean |x|``, optimized as one batch.

        Image ``j`` optimizes unit ``units[j]`` only (each sample has its
        own objective; the loss is their sum), so the batch costs one
        forward and backward per step.

        Args:
            units: A unit, or several (``range(16)``): features of a Linear
                layer or channels of a conv layer.
            l1: Weight of the L1 penalty, the mean absolute pixel value (the
                lecture's "no ink"); 0 for none.
            steps: Adam steps.
            seed: Seeds the initial images and the random transforms.
            lr: Adam's learning rate (None: the parameterization's default).
            normalize: Optimize pictures in [0, 1] that the model sees as
                ``(picture - mean) / std`` (``"imagenet"``, ``"lecture"`` or
                ``(mean, std)``), with the recommended recipe by default; the
                result's ``picture`` holds them.
            param: ``"pixel"``, ``"fft"`` or ``"maco"``; None: the default of
                the space (see :class:`~convlens.featureviz.maximize.ActivationMaximizer`).
            value_range: ``(lo, hi)`` to keep pixel values in range, e.g.
                ``(0, 1)`` for the digits; None for unbounded.
            transforms: The random views at each step (``"standard"``,
                ``"maco"``, True for the recommended, False); None: the default of the space.
            forward_args: The model's other forward arguments after the input (a tuple, a dict or
                :class:`convlens.ForwardArgs`), passed on every forward, the probe's included; the
                batch is one image per unit, and a tensor among them is passed as it is.
            reference: Each unit's top natural activation (a number, or one per unit: e.g.
                ``top_examples(...).activations[:, 0]``), for ``quality.relative``.
            seeds: Optimize from this many seeds (``seed``, ``seed + 1``, ...) for ``quality.stability``;
                the pictures returned are the first seed's.
            transfer: A second network and the class of each picture, for ``quality.transfer``.
            neurons: The old name of ``units`` (a DeprecationWarning; same result).

        Returns:
            A :class:`~convlens.featureviz.maximize.MaximizationResult` whose ``image``
            holds one image per unit, ``values`` each image's final
            objective (``a_j - l1 * mean |x_j|``), and ``history`` the batch
            mean of the objective per step.

        Raises:
            InvalidArgumentError: A unit out of range (the message names the
                layer and its size, after ``reshape``), no units, a negative ``l1``, no
                ``input_shape`` for a model convlens cannot guess it for, or a layer whose
                output looks channels last without ``reshape=``.
            InvalidTypeError: No ``units`` given.
            UnsupportedModelError: A quantized model (no gradients: use the float model) or a
                model on the ``meta`` device (load its weights first).
            DeviceMismatchError: A tensor of ``forward_args`` on another device than the model.

        Example:
            >>> import torch.nn as nn
            >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
            >>> res = NeuronVisualizer(net, "3", input_shape=(1, 1, 8, 8)).maximize(range(3), l1=0.1, steps=5)
            >>> res.image.shape, res.values.shape, res.history.shape
            (torch.Size([3, 1, 8, 8]), torch.Size([3]), torch.Size([5]))
        """
        given = renamed("neurons", neurons, "units", units, default=None)
        if given is None:
            raise InvalidTypeError(
                "maximize needs the units to draw: nv.maximize(units) with a unit index or several, "
                "e.g. nv.maximize(range(16))."
            )
        chosen = _unit_list(given)
        weight = check_real("l1", l1, positive=False)
        extra = as_forward_args(forward_args)
        check_runnable(
            unwrap(self.model), who="NeuronVisualizer.maximize", gradients=True, forward_args=extra
        )
        objective: Objective = channel(self.layer, chosen, reshape=self.layout)
        if weight:
            objective = objective - weight * l1_penalty()
        shape = self._input_shape()
        am = ActivationMaximizer(
            self.model,
            objective,
            input_shape=(len(chosen), *shape[1:]),
            steps=steps,
            lr=lr,
            seed=seed,
            normalize=normalize,
            param=param,
            value_range=value_range,
            transforms=transforms,
            forward_args=extra,
            reference=reference,
            seeds=seeds,
            transfer=transfer,
        )
        return am.run()

    def top_examples(
        self,
        data: Dataset[Any] | DataLoader[Any] | Iterable[Any],
        unit: int | np.integer[Any] | Tensor | Sequence[int] | None = None,
        k: int = 9,
        *,
        keep_inputs: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool = True,
        forward_args: ForwardArgsLike = None,
        neuron: int | np.integer[Any] | Tensor | Sequence[int] | Unset | None = UNSET,
    ) -> TopExamplesResult:
        """The ``k`` examples of ``data`` that excite each unit most, highest first, in one pass.

        The model runs in eval mode without autograd and stops right after the
        layer (see :meth:`convlens.LayerTap.run`). A running top-k per unit is
        kept (``units x k`` values, indices and, with ``keep_inputs``, inputs),
        never every activation: memory does not grow with the data. A unit's
        activation is averaged in float32 at least (a bfloat16 or float16 model's
        values are widened first), and a quantized model's are dequantized: an
        eager-mode quantized model is ranked as it runs.

        Args:
            data: A Dataset (read in order, ``batch_size`` at a time, with
                ``num_workers`` loader workers), a DataLoader as it is, or any
                iterable of batches. Indices are positions in the order the
                batches come (dataset indices when nothing shuffles). Items or
                batches are ``x`` or ``(x, y, ...)``; only ``x`` is used.
            unit: One unit (a feature of a Linear layer, or a channel of a conv
                layer, ranked by its mean over positions), a list of them, or
                None for every unit of the layer.
            k: How many per unit; more than the data holds gives all of it.
            keep_inputs: Keep the top inputs (``(units, k, *sample)``); False
                keeps indices and activations only.
            batch_size: Batch size when ``data`` is a Dataset.
            num_workers: DataLoader workers when ``data`` is a Dataset.
            progress: A progress bar over the batches when tqdm is installed and
                the output is a terminal (silent otherwise); False: never.
            forward_args: The model's other forward arguments after the input (a tuple, a dict or
                :class:`convlens.ForwardArgs`), passed on every forward, the probe's included. A
                tensor among them whose first dimension is the number of examples in the data
                (``len(data)``, or ``len(loader.dataset)``) follows the examples: each batch gets
                its rows at the batch's positions in the data (as the batches come: with a
                shuffling DataLoader, carry per-example values in the batches instead). Every
                other value, and every value for an iterable of batches (its length is unknown),
                is passed unchanged. The receptive-field trace behind ``boxes`` runs on one input
                with the first example's rows.
            neuron: The old name of ``unit`` (a DeprecationWarning; same result).

        Returns:
            For an int ``unit``, ``(k,)`` indices and activations and ``(k, *sample)``
            inputs; for a list or None, ``(units, k)`` and ``(units, k, *sample)``,
            one row per unit in ``result.unit``'s order.

        Raises:
            InvalidArgumentError: A unit out of range (the message names the
                layer and its size, after ``reshape``), ``k < 1``, empty data, or a layer
                whose output looks channels last without ``reshape=``.
            InvalidTypeError: ``data`` is not a Dataset, DataLoader or iterable,
                or items whose ``x`` is not a tensor.
            UnsupportedModelError: A model on the ``meta`` device (load its weights first).
            DeviceMismatchError: A tensor of ``forward_args`` on another device than the model, or
                data on the ``meta`` device (batches on another real device are moved to the model's).

        Example:
            >>> import torch
            >>> import torch.nn as nn
            >>> from torch.utils.data import TensorDataset
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
            >>> with torch.no_grad():
            ...     _ = net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            >>> data = TensorDataset(torch.tensor([1.0, 4.0, -2.0]).view(3, 1, 1, 1), torch.zeros(3))
            >>> best = NeuronVisualizer(net, "1").top_examples(data, unit=0, k=5)  # k clipped to 3
            >>> best.indices.tolist(), best.activations.tolist()
            ([1, 0, 2], [4.0, 1.0, 0.0])
            >>> every = NeuronVisualizer(net, "1").top_examples(data, k=2)  # every channel, one pass
            >>> every.unit, every.indices.tolist(), every.inputs.shape
            ([0, 1], [[1, 0], [2, 0]], torch.Size([2, 2, 1, 1, 1]))

            A mask with one row per example follows the examples, batch after batch:

            >>> class Masked(nn.Module):
            ...     def __init__(self) -> None:
            ...         super().__init__()
            ...         self.out = nn.Identity()
            ...     def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            ...         return self.out(x * mask)
            >>> images, masks = torch.rand(6, 2, 3, 3), torch.ones(6, 1, 1, 1)
            >>> masks[3:] = 0  # the last three examples are masked out
            >>> best = NeuronVisualizer(Masked(), "out").top_examples(
            ...     TensorDataset(images), 0, 3, batch_size=2, forward_args=(masks,))
            >>> sorted(best.indices.tolist())
            [0, 1, 2]
        """
        unit = renamed("neuron", neuron, "unit", unit, default=None)
        single = (
            unit is not None
            and not isinstance(unit, Sequence)
            and not (isinstance(unit, Tensor | np.ndarray) and unit.ndim > 0)
        )
        chosen = (
            None if unit is None else [check_int("unit", as_int(unit), 0)] if single else _unit_list(unit)
        )
        k = check_int("k", k, 1)
        check_bool("keep_inputs", keep_inputs)
        check_bool("progress", progress)
        stream = LayerStream(
            self.model, self.layer, data,
            who="NeuronVisualizer.top_examples", reshape=self.layout, batch_size=batch_size,
            num_workers=num_workers, forward_args=forward_args,
        )  # fmt: skip
        layout = self.layout
        ordered = stream.shard.ordered
        top: RunningTop | None = None

        def start(read: LayerStream) -> None:
            """Before any work: each unit in range (named with the layer's size after reshape)."""
            nonlocal top
            shapes = {self.layer: read.shape}
            for unit in chosen or ():
                channel(self.layer, unit, reshape=layout).validate(shapes)
            view = reshaped_shape(read.shape, layout)
            if view is not None:  # None: a reshape that reads values, known after the first batch
                top = RunningTop.start(chosen, k, keep_inputs=keep_inputs, shape=view, ordered=ordered)

        stream.checks.append(start)
        for batch in stream.batches(progress=progress, desc="top_examples"):
            acts = batch.activations
            if top is None:
                top = RunningTop.start(
                    chosen, k, keep_inputs=keep_inputs, shape=tuple(acts.shape), ordered=ordered
                )
            wide = torch.promote_types(acts.dtype, torch.float32)  # a half-precision unit averaged in float32
            maps = acts.flatten(2) if acts.dim() > 2 else None  # (B, C, positions)
            per_unit = maps.mean(2, dtype=wide) if maps is not None else acts.reshape(len(acts), -1).to(wide)
            top.update(top.pick(per_unit).T, batch.positions.to(acts.device), batch.x, maps)
        sample = stream.sample
        if sample is None:  # pragma: no cover - the stream raises on empty data
            raise InvalidArgumentError("data is empty: there are no examples to rank.")
        if top is None:
            top = RunningTop.start(chosen, k, keep_inputs=keep_inputs, shape=(1, 1), ordered=ordered)
        indices, values, inputs, argmax = top.result(stream.shard.merge, sample)
        where_in = None if argmax is None else unravel(argmax, top.spatial)
        field = None if where_in is None else stream.field()  # a reshaped grid has no receptive field here
        boxes = (
            None
            if field is None or where_in is None
            else peak_boxes(where_in, field, tuple(sample.shape[1:]))
        )
        chosen = top.units
        if single:
            return TopExamplesResult(
                indices=indices[0], activations=values[0], inputs=None if inputs is None else inputs[0],
                layer=self.layer, unit=chosen[0],
                positions=None if where_in is None else where_in[0],
                boxes=None if boxes is None else boxes[0],
            )  # fmt: skip
        return TopExamplesResult(
            indices=indices, activations=values, inputs=inputs, layer=self.layer, unit=chosen,
            positions=where_in, boxes=boxes,
        )  # fmt: skip

    def _input_shape(self) -> tuple[int, ...]:
        if self.input_shape is not None:
            return self.input_shape
        return guess_input_shape(unwrap(self.model), who="NeuronVisualizer")


def _unit_list(units: object) -> list[int]:
    """``units`` (an int, an iterable of ints, an integer tensor or array) as a list of ints."""
    if isinstance(units, Iterable) and not isinstance(units, Sequence | Tensor | np.ndarray | str | bytes):
        units = list(units)
    chosen = check_indices("units", units, item="unit")
    return [chosen] if isinstance(chosen, int) else list(chosen)
