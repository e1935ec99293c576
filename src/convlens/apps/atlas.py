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
  visualization; for [0, 1] pictures with the tour's "no ink" penalty) and the
  top images with their Grad-CAM overlays;
- its circuits with the drawn layers before and after it
  (:mod:`convlens.apps.atlas_circuits`), and, where the data has labels, the
  classes among its top examples (:mod:`convlens.apps.atlas_units`).

A layer's page also shows its concepts (``concepts=6`` by default: :mod:`convlens.apps.atlas_concepts`
says which layers get them and with which method): directions in its channel space fitted over the
data by :func:`convlens.concepts`, each with its picture, its top examples with its coefficient map
and its importance for the predicted classes.

Everything is a PNG beside plain HTML, written by :mod:`convlens.apps.atlas_site`
with the one HTML writer and its stylesheet: no script, nothing fetched. The
work per unit is cached under ``out/_cache`` by a hash of the weights, the
layer, the unit, the data and the options, and each layer's concepts by a hash of
the same, the layer and ``concepts``, so a second run with
more layers or units reuses what is done. Under ``torchrun`` the dataset passes are sharded as
``top_examples`` and ``concepts`` shard them, and every rank draws its share of the pictures
(:mod:`convlens.apps.atlas_draw`); rank 0 writes the site, the same bytes as one process's.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import convlens as cl
    >>> digits = cl.zoo.digits_cnn()
    >>> with tempfile.TemporaryDirectory() as out:
    ...     site = build_atlas(digits, cl.zoo.digits_dataset("test"), out, layers=["classifier.2"],
    ...                        units=2, steps=4, progress=False)
    ...     site.index.name, site.units, site.reused, site.concepts
    ('index.html', 2, 0, ())
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from convlens.apps.atlas_circuits import Pair
from convlens.apps.atlas_concepts import (
    SIGN_EXAMPLES,
    ConceptPlan,
    draw_concepts,
    fit_concepts_of,
    plan_concepts,
    write_concepts,
)
from convlens.apps.atlas_draw import Job, chunk_size, run_jobs, unit_jobs
from convlens.apps.atlas_pictures import (
    accent_steps,
    deliver_units,
    draw_units,
    with_examples,
)
from convlens.apps.atlas_site import Plan, cache_key, write_site
from convlens.apps.atlas_units import labels_of, write_examples
from convlens.core.checks import check_bool, check_int
from convlens.core.deprecation import UNSET, Unset, renamed
from convlens.core.distributed import data_length, rank, world_size
from convlens.core.inputs import ForwardArgs, ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import resolve_layer, unwrap, wrapper_prefix
from convlens.core.layouts import Layout, ReshapeSpec, as_layout
from convlens.core.report import LayerShape, ShapeReport
from convlens.core.shapes import trace_shapes
from convlens.core.tap import LayerTap
from convlens.core.values import model_dtype_device
from convlens.errors import InvalidArgumentError, LayerNotFoundError, did_you_mean
from convlens.featureviz.concept_result import ConceptsResult
from convlens.featureviz.forward import check_channels_first
from convlens.featureviz.neurons import NeuronVisualizer
from convlens.models.images import PRESETS, ClassesSpec
from convlens.models.images import class_names as class_names_of
from convlens.render import FilterRenderer

__all__ = ["AtlasResult", "build_atlas"]

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_VERSION = 3  # bump when what a cache entry holds changes


@dataclass(frozen=True, slots=True, kw_only=True)
class AtlasResult:
    """What :func:`build_atlas` wrote.

    Attributes:
        index: The site's ``index.html``.
        layers: The layers with a page, in the model's order.
        units: How many unit pages the site has.
        reused: How many of them came from the cache (nothing recomputed).
        seconds: The wall time of the whole build.
        concepts: The layers whose page has a concepts section, in the model's order.
        concepts_reused: How many of those sections came from the cache (nothing refitted).
    """

    index: Path
    layers: tuple[str, ...]
    units: int
    reused: int
    seconds: float
    concepts: tuple[str, ...] = ()
    concepts_reused: int = 0


