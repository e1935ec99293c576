"""The atlas's concepts: a section on a layer's page, fitted once per layer and cached.

:func:`~convlens.apps.atlas.build_atlas` (``concepts=n``) gives a layer's page the section that
:func:`~convlens.apps.concepts_section.concept_section` writes: ``n`` concepts of the layer over the
data (:func:`convlens.concepts`), each with its picture
(:func:`~convlens.featureviz.concept_pictures.concept_pictures`, the recipe and ``steps`` of the
units' pictures), its top examples with their coefficient maps
and its importance for the classes the model predicts (``target=None``). Which layers get one, and
with which method, is read from the layer's activations on the data's first :data:`SIGN_EXAMPLES`
examples (one forward, every drawn layer tapped at once):

- a layer whose activations there are all nonnegative (after a ReLU, a pooling of one) is factored
  by ``method="nmf"``: a nonnegative bank, the classic neuron groups (and by semi-NMF after all
  when later data turns out signed: the fit refuses on every rank at once, and starts again);
- a signed layer with a spatial grid (a conv layer's output before its ReLU: what the atlas draws by
  default) is factored by ``method="semi-nmf"``: nonnegative coefficients, a signed bank;
- a signed layer without a grid (a ``Linear`` layer before its activation, the logits) gets no
  section: a handful of directions in a vector space of signed values shows nothing the unit pages
  do not;
- a layer with at most ``n`` units gets none either: ``n`` directions would span its whole channel
  space, and the concepts would be its channels again.

Each section is computed once: its pictures and its markup go to ``out/_cache/<key>/`` (the key
hashes the build's fingerprint, the layer, ``n``, the method and the class names), so a rebuild
reuses it without refitting. :func:`convlens.concepts` is sharded and all-reduced under ``torchrun``:
every rank calls it (:func:`fit_concepts_of`, with the same plan, read before any rank writes) and holds
the same bank; the pictures (:func:`draw_concepts`) are one of the jobs the ranks share
(:mod:`convlens.apps.atlas_draw`), and rank 0 writes the section (:func:`write_concepts`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from convlens.core.inputs import ForwardArgs
    >>> from convlens.core.layouts import Layout
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 10))
    >>> plans = plan_concepts(net, torch.rand(4, 1, 8, 8), ["0", "1", "3"], n=6, layout=Layout(),
    ...                       forward_args=ForwardArgs(), fingerprint="f", cache=Path("unused"), names=None)
    >>> [(p.layer, p.method, p.missing) for p in plans]
    [('0', 'semi-nmf', True), ('1', 'nmf', True)]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from convlens.apps.atlas_site import SECTION, concepts_key
from convlens.apps.concepts_section import concept_section
from convlens.core.inputs import ForwardArgs
from convlens.core.layers import unwrap
from convlens.core.layouts import Layout, ReshapeSpec
from convlens.core.tap import LayerTap
from convlens.core.values import model_dtype_device
from convlens.featureviz.concept_pictures import concept_pictures
from convlens.featureviz.concept_result import ConceptMethod, ConceptsResult
from convlens.featureviz.concepts import concepts as fit_concepts
from convlens.featureviz.nmf import SignedRowsError

__all__ = [
    "SIGN_EXAMPLES",
    "ConceptPlan",
    "draw_concepts",
    "fit_concepts_of",
    "plan_concepts",
    "write_concepts",
]

#: How many of the data's first examples show whether a layer is nonnegative: a few, as every drawn
#: layer's activations of them are held at once (a ResNet-50's conv layers: about 100 MB per example).
SIGN_EXAMPLES = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class ConceptPlan:
    """One layer's concepts section: the method, its cache folder's name, and whether it is to compute."""

    layer: str
    method: ConceptMethod
    key: str
    missing: bool


def plan_concepts(
    model: nn.Module,
    batch: Tensor,
    layers: Sequence[str],
    *,
    n: int,
    layout: Layout,
    forward_args: ForwardArgs,
    fingerprint: str,
    cache: Path,
    names: Sequence[str] | None,
) -> list[ConceptPlan]:
    """Which of ``layers`` get a section and with which method, from one forward of ``batch``.

    ``batch``: the data's first examples (:data:`SIGN_EXAMPLES` of them, or its first batch's);
    ``forward_args``: their forward arguments.
    """
    if not layers:
        return []
    dtype, device = model_dtype_device(unwrap(model))
    tap = LayerTap(model, list(layers))
    tap.run(batch.to(device, dtype), forward_args=forward_args)
    plans = []
    for layer in layers:
        activations = layout.apply(layout.pick(tap.outputs[layer]))
        units, grid = int(activations.shape[1]) if activations.dim() > 1 else 1, activations.dim() > 2
        nonnegative = bool((activations >= 0).all())
        if units <= n or not (grid or nonnegative):
            continue
        method: ConceptMethod = "nmf" if nonnegative else "semi-nmf"
        key = concepts_key(fingerprint, layer, n, method, names)
        missing = not (cache / key / SECTION).is_file()
        plans.append(ConceptPlan(layer=layer, method=method, key=key, missing=missing))
    return plans


def fit_concepts_of(
    model: nn.Module,
    data: Any,
    plan: ConceptPlan,
    *,
    n: int,
    k: int,
    seed: int,
    importance: bool,
    batch_size: int,
    num_workers: int,
    reshape: ReshapeSpec,
    forward_args: ForwardArgs,
) -> ConceptsResult:
    """Fit the layer's concepts over ``data``: every rank calls it (the fit is sharded and all-reduced)."""
    options: dict[str, Any] = {
        "k": k, "target": None, "importance": importance, "seed": seed, "reshape": reshape,
        "batch_size": batch_size, "num_workers": num_workers, "keep_inputs": True, "progress": False,
        "forward_args": forward_args,
    }  # fmt: skip
    try:
        return fit_concepts(model, plan.layer, data, n, method=plan.method, **options)
    except SignedRowsError:  # nonnegative on the first examples, signed later: every rank refuses alike
        return fit_concepts(model, plan.layer, data, n, method="semi-nmf", **options)


