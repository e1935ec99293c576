"""The one perturbation core of :mod:`~convlens.attribution.faithfulness` and :mod:`~convlens.attribution.evaluation`.

Private to the attribution wing (not in ``convlens.__all__``): the baselines
and their checks, the perturbed forwards in chunks, the scores (softmax of
a class, or a callable's), the curve and its area. :func:`deletion` and
:func:`insertion` validate and probe, then call :func:`perturbation_curve`;
:func:`~convlens.attribution.evaluation.evaluate` validates and probes once
per call and calls it per batch with the targets already resolved.

Every input rank: 1-D signals ``(N, C, L)``, 2-D images ``(N, C, H, W)`` and 3-D
volumes or videos ``(N, C, T, H, W)``, with maps ``(N, L)``, ``(N, H, W)`` and
``(N, T, H, W)``. A *position* is one point of the non-channel axes (a sample
of a signal, a pixel, a voxel); all its channels are perturbed together. At
point ``k`` of ``intervals + 1``, the first ``floor(k * P / intervals)`` of the
``P`` positions of each sample's ranking (descending map value, ties in raster
order) show the baseline (deletion) or ``x`` (insertion), the rest the other one.

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, maps = torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4)
    >>> base = baseline_tensor("zeros", x)
    >>> fractions, curve, auc = perturbation_curve(
    ...     net, x, maps, base, torch.tensor([0, 2]), mode="deletion", intervals=4, batch_size=3,
    ...     probability=True, who="doctest")
    >>> fractions.tolist(), tuple(curve.shape), tuple(auc.shape)
    ([0.0, 0.25, 0.5, 0.75, 1.0], (2, 5), (2,))
    >>> check_baseline("blurr")
    Traceback (most recent call last):
    ...
    convlens.errors.InvalidArgumentError: baseline must be one of 'zeros', 'blur', 'mean'; got 'blurr'. Did you mean 'blur'?
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.core.checks import check_choice, choices, format_shape
from convlens.core.inputs import NO_ARGS, ForwardArgs
from convlens.core.recorder import internal, preserved_modes
from convlens.core.targets import callable_scores, class_scores, take_target
from convlens.errors import InvalidArgumentError, ShapeError

__all__ = [
    "BASELINES",
    "RANKS",
    "Baseline",
    "BaselineName",
    "Mode",
    "baseline_tensor",
    "blur",
    "check_baseline",
    "check_baseline_fits",
    "forward",
    "perturbation_curve",
    "ranking",
    "scores",
    "softmax",
    "spatial_letters",
]

#: The named baselines.
BaselineName = Literal["zeros", "blur", "mean"]

#: What ``baseline=`` accepts: a named baseline or a tensor broadcastable to ``x``.
Baseline = BaselineName | Tensor

#: Which curve: remove the top pixels (deletion) or reveal them (insertion).
Mode = Literal["deletion", "insertion"]

#: The valid baseline names, from :data:`BaselineName`.
BASELINES = choices(BaselineName)

BLUR_SIGMA = 5.0  # positions; with an 11-tap kernel, as in RISE's released code
BLUR_RADIUS = 5

#: The input ranks perturbed: how many non-channel axes ``x`` ``(N, C, *spatial)`` has.
RANKS = (1, 2, 3)
_LETTERS = {1: "L", 2: "H, W", 3: "T, H, W"}
_CONVS: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def spatial_letters(rank: int) -> str:
    """The non-channel axes of an input of ``rank`` spatial axes, as the messages write them.

    Example:
        >>> spatial_letters(1), spatial_letters(3)
        ('L', 'T, H, W')
    """
    return _LETTERS.get(rank, "*spatial")


def check_baseline(baseline: object) -> str:
    """The baseline as a result names it (its name, or ``"tensor [shape]"``); a bad one fails here.

    Raises:
        InvalidArgumentError: An unknown name (the nearest is named), or a complex tensor.

    Example:
        >>> check_baseline(torch.zeros(3, 1, 1))
        'tensor [3, 1, 1]'
    """
    if isinstance(baseline, Tensor):
        if baseline.is_complex():
            raise InvalidArgumentError(f"a baseline tensor must be real; got {baseline.dtype}.")
        return f"tensor {format_shape(tuple(baseline.shape))}"
    return check_choice("baseline", baseline, BASELINES)


def check_baseline_fits(baseline: Baseline, x: Tensor) -> None:
    """A baseline tensor must broadcast to ``x``'s shape without changing it (names are always fine).

    Raises:
        InvalidArgumentError: It does not broadcast.

    Example:
        >>> check_baseline_fits(torch.zeros(3, 1, 1), torch.zeros(2, 1, 4, 4))
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: a baseline tensor must broadcast to x's shape (2, 1, 4, 4); got shape (3, 1, 1).
    """
    if not isinstance(baseline, Tensor):
        return
    shape, target = tuple(baseline.shape), tuple(x.shape)
    fits = len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False)
    )
    if not fits:
        raise InvalidArgumentError(
            f"a baseline tensor must broadcast to x's shape {target}; got shape {shape}."
        )


def baseline_tensor(baseline: Baseline, x: Tensor) -> Tensor:
    """The baseline for ``x``, broadcastable to it with the batch dimension present (checked before).

    Every named baseline is defined for every rank of :data:`RANKS`: ``"zeros"``;
    ``"mean"``, each sample's per-channel mean over all non-channel axes;
    ``"blur"``, :func:`blur` along every non-channel axis.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> baseline_tensor("mean", x).flatten().tolist(), tuple(baseline_tensor("zeros", x).shape)
        ([1.5], (1, 1, 2, 2))
        >>> baseline_tensor("mean", torch.arange(6.0).view(1, 2, 3)).flatten().tolist()  # a 1-D signal
        [1.0, 4.0]
    """
    if isinstance(baseline, Tensor):
        return baseline.detach().to(dtype=x.dtype, device=x.device).expand(x.shape)
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
    return blur(x)


def blur(x: Tensor) -> Tensor:
    """Separable Gaussian blur (sigma :data:`BLUR_SIGMA`, ``2 * BLUR_RADIUS + 1`` taps), replicate padding.

    Along every non-channel axis of ``x`` ``(N, C, *spatial)``, last axis first:
    a signal along its length, an image along its rows then columns, a video
    or volume along width, height, then time (or depth).

    Raises:
        ShapeError: ``x`` has no non-channel axis, or more than three (the rank is named).

    Example:
        >>> torch.allclose(blur(torch.full((1, 2, 6, 6), 0.5)), torch.full((1, 2, 6, 6), 0.5))
        True
        >>> blur(torch.zeros(1, 3, 2, 4, 4)).shape  # a clip of two frames
        torch.Size([1, 3, 2, 4, 4])
    """
    rank = x.dim() - 2
    if rank not in _CONVS:
        raise ShapeError(
            f"baseline='blur' is defined for 1-D, 2-D and 3-D inputs (N, C, L), (N, C, H, W) and "
            f"(N, C, T, H, W); got a {rank}-D input of shape {format_shape(tuple(x.shape))}."
        )
    r, c, conv = BLUR_RADIUS, x.shape[1], _CONVS[rank]
    taps = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * BLUR_SIGMA**2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    out = F.pad(x, (r, r) * rank, mode="replicate")
    for axis in reversed(range(rank)):  # each pass a valid convolution along one axis
        shape = [1] * rank
        shape[axis] = -1
        out = conv(out, kernel.view(1, 1, *shape).expand(c, 1, *shape), groups=c)
    return out


def forward(
    model: nn.Module, batch: Tensor, *, who: str, what: str, forward_args: ForwardArgs = NO_ARGS
) -> Any:
    """Run the model (as convlens's own call); an exception gets a note naming ``who`` and ``what`` failed.

    ``model(batch, *forward_args.args, **forward_args.kwargs)``: the caller
    gives the forward arguments for these rows. The caller sets the modes
    (eval, no autograd); the note reads
    ``"{who}: raised on {what}, a batch of shape (...)."``.
    """
    try:
        with internal():
            return forward_args.call(model, batch)
    except Exception as err:
        err.add_note(f"{who}: raised on {what}, a batch of shape {tuple(batch.shape)}.")
        raise


def softmax(output: Tensor) -> Tensor:
    """Class probabilities over dimension 1, in float32 at least.

    Example:
        >>> softmax(torch.zeros(1, 4, dtype=torch.bfloat16)).dtype
        torch.float32
    """
    return torch.softmax(output.to(torch.promote_types(output.dtype, torch.float32)), dim=1)


def scores(
    output: Any, target: Tensor | Callable[[Any], Tensor], rows: Tensor, *, probability: bool
) -> Tensor:
    """One score per row of ``output``: a callable's, or the class ``target[rows]``'s (its softmax if ``probability``).

    ``rows`` are the samples the rows of ``output`` perturb (indices into ``target``);
    a :class:`~convlens.core.targets.ScoreTarget` takes them
    (:meth:`~convlens.core.targets.ScoreTarget.take`: a mask or boxes per
    sample follow the rows), a plain callable is called as it is.

    Example:
        >>> scores(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), torch.tensor([0]), probability=True).tolist()
        [0.5]
    """
    if not isinstance(target, Tensor):  # a mask or boxes per sample follow the rows
        return callable_scores(take_target(target, rows), output, len(rows))
    if probability and isinstance(output, Tensor) and output.dim() == 2:
        output = softmax(output)
    return class_scores(output, target[rows])


def ranking(maps: Tensor, device: torch.device) -> Tensor:
    """``rank[i, p]``: the position of pixel ``p`` in sample ``i``'s order (descending, ties in raster order).

    Example:
        >>> ranking(torch.tensor([[[0.1, 0.9], [0.5, 0.5]]]), torch.device("cpu")).tolist()
        [[3, 0, 1, 2]]
    """
    keys = maps.detach().to(device).flatten(1)
    keys = keys.to(torch.uint8) if keys.dtype == torch.bool else keys
    order = torch.sort(keys, dim=1, descending=True, stable=True)
    return torch.argsort(order.indices, dim=1)


def perturbation_curve(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    base: Tensor,
    target: Tensor | Callable[[Any], Tensor],
    *,
    mode: Mode,
    intervals: int,
    batch_size: int,
    probability: bool,
    who: str,
    forward_args: ForwardArgs = NO_ARGS,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(fractions, curve, auc)`` of one mode: every perturbed input run in chunks, eval mode, no autograd.

    Everything is validated before (``x`` ``(N, C, *spatial)`` of a rank in
    :data:`RANKS`, ``maps`` ``(N, *spatial)``, ``base`` from
    :func:`baseline_tensor`, ``target`` an ``(N,)`` int64 tensor of classes or
    a callable); ``model`` is the unwrapped module. Each perturbed input gets
    its sample's rows of ``forward_args`` (:meth:`ForwardArgs.take`: a tensor
    whose first dimension is ``N`` follows the samples), and is scored by its
    sample's target (:meth:`ScoreTarget.take <convlens.core.targets.ScoreTarget.take>`:
    a mask or boxes per sample follow the samples). The model's flags are
    restored after.

    Returns:
        ``fractions`` ``(intervals + 1,)``, ``curve`` ``(N, intervals + 1)``
        (float32 at least, whatever the model's dtype) and its trapezoid ``auc`` ``(N,)``.
    """
    n, spatial = x.shape[0], tuple(x.shape[2:])
    positions = math.prod(spatial)
    device = x.device
    rank = ranking(maps, device)
    counts = torch.arange(intervals + 1, device=device) * positions // intervals
    first, second = (base, x) if mode == "deletion" else (x, base)  # where the mask is set, else
    if isinstance(target, Tensor):
        target = target.to(device)
    total, chunks = (intervals + 1) * n, []
    with preserved_modes(model, training=False), torch.no_grad():
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            index = torch.arange(start, stop, device=device)
            point, sample = index // n, index % n
            mask = (rank[sample] < counts[point].unsqueeze(1)).view(-1, 1, *spatial)
            batch = torch.where(mask, first[sample], second[sample])
            what = f"{mode} points {start // n} to {(stop - 1) // n}"
            rows = forward_args.take(sample, batch=n)
            output = forward(model, batch, who=who, what=what, forward_args=rows)
            chunks.append(scores(output, target, sample, probability=probability).detach())
    values = torch.cat(chunks)  # scores in the output's dtype; the curve and its area in float32 at least
    curve = values.to(torch.promote_types(values.dtype, torch.float32)).view(intervals + 1, n).T.contiguous()
    fractions = torch.arange(intervals + 1, dtype=curve.dtype, device=curve.device) / intervals
    return fractions, curve, torch.trapezoid(curve, fractions, dim=1)
