"""Concepts: what a layer has learned beyond single units, over a whole dataset.

One channel answers to several unrelated things, and one idea is spread over many channels. The
layer's activation vectors at every position of every example are factorized into a few directions
of its channel space, the *concepts* (Olah et al.'s "neuron groups", CRAFT's concept bank): each
position's activation is a nonnegative mix of the concepts. Two passes over the data:

1. **Fit** (stopped right after the layer, no autograd): the bank, by
   :class:`~convlens.featureviz.nmf.StreamingNMF`: a fixed-size uniform sample of positions (priority
   sampling, each position's key a seeded hash of where it sits in the data), then NMF of the
   sample: memory does not grow with the data.
2. **Rank** (the whole model with autograd from the layer on when ``importance``, else stopped after
   the layer): every position's coefficients, the reconstruction error, each concept's running top
   ``k`` examples (its largest coefficient in the example, where, and the receptive-field box), and
   each concept's importance for the class explained (:mod:`convlens.featureviz.importance`):
   gradient x coefficient as CRAFT, or the score lost by ablating the concept.

Under ``torchrun`` each rank reads its shard; the ranks' samples are merged into the one sample of
the whole data (the same rows in the same order whatever the number of ranks), the errors and the
importance are summed over the ranks and the top examples merged, so every rank returns the same
result. The bank, and with it the top examples, is then bit-identical to one process's whenever the
layer's activations are (with the same intra-op thread count); ``error``, ``explained``,
``strengths``, ``maps`` and ``importance`` are sums or values of per-batch arithmetic that rounds
differently when the batches hold other examples: equal to float rounding, not bit for bit.

References:
    Olah et al., "The Building Blocks of Interpretability", Distill 2018. https://distill.pub/2018/building-blocks
    Fel et al., "CRAFT: Concept Recursive Activation FacTorization for Explainability", CVPR 2023.
    https://arxiv.org/abs/2211.10154
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, get_args

import torch
from torch import Tensor, nn

from convlens.core.checks import as_int, check_bool, check_choice, check_int
from convlens.core.distributed import BATCH_SIZE, all_sum
from convlens.core.inputs import ForwardArgs, ForwardArgsLike, as_forward_args
from convlens.core.layers import LayerSpec
from convlens.core.layouts import ReshapeSpec
from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.concept_result import ConceptMethod, ConceptsResult
from convlens.featureviz.importance import Ablator, ConceptTarget, ImportanceMethod, by_gradient, rows_of
from convlens.featureviz.nmf import SignedRowsError, StreamingNMF, solve_codes
from convlens.featureviz.stream import LayerReader, LayerStream
from convlens.featureviz.topk import RunningTop, peak_boxes, unravel

__all__ = ["ConceptTarget", "concepts"]

_GRID_DIMS = 8  # at most this many grid dimensions are agreed over the ranks (a 3-D conv has 3)


def concepts(
    model: nn.Module,
    layer: LayerSpec,
    data: Any,
    n: int,
    *,
    method: ConceptMethod = "nmf",
    k: int = 9,
    target: ConceptTarget = None,
    importance: ImportanceMethod | bool | None = "gradient",
    bank: Tensor | None = None,
    seed: int = 0,
    reshape: ReshapeSpec = None,
    batch_size: int = BATCH_SIZE,
    num_workers: int = 0,
    keep_inputs: bool = True,
    progress: bool = True,
    forward_args: ForwardArgsLike = None,
) -> ConceptsResult:
    """Factorize ``layer``'s activations over ``data`` into ``n`` concepts, rank and weigh them.

    Args:
        model: Any ``nn.Module``; left as found (hooks, modes, flags).
        layer: The layer, by name or module; its output ``(N, C, *grid)`` (or ``(N, C)``).
        data: A Dataset (read in order, ``batch_size`` at a time), a DataLoader as it is, or an
            iterable of batches; items ``x`` or ``(x, y, ...)``.
        n: How many concepts (at most the layer's channels).
        method: ``"nmf"``: bank and coefficients nonnegative, for activations after a ReLU (a
            negative activation is an error that names the fix); ``"semi-nmf"``: a signed bank
            with nonnegative coefficients, for any layer.
        k: Top examples kept per concept.
        target: The class whose score the importance explains, per example: None (the predicted
            class), ``"label"`` (each example's ``y``), or a class index (an int, NumPy int or
            0-d integer tensor).
        importance: How each concept's importance for the target class is measured
            (:mod:`convlens.featureviz.importance`): ``"gradient"`` (gradient x coefficient, as
            CRAFT: the rank pass runs the whole model and back-propagates to the layer), or
            ``"ablation"`` (the score lost when the concept's component is removed from the layer,
            exactly: the rest of the network runs on ``n`` ablated copies). None (or False): no
            importance, and both passes stop right after the layer. True is ``"gradient"``.
        bank: A ``(n, C)`` bank to use instead of fitting one (one pass: the rank pass only).
        seed: Seeds which positions the fit's sample holds: same data, same seed, same bank (for
            any number of ranks).
        reshape: How the layer's output becomes ``(N, C, *grid)`` (as every ``reshape=``).
        batch_size: Batch size when ``data`` is a Dataset.
        num_workers: DataLoader workers when ``data`` is a Dataset.
        keep_inputs: Keep the top examples' inputs and coefficient maps.
        progress: A progress bar per pass when tqdm is installed and the output is a terminal.
        forward_args: The model's other forward arguments; a tensor whose first dimension is the
            data's length follows the examples (as in :meth:`convlens.NeuronVisualizer.top_examples`).

    Returns:
        The bank, its reconstruction error and explained variance, each concept's top examples
        with positions, boxes and coefficient maps, and the importance per class; a fitted bank's
        concepts in the order of their total coefficient over the data (the most used first), a
        given bank's in its own order.

    Raises:
        InvalidArgumentError: ``n`` or ``k`` < 1, ``n`` above the layer's channels, an unknown
            ``method`` (the nearest is named), negative activations with ``method="nmf"``, a
            ``bank`` of the wrong shape (or negative with ``"nmf"``), empty data, a target out of
            range, or ``target="label"`` with items that hold no ``y``.
        LayerNotFoundError: No such layer (the nearest is named).
        UnsupportedModelError: A model on the meta device, or a quantized one with ``importance``.

    Example:
        >>> import convlens as cl
        >>> from convlens.models.zoo import digits_cnn, digits_dataset
        >>> res = cl.concepts(digits_cnn(), "features.4", digits_dataset("test"), 4, k=3, progress=False)
        >>> res.bank.shape, res.indices.shape, res.maps.shape, res.importance.shape
        (torch.Size([4, 16]), torch.Size([4, 3]), torch.Size([4, 3, 8, 8]), torch.Size([10, 4]))
        >>> bool((res.bank >= 0).all()), 0.0 < res.explained < 1.0
        (True, True)
        >>> res.transform(digits_dataset("test")[0][0][None]).shape
        torch.Size([1, 4, 8, 8])
    """
    n, k = check_int("n", n, 1), check_int("k", k, 1)
    method = check_choice("method", method, get_args(ConceptMethod))  # type: ignore[assignment]
    for name, flag in (("keep_inputs", keep_inputs), ("progress", progress)):
        check_bool(name, flag)
    measure = _importance(importance)
    seed = check_int("seed", seed, 0)
    target = _check_target(target)
    signed = method == "semi-nmf"
    given = _check_bank(bank, n, signed)
    stream = LayerStream(
        model, layer, data, who="concepts", reshape=reshape, batch_size=batch_size,
        num_workers=num_workers, forward_args=forward_args, gradients=measure == "gradient",
    )  # fmt: skip
    stream.checks.append(lambda read: _check_first(read, n=n, bank=given, target=target, importance=measure))
    if given is None:
        fit = StreamingNMF(n, signed=signed, merge=stream.shard.merge, seed=seed, device=stream.device)
        try:
            fitted = fit.fit(_rows(stream, progress))
        except SignedRowsError as err:
            raise _signed(stream, err.count) from None
        bank = fitted / fitted.norm(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    else:
        bank = given
    return _rank(stream, bank, n=n, k=k, method=method, target=target, importance=measure,
                 keep_inputs=keep_inputs, progress=progress, sort=given is None)  # fmt: skip


def _rows(stream: LayerStream, progress: bool) -> Iterator[tuple[Tensor, Tensor]]:
    """The fit's blocks: each batch's positions as rows of channels, with their ids in the data.

    A row's id is ``example * positions + position`` (the example's position in the data, the
    position's in the layer's grid, as :func:`rows_of` lays them out): the same under any sharding.
    """
    for batch in stream.batches(progress=progress, desc="concepts: fit"):
        rows = rows_of(batch.activations)
        grid = len(rows) // max(len(batch.activations), 1)
        spots = torch.arange(grid, device=rows.device)
        yield rows, (batch.positions.to(rows.device)[:, None] * grid + spots).flatten()


def _signed(stream: LayerStream, count: int) -> SignedRowsError:
    """NMF of signed activations: the error that names the fix (an InvalidArgumentError)."""
    return SignedRowsError(
        count,
        f"method='nmf' needs nonnegative activations; layer {stream.layer!r} gives negative values "
        f"({count} of them in the data read so far). Pick the activation after it (a ReLU), or pass "
        "method='semi-nmf' (a signed bank, nonnegative coefficients).",
    )


def _rank(
    stream: LayerStream, bank: Tensor, *, n: int, k: int, method: ConceptMethod, target: ConceptTarget,
    importance: ImportanceMethod | None, keep_inputs: bool, progress: bool, sort: bool,
) -> ConceptsResult:  # fmt: skip
    """The second pass: coefficients, errors, top examples and importance under one bank.

    ``sort``: order the concepts by their total coefficient (a fitted bank); a given bank keeps its order.
    """
    signed = method == "semi-nmf"
    sums = torch.zeros(5, dtype=torch.float64)  # residual^2, |a|^2, positions, examples, negatives
    channel_sums: Tensor | None = None
    mass: Tensor | None = None
    weights: Tensor | None = None  # (classes, n) sums of gradient x coefficient
    counts: Tensor | None = None
    top: RunningTop | None = None
    grid: tuple[int, ...] = ()
    width = 0  # scores per example, for the importance
    ablator = None if importance != "ablation" else Ablator(stream, solve_codes)
    gradient = importance == "gradient"
    for batch in stream.batches(gradient=gradient, progress=progress, desc="concepts: rank"):
        acts = batch.activations
        rows = rows_of(acts.detach())
        _check_channels(stream, rows.shape[1], n, bank)  # after a reshape that reads values: only now
        bank = bank.to(rows.device)
        codes = solve_codes(rows, bank)  # (P, n), in the rows' dtype
        grid = tuple(acts.shape[2:])
        per = codes.view(len(acts), -1, n)  # (B, positions, n)
        residual = (rows - codes @ bank.to(codes.dtype)).double()
        negatives = 0 if signed else int((rows < 0).sum())  # refused after the pass, on every rank alike
        sums += torch.tensor(
            [residual.square().sum(), rows.double().square().sum(), len(rows), len(acts), negatives]
        )
        channel_sums = rows.double().sum(0) if channel_sums is None else channel_sums + rows.double().sum(0)
        mass = per.double().sum((0, 1)) if mass is None else mass + per.double().sum((0, 1))
        if importance is not None:
            if ablator is None:
                contribution, classes = by_gradient(batch, bank, per, target, stream.layout)
            else:
                contribution, classes = ablator.drops(batch, bank, target)
            width = int(batch.output.shape[1]) if ablator is None else ablator.width  # scores per example
            if weights is None or counts is None:
                weights = torch.zeros(width, n, dtype=torch.float64)
                counts = torch.zeros(width, dtype=torch.float64)
            weights.index_add_(0, classes.cpu(), contribution.double().cpu())
            counts.index_add_(0, classes.cpu(), torch.ones(len(classes), dtype=torch.float64))
        flat_maps = per.transpose(1, 2).contiguous()  # (B, n, positions)
        if top is None:
            top = RunningTop(
                list(range(n)), k, keep_inputs=keep_inputs, spatial=grid, ordered=stream.shard.ordered
            )
        top.update(
            flat_maps.amax(2).T.contiguous(), batch.positions.to(flat_maps.device), batch.x, flat_maps,
            attach=flat_maps,
        )  # fmt: skip
    sample = stream.sample
    merge = stream.shard.merge
    grid, width = _agreed(top is not None, grid, width, merge)  # raises on every rank when no rank read any
    if sample is None:  # pragma: no cover - a pass that read no example raised
        raise InvalidArgumentError("data is empty: there are no examples to factorize.")
    # A rank whose shard held no example (fewer examples than ranks) merges zeros.
    if top is None:
        top = RunningTop(
            list(range(n)), k, keep_inputs=keep_inputs, spatial=grid, ordered=stream.shard.ordered
        )
    channel_sums = (
        bank.new_zeros(bank.shape[1], dtype=torch.float64) if channel_sums is None else channel_sums
    )
    mass = bank.new_zeros(n, dtype=torch.float64) if mass is None else mass
    if importance is not None and (weights is None or counts is None):
        weights, counts = torch.zeros(width, n, dtype=torch.float64), torch.zeros(width, dtype=torch.float64)
    sums = all_sum(sums, merge)
    if float(sums[4]) > 0:
        raise _signed(stream, int(sums[4]))
    channel_sums = all_sum(channel_sums, merge)
    mass = all_sum(mass, merge)
    indices, strengths, inputs, argmax = top.result(merge, sample)
    total = float(sums[1]) - float(channel_sums.square().sum()) / max(float(sums[2]), 1.0)
    error = (float(sums[0]) / max(float(sums[1]), 1e-300)) ** 0.5
    explained = 1.0 - float(sums[0]) / total if total > 0 else 0.0
    positions = None if argmax is None else unravel(argmax, top.spatial)
    field = None if positions is None else stream.field()
    boxes = (
        None if field is None or positions is None else peak_boxes(positions, field, tuple(sample.shape[1:]))
    )
    order = (torch.argsort(mass, descending=True, stable=True) if sort else torch.arange(n)).to(bank.device)
    result_importance: Tensor | None = None
    classes_seen: Tensor | None = None
    class_counts: Tensor | None = None
    if weights is not None and counts is not None:
        weights, counts = all_sum(weights, merge), all_sum(counts, merge)
        seen = counts > 0
        classes_seen = seen.nonzero().flatten()
        result_importance = (weights[seen] / counts[seen, None]).float()[:, order.cpu()].to(bank.device)
        class_counts, classes_seen = counts[seen].long().to(bank.device), classes_seen.to(bank.device)
    bank = bank[order]
    encode = _Encoder(stream.reader, bank)
    maps: Tensor | None = None
    if inputs is not None:  # each kept example's maps of every concept, kept by the running top
        every = top.attached_rows(torch.zeros(n, math.prod(top.spatial), device=bank.device))
        concept = torch.arange(n, device=every.device)
        maps = every[concept, :, concept][order].reshape(n, -1, *top.spatial).float()  # concept i's own
    return ConceptsResult(
        bank=bank, layer=stream.layer, method=method, error=error, explained=explained,
        examples=round(float(sums[3])), indices=indices[order], strengths=strengths[order].float(),
        positions=None if positions is None else positions[order], boxes=None if boxes is None else boxes[order],
        maps=maps, inputs=None if inputs is None else inputs[order], importance=result_importance,
        classes=classes_seen, class_counts=class_counts, importance_method=importance, encode=encode,
    )  # fmt: skip


class _Encoder:
    """``transform``: new inputs' coefficient maps under the bank (holds the model, never the data)."""

    def __init__(self, reader: LayerReader, bank: Tensor) -> None:
        self.reader, self.bank = reader, bank

    def __call__(self, x: Tensor, *, forward_args: ForwardArgsLike = None) -> Tensor:
        return self.encode(x, as_forward_args(forward_args))

    def encode(self, x: Tensor, forward_args: ForwardArgs) -> Tensor:
        """The coefficient maps ``(N, n, *grid)`` of ``x``."""
        acts = self.reader.read(x, forward_args)
        n = len(self.bank)
        codes = solve_codes(rows_of(acts), self.bank)
        return codes.view(len(acts), -1, n).transpose(1, 2).reshape(len(acts), n, *acts.shape[2:])


