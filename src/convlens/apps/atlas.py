"""An atlas of your own model: a static, offline site with a page per layer and per unit.

OpenAI Microscope showed every layer and unit of a few fixed models; :func:`build_atlas`
builds the same for any network and data. The site has an index with the
model's shape table (:func:`~convlens.trace_shapes`: shapes, parameters,
MACs, receptive field, jump) and a link per layer; a page per layer with a
grid of its units; and a page per unit with

- its feature visualization (:meth:`~convlens.NeuronVisualizer.maximize`, the
  recommended recipe for pictures with a preset, a bounded pixel image otherwise);
- its top-k dataset examples (:meth:`~convlens.NeuronVisualizer.top_examples`,
  one pass per layer for all its units), each with the receptive-field window
  of its peak outlined, and those windows cut out;
- for the first conv layer, the unit's filter weights;
- for the classifier's output units, the class picture (its feature
  visualization) and the top images with their Grad-CAM overlays.

Everything is a PNG beside plain HTML, written by :mod:`convlens.apps.atlas_site`
with the one HTML writer and its stylesheet: no script, nothing fetched. The
work per unit is cached under ``out/_cache`` by a hash of the weights, the
layer, the unit, the data and the options, so a second run with
more layers or units reuses what is done. The dataset passes run under
``torchrun`` as ``top_examples`` does (rank 0 writes the site).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import convlens as cl
    >>> digits = cl.zoo.digits_cnn()
    >>> with tempfile.TemporaryDirectory() as out:
    ...     site = build_atlas(digits, cl.zoo.digits_dataset("test"), out, layers=["classifier.2"],
    ...                        units=2, steps=4, progress=False)
    ...     site.index.name, site.units, site.reused
    ('index.html', 2, 0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw
from torch import Tensor, nn

from convlens.apps.atlas_site import Plan, cache_key, write_site
from convlens.attribution.cam import GradCAM
from convlens.core.checks import check_int
from convlens.core.deprecation import UNSET, Unset, renamed
from convlens.core.distributed import rank
from convlens.core.inputs import ForwardArgs, ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import unwrap
from convlens.core.layouts import Layout, ReshapeSpec, as_layout, channels_last_hint
from convlens.core.report import LayerShape, ShapeReport
from convlens.core.shapes import trace_shapes
from convlens.core.tap import LayerTap
from convlens.core.values import model_dtype_device
from convlens.errors import InvalidArgumentError, LayerNotFoundError, did_you_mean
from convlens.featureviz.neurons import NeuronVisualizer, TopExamplesResult
from convlens.models.images import PRESETS, ClassesSpec, deprocess
from convlens.models.images import class_names as class_names_of
from convlens.render import FilterRenderer, overlay

__all__ = ["AtlasResult", "build_atlas"]

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_THUMB = 96  # pixels: a unit's picture in a layer's grid
_PANEL = 112  # pixels: an example on a unit's page
_VERSION = 1  # bump when what a cache entry holds changes


@dataclass(frozen=True, slots=True, kw_only=True)
class AtlasResult:
    """What :func:`build_atlas` wrote.

    Attributes:
        index: The site's ``index.html``.
        layers: The layers with a page, in the model's order.
        units: How many unit pages the site has.
        reused: How many of them came from the cache (nothing recomputed).
        seconds: The wall time of the whole build.
    """

    index: Path
    layers: tuple[str, ...]
    units: int
    reused: int
    seconds: float


def build_atlas(
    model: nn.Module,
    data: Any,
    out: str | Path,
    *,
    layers: Sequence[str] | None = None,
    units: int | None = 16,
    k: int = 8,
    steps: int = 128,
    preset: str | None = None,
    input_shape: Sequence[int] | None = None,
    picture_size: int | None = None,
    title: str | None = None,
    note: str | None = None,
    classes: ClassesSpec | None = None,
    forward_args: ForwardArgsLike = None,
    reshape: ReshapeSpec = None,
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
    progress: bool = True,
    class_names: Sequence[str] | Unset | None = UNSET,
) -> AtlasResult:
    """Write a browsable, offline atlas of ``model`` over ``data`` to ``out``.

    Args:
        model: Any ``nn.Module``; left as found.
        data: A Dataset, a DataLoader or an iterable of batches, as
            :meth:`~convlens.NeuronVisualizer.top_examples` takes.
        out: The site's folder (created); ``out/index.html`` is its front page.
        layers: Qualified layer names; None: every conv and Linear layer.
        units: The first this many units of each layer (None: all of them).
        k: Top dataset examples per unit.
        steps: Optimization steps of each feature visualization.
        preset: The preprocessing the data went through (``"imagenet"`` or
            ``"lecture"``): pictures are shown through it, and feature
            visualizations use the recommended recipe in its colour space.
            None: inputs are shown as they are (in [0, 1], like the digits)
            and visualized as bounded pixel images in [0, 1].
        input_shape: One input, ``(1, C, H, W)``, for the feature
            visualizations; None: one example of the data, at ``picture_size``.
        picture_size: The side of the feature visualizations when
            ``input_shape`` is None (None: the data's own).
        title: The site's title (default: the model's class name).
        note: A line shown on every page (e.g. "random weights"); None: no line.
            A model of your own with its own weights needs none.
        classes: Names of the model's output classes, shown on the output
            layer's pages: ``"imagenet"`` (the 1000 ImageNet categories), the
            path of a file with one name per line (or a JSON list), or the
            names (:func:`~convlens.models.images.class_names`). Their count
            must equal the model's number of outputs (checked before any work).
        forward_args: The model's other forward arguments after the input
            (:class:`~convlens.ForwardArgs`, a tuple, or a mapping of keywords),
            passed on every forward: the shape trace, the dataset passes (where
            tensors whose first dimension is the batch's follow the batch), the
            feature visualizations and the output units' Grad-CAMs.
        reshape: How each layer's output becomes ``(N, C, *spatial)`` before
            its units are counted and ranked (``"vit"``, ``"channels_last"``, a
            callable or :class:`~convlens.Layout`); the first tensor of a layer
            that returns several is read unless ``reshape=Layout(part=...)``
            says otherwise. None: the output is channels first already; a
            channels-last output is refused before any work.
        batch_size: Batch size when ``data`` is a Dataset.
        num_workers: DataLoader workers when ``data`` is a Dataset.
        seed: Seeds the feature visualizations.
        progress: A line per layer on stderr, with its time.
        class_names: The old spelling of ``classes`` (deprecated).

    Returns:
        What was written, and how much of it came from the cache.

    Raises:
        LayerNotFoundError: A layer the model does not have (the nearest is named).
        InvalidArgumentError: An unknown preset, ``units``, ``k`` or ``steps``
            below 1, empty data, ``classes`` whose count differs from the
            model's outputs, or a channels-last layer without ``reshape=``.
        UnsupportedModelError: A quantized model (the feature visualizations
            need gradients) or one on the meta device.
        DeviceMismatchError: The data and the model live on different devices.
    """
    started = time.perf_counter()
    root = Path(out)
    k, steps = check_int("k", k, 1), check_int("steps", steps, 1)
    count = None if units is None else check_int("units", units, 1)
    if preset is not None and preset not in PRESETS:
        raise InvalidArgumentError(
            f"preset must be one of {', '.join(map(repr, PRESETS))} or None; got {preset!r}."
            f"{did_you_mean(str(preset), list(PRESETS))}"
        )
    chosen = renamed("class_names", class_names, "classes", classes, default=None)
    fa, layout = as_forward_args(forward_args), as_layout(reshape)
    sample = _first_input(data)
    check_runnable(model, sample[None], who="build_atlas", gradients=True, forward_args=fa)
    shape = tuple(input_shape) if input_shape is not None else (1, *sample.shape)
    if input_shape is None and picture_size is not None and len(shape) == 4:
        shape = (1, shape[1], picture_size, picture_size)
    report = trace_shapes(model, (1, *sample.shape), forward_args=fa)
    names_of = None if chosen is None else class_names_of(chosen, outputs=_outputs(report))
    rows = _layer_rows(model, report, layers)
    units_of = _unit_counts(model, sample, rows, layout, fa)
    options = {"k": k, "steps": steps, "preset": preset, "shape": shape, "seed": seed}
    options |= {"reshape": layout.describe(), "forward_args": repr(fa)}
    fingerprint = _fingerprint(model, data, [sample, *fa.tensors()], options)
    output = report.rows[-1].name if report.rows else ""
    cam_layer = next(  # the last spatial map that is still a grid (not a global pool's 1 x 1)
        (r.name for r in reversed(report.rows) if len(r.output_shape) == 4 and max(r.output_shape[2:]) > 1),
        None,
    )
    first_conv = next((r.name for r in report.rows if r.type.startswith("Conv")), None)

    cache = root / "_cache"
    plan: Plan = []  # row, units shown, units to compute
    for row in rows:
        size = units_of[row.name]
        shown = list(range(size if count is None else min(count, size)))
        missing = [
            u for u in shown if not (cache / cache_key(fingerprint, row.name, u) / "unit.json").is_file()
        ]
        plan.append((row, shown, missing))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank has read the cache before rank 0 writes to it
    writer = rank() == 0
    names = {output: list(names_of)} if names_of is not None else {}
    reused = 0
    for row, shown, missing in plan:
        began = time.perf_counter()
        if missing:
            _compute_layer(
                model, data, row, missing, cache=cache, fingerprint=fingerprint, writer=writer, k=k, steps=steps,
                preset=preset, shape=shape, seed=seed, batch_size=batch_size, num_workers=num_workers,
                filters=row.name == first_conv, classes=row.name == output and row.type == "Linear",
                cam_layer=cam_layer, forward_args=fa, reshape=reshape,
            )  # fmt: skip
        reused += len(shown) - len(missing)
        if progress and writer:
            print(
                f"[atlas] {row.name}: {len(shown)} units ({len(shown) - len(missing)} from the cache) "
                f"in {time.perf_counter() - began:.1f} s",
                file=sys.stderr,
            )
    index = root / "index.html"
    if writer:
        write_site(
            root,
            report,
            plan,
            fingerprint=fingerprint,
            title=title or type(unwrap(model)).__name__,
            note=note,
            names=names,
        )
    return AtlasResult(
        index=index,
        layers=tuple(row.name for row, _, _ in plan),
        units=sum(len(shown) for _, shown, _ in plan),
        reused=reused,
        seconds=time.perf_counter() - started,
    )


# -- what a unit needs -------------------------------------------------------------------------------


def _compute_layer(
    model: nn.Module,
    data: Any,
    row: LayerShape,
    missing: list[int],
    *,
    cache: Path,
    fingerprint: str,
    writer: bool,
    k: int,
    steps: int,
    preset: str | None,
    shape: tuple[int, ...],
    seed: int,
    batch_size: int,
    num_workers: int,
    filters: bool,
    classes: bool,
    cam_layer: str | None,
    forward_args: ForwardArgs,
    reshape: ReshapeSpec,
) -> None:
    """One dataset pass for the layer's missing units, then (rank 0) their pictures and pages' data."""
    nv = NeuronVisualizer(model, row.name, input_shape=shape, reshape=reshape)
    best = nv.top_examples(
        data, unit=missing, k=k, batch_size=batch_size, num_workers=num_workers, progress=False,
        forward_args=forward_args,
    )  # fmt: skip
    if not writer:
        return
    if preset is None:
        viz = nv.maximize(
            missing, steps=steps, seed=seed, value_range=(0.0, 1.0), l1=0.0, forward_args=forward_args
        )
        pictures = viz.image.detach().float().clamp(0, 1).cpu()
    else:
        viz = nv.maximize(
            missing,
            steps=steps,
            seed=seed,
            normalize=preset,  # type: ignore[arg-type]  # checked against PRESETS in build_atlas
            forward_args=forward_args,
        )
        assert viz.picture is not None  # with normalize, the picture in [0, 1]
        pictures = viz.picture.detach().float().cpu()
    weights = FilterRenderer(model, row.name).images() if filters else None
    for j, unit in enumerate(missing):
        folder = cache / cache_key(fingerprint, row.name, unit)
        folder.mkdir(parents=True, exist_ok=True)
        _png(_as_rgb(pictures[j], None), _THUMB * 2).save(folder / "viz.png")
        meta: dict[str, Any] = {"layer": row.name, "unit": unit, "value": float(viz.values[j])}
        examples = _unit_examples(best, j)
        meta["examples"] = []
        for i, (index, value, x, box) in enumerate(examples):
            picture = _as_rgb(x, preset)
            framed = _framed(picture, box)
            framed.save(folder / f"example{i}.png")
            entry: dict[str, Any] = {"index": index, "value": value, "box": box}
            if box is not None:
                top, left, bottom, right = box
                _png(picture[top:bottom, left:right], _PANEL).save(folder / f"crop{i}.png")
            meta["examples"].append(entry)
        if weights is not None:
            _png((weights[unit] * 255).round().astype(np.uint8), _PANEL).save(folder / "filter.png")
            meta["filter"] = True
        if classes and cam_layer is not None and examples:
            xs = torch.stack([x for _, _, x, _ in examples])
            dtype, device = model_dtype_device(unwrap(model))
            cam = GradCAM(model, cam_layer)
            maps = cam(xs.to(device, dtype), target=unit, forward_args=forward_args).maps.detach().cpu()
            for i, (_, _, x, _) in enumerate(examples):
                blended = overlay(_as_rgb(x, preset), maps[i], alpha=0.45)
                _png(blended, _PANEL).save(folder / f"cam{i}.png")
            meta["cam"] = cam_layer
        (folder / "unit.json").write_text(json.dumps(meta))


def _unit_examples(best: TopExamplesResult, j: int) -> list[tuple[int, float, Tensor, list[int] | None]]:
    """Unit ``j``'s examples: index, activation, input and box (2-d boxes only)."""
    if best.inputs is None:
        return []
    boxes = None if best.boxes is None or best.boxes.shape[-1] != 4 else best.boxes[j].tolist()
    return [
        (int(i), float(v), best.inputs[j, n].detach().float().cpu(), None if boxes is None else boxes[n])
        for n, (i, v) in enumerate(zip(best.indices[j].tolist(), best.activations[j].tolist(), strict=True))
    ]


def _as_rgb(x: Tensor, preset: str | None) -> np.ndarray:
    """A model input (``(C, H, W)``) as an ``(H, W, 3)`` uint8 picture."""
    if preset is not None and x.shape[0] == 3:
        return deprocess(x, preset=preset)  # type: ignore[arg-type]
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        x = (x - low) / max(high - low, 1e-12)
    grey = x.mean(0, keepdim=True) if x.shape[0] != 3 else x
    rgb = grey.expand(3, *grey.shape[1:]) if grey.shape[0] == 1 else grey
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _png(picture: np.ndarray, size: int) -> Image.Image:
    """``picture`` scaled (nearest for small ones, as pixels are meant to be seen) to ``size`` on its long side."""
    img = Image.fromarray(np.ascontiguousarray(picture))
    w, h = img.size
    scale = size / max(w, h, 1)
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


def _framed(picture: np.ndarray, box: list[int] | None) -> Image.Image:
    img = _png(picture, _PANEL)
    if box is not None:
        scale = img.size[0] / picture.shape[1]
        top, left, bottom, right = (v * scale for v in box)
        ImageDraw.Draw(img).rectangle((left, top, right - 1, bottom - 1), outline=(255, 220, 0), width=2)
    return img


# -- keys, layers, data ------------------------------------------------------------------------------


def _fingerprint(model: nn.Module, data: Any, values: list[Tensor], options: dict[str, Any]) -> str:
    """A hash of the weights (every parameter and buffer), the data, the values and the options.

    ``values``: the first example and the tensors among the forward arguments.
    """
    digest = hashlib.sha256(f"v{_VERSION}".encode())
    for name, tensor in unwrap(model).state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(type(data).__name__.encode())
    digest.update(str(len(data) if isinstance(data, Sized) else "?").encode())
    for value in values:
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _layer_rows(model: nn.Module, report: ShapeReport, layers: Sequence[str] | None) -> list[LayerShape]:
    """The report's rows of the layers asked for (default: every conv and Linear), in the model's order."""
    by_name = {r.name: r for r in report.rows}
    if layers is None:
        modules = dict(unwrap(model).named_modules())
        return [r for r in report.rows if isinstance(modules.get(r.name.split("#")[0]), _LAYER_TYPES)]
    modules = dict(unwrap(model).named_modules())
    chosen = []
    for name in layers:
        if name in by_name:
            chosen.append(by_name[name])
            continue
        inside = [r for r in report.rows if r.name.startswith(name + ".")]
        if name in modules and inside:  # a container (a ResNet stage): what its last call returns
            chosen.append(dataclasses.replace(inside[-1], name=name, type=type(modules[name]).__name__))
            continue
        raise LayerNotFoundError(
            f"layer {name!r} is not a layer of {type(unwrap(model)).__name__} the atlas can draw."
            f"{did_you_mean(name, [*by_name, *(m for m in modules if m)])}"
        )
    order = {r.name: i for i, r in enumerate(report.rows)}
    last = {
        name: max(i for n, i in order.items() if n == name or n.startswith(name + ".")) for name in layers
    }
    unique = list({r.name: r for r in chosen}.values())
    return sorted(unique, key=lambda r: (last[r.name], r.name))


def _outputs(report: ShapeReport) -> int | None:
    """The model's number of outputs (classes): dimension 1 of what it returns, if it has one."""
    return report.output_shape[1] if len(report.output_shape) >= 2 else None


def _unit_counts(
    model: nn.Module, sample: Tensor, rows: list[LayerShape], layout: Layout, fa: ForwardArgs
) -> dict[str, int]:
    """Each layer's number of units: dimension 1 of its output as ``reshape=`` reads it.

    Without a layout the trace's shapes say it, and a channels-last output is refused (never its rows
    counted as units); with one, one real forward of one example shows what the layout gives.
    """
    modules = dict(unwrap(model).named_modules())
    if layout.part is None and not layout.reshapes:
        for row in rows:
            module = modules.get(row.name.split("#")[0])
            hint = None if module is None else channels_last_hint(module, row.output_shape)
            if hint is not None:
                raise InvalidArgumentError(
                    f"build_atlas reads channels at dimension 1, but layer {row.name!r} gives "
                    f"{row.output_shape}, channels last: a {hint} in it computes {row.output_shape[-1]} "
                    'features along the last dimension. Pass reshape="channels_last".'
                )
        return {r.name: r.output_shape[1] if len(r.output_shape) > 1 else 1 for r in rows}
    dtype, device = model_dtype_device(unwrap(model))
    x = sample[None].to(device, dtype)
    found = LayerTap(model, [r.name for r in rows]).run(x, forward_args=fa)
    counts = {}
    for row in rows:
        tensor = layout.apply(layout.pick(found[row.name]))
        counts[row.name] = int(tensor.shape[1]) if tensor.dim() > 1 else 1
    return counts


def _first_input(data: Any) -> Tensor:
    """One example's ``x`` (without its batch dimension), to size what the atlas draws."""
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        if isinstance(data, Sized) and len(data) == 0:
            raise InvalidArgumentError("data is empty: there are no examples for the atlas.")
        item = data[0]
        x = item[0] if isinstance(item, tuple | list) else item
        if isinstance(x, Tensor):
            return x
    source: Iterable[Any] = data
    for batch in source:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if isinstance(x, Tensor) and x.dim() >= 2:
            return x[0]
        break
    raise InvalidArgumentError(
        "the atlas needs data whose items (or batches) are a tensor x or a tuple (x, y, ...)."
    )
