"""Targets of an explanation: which score to explain, validated before any work.

A target is None (each sample's predicted class), a class index, one index per
sample (a list or an integer tensor), or a function of the model output that
returns one score per sample. A :class:`ScoreTarget` is such a function that can
also check itself against the model's output shape before any work (the
detection and segmentation targets of :mod:`convlens.attribution.detection`). Shared by :mod:`convlens.attribution.cam`,
:mod:`convlens.attribution.saliency`, :mod:`convlens.attribution.faithfulness`
and the importance of :func:`convlens.concepts`.

Example:
    >>> import numpy as np
    >>> check_target([3, 7], 2, (2, 10)).tolist()
    [3, 7]
    >>> check_target(np.array([1, 2]), 2, (2, 10)).tolist()
    [1, 2]
    >>> check_target(10, 1, (1, 10))
    Traceback (most recent call last):
    ...
    convlens.errors.InvalidArgumentError: target 10 is out of range: the model gives 10 scores per sample (0 to 9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from convlens.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "Rows",
    "ScoreTarget",
    "Target",
    "callable_scores",
    "check_target",
    "class_scores",
    "row_indices",
    "take_target",
    "target_scores",
]

#: What ``target=`` accepts: None (the predicted class), a class index, one per
#: sample (list or integer tensor), or a function of the model output that
#: returns one score per sample.
Target = int | Sequence[int] | Tensor | np.ndarray | Callable[[Any], Tensor] | None

#: Which samples of a batch a new batch holds, row by row: an index tensor or array, a list of
#: indices or a slice.
Rows = Tensor | np.ndarray | Sequence[int] | slice


class ScoreTarget:
    """A target that is an object: one score per sample from the model's output, checked before work.

    Subclasses implement ``__call__(output) -> (N,) scores`` and may override
    :meth:`check`, which :func:`check_target` calls with the batch size and the
    shape of the first tensor of the model's output (from the probe) before any
    real forward. A target that holds something per sample (a mask per image,
    boxes per image) overrides :meth:`take`, so that it follows its samples
    where the work runs other batches than the one given (ScoreCAM's masked
    copies of one sample, the perturbed inputs of deletion and insertion).

    Example:
        >>> import torch
        >>> class Second(ScoreTarget):
        ...     def __call__(self, output):
        ...         return output[:, 1]
        >>> Second()(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
        [2.0, 4.0]
    """

    def __call__(self, output: Any) -> Tensor:
        """One score per sample of ``output``, shape ``(N,)``."""
        raise NotImplementedError(f"{type(self).__name__} must define __call__(output).")

    def check(self, n: int, output_shape: tuple[int, ...] | None) -> None:
        """Raise before any work where the target cannot fit ``n`` samples of this output (None: unknown)."""

    def take(self, rows: Rows) -> ScoreTarget:
        """The target for a batch whose row ``j`` is a copy of sample ``rows[j]`` of the batch it was given for.

        As :meth:`convlens.ForwardArgs.take`: what is held per sample follows
        the rows (repeated, reordered or left out); a target that is the same
        for every sample, as this one, returns itself.
        """
        return self


def check_target(target: Target, n: int, output_shape: tuple[int, ...] | None) -> Tensor | None:
    """Validate a class target before any work; return it as an (N,) int64 tensor (None: decide later).

    ``output_shape`` (the model output's, from the probe) bounds the class indices when known; a
    :class:`ScoreTarget` checks itself against it.
    """
    if isinstance(target, ScoreTarget):
        target.check(n, output_shape)
        return None
    if target is None or (callable(target) and not isinstance(target, Tensor)):
        return None
    given: object = target
    if isinstance(given, np.ndarray):  # numpy indices work like a tensor of them
        given = torch.from_numpy(given.copy())  # a reversed view has negative strides
    if isinstance(given, str | bytes | bool) or not isinstance(given, Integral | Tensor | Sequence):
        shown = (
            repr(given)
            if isinstance(given, bool)
            else f"{type(given).__name__} {given!r}"
            if isinstance(given, str | bytes)
            else type(given).__name__
        )
        raise InvalidTypeError(
            f"target must be None, an int, a list or tensor of ints, or a callable; got {shown}."
        )
    if isinstance(given, Integral):
        values = [int(given)] * n
    elif isinstance(given, Tensor):
        if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
            raise InvalidTypeError(
                f"a target tensor must hold class indices (integers); got dtype {given.dtype}."
            )
        values = [int(given)] * n if given.dim() == 0 else given.flatten().tolist()
    else:
        if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in given):
            raise InvalidTypeError(f"a target list must hold ints; got {list(given)!r}.")
        values = [int(v) for v in given]
    if len(values) != n:
        raise InvalidArgumentError(
            f"target has {len(values)} entries for a batch of {n}; give one per sample."
        )
    classes = output_shape[1] if output_shape is not None and len(output_shape) == 2 else None
    for v in values:
        if v < 0 or (classes is not None and v >= classes):
            limit = (
                f"the model gives {classes} scores per sample (0 to {classes - 1})" if classes else "below 0"
            )
            raise InvalidArgumentError(f"target {v} is out of range: {limit}.")
    return torch.tensor(values, dtype=torch.int64)


def class_scores(output: Any, targets: Tensor) -> Tensor:
    """Each sample's score at its class index in an ``(N, classes)`` output."""
    if not isinstance(output, Tensor) or output.dim() != 2:
        got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise InvalidArgumentError(
            f"class targets need a model output of shape (N, classes); got {got}. Pass target= a callable "
            "that returns one score per sample."
        )
    if int(targets.max()) >= output.shape[1]:
        raise InvalidArgumentError(
            f"target {int(targets.max())} is out of range: the model gives {output.shape[1]} scores per sample "
            f"(0 to {output.shape[1] - 1})."
        )
    return output.gather(1, targets.to(output.device).view(-1, 1)).squeeze(1)


def callable_scores(target: Callable[[Any], Tensor], output: Any, n: int) -> Tensor:
    """A callable target's scores, checked to be one per sample."""
    scores = target(output)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (n,):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise InvalidArgumentError(
            f"a target callable must return one score per sample, shape ({n},); got {got}."
        )
    return scores


def row_indices(rows: Rows, n: int) -> list[int]:
    """``rows`` of a batch of ``n`` as a list of indices in ``[0, n)`` (negative ones count from the end).

    Raises:
        InvalidTypeError: ``rows`` not a slice or integer indices.
        InvalidArgumentError: An index outside the batch.

    Example:
        >>> row_indices(torch.tensor([2, 2, 0]), 3), row_indices(slice(1, None), 3)
        ([2, 2, 0], [1, 2])
        >>> row_indices([3], 2)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: row 3 is out of range for a batch of 2 (0 to 1).
    """
    if isinstance(rows, slice):
        return list(range(n))[rows]
    if isinstance(rows, np.ndarray):
        rows = torch.from_numpy(rows.copy())
    if isinstance(rows, Tensor):
        if rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool or rows.dim() > 1:
            raise InvalidTypeError(
                f"rows must be integer indices; got a {rows.dtype} tensor of shape {tuple(rows.shape)}."
            )
        given: list[object] = rows.flatten().tolist()
    elif isinstance(rows, Sequence) and not isinstance(rows, str | bytes):
        given = list(rows)
    else:
        raise InvalidTypeError(f"rows must be a slice or integer indices; got {type(rows).__name__}.")
    indices = []
    for row in given:
        if isinstance(row, bool) or not isinstance(row, Integral):
            raise InvalidTypeError(f"rows must be integer indices; got {row!r}.")
        index = int(row)
        if not -n <= index < n:
            raise InvalidArgumentError(f"row {index} is out of range for a batch of {n} (0 to {n - 1}).")
        indices.append(index % n)
    return indices


@overload
def take_target(target: Callable[[Any], Tensor], rows: Rows) -> Callable[[Any], Tensor]: ...
@overload
def take_target(target: Target, rows: Rows) -> Target: ...
def take_target(target: Target, rows: Rows) -> Target:
    """``target`` for the rows ``rows`` of its batch: a :class:`ScoreTarget` takes them, anything else is kept.

    A plain callable cannot say what it holds per sample: it is called on each
    new batch as it is.

    Example:
        >>> from convlens.attribution.detection import SegmentationTarget
        >>> take_target(SegmentationTarget(1, torch.zeros(2, 4, 4)), torch.tensor([1, 1, 1]))
        SegmentationTarget(label=1, mask (3, 4, 4))
    """
    return target.take(rows) if isinstance(target, ScoreTarget) else target


def target_scores(output: Any, target: Target, fixed: Tensor | None, n: int) -> tuple[Tensor | None, Tensor]:
    """The targets used (None for a callable) and their scores, from one forward's output."""
    if target is not None and fixed is None:
        return None, callable_scores(target, output, n)  # type: ignore[arg-type]
    if fixed is None:
        if not isinstance(output, Tensor) or output.dim() != 2:
            class_scores(output, torch.zeros(n, dtype=torch.int64))  # raises the shape message
        fixed = output.detach().argmax(dim=1)
    targets = fixed.to(output.device)
    return targets, class_scores(output, targets)
