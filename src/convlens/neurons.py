"""What a neuron likes: the image it likes best, and the dataset images that excite it most.

The lecture's "find an image maximizing the output of neuron ``j``",
``x* = argmax_x a_j`` (with an L1 penalty for "no ink",
``x* = argmax_x a_j - l1 * mean |x|``), one image per neuron in one batched
optimization; and its data-driven counterpart, the top-k dataset examples.

A neuron of a Linear layer is one unit, its activation the unit's value. A
neuron of a conv layer is one channel (the lecture's filter ``k``), its
activation the channel's mean over positions, ``a^k / (H * W)``; both
:meth:`NeuronVisualizer.maximize` and :meth:`NeuronVisualizer.top_examples`
use that same activation.

Example:
    >>> from convlens.neurons import NeuronVisualizer
    >>> from convlens.zoo import digits_cnn, digits_dataset
    >>> nv = NeuronVisualizer(digits_cnn(), "classifier.0")
    >>> nv.maximize(range(4), steps=5).image.shape
    torch.Size([4, 1, 28, 28])
    >>> best = nv.top_examples(digits_dataset("test"), neuron=3, k=9)
    >>> best.indices.shape, best.inputs.shape
    (torch.Size([9]), torch.Size([9, 1, 28, 28]))
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from convlens._checks import as_int, check_indices, check_int, check_real, check_shape
from convlens._forward import model_dtype_device, probe_shapes
from convlens._probe import require_hooks
from convlens.errors import InvalidArgumentError, InvalidTypeError, ShapeError
from convlens.layers import LayerSpec, resolve_layer, unwrap
from convlens.maximize import ActivationMaximizer, MaximizationResult, Normalize, Param, TransformName
from convlens.objectives import Objective, channel
from convlens.objectives import l1 as l1_penalty
from convlens.tap import LayerTap

__all__ = ["NeuronVisualizer", "TopExamplesResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopExamplesResult:
    """The dataset examples that excite a neuron most, highest first; tensors on the model's device.

    Attributes:
        indices: ``(k,)`` int64 positions of the examples in the data (in the
            order a DataLoader yields them), highest activation first; ties
            go to the lower position.
            For several units, ``(units, k)``: row ``u`` is unit ``neuron[u]``.
        activations: ``(k,)`` (or ``(units, k)``) the unit's activation for each
            example, in the layer's dtype.
        inputs: ``(k, *sample shape)`` (or ``(units, k, *sample shape)``) the
            examples themselves; None with ``keep_inputs=False``.
        layer: The layer's qualified name.
        neuron: The unit (or channel) ranked, or the list of them.
    """

    indices: Tensor
    activations: Tensor
    inputs: Tensor | None
    layer: str
    neuron: int | list[int]


class NeuronVisualizer:
    """Visualize the neurons of one layer: maximizing images and top dataset examples.

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

    Raises:
        LayerNotFoundError: No such layer (the message names the nearest).
        InvalidArgumentError: An ``input_shape`` whose batch is not 1.

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
    """

    def __init__(
        self, model: nn.Module, layer: LayerSpec, *, input_shape: Sequence[int] | None = None
    ) -> None:
        self.model = model
        require_hooks(unwrap(model), "NeuronVisualizer")
        self.ref = resolve_layer(model, layer)
        self.layer = self.ref.key
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
        neurons: int | Iterable[int],
        *,
        l1: float = 0.0,
        steps: int = 256,
        seed: int = 0,
        lr: float | None = None,
        normalize: Normalize | None = None,
        param: Param | None = None,
        value_range: tuple[float, float] | None = None,
        transforms: bool | TransformName | None = None,
    ) -> MaximizationResult:
        """One image per neuron, ``x*_j = argmax_x a_j(x) - l1 * mean |x|``, optimized as one batch.

        Image ``j`` optimizes neuron ``neurons[j]`` only (each sample has its
        own objective; the loss is their sum), so the batch costs one
        forward and backward per step.

        Args:
            neurons: A neuron, or several (``range(16)``): units of a Linear
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
                the space (see :class:`~convlens.maximize.ActivationMaximizer`).
            value_range: ``(lo, hi)`` to keep pixel values in range, e.g.
                ``(0, 1)`` for the digits; None for unbounded.
            transforms: The random views at each step (``"standard"``,
                ``"maco"``, True for the recommended, False); None: the default of the space.

        Returns:
            A :class:`~convlens.maximize.MaximizationResult` whose ``image``
            holds one image per neuron, ``values`` each image's final
            objective (``a_j - l1 * mean |x_j|``), and ``history`` the batch
            mean of the objective per step.

        Raises:
            InvalidArgumentError: A neuron out of range (the message names the
                layer and its size), no neurons, a negative ``l1``, or no
                ``input_shape`` for a model convlens cannot guess it for.

        Example:
            >>> import torch.nn as nn
            >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
            >>> res = NeuronVisualizer(net, "3", input_shape=(1, 1, 8, 8)).maximize(range(3), l1=0.1, steps=5)
            >>> res.image.shape, res.values.shape, res.history.shape
            (torch.Size([3, 1, 8, 8]), torch.Size([3]), torch.Size([5]))
        """
        chosen = _neuron_list(neurons)
        weight = check_real("l1", l1, positive=False)
        objective: Objective = channel(self.layer, chosen)
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
        )
        return am.run()

    def top_examples(
        self,
        data: Dataset[Any] | DataLoader[Any] | Iterable[Any],
        neuron: int | np.integer[Any] | Tensor | Sequence[int] | None = None,
        k: int = 9,
        *,
        keep_inputs: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool = True,
    ) -> TopExamplesResult:
        """The ``k`` examples of ``data`` that excite each unit most, highest first, in one pass.

        The model runs in eval mode without autograd and stops right after the
        layer (see :meth:`convlens.LayerTap.run`). A running top-k per unit is
        kept (``units x k`` values, indices and, with ``keep_inputs``, inputs),
        never every activation: memory does not grow with the data.

        Args:
            data: A Dataset (read in order, ``batch_size`` at a time, with
                ``num_workers`` loader workers), a DataLoader as it is, or any
                iterable of batches. Indices are positions in the order the
                batches come (dataset indices when nothing shuffles). Items or
                batches are ``x`` or ``(x, y, ...)``; only ``x`` is used.
            neuron: One unit (Linear layer) or channel (conv layer, ranked by its
                mean over positions), a list of them, or None for every unit or
                channel of the layer.
            k: How many per unit; more than the data holds gives all of it.
            keep_inputs: Keep the top inputs (``(units, k, *sample)``); False
                keeps indices and activations only.
            batch_size: Batch size when ``data`` is a Dataset.
            num_workers: DataLoader workers when ``data`` is a Dataset.
            progress: A progress bar over the batches when tqdm is installed and
                the output is a terminal (silent otherwise); False: never.

        Returns:
            For an int ``neuron``, ``(k,)`` indices and activations and ``(k, *sample)``
            inputs; for a list or None, ``(units, k)`` and ``(units, k, *sample)``,
            one row per unit in ``result.neuron``'s order.

        Raises:
            InvalidArgumentError: A neuron out of range (the message names the
                layer and its size), ``k < 1``, or empty data.
            InvalidTypeError: ``data`` is not a Dataset, DataLoader or iterable,
                or items whose ``x`` is not a tensor.

        Example:
            >>> import torch
            >>> import torch.nn as nn
            >>> from torch.utils.data import TensorDataset
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
            >>> with torch.no_grad():
            ...     _ = net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            >>> data = TensorDataset(torch.tensor([1.0, 4.0, -2.0]).view(3, 1, 1, 1), torch.zeros(3))
            >>> best = NeuronVisualizer(net, "1").top_examples(data, neuron=0, k=5)  # k clipped to 3
            >>> best.indices.tolist(), best.activations.tolist()
            ([1, 0, 2], [4.0, 1.0, 0.0])
            >>> every = NeuronVisualizer(net, "1").top_examples(data, k=2)  # every channel, one pass
            >>> every.neuron, every.indices.tolist(), every.inputs.shape
            ([0, 1], [[1, 0], [2, 0]], torch.Size([2, 2, 1, 1, 1]))
        """
        single = (
            neuron is not None
            and not isinstance(neuron, Sequence)
            and not (isinstance(neuron, Tensor | np.ndarray) and neuron.ndim > 0)
        )
        chosen = (
            None
            if neuron is None
            else [check_int("neuron", as_int(neuron), 0)]
            if single
            else _neuron_list(neuron)
        )
        k = check_int("k", k, 1)
        loader = _batches(
            data, check_int("batch_size", batch_size, 1), check_int("num_workers", num_workers, 0)
        )
        tap = LayerTap(self.model, [self.layer])
        dtype, device = model_dtype_device(tap._module)
        top: _RunningTop | None = None
        for batch in _inputs(_progress(loader) if progress else loader):
            x = batch.to(device, dtype) if batch.is_floating_point() else batch.to(device)
            if top is None:  # before any work: are the neurons in range? (the tap's own probe)
                shapes = probe_shapes(
                    tap._module,
                    {self.layer: self.ref},
                    tuple(x.shape),
                    dtype=x.dtype,
                    device=device,
                    needs_output=False,
                    probe=tap._prober((x,)),
                )
                size = shapes[self.layer][1] if len(shapes[self.layer]) > 1 else 1
                if chosen is None:
                    chosen = list(range(size))
                else:
                    for unit in chosen:  # each names the layer and its size when out of range
                        channel(self.layer, unit).validate(shapes)
                top = _RunningTop(chosen, k, keep_inputs=keep_inputs)
            acts = tap.run(x)[self.layer]
            per_unit = acts.flatten(2).mean(2) if acts.dim() > 2 else acts.reshape(len(x), -1)
            top.update(per_unit[:, top.units].T, x)
        if top is None:
            raise InvalidArgumentError("data is empty: there are no examples to rank.")
        chosen = top.units
        indices, values, inputs = top.result()
        if single:
            return TopExamplesResult(
                indices=indices[0], activations=values[0], inputs=None if inputs is None else inputs[0],
                layer=self.layer, neuron=chosen[0],
            )  # fmt: skip
        return TopExamplesResult(
            indices=indices, activations=values, inputs=inputs, layer=self.layer, neuron=chosen
        )

    def _input_shape(self) -> tuple[int, ...]:
        if self.input_shape is not None:
            return self.input_shape
        model = unwrap(self.model)
        declared = getattr(model, "input_shape", None)
        if isinstance(declared, tuple) and declared and all(isinstance(v, int) for v in declared):
            return (1, *declared[1:])
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and first.in_channels == 3:
            return (1, 3, 224, 224)
        raise InvalidArgumentError(
            f"NeuronVisualizer cannot guess the input size of {type(model).__name__}; pass "
            "input_shape=(1, C, H, W)."
        )


def _neuron_list(neurons: object) -> list[int]:
    """``neurons`` (an int, an iterable of ints, an integer tensor or array) as a list of ints."""
    if isinstance(neurons, Iterable) and not isinstance(
        neurons, Sequence | Tensor | np.ndarray | str | bytes
    ):
        neurons = list(neurons)
    chosen = check_indices("neurons", neurons, item="neuron")
    return [chosen] if isinstance(chosen, int) else list(chosen)


def _batches(data: object, batch_size: int, num_workers: int) -> Iterable[Any]:
    """``data`` as an iterable of batches: a Dataset through a DataLoader of its own, the rest as given."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        # Its own generator: iterating a DataLoader otherwise draws from the global RNG.
        return DataLoader(
            data, batch_size=batch_size, shuffle=False, num_workers=num_workers, generator=torch.Generator()
        )
    if isinstance(data, Iterable) and not isinstance(data, Tensor | str | bytes):
        return data
    raise InvalidTypeError(
        f"data must be a torch Dataset, a DataLoader or an iterable of batches; got {type(data).__name__}."
    )


