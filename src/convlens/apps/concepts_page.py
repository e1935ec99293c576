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

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from convlens.apps.concepts_section import ConceptPictures, concept_section
from convlens.core import html
from convlens.core.checks import check_choice, check_int
from convlens.core.distributed import BATCH_SIZE, rank
from convlens.core.inputs import ForwardArgsLike
from convlens.core.layers import LayerSpec
from convlens.core.layouts import ReshapeSpec
from convlens.featureviz.concept_pictures import concept_pictures
from convlens.featureviz.concept_result import ConceptMethod, ConceptsResult
from convlens.featureviz.concepts import ConceptTarget, concepts
from convlens.featureviz.importance import ImportanceMethod
from convlens.models.images import PRESETS, PresetName

__all__ = ["ConceptsPageResult", "build_concepts_page", "write_concepts_page"]

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
            "is explained as a nonnegative mix of the concepts, and a concept's coefficient there says how "
            "much of it the activation holds.",
        )
    )
    body.append(section)
    index = root / "index.html"
    index.write_text(html.document(heading, *body, layout="catalog", note=note), encoding="utf-8")
    return index


@dataclass(frozen=True, slots=True, kw_only=True)
class ConceptsPageResult:
    """What :func:`build_concepts_page` made.

    Attributes:
        index: The page, ``out/index.html`` (written by rank 0 only under ``torchrun``).
        result: The concepts, as :func:`convlens.concepts` returned them (the same on every rank).
        pictures: Whether the concepts' pictures were drawn (on the writing rank: ``steps > 0`` and no all-zero concept; on the others, ``steps > 0``).
        seconds: The wall time of the whole build.
    """

    index: Path
    result: ConceptsResult
    pictures: bool
    seconds: float

    @property
    def line(self) -> str:
        """One line on what was found: ``"3 concepts explain 78.5% of features.4 over 360 examples"``."""
        r = self.result
        bank = "1 concept explains" if r.n == 1 else f"{r.n} concepts explain"
        return f"{bank} {r.explained:.1%} of {r.layer} over {r.examples} examples"


def build_concepts_page(
    model: nn.Module,
    layer: LayerSpec,
    data: Any,
    n: int,
    out: str | Path,
    *,
    method: ConceptMethod = "nmf",
    k: int = 9,
    target: ConceptTarget = None,
    importance: ImportanceMethod | None = "gradient",
    steps: int = 128,
    preset: PresetName | None = None,
    input_shape: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    note: str | None = None,
    call: str | None = None,
    forward_args: ForwardArgsLike = None,
    reshape: ReshapeSpec = None,
    batch_size: int = BATCH_SIZE,
    num_workers: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> ConceptsPageResult:
    """Find ``n`` concepts of ``layer`` over ``data``, draw each one, and write the page to ``out``.

    :func:`convlens.concepts` fits the bank and ranks the top examples (sharded under ``torchrun``:
    every rank gets the same result); then the writing rank (rank 0) draws each concept's picture in
    one batched optimization
    (:func:`~convlens.featureviz.concept_pictures.concept_pictures`) and writes the page with
    :func:`write_concepts_page`.

    Args:
        model: Any ``nn.Module``; left as found.
        layer: The layer, by name or module.
        data: A Dataset, a DataLoader or an iterable of batches; items are ``x`` or ``(x, y, ...)``.
        n: How many concepts.
        out: The page's folder (created).
        method: ``"nmf"`` (nonnegative activations) or ``"semi-nmf"`` (any activations).
        k: Top examples per concept.
        target: The class each example's importance is computed for: None (the predicted class),
            ``"label"`` (the ``y`` of ``(x, y)`` items) or a class index.
        importance: How the importance is measured (``"gradient"`` or ``"ablation"``), or None: none
            (a model without ``(N, classes)`` scores).
        steps: Optimization steps of each concept's picture; 0: no pictures (nor where a concept
            of the bank is all zero: it points nowhere).
        preset: The preprocessing the data went through (``"imagenet"`` or ``"lecture"``): examples
            are shown through it and pictures drawn in its colour space; None: inputs are shown as
            they are (in [0, 1], like the digits) and pictures are bounded pixel images.
        input_shape: One input, ``(1, C, H, W)``, for the pictures (None: the pictures' default).
        class_names: Names of the model's output classes, for the importance lines.
        title: The page's heading (default: ``"Concepts at <layer>"``).
        note: A warning line at the top of the page (e.g. "random weights").
        call: The call shown under the heading (default: the ``convlens.concepts`` call made).
        forward_args: The model's other forward arguments, passed on every forward.
        reshape: How the layer's output becomes ``(N, C, *spatial)``.
        batch_size: Batch size when ``data`` is a Dataset.
        num_workers: DataLoader workers when ``data`` is a Dataset.
        seed: Seeds the fit and the pictures.
        progress: Progress on stderr, and a line for the pictures.

    Returns:
        The page's path, the concepts, and whether pictures were drawn.

    Raises:
        InvalidArgumentError: ``steps`` below 0, an unknown ``preset``, and whatever
            :func:`convlens.concepts` refuses (all before any work).
    """
    started = time.perf_counter()
    steps = check_int("steps", steps, 0)
    if preset is not None:
        check_choice("preset", preset, list(PRESETS))
    result = concepts(
        model, layer, data, n, method=method, k=k, target=target, importance=importance, seed=seed, reshape=reshape,
        batch_size=batch_size, num_workers=num_workers, progress=progress, forward_args=forward_args,
    )  # fmt: skip
    index = Path(out) / "index.html"
    if rank() != 0:
        return ConceptsPageResult(
            index=index, result=result, pictures=steps > 0, seconds=time.perf_counter() - started
        )
    pictures: Tensor | None = None
    drawable = bool((result.bank.norm(dim=1) > 0).all())  # a zero row points nowhere: no picture
    if steps > 0 and drawable:
        began = time.perf_counter()
        drawn = concept_pictures(
            model, layer, result.bank, input_shape=input_shape, normalize=preset, steps=steps, seed=seed,
            reshape=reshape, forward_args=forward_args,
        )  # fmt: skip
        pictures = (drawn.picture if drawn.picture is not None else drawn.image).detach().float().clamp(0, 1)
        if progress:
            print(f"[concepts] {result.n} pictures in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    made = call or (
        f"convlens.concepts(model, {result.layer!r}, data, {n}, method={method!r}, k={k}, target={target!r})"
    )
    write_concepts_page(
        result,
        out,
        pictures=pictures,
        class_names=class_names,
        preset=preset,
        title=title,
        note=note,
        call=made,
    )
    return ConceptsPageResult(
        index=index, result=result, pictures=pictures is not None, seconds=time.perf_counter() - started
    )
