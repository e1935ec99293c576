"""bench/featureviz.py's accentuation and quality runs (imported by it; not run on its own).

Accentuation. Each of the eight photographs is accentuated towards one of the bench's classes
(photograph ``i`` towards ``CLASSES[i]``): ``convlens.accentuate(lite0, class_logit(targets),
photographs, layer=ACCENT_LAYER, normalize="lecture", steps=...)``. Per picture: Lite0's probability
of the target before and after, Lite1's after (transfer), the L2 distance in pixels to the
photograph, the target logit's gain against the gain of uniform-direction Gaussian noise of the same
L2 distance (clipped to [0, 1]; the median of ``NOISE_DRAWS`` draws), and the distance to the
photograph of the free (noise-started) recommended class picture of the same class.

Quality. The three trust numbers of the recommended recipe, from the library itself:
``ActivationMaximizer(..., reference=..., seeds=SEEDS, transfer=Transfer(lite1, targets, size))``.
For the channels job the reference is each channel's top activation (mean over positions) over the
eight photographs; for the classes job, each class logit's top over them; stability over ``SEEDS``
seeds; transfer for the classes job.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from convlens import Transfer, accentuate
from convlens.core.tap import LayerTap
from convlens.featureviz.maximize import ActivationMaximizer
from convlens.featureviz.objectives import channel, class_logit

#: The layer whose representation of the photograph an accentuation stays close to.
ACCENT_LAYER = "_blocks.8"
#: Seeds of the stability number, and Gaussian-noise draws per picture.
SEEDS = 3
NOISE_DRAWS = 5


@torch.no_grad()
def _logits(model: nn.Module, pictures: Tensor) -> Tensor:
    out: Tensor = model((pictures - 0.5) / 0.5)
    return out


def accentuation(
    lite0: nn.Module,
    lite1: nn.Module,
    lite1_size: int,
    photos: Tensor,
    *,
    classes: Sequence[int],
    free: Tensor | None,
    steps: int,
) -> tuple[dict[str, Any], Tensor]:
    """The accentuation run's numbers and pictures (see the module's docstring)."""
    targets = [classes[i % len(classes)] for i in range(len(photos))]
    res = accentuate(
        lite0, class_logit(targets), photos, layer=ACCENT_LAYER, normalize="lecture", steps=steps
    )
    assert res.picture is not None
    made = res.picture.float()
    rows = torch.arange(len(photos))
    t = torch.tensor(targets)
    before, after = _logits(lite0, photos), _logits(lite0, made)
    distance = (made - photos).flatten(1).norm(dim=1)
    generator = torch.Generator().manual_seed(0)
    noise_gain = []
    for i in range(len(photos)):
        gains = []
        for _ in range(NOISE_DRAWS):
            noise = torch.randn(photos[i].shape, generator=generator)
            noisy = (photos[i] + noise / noise.norm() * distance[i]).clamp(0, 1)
            gains.append(float(_logits(lite0, noisy[None])[0, t[i]] - before[i, t[i]]))
        noise_gain.append(statistics.median(gains))
    p1 = _logits(lite1, torch.nn.functional.interpolate(made, size=(lite1_size,) * 2, mode="bilinear",
                                                        antialias=True, align_corners=False)).softmax(1)  # fmt: skip
    record: dict[str, Any] = {
        "layer": ACCENT_LAYER,
        "steps": steps,
        "targets": targets,
        "p_before": before.softmax(1)[rows, t].tolist(),
        "p_after": after.softmax(1)[rows, t].tolist(),
        "p_lite1_after": p1[rows, t].tolist(),
        "logit_gain": (after[rows, t] - before[rows, t]).tolist(),
        "noise_gain": noise_gain,
        "distance": distance.tolist(),
    }
    if free is not None:
        index = {c: j for j, c in enumerate(classes)}
        record["free_distance"] = [float((free[index[c]] - photos[i]).norm()) for i, c in enumerate(targets)]
    return record, made


def quality(
    lite0: nn.Module, lite1: nn.Module, lite1_size: int, photos: Tensor, *, classes: Sequence[int], layer: str,
    channels: Sequence[int], steps: int,
) -> dict[str, Any]:  # fmt: skip
    """The library's trust numbers for the recommended recipe on both jobs."""
    with torch.no_grad(), LayerTap(lite0, [layer]) as tap:
        logits = lite0((photos - 0.5) / 0.5)
        acts = tap[layer].mean((2, 3))
    out: dict[str, Any] = {"seeds": SEEDS, "reference": "the top over the eight photographs"}
    shape = (len(channels), 3, 224, 224)
    res = ActivationMaximizer(
        lite0, channel(layer, list(channels)), input_shape=shape, normalize="lecture", steps=steps,
        reference=acts[:, list(channels)].amax(0), seeds=SEEDS,
    ).run()  # fmt: skip
    out["channels"] = _numbers(res.quality)
    shape = (len(classes), 3, 224, 224)
    res = ActivationMaximizer(
        lite0, class_logit(list(classes)), input_shape=shape, normalize="lecture", steps=steps,
        reference=logits[:, list(classes)].amax(0), seeds=SEEDS,
        transfer=Transfer(lite1, list(classes), size=lite1_size),
    ).run()  # fmt: skip
    out["classes"] = _numbers(res.quality)
    return out


def _numbers(q: Any) -> dict[str, list[float] | None]:
    return {
        name: None if getattr(q, name) is None else [float(v) for v in getattr(q, name)]
        for name in ("relative", "stability", "transfer")
    }


def accent_lines(record: dict[str, Any], names: Sequence[str], photo_names: Sequence[str]) -> list[str]:
    """The accentuation table, Markdown."""
    lines = [
        "",
        f"Accentuation: each photograph towards a class, {record['steps']} steps, staying close at "
        f"{record['layer']} (weight 10).",
        "",
        "| photograph | target | Lite0 p before | after | Lite1 p after | logit gain | same-distance noise gain "
        "| L2 distance | free picture's distance |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    free = record.get("free_distance")
    for i, name in enumerate(photo_names):
        lines.append(
            f"| {name} | {names[record['targets'][i]]} | {record['p_before'][i]:.3f} | {record['p_after'][i]:.3f} "
            f"| {record['p_lite1_after'][i]:.3f} | {record['logit_gain'][i]:.2f} | {record['noise_gain'][i]:.2f} "
            f"| {record['distance'][i]:.1f} | {'-' if free is None else f'{free[i]:.1f}'} |"
        )
    med = statistics.median
    lines.append(
        f"| median | | {med(record['p_before']):.3f} | {med(record['p_after']):.3f} | "
        f"{med(record['p_lite1_after']):.3f} | {med(record['logit_gain']):.2f} | {med(record['noise_gain']):.2f} "
        f"| {med(record['distance']):.1f} | {'-' if free is None else f'{med(free):.1f}'} |"
    )
    return lines


def quality_lines(record: dict[str, Any]) -> list[str]:
    """The quality table, Markdown: per job, the median and range of each number."""
    lines = [
        "",
        f"Quality of the recommended pictures (the library's numbers; reference: {record['reference']}; "
        f"stability over {record['seeds']} seeds).",
        "",
        "| job | relative activation, median (min-max) | stability, median (min-max) | transfer, median (min-max) |",
        "|---|---:|---:|---:|",
    ]
    for job in ("classes", "channels"):
        cells = []
        for name in ("relative", "stability", "transfer"):
            values = record[job][name]
            cells.append(
                "-"
                if values is None
                else f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
            )
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    return lines
