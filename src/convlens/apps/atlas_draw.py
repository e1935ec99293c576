"""Every rank draws: the atlas's pictures as jobs, shared out over the ranks of ``torchrun``, gathered to rank 0.

Nearly all of an atlas's time is feature visualization. :func:`~convlens.apps.atlas.build_atlas`
therefore cuts its pictures into jobs and :func:`run_jobs` has every rank draw its share:

- A layer's units to draw are cut into chunks aligned on unit numbers (units 0-3, 4-7, ... with
  :func:`chunk_size` 4; 16 for a model of under 10^8 multiply-accumulates per picture, where a bigger
  batch costs nearly nothing more), each chunk one batched maximization seeded with ``seed`` plus the
  unit number it starts at. A layer's concept pictures are one more job.
- A job's pictures depend on its units and its seed only, never on the rank that draws them or on how
  many ranks there are: the site is byte-identical to one process's. One caveat is PyTorch's, not
  ours: CPU kernels (oneDNN's convolutions) round differently with a different number of intra-op
  threads, and a hundred steps of Adam make that last bit visible. Processes with the same thread count
  (``torchrun`` sets ``OMP_NUM_THREADS=1`` per rank) draw the same bytes; the digits CNN's plain
  convolutions draw the same bytes with any.
- :func:`assign` shares the jobs out by their cost (pictures times the multiply-accumulates up to the
  layer, as the maximizer stops after it): longest first, each to the least loaded rank, the lowest
  rank on ties. Every rank computes the same assignment; none talks to another until the end, when
  :func:`run_jobs` gathers every rank's results to rank 0 (over gloo: an NCCL job gets a gloo group
  for the pictures, as they are Python objects on the CPU).

Example:
    >>> jobs = unit_jobs("conv", range(10), size=4, seed=0, cost=2.0)
    >>> [(job.units, job.seed) for job in jobs]
    [((0, 1, 2, 3), 0), ((4, 5, 6, 7), 4), ((8, 9), 8)]
    >>> assign(jobs, 2)
    [0, 1, 0]
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch.distributed as dist
from PIL import Image
from torch import Tensor

from convlens.core.distributed import rank, world_size
from convlens.models.images import deprocess

__all__ = ["Job", "as_rgb", "assign", "chunk_size", "png_bytes", "run_jobs", "scaled", "unit_jobs"]

T = TypeVar("T")

#: Below this many multiply-accumulates per picture, a model's units are drawn 16 at a time, else 4 (a
#: batch of 4 already keeps a CPU busy on an ImageNet model: 8 is no faster per picture).
SMALL_MODEL = 10**8


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """Pictures drawn as one batch: units of a layer (or its concepts), their seed and their cost."""

    layer: str
    units: tuple[int, ...]
    seed: int
    cost: float
    concepts: bool = False


def chunk_size(macs: int) -> int:
    """How many units of a model one job draws: 16 below :data:`SMALL_MODEL` MACs per picture, else 4.

    Example:
        >>> chunk_size(50_000), chunk_size(4 * 10**8)
        (16, 4)
    """
    return 16 if macs < SMALL_MODEL else 4


def unit_jobs(layer: str, units: Iterable[int], *, size: int, seed: int, cost: float) -> list[Job]:
    """``units`` of ``layer`` in chunks aligned on multiples of ``size``, each seeded with ``seed`` + where it starts.

    ``cost``: one picture's (the chunk's is that times its units).
    """
    chunks: dict[int, list[int]] = {}
    for unit in units:
        chunks.setdefault(unit // size, []).append(unit)
    return [
        Job(layer=layer, units=tuple(chunk), seed=seed + at * size, cost=cost * len(chunk))
        for at, chunk in sorted(chunks.items())
    ]


def assign(jobs: Sequence[Job], world: int) -> list[int]:
    """The rank that draws each job: longest first, to the least loaded rank (the lowest on ties)."""
    load = [0.0] * world
    owners = [0] * len(jobs)
    for i in sorted(range(len(jobs)), key=lambda i: (-jobs[i].cost, i)):
        owner = min(range(world), key=lambda r: (load[r], r))
        owners[i] = owner
        load[owner] += jobs[i].cost
    return owners


def run_jobs(jobs: Sequence[Job], draw: Callable[[Job], T]) -> dict[int, T]:
    """Draw this rank's share of ``jobs``; rank 0 returns every job's result by index, the others ``{}``.

    Without ``torch.distributed`` initialized, this process draws them all.
    """
    world, me = world_size(), rank()
    owners = assign(jobs, world)
    mine = {i: draw(job) for i, job in enumerate(jobs) if owners[i] == me}
    if world == 1:
        return mine
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    assert group is None or isinstance(group, dist.ProcessGroup)  # every rank is a member
    gathered: list[Any] | None = [None] * world if me == 0 else None
    dist.gather_object(mine, gathered, dst=0, group=group)
    if gathered is None:
        return {}
    merged: dict[int, T] = {}
    for part in gathered:
        merged.update(part)
    return merged


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


def scaled(picture: np.ndarray, size: int) -> Image.Image:
    """``picture`` scaled (nearest for small ones, as pixels are meant to be seen) to ``size`` on its long side."""
    img = Image.fromarray(np.ascontiguousarray(picture))
    w, h = img.size
    scale = size / max(w, h, 1)
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


def png_bytes(img: Image.Image) -> bytes:
    """``img`` as the bytes of a PNG file (what ``img.save(path)`` writes)."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