def _agreed(present: bool, grid: tuple[int, ...], width: int, merge: bool) -> tuple[tuple[int, ...], int]:
    """The layer's grid and the scores per example, as the ranks that read examples saw them.

    ``present``: this rank read some. A rank that read none learns them from the others (the sums
    of equal integers over the ranks that did, divided by their count).

    Raises:
        InvalidArgumentError: No rank read any example.
    """
    mine = torch.zeros(3 + _GRID_DIMS, dtype=torch.float64)
    if present:
        mine[:3] = torch.tensor([1.0, len(grid), width])
        mine[3 : 3 + len(grid)] = torch.tensor(grid, dtype=torch.float64)
    total = all_sum(mine, merge)
    count = float(total[0])
    if count == 0:
        raise InvalidArgumentError("data is empty: there are no examples to factorize.")
    values = [round(float(v) / count) for v in total[1:]]
    return tuple(values[2 : 2 + values[0]]), values[1]


def _importance(importance: object) -> ImportanceMethod | None:
    """The importance asked for: a method name, None/False (none), or True (``"gradient"``)."""
    if importance is None or importance is False:
        return None
    if importance is True:
        return "gradient"
    return check_choice("importance", importance, get_args(ImportanceMethod))  # type: ignore[return-value]


def _check_first(
    read: LayerStream,
    *,
    n: int,
    bank: Tensor | None,
    target: ConceptTarget,
    importance: ImportanceMethod | None,
) -> None:
    """On the first batch, before its forward: the layer's channels, the model's scores, the labels."""
    if not read.layout.reshapes and len(read.shape) >= 2:
        _check_channels(read, read.shape[1], n, bank)
    if importance is None:
        return
    shape = None if read.probe is None else read.probe.output_shape
    if shape is not None and len(shape) != 2:
        raise InvalidArgumentError(
            f"concepts' importance needs a model output of shape (N, classes); the model gives {shape}. "
            "Pass importance=None."
        )
    if isinstance(target, int) and shape is not None and target >= shape[1]:
        raise InvalidArgumentError(
            f"target {target} is out of range: the model gives {shape[1]} scores per sample (0 to {shape[1] - 1})."
        )
    if target == "label" and read.first_labels is None:
        raise InvalidArgumentError(
            "target='label' needs items (x, y, ...) with class labels y; these hold x only."
        )


