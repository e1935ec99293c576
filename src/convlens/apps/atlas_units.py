"""What a unit's page shows of the data: its top examples, their windows, labels, filters and Grad-CAMs.

:func:`~convlens.apps.atlas.build_atlas` ranks a layer's units over the data (every rank, sharded);
rank 0 then writes, for each unit, its top examples framed by the window their peak sees, those
windows cut out, the first conv layer's filter weights, and for the output units Grad-CAM overlays
(:func:`write_examples`), and returns what the unit's ``unit.json`` will hold once its picture is
drawn. :func:`labels_of` reads the examples' labels where the data has them (a Dataset of ``(x, y)``
items, an ``ImageFolder``'s ``targets``, a DataLoader that does not shuffle), so that a unit's page can say
which classes excite it.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.zeros(3, 1, 4, 4), torch.tensor([2, 0, 1]))
    >>> label, names = labels_of(data)
    >>> label(0), names
    (2, None)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, SequentialSampler, Subset

from convlens.apps.atlas_draw import PANEL, as_rgb, framed, scaled
from convlens.apps.atlas_site import cache_key
from convlens.attribution.cam import GradCAM
from convlens.core.inputs import ForwardArgs
from convlens.core.layers import unwrap
from convlens.core.values import model_dtype_device
from convlens.featureviz.neurons import TopExamplesResult
from convlens.render import overlay

__all__ = ["labels_of", "write_examples"]

#: An example's label by its index in the data (None where it has none).
LabelOf = Callable[[int], int | None]


def labels_of(data: Any) -> tuple[LabelOf | None, list[str] | None]:
    """How to read an example's label by its index, and the labels' names; (None, None) without labels.

    A Dataset's ``targets`` (``ImageFolder``, :class:`~convlens.models.images.PictureFolder`) or the
    second element of its items, through a ``Subset``'s indices to its dataset's names; a DataLoader's
    dataset when the loader reads it in order (indices are positions in the order batches come: with
    shuffling, or a sampler or batch sampler of its own, they are not the dataset's). An iterable of
    batches has none. A label is a nonnegative integer (a bool, a negative "unlabelled" mark, a float,
    a string or a one-hot vector is no class). Names: the dataset's ``classes`` when it has them.
    """
    dataset: Any = data
    if isinstance(data, DataLoader):
        batches = data.batch_sampler
        in_order = isinstance(data.sampler, SequentialSampler) and (
            batches is None
            or (type(batches) is BatchSampler and isinstance(batches.sampler, SequentialSampler))
        )
        dataset = data.dataset if in_order else None
    if not isinstance(dataset, Dataset) or isinstance(dataset, IterableDataset):
        return None, None
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    names = getattr(base, "classes", None)
    named = [str(n) for n in names] if isinstance(names, Sequence) and not isinstance(names, str) else None
    targets = getattr(dataset, "targets", None)

    def label(index: int) -> int | None:
        value = targets[index] if isinstance(targets, Sequence | Tensor) else _second(dataset[index])
        if isinstance(value, Tensor):
            if value.numel() != 1 or value.is_floating_point() or value.dtype == torch.bool:
                return None
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            return None
        return int(value)

    return label, named


def _second(item: Any) -> Any:
    return item[1] if isinstance(item, tuple | list) and len(item) > 1 else None


def write_examples(
    model: nn.Module,
    layer: str,
    units: Sequence[int],
    best: TopExamplesResult,
    *,
    only: Collection[int],
    cache: Path,
    fingerprint: str,
    preset: str | None,
    weights: np.ndarray | None,
    cam_layer: str | None,
    forward_args: Callable[[list[int]], ForwardArgs],
    label: LabelOf | None,
) -> dict[int, dict[str, Any]]:
    """Write each unit's examples into its cache folder; return each unit's ``unit.json`` but its picture's value.

    Args:
        model: The model (Grad-CAM of the output units).
        layer: The layer's name as given.
        units: The units of ``best`` (its rows, in order).
        best: Their top examples, with inputs.
        only: The units to write (the others' are in the cache already).
        cache: ``out/_cache``.
        fingerprint: The build's (see :func:`~convlens.apps.atlas_site.cache_key`).
        preset: How the inputs are shown.
        weights: The first conv layer's filter pictures (``(units, h, w, 3)`` in [0, 1]), or None.
        cam_layer: The grid layer for the output units' Grad-CAMs; None: not an output layer.
        forward_args: The forward arguments of the examples at the given indices.
        label: An example's label by index, or None.
    """
    metas: dict[int, dict[str, Any]] = {}
    for j, unit in enumerate(units):
        if unit not in only:
            continue
        folder = cache / cache_key(fingerprint, layer, unit)
        folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"layer": layer, "unit": unit, "examples": []}
        examples = _unit_examples(best, j)
        for i, (index, value, x, box) in enumerate(examples):
            picture = as_rgb(x, preset)
            framed(picture, box).save(folder / f"example{i}.png")
            entry: dict[str, Any] = {"index": index, "value": value, "box": box}
            entry["label"] = None if label is None else label(index)
            if box is not None:
                top, left, bottom, right = box
                scaled(picture[top:bottom, left:right], PANEL).save(folder / f"crop{i}.png")
            meta["examples"].append(entry)
        if weights is not None:
            scaled((weights[unit] * 255).round().astype(np.uint8), PANEL).save(folder / "filter.png")
            meta["filter"] = True
        if cam_layer is not None and examples:
            xs = torch.stack([x for _, _, x, _ in examples])
            dtype, device = model_dtype_device(unwrap(model))
            own = forward_args([index for index, _, _, _ in examples])
            maps = GradCAM(model, cam_layer)(xs.to(device, dtype), target=unit, forward_args=own).maps
            for i, (_, _, x, _) in enumerate(examples):
                blended = overlay(as_rgb(x, preset), maps[i].detach().cpu(), alpha=0.45)
                scaled(blended, PANEL).save(folder / f"cam{i}.png")
            meta["cam"] = cam_layer
        metas[unit] = meta
    return metas


def _unit_examples(best: TopExamplesResult, j: int) -> list[tuple[int, float, Tensor, list[int] | None]]:
    """Unit ``j``'s examples: index, activation, input and box (2-d boxes only)."""
    if best.inputs is None:
        return []
    boxes = None if best.boxes is None or best.boxes.shape[-1] != 4 else best.boxes[j].tolist()
    return [
        (int(i), float(v), best.inputs[j, n].detach().float().cpu(), None if boxes is None else boxes[n])
        for n, (i, v) in enumerate(zip(best.indices[j].tolist(), best.activations[j].tolist(), strict=True))
    ]
