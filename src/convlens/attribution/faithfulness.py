"""Faithfulness of saliency maps: deletion and insertion curves and their area.

Each sample's pixels are ranked by its saliency map, most salient first (ties
keep raster order). *Deletion* starts from the input and replaces the
top-ranked pixels (all channels of a pixel) with a baseline, a growing
fraction at a time; *insertion* starts from the baseline and reveals the
input's pixels in the same order. Every input rank works the same way: a
"pixel" is a position along a 1-D signal ``(N, C, L)``, a pixel of an image
``(N, C, H, W)`` or a voxel of a volume or video ``(N, C, T, H, W)``, the map
one value per position (``(N, L)``, ``(N, H, W)``, ``(N, T, H, W)``). The target's score is read at each point;
the area under the curve (AUC) summarises it: a faithful map gives a low
deletion AUC (the score falls fast) and a high insertion AUC (it rises fast).

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> from convlens.attribution.faithfulness import deletion, insertion
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 10))
    >>> x, maps = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
    >>> res = deletion(net, x, maps, intervals=16)
    >>> res.mode, res.fractions.shape, res.curve.shape, res.auc.shape, res.targets.shape
    ('deletion', torch.Size([17]), torch.Size([2, 17]), torch.Size([2]), torch.Size([2]))
    >>> insertion(net, x, maps, target=[3, 7], baseline="blur").targets.tolist()
    [3, 7]
    >>> audio = nn.Sequential(nn.Conv1d(2, 4, 5), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))
    >>> deletion(audio, torch.randn(2, 2, 32), torch.rand(2, 32), intervals=8).curve.shape
    torch.Size([2, 9])

References:
    Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation
    of Black-box Models", BMVC 2018. https://arxiv.org/abs/1806.07421
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from convlens.attribution.perturbation import (
    RANKS,
    Baseline,
    Mode,
    baseline_tensor,
    check_baseline,
    check_baseline_fits,
    forward,
    perturbation_curve,
    spatial_letters,
)
from convlens.core import display
from convlens.core.checks import check_bool, check_int
from convlens.core.deprecation import UNSET, Unset, renamed
from convlens.core.inputs import ForwardArgs, ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import unwrap
from convlens.core.probe import Prober, check_inputs
from convlens.core.recorder import preserved_modes
from convlens.core.targets import Target, check_target, target_scores
from convlens.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["Baseline", "FaithfulnessResult", "deletion", "insertion"]

#: Where a failing forward's note says it failed.
_WHO = "convlens.attribution.faithfulness"


@dataclass(frozen=True, slots=True, kw_only=True)
class FaithfulnessResult:
    """What :func:`deletion` and :func:`insertion` return; tensors on the model's device, detached.

    Attributes:
        fractions: ``(intervals + 1,)`` the fraction of pixels deleted or inserted
            at each point, ``0, 1/intervals, ..., 1``.
        curve: ``(N, intervals + 1)`` the target's score at each point; float32
            at least (float64 for a float64 model), also for a half-precision model.
        auc: ``(N,)`` the trapezoid area under ``curve`` over ``fractions``.
        targets: ``(N,)`` int64 class indices scored, or None for a callable target.
        mode: ``"deletion"`` or ``"insertion"``.
    """

    fractions: Tensor
    curve: Tensor
    auc: Tensor
    targets: Tensor | None
    mode: Mode

    def _repr_html_(self) -> str:
        """The curves (score against fraction) as an inline PNG, and each sample's AUC, for Jupyter.

        Drawn with a :class:`matplotlib.figure.Figure` on the Agg canvas
        (pyplot is never touched): one line per sample (at most ``MAX_ITEMS``,
        32), their mean dashed when there are several; then a table of the
        targets and AUCs and the mean AUC.

        Example:
            >>> import torch
            >>> import torch.nn as nn
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
            >>> res = deletion(net, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), intervals=4)
            >>> page = res._repr_html_()
            >>> page.count("<img"), page.count("<tr>")  # the header, two samples, the mean
            (1, 4)
        """
        n = int(self.curve.shape[0])
        shown = display.cap(n)
        fractions = self.fractions.detach().cpu().double().numpy()
        curves = self.curve.detach().cpu().double().numpy()
        aucs = self.auc.detach().cpu().double().tolist()
        targets = None if self.targets is None else self.targets.tolist()
        names = [f"#{i}" + ("" if targets is None else f" target {targets[i]}") for i in range(n)]
        mean_auc = display.number(sum(aucs) / n) if n else "-"

        legend = 0 < shown <= 8
        fig = Figure(figsize=(6.0 if legend else 4.5, 3.0), dpi=72, layout="constrained", facecolor="white")
        ax = fig.add_subplot()
        for i in range(shown):
            ax.plot(fractions, curves[i], linewidth=1.2, label=f"{names[i]}: AUC {display.number(aucs[i])}")
        if n > 1:
            ax.plot(fractions, curves.mean(axis=0), "k--", linewidth=1.6, label=f"mean: AUC {mean_auc}")
        ax.set_xlabel(f"fraction of pixels {'deleted' if self.mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("score")
        ax.set_title(f"{self.mode}: mean AUC {mean_auc}", fontsize=10)
        ax.set_xlim(0.0, 1.0)
        if legend:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        picture = display.figure_tag(fig, alt=f"{self.mode} curves")

        rows = [[names[i], display.number(aucs[i])] for i in range(shown)]
        foot = [["mean", mean_auc]] if n > 1 else []
        table = display.table(["sample", "AUC"], rows, align="lr", foot=foot)
        title = display.heading(
            "FaithfulnessResult",
            f"{self.mode}: {n} sample{'s' if n != 1 else ''}, {len(fractions)} points, mean AUC {mean_auc}",
        )
        return display.block(title, picture, table, display.left_out(shown, n, "samples"))


def deletion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    intervals: int = 50,
    baseline: Baseline = "zeros",
    batch_size: int = 64,
    probability: bool = True,
    forward_args: ForwardArgsLike = None,
    steps: int | Unset = UNSET,
) -> FaithfulnessResult:
    """Deletion curve: remove the most salient pixels first and watch the score fall.

    At point ``k`` of ``intervals + 1``, the first ``floor(k * P / intervals)``
    of the ``P`` pixels (``H * W``; ``L`` for a signal, ``T * H * W`` for a
    video) in each sample's ranking (descending saliency, ties in raster
    order) are replaced, in every channel, by the baseline. All
    ``(intervals + 1) * N`` perturbed inputs run in chunks of ``batch_size``
    under :func:`torch.no_grad`, the model in eval mode (its flags restored
    after). Lower AUC is better. No gradient is taken: a quantized model whose
    forward runs works as it is.

    Half precision: a float16 or bfloat16 model's scores are read in float32
    (the softmax computed in float32) and the curve and its area accumulate in
    float32, so they differ from the float32 model's only by the model's own
    rounding of its forward: for a few-layer network, within about four
    bfloat16 epsilons (``4 * 2**-7``, relative to the scores' size), which the
    tests pin on the CPU.

    Args:
        model: Any ``nn.Module`` returning ``(N, classes)`` scores (or
            anything, with a callable ``target``), on any device; not on
            ``meta``.
        x: The inputs, on the model's device: 1-D signals ``(N, C, L)``, 2-D
            images ``(N, C, H, W)`` or 3-D volumes or videos ``(N, C, T, H, W)``.
        maps: One saliency map per sample, higher meaning more important
            (e.g. :attr:`convlens.CAMResult.maps`): ``(N, L)``, ``(N, H, W)``
            or ``(N, T, H, W)``, on any device.
        target: None for each sample's class predicted on the unmodified ``x``
            (decided once, then fixed along the curve), a class index for all,
            one per sample (list or integer tensor), or a callable mapping the
            model output to one score per row; it is called on chunks of
            perturbed inputs, so it must score each row on its own. A
            :class:`~convlens.attribution.detection.SegmentationTarget` with a
            mask per image, or a
            :class:`~convlens.attribution.detection.BoxScoreTarget` with boxes
            per image, scores each perturbed input with its own sample's
            (:meth:`~convlens.core.targets.ScoreTarget.take`).
        intervals: How many equal parts the pixels are perturbed in: points
            after the first, ``intervals + 1`` in all.
        baseline: ``"zeros"`` (zero in the input's own, e.g. normalized,
            space), ``"blur"`` (a Gaussian blur of ``x``, sigma 5 pixels,
            11 taps, separable, replicate padding), ``"mean"`` (each
            sample's per-channel mean), or a tensor broadcastable to ``x``.
        batch_size: Perturbed inputs per forward.
        probability: Score a class target by its softmax probability (True)
            or by its raw logit (False). A callable target's score is used as
            returned, whatever this says.
        forward_args: The model's other forward arguments, after ``x``: a
            tuple (positional), a dict (keyword) or
            :class:`~convlens.ForwardArgs` (both); passed on every forward, the
            probe's included. A tensor among them whose first dimension is
            ``N`` follows the samples: each perturbed input gets its own
            sample's rows (one level into tuples, lists and dicts); every other
            value is passed as it is.
        steps: The old spelling of ``intervals`` (same meaning); it warns
            with a ``DeprecationWarning`` and goes in the next release.

    Returns:
        The fractions, curve, AUC and targets.

    Raises:
        InvalidArgumentError: ``maps`` not ``(N, *spatial)`` for ``x`` ``(N, C, *spatial)``,
            NaN in ``maps``, ``intervals`` or ``batch_size`` below 1, an unknown
            baseline name (with the nearest), a baseline tensor that does not
            broadcast to ``x``, a target out of range or of the wrong length.
        InvalidTypeError: ``x`` not a float tensor of 1 to 3 non-channel axes,
            ``forward_args`` not a tuple, dict or ForwardArgs, or an argument of
            the wrong type.
        UnsupportedModelError: A model on the ``meta`` device (load its weights first).
        DeviceMismatchError: ``x`` or a tensor of ``forward_args`` on another
            device than the model (both are named).
        ShapeError: An input the model rejects (naming the layer).

    Shape:
        ``x`` ``(N, C, *spatial)`` with 1, 2 or 3 non-channel axes, ``maps``
        ``(N, *spatial)``; ``curve`` ``(N, intervals + 1)``, ``auc`` ``(N,)``,
        ``fractions`` ``(intervals + 1,)``.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> res = deletion(net, torch.randn(4, 1, 4, 4), torch.rand(4, 4, 4), intervals=8,
        ...                probability=False)
        >>> res.curve.shape, res.auc.shape
        (torch.Size([4, 9]), torch.Size([4]))
        >>> deletion(net, torch.randn(1, 1, 4, 4), torch.rand(1, 4, 4), baseline="blurr")
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: baseline must be one of 'zeros', 'blur', 'mean'; got 'blurr'. Did you mean 'blur'?

    References:
        Petsiuk et al., BMVC 2018. https://arxiv.org/abs/1806.07421
    """
    return _curve(
        "deletion",
        model,
        x,
        maps,
        target,
        intervals=renamed("steps", steps, "intervals", intervals, default=50),
        baseline=baseline,
        batch_size=batch_size,
        probability=probability,
        forward_args=forward_args,
    )


def insertion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    intervals: int = 50,
    baseline: Baseline = "zeros",
    batch_size: int = 64,
    probability: bool = True,
    forward_args: ForwardArgsLike = None,
    steps: int | Unset = UNSET,
) -> FaithfulnessResult:
    """Insertion curve: reveal the most salient pixels first and watch the score rise.

    The mirror of :func:`deletion`: at point ``k`` the first
    ``floor(k * P / intervals)`` pixels of each sample's ranking show ``x``,
    the rest the baseline. Higher AUC is better. RISE starts insertion from a
    blurred image: pass ``baseline="blur"`` to match it. Every rank, half
    precision and quantized models: as :func:`deletion`.

    Args:
        model: As :func:`deletion`.
        x: As :func:`deletion`.
        maps: As :func:`deletion`.
        target: As :func:`deletion` (None: the class predicted on ``x``).
        intervals: As :func:`deletion`.
        baseline: As :func:`deletion`.
        batch_size: As :func:`deletion`.
        probability: As :func:`deletion`.
        forward_args: As :func:`deletion` (batched tensors follow the samples).
        steps: As :func:`deletion` (deprecated: use ``intervals``).

    Returns:
        The fractions, curve, AUC and targets.

    Raises:
        InvalidArgumentError: As :func:`deletion`.
        InvalidTypeError: As :func:`deletion`.
        UnsupportedModelError: As :func:`deletion`.
        DeviceMismatchError: As :func:`deletion`.
        ShapeError: As :func:`deletion`.

    Shape:
        As :func:`deletion`.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> res = insertion(net, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), target=1, intervals=4)
        >>> res.mode, res.curve.shape, bool(((res.auc >= 0) & (res.auc <= 1)).all())
        ('insertion', torch.Size([2, 5]), True)

    References:
        Petsiuk et al., BMVC 2018. https://arxiv.org/abs/1806.07421
    """
    return _curve(
        "insertion",
        model,
        x,
        maps,
        target,
        intervals=renamed("steps", steps, "intervals", intervals, default=50),
        baseline=baseline,
        batch_size=batch_size,
        probability=probability,
        forward_args=forward_args,
    )


def _curve(
    mode: Mode,
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target,
    *,
    intervals: int,
    baseline: Baseline,
    batch_size: int,
    probability: bool,
    forward_args: ForwardArgsLike,
) -> FaithfulnessResult:
    """Validate, probe and resolve the targets, then run the perturbation core: :func:`deletion` and :func:`insertion`."""
    check_inputs((x,))
    _check_x(x)
    extra = as_forward_args(forward_args)
    check_runnable(model, x, who=mode, forward_args=extra)
    # The model's own diagnosis (a missing batch dimension, a rank it does not take) comes first.
    Prober(unwrap(model))((x, *extra.args), extra.kwargs).check()
    _check_maps(x, maps)
    check_int("intervals", intervals, 1)
    check_int("batch_size", batch_size, 1)
    check_bool("probability", probability)
    check_baseline(baseline)
    check_baseline_fits(baseline, x)
    n = x.shape[0]
    x = x.detach()
    model = unwrap(model)
    seen = Prober(model)((x, *extra.args), extra.kwargs)  # the probe above, from the cache
    seen.check()
    class_target = target is not None and (isinstance(target, Tensor) or not callable(target))
    fixed = check_target(target, n, seen.output_shape if class_target else None)
    if target is None:
        fixed = _predicted(model, x, extra, batch_size)
    scored = target if fixed is None else fixed.to(x.device)
    fractions, curve, auc = perturbation_curve(
        model, x, maps, baseline_tensor(baseline, x), scored,  # type: ignore[arg-type]
        mode=mode, intervals=intervals, batch_size=batch_size, probability=probability, who=_WHO,
        forward_args=extra,
    )  # fmt: skip
    targets = None if fixed is None else fixed.to(x.device)
    return FaithfulnessResult(fractions=fractions, curve=curve, auc=auc, targets=targets, mode=mode)


def _predicted(model: nn.Module, x: Tensor, extra: ForwardArgs, batch_size: int) -> Tensor:
    """The class predicted on the unmodified ``x``, ``batch_size`` samples per forward."""
    n, found = x.shape[0], []
    with preserved_modes(model, training=False), torch.no_grad():
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            # A clone: a model that writes into its input must not rewrite the caller's x.
            output = forward(
                model, x[rows].clone(), who=_WHO, what="x", forward_args=extra.take(rows, batch=n)
            )
            found.append(target_scores(output, None, None, len(x[rows]))[0])
    return torch.cat([t for t in found if t is not None])


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() - 2 not in RANKS or not x.is_floating_point():
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise InvalidTypeError(
            "x must be a float tensor of 1-D signals (N, C, L), 3-D volumes or videos (N, C, T, H, W), "
            f"or 2-D images (N, C, H, W); got {got}."
        )
    spatial = tuple(x.shape[2:])
    if x.shape[0] == 0 or math.prod(spatial) == 0:
        raise InvalidArgumentError(f"x must hold at least one sample and one pixel; got {tuple(x.shape)}.")


def _check_maps(x: Tensor, maps: Tensor) -> None:
    spatial = tuple(x.shape[2:])
    letters = spatial_letters(len(spatial))
    if not isinstance(maps, Tensor) or maps.is_complex():
        raise InvalidTypeError(f"maps must be a real tensor (N, {letters}); got {type(maps).__name__}.")
    expected = (x.shape[0], *spatial)
    if tuple(maps.shape) != expected:
        raise InvalidArgumentError(
            f"maps must have shape (N, {letters}) = {expected} for x of shape {tuple(x.shape)}; "
            f"got {tuple(maps.shape)}."
        )
    if maps.is_floating_point() and bool(maps.isnan().any()):
        raise InvalidArgumentError("maps contain NaN; the pixels cannot be ranked.")
