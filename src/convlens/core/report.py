"""The shape table: one row per leaf call of a traced forward, printed or as markdown.

:class:`ShapeReport` holds the rows (:class:`LayerShape`) that
:func:`~convlens.core.shapes.trace_shapes` records; ``build_report`` makes one
from plain ``TracedCall`` records (module, input shape, output shape,
which call made the input), working out parameters, MACs, formulas and the
receptive field with :mod:`convlens.core.arithmetic`. Nothing here runs a model.

Example:
    >>> from torch import nn
    >>> from convlens.core.report import TracedCall, build_report
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> calls = [  # the conv read the model input (-1), the ReLU the conv's output (call 0)
    ...     TracedCall(net[0], (1, 1, 5, 5), -1, (1, 2, 3, 3)),
    ...     TracedCall(net[1], (1, 2, 3, 3), 0, (1, 2, 3, 3)),
    ... ]
    >>> names = {id(m): n for n, m in net.named_modules()}
    >>> report = build_report(
    ...     net, names, calls, input_shape=(1, 1, 5, 5), output_shape=(1, 2, 3, 3), traced="meta"
    ... )
    >>> print(report)  # doctest: +NORMALIZE_WHITESPACE
    name   type        in            out           params  MACs  RF  jump  formula
    0      Conv2d      [1, 1, 5, 5]  [1, 2, 3, 3]      20   162  3   1     floor((5 + 2*0 - 1*(3-1) - 1) / 1) + 1 = 3
    1      ReLU        [1, 2, 3, 3]  [1, 2, 3, 3]       0     0  3   1
    total  Sequential  [1, 1, 5, 5]  [1, 2, 3, 3]      20   162
    traced on the meta device (no arithmetic)
    >>> report["0"].receptive_field, report.names
    (3, ['0', '1'])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from convlens.core import arithmetic, display
from convlens.core.arithmetic import Extent, Shape
from convlens.core.checks import format_shape
from convlens.core.layers import split_call
from convlens.errors import (
    AmbiguousLayerError,
    InvalidTypeError,
    LayerNotFoundError,
    ShapeError,
    did_you_mean,
)

__all__ = ["LayerShape", "ShapeReport"]


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
        start: The input pixel where output position 0's receptive field
            begins, negative inside the padding: position ``i`` sees input
            pixels ``start + i * jump`` to ``start + i * jump + receptive_field - 1``.

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
    start: Extent = None


_COLUMNS = ("name", "type", "in", "out", "params", "MACs", "RF", "jump", "formula")


def _fmt_extent(value: Extent) -> str:
    return "-" if value is None else str(value) if isinstance(value, int) else "x".join(map(str, value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ShapeReport:
    """The layer-by-layer shapes of one forward, as :func:`~convlens.core.shapes.trace_shapes` returns them.

    Index it by name (``report["features.0"]``, ``report["layer1.0.relu#1"]``)
    or position; iterate over its rows; ``print`` it for a table (in Jupyter
    it shows as an HTML table).

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
        prefix: What wrappers add before the wrapped model's names (``"module."``
            for ``nn.DataParallel``, ``"_orig_mod."`` for ``torch.compile``),
            else ``""``. The rows carry the wrapper's names; indexing and ``in``
            take the wrapped model's own names too (``report["layer4"]`` finds
            ``"module.layer4"``).

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
        >>> wrapped = cl.trace_shapes(nn.DataParallel(net), (1, 1, 8, 8))
        >>> wrapped["0"].name, "0" in wrapped, wrapped.prefix
        ('module.0', True, 'module.')
    """

    model: str
    rows: tuple[LayerShape, ...]
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    traced: Literal["meta", "real"]
    note: str = ""
    prefix: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[LayerShape]:
        return iter(self.rows)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        names = self.names
        return name in names or (bool(self.prefix) and self.prefix + name in names)

    @property
    def names(self) -> list[str]:
        """The row names, in call order."""
        return [row.name for row in self.rows]

    def __getitem__(self, key: str | int) -> LayerShape:
        """The row of a leaf call by name (``"relu#1"`` for a reused module) or position.

        For a wrapper's report a name without the wrapper's prefix is looked up
        with it (``"layer4"`` as ``"module.layer4"``).

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
        try:
            return self._lookup(key)
        except LayerNotFoundError as err:
            if not self.prefix or key.startswith(self.prefix):
                raise
            try:  # the wrapped model's own name
                return self._lookup(self.prefix + key)
            except LayerNotFoundError:
                raise err from None  # the error about the name given

    def _lookup(self, key: str) -> LayerShape:
        """The row named exactly ``key`` (or ``name#i``); the errors of :meth:`__getitem__`."""
        names = self.names
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
        if call is not None and (calls or base in names):
            if call == 0 and base in names:
                return self._lookup(base)
            count = len(calls) or 1
            raise LayerNotFoundError(
                f"Layer {key!r} does not exist: {base!r} ran {count} time{'s' if count > 1 else ''} "
                f"(#0 to #{count - 1})."
            )
        choices = list(dict.fromkeys([*names, *(split_call(n)[0] for n in names)]))
        if self.prefix:  # the wrapped model's own names are accepted too
            choices += [n.removeprefix(self.prefix) for n in choices if n.startswith(self.prefix)]
        raise LayerNotFoundError(
            f"The shape report of {self.model} has no layer {key!r}.{did_you_mean(key, choices)} It lists "
            f"{len(self.rows)} leaf calls (modules without children); print the report to see them all."
        )

    def _cells(self) -> list[list[str]]:
        cells = [
            [
                r.name or "(root)",
                r.type,
                format_shape(r.input_shape),
                format_shape(r.output_shape),
                f"{r.params:,}",
                f"{r.macs:,}",
                _fmt_extent(r.receptive_field),
                _fmt_extent(r.jump),
                r.formula,
            ]
            for r in self.rows
        ]
        total = ["total", self.model, format_shape(self.input_shape), format_shape(self.output_shape)]
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
            f"ShapeReport({self.model}, {len(self.rows)} rows, {format_shape(self.input_shape)} -> "
            f"{format_shape(self.output_shape)}, params={self.params:,}, traced={self.traced!r})"
        )

    def _repr_html_(self) -> str:
        """The table as HTML, for Jupyter: every row and column of ``str(report)``, the total row, the footer.

        Numbers are right-aligned, the total row bold; the footer (how it was
        traced, and the note) is the table's caption. ``str`` and ``repr``
        are unchanged.

        Example:
            >>> import torch.nn as nn
            >>> import convlens as cl
            >>> page = cl.trace_shapes(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 1, 5, 5))._repr_html_()
            >>> page.count("<tr>"), "floor((5 + 2*0 - 1*(3-1) - 1) / 1) + 1 = 3" in page
            (3, True)
        """
        cells = self._cells()
        title = display.heading(
            "ShapeReport",
            f"{self.model}, {len(self.rows)} leaf calls, {format_shape(self.input_shape)} -> "
            f"{format_shape(self.output_shape)}",
        )
        body = display.table(
            _COLUMNS, cells[:-1], align="llllrrrrl", foot=cells[-1:], caption=self._footer(), monospace=True
        )
        return display.block(title, body)

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