def draw_concepts(
    model: nn.Module,
    layer: str,
    bank: Tensor,
    *,
    steps: int,
    preset: str | None,
    shape: tuple[int, ...],
    seed: int,
    reshape: ReshapeSpec,
    forward_args: ForwardArgs,
) -> Tensor | None:
    """The concepts' pictures in [0, 1] (any rank may draw them); None when a concept has no direction.

    ``forward_args``: one row per concept.
    """
    if not bool((bank.norm(dim=1) > 0).all()):  # a concept that never fired has no direction to draw
        return None
    drawn = concept_pictures(
        model, layer, bank, input_shape=shape, normalize=preset, steps=steps, seed=seed,  # type: ignore[arg-type]  # a preset of PRESETS
        reshape=reshape, forward_args=forward_args,
    )  # fmt: skip
    return (drawn.image if drawn.picture is None else drawn.picture).detach().float().clamp(0, 1).cpu()


def write_concepts(
    result: ConceptsResult,
    plan: ConceptPlan,
    pictures: Tensor | None,
    *,
    cache: Path,
    preset: str | None,
    names: Sequence[str] | None,
) -> None:
    """Write the layer's section (its markup, pictures and maps) into its cache folder (rank 0)."""
    folder = cache / plan.key
    section = concept_section(
        result, pictures=pictures, class_names=names, preset=preset,  # type: ignore[arg-type]  # a preset of PRESETS
        folder=folder, href=f"../_cache/{plan.key}/",
    )  # fmt: skip
    # The fit's sums are split over the ranks, so their last bits depend on how many there are: kept to
    # six digits (the page shows three), the file is the same bytes from one process and from several.
    entry = {
        "layer": plan.layer,
        "method": result.method,
        "n": result.n,
        "explained": _digits(result.explained),
    }
    entry |= {"error": _digits(result.error), "examples": result.examples, "html": str(section)}
    (folder / SECTION).write_text(json.dumps(entry), encoding="utf-8")


def _digits(value: float) -> float:
    return float(f"{value:.6g}")
