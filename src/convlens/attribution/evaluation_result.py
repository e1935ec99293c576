"""What :func:`~convlens.attribution.evaluation.evaluate` returns: one row of four numbers per method, and its tables.

:class:`EvaluationRow` holds one method's means; :class:`EvaluationResult` the
rows and how they were measured, printed as a plain text table
(``str(result)``) or a GitHub Markdown table (:meth:`EvaluationResult.to_markdown`).
Both are re-exported by :mod:`convlens.attribution.evaluation` and ``convlens``.

Example:
    >>> row = EvaluationRow(method="gradcam", deletion=0.25, insertion=0.5, average_drop=10.0,
    ...                     increase_in_confidence=20.0)
    >>> row.values()
    (0.25, 0.5, 10.0, 20.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from convlens.core.deprecation import renamed_attribute
from convlens.errors import MethodNotFoundError, did_you_mean

__all__ = ["EvaluationResult", "EvaluationRow"]

#: The column headers of the tables, in the order of :class:`EvaluationRow`'s numbers.
_HEADERS = (
    "deletion AUC (lower is better)",
    "insertion AUC (higher is better)",
    "average drop % (lower is better)",
    "increase in confidence % (higher is better)",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationRow:
    """One method's scores, each the mean over the evaluated examples.

    Attributes:
        method: The method's name: the string given, or the class name of a
            CAM object (``"GradCAM(layer3)"`` where two objects share a class).
        deletion: Mean deletion AUC of the softmax probability; lower is better.
        insertion: Mean insertion AUC; higher is better.
        average_drop: Average drop, in percent; lower is better.
        increase_in_confidence: Increase in confidence, in percent; higher is better.
    """

    method: str
    deletion: float
    insertion: float
    average_drop: float
    increase_in_confidence: float

    def values(self) -> tuple[float, float, float, float]:
        """The four numbers, in the order of the table's columns."""
        return (self.deletion, self.insertion, self.average_drop, self.increase_in_confidence)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationResult:
    """What :func:`evaluate` returns: one row per method, and how it was measured.

    Attributes:
        rows: One :class:`EvaluationRow` per method, in the order given.
        count: How many examples were evaluated (over every rank).
        layer: The layer the maps come from (the methods' layers, joined by
            ``", "``, where CAM objects on different layers were given).
        intervals: Deletion and insertion points after the first (``intervals + 1`` in all).
        baseline: The deletion/insertion baseline: its name, or
            ``"tensor [shape]"`` for a tensor.
        target: The class explained, as :func:`evaluate`'s ``target=`` says
            it in its current spelling: None (the class predicted on the clean
            input; also for the old ``"predicted"``), ``"label"``, an int (that
            class for every example), or ``"per-example"`` (one class index per
            example was given). The caption says ``target predicted``,
            ``target label``, ``target class 3`` or ``target per-example``.

    Example:
        >>> row = EvaluationRow(method="gradcam", deletion=0.1, insertion=0.6, average_drop=25.0,
        ...                     increase_in_confidence=12.5)
        >>> res = EvaluationResult(rows=(row,), count=8, layer="layer4", intervals=50, baseline="zeros",
        ...                        target=None)
        >>> res["gradcam"].insertion
        0.6
        >>> print(res)  # doctest: +NORMALIZE_WHITESPACE
        8 examples, layer 'layer4', target predicted, 50 intervals, baseline zeros
        method  deletion AUC (lower is better)  insertion AUC (higher is better)  average drop % (lower is better)  increase in confidence % (higher is better)
        gradcam                         0.1000                            0.6000                             25.00                                        12.50
        >>> res["gradcam++"]
        Traceback (most recent call last):
        ...
        convlens.errors.MethodNotFoundError: no method 'gradcam++' in this result; it has 'gradcam'. Did you mean 'gradcam'?
    """

    rows: tuple[EvaluationRow, ...]
    count: int
    layer: str
    intervals: int
    baseline: str
    target: str | int | None = None

    @property
    def steps(self) -> int:
        """The old name of :attr:`intervals` (same value); reading it warns with a ``DeprecationWarning``."""
        renamed_attribute("EvaluationResult", "steps", "intervals")
        return self.intervals

    @property
    def methods(self) -> tuple[str, ...]:
        """The method names, in the order of :attr:`rows`."""
        return tuple(row.method for row in self.rows)

    def __getitem__(self, method: str) -> EvaluationRow:
        """The row of one method, by its name.

        Raises:
            MethodNotFoundError: No such method in this result (the nearest is named).
        """
        for row in self.rows:
            if row.method == method:
                return row
        names = self.methods
        hint = did_you_mean(method, names) if isinstance(method, str) else ""
        listed = ", ".join(repr(n) for n in names)
        raise MethodNotFoundError(f"no method {method!r} in this result; it has {listed}.{hint}")

    def _cells(self) -> list[list[str]]:
        return [
            [row.method, *(f"{v:.4f}" for v in row.values()[:2]), *(f"{v:.2f}" for v in row.values()[2:])]
            for row in self.rows
        ]

    def _caption(self) -> str:
        target = (
            "predicted"
            if self.target is None
            else f"class {self.target}"
            if isinstance(self.target, int)
            else self.target
        )
        return (
            f"{self.count} examples, layer {self.layer!r}, target {target}, "
            f"{self.intervals} intervals, baseline {self.baseline}"
        )

    def __str__(self) -> str:
        """A plain text table, numbers right-aligned under their headers."""
        table = [["method", *_HEADERS], *self._cells()]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in table
        ]
        return "\n".join([self._caption(), *(line.rstrip() for line in lines)])

    def to_markdown(self) -> str:
        """The rows as a GitHub Markdown table, with a caption line above it.

        Example:
            >>> row = EvaluationRow(method="layercam", deletion=0.125, insertion=0.5, average_drop=40.0,
            ...                     increase_in_confidence=0.0)
            >>> res = EvaluationResult(rows=(row,), count=2, layer="3", intervals=8, baseline="blur")
            >>> print(res.to_markdown())
            2 examples, layer '3', target predicted, 8 intervals, baseline blur
            <BLANKLINE>
            | method | deletion AUC (lower is better) | insertion AUC (higher is better) | average drop % (lower is better) | increase in confidence % (higher is better) |
            |---|---:|---:|---:|---:|
            | layercam | 0.1250 | 0.5000 | 40.00 | 0.00 |
        """
        lines = [
            self._caption(),
            "",
            "| method | " + " | ".join(_HEADERS) + " |",
            "|---|" + "---:|" * len(_HEADERS),
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in self._cells()]
        return "\n".join(lines)
