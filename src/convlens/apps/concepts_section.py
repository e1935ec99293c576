"""One layer's concepts as HTML: the section the concepts page, the atlas's layer pages and the tour share.

:func:`concept_section` turns a :class:`~convlens.featureviz.concept_result.ConceptsResult` into markup
written with the one HTML writer (:mod:`convlens.core.html`): a line for the whole bank (how much of
the layer it explains, ``n``, ``k``, the number of examples), then per concept its picture (when
given), its top examples, each with the concept's coefficient map overlaid as a heat map
(:func:`convlens.overlay` of :meth:`~convlens.featureviz.concept_result.ConceptsResult.heatmaps`) and
the receptive-field window of its peak outlined in yellow (as the atlas draws a unit's top examples),
and its importance for the classes where it matters most
(:meth:`~convlens.featureviz.concept_result.ConceptsResult.top_classes`).

The pictures are PNG files written into ``folder`` and linked as ``href + name`` (as the atlas links
its pictures), or, without a folder, inlined as ``data:`` URIs so that the markup stands alone. There
is never a script and nothing is fetched from elsewhere. Nothing here computes a concept: it draws.

Example:
    >>> import torch
    >>> from convlens.featureviz.concept_result import ConceptsResult
    >>> result = ConceptsResult(
    ...     bank=torch.eye(2, 4), layer="features.3", method="nmf", error=0.25, explained=0.9,
    ...     examples=10, indices=torch.tensor([[3, 1], [0, 2]]), strengths=torch.ones(2, 2),
    ...     inputs=torch.rand(2, 2, 1, 8, 8), maps=torch.rand(2, 2, 4, 4),
    ...     boxes=torch.tensor([[[0, 0, 4, 4]] * 2] * 2),
    ...     importance=torch.tensor([[0.5, 0.1], [0.2, 0.3]]), classes=torch.tensor([0, 7]))
    >>> section = concept_section(result, class_names=[f"digit {d}" for d in range(10)])
    >>> section.count("<img"), section.count("<h3"), "90.0% of the variance" in section
    (4, 2, True)
    >>> print(importance_line(result, 1, class_names=None))
    Matters most for: class 7 (0.3), class 0 (0.1)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from convlens.apps.atlas_draw import framed, png_bytes, scaled
from convlens.core import html
from convlens.core.checks import check_choice, check_int
from convlens.core.html import Html
from convlens.errors import InvalidArgumentError
from convlens.featureviz.concept_result import ConceptsResult
from convlens.models.images import PRESETS, PresetName, deprocess, to_rgb_array
from convlens.render import overlay

__all__ = ["ConceptPictures", "concept_section", "importance_line", "summary_line"]

#: The concepts' own pictures: PNG bytes or PIL images, one per concept, or an ``(n, C, H, W)``
#: tensor in [0, 1] (the ``picture`` of a :class:`~convlens.featureviz.maximize.MaximizationResult`).
ConceptPictures = Sequence[bytes | Image.Image] | Tensor

_PICTURE = 160  # pixels: a concept's own picture
_ALPHA = 0.45  # the heat map's weight over the example (the atlas's Grad-CAM overlays use the same)
_LEGEND = (
    "Each example shows the concept's coefficient map as a heat map and, outlined, the window of the input "
    "its peak sees; it is captioned with its position in the data and the concept's largest coefficient "
    "in it. "
)

#: How the importance line was measured, by ``ConceptsResult.importance_method``.
_IMPORTANCE = {
    "gradient": "A concept's importance for a class is the mean, over the examples explained for that class, "
    "of gradient x coefficient: how much the concept adds to the class's score, to first order.",
    "ablation": "A concept's importance for a class is the mean, over the examples explained for that class, "
    "of the score lost when the concept's component is removed from the layer (ablation).",
}


def summary_line(result: ConceptsResult) -> str:
    """One line for the whole bank: how much of the layer it explains, ``n``, ``k``, the examples.

    Example:
        >>> import torch
        >>> from convlens.featureviz.concept_result import ConceptsResult
        >>> r = ConceptsResult(bank=torch.eye(3, 8), layer="features.3", method="nmf", error=0.31234,
        ...                    explained=0.87654, examples=360, indices=torch.zeros(3, 5, dtype=torch.long),
        ...                    strengths=torch.ones(3, 5))
        >>> print(summary_line(r))
        3 concepts (nmf) in the 8 channels of features.3, fitted over 360 examples, explain 87.7% of the variance of its activations (relative reconstruction error 0.312); 5 top examples each.
    """
    n, channels = result.bank.shape
    k = int(result.indices.shape[1]) if result.indices.dim() > 1 else 0
    bank = f"{n} concepts ({result.method}) in" if n != 1 else f"1 concept ({result.method}) in"
    return (
        f"{bank} the {channels} channels of {result.layer}, fitted over {result.examples} examples, "
        f"explain{'s' if n == 1 else ''} {result.explained:.1%} of the variance of its activations "
        f"(relative reconstruction error {result.error:.3f}); {k} top examples each."
    )


def importance_line(result: ConceptsResult, concept: int, *, class_names: Sequence[str] | None) -> str:
    """Where concept ``concept`` matters most: its three classes of largest importance (in size), named.

    The importance is :attr:`~convlens.featureviz.concept_result.ConceptsResult.importance` (gradient x
    coefficient or the score lost by ablation, mean over the examples explained for that class), shown
    to 2 significant digits.

    Example:
        >>> import torch
        >>> from convlens.featureviz.concept_result import ConceptsResult
        >>> r = ConceptsResult(bank=torch.eye(2, 2), layer="f", method="nmf", error=0.0, explained=1.0,
        ...                    examples=4, indices=torch.zeros(2, 1, dtype=torch.long),
        ...                    strengths=torch.ones(2, 1), importance=torch.tensor([[0.0123, 2.0], [-1.0, 0.5]]),
        ...                    classes=torch.tensor([3, 5]))
        >>> print(importance_line(r, 0, class_names=["zero", "one", "two", "three", "four", "five"]))
        Matters most for: five (-1), three (0.012)
    """
    top = result.top_classes(concept, 3)
    if not top:
        return "Importance not computed (importance=None)."

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and 0 <= c < len(class_names) else f"class {c}"

    return "Matters most for: " + ", ".join(f"{name(c)} ({value:.2g})" for c, value in top)


def concept_section(
    result: ConceptsResult,
    *,
    pictures: ConceptPictures | None = None,
    class_names: Sequence[str] | None = None,
    preset: PresetName | None = None,
    folder: Path | None = None,
    href: str = "",
    title: str | None = None,
    k: int | None = None,
    level: int = 2,
) -> Html:
    """The HTML of one layer's concepts: a heading, the bank's summary line, then each concept.

    Args:
        result: What :func:`convlens.concepts` returned. Its examples are drawn when it kept its
            inputs (``keep_inputs=True``); otherwise only their positions in the data are listed.
        pictures: Each concept's own picture (e.g. its feature visualization), one per concept:
            PNG bytes, PIL images, or an ``(n, C, H, W)`` tensor in [0, 1]; None: none shown.
        class_names: Names of the model's output classes (index ``c`` names class ``c``); None:
            classes are written ``class c``.
        preset: The preprocessing the data went through (``"imagenet"`` or ``"lecture"``), undone
            to show the examples; None: they are shown as they are when in [0, 1], else each
            stretched to [0, 1] (channels other than 3 averaged to grey).
        folder: Where to write the pictures as PNG files (created); None: they are inlined as
            ``data:`` URIs and nothing is written.
        href: The path from the page that will hold the section to ``folder``, ending with ``/``
            (e.g. ``"../_cache/abc/"``); unused without ``folder``.
        title: The section's heading (default: ``"Concepts at <layer>"``).
        k: At most this many top examples per concept, strongest first (None: all the result has).
        level: The heading level of the section's title (2: ``<h2>``); each concept's is one below.
            A page that nests the section under its own headings (the tour) passes a deeper one.

    Returns:
        The section's markup: a heading (``<h2>`` at ``level=2``) with the summary, then per concept
        a heading one level below, a gallery
        (its picture, then its top examples captioned ``#index · strength``) and its importance line.

    Raises:
        InvalidArgumentError: ``pictures`` whose count differs from the number of concepts, an
            unknown ``preset``, ``k`` below 1, or ``level`` outside 1 to 5.
    """
    if preset is not None:
        check_choice("preset", preset, list(PRESETS))
    shown = None if k is None else check_int("k", k, 1)
    if check_int("level", level, 1) > 5:
        raise InvalidArgumentError(
            f"level must be 1 to 5 (the concepts' headings are one below); got {level}."
        )
    own = _pictures(pictures, result.n)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def place(picture: Image.Image, name: str, alt: str) -> Html:
        if folder is None:
            return html.image(html.data_uri(png_bytes(picture)), alt)
        picture.save(folder / name, format="PNG")
        return html.image(href + name, alt)

    examples = _example_panels(result, preset, shown)
    parts = [
        html.element(f"h{level}", title if title is not None else f"Concepts at {result.layer}"),
        html.element("p", summary_line(result)),
        html.element("p", _LEGEND + _IMPORTANCE.get(result.importance_method or "", "")),
        html.nav(((f"#concept-{i}", f"concept {i}") for i in range(result.n)), separator=" · "),
    ]
    for i in range(result.n):
        figures = []
        if own is not None:
            figures.append(
                html.figure(place(scaled(own[i], _PICTURE), f"concept{i}.png", f"concept {i}"), "its picture")
            )
        for j, (index, strength, panel) in enumerate(examples[i]):
            caption = f"#{index} · {strength:.3g}"
            if panel is None:
                figures.append(html.figure(html.element("span", caption)))
            else:
                picture = place(panel, f"concept{i}_example{j}.png", f"concept {i} example {index}")
                figures.append(html.figure(picture, caption))
        parts += [
            html.element(f"h{level + 1}", f"Concept {i}", id=f"concept-{i}"),
            html.gallery(figures),
            html.element("p", importance_line(result, i, class_names=class_names)),
        ]
    return Html("\n".join(parts))


def _pictures(pictures: ConceptPictures | None, n: int) -> list[Image.Image] | None:
    """The concepts' pictures as PIL images, checked to be one per concept."""
    if pictures is None:
        return None
    if isinstance(pictures, Tensor):
        if pictures.dim() != 4:
            raise InvalidArgumentError(
                f"pictures as a tensor must be (n, C, H, W) in [0, 1]; got shape {tuple(pictures.shape)}."
            )
        images = [Image.fromarray(_rgb(p.detach().float().cpu(), None)) for p in pictures]
    else:
        images = [
            Image.open(io.BytesIO(p)).convert("RGB") if isinstance(p, bytes) else p.convert("RGB")
            for p in pictures
        ]
    if len(images) != n:
        raise InvalidArgumentError(
            f"pictures must be one per concept: {n} concepts, got {len(images)} pictures."
        )
    return images


def _example_panels(
    result: ConceptsResult, preset: PresetName | None, k: int | None
) -> list[list[tuple[int, float, Image.Image | None]]]:
    """Per concept, each top example: its index, its strength, and its panel (None: nothing to draw).

    A panel is the example, with the concept's heat map overlaid when the layer has a grid of the
    picture's rank (a layer without one, a ``Linear``, has one coefficient per example: nothing to
    overlay) and the window of its peak outlined when there is one. Examples are drawn when the
    inputs were kept and are pictures (``(C, H, W)``).
    """
    inputs = result.inputs if result.inputs is not None and result.inputs.dim() == 5 else None
    grid = result.maps is not None and result.maps.dim() == 4
    heat = result.heatmaps().cpu() if inputs is not None and grid else None
    boxes = result.boxes.cpu().tolist() if result.boxes is not None and result.boxes.shape[-1] == 4 else None
    indices, strengths = result.indices.cpu().tolist(), result.strengths.float().cpu().tolist()
    panels: list[list[tuple[int, float, Image.Image | None]]] = []
    for i in range(result.n):
        row: list[tuple[int, float, Image.Image | None]] = []
        for j, (index, strength) in enumerate(zip(indices[i][:k], strengths[i][:k], strict=True)):
            panel = None
            if inputs is not None:
                picture = _rgb(inputs[i, j].detach().float().cpu(), preset)
                blended = picture if heat is None else overlay(picture, heat[i, j], alpha=_ALPHA)
                panel = framed(blended, None if boxes is None else boxes[i][j])
            row.append((int(index), float(strength), panel))
        panels.append(row)
    return panels


def _rgb(x: Tensor, preset: PresetName | None) -> np.ndarray:
    """A model input (``(C, H, W)``) as an ``(H, W, 3)`` uint8 picture, as the atlas shows its examples."""
    if preset is not None and x.shape[0] == 3:
        return deprocess(x, preset=preset)
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        x = (x - low) / max(high - low, 1e-12)
    grey = x if x.shape[0] == 3 else x.mean(0)
    return to_rgb_array(grey.clamp(0, 1))
