"""How good are the explanations? Dataset-level, streamed evaluation of CAM maps.

:func:`evaluate` runs each CAM method over a whole dataset, batch by batch,
and reports four numbers per method, each a mean over the examples:

- **deletion AUC** (lower is better) and **insertion AUC** (higher is better):
  the area under the softmax probability of the explained class as the most
  salient pixels are removed from the input, or revealed on a baseline
  (Petsiuk et al., RISE, BMVC 2018), computed as
  :func:`convlens.attribution.faithfulness.deletion` and :func:`~convlens.attribution.faithfulness.insertion`
  compute them (by the same core, :mod:`convlens.attribution.perturbation`);
- **average drop %** (lower is better) and **increase in confidence %**
  (higher is better) of Chattopadhyay et al. (Grad-CAM++, WACV 2018): with
  ``Y`` the class's softmax probability on the input and ``O`` on the input
  multiplied by its map (upsampled, in [0, 1], the same for every channel),
  ``average drop = mean(max(0, Y - O) / Y) * 100`` and
  ``increase in confidence = mean(O > Y) * 100``. A map that keeps what the
  model looks at loses little confidence, and sometimes gains some.

The last two follow torchcam's ``torchcam.metrics.ClassificationMetric``
exactly: the masked input is ``map * x``, both probabilities are the softmax
of the model's output for the same class, the drop is divided by ``Y + 1e-7``,
and an increase is ``Y < O``, strictly. What differs is the map being scored:
here it is convlens's own (:attr:`convlens.CAMResult.maps`, which explains the
class's logit and is min-max scaled after upsampling), while torchcam's metric
with ``logits_fn=softmax`` explains the probability and scales before upsampling.
Where the two maps coincide the numbers do too (the tests pin this).

Every input rank works: 1-D signals ``(N, C, L)``, 2-D images ``(N, C, H, W)``
and 3-D volumes or videos ``(N, C, T, H, W)``, the maps ``(N, L)``,
``(N, H, W)`` or ``(N, T, H, W)`` (deletion and insertion perturb along every
non-channel axis; the masked input is ``map * x`` at every position).

Nothing but per-method sums and a count is kept from batch to batch: the maps
of one batch are scored, then dropped. Under ``torchrun`` each rank reads its
shard and the sums are added over the ranks at the end, so every rank returns
what one process returns on the same data.

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> from torch.utils.data import TensorDataset
    >>> from convlens.attribution.evaluation import evaluate
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 5))
    >>> data = TensorDataset(torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,)))
    >>> res = evaluate(net, ["gradcam", "layercam"], data, layer="1", intervals=8, progress=False)
    >>> res.count, [row.method for row in res.rows], res.layer
    (6, ['gradcam', 'layercam'], '1')
    >>> 0 <= res["gradcam"].average_drop <= 100
    True

References:
    Chattopadhyay, Sarkar, Howlader and Balasubramanian, "Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional
    Networks", WACV 2018. https://arxiv.org/abs/1710.11063

    Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation
    of Black-box Models", BMVC 2018. https://arxiv.org/abs/1806.07421
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from convlens.attribution.cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from convlens.attribution.evaluation_result import EvaluationResult, EvaluationRow
from convlens.attribution.perturbation import (
    RANKS,
    Baseline,
    baseline_tensor,
    check_baseline,
    check_baseline_fits,
    forward,
    perturbation_curve,
    softmax,
)
from convlens.core.checks import check_bool, check_choice, check_int, check_model, choices, format_shape
from convlens.core.deprecation import UNSET, Unset, deprecated_value, renamed
from convlens.core.distributed import Chunk, all_sum, data_length, shard
from convlens.core.inputs import NO_ARGS, ForwardArgs, ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import LayerSpec, resolve_layer, unwrap
from convlens.core.layouts import ReshapeSpec, as_layout
from convlens.core.probe import Prober
from convlens.core.recorder import preserved_modes
from convlens.core.targets import check_target, class_scores
from convlens.core.values import model_dtype_device
from convlens.errors import (
    ConvlensError,
    InvalidArgumentError,
    InvalidTypeError,
    MethodNotFoundError,
    ShapeError,
    did_you_mean,
)

__all__ = [
    "METHODS",
    "EvaluationResult",
    "EvaluationRow",
    "EvaluationTarget",
    "MethodName",
    "TargetName",
    "evaluate",
]

#: The CAM methods :func:`evaluate` builds from a name.
MethodName = Literal["gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "eigencam"]

#: The one named target of :func:`evaluate`: each example's label ``y``.
TargetName = Literal["label"]

#: Which class :func:`evaluate` explains: None (the class the model predicts on the clean input),
#: ``"label"`` (the label ``y``), a class index for every example, or one per example (a list,
#: 1-D integer tensor or array, by position in the data). ``"predicted"`` is the old spelling of None.
EvaluationTarget = TargetName | Literal["predicted"] | int | Sequence[int] | Tensor | np.ndarray | None

#: The CAM class behind each method name (the command line's too).
METHODS: Mapping[str, type[GradCAM]] = MappingProxyType(
    {
        "gradcam": GradCAM,
        "gradcam++": GradCAMPlusPlus,
        "xgradcam": XGradCAM,
        "layercam": LayerCAM,
        "scorecam": ScoreCAM,
        "eigencam": EigenCAM,
    }
)
#: Where a failing forward's note says it failed.
_WHO = "convlens.evaluate"
#: torchcam's ClassificationMetric divides the drop by ``Y + 1e-7``; so do we.
_EPS = 1e-7


def evaluate(
    model: nn.Module,
    methods: str | GradCAM | Sequence[str | GradCAM],
    data: Dataset[Any] | DataLoader[Any] | Iterable[Any],
    *,
    layer: LayerSpec | None = None,
    reshape: ReshapeSpec = None,
    target: EvaluationTarget = None,
    intervals: int = 50,
    baseline: Baseline = "zeros",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    forward_args: ForwardArgsLike = None,
    steps: int | Unset = UNSET,
) -> EvaluationResult:
    """Score CAM methods over a dataset: deletion, insertion, average drop, increase in confidence.

    For each batch, the class to explain is found once (one forward, no
    autograd, eval mode); each method maps it; the masked input ``map * x``
    runs once for the average drop and the increase in confidence, and the
    deletion and insertion curves (softmax probability, ``intervals + 1``
    points each, exactly as :func:`~convlens.attribution.faithfulness.deletion`
    and :func:`~convlens.attribution.faithfulness.insertion` give them) give
    the AUCs. Arguments are checked once per call, before any work; the
    model is probed once per input shape. Only float64 sums per method and a
    count outlive a batch. The model is left as
    found (training flags, hooks, ``requires_grad``, weights, ``.grad``), also
    when something raises.

    The average drop and the increase in confidence follow torchcam's
    ``ClassificationMetric`` exactly (masking, softmax, the ``1e-7`` in the
    drop's denominator, a strict ``Y < O``); see the module docstring for
    the one thing that differs, the maps themselves.

    Half precision: the inputs are cast to the model's dtype; the
    probabilities are computed in float32 (the softmax of the model's output
    cast up) and every number is summed in float64, so a bfloat16 or float16
    model's numbers differ from the float32 model's only by the model's own
    rounding (its forward and its maps): for a few-layer network, within
    about four bfloat16 epsilons (``4 * 2**-7``) of the AUCs' size, and a
    few points of the percentages where a probability sits near a
    threshold; the tests pin the AUCs and the average drop on the CPU.

    Args:
        model: Any ``nn.Module`` returning ``(N, classes)`` scores.
        methods: A method name (``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``,
            ``"layercam"``, ``"scorecam"``, ``"eigencam"``), a CAM object built
            on ``model`` (e.g. ``ScoreCAM(model, "layer4", chunk_size=8)``), or
            a list of them. A name's row is called by the name; an object's
            by its class name.
        data: A Dataset (read in order, ``batch_size`` at a time, with
            ``num_workers`` loader workers), a DataLoader as it is, or an
            iterable of batches. Items or batches are ``x`` or ``(x, y, ...)``
            with ``x`` ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, T, H, W)``;
            ``y`` (class indices) is read only with ``target="label"``. Under ``torchrun`` each rank reads its
            shard (see the module docstring).
        layer: The layer for methods given by name, by qualified name or
            module; CAM objects keep their own.
        reshape: For methods given by name, how ``layer``'s output becomes
            ``(N, C, *spatial)``, as :class:`~convlens.attribution.cam.GradCAM`'s
            ``reshape=``: ``"vit"``, ``"channels_last"``, a callable, or
            :class:`~convlens.Layout` (which tensor of a multi-tensor output;
            the first tensor is read unless ``Layout(part=...)`` says
            otherwise); checked before any work. CAM objects keep their own.
        target: None: the class the model predicts on the clean input;
            ``"label"``: the label ``y`` of each example; an int: that class
            for every example; a list, 1-D integer tensor or array: one class
            per example, by position in the data (as given; under
            ``torchrun`` too): the order in which the examples are read, which
            for a shuffling DataLoader is not their index in its dataset. Not a callable: the average drop and the
            increase in confidence are about a class's probability.
            ``"predicted"`` is the old spelling of None (it warns).
        intervals: Deletion and insertion points after the first (as in
            :func:`~convlens.attribution.faithfulness.deletion`).
        baseline: The deletion/insertion baseline: ``"zeros"``, ``"blur"``,
            ``"mean"`` or a tensor (as in :func:`~convlens.attribution.faithfulness.deletion`).
        batch_size: Examples per batch when ``data`` is a Dataset, and
            perturbed inputs per forward in deletion and insertion.
        num_workers: DataLoader workers when ``data`` is a Dataset.
        progress: A progress bar over the batches, on rank 0 only, when tqdm
            is installed and the output is a terminal; False: never.
        forward_args: The model's other forward arguments, after ``x``: a
            tuple (positional), a dict (keyword) or
            :class:`~convlens.ForwardArgs` (both); passed on every forward
            (the probe's, the CAM methods', the masked and perturbed inputs').
            A tensor among them whose first dimension is the number of
            examples in the data (a Dataset's length, a DataLoader's
            dataset's) follows the examples in the order the batches come:
            each batch gets the rows at its examples' positions in that order
            (as per-example targets do), and within a batch each perturbed
            input gets its example's row. With a shuffling DataLoader, row
            ``i`` goes with the ``i``-th example read, not with dataset index
            ``i``: carry per-example values in the batches instead. Every
            other value is passed as it is (over an iterable of batches, whose
            length is unknown, a tensor the size of a batch follows that
            batch's rows within it).
        steps: The old spelling of ``intervals`` (same meaning); it warns
            with a ``DeprecationWarning`` and goes in the next release.

    Returns:
        One row per method, in the order given, and the count of examples.

    Raises:
        MethodNotFoundError: An unknown method name (the nearest is named), an
            :class:`~convlens.InvalidArgumentError`.
        LayerNotFoundError: An unknown layer (the nearest are named).
        InvalidArgumentError: No methods, a method name without ``layer``, a
            name given twice, a CAM object built on another model, an unknown
            ``target`` or baseline name, ``intervals`` or ``batch_size`` below 1,
            ``target="label"`` with batches that hold no ``y``, a label or
            target out of range, per-example targets that do not cover an
            example, or empty data.
        InvalidTypeError: ``data`` that is not a Dataset, DataLoader or
            iterable, an input ``x`` that is not a float tensor, a
            ``forward_args`` that is not a tuple, dict or ForwardArgs, or an
            argument of the wrong type.
        UnsupportedModelError: A model on the ``meta`` device, or a quantized
            model with a method that needs gradients (all but ``"scorecam"``
            and ``"eigencam"``).
        DeviceMismatchError: A tensor of ``forward_args`` on another device
            than the model, or a batch on the ``meta`` device (it holds no
            data); the inputs on any other device are moved to the model's.
        ShapeError: An input the model rejects (naming the layer), or an
            ``x`` without 1 to 3 non-channel axes.

    Shape:
        ``x`` ``(N, C, *spatial)`` with 1, 2 or 3 non-channel axes, ``y``
        ``(N,)``; the model's output ``(N, classes)``.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 5))
        >>> data = TensorDataset(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> res = evaluate(net, ["gradcam", "gradcam++"], data, layer="1", target="label",
        ...                intervals=4, batch_size=2, progress=False)
        >>> res.methods, res.count, res.intervals, res.baseline, res.target
        (('gradcam', 'gradcam++'), 4, 4, 'zeros', 'label')
        >>> print(res.to_markdown().splitlines()[2])
        | method | deletion AUC (lower is better) | insertion AUC (higher is better) | average drop % (lower is better) | increase in confidence % (higher is better) |
        >>> evaluate(net, ["gradcam", "gradcma"], data, layer="1")
        Traceback (most recent call last):
        ...
        convlens.errors.MethodNotFoundError: unknown method 'gradcma'; methods are 'gradcam', 'gradcam++', 'xgradcam', 'layercam', 'scorecam', 'eigencam', or a CAM object. Did you mean 'gradcam' or 'xgradcam' or 'gradcam++'?

    References:
        Chattopadhyay et al., WACV 2018. https://arxiv.org/abs/1710.11063

        Petsiuk et al., BMVC 2018. https://arxiv.org/abs/1806.07421
    """
    check_model(model)
    intervals = check_int("intervals", renamed("steps", steps, "intervals", intervals, default=50), 1)
    if isinstance(target, str):  # only a name can be the old one (an array's == is elementwise)
        deprecated_value("target", target, "predicted", None)
        target = None if target == "predicted" else target
    reported, given = _check_evaluation_target(target, data)
    batch_size = check_int("batch_size", batch_size, 1)
    num_workers = check_int("num_workers", num_workers, 0)
    check_bool("progress", progress)
    described = check_baseline(baseline)
    extra = as_forward_args(forward_args)
    named = _methods(model, methods, layer, reshape)
    gradients = any(cam.needs_gradient for _, cam in named)
    check_runnable(model, who="evaluate", gradients=gradients, forward_args=extra)
    total = data_length(data) if extra else None
    part = shard(data, batch_size=batch_size, num_workers=num_workers)

    module = unwrap(model)
    dtype, device = model_dtype_device(module)
    prober = Prober(module)
    sums = torch.zeros(len(named), 4, dtype=torch.float64)
    count = 0
    chunks = part.chunks(progress=progress, desc="evaluate")
    for chunk in chunks:
        x, labels = _split(chunk, isinstance(target, str) and target == "label")
        if not len(x):  # a rank's padding, or an empty batch: nothing to score, but the sum below still runs
            continue
        if x.is_meta:  # shapes only: it cannot be moved to the model's device like any other batch
            check_runnable(module, x, who="evaluate")
        x = x.to(device, dtype)
        check_baseline_fits(baseline, x)
        if given is not None:
            labels = _per_example(given, chunk.positions)
        elif target is not None and target != "label":
            labels = target
        batch_args = extra if total is None else extra.take(chunk.positions, batch=total)
        sums += _batch_sums(
            module, named, x, labels, chunk.positions, prober=prober, intervals=intervals, baseline=baseline,
            batch_size=batch_size, forward_args=batch_args,
        )  # fmt: skip
        count += len(x)
    # One collective per call, on every rank, whatever its shard held.
    totals = all_sum(
        torch.cat([sums.flatten(), torch.tensor([float(count)], dtype=torch.float64)]), part.merge
    )
    count = round(float(totals[-1]))
    if count == 0:
        raise InvalidArgumentError("data is empty: there are no examples to evaluate.")
    means = (totals[:-1].view(len(named), 4) / count).tolist()
    rows = tuple(
        EvaluationRow(
            method=name,
            deletion=mean[0],
            insertion=mean[1],
            average_drop=mean[2] * 100.0,
            increase_in_confidence=mean[3] * 100.0,
        )
        for (name, _), mean in zip(named, means, strict=True)
    )
    layers = list(dict.fromkeys(cam.ref.key for _, cam in named))
    return EvaluationResult(
        rows=rows,
        count=count,
        layer=", ".join(layers),
        intervals=intervals,
        baseline=described,
        target=reported,
    )


# -- before any work ---------------------------------------------------------------------------------


def _methods(
    model: nn.Module,
    methods: str | GradCAM | Sequence[str | GradCAM],
    layer: LayerSpec | None,
    reshape: ReshapeSpec,
) -> list[tuple[str, GradCAM]]:
    """``(name, CAM object)`` per method, every name and layer checked; nothing runs the model."""
    as_layout(reshape)  # a bad reshape= fails here, before anything is built
    given: list[object]
    if isinstance(methods, str | GradCAM):
        given = [methods]
    elif isinstance(methods, Sequence):
        given = list(methods)
    else:
        raise InvalidTypeError(
            f"methods must be a method name, a CAM object or a list of them; got {type(methods).__name__}."
        )
    if not given:
        raise InvalidArgumentError(
            "methods is empty: give at least one, e.g. methods=['gradcam', 'gradcam++']."
        )
    choices = ", ".join(repr(n) for n in METHODS)
    for method in given:
        if isinstance(method, str):
            if method not in METHODS:
                hint = did_you_mean(method.lower(), list(METHODS))
                raise MethodNotFoundError(
                    f"unknown method {method!r}; methods are {choices}, or a CAM object.{hint}"
                )
        elif isinstance(method, GradCAM):
            if unwrap(method.model) is not unwrap(model):
                raise InvalidArgumentError(
                    f"{method!r} was built on another model ({type(method.model).__name__}); build it on "
                    "the model you evaluate."
                )
        else:
            raise InvalidTypeError(
                f"methods must hold method names ({choices}) or CAM objects; got {type(method).__name__}."
            )
    by_name = [m for m in given if isinstance(m, str)]
    if by_name and layer is None:
        raise InvalidArgumentError(
            f"layer= is needed for the methods given by name ({', '.join(repr(m) for m in by_name)}): "
            "e.g. layer='layer4'. Call convlens.list_layers(model) to see them all."
        )
    cams: list[GradCAM] = []
    if layer is not None:
        resolve_layer(model, layer)  # an unknown layer fails here, even for CAM objects only
    for method in given:
        if isinstance(method, GradCAM):
            cams.append(method)
        elif layer is not None:
            cams.append(METHODS[str(method)](model, layer, reshape=reshape))
    names = [method if isinstance(method, str) else type(method).__name__ for method in given]
    clash = {n for n in names if names.count(n) > 1}
    names = [
        f"{n}({cam.ref.key})" if n in clash and not isinstance(m, str) else n
        for n, cam, m in zip(names, cams, given, strict=True)
    ]
    for n in names:
        if names.count(n) > 1:
            raise InvalidArgumentError(f"method {n!r} is given {names.count(n)} times; give each once.")
    return list(zip(names, cams, strict=True))


def _check_evaluation_target(target: object, data: object) -> tuple[str | int | None, Tensor | None]:
    """How the result reports ``target``, and the per-example classes (None unless given per example).

    ``target`` is None, a name, a class index or one per example; the indices
    are checked to be >= 0 here, against the model's classes per batch.
    """
    if target is None:
        return None, None
    if isinstance(target, str):
        return check_choice("target", target, choices(TargetName)), None
    if callable(target) and not isinstance(target, Tensor | np.ndarray):
        raise InvalidTypeError(
            "evaluate explains a class (the average drop is about its probability): target must be None, "
            "'label', a class index or one per example; got a callable."
        )
    if isinstance(target, Integral | bool) or (isinstance(target, Tensor | np.ndarray) and target.ndim == 0):
        one = check_target(target, 1, None)  # type: ignore[arg-type]  # an int >= 0, or the type message
        assert one is not None
        return int(one[0]), None
    if isinstance(target, Tensor | np.ndarray | Sequence) and not isinstance(target, bytes):
        size = len(target)
        given = check_target(target, size, None)
        assert given is not None
        total = len(data) if isinstance(data, Dataset) and hasattr(data, "__len__") else None
        if total is not None and size != total:
            raise InvalidArgumentError(
                f"target has {size} entries for data of {total} examples; give one per example."
            )
        return "per-example", given
    check_target(target, 1, None)  # type: ignore[arg-type]  # raises the type message
    raise AssertionError("unreachable")  # pragma: no cover


def _per_example(given: Tensor, positions: Tensor) -> Tensor:
    """The classes given for the examples at ``positions`` in the data."""
    if len(positions) and int(positions.max()) >= len(given):
        raise InvalidArgumentError(
            f"target has {len(given)} entries, but the data has an example at position {int(positions.max())}; "
            "give one per example."
        )
    return given[positions.cpu()]


# -- one batch ---------------------------------------------------------------------------------------


def _split(chunk: Chunk, labelled: bool) -> tuple[Tensor, Any]:
    """The inputs ``x`` of a batch, and its labels ``y`` (None unless ``labelled``: ``target="label"``)."""
    x, y = chunk.split()
    if x.dim() - 2 not in RANKS:
        raise ShapeError(
            f"evaluate takes batches of 1-D signals (N, C, L), 2-D images (N, C, H, W) or 3-D volumes or "
            f"videos (N, C, T, H, W); a batch has x of shape {format_shape(tuple(x.shape))} ({x.dim()}-D)."
        )
    if not x.is_floating_point():
        raise InvalidTypeError(f"x must be a float tensor (N, C, *spatial); a batch has {x.dtype}.")
    if not labelled:
        return x, None
    if y is None:
        raise InvalidArgumentError(
            "target='label' needs batches (x, y, ...) with class labels y; these hold x only. "
            "Use target=None to explain the model's own predictions."
        )
    return x, y


def _batch_sums(
    model: nn.Module,
    named: list[tuple[str, GradCAM]],
    x: Tensor,
    labels: Any,
    positions: Tensor,
    *,
    prober: Prober,
    intervals: int,
    baseline: Baseline,
    batch_size: int,
    forward_args: ForwardArgs = NO_ARGS,
) -> Tensor:
    """``(methods, 4)`` float64 sums over the batch: deletion AUC, insertion AUC, drop, increase.

    ``labels``: the classes to explain (labels ``y``, a class index or the
    per-example targets), or None for the prediction. ``forward_args``: this
    batch's rows of them.
    """
    where = _where(positions)
    fa = forward_args
    seen = prober((x, *fa.args), fa.kwargs)  # cached per input signature: one meta pass per call and shape
    seen.check()  # a model that rejects x says so here, before any real forward
    fixed = None
    if labels is not None:
        try:
            fixed = check_target(labels, len(x), seen.output_shape)
        except ConvlensError as err:
            err.add_note(f"convlens.evaluate: in the targets (labels y) of examples {where}.")
            raise
    logits = _classes(model, x, f"examples {where}", fa)
    targets = logits.argmax(1) if fixed is None else fixed.to(logits.device)
    before = class_scores(softmax(logits), targets)  # Y
    base = baseline_tensor(baseline, x)  # once per batch, for every method and both curves
    sums = torch.zeros(len(named), 4, dtype=torch.float64)
    for i, (name, cam) in enumerate(named):
        maps = cam(x, targets, forward_args=fa).maps
        if bool(maps.isnan().any()):
            bad = positions[maps.isnan().flatten(1).any(1).cpu()].tolist()
            raise InvalidArgumentError(
                f"{name} gave maps with NaN for examples {bad} (non-finite activations?); they cannot "
                "be scored."
            )
        masked = _classes(model, maps.unsqueeze(1).to(x.dtype) * x, f"{name}'s masked examples {where}", fa)
        after = class_scores(softmax(masked), targets)  # O
        drop = F.relu(before - after) / (before + _EPS)
        increase = (before < after).to(drop.dtype)
        aucs = [
            perturbation_curve(
                model, x, maps, base, targets, mode=mode, intervals=intervals, batch_size=batch_size,
                probability=True, who=_WHO, forward_args=fa,
            )[2].to(drop.dtype)
            for mode in ("deletion", "insertion")
        ]  # fmt: skip
        values = torch.stack([*aucs, drop, increase])
        sums[i] = values.detach().to("cpu", torch.float64).sum(1)
    return sums


def _classes(model: nn.Module, x: Tensor, what: str, forward_args: ForwardArgs) -> Tensor:
    """The model's ``(N, classes)`` output for ``x``: eval mode, no autograd, flags restored after."""
    with preserved_modes(model, training=False), torch.no_grad():
        # A clone: a model writing into its input leaves x alone.
        output = forward(model, x.clone(), who=_WHO, what=what, forward_args=forward_args)
    if not isinstance(output, Tensor) or output.dim() != 2:
        got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise InvalidArgumentError(f"evaluate needs a model output of shape (N, classes); got {got}.")
    return output


def _where(positions: Tensor) -> str:
    """Positions of a batch's examples, shortened: ``[0, 1, 2]`` or ``0 to 31``."""
    values = positions.tolist()
    if len(values) > 3 and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]} to {values[-1]}"
    if len(values) > 8:
        return f"{', '.join(map(str, values[:4]))}, ... ({len(values)} examples)"
    return str(values)