def _progress(batches: Iterable[Any]) -> Iterable[Any]:
    """``batches`` under a tqdm bar when tqdm is installed (it hides itself off a terminal)."""
    try:
        tqdm = importlib.import_module("tqdm").tqdm
    except ImportError:
        return batches
    total = len(batches) if isinstance(batches, Sized) else None
    bar: Iterable[Any] = tqdm(
        batches, total=total, desc="top_examples", unit="batch", disable=None, leave=False
    )
    return bar


class _RunningTop:
    """The ``k`` highest values per unit seen so far, their positions and (optionally) their inputs.

    Memory is ``units x k`` whatever the data's size; ties go to the earlier position.
    """

    def __init__(self, units: list[int], k: int, *, keep_inputs: bool) -> None:
        self.units, self.k, self.keep_inputs = units, k, keep_inputs
        self.values: Tensor | None = None  # (units, <= k)
        self.indices: Tensor | None = None
        self.inputs: Tensor | None = None  # (units, <= k, *sample)
        self.seen = 0

    def update(self, values: Tensor, x: Tensor) -> None:
        """Merge one batch: ``values`` is ``(units, B)``, ``x`` the batch's inputs."""
        batch = values.shape[1]
        positions = torch.arange(self.seen, self.seen + batch, device=values.device).expand(
            len(self.units), batch
        )
        self.seen += batch
        old = 0 if self.values is None else self.values.shape[1]
        if self.values is not None and self.indices is not None:
            values = torch.cat([self.values, values], dim=1)
            positions = torch.cat([self.indices, positions], dim=1)
        # Stable: the earlier position (already to the left) stays first among equal values.
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values, self.indices = values.gather(1, order), positions.gather(1, order)
        if self.keep_inputs:
            kept = torch.empty(
                (len(self.units), order.shape[1], *x.shape[1:]), dtype=x.dtype, device=x.device
            )
            from_old = order < old
            rows = torch.arange(len(self.units), device=order.device)[:, None].expand_as(order)
            if self.inputs is not None:
                kept[from_old] = self.inputs[rows[from_old], order[from_old]]
            kept[~from_old] = x[order[~from_old] - old]
            self.inputs = kept

    def result(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Indices, values and inputs, ``(units, min(k, seen))``, highest first."""
        if self.values is None or self.indices is None:
            raise InvalidArgumentError("data is empty: there are no examples to rank.")
        return self.indices, self.values, self.inputs


def _inputs(loader: Iterable[Any]) -> Iterator[Tensor]:
    """The ``x`` of each batch: the batch itself, or the first entry of a tuple/list batch."""
    for batch in loader:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if not isinstance(x, Tensor):
            raise InvalidTypeError(
                f"data items must be a tensor x or a tuple (x, y, ...); a batch gave {type(x).__name__}."
            )
        if x.dim() < 2:
            raise ShapeError(f"a batch of inputs must be (N, ...); got shape {tuple(x.shape)}.")
        yield x
