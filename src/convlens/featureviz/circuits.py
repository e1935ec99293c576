"""Circuits: how much each channel of an earlier layer feeds each unit of a later one.

:func:`connections` measures, for each unit of a later layer ``B`` and each channel of an earlier
layer ``A``, one strength, in one of two ways. Circuits are read this way in the Circuits thread
(Olah et al. 2020), and through residual additions as its "expanded weights" (Voss et al. 2021).

**Weights** (``method="weights"``), where they can be followed: ``B`` is a ``Conv1d``/``Conv2d``/
``Conv3d`` or ``Linear`` layer whose input is ``A``'s output, directly or through ops that keep
channel ``i`` as channel ``i``:

- a per-channel affine map: ``BatchNorm`` (module, or ``F.batch_norm`` with running statistics),
  which scales channel ``i`` by ``gamma_i / sqrt(var_i + eps)``; the scale's absolute value counts;
- pointwise activations (``ReLU``, ``ReLU6``, ``SiLU``, ``GELU``, ``clamp``, ...), ``Dropout`` and
  ``Identity``, passed as the identity: the strength is the weight between post-activation units;
- spatial pooling (max, average, adaptive; ``mean``/``sum``/``amax`` over spatial dimensions) and
  padding;
- a flatten into a ``Linear`` layer (``flatten``, ``view``, ``reshape``, ``nn.Flatten``): the
  ``Linear`` layer's columns of channel ``i`` are then the ``i``-th of ``C_A`` blocks of ``H*W``;
- residual additions (``a + b``, ``torch.add``, ``out += identity``): each addend that comes from
  ``A`` contributes its path's product (scaled by ``|alpha|``); an addend that does not (the
  identity skip from before ``A``) contributes nothing; two addends that both come from ``A`` add.

The strength of (unit ``j`` of ``B``, channel ``i`` of ``A``) is the product of the path's scales of
channel ``i`` times ``||W_B[j, i]||_2``, the norm of the kernel slice (the weight's absolute value for
a ``Linear`` layer, the norm of the block after a flatten); for a grouped or depthwise conv, only the
channels in unit ``j``'s group are nonzero. These strengths are never negative. Any other op on the
way (a conv or ``Linear`` layer between ``A`` and ``B``, a concatenation, a channel shuffle, a
product with a gate such as squeeze-and-excitation, attention, a mean over channels, ...) cannot be
followed; nor can a ``reshape=`` of either layer. The path is seen in one forward of one input
(``inputs[0, 0]``, or zeros of ``input_shape``) recorded by ``convlens.core.graph.trace``.

**Attribution** (``method="attribution"``, always possible; it needs ``inputs``): for unit ``j``,
its activation's spatial mean (the value itself for a ``Linear`` unit) on each of its ``k`` top
dataset examples; strength for channel ``i`` = the mean over the ``k`` examples of the sum over
positions of ``gradient * activation`` of channel ``i`` of ``A``'s output. Signed: a negative strength
means the channel, as it was on those examples, lowered the unit. The ``U * k`` examples run in
batches of ``batch_size`` (64, the house's default; one batch when ``U * k`` is at most that), each a
forward stopped right after ``B`` with ``A``'s output as the autograd leaf (nothing is recorded before
``A``) and one backward; each example's score is its own unit's, so the gradients stay apart.
``reshape=`` applies to both layers. ``forward_args`` are passed to every forward: a tensor among them
whose first dimension is ``U * k`` (one row per example, in the order of ``inputs.reshape(U * k,
...)``) follows its examples into each batch, and its first row goes to the one-example passes (the
probe and the trace); anything else is passed as it is.

**Auto** (the default) uses the weights where they can be followed, and attribution otherwise.

Both read the model in eval mode (BatchNorm's running statistics; the model's flags are restored
after) and leave it as found. ``earlier`` must run before ``later``: its call ends before theirs does
(an earlier layer inside a later block is fine for attribution). A reused module's call is named
``"name#i"``; its weights are the module's, whichever call.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3))
    >>> c = connections(net.eval(), "0", "3", input_shape=(1, 1, 8, 8))
    >>> c.method, c.path, tuple(c.strengths.shape), len(c.top(0, n=2))
    ('weights', 'BatchNorm2d -> ReLU', (3, 4), 2)
    >>> x = torch.randn(3, 2, 1, 8, 8)  # per unit of net[3], its 2 top examples
    >>> a = connections(net, "0", "3", x, method="attribution")
    >>> a.method, a.path, tuple(a.strengths.shape)
    ('attribution', '', (3, 4))

References:
    Olah et al., "Zoom In: An Introduction to Circuits", Distill 2020, https://distill.pub/2020/circuits/zoom-in/.
    Voss et al., "Visualizing Weights", Distill 2021, https://distill.pub/2020/circuits/visualizing-weights/.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.padding import _ConstantPadNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

from convlens.core.checks import (
    check_choice,
    check_indices,
    check_int,
    check_shape,
    choices,
    require_autograd,
)
from convlens.core.distributed import BATCH_SIZE
from convlens.core.graph import Graph, Node, Source, trace
from convlens.core.inputs import (
    ForwardArgs,
    ForwardArgsLike,
    as_forward_args,
    check_runnable,
    guess_input_shape,
)
from convlens.core.layers import LayerRef, LayerSpec, resolve_layer, unwrap
from convlens.core.layouts import Layout, ReshapeSpec, as_layout
from convlens.core.leaf import forward_with_leaf
from convlens.core.probe import Prober, require_hooks
from convlens.core.recorder import StopForward, grad_mode_restored, hooks, preserved_modes
from convlens.core.values import model_dtype_device
from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.forward import check_channels_first, layer_shapes

__all__ = ["Connections", "Method", "connections"]

#: How :func:`connections` measures a strength.
Method = Literal["auto", "weights", "attribution"]

_WHO = "connections"
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)  # fmt: skip
_SPATIAL_MODULES = (_MaxPoolNd, _AvgPoolNd, _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _ConstantPadNd)
_POINTWISE = frozenset({
    "relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid",
    "tanh", "hardtanh", "hardswish", "hardsigmoid", "softplus", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout", "clamp", "clamp_min", "clamp_max", "clip",
    "contiguous", "clone", "detach", "float",
})  # fmt: skip
_SPATIAL = frozenset({
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "pad",
})  # fmt: skip
_REDUCE = frozenset({"mean", "sum", "amax"})
_RESHAPE = frozenset({"flatten", "view", "reshape", "squeeze", "unsqueeze"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Connections:
    """What :func:`connections` returns: how much each channel of ``earlier`` feeds each unit of ``later``.

    Attributes:
        earlier: The earlier layer, as given.
        later: The later layer, as given.
        units: The later layer's units explained, one row of :attr:`strengths` each.
        strengths: ``(U, C_A)`` float32 on the CPU: row ``u`` is unit ``units[u]``, column ``i``
            channel ``i`` of the earlier layer.
        method: ``"weights"`` or ``"attribution"``: what was measured (see the module docstring).
        path: The ops followed between the two layers for weights (``"BatchNorm2d -> add -> ReLU"``,
            ``"direct"`` when ``later`` reads ``earlier``'s output itself); ``""`` for attribution.
    """

    earlier: str
    later: str
    units: tuple[int, ...]
    strengths: Tensor
    method: Literal["weights", "attribution"]
    path: str

    def top(self, u: int, n: int = 5) -> list[tuple[int, float]]:
        """Unit ``units[u]``'s ``n`` strongest earlier channels by ``|strength|`` (ties: the lower channel).

        Returns:
            ``[(channel, strength), ...]``, strongest first, strengths signed.

        Raises:
            InvalidArgumentError: ``u`` is not a row, or ``n`` < 1.

        Example:
            >>> c = Connections(earlier="a", later="b", units=(7,), strengths=torch.tensor([[0.5, -2.0, 0.5]]),
            ...                 method="attribution", path="")
            >>> c.top(0, n=2)
            [(1, -2.0), (0, 0.5)]
        """
        rows = len(self.units)
        if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < rows:
            raise InvalidArgumentError(
                f"u must be a row index from 0 to {rows - 1} (one per unit); got {u!r}."
            )
        check_int("n", n, 1)
        row = self.strengths[u].tolist()
        order = sorted(range(len(row)), key=lambda i: (-abs(row[i]), i))
        return [(i, float(row[i])) for i in order[:n]]


def connections(
    model: nn.Module,
    earlier: LayerSpec,
    later: LayerSpec,
    inputs: Tensor | None = None,
    *,
    units: int | Sequence[int] | Tensor | None = None,
    method: Method = "auto",
    forward_args: ForwardArgsLike = None,
    reshape: ReshapeSpec = None,
    input_shape: Sequence[int] | None = None,
    batch_size: int = BATCH_SIZE,
) -> Connections:
    """How much each channel of ``earlier`` feeds each unit of ``later``; see the module docstring.

    Args:
        model: Any ``nn.Module``; left as found.
        earlier: The earlier layer ``A`` (a name, ``"name#i"`` for a reused module, or the module).
        later: The later layer ``B``; ``A`` must run before it.
        inputs: ``(U, k, *sample)``: for unit ``units[u]``, its ``k`` top dataset examples (what
            ``NeuronVisualizer.top_examples(data, unit=units).inputs`` is). Needed by attribution.
        units: The later layer's units to explain (None: all of them).
        method: ``"auto"``, ``"weights"`` or ``"attribution"``.
        forward_args: The model's other forward arguments (see the module docstring).
        reshape: How both layers' outputs become ``(N, C, *spatial)`` (attribution only).
        input_shape: The one-example input to trace the path on when ``inputs`` is None, batch of 1
            first (None: the model's ``input_shape`` attribute, or ``(1, 3, 224, 224)`` for a model
            whose first ``Conv2d`` reads 3 channels).
        batch_size: How many of the ``U * k`` examples attribution runs at once (the result does not
            depend on it but for rounding).

    Returns:
        The strengths, ``(len(units), channels of earlier)``, and how they were measured.

    Raises:
        LayerNotFoundError: An unknown layer (the nearest names are given).
        InvalidArgumentError: ``earlier`` does not run before ``later``, or ``later`` does not read its
            output at all (parallel branches); a unit out of range;
            ``inputs`` not ``(U, k, *sample)`` with ``U`` units; attribution without ``inputs``;
            ``method="weights"`` where an op between the layers cannot be followed (it is named).
        ShapeError: The model rejects the input.
    """
    module = unwrap(model)
    require_hooks(module, _WHO)
    a_ref, b_ref = resolve_layer(model, earlier), resolve_layer(model, later)
    method = check_choice("method", method, choices(Method))  # type: ignore[assignment]
    layouts = {"a": as_layout(reshape), "b": as_layout(reshape)}
    chosen = None if units is None else check_indices("units", units, item="unit")
    chosen = (chosen,) if isinstance(chosen, int) else chosen
    extra = as_forward_args(forward_args)
    batch = check_int("batch_size", batch_size, 1)
    dtype, device = model_dtype_device(module)
    if inputs is not None:
        if not isinstance(inputs, Tensor):
            raise InvalidTypeError(f"inputs must be a tensor (U, k, *sample); got {type(inputs).__name__}.")
        if inputs.dim() < 3 or inputs.shape[0] == 0 or inputs.shape[1] == 0:
            raise InvalidArgumentError(
                f"inputs must be (U, k, *sample): per unit, its k >= 1 top examples; got shape {tuple(inputs.shape)}."
            )
        inputs = inputs.to(device, dtype) if inputs.is_floating_point() else inputs.to(device)
        one, one_args = inputs[0, :1], extra.take(slice(0, 1), batch=inputs.shape[0] * inputs.shape[1])
    else:
        if method == "attribution":
            raise InvalidArgumentError(
                "method='attribution' needs inputs (U, k, *sample): each unit's top examples, e.g. "
                "NeuronVisualizer(model, later).top_examples(data, unit=units, k=8).inputs."
            )
        shape = (
            guess_input_shape(module, who=_WHO)
            if input_shape is None
            else check_shape("input_shape", input_shape)
        )
        one, one_args = torch.zeros((1, *shape[1:]), dtype=dtype, device=device), extra
    check_runnable(module, one, who=_WHO, gradients=method != "weights", forward_args=one_args)
    refs = {"a": a_ref, "b": b_ref}
    probe = Prober(module, {r.name: r.module for r in refs.values()})((one, *one_args.args), one_args.kwargs)
    shapes = layer_shapes(
        module, refs, tuple(one.shape), dtype=one.dtype, device=device, needs_output=False, probe=probe,
        forward_args=one_args, layouts=layouts, example=one,
    )  # fmt: skip
    sizes = {}
    for key, ref in refs.items():
        check_channels_first(_WHO, ref.key, ref.module, shapes[key], layouts[key])
        sizes[key] = layouts[key].apply(torch.empty(shapes[key], device="meta")).shape[1]
    chosen = tuple(range(sizes["b"])) if chosen is None else chosen
    for unit in chosen:
        if unit >= sizes["b"]:
            raise InvalidArgumentError(
                f"unit {unit} is out of range: layer {b_ref.key!r} has {sizes['b']} units (0 to {sizes['b'] - 1})."
            )
    if inputs is not None and inputs.shape[0] != len(chosen):
        raise InvalidArgumentError(
            f"inputs must hold the top examples of each of the {len(chosen)} units, (U={len(chosen)}, k, "
            f"*sample); got shape {tuple(inputs.shape)}."
        )
    graph = trace(module, one, one_args, watched=refs, stop="b")
    if "a" not in graph.watched or graph.watched["a"] >= graph.watched["b"]:
        raise InvalidArgumentError(
            f"earlier must run before later: layer {a_ref.key!r} runs after {b_ref.key!r} (or contains it). "
            f"Swap them: connections(model, {b_ref.key!r}, {a_ref.key!r}, ...)."
        )
    leaf = next(b_ref.module.children(), None) is None  # a container's call reads its own input only
    if leaf and not graph.depends(graph.watched["a"])[graph.watched["b"]]:
        raise InvalidArgumentError(
            f"layer {b_ref.key!r} does not read the output of {a_ref.key!r}, directly or through other layers "
            "(two parallel branches?): no unit of one feeds a unit of the other, and there is no circuit to measure."
        )
    found = (
        "" if method == "attribution" else _follow(graph) if layouts["a"] == Layout() else "reshape= is given"
    )
    if isinstance(found, _Flow):
        strengths = _weight_strengths(b_ref.module, found, chosen)
        return Connections(earlier=a_ref.key, later=b_ref.key, units=chosen, strengths=strengths,
                           method="weights", path=found.path or "direct")  # fmt: skip
    if method == "weights":
        raise InvalidArgumentError(
            f"method='weights' cannot follow {a_ref.key!r} to {b_ref.key!r}: {found}. Only per-channel "
            "affine maps (BatchNorm), pointwise activations, dropout, spatial pooling, a flatten and residual "
            "additions can be followed into a Conv or Linear layer; use method='attribution' (or 'auto')."
        )
    if inputs is None:
        raise InvalidArgumentError(
            f"the weights from {a_ref.key!r} to {b_ref.key!r} cannot be followed ({found}), and attribution, "
            "the fallback of method='auto', needs inputs (U, k, *sample): each unit's top examples."
        )
    require_autograd(_WHO)
    strengths = _attribution(
        module, refs, layouts, inputs, extra=extra, units=chosen, rewritten=probe.rewritten, batch_size=batch
    )
    return Connections(earlier=a_ref.key, later=b_ref.key, units=chosen, strengths=strengths,
                       method="attribution", path="")  # fmt: skip


# -- weights ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Flow:
    """How ``A``'s channels reach a tensor: a per-channel scale, and where the channels sit."""

    scale: Tensor  # (C_A,) float64
    block: int | None  # None: channel i at dimension 1; an int: flattened, channel i = columns i*block..
    path: str

    def then(self, op: str, scale: Tensor | None = None) -> _Flow:
        """Through one more op, which multiplies channel i by ``scale[i]`` (None: 1)."""
        path = f"{self.path} -> {op}" if self.path else op
        return _Flow(self.scale if scale is None else self.scale * scale, self.block, path)


def _follow(graph: Graph) -> _Flow | str:
    """How ``A``'s channels reach ``B``'s input, or what stops them (a reason)."""
    start, end = graph.watched["a"], graph.watched["b"]
    a_shape = graph.nodes[start].shape
    if a_shape is None or len(a_shape) < 2:
        return "the earlier layer's output has no channel dimension"
    flows: dict[int, _Flow | str] = {start: _Flow(torch.ones(a_shape[1], dtype=torch.float64), None, "")}
    for node in graph.nodes[start + 1 : end]:
        if any(s in flows for s in node.sources):
            flows[node.index] = _step(node, flows)
    b = graph.nodes[end]
    if not isinstance(b.module, (*_CONVS, nn.Linear)):
        return f"the later layer is a {type(b.module).__name__}, not a Conv1d/2d/3d or Linear layer"
    read = next((s for s in b.args if isinstance(s, Source)), None)
    flow = None if read is None else flows.get(read.node)
    if flow is None:
        return f"{b.label} does not read the earlier layer's output through ops that could be traced"
    if isinstance(flow, str):
        return flow
    if isinstance(b.module, nn.Linear) and flow.block is None and len(read.shape) != 2:  # type: ignore[union-attr]
        return f"{b.label} reads an input of shape {read.shape} along its last dimension, not its channels"  # type: ignore[union-attr]
    return flow


def _reads(node: Node, flows: dict[int, _Flow | str]) -> list[tuple[int, Source, _Flow | str]]:
    """The activations from ``A`` among a node's arguments: (position, source, flow)."""
    values = [*node.args, *node.kwargs.values()]
    return [(i, v, flows[v.node]) for i, v in enumerate(values) if isinstance(v, Source) and v.node in flows]


def _step(node: Node, flows: dict[int, _Flow | str]) -> _Flow | str:
    """The flow out of one node that reads ``A``'s channels (a reason where it cannot be followed)."""
    reads = _reads(node, flows)
    stopped = next((f for _, _, f in reads if isinstance(f, str)), None)
    if stopped is not None:
        return stopped
    op, module, out = node.op, node.module, node.shape
    stop = f"{node.label} stands between them"
    if not reads or out is None:
        return stop
    if op == "add" and module is None:
        return _add(node, reads) or stop
    if len(reads) != 1:
        return stop
    _, src, flow = reads[0]
    if not isinstance(flow, _Flow):
        return flow
    channels, shape = len(flow.scale), src.shape
    keeps_channels = flow.block is None and len(out) >= 2 and out[:2] == shape[:2] == (shape[0], channels)
    if isinstance(module, _POINTWISE_MODULES) or (module is None and op in _POINTWISE):
        return flow.then(op) if out == shape else stop
    if isinstance(module, _SPATIAL_MODULES) or (module is None and op in _SPATIAL):
        return flow.then(op) if keeps_channels and len(shape) >= 3 else stop
    if module is None and op in _REDUCE:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        spatial = isinstance(dims, Sequence) and dims and all(d % len(shape) >= 2 for d in dims)
        return flow.then(op) if spatial and out[:2] == shape[:2] and flow.block is None else stop
    if isinstance(module, nn.Flatten) or (module is None and op in _RESHAPE):
        return _reshaped(flow, op, shape, out) or stop
    if isinstance(module, _BatchNorm) or (module is None and op == "batch_norm"):
        scale = _bn_scale(node)
        if scale is None or flow.block is not None or len(scale) != channels or shape[1:2] != (channels,):
            return f"{node.label} stands between them (a per-channel scale needs running statistics)"
        return flow.then(op, scale=scale.abs())
    return stop


def _add(node: Node, reads: list[tuple[int, Source, _Flow | str]]) -> _Flow | None:
    """A residual addition: the addends from ``A`` add (the second times ``|alpha|``)."""
    alpha = abs(float(node.kwargs.get("alpha", 1.0)))
    flows = [f for i, s, f in reads if isinstance(f, _Flow) and i < 2 and s.shape == node.shape]
    if len(flows) != len(reads) or len({f.block for f in flows}) != 1:
        return None
    total = sum((f.scale * (alpha if i == 1 else 1.0) for (i, _, _), f in zip(reads, flows, strict=True)),
                torch.zeros_like(flows[0].scale))  # fmt: skip
    path = flows[0].path if len(flows) == 1 else "(" + " | ".join(f.path or "direct" for f in flows) + ")"
    return _Flow(total, flows[0].block, f"{path} -> add" if path else "add")


def _reshaped(flow: _Flow, op: str, shape: tuple[int, ...], out: tuple[int, ...]) -> _Flow | None:
    """A view of ``A``'s channels: kept at dimension 1, or flattened into blocks (None: scrambled)."""
    if flow.block is not None:
        return flow.then(op) if out == shape else None
    channels, positions = shape[1], math.prod(shape[2:])
    if len(out) >= 2 and out[:2] == shape[:2] and math.prod(out[2:]) == positions:
        return flow.then(op)
    if out == (shape[0], channels * positions):
        return replace(flow.then(op), block=positions)
    return None


def _bn_scale(node: Node) -> Tensor | None:
    """``gamma / sqrt(var + eps)`` of a BatchNorm in eval mode (None: no running statistics)."""
    var: Any
    weight: Any
    if isinstance(node.module, _BatchNorm):
        bn = node.module
        # The model is read in eval mode (the trace sets it), so a BatchNorm uses its running statistics
        # whatever mode the model was handed in: only one without them (track_running_stats=False) has no scale.
        var, weight, eps, batch = bn.running_var, bn.weight, bn.eps, bn.running_var is None
    else:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        given = dict(zip(names, node.args, strict=False)) | dict(node.kwargs)
        var, weight, eps, batch = (
            given.get("running_var"),
            given.get("weight"),
            given.get("eps", 1e-5),
            given.get("training", False),
        )
    if batch or not isinstance(var, Tensor) or not (weight is None or isinstance(weight, Tensor)):
        return None
    scale = 1.0 / torch.sqrt(var.detach().to("cpu", torch.float64) + float(eps))
    return scale if weight is None else scale * weight.detach().to("cpu", torch.float64)


def _weight_strengths(layer: nn.Module, flow: _Flow, units: tuple[int, ...]) -> Tensor:
    """``scale_i * ||W[j, i-slice]||``: a conv's kernel slice, a Linear column or block."""
    channels = len(flow.scale)
    rows = torch.zeros(len(units), channels, dtype=torch.float64)
    if isinstance(layer, nn.Linear):
        weight = layer.weight.detach().to("cpu", torch.float64)
        blocks = weight.reshape(weight.shape[0], channels, -1)  # (out, C_A, block)
        rows = blocks[list(units)].norm(dim=2)
    elif isinstance(layer, _CONVS):
        weight = layer.weight.detach().to("cpu", torch.float64)
        per_out, per_in = weight.shape[0] // layer.groups, weight.shape[1]
        for u, j in enumerate(units):
            g = j // per_out
            rows[u, g * per_in : (g + 1) * per_in] = weight[j].flatten(1).norm(dim=1)
    return (rows * flow.scale).to(torch.float32)


# -- attribution -----------------------------------------------------------------------------------


def _attribution(
    model: nn.Module,
    refs: dict[str, LayerRef],
    layouts: dict[str, Layout],
    inputs: Tensor,
    *,
    extra: ForwardArgs,
    units: tuple[int, ...],
    rewritten: Callable[[str, int], bool],
    batch_size: int,
) -> Tensor:
    """Mean gradient x activation of each unit on its own examples, over ``A``'s channels (see above)."""
    count, k = inputs.shape[:2]
    x = inputs.reshape(count * k, *inputs.shape[2:])
    wanted = torch.tensor(units, device=x.device).repeat_interleave(k)
    parts = []
    with preserved_modes(model, training=False), grad_mode_restored():
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            args = extra.take(rows, batch=len(x))
            parts.append(
                _attribute(
                    model, refs, layouts, x=x[rows], extra=args, wanted=wanted[rows], rewritten=rewritten
                )
            )
    return torch.cat(parts).reshape(count, k, -1).mean(1).to("cpu", torch.float32)


def _attribute(
    model: nn.Module,
    refs: dict[str, LayerRef],
    layouts: dict[str, Layout],
    *,
    x: Tensor,
    extra: ForwardArgs,
    wanted: Tensor,
    rewritten: Callable[[str, int], bool],
) -> Tensor:
    """One batch: ``(N, C_A)``, example ``n``'s sum over positions of gradient x activation for unit ``wanted[n]``."""
    a_ref, b_ref = refs["a"], refs["b"]
    leaves: list[Tensor] = []
    outputs: list[Any] = []
    calls = [0]

    def make_leaf(activation: Tensor) -> Tensor:
        leaves.append(activation.requires_grad_())
        torch.set_grad_enabled(True)  # autograd from A's output on, as forward_with_leaf does
        return activation.clone()  # what flows on: a later in-place op must not write into the leaf

    def stop_after_b(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        calls[0] += 1
        if calls[0] - 1 == (b_ref.call or 0) and leaves:
            outputs.append(output)
            raise StopForward  # nothing after B is computed

    with contextlib.suppress(StopForward), hooks(forward=[(b_ref.module, stop_after_b)]):
        forward_with_leaf(model, a_ref, layouts["a"], x, extra, gradient=False,
                          rewritten=rewritten, replace=make_leaf)  # fmt: skip
    if not outputs:
        raise InvalidArgumentError(f"layer {b_ref.key!r} did not run after {a_ref.key!r}.")
    later = layouts["b"].apply(layouts["b"].pick(outputs[0]))
    values = later.flatten(2).mean(2) if later.dim() > 2 else later  # (N, C_B)
    score = values.gather(1, wanted[:, None]).sum()  # each example its own unit: the gradients stay apart
    leaf = leaves[0]
    (grad,) = torch.autograd.grad(score, [leaf], allow_unused=True)
    grad = torch.zeros_like(leaf) if grad is None else grad.detach()
    product = layouts["a"].apply(grad) * layouts["a"].apply(leaf.detach())
    return product.flatten(2).sum(2) if product.dim() > 2 else product
