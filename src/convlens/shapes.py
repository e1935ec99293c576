"""Convolution arithmetic and a layer-by-layer shape table traced on the meta device.

:func:`trace_shapes` runs a model on PyTorch's ``meta`` device (shapes only,
no arithmetic, no weight copied) and lists every leaf call with its input and
output shapes, parameter count, multiply-accumulates, the formula behind its
output size, and the receptive field of the spatial stack so far.

Example:
    >>> import convlens as cl
    >>> cl.conv_output_size(224, kernel_size=11, stride=4, padding=2)
    55
    >>> cl.conv_transpose_output_size(7, kernel_size=4, stride=2, padding=1)
    14
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.parameter import is_lazy

from convlens._checks import layer_mismatch
from convlens._fastpath import SkipShapePreserving
from convlens.errors import (
    AmbiguousLayerError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    ShapeError,
    check_int,
    did_you_mean,
)
from convlens.layers import split_call
from convlens.tap import first_tensor, hooks, meta_forward, preserved_modes

__all__ = ["LayerShape", "ShapeReport", "conv_output_size", "conv_transpose_output_size", "trace_shapes"]

Shape = tuple[int, ...]
#: A receptive field or jump: one int when every spatial dimension agrees.
Extent = int | tuple[int, ...] | None


# -- arithmetic ----------------------------------------------------------------


def conv_output_size(  # noqa: PLR0917 - the contract's signature, torch's argument order
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a convolution or pooling along one dimension.

    ``floor((size + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1``,
    with ``ceil`` instead of ``floor`` when ``ceil_mode`` (pooling), where, as
    in PyTorch, a last window that would start in the right padding is dropped.

    Args:
        size: Input length (>= 1).
        kernel_size: Window length (>= 1).
        stride: Step between windows (>= 1).
        padding: Zeros added on each side (>= 0).
        dilation: Spacing between window elements (>= 1).
        ceil_mode: Round up instead of down (pooling layers' ``ceil_mode``): the
            last window may then run past the end of the input.

    Returns:
        The output length, at least 1.

    Raises:
        InvalidTypeError: An argument is not an int (``bool`` included).
        InvalidArgumentError: An argument is out of range, or the window does
            not fit the padded input (no output left).

    Example:
        >>> conv_output_size(224, kernel_size=11, stride=4, padding=2)
        55
        >>> conv_output_size(6, kernel_size=3, stride=2, ceil_mode=True), conv_output_size(6, 3, 2)
        (3, 2)
        >>> conv_output_size(5, kernel_size=3, dilation=3)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: No output left: kernel_size=3 with dilation=3 spans 7, more than size + 2*padding = 5 + 2*0 = 5. Use an input of at least 7 or more padding.
    """
    size, k = check_int("size", size, 1), check_int("kernel_size", kernel_size, 1)
    s, p, d = (
        check_int("stride", stride, 1),
        check_int("padding", padding, 0),
        check_int("dilation", dilation, 1),
    )
    if not isinstance(ceil_mode, bool):
        raise InvalidTypeError(f"ceil_mode must be a bool; got {type(ceil_mode).__name__} {ceil_mode!r}.")
    span = d * (k - 1) + 1
    slack = s - 1 if ceil_mode else 0  # with ceil_mode the last window may run past the end
    if size + 2 * p + slack < span:
        extra = f" + stride - 1 = {size} + 2*{p} + {slack}" if ceil_mode else f" = {size} + 2*{p}"
        raise InvalidArgumentError(
            f"No output left: kernel_size={k} with dilation={d} spans {span}, more than size + 2*padding"
            f"{extra} = {size + 2 * p + slack}. Use an input of at least {span - 2 * p - slack} or more padding."
        )
    out = (size + 2 * p - span + slack) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window would start in the right padding
        out -= 1
    return out


