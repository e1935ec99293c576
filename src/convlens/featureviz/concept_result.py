"""What :func:`convlens.concepts` returns: the bank, its fit, and per concept examples and importance.

A *concept* is a direction in a layer's channel space (one row of the bank, unit length). At every
position of every example the layer's activation vector ``a`` (``C`` values) is explained as a
nonnegative mix of the concepts, ``a ~ sum_i u_i * bank_i`` with coefficients ``u_i >= 0``: the
coefficient map of concept ``i`` over a picture is ``u_i`` at each position of the layer's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from convlens.core import display
from convlens.errors import InvalidArgumentError

__all__ = ["ConceptMethod", "ConceptsResult"]

#: How the bank is fitted: ``"nmf"`` (bank and coefficients nonnegative: activations after a ReLU),
#: ``"semi-nmf"`` (coefficients nonnegative, the bank signed: any activations).
ConceptMethod = Literal["nmf", "semi-nmf"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConceptsResult:
    """A layer's concepts over a dataset; tensors on the model's device.

    Attributes:
        bank: ``(n, C)`` float32, one concept per row, each of unit length (a fitted bank's row
            is all zero only where the data holds fewer than ``n`` directions); nonnegative for
            ``method="nmf"``. A fitted bank comes most used first; a given one in its own order.
        layer: The layer's name as the user gave it (wrapper prefixes kept).
        method: ``"nmf"`` or ``"semi-nmf"``.
        error: The relative reconstruction error over every position of every example,
            ``||A - U bank||_F / ||A||_F`` (0 is perfect), in float64 sums.
        explained: The share of the layer's variance the bank explains,
            ``1 - ||A - U bank||^2 / ||A - mean(A)||^2`` (1 is perfect; the mean is per channel).
        examples: How many examples the data held.
        indices: ``(n, k)`` int64 positions in the data of each concept's top examples, strongest
            first (ties to the lower position).
        strengths: ``(n, k)`` float32 the concept's largest coefficient in each of them.
        positions: ``(n, k, nd)`` int64 where in the layer's grid it peaks (the first maximum in
            raster order); None for a layer without spatial dimensions.
        boxes: ``(n, k, 2 * nd)`` int64 the input window that position sees (starts then ends,
            clipped; as :meth:`convlens.NeuronVisualizer.top_examples` gives it); None without
            ``positions`` or a receptive field.
        maps: ``(n, k, *grid)`` float32 the concept's coefficient map over each top example, at the
            layer's resolution; None with ``keep_inputs=False``.
        inputs: ``(n, k, *sample)`` the top examples themselves; None with ``keep_inputs=False``.
        importance: ``(T, n)`` float32 each concept's contribution to the score of each target
            class, the mean over the examples explained for that class of: with
            ``importance_method="gradient"``, ``sum over positions of u_i * (d score / d a) . bank_i``
            (gradient x coefficient, as CRAFT); with ``"ablation"``, the score lost when the
            concept's component ``u_i * bank_i`` is removed from the layer. None without importance.
        classes: ``(T,)`` int64 the class of each row of ``importance`` (the classes that were
            targeted at least once, ascending); None without importance.
        class_counts: ``(T,)`` int64 how many examples each row averages.
        importance_method: How ``importance`` was measured: ``"gradient"``, ``"ablation"`` or None.
    """

    bank: Tensor
    layer: str
    method: ConceptMethod
    error: float
    explained: float
    examples: int
    indices: Tensor
    strengths: Tensor
    positions: Tensor | None = None
    boxes: Tensor | None = None
    maps: Tensor | None = None
    inputs: Tensor | None = None
    importance: Tensor | None = None
    classes: Tensor | None = None
    class_counts: Tensor | None = None
    importance_method: str | None = None
    encode: Callable[..., Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        """How many concepts the bank holds."""
        return int(self.bank.shape[0])

    def transform(self, x: Tensor, *, forward_args: object = None) -> Tensor:
        """The concept coefficient maps of new inputs ``x``: ``(N, n, *grid)``, nonnegative.

        The model runs to the layer (no autograd, stopped right after it) and each position's
        activation is explained by the bank as in the fit.
        """
        if self.encode is None:
            raise InvalidArgumentError("this ConceptsResult was built without a model: transform needs one.")
        return self.encode(x, forward_args=forward_args)

    def heatmaps(self, size: tuple[int, ...] | None = None) -> Tensor:
        """``maps`` upsampled to ``size`` and scaled to [0, 1] per concept: ``(n, k, *size)``.

        Bilinear upsampling (as Grad-CAM's) to ``size`` (default: the inputs' size); each concept's
        maps are divided by their largest value over its ``k`` examples, so that they compare
        across examples; for :func:`convlens.overlay`.
        """
        if self.maps is None:
            raise InvalidArgumentError("no maps were kept: call concepts with keep_inputs=True.")
        if self.maps.dim() < 3:
            raise InvalidArgumentError(
                f"layer {self.layer!r} has no spatial grid: its concepts have one coefficient per example, "
                "no map to overlay."
            )
        if size is None:
            if self.inputs is None:
                raise InvalidArgumentError("no inputs were kept: pass size= (the pictures' spatial size).")
            size = tuple(self.inputs.shape[3:])
        n, k = self.maps.shape[:2]
        grid = self.maps.shape[2:]
        flat = self.maps.reshape(n * k, 1, *grid).float()
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(grid)]
        up = F.interpolate(flat, size=size, mode=mode, align_corners=False).reshape(n, k, *size)
        top = self.maps.reshape(n, -1).amax(1).clamp(min=torch.finfo(torch.float32).tiny)
        return (up / top.view(n, 1, *([1] * len(size)))).clamp(0, 1)

    def top_classes(self, concept: int, m: int = 3) -> list[tuple[int, float]]:
        """The ``m`` classes the concept matters most for: ``(class, importance)``, largest size first.

        Ranked by the importance's size: a concept that lowers a class's score (a negative
        importance) matters to it as much as one that raises it by as much. Empty without importance.
        """
        if self.importance is None or self.classes is None:
            return []
        column = self.importance[:, concept]
        order = torch.argsort(column.abs(), descending=True, stable=True)[:m]
        return [(int(self.classes[i]), float(column[i])) for i in order]

    def _repr_html_(self) -> str:
        """The concepts for Jupyter: one row per concept, its top examples with the peak's window.

        The heading says how much of the layer the bank explains; each row's first cell names the
        concept and the classes it matters most for. At most ``MAX_ITEMS`` (32) pictures are drawn
        (whole rows); without kept inputs, a table of indices and strengths.

        Example:
            >>> import torch
            >>> res = ConceptsResult(bank=torch.eye(2), layer="4", method="nmf", error=0.1, explained=0.9,
            ...     examples=5, indices=torch.tensor([[0, 1], [2, 3]]), strengths=torch.ones(2, 2),
            ...     inputs=torch.rand(2, 2, 1, 8, 8))
            >>> page = res._repr_html_()
            >>> page.count("<img"), "90.0% of the variance" in page
            (4, True)
        """
        n, k = int(self.indices.shape[0]), int(self.indices.shape[1])
        title = display.heading(
            "ConceptsResult",
            f"layer {self.layer!r}: {n} concepts ({self.method}) over {self.examples} examples explain "
            f"{100 * self.explained:.1f}% of the variance (relative error {self.error:.3f})",
        )
        indices, values = self.indices.tolist(), self.strengths.double().tolist()
        header = ["concept", *(f"{j + 1}" for j in range(k))]

        def name(i: int) -> display.Html:
            top = ", ".join(f"class {c} ({display.number(v)})" for c, v in self.top_classes(i, 2))
            return display.Html(f"{i}<br>{top}") if top else display.Html(str(i))

        if self.inputs is None:
            shown = display.cap(n, display.MAX_ROWS)
            rows = [
                [
                    name(i),
                    *(
                        display.Html(f"#{a}<br>{display.number(v)}")
                        for a, v in zip(indices[i], values[i], strict=True)
                    ),
                ]
                for i in range(shown)
            ]
            body = display.table(header, rows, align="l" + "r" * k, caption="index in the data, strength")
            return display.block(title, body, display.left_out(shown, n, "concepts"))
        columns = display.cap(k)
        shown = display.cap(n, max(1, display.MAX_ITEMS // max(columns, 1)))
        rows = []
        for i in range(shown):
            row: list[display.Html] = [name(i)]
            for j in range(columns):
                sample = self.inputs[i, j]
                box = (
                    None
                    if self.boxes is None
                    else display.box_in_plane(self.boxes[i, j].tolist(), sample.shape[1:])
                )
                tag = display.image_tag(display.picture(sample), box=box, alt=f"example {indices[i][j]}")
                row.append(display.cell(tag, f"#{indices[i][j]}", display.number(values[i][j])))
            rows.append(row)
        outlined = "; the peak's receptive field in yellow" if self.boxes is not None else ""
        body = display.table(header[: columns + 1], rows, caption=f"index in the data, strength{outlined}")
        return display.block(
            title,
            body,
            display.left_out(shown, n, "concepts"),
            display.left_out(columns, k, "examples of each row"),
        )
