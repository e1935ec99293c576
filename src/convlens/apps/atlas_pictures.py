"""What the atlas draws of a unit: its feature visualization with where it matters, and its top example accentuated.

- :func:`draw_units`: one job's units in one batched maximization, each picture as a PNG, the same
  picture with the importance mask as its transparency (MACO's accumulated gradient magnitude,
  :func:`convlens.render.masked`), its final objective, and the activation it reaches relative to
  the unit's top dataset example (``Job.references``).
- :func:`draw_accent`: a unit's top example accentuated (:func:`convlens.accentuate`): started at
  the example, anchored to the example's representation in the unit's own layer, for half the
  atlas's steps (:func:`accent_steps`); a job of its own, one unit, so its picture never depends on
  which other units are drawn.

Both run on whichever rank draws the job (:mod:`convlens.apps.atlas_draw`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from convlens.apps.atlas_draw import Job, as_rgb, png_bytes, scaled
from convlens.core.inputs import ForwardArgs
from convlens.core.layouts import ReshapeSpec
from convlens.core.values import model_dtype_device
from convlens.featureviz.accentuate import accentuate
from convlens.featureviz.neurons import NeuronVisualizer, TopExamplesResult
from convlens.featureviz.objectives import channel
from convlens.models.images import PRESETS
from convlens.render import masked

__all__ = [
    "NO_INK",
    "THUMB",
    "Drawn",
    "accent_steps",
    "deliver_units",
    "draw_accent",
    "draw_units",
]

#: The weight of the L1 penalty ("no ink") on the class pictures of a model of [0, 1] pictures: the
#: tour's recipe, which draws digits the digits CNN reads as their class (without it: saturated noise).
NO_INK = 100.0
#: The side of a unit's picture on its page, in pixels.
THUMB = 96


def accent_steps(steps: int) -> int:
    """An accentuation's Adam steps for an atlas of ``steps``: half (it starts at a picture, not at noise).

    Example:
        >>> accent_steps(128), accent_steps(1)
        (64, 1)
    """
    return max(1, steps // 2)


@dataclass(frozen=True, slots=True)
class Drawn:
    """One unit's pictures as PNG bytes: its visualization, the same with the mask as alpha, its top example accentuated.

    ``accent``: the accentuated picture and the unit's activation it reaches, or None (no example).
    """

    png: bytes
    mask: bytes
    value: float
    relative: float | None
    accent: tuple[bytes, float] | None = None
    stability: float | None = None


def draw_units(
    model: nn.Module,
    job: Job,
    *,
    steps: int,
    seeds: int = 1,
    preset: str | None,
    shape: tuple[int, ...],
    reshape: ReshapeSpec,
    no_ink: bool,
    forward_args: ForwardArgs,
    one_args: ForwardArgs,
) -> list[Drawn]:
    """The job's units' feature visualizations, each with its mask, final objective and relative activation.

    ``forward_args``: the model's other arguments for the batch of the job's units; ``one_args``: for
    one picture (each kept unit's top example accentuated).
    """
    nv = NeuronVisualizer(model, job.layer, input_shape=shape, reshape=reshape)
    units = list(job.units)
    reference = list(job.references) if job.references else None
    if preset is None:
        viz = nv.maximize(
            units, steps=steps, seed=job.seed, value_range=(0.0, 1.0), l1=NO_INK if no_ink else 0.0,
            forward_args=forward_args, reference=reference, seeds=seeds,
        )  # fmt: skip
        pictures = viz.image.detach().float().clamp(0, 1).cpu()
    else:
        viz = nv.maximize(
            units, steps=steps, seed=job.seed, forward_args=forward_args, reference=reference, seeds=seeds,
            normalize=preset,  # type: ignore[arg-type]  # checked against PRESETS in build_atlas
        )  # fmt: skip
        assert viz.picture is not None  # with normalize, the picture in [0, 1]
        pictures = viz.picture.detach().float().cpu()
    assert viz.mask is not None  # every maximization accumulates one
    drawn = []
    for j, unit in enumerate(units):
        example = job.examples[j] if job.examples else None
        accent = None
        if example is not None:  # seeded by the unit (job.seed is seed plus the chunk's first unit)
            accent = draw_accent(
                model, job.layer, unit, example, steps=steps, seed=job.seed + j, preset=preset, reshape=reshape,
                forward_args=one_args,
            )  # fmt: skip
        rgb = as_rgb(pictures[j], None)
        relative = None if viz.quality.relative is None else float(viz.quality.relative[j])
        drawn.append(
            Drawn(
                png=png_bytes(scaled(rgb, THUMB * 2)),
                mask=png_bytes(scaled(masked(rgb, viz.mask[j].cpu()), THUMB * 2)),
                value=float(viz.values[j]),
                relative=None if relative is None or math.isnan(relative) else relative,
                accent=accent,
                stability=None if viz.quality.stability is None else float(viz.quality.stability[j]),
            )
        )
    return drawn


def draw_accent(
    model: nn.Module,
    layer: str,
    unit: int,
    example: Tensor,
    *,
    steps: int,
    seed: int,
    preset: str | None,
    reshape: ReshapeSpec,
    forward_args: ForwardArgs,
) -> tuple[bytes, float]:
    """A unit's top example (a model input) accentuated, as PNG bytes, with the unit's activation reached.

    One picture at a time, seeded by the unit: it never depends on which other units are drawn.
    ``forward_args``: those of a batch of one.
    """
    dtype, device = model_dtype_device(model)
    x = example[None].to(device, dtype)
    objective = channel(layer, unit, reshape=reshape)
    if preset is None:
        res = accentuate(
            model, objective, x.float().clamp(0, 1).to(dtype), layer=layer, steps=accent_steps(steps),
            seed=seed, value_range=(0.0, 1.0), forward_args=forward_args,
        )  # fmt: skip
        picture = res.image.detach().float().clamp(0, 1).cpu()[0]
    else:
        recipe = PRESETS[preset]
        mean, std = (
            torch.tensor(v, device=device, dtype=dtype).view(1, -1, 1, 1) for v in (recipe.mean, recipe.std)
        )
        seed_picture = (x * std + mean).clamp(0, 1)
        res = accentuate(
            model, objective, seed_picture, layer=layer, steps=accent_steps(steps), seed=seed,
            normalize=preset, forward_args=forward_args,  # type: ignore[arg-type]  # a preset's name
        )  # fmt: skip
        assert res.picture is not None
        picture = res.picture.detach().float().cpu()[0]
    return png_bytes(scaled(as_rgb(picture, None), THUMB * 2)), float(res.values[0])


def with_examples(
    jobs: Sequence[Job],
    units: Sequence[int],
    best: TopExamplesResult,
    *,
    accent_cost: float,
    accents: bool = True,
) -> list[Job]:
    """The chunks with their units' top activations (NaN where unknown) and their kept units' top examples.

    ``best`` holds ``units``' rows (inputs kept); ``accent_cost`` is one accentuation's, added per example;
    ``accents=False``: no examples, so nothing is accentuated.
    """
    row = {u: j for j, u in enumerate(units)}
    have = best.inputs is not None and best.activations.shape[1] > 0
    out = []
    for job in jobs:
        tops = tuple(float(best.activations[row[u], 0]) if have and u in row else math.nan for u in job.units)
        examples = tuple(
            best.inputs[row[u], 0].detach().cpu()
            if accents
            and best.inputs is not None
            and have
            and u in job.keep
            and u in row
            and math.isfinite(tops[i])
            else None
            for i, u in enumerate(job.units)
        )
        extra = accent_cost * sum(e is not None for e in examples)
        out.append(dataclasses.replace(job, references=tops, examples=examples, cost=job.cost + extra))
    return out


def deliver_units(
    job: Job, drawn: Sequence[Drawn], folder: Callable[[int], Path]
) -> dict[int, dict[str, Any]]:
    """Write a drawn job's pictures into its units' cache folders; each kept unit's part of its ``unit.json``."""
    parts = {}
    for unit, one in zip(job.units, drawn, strict=True):
        if unit not in job.keep:
            continue  # drawn with its chunk: in the cache already, or not shown
        (folder(unit) / "viz.png").write_bytes(one.png)
        (folder(unit) / "mask.png").write_bytes(one.mask)
        if one.accent is not None:
            (folder(unit) / "accent.png").write_bytes(one.accent[0])
        parts[unit] = {"value": one.value, "relative": one.relative, "stability": one.stability, "mask": True}
        parts[unit] |= {"accent": None if one.accent is None else one.accent[1]}
    return parts