def _check_channels(read: LayerStream, channels: int, n: int, bank: Tensor | None) -> None:
    """``n`` at most the layer's channels, and a given bank as wide as they are."""
    if n > channels:
        raise InvalidArgumentError(
            f"n={n} concepts for layer {read.layer!r}, which has {channels} channels: at most {channels}."
        )
    if bank is not None and bank.shape[1] != channels:
        raise InvalidArgumentError(
            f"bank must be (n, C) = ({n}, {channels}) for layer {read.layer!r}; got {tuple(bank.shape)}."
        )


def _check_bank(bank: object, n: int, signed: bool) -> Tensor | None:
    """A given bank: an ``(n, C)`` float tensor (nonnegative for NMF), detached; None: fit one."""
    if bank is None:
        return None
    if not isinstance(bank, Tensor):
        raise InvalidTypeError(f"bank must be an (n, C) tensor; got {type(bank).__name__}.")
    if bank.dim() != 2 or bank.shape[0] != n:
        raise InvalidArgumentError(f"bank must be (n, C) with n={n} rows; got {tuple(bank.shape)}.")
    if not signed and float(bank.min()) < 0:
        raise InvalidArgumentError("bank has negative entries: pass method='semi-nmf' for a signed bank.")
    return bank.detach().float()


def _check_target(target: object) -> ConceptTarget:
    """None, ``"label"`` or a class index (a Python, NumPy or 0-d tensor int >= 0), as given or as an int."""
    if target is None or (isinstance(target, str) and target == "label"):
        return target  # type: ignore[return-value]
    index = as_int(target)
    if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
        return index
    raise InvalidArgumentError(
        f"target must be None (the predicted class), 'label' (each example's y) or a class index >= 0; "
        f"got {target!r}."
    )
