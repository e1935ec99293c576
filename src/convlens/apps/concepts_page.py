"""The concepts page: one layer's concepts as an offline page, ``out/index.html`` and its pictures.

:func:`write_concepts_page` frames :func:`~convlens.apps.concepts_section.concept_section` in the one
HTML writer's :func:`~convlens.core.html.document` (the ``"catalog"`` layout, as the atlas's pages) and
writes the pictures as PNG files in ``out/images/``, beside the page, as the atlas does. There is no
script and nothing is fetched from elsewhere: the folder can be copied and opened anywhere. The
``convlens concepts`` command writes it.

Example:
    >>> import tempfile
    >>> import torch
    >>> from convlens.featureviz.concept_result import ConceptsResult
    >>> result = ConceptsResult(
    ...     bank=torch.eye(2, 4), layer="features.3", method="nmf", error=0.25, explained=0.9,
    ...     examples=10, indices=torch.tensor([[3, 1], [0, 2]]), strengths=torch.ones(2, 2),
    ...     inputs=torch.rand(2, 2, 1, 8, 8), maps=torch.rand(2, 2, 4, 4))
    >>> with tempfile.TemporaryDirectory() as out:
    ...     index = write_concepts_page(result, Path(out), title="Tiny")
    ...     page = index.read_text()
    ...     written = sorted(p.name for p in (Path(out) / "images").iterdir())
    >>> index.name, len(written), written[0], "<h1>Tiny</h1>" in page, 'src="images/concept0_example0.png"' in page
    ('index.html', 4, 'concept0_example0.png', True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from convlens.apps.concepts_section import ConceptPictures, concept_section
from convlens.core import html
from convlens.featureviz.concept_result import ConceptsResult
from convlens.models.images import PresetName

__all__ = ["write_concepts_page"]

#: The folder of the page's pictures, beside ``index.html``.
IMAGES = "images"


def write_concepts_page(
    result: ConceptsResult,
    out: str | Path,
    *,
    pictures: ConceptPictures | None = None,
    class_names: Sequence[str] | None = None,
    preset: PresetName | None = None,
    title: str | None = None,
    note: str | None = None,
    call: str | None = None,
) -> Path:
    """Write ``out/index.html``: one layer's concepts, their pictures in ``out/images/``.

    Args:
        result: What :func:`convlens.concepts` returned.
        out: The page's folder (created).
        pictures: Each concept's own picture (see :func:`~convlens.apps.concepts_section.concept_section`).
        class_names: Names of the model's output classes, for the importance lines.
        preset: The preprocessing the data went through, undone to show the examples.
        title: The page's heading and title (default: ``"Concepts at <layer>"``).
        note: A warning line at the top (e.g. "random weights"); None: no line.
        call: The call or command that made the result, shown under the heading (copyable).

    Returns:
        The page's path, ``out/index.html``.

    Raises:
        InvalidArgumentError: ``pictures`` whose count differs from the number of concepts, or an
            unknown ``preset`` (nothing is written).
    """
    root = Path(out)
    heading = title if title is not None else f"Concepts at {result.layer}"
    section = concept_section(
        result,
        pictures=pictures,
        class_names=class_names,
        preset=preset,
        folder=root / IMAGES,
        href=f"{IMAGES}/",
        title="The bank and its concepts",
    )
    body = [html.element("h1", heading)]
    if call is not None:
        body.append(html.element("pre", call, class_="call"))
    body.append(
        html.element(
            "p",
            "A concept is a direction in the layer's channel space; at every position the layer's activation "
            "is explained as a nonnegative mix of the concepts. Each example is shown with the concept's "
            "coefficient map as a heat map and, outlined, the window its peak sees.",
        )
    )
    body.append(section)
    index = root / "index.html"
    index.write_text(html.document(heading, *body, layout="catalog", note=note), encoding="utf-8")
    return index