def build_atlas(
    model: nn.Module,
    data: Any,
    out: str | Path,
    *,
    layers: Sequence[str] | None = None,
    units: int | None = 16,
    k: int = 8,
    steps: int = 128,
    concepts: int | None = 6,
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
    seeds: int = 1,
    accents: bool = True,
    progress: bool = True,
    class_names: Sequence[str] | Unset | None = UNSET,
) -> AtlasResult:
    """Write a browsable, offline atlas of ``model`` over ``data`` to ``out``.

    Args:
        model: Any ``nn.Module``; left as found.
        data: A Dataset, a DataLoader or an iterable of batches, as
            :meth:`~convlens.NeuronVisualizer.top_examples` takes.
        out: The site's folder (created); ``out/index.html`` is its front page.
        layers: Qualified layer names; None: every conv and Linear layer. For a wrapper
            (``nn.DataParallel``, ``DistributedDataParallel``, ``torch.compile``) the wrapper's
            names (``"module.layer4"``) and the wrapped model's (``"layer4"``) both work; pages
            and :attr:`AtlasResult.layers` keep the names as given (the wrapper's by default).
        units: The first this many units of each layer (None: all of them).
        k: Top dataset examples per unit.
        steps: Optimization steps of each feature visualization (the concepts' pictures too).
        seeds: Draw each unit from this many seeds; from 2 on, each unit page shows the picture's
            stability (the mean cosine between the layer's features of the seeds' pictures) at that
            many times the drawing's cost. The picture shown is the first seed's.
        accents: Accentuate each unit's top example for it (one picture per unit at half the
            steps: the biggest cost after the feature visualizations); False: no such section.
        concepts: How many concepts each layer's page shows (:func:`convlens.concepts`, with
            ``k`` top examples each); 0 or None: no concepts section. The default, 6, is the number
            of neuron groups Olah et al. show per layer ("The Building Blocks of Interpretability",
            Distill 2018): few enough to read at a glance. Layers with at most that many units,
            and signed layers without a spatial grid, get no section; nonnegative layers are
            factored by NMF, signed ones by semi-NMF (see :mod:`convlens.apps.atlas_concepts`).
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
            passed on every forward. A tensor among them whose first dimension
            is the number of examples in the data (``len(data)``) is per example:
            the dataset passes give each batch its rows, the output units'
            Grad-CAMs give each top example its own row, and what runs on one
            made-up input (the shape trace, the unit count, the feature
            visualizations: one row per picture) gets the first example's row.
            Every other value, and every value for an iterable of batches (its
            length is unknown), is passed as given.
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
            below 1, ``concepts`` below 0, empty data, ``classes`` whose count differs from the
            model's outputs, or a channels-last layer without ``reshape=``.
        UnsupportedModelError: A quantized model (the feature visualizations
            need gradients) or one on the meta device.
        DeviceMismatchError: A tensor of ``forward_args`` on another device than the
            model, or data on the ``meta`` device (data on another real device is
            moved to the model's, batch by batch, as ``top_examples`` does).
    """
    started = time.perf_counter()
    root = Path(out)
    k, steps, seeds = check_int("k", k, 1), check_int("steps", steps, 1), check_int("seeds", seeds, 1)
    accents = check_bool("accents", accents)
    count = None if units is None else check_int("units", units, 1)
    n_concepts = 0 if concepts is None else check_int("concepts", concepts, 0)
    if preset is not None and preset not in PRESETS:
        raise InvalidArgumentError(
            f"preset must be one of {', '.join(map(repr, PRESETS))} or None; got {preset!r}."
            f"{did_you_mean(str(preset), list(PRESETS))}"
        )
    chosen = renamed("class_names", class_names, "classes", classes, default=None)
    fa, layout = as_forward_args(forward_args), as_layout(reshape)
    first = _first_inputs(data, SIGN_EXAMPLES if n_concepts else 1)
    sample = first[0]
    # Batches are moved to the model's device as they are read; only data that holds none is refused.
    given = sample[None] if sample.is_meta else ()
    check_runnable(model, given, who="build_atlas", gradients=True, forward_args=fa)
    examples = data_length(data)
    one = _example_args(fa, examples, [0])
    shape = tuple(input_shape) if input_shape is not None else (1, *sample.shape)
    if input_shape is None and picture_size is not None and len(shape) == 4:
        shape = (1, shape[1], picture_size, picture_size)
    report = trace_shapes(model, (1, *sample.shape), forward_args=one)
    names_of = None if chosen is None else class_names_of(chosen, outputs=_outputs(report))
    label, label_names = labels_of(data)
    if names_of is None and label_names is not None and len(label_names) == _outputs(report):
        names_of = tuple(label_names)  # a classifier of the data's own classes (the digits): name its outputs
    rows = _layer_rows(model, report, layers)
    units_of = _unit_counts(model, sample, rows, layout, one)
    options = {"k": k, "steps": steps, "preset": preset, "shape": shape, "seed": seed, "seeds": seeds}
    options["accents"] = accents
    options |= {"reshape": layout.describe(), "forward_args": repr(fa)}
    fingerprint = _fingerprint(model, data, [sample, *fa.tensors()], options)
    output = report.rows[-1].name if report.rows else ""
    cam_layer = next(  # the last spatial map that is still a grid (not a global pool's 1 x 1)
        (r.name for r in reversed(report.rows) if len(r.output_shape) == 4 and max(r.output_shape[2:]) > 1),
        None,
    )
    first_conv = next((r.name for r in report.rows if r.type.startswith("Conv")), None)
    same = _Names(model)  # rows keep the names as given; the report's are the object's: compare canonically

    cache = root / "_cache"
    plan: Plan = []  # row, units shown, units to compute
    for row in rows:
        size = units_of[row.name]
        shown = list(range(size if count is None else min(count, size)))
        missing = [
            u for u in shown if not (cache / cache_key(fingerprint, row.name, u) / "unit.json").is_file()
        ]
        plan.append((row, shown, missing))
    concept_plans = plan_concepts(
        model, first, [r.name for r in rows] if n_concepts else [], n=n_concepts, layout=layout,
        forward_args=_example_args(fa, examples, list(range(len(first)))), fingerprint=fingerprint,
        cache=cache, names=names_of,
    )  # fmt: skip
    pairs: list[Pair | None] = [None]  # each drawn layer with the one before it
    pairs += [
        Pair(model, before.name, row.name, shown, cache=cache, fingerprint=fingerprint)
        for (before, _, _), (row, shown, _) in itertools.pairwise(plan)
    ]
    # Rank 0's cache decides what every rank computes: the passes and fits are collectives, and a rank
    # whose disk holds something else (a folder per node) must not skip one the others run.
    todo = _agree(
        [[m for _, _, m in plan], [cp.missing for cp in concept_plans], [p.done for p in pairs if p]]
    )
    plan = [(row, shown, missing) for (row, shown, _), missing in zip(plan, todo[0], strict=True)]
    concept_plans = [dataclasses.replace(cp, missing=m) for cp, m in zip(concept_plans, todo[1], strict=True)]
    for known, done in zip([p for p in pairs if p], todo[2], strict=True):
        known.done = done
    writer = rank() == 0
    names = {} if names_of is None else {r.name: list(names_of) for r in rows if same(r.name, output)}
    planned = {cp.layer: cp for cp in concept_plans}
    size, depth = chunk_size(report.macs, model_dtype_device(unwrap(model))[1]), _depths(report, same)
    jobs: list[Job] = []  # the pictures, drawn by every rank once every dataset pass is done
    pending: dict[tuple[str, int], dict[str, Any]] = {}  # rank 0: each unit.json but its picture's value
    fitted: dict[str, tuple[ConceptPlan, ConceptsResult]] = {}  # rank 0: the fits whose section is to write
    banks: dict[str, Tensor] = {}  # every rank: the banks whose pictures are to draw
    reused = 0
    circuits: dict[str, str] = {}  # the later layer of each pair of drawn layers -> its circuits' folder
    for (row, shown, missing), pair in zip(plan, pairs, strict=True):
        began = time.perf_counter()
        cost = float(depth(row.name))
        wiring = None if pair is None or pair.done else pair.weights(one, (1, *sample.shape), reshape)
        ranked = shown if pair is not None and not pair.done and wiring is None else missing
        if ranked:  # every rank: the pass is sharded and merged
            nv = NeuronVisualizer(model, row.name, input_shape=shape, reshape=reshape)
            best = nv.top_examples(
                data, unit=ranked, k=k, batch_size=batch_size, num_workers=num_workers, progress=False,
                forward_args=fa,
            )  # fmt: skip
        if pair is not None and writer and not pair.done:
            pair.write(wiring or pair.attribution(best, lambda i: _example_args(fa, examples, i), reshape))
        if pair is not None:
            circuits[row.name] = pair.key
        if missing:
            if writer:
                filters = FilterRenderer(model, row.name).images() if same(row.name, first_conv) else None
                classes_here = same(row.name, output) and row.type == "Linear"
                metas = write_examples(
                    model, row.name, ranked, best, only=missing, cache=cache, fingerprint=fingerprint,
                    preset=preset, weights=filters, cam_layer=cam_layer if classes_here else None, label=label,
                    forward_args=lambda indices: _example_args(fa, examples, indices),
                )  # fmt: skip
                pending |= {(row.name, unit): meta for unit, meta in metas.items()}
            chunks = unit_jobs(
                row.name, missing, size=size, seed=seed, cost=cost * seeds, total=units_of[row.name]
            )
            jobs += with_examples(
                chunks, ranked, best, accent_cost=cost * accent_steps(steps) / steps, accents=accents
            )
        cp = planned.get(row.name)
        if cp is not None and cp.missing:  # every rank: the fit is sharded and all-reduced
            result = fit_concepts_of(
                model, data, cp, n=n_concepts, k=k, seed=seed, importance=len(report.output_shape) == 2,
                batch_size=batch_size, num_workers=num_workers, reshape=reshape, forward_args=fa,
            )  # fmt: skip
            banks[row.name] = result.bank
            if writer:
                fitted[row.name] = (cp, result)
            jobs.append(Job(layer=row.name, units=(), seed=seed, cost=cost * n_concepts, concepts=True))
        reused += len(shown) - len(missing)
        if progress and writer:
            said = (
                ""
                if cp is None
                else f", {n_concepts} concepts ({'fitted' if cp.missing else 'from the cache'})"
            )
            print(
                f"[atlas] {row.name}: {len(shown)} units ({len(shown) - len(missing)} from the cache){said}: "
                f"the data read in {time.perf_counter() - began:.1f} s",
                file=sys.stderr,
            )

    def draw(job: Job) -> Any:
        began = time.perf_counter()
        if job.concepts:
            drawn: Any = draw_concepts(
                model, job.layer, banks[job.layer], steps=steps, preset=preset, shape=shape,
                seed=job.seed, reshape=reshape, forward_args=_example_args(fa, examples, [0] * n_concepts),
            )  # fmt: skip
        else:
            no_ink = preset is None and same(job.layer, output) and _is_linear(model, job.layer)
            drawn = draw_units(
                model, job, steps=steps, seeds=seeds, preset=preset, shape=shape, reshape=reshape, no_ink=no_ink,
                forward_args=_example_args(fa, examples, [0] * len(job.units)),
                one_args=_example_args(fa, examples, [0]),
            )  # fmt: skip
        if progress:
            what = "its concepts" if job.concepts else f"units {job.units[0]}-{job.units[-1]}"
            who = f" (rank {rank()})" if world_size() > 1 else ""
            print(
                f"[atlas] {job.layer}: {what} drawn{who} in {time.perf_counter() - began:.1f} s",
                file=sys.stderr,
            )
        return drawn

    def deliver(i: int, drawn: Any) -> None:  # rank 0, as each round of pictures arrives
        job = jobs[i]
        if job.concepts:
            cp, result = fitted.pop(job.layer)
            write_concepts(result, cp, drawn, cache=cache, preset=preset, names=names_of)
            return
        parts = deliver_units(job, drawn, lambda unit: cache / cache_key(fingerprint, job.layer, unit))
        for unit, part in parts.items():
            meta = pending.pop((job.layer, unit)) | part
            folder = cache / cache_key(fingerprint, job.layer, unit)
            (folder / "unit.json").write_text(
                json.dumps(meta, sort_keys=True)
            )  # last: its presence means done

    run_jobs(jobs, draw, deliver)
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
            concepts={cp.layer: cp.key for cp in concept_plans},
            labels=label_names,
            circuits=circuits,
        )
    return AtlasResult(
        index=index,
        layers=tuple(row.name for row, _, _ in plan),
        units=sum(len(shown) for _, shown, _ in plan),
        reused=reused,
        seconds=time.perf_counter() - started,
        concepts=tuple(cp.layer for cp in concept_plans),
        concepts_reused=sum(not cp.missing for cp in concept_plans),
    )


