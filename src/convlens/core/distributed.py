"""Data as a stream of batches with their positions, one shard per rank under ``torchrun``.

Dataset-level work (:meth:`~convlens.NeuronVisualizer.top_examples`,
:func:`~convlens.evaluate`) reads its data through :func:`shard`. In one
process a Dataset is read in order; under ``torchrun`` (``torch.distributed``
initialized) each rank reads its :class:`~torch.utils.data.DistributedSampler`
shard, and the padding that sampler adds to even out the shards is dropped, so
no example counts twice. A DataLoader keeps its own sampler: with a
DistributedSampler it is a shard like ours; with any other every rank reads all
of it and nothing needs merging. Every batch comes with the positions of its
examples in the full data, so that ranks can merge (:func:`all_sum`,
:func:`merge_top`) into what one process would have found.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Final

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from convlens.errors import InvalidTypeError

__all__ = [
    "BATCH_SIZE",
    "Chunk",
    "Shard",
    "all_sum",
    "data_length",
    "merge_top",
    "rank",
    "ranked",
    "shard",
    "share_rows",
    "world_size",
]


def data_length(data: object) -> int | None:
    """How many examples the data holds, where it says: a map-style Dataset's, or a DataLoader's dataset's.

    None for an iterable of batches or an ``IterableDataset`` (their length is not known before the end).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data_length(TensorDataset(torch.zeros(5, 1))), data_length([torch.zeros(2, 1)])
        (5, None)
    """
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(dataset, Dataset) and not isinstance(dataset, IterableDataset):
        try:
            return len(dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    return None


#: How many examples run at once, wherever reading data takes a ``batch_size``: one default for the
#: whole package (top examples, deletion and insertion, evaluate, the atlas, the command line).
BATCH_SIZE: Final = 64

_LAST = torch.iinfo(torch.int64).max  # the position of a padding entry: after every real one


def world_size() -> int:
    """How many processes share the work: ``torch.distributed``'s world size, 1 when it is not initialized."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank, 0 when ``torch.distributed`` is not initialized."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One batch of real examples and where they sit in the full data.

    Attributes:
        batch: The batch as the loader gave it (``x`` or ``(x, y, ...)``), the
            sampler's padding cut off; it may hold no example at all.
        positions: ``(len(batch),)`` int64 positions in the full data.
    """

    batch: Any
    positions: Tensor

    def split(self) -> tuple[Tensor, Any]:
        """The batch's inputs ``x`` and its labels ``y`` (None when its items are ``x`` alone).

        Raises:
            InvalidTypeError: ``x`` is not a tensor.

        Example:
            >>> x, y = Chunk((torch.zeros(2, 1), torch.tensor([3, 4])), torch.arange(2)).split()
            >>> tuple(x.shape), y.tolist()
            ((2, 1), [3, 4])
        """
        parts = self.batch if isinstance(self.batch, tuple | list) else (self.batch,)
        x = parts[0] if parts else None
        if not isinstance(x, Tensor):
            raise InvalidTypeError(
                f"data items must be a tensor x or a tuple (x, y, ...); a batch gave {type(x).__name__}."
            )
        return x, parts[1] if len(parts) > 1 else None


@dataclass(frozen=True, slots=True)
class Shard:
    """What one process reads: its batches, and whether ranks must merge what they found.

    Attributes:
        loader: The batches this process iterates.
        merge: True when the ranks read different parts of the data (merge
            with :func:`all_sum` and :func:`merge_top`); False when this
            process reads all of it.
        indices: The position in the full data of each example the loader
            yields, in order (None: positions count up from 0).
        real: How many of those examples are real; the rest is the sampler's padding.
    """

    loader: Iterable[Any]
    merge: bool
    indices: Sequence[int] | None
    real: int | None

    @property
    def ordered(self) -> bool:
        """Whether positions only ever increase, batch after batch (a sequential read)."""
        indices = self.indices
        return indices is None or all(a < b for a, b in itertools.pairwise(indices))

    def chunks(self, *, progress: bool, desc: str) -> Iterable[Chunk]:
        """This shard's chunks, under a tqdm bar on rank 0 when ``progress`` and tqdm is installed.

        tqdm hides the bar itself when the output is not a terminal.
        """
        if not progress or rank() != 0:
            return self
        try:
            tqdm = importlib.import_module("tqdm").tqdm
        except ImportError:
            return self
        total = len(self.loader) if isinstance(self.loader, Sized) else None
        bar: Iterable[Chunk] = tqdm(self, total=total, desc=desc, unit="batch", disable=None, leave=False)
        return bar

    def __iter__(self) -> Iterator[Chunk]:
        seen = 0
        for batch in self.loader:
            size = _length(batch)
            keep = size if self.real is None else max(0, min(size, self.real - seen))
            positions = (
                torch.arange(seen, seen + keep)
                if self.indices is None
                else torch.as_tensor(list(self.indices[seen : seen + keep]), dtype=torch.int64)
            )
            seen += size
            yield Chunk(batch if keep == size else _head(batch, keep), positions)


def shard(data: object, *, batch_size: int, num_workers: int) -> Shard:
    """This process's part of ``data`` (a Dataset, a DataLoader or an iterable of batches).

    A Dataset is read in order, ``batch_size`` at a time with ``num_workers``
    loader workers; under ``torchrun`` each rank reads its DistributedSampler
    shard (no shuffling, padding dropped). A DataLoader is read as it is (its
    sampler's shard, when that is a DistributedSampler). An iterable of
    batches, or an IterableDataset, is read whole by every rank.

    Raises:
        InvalidTypeError: ``data`` is none of those.
    """
    ranks = world_size()
    if isinstance(data, DataLoader):
        sampler = _distributed_sampler(data)
        if sampler is None:
            return Shard(data, merge=False, indices=None, real=None)
        indices, real = _sampler_shard(sampler)
        return Shard(data, merge=ranks > 1, indices=indices, real=real)
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        # Its own generator: iterating a DataLoader otherwise draws from the global RNG.
        options: dict[str, Any] = {
            "batch_size": batch_size,
            "num_workers": num_workers,
            "generator": torch.Generator(),
        }
        if ranks == 1:
            return Shard(DataLoader(data, shuffle=False, **options), merge=False, indices=None, real=None)
        dsampler: DistributedSampler[Any] = DistributedSampler(data, shuffle=False, drop_last=False)
        indices, real = _sampler_shard(dsampler)
        loader = DataLoader(data, sampler=dsampler, **options)
        return Shard(loader, merge=True, indices=indices, real=real)
    if isinstance(data, Iterable) and not isinstance(data, Tensor | str | bytes):
        return Shard(data, merge=False, indices=None, real=None)
    raise InvalidTypeError(
        f"data must be a torch Dataset, a DataLoader or an iterable of batches; got {type(data).__name__}."
    )


def all_sum(tensor: Tensor, merge: bool) -> Tensor:
    """``tensor`` summed over the ranks (in float64 on the way) when ``merge``, else as it is."""
    if not merge:
        return tensor
    total = tensor.detach().to(_comm_device(), torch.float64)
    dist.all_reduce(total)
    return total.to(tensor.device, tensor.dtype)


def merge_top(
    values: Tensor, positions: Tensor, payloads: Sequence[Tensor], k: int, merge: bool
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The ``k`` best per row over every rank's ``(units, <= k)`` values, with their positions.

    Highest value first, ties to the lower position: the order one process
    reading the data keeps. Each of ``payloads`` (int64, shaped like
    ``values``) follows its value. Without ``merge``, all as given.
    """
    if not merge:
        return values, positions, list(payloads)
    units, have = values.shape
    device = _comm_device()

    def gathered(part: Tensor, fill: float | int, dtype: torch.dtype) -> Tensor:
        padded = torch.full((units, k), fill, dtype=dtype, device=device)
        padded[:, :have] = part.to(device, dtype)
        parts = [torch.empty_like(padded) for _ in range(world_size())]
        dist.all_gather(parts, padded)
        return torch.cat(parts, 1)

    every = [
        gathered(values, float("-inf"), torch.float64),
        gathered(positions, _LAST, torch.int64),
        *(gathered(p, 0, torch.int64) for p in payloads),
    ]
    every = ranked(every[0], every[1], every[2:])
    real = int((every[1][0] != _LAST).sum()) if units else 0
    best = [part[:, : min(k, real)] for part in every]
    return (
        best[0].to(values.device, values.dtype),
        best[1].to(positions.device),
        [b.to(p.device) for b, p in zip(best[2:], payloads, strict=True)],
    )


def share_rows(rows: dict[int, Tensor], wanted: Sequence[int], like: Tensor, merge: bool) -> Tensor:
    """``rows[p]`` for each position of ``wanted``, stacked; under ``merge`` each from the rank holding it.

    Every wanted position is held by exactly one rank, which contributes it;
    the others add zeros (an exact sum). ``like`` gives the shape and dtype of
    one row (for a rank that holds none).
    """
    if not merge:
        return torch.stack([rows[p] for p in wanted]) if wanted else like.new_empty((0, *like.shape))
    out = torch.zeros((len(wanted), *like.shape), dtype=torch.float64, device=_comm_device())
    for i, p in enumerate(wanted):
        if p in rows:
            out[i] = rows[p].to(out)
    dist.all_reduce(out)
    return out.to(like.device, like.dtype)


def ranked(
    values: Tensor, positions: Tensor, payloads: Sequence[Tensor] = (), *, ordered: bool = False
) -> list[Tensor]:
    """Each row of ``values``, ``positions`` and ``payloads`` sorted by value, highest first, ties to the lower position.

    ``ordered``: each row's positions already increase among equal values
    (one stable sort by value is then enough).
    """
    if ordered:
        order = torch.sort(values, dim=1, descending=True, stable=True).indices
        return [part.gather(1, order) for part in (values, positions, *payloads)]
    by_position = torch.sort(positions, dim=1, stable=True).indices
    by_value = torch.sort(values.gather(1, by_position), dim=1, descending=True, stable=True).indices
    order = by_position.gather(1, by_value)
    return [part.gather(1, order) for part in (values, positions, *payloads)]


def _comm_device() -> torch.device:
    """Where collectives want their tensors: the current CUDA device under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _distributed_sampler(loader: DataLoader[Any]) -> DistributedSampler[Any] | None:
    for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if isinstance(sampler, DistributedSampler):
            return sampler
    return None


def _sampler_shard(sampler: DistributedSampler[Any]) -> tuple[list[int], int]:
    """The dataset indices ``sampler`` yields, and how many of them are not padding.

    Without ``drop_last`` the sampler repeats the first indices so every rank
    gets as many: entry ``j`` of rank ``r`` is entry ``r + j * replicas`` of
    the padded list, padding from ``len(dataset)`` on.
    """
    indices = [int(i) for i in sampler]
    size = len(sampler.dataset)  # type: ignore[arg-type]
    real = sum(1 for j in range(len(indices)) if sampler.rank + j * sampler.num_replicas < size)
    return indices, real


def _length(batch: Any) -> int:
    first = batch[0] if isinstance(batch, tuple | list) else batch
    return len(first)


def _head(batch: Any, keep: int) -> Any:
    """The first ``keep`` examples of ``batch`` (a tensor, or a tuple/list of sliceable entries)."""
    if isinstance(batch, tuple | list):
        return type(batch)(part[:keep] for part in batch)
    return batch[:keep]