def conv_transpose_output_size(  # noqa: PLR0917 - torch's argument order
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one dimension.

    ``(size - 1)*stride - 2*padding + dilation*(kernel_size-1) + output_padding + 1``.

    Args:
        size: Input length (>= 1).
        kernel_size: Window length (>= 1).
        stride: Step between windows (>= 1).
        padding: Implicit padding removed from each side (>= 0).
        output_padding: Extra length on one side, smaller than ``stride`` or ``dilation``.
        dilation: Spacing between window elements (>= 1).

    Returns:
        The output length, at least 1.

    Raises:
        InvalidTypeError: An argument is not an int.
        InvalidArgumentError: An argument is out of range, or nothing is left.

    Example:
        >>> conv_transpose_output_size(7, kernel_size=3, stride=2, padding=1, output_padding=1)
        14
        >>> conv_transpose_output_size(7, kernel_size=3, stride=2, output_padding=2)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: output_padding must be smaller than stride or dilation (here < 2); got 2.
    """
    size, k = check_int("size", size, 1), check_int("kernel_size", kernel_size, 1)
    s, p, d = (
        check_int("stride", stride, 1),
        check_int("padding", padding, 0),
        check_int("dilation", dilation, 1),
    )
    op = check_int("output_padding", output_padding, 0)
    if op >= max(s, d):
        raise InvalidArgumentError(
            f"output_padding must be smaller than stride or dilation (here < {max(s, d)}); got {op}."
        )
    out = (size - 1) * s - 2 * p + d * (k - 1) + op + 1
    if out < 1:
        raise InvalidArgumentError(
            f"No output left: ({size} - 1)*{s} - 2*{p} + {d}*({k}-1) + {op} + 1 = {out}; "
            f"use padding < {(((size - 1) * s + d * (k - 1) + op) // 2) + 1}."
        )
    return out


# -- layer geometry ----------------------------------------------------------------

_POOLS: tuple[tuple[tuple[type[nn.Module], ...], int], ...] = (
    ((nn.MaxPool1d, nn.AvgPool1d, nn.LPPool1d), 1),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d), 2),
    ((nn.MaxPool3d, nn.AvgPool3d, nn.LPPool3d), 3),
)
_ADAPTIVE: tuple[tuple[tuple[type[nn.Module], ...], int], ...] = (
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d), 1),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), 2),
    ((nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d), 3),
)


class _Window(NamedTuple):
    """A sliding-window layer's numbers, one entry per spatial dimension."""

    kernel: Shape
    stride: Shape
    padding: Shape | str
    dilation: Shape
    output_padding: Shape
    ceil_mode: bool
    transposed: bool


def _ntuple(value: Any, nd: int) -> Shape:
    return tuple(int(v) for v in value) if isinstance(value, Sequence) else (int(value),) * nd


def _window(module: nn.Module) -> _Window | None:
    """The window of a conv or (non-adaptive) pooling layer, else None."""
    if isinstance(module, _ConvNd):
        nd = len(module.kernel_size)
        pad = module.padding if isinstance(module.padding, str) else _ntuple(module.padding, nd)
        return _Window(
            _ntuple(module.kernel_size, nd),
            _ntuple(module.stride, nd),
            pad,
            _ntuple(module.dilation, nd),
            _ntuple(module.output_padding, nd),
            False,
            module.transposed,
        )
    for classes, nd in _POOLS:
        if isinstance(module, classes):
            m: Any = module
            kernel = _ntuple(m.kernel_size, nd)
            stride = kernel if m.stride is None else _ntuple(m.stride, nd)
            padding, dilation = _ntuple(getattr(m, "padding", 0), nd), _ntuple(getattr(m, "dilation", 1), nd)
            return _Window(kernel, stride, padding, dilation, (0,) * nd, bool(m.ceil_mode), False)
    return None


def _adaptive_dims(module: nn.Module) -> int:
    return next((nd for classes, nd in _ADAPTIVE if isinstance(module, classes)), 0)


def _dim_formula(w: _Window, i: int, size: int) -> tuple[str, int]:
    """One spatial dimension's formula text and value (raises InvalidArgumentError)."""
    k, s, d, op = w.kernel[i], w.stride[i], w.dilation[i], w.output_padding[i]
    if w.transposed:
        p = 0 if isinstance(w.padding, str) else w.padding[i]
        out = conv_transpose_output_size(size, k, s, p, op, d)
        return f"({size} - 1)*{s} - 2*{p} + {d}*({k}-1) + {op} + 1 = {out}", out
    if w.padding == "same":
        return f"same: {size} -> {size}", size
    p = 0 if isinstance(w.padding, str) else w.padding[i]
    out = conv_output_size(size, k, s, p, d, w.ceil_mode)
    body = f"(({size} + 2*{p} - {d}*({k}-1) - 1) / {s}) + 1"
    if not w.ceil_mode:
        return f"floor{body} = {out}", out
    full = -(-(size + 2 * p - d * (k - 1) - 1) // s) + 1
    return f"ceil{body}{' - 1' if full != out else ''} = {out}", out


def _formula(module: nn.Module, in_shape: Shape, out_shape: Shape) -> str:
    """The layer's own arithmetic, or "" when it has none (or it disagrees with the trace)."""
    w = _window(module)
    nd = len(w.kernel) if w is not None else _adaptive_dims(module)
    if nd == 0 or len(in_shape) < nd or len(out_shape) < nd:
        return ""
    sizes, outs = in_shape[-nd:], out_shape[-nd:]
    if w is None:
        texts = [f"adaptive: {i} -> {o}" for i, o in zip(sizes, outs, strict=True)]
    else:
        try:
            pairs = [_dim_formula(w, i, size) for i, size in enumerate(sizes)]
        except InvalidArgumentError:
            return ""
        if tuple(value for _, value in pairs) != outs:
            return ""
        texts = [text for text, _ in pairs]
    return texts[0] if len(set(texts)) == 1 else "; ".join(texts)


def _macs(module: nn.Module, in_shape: Shape, out_shape: Shape) -> int:
    if isinstance(module, _ConvNd):
        kernel = math.prod(_ntuple(module.kernel_size, 1))
        if module.transposed:
            return math.prod(in_shape) * (module.out_channels // module.groups) * kernel
        return math.prod(out_shape) * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return math.prod(out_shape) * module.in_features
    return 0


_RF = tuple[Shape, Shape] | None  # (receptive field, jump) per spatial dimension


def _rf_step(module: nn.Module, state: _RF, in_shape: Shape, out_shape: Shape) -> _RF:
    """Receptive field and jump after ``module``: rf += (k-1)*d*jump; jump *= stride."""
    if state is None:
        return None
    rf, jump = state
    nd = len(rf)
    w = _window(module)
    adaptive = _adaptive_dims(module)
    if w is None and not adaptive:
        same = (
            len(in_shape) == len(out_shape)
            and in_shape[len(in_shape) - nd :] == out_shape[len(out_shape) - nd :]
        )
        return state if same else None
    if w is None:
        sizes, outs = in_shape[-nd:], out_shape[-nd:]
        if adaptive != nd or any(i % o for i, o in zip(sizes, outs, strict=True)):
            return None
        w = _Window(
            tuple(i // o for i, o in zip(sizes, outs, strict=True)), (), (), (1,) * nd, (), False, False
        )
        w = w._replace(stride=w.kernel)
    if w.transposed or len(w.kernel) != nd:
        return None
    grown = tuple(r + (k - 1) * d * j for r, k, d, j in zip(rf, w.kernel, w.dilation, jump, strict=True))
    return grown, tuple(j * s for j, s in zip(jump, w.stride, strict=True))


def _extent(values: Shape | None) -> Extent:
    if values is None:
        return None
    return values[0] if len(set(values)) == 1 else values


# -- results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerShape:
    """One leaf-module call of a traced forward.

    Attributes:
        name: Qualified name, ``name#i`` for the i-th call of a module that ran
            more than once.
        type: The module's class name.
        input_shape: Shape of the first tensor the call received.
        output_shape: Shape of the first tensor it returned.
        params: Parameter elements of the module (counted at each call).
        macs: Multiply-accumulates of this call: conv ``out elements * in/groups
            * prod(kernel)`` (transposed: ``in elements * out/groups *
            prod(kernel)``), linear ``out elements * in_features``, 0 otherwise.
        formula: The output size worked out with the layer's own numbers, one
            per spatial dimension (joined by ``"; "``) when they differ; ``""``
            for layers without such arithmetic.
        receptive_field: Input pixels that one output position sees, per
            spatial dimension (an int when all agree); None where undefined
            (after ``Flatten``/``Linear``, a transposed conv, ...).
        jump: Input pixels between neighbouring output positions.

    Example:
        >>> import torch.nn as nn
        >>> import convlens as cl
        >>> row = cl.trace_shapes(nn.Sequential(nn.Conv2d(3, 8, 5, stride=2)), (1, 3, 32, 32))["0"]
        >>> row.output_shape, row.params, row.formula, row.receptive_field, row.jump
        ((1, 8, 14, 14), 608, 'floor((32 + 2*0 - 1*(5-1) - 1) / 2) + 1 = 14', 5, 2)
    """

    name: str
    type: str
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    formula: str
    receptive_field: Extent
    jump: Extent = None


_COLUMNS = ("name", "type", "in", "out", "params", "MACs", "RF", "jump", "formula")


def _fmt_shape(shape: Shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _fmt_extent(value: Extent) -> str:
    return "-" if value is None else str(value) if isinstance(value, int) else "x".join(map(str, value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ShapeReport:
    """The layer-by-layer shapes of one forward, as :func:`trace_shapes` returns them.

    Index it by name (``report["features.0"]``, ``report["layer1.0.relu#1"]``)
    or position; iterate over its rows; ``print`` it for a table.

    Attributes:
        model: The model's class name.
        rows: One :class:`LayerShape` per leaf call, in call order.
        input_shape: Shape of the (first) model input.
        output_shape: Shape of the first tensor the model returned.
        params: Parameter elements of the whole model, each shared one once.
        macs: Multiply-accumulates of all rows.
        traced: ``"meta"`` (no arithmetic) or ``"real"`` (a real forward, when
            the model could not run on the meta device; see ``note``).
        note: Why the trace fell back to a real forward, else ``""``.

    Example:
        >>> import torch.nn as nn
        >>> import convlens as cl
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2))
        >>> report = cl.trace_shapes(net, (1, 1, 8, 8))
        >>> print(report)  # doctest: +NORMALIZE_WHITESPACE
        name   type        in            out           params   MACs  RF  jump  formula
        0      Conv2d      [1, 1, 8, 8]  [1, 4, 6, 6]      40  1,296  3   1     floor((8 + 2*0 - 1*(3-1) - 1) / 1) + 1 = 6
        1      ReLU        [1, 4, 6, 6]  [1, 4, 6, 6]       0      0  3   1
        2      MaxPool2d   [1, 4, 6, 6]  [1, 4, 3, 3]       0      0  4   2     floor((6 + 2*0 - 1*(2-1) - 1) / 2) + 1 = 3
        3      Flatten     [1, 4, 3, 3]  [1, 36]            0      0  -   -
        4      Linear      [1, 36]       [1, 2]            74     72  -   -
        total  Sequential  [1, 1, 8, 8]  [1, 2]           114  1,368
        traced on the meta device (no arithmetic)
        >>> report["2"].output_shape, len(report), report[-1].name
        ((1, 4, 3, 3), 5, '4')
    """

    model: str
    rows: tuple[LayerShape, ...]
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    traced: Literal["meta", "real"]
    note: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[LayerShape]:
        return iter(self.rows)

    def __contains__(self, name: object) -> bool:
        return any(row.name == name for row in self.rows)

    @property
    def names(self) -> list[str]:
        """The row names, in call order."""
        return [row.name for row in self.rows]

    def __getitem__(self, key: str | int) -> LayerShape:
        """The row of a leaf call by name (``"relu#1"`` for a reused module) or position.

        Raises:
            LayerNotFoundError: No such row; the message names the nearest ones.
            AmbiguousLayerError: The bare name of a module that ran more than once.
            InvalidTypeError: ``key`` is neither a str nor an int.
        """
        if isinstance(key, int) and not isinstance(key, bool):
            return self.rows[key]
        if not isinstance(key, str):
            raise InvalidTypeError(
                f"A ShapeReport is indexed by layer name or position; got {type(key).__name__}."
            )
        for row in self.rows:
            if row.name == key:
                return row
        base, call = split_call(key)
        calls = [row for row in self.rows if split_call(row.name)[0] == base and row.name != base]
        if calls and call is None:
            listed = ", ".join(repr(row.name) for row in calls)
            raise AmbiguousLayerError(
                f"Layer {key!r} ran {len(calls)} times in one forward; name the call: {listed}."
            )
        if call is not None and (calls or base in self):
            if call == 0 and base in self:
                return self[base]
            count = len(calls) or 1
            raise LayerNotFoundError(
                f"Layer {key!r} does not exist: {base!r} ran {count} time{'s' if count > 1 else ''} "
                f"(#0 to #{count - 1})."
            )
        choices = list(dict.fromkeys([*self.names, *(split_call(n)[0] for n in self.names)]))
        raise LayerNotFoundError(
            f"The shape report of {self.model} has no layer {key!r}.{did_you_mean(key, choices)} It lists "
            f"{len(self.rows)} leaf calls (modules without children); print the report to see them all."
        )

    def _cells(self) -> list[list[str]]:
        cells = [
            [
                r.name or "(root)",
                r.type,
                _fmt_shape(r.input_shape),
                _fmt_shape(r.output_shape),
                f"{r.params:,}",
                f"{r.macs:,}",
                _fmt_extent(r.receptive_field),
                _fmt_extent(r.jump),
                r.formula,
            ]
            for r in self.rows
        ]
        total = ["total", self.model, _fmt_shape(self.input_shape), _fmt_shape(self.output_shape)]
        return [*cells, [*total, f"{self.params:,}", f"{self.macs:,}", "", "", ""]]

    def _footer(self) -> str:
        where = "on the meta device (no arithmetic)" if self.traced == "meta" else "by a real forward"
        return f"traced {where}" + (f"; {self.note}" if self.note else "")

    def __str__(self) -> str:
        rows = [list(_COLUMNS), *self._cells()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        lines = []
        for row in rows:
            cells = [
                c.rjust(w) if i in (4, 5) else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join([*lines, self._footer()])

    def __repr__(self) -> str:
        return (
            f"ShapeReport({self.model}, {len(self.rows)} rows, {_fmt_shape(self.input_shape)} -> "
            f"{_fmt_shape(self.output_shape)}, params={self.params:,}, traced={self.traced!r})"
        )

    def to_markdown(self) -> str:
        """The table as GitHub-flavoured markdown, numbers right-aligned, a bold total row.

        Example:
            >>> import torch.nn as nn
            >>> import convlens as cl
            >>> print(cl.trace_shapes(nn.Sequential(nn.Linear(4, 2)), (3, 4)).to_markdown())
            | name | type | in | out | params | MACs | RF | jump | formula |
            |---|---|---|---|---:|---:|---:|---:|---|
            | 0 | Linear | [3, 4] | [3, 2] | 10 | 24 | - | - |  |
            | **total** | Sequential | [3, 4] | [3, 2] | 10 | 24 |  |  |  |
            <BLANKLINE>
            traced on the meta device (no arithmetic)
        """
        head = "| " + " | ".join(_COLUMNS) + " |\n|---|---|---|---|---:|---:|---:|---:|---|\n"
        cells = self._cells()
        cells[-1][0] = "**total**"
        body = "".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |\n" for row in cells)
        return head + body + "\n" + self._footer()


# -- tracing ---------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    module: nn.Module
    input_shape: Shape
    source: int  # the call whose output this one consumed (-1: the model input)
    output_shape: Shape | None = None


class _Recorder:
    """Hook callbacks recording each leaf call; tensors are only weakly referenced."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.open: list[int] = []
        self.last = -1
        self.made: dict[int, tuple[weakref.ref[Tensor], int]] = {}

    def pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        t = first_tensor(args)
        made = self.made.get(id(t)) if t is not None else None
        source = made[1] if made is not None and made[0]() is t else self.last
        self.open.append(len(self.calls))
        self.calls.append(_Call(module, () if t is None else tuple(t.shape), source))

    def post(self, _module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        index = self.open.pop()
        t = first_tensor(output)
        self.calls[index].output_shape = () if t is None else tuple(t.shape)
        if t is not None:
            self.made[id(t)] = (weakref.ref(t), index)
        self.last = index

    def run(self, model: nn.Module, leaves: Sequence[nn.Module], forward: Callable[[], Any]) -> Shape:
        with (
            hooks(forward=[(m, self.post) for m in leaves], pre=[(m, self.pre) for m in leaves]),
            preserved_modes(model, training=False),
        ):
            out = first_tensor(forward())
        self.made.clear()
        return () if out is None else tuple(out.shape)


def _report(
    model: nn.Module,
    names: Mapping[int, str],
    rec: _Recorder,
    *,
    input_shape: Shape,
    output_shape: Shape,
    traced: Literal["meta", "real"],
    note: str = "",
) -> ShapeReport:
    counts = Counter(id(c.module) for c in rec.calls if c.output_shape is not None)
    seen: Counter[int] = Counter()
    nd = len(input_shape) - 2
    states: dict[int, _RF] = {-1: ((1,) * nd, (1,) * nd) if nd >= 1 else None}
    rows = []
    for index, call in enumerate(rec.calls):
        if call.output_shape is None:  # the call that failed
            continue
        module, key, shape_in, shape_out = call.module, id(call.module), call.input_shape, call.output_shape
        src = input_shape if call.source < 0 else rec.calls[call.source].output_shape or ()
        state = states.get(call.source)
        if state is not None and (len(shape_in) <= nd or shape_in[-nd:] != src[len(src) - nd :]):
            state = None  # reshaped between layers (flatten, view, interpolate): no field
        state = states[index] = _rf_step(module, state, shape_in, shape_out)
        rf, jump = (None, None) if state is None else state
        name = names[key] if counts[key] == 1 else f"{names[key]}#{seen[key]}"
        seen[key] += 1
        rows.append(
            LayerShape(
                name=name,
                type=type(module).__name__,
                input_shape=shape_in,
                output_shape=shape_out,
                params=sum(p.numel() for p in module.parameters(recurse=False)),  # a leaf
                macs=_macs(module, shape_in, shape_out),
                formula=_formula(module, shape_in, shape_out),
                receptive_field=_extent(rf),
                jump=_extent(jump),
            )
        )
    return ShapeReport(
        model=type(model).__name__,
        rows=tuple(rows),
        input_shape=input_shape,
        output_shape=output_shape,
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(r.macs for r in rows),
        traced=traced,
        note=note,
    )


def _mismatch(name: str, module: nn.Module, shape: Shape) -> str | None:
    """What ``module`` expected and ``shape`` lacked, when it is a plain shape mismatch."""
    plain = layer_mismatch(name, module, shape)
    if plain is not None:
        return plain
    where = f" ({type(module).__name__}, input shape {_fmt_shape(shape)})"
    w = _window(module)
    if w is not None and len(shape) >= len(w.kernel):
        sizes = shape[len(shape) - len(w.kernel) :]
        try:
            for i, size in enumerate(sizes):
                _dim_formula(w, i, size)
        except InvalidArgumentError as err:
            return f"{name} gets a spatial size of {_fmt_shape(sizes)}, too small{where}: {err}"
    return None


def _shape_error(
    model: nn.Module,
    names: Mapping[int, str],
    rec: _Recorder,
    message: str,
    *,
    input_shape: Shape,
    real: bool,
) -> ShapeError:
    note = f"stopped at the failure: {message}"
    traced: Literal["meta", "real"] = "real" if real else "meta"
    report = _report(model, names, rec, input_shape=input_shape, output_shape=(), traced=traced, note=note)
    return ShapeError(
        f"{message.rstrip('.')}. The {len(report)} layer calls before it are in err.report.", report=report
    )


def _failure(model: nn.Module, names: Mapping[int, str], rec: _Recorder, err: Exception) -> str:
    """Where and why a real forward failed."""
    first = (str(err).strip().splitlines() or [""])[0]
    if rec.open:
        call = rec.calls[rec.open[-1]]
        return _mismatch(names[id(call.module)], call.module, call.input_shape) or (
            f"{names[id(call.module)]} ({type(call.module).__name__}) failed on an input of shape "
            f"{_fmt_shape(call.input_shape)}: {type(err).__name__}: {first}"
        )
    after = (
        f"after layer {names[id(rec.calls[rec.last].module)]!r}" if rec.last >= 0 else "before any layer ran"
    )
    return f"The forward of {type(model).__name__} failed {after}: {type(err).__name__}: {first}"


def _inputs(inputs: object, dtype: object, model: nn.Module) -> tuple[Shape | None, tuple[Tensor, ...]]:
    """Validate ``inputs``, a size (ints) or example tensors, before any work."""
    if isinstance(inputs, Tensor):
        return None, (inputs,)
    if isinstance(inputs, tuple | list) and inputs and all(isinstance(t, Tensor) for t in inputs):
        return None, tuple(inputs)
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise InvalidTypeError(f"dtype must be a torch.dtype or None; got {type(dtype).__name__} {dtype!r}.")
    if not isinstance(inputs, tuple | list):
        raise InvalidTypeError(
            f"input must be a size such as (1, 3, 224, 224) or an example tensor; got {type(inputs).__name__}."
        )
    if not inputs:
        raise InvalidArgumentError(
            "input size is empty; give the full shape with batch, e.g. (1, 3, 224, 224)."
        )
    for i, v in enumerate(inputs):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidTypeError(
                f"input size must hold ints (or pass example tensors); got {type(v).__name__} {v!r} at "
                f"position {i} of {tuple(inputs)!r}."
            )
        if v < 1:
            raise InvalidArgumentError(
                f"input size must hold ints >= 1; got {v} at position {i} of {tuple(inputs)}."
            )
    if dtype is None:
        floats = (t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
        dtype = next(floats, torch.float32)
    return tuple(inputs), (torch.empty(inputs, dtype=dtype, device="meta"),)


def trace_shapes(
    model: nn.Module, input: Sequence[int] | Tensor | Sequence[Tensor], *, dtype: torch.dtype | None = None
) -> ShapeReport:
    """Trace the shapes of every leaf call of one forward, without arithmetic.

    The model runs on the meta device through :func:`convlens.tap.meta_forward`
    (parameters swapped for meta twins for the call only; nothing is copied or
    computed), in eval mode, with hooks on its leaf modules that are removed
    afterwards. Shape-preserving functions (BatchNorm, LayerNorm, GroupNorm,
    activations, whose meta kernels are slow) answer with their input once
    checked that the real function would accept it; this goes through a
    thread-local :class:`~torch.overrides.TorchFunctionMode`, so no module is
    patched. A forward that cannot run on meta (``.item()``,
    ``if x.sum() > 0``, ``nonzero``, numpy) falls back to one real forward
    without autograd on the model's device, on zeros or on a copy of the
    example input; the report says so (``traced="real"``).

    The receptive field follows each tensor from the layer that made it; a
    tensor made between layers (``torch.cat``, ``a * b``) takes the field of
    the last layer that ran, so for branching networks it is an approximation
    (an in-place residual sum keeps the main path's field).

    Args:
        model: Any ``nn.Module``; left exactly as found (no hooks, same
            parameters, buffers, training and ``requires_grad`` flags).
        input: The input size with batch (``(1, 3, 224, 224)``), an example
            tensor, or a tuple of tensors for several inputs.
        dtype: Dtype of the input made from a size; defaults to the model's
            first floating-point parameter's, else float32.

    Returns:
        A :class:`ShapeReport`; ``print`` it for a table.

    Raises:
        InvalidTypeError: ``model`` is not a module, or ``input`` not a size or tensors.
        InvalidArgumentError: A size entry below 1, an empty size, or lazy modules
            not yet initialized.
        ShapeError: A layer rejects what it receives; the message names it,
            what it expected and what it got, ``err.report`` holds the rows
            traced before it, and the original error is the ``__cause__``.

    Shape:
        ``input``: whatever the model takes, e.g. :math:`(N, C, H, W)`.

    Example:
        >>> import torch.nn as nn
        >>> import convlens as cl
        >>> net = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2))
        >>> report = cl.trace_shapes(net, (1, 3, 224, 224))
        >>> report["0"].output_shape, report["2"].output_shape
        ((1, 64, 55, 55), (1, 64, 27, 27))
        >>> report["0"].formula
        'floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55'
        >>> cl.trace_shapes(net, (1, 1, 224, 224))
        Traceback (most recent call last):
        ...
        convlens.errors.ShapeError: 0 expects 3 input channels, got 1 (Conv2d, input shape [1, 1, 224, 224]). ...
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    lazy = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if is_lazy(t)]
    if lazy:
        raise InvalidArgumentError(
            f"{type(model).__name__} has uninitialized lazy parameters ({', '.join(repr(n) for n in lazy[:3])}); "
            "run one forward first: trace_shapes leaves the model as found, so it cannot initialize them."
        )
    size, args = _inputs(input, dtype, model)
    names = {id(m): n for n, m in model.named_modules() if next(m.children(), None) is None}
    leaves = [m for m in model.modules() if id(m) in names]
    input_shape = tuple(args[0].shape)
    rec = _Recorder()

    def on_meta() -> Any:
        with SkipShapePreserving():
            return meta_forward(model, args)

    try:
        output_shape = rec.run(model, leaves, on_meta)
    except Exception as err:  # a shape mismatch, or code that needs data: sorted here
        culprit = rec.calls[rec.open[-1]] if rec.open else None
        if culprit is not None and (
            message := _mismatch(names[id(culprit.module)], culprit.module, culprit.input_shape)
        ):
            raise _shape_error(model, names, rec, message, input_shape=input_shape, real=False) from err
        first = (str(err).strip().splitlines() or [""])[0]
        where = names[id(culprit.module)] if culprit is not None else type(model).__name__
        note = f"the meta trace failed in {where!r} ({type(err).__name__}: {first})"  # e.g. .item()
    else:
        return _report(model, names, rec, input_shape=input_shape, output_shape=output_shape, traced="meta")
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    real = (
        (torch.zeros(size, dtype=args[0].dtype, device=device),)
        if size
        else tuple(t.detach().to(device, copy=True) for t in args)
    )
    rec = _Recorder()
    try:
        with torch.no_grad():
            output_shape = rec.run(model, leaves, lambda: model(*real))
    except Exception as err:
        message = _failure(model, names, rec, err)
        raise _shape_error(model, names, rec, message, input_shape=input_shape, real=True) from err
    note = f"{note}; ran on {device}"
    return _report(
        model, names, rec, input_shape=input_shape, output_shape=output_shape, traced="real", note=note
    )