def _agree(value: list[Any]) -> list[Any]:
    """Rank 0's ``value`` on every rank (``value`` itself without ``torch.distributed``)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return list(box[0])


def _is_linear(model: nn.Module, name: str) -> bool:
    return isinstance(resolve_layer(model, name).module, nn.Linear)


def _depths(report: ShapeReport, same: _Names) -> Callable[[str], int]:
    """The multiply-accumulates of a forward that stops after a layer (its pictures' cost), by the layer's name.

    A layer the report has no row for (a container) costs the whole model's.
    """
    running, totals = 0, []
    for r in report.rows:
        running += r.macs
        totals.append((r.name, running))

    def depth(name: str) -> int:
        return next((total for row, total in totals if same(name, row)), report.macs) + 1

    return depth


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


class _Names:
    """Whether two layer names of ``model`` (a wrapper's ``"module.0"``, the wrapped model's ``"0"``) are one call."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def key(self, name: str) -> str:
        """The canonical name with its call: what ``trace_shapes`` of the wrapped model names the row."""
        ref = resolve_layer(self.model, name)
        return ref.name if ref.call is None else f"{ref.name}#{ref.call}"

    def __call__(self, a: str, b: str | None) -> bool:
        return b is not None and self.key(a) == self.key(b)


def _layer_rows(model: nn.Module, report: ShapeReport, layers: Sequence[str] | None) -> list[LayerShape]:
    """The report's rows of the layers asked for (default: every conv and Linear), in the model's order.

    A layer asked for by name keeps that name (the wrapper's or the wrapped model's): it is resolved
    with :func:`~convlens.core.layers.resolve_layer` and found under its canonical name.
    """
    prefix = wrapper_prefix(model)

    def bare(name: str) -> str:  # the report of a wrapper names rows as the wrapper does
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name

    modules = dict(unwrap(model).named_modules())
    if layers is None:
        return [r for r in report.rows if isinstance(modules.get(bare(r.name).split("#")[0]), _LAYER_TYPES)]
    by_key = {bare(r.name): (i, r) for i, r in enumerate(report.rows)}
    chosen: dict[str, tuple[int, LayerShape]] = {}  # canonical key -> (last row index, row as named)
    for name in layers:
        ref = resolve_layer(model, name)  # an unknown name: LayerNotFoundError naming the nearest
        key = ref.name if ref.call is None else f"{ref.name}#{ref.call}"
        if key in by_key:
            at, row = by_key[key]
            found = (at, dataclasses.replace(row, name=name))
        else:
            inside = [(i, r) for n, (i, r) in by_key.items() if ref.name and n.startswith(ref.name + ".")]
            if ref.call is not None or not inside:
                raise LayerNotFoundError(
                    f"layer {name!r} is not a layer of {type(unwrap(model)).__name__} the atlas can draw "
                    "(it does not run in the forward, or returns no tensor)."
                    f"{did_you_mean(name, [r.name for r in report.rows])}"
                )
            at, row = inside[-1]  # a container (a ResNet stage): what its last call returns
            found = (at, dataclasses.replace(row, name=name, type=type(ref.module).__name__))
        chosen.setdefault(key, found)
    # A container ends where its last call does: the inner layer (more dots) first, as it runs first.
    order = sorted(chosen.values(), key=lambda item: (item[0], -item[1].name.count("."), item[1].name))
    return [row for _, row in order]


def _outputs(report: ShapeReport) -> int | None:
    """The model's number of outputs (classes): dimension 1 of what it returns, if it has one."""
    return report.output_shape[1] if len(report.output_shape) >= 2 else None


def _unit_counts(
    model: nn.Module, sample: Tensor, rows: list[LayerShape], layout: Layout, fa: ForwardArgs
) -> dict[str, int]:
    """Each layer's number of units: dimension 1 of its output as ``reshape=`` reads it.

    Without a layout the trace's shapes of leaf layers say it; with one, or for a container (the
    trace has its last leaf's shape, not what it returns: a tuple of branches), one real forward of
    one example shows what the layout picks (``tap.outputs``: every tensor a layer returned) and gives. A channels-last
    output read without a reshape is refused (:func:`~convlens.featureviz.forward.check_channels_first`),
    never its rows counted as units. ``fa``: the forward arguments for that one example.
    """
    picked: dict[str, Tensor] = {}
    modules = {r.name: resolve_layer(model, r.name).module for r in rows}
    containers = any(next(m.children(), None) is not None for m in modules.values())  # rows of a last leaf
    real = layout.part is not None or layout.reshapes or containers
    if real:
        dtype, device = model_dtype_device(unwrap(model))
        tap = LayerTap(model, [r.name for r in rows])
        tap.run(sample[None].to(device, dtype), forward_args=fa)
        picked = {r.name: layout.pick(tap.outputs[r.name]) for r in rows}
    counts = {}
    for row in rows:
        shape = tuple(picked[row.name].shape) if real else row.output_shape
        check_channels_first("build_atlas", row.name, modules[row.name], shape, layout)
        tensor = layout.apply(picked[row.name]) if real else None
        dims = tuple(tensor.shape) if tensor is not None else shape
        counts[row.name] = int(dims[1]) if len(dims) > 1 else 1
    return counts


def _example_args(fa: ForwardArgs, examples: int | None, rows: list[int]) -> ForwardArgs:
    """``fa`` for the data's examples at ``rows``: a tensor whose first dimension is ``examples`` is indexed.

    ``examples`` None (data of unknown length): ``fa`` as given.
    """
    if examples is None or not fa:
        return fa
    return fa.take(torch.tensor(rows, dtype=torch.long), batch=examples)


def _first_inputs(data: Any, most: int) -> Tensor:
    """The data's first examples' ``x`` as a batch: at most ``most``, of a Dataset or of its first batch.

    The first one sizes what the atlas draws; the batch shows which layers are nonnegative.
    """
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        if isinstance(data, Sized) and len(data) == 0:
            raise InvalidArgumentError("data is empty: there are no examples for the atlas.")
        xs = []
        for i in range(min(most, len(data)) if isinstance(data, Sized) else 1):
            item = data[i]
            xs.append(item[0] if isinstance(item, tuple | list) else item)
        if all(isinstance(x, Tensor) for x in xs):
            return torch.stack(xs)
    source: Iterable[Any] = data
    for batch in source:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if isinstance(x, Tensor) and x.dim() >= 2:
            return x[:most]
        break
    raise InvalidArgumentError(
        "the atlas needs data whose items (or batches) are a tensor x or a tuple (x, y, ...)."
    )
