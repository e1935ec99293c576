"""Every rank draws: the atlas's pictures as jobs, shared out over the ranks of ``torchrun``, gathered to rank 0.

Nearly all of an atlas's time is feature visualization. :func:`~convlens.apps.atlas.build_atlas`
therefore cuts its pictures into jobs and :func:`run_jobs` has every rank draw its share:

- A layer's units to draw are cut into chunks aligned on unit numbers (units 0-3, 4-7, ... with
  :func:`chunk_size` 4; 16 for a model of under 10^8 multiply-accumulates per picture, where a bigger
  batch costs nearly nothing more; 32 on a GPU), each chunk one batched maximization seeded with ``seed`` plus the
  unit number it starts at, and drawn whole even when the cache holds some of its units or fewer are
  shown (those pictures are dropped). A layer's concept pictures are one more job.
- A job's pictures depend on its units and its seed only, never on the rank that draws them, on how
  many ranks there are, or on what the cache held: the site is byte-identical to one process's, and a
  resumed build's to a fresh one's. One caveat is PyTorch's, not
  ours: CPU kernels (oneDNN's convolutions) round differently with a different number of intra-op
  threads, and a hundred steps of Adam make that last bit visible. Processes with the same thread count
  (``torchrun`` sets ``OMP_NUM_THREADS=1`` per rank) draw the same bytes; the digits CNN's plain
  convolutions draw the same bytes with any.
- :func:`assign` shares the jobs out by their cost (pictures times the multiply-accumulates up to the
  layer, as the maximizer stops after it): longest first, each to the least loaded rank, the lowest
  rank on ties. Every rank computes the same assignment; :func:`run_jobs` goes in rounds, each rank
  drawing one job per round, and gathers each round's pictures to rank 0, which writes them at once
  (over gloo: an NCCL job gets a gloo group for the pictures, as they are Python objects on the CPU).

Example:
    >>> jobs = unit_jobs("conv", range(10), size=4, seed=0, cost=2.0, total=12)
    >>> [(job.units, job.keep, job.seed) for job in jobs]
    [((0, 1, 2, 3), (0, 1, 2, 3), 0), ((4, 5, 6, 7), (4, 5, 6, 7), 4), ((8, 9, 10, 11), (8, 9), 8)]
    >>> assign(jobs, 2)
    [0, 1, 0]
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw
from torch import Tensor

from convlens.core.distributed import rank, world_size
from convlens.models.images import deprocess

__all__ = [
    "BOX",
    "PANEL",
    "Job",
    "as_rgb",
    "assign",
    "chunk_size",
    "framed",
    "png_bytes",
    "run_jobs",
    "scaled",
    "unit_jobs",
]

T = TypeVar("T")

PANEL = 112  # pixels: an example on a unit's page or in a concepts section
BOX = (255, 220, 0)  # the outline of the window an example's peak sees

#: Below this many multiply-accumulates per picture, a model's units are drawn 16 at a time, else 4 (a
#: batch of 4 already keeps a CPU busy on an ImageNet model: 8 is no faster per picture).
SMALL_MODEL = 10**8


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """Pictures drawn as one batch: units of a layer (or its concepts), their seed and their cost.

    ``units`` are drawn (a whole chunk, so that its pictures are always the same); ``keep`` are those
    written (the chunk's units to compute: the others are in the cache or not shown). ``references``:
    each drawn unit's top dataset activation (NaN where unknown), for the activation a picture reaches
    relative to it. ``examples``: each drawn unit's top example (its input) to accentuate, None for
    the units not kept.
    """

    layer: str
    units: tuple[int, ...]
    seed: int
    cost: float
    keep: tuple[int, ...] = ()
    concepts: bool = False
    references: tuple[float, ...] = ()
    examples: tuple[Tensor | None, ...] = ()


def chunk_size(macs: int, device: torch.device | str = "cpu") -> int:
    """How many units of a model one job draws: 16 below :data:`SMALL_MODEL` MACs per picture, else 4; 32 on a GPU.

    A CPU is busy with a batch of 4 ImageNet pictures (8 are no faster per picture); a GPU is bound by
    its launches at small batches, so it draws 32 at a time.

    Example:
        >>> chunk_size(50_000), chunk_size(4 * 10**8), chunk_size(4 * 10**8, "cuda")
        (16, 4, 32)
    """
    if torch.device(device).type == "cuda":
        return 32
    return 16 if macs < SMALL_MODEL else 4


def unit_jobs(
    layer: str,
    units: Iterable[int],
    *,
    size: int,
    seed: int,
    cost: float,
    total: int,
) -> list[Job]:
    """The chunks of ``layer`` that hold ``units``: each a whole chunk of ``size`` units, seeded by where it starts.

    A chunk is units ``[start, start + size)`` of the layer's ``total``, drawn whole even when only some
    of them are to compute, so that a unit's picture never depends on which units the cache holds or how
    many are shown. ``cost``: one picture's (the chunk's is that times its units).
    """
    chunks: dict[int, list[int]] = {}
    for unit in units:
        chunks.setdefault(unit // size, []).append(unit)
    jobs = []
    for at, keep in sorted(chunks.items()):
        drawn = tuple(range(at * size, min((at + 1) * size, total)))
        jobs.append(
            Job(layer=layer, units=drawn, seed=seed + at * size, cost=cost * len(drawn), keep=tuple(keep))
        )
    return jobs


def assign(jobs: Sequence[Job], world: int) -> list[int]:
    """The rank that draws each job: longest first, to the least loaded rank (the lowest on ties)."""
    load = [0.0] * world
    owners = [0] * len(jobs)
    for i in sorted(range(len(jobs)), key=lambda i: (-jobs[i].cost, i)):
        owner = min(range(world), key=lambda r: (load[r], r))
        owners[i] = owner
        load[owner] += jobs[i].cost
    return owners


def run_jobs(jobs: Sequence[Job], draw: Callable[[Job], T], deliver: Callable[[int, T], None]) -> None:
    """Draw this rank's share of ``jobs``; rank 0 ``deliver`` s every job's result (its index, the result).

    The ranks go in rounds: in round ``r`` each rank draws its ``r``-th job (by the assignment's order:
    the costliest first, so a round's jobs are alike in cost) and rank 0 gathers and delivers that
    round's results at once, so what is drawn is written as the build goes (an interrupted build keeps
    it) and rank 0 holds one round of pictures at a time. Without ``torch.distributed`` initialized,
    this process draws and delivers them all, one by one.
    """
    world, me = world_size(), rank()
    owners = assign(jobs, world)
    order = sorted(range(len(jobs)), key=lambda i: (-jobs[i].cost, i))
    queues = [[i for i in order if owners[i] == r] for r in range(world)]
    if world == 1:
        for i in queues[0]:
            deliver(i, draw(jobs[i]))
        return
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    assert group is None or isinstance(group, dist.ProcessGroup)  # every rank is a member
    for round_ in range(max(len(queue) for queue in queues)):
        mine = {i: draw(jobs[i]) for i in queues[me][round_ : round_ + 1]}
        gathered: list[Any] | None = [None] * world if me == 0 else None
        dist.gather_object(mine, gathered, dst=0, group=group)
        for part in gathered or []:
            for i, result in sorted(part.items()):
                deliver(i, result)


# -- pictures ------------------------------------------------------------------------------------------


def as_rgb(x: Tensor, preset: str | None) -> np.ndarray:
    """A model input (``(C, H, W)``) as an ``(H, W, 3)`` uint8 picture."""
    if preset is not None and x.shape[0] == 3:
        return deprocess(x, preset=preset)  # type: ignore[arg-type]
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        x = (x - low) / max(high - low, 1e-12)
    grey = x.mean(0, keepdim=True) if x.shape[0] != 3 else x
    rgb = grey.expand(3, *grey.shape[1:]) if grey.shape[0] == 1 else grey
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def scaled(picture: np.ndarray | Image.Image, size: int) -> Image.Image:
    """``picture`` scaled (nearest for small ones, as pixels are meant to be seen) to ``size`` on its long side."""
    img = picture if isinstance(picture, Image.Image) else Image.fromarray(np.ascontiguousarray(picture))
    w, h = img.size
    scale = size / max(w, h, 1)
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


def framed(picture: np.ndarray, box: list[int] | None, size: int = PANEL) -> Image.Image:
    """``picture`` at ``size`` with the window ``box`` (top, left, bottom, right; ends exclusive) outlined."""
    img = scaled(picture, size)
    if box is not None:
        scale = img.size[0] / picture.shape[1]
        top, left, bottom, right = (v * scale for v in box)
        ImageDraw.Draw(img).rectangle((left, top, right - 1, bottom - 1), outline=BOX, width=2)
    return img


def png_bytes(img: Image.Image) -> bytes:
    """``img`` as the bytes of a PNG file (what ``img.save(path)`` writes)."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
