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

from collections.abc import Iterable, Iterator, Sequence
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
        activations: ``(k,)`` the neuron's activation for each example.
        inputs: ``(k, *sample shape)`` the examples themselves.
        layer: The layer's qualified name.
        neuron: The neuron (unit or channel) ranked.
    """

    indices: Tensor
    activations: Tensor
    inputs: Tensor
    layer: str
    neuron: int


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
        self, data: Dataset[Any] | DataLoader[Any], neuron: int | np.integer[Any] | Tensor, k: int = 9
    ) -> TopExamplesResult:
        """The ``k`` examples of ``data`` that excite ``neuron`` most, highest first.

        The model runs in eval mode without autograd and stops right after the
        layer (see :meth:`convlens.LayerTap.run`).

        Args:
            data: A Dataset, read in order in batches of 64, or a DataLoader
                (its batches, in the order it yields them: indices are positions
                in that order, dataset indices when it does not shuffle). Items
                are ``x`` or ``(x, y, ...)``; only ``x`` is used.
            neuron: The unit (Linear layer) or channel (conv layer, ranked by
                its mean over positions).
            k: How many; more than the data holds gives all of it.

        Returns:
            Indices, activations and inputs of the top ``min(k, len(data))`` examples.

        Raises:
            InvalidArgumentError: ``neuron`` out of range (the message names the
                layer and its size), ``k < 1``, or empty data.
            InvalidTypeError: ``data`` neither a Dataset nor a DataLoader, or
                items whose ``x`` is not a tensor.

        Example:
            >>> import torch
            >>> import torch.nn as nn
            >>> from torch.utils.data import TensorDataset
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
            >>> _ = nn.init.ones_(net[0].weight)
            >>> data = TensorDataset(torch.tensor([1.0, 4.0, 2.0]).view(3, 1, 1, 1), torch.zeros(3))
            >>> best = NeuronVisualizer(net, "1").top_examples(data, neuron=0, k=5)  # k clipped to 3
            >>> best.indices.tolist(), best.activations.tolist()
            ([1, 2, 0], [4.0, 2.0, 1.0])
        """
        neuron = check_int("neuron", as_int(neuron), 0)
        k = check_int("k", k, 1)
        if isinstance(data, DataLoader):
            loader: DataLoader[Any] = data
        elif isinstance(data, Dataset):
            # Its own generator: iterating a DataLoader otherwise draws from the global RNG.
            loader = DataLoader(data, batch_size=64, shuffle=False, generator=torch.Generator())
        else:
            raise InvalidTypeError(f"data must be a torch Dataset or DataLoader; got {type(data).__name__}.")
        objective = channel(self.layer, neuron)
        tap = LayerTap(self.model, [self.layer])
        dtype, device = model_dtype_device(tap._module)
        best: tuple[Tensor, Tensor, Tensor] | None = None
        seen = 0
        for batch in _inputs(loader):
            x = batch.to(device, dtype) if batch.is_floating_point() else batch.to(device)
            if best is None:  # before any work: is the neuron in range? (the tap's own probe)
                shapes = probe_shapes(
                    tap._module,
                    {self.layer: self.ref},
                    tuple(x.shape),
                    dtype=x.dtype,
                    device=device,
                    needs_output=False,
                    probe=tap._prober((x,)),
                )
                objective.validate(shapes)
            activations = objective(tap.run(x), x)
            indices = torch.arange(seen, seen + len(x), device=device)
            seen += len(x)
            if best is not None:
                activations = torch.cat([best[1], activations])
                indices = torch.cat([best[0], indices])
                x = torch.cat([best[2], x])
            # Stable: among equal activations the earlier position (already first) stays first.
            order = torch.sort(activations, descending=True, stable=True).indices[:k]
            best = (indices[order], activations[order], x[order])
        if best is None:
            raise InvalidArgumentError("data is empty: there are no examples to rank.")
        return TopExamplesResult(
            indices=best[0], activations=best[1], inputs=best[2], layer=self.layer, neuron=neuron
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