# -- building a report -----------------------------------------------------------


@dataclass(slots=True)
class TracedCall:
    """One leaf-module call as a tracer records it; ``output_shape`` None marks the call that failed."""

    module: nn.Module
    input_shape: Shape
    source: int  # the call whose output this one consumed (-1: the model input)
    output_shape: Shape | None = None


def build_report(
    model: nn.Module,
    names: Mapping[int, str],
    calls: Sequence[TracedCall],
    *,
    input_shape: Shape,
    output_shape: Shape,
    traced: Literal["meta", "real"],
    note: str = "",
    prefix: str = "",
) -> ShapeReport:
    """The :class:`ShapeReport` of ``calls``, named through ``names`` (``id(module)`` to name).

    ``prefix`` is what a wrapper puts before the names (see :attr:`ShapeReport.prefix`).
    """
    counts = Counter(id(c.module) for c in calls if c.output_shape is not None)
    seen: Counter[int] = Counter()
    nd = len(input_shape) - 2
    states: dict[int, arithmetic.RF] = {-1: ((1,) * nd, (1,) * nd, (0,) * nd) if nd >= 1 else None}
    rows = []
    for index, call in enumerate(calls):
        if call.output_shape is None:  # the call that failed
            continue
        module, key, shape_in, shape_out = call.module, id(call.module), call.input_shape, call.output_shape
        src = input_shape if call.source < 0 else calls[call.source].output_shape or ()
        state = states.get(call.source)
        if state is not None and (len(shape_in) <= nd or shape_in[-nd:] != src[len(src) - nd :]):
            state = None  # reshaped between layers (flatten, view, interpolate): no field
        seen_in = shape_in
        inner = calls[index + 1] if index + 1 < len(calls) else None  # calls are in the order they start
        if (
            inner is not None
            and inner.output_shape
            and inner.module is not module
            and any(inner.module is m for m in module.modules())
        ):
            # A layer that pads through a child (a conv with its own ZeroPad2d) works on what the
            # child makes: its field and formula start from there.
            state = arithmetic.rf_step(inner.module, state, inner.input_shape, inner.output_shape)
            seen_in = inner.output_shape
        state = states[index] = arithmetic.rf_step(module, state, seen_in, shape_out)
        rf, jump, start = (None, None, None) if state is None else state
        name = names[key] if counts[key] == 1 else f"{names[key]}#{seen[key]}"
        seen[key] += 1
        rows.append(
            LayerShape(
                name=name,
                type=type(module).__name__,
                input_shape=shape_in,
                output_shape=shape_out,
                params=sum(p.numel() for p in module.parameters(recurse=False)),  # a leaf
                macs=arithmetic.macs(module, shape_in, shape_out),
                formula=arithmetic.formula(module, seen_in, shape_out),
                receptive_field=arithmetic.extent(rf),
                jump=arithmetic.extent(jump),
                start=arithmetic.extent(start),
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
        prefix=prefix,
    )


def shape_error(
    model: nn.Module,
    names: Mapping[int, str],
    calls: Sequence[TracedCall],
    message: str,
    *,
    input_shape: Shape,
    real: bool,
    prefix: str = "",
) -> ShapeError:
    """A :class:`~convlens.ShapeError` saying ``message``, with the rows traced before the failure."""
    note = f"stopped at the failure: {message}"
    traced: Literal["meta", "real"] = "real" if real else "meta"
    report = build_report(
        model, names, calls, input_shape=input_shape, output_shape=(), traced=traced, note=note, prefix=prefix
    )
    return ShapeError(
        f"{message.rstrip('.')}. The {len(report)} layer calls traced before the failure are in err.report.",
        report=report,
    )
