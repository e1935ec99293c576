"""The atlas's pages: an index with the shape table, a page per layer and a page per unit.

:func:`~convlens.apps.atlas.build_atlas` computes what each unit needs into
``out/_cache`` (its pictures as PNGs and a ``unit.json``); :func:`write_site`
turns that into plain HTML linking those PNGs, with the one HTML writer
(:mod:`convlens.core.html`, the ``"catalog"`` layout of its stylesheet): no
script, nothing fetched. Nothing here computes: it only reads the cache and writes.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from torch import nn
    >>> import convlens as cl
    >>> report = cl.trace_shapes(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 1, 8, 8))
    >>> with tempfile.TemporaryDirectory() as out:
    ...     write_site(Path(out), report, [], fingerprint="f", title="Tiny", note=None, names={})
    ...     page = (Path(out) / "index.html").read_text()
    >>> "<h1>Tiny: an atlas</h1>" in page, "[1, 2, 6, 6]" in page
    (True, True)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convlens.core import html
from convlens.core.html import Html
from convlens.core.report import LayerShape, ShapeReport

__all__ = ["SECTION", "Plan", "cache_key", "concepts_key", "write_site"]

#: Each layer with a page: its row of the shape report, the units shown, and those to compute.
Plan = list[tuple[LayerShape, list[int], list[int]]]

#: The file of a layer's concepts section in its cache folder (its markup under ``"html"``, plain JSON as a
#: unit's ``unit.json``), written last: its presence means done.
SECTION = "concepts.json"


def cache_key(fingerprint: str, layer: str, unit: int) -> str:
    """The name of a unit's folder in ``out/_cache``: a hash of the build's fingerprint, the layer and the unit.

    Example:
        >>> len(cache_key("f", "features.0", 3)), cache_key("f", "a", 0) == cache_key("f", "a", 1)
        (20, False)
    """
    return hashlib.sha256(f"{fingerprint}|{layer}|{unit}".encode()).hexdigest()[:20]


def concepts_key(fingerprint: str, layer: str, n: int, method: str, names: Sequence[str] | None) -> str:
    """The name of a layer's concepts folder in ``out/_cache``: a hash of what its section depends on.

    Example:
        >>> len(concepts_key("f", "a", 6, "nmf", None)), concepts_key("f", "a", 6, "nmf", None) == (
        ...     concepts_key("f", "b", 6, "nmf", None))
        (20, False)
    """
    what = json.dumps([fingerprint, layer, "concepts", n, method, None if names is None else list(names)])
    return hashlib.sha256(what.encode()).hexdigest()[:20]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "layer"


def _write(path: Path, title: str, body: str, note: str | None, depth: int) -> None:
    """A page ``depth`` folders below the index, with the link back to it and the note."""
    up = "../" * depth
    page = html.document(title, body, layout="catalog", links=[(f"{up}index.html", "atlas index")], note=note)
    path.write_text(page, encoding="utf-8")


def write_site(
    root: Path,
    report: ShapeReport,
    plan: Plan,
    *,
    fingerprint: str,
    title: str,
    note: str | None,
    names: dict[str, list[str]],
    concepts: dict[str, str] | None = None,
) -> None:
    """Write ``root/index.html``, ``root/layers/<layer>.html`` and ``root/units/<layer>/<unit>.html``.

    Args:
        root: The site's folder; the units' pictures are in ``root/_cache`` already.
        report: The model's shape report, shown on the index.
        plan: The layers with a page, in order, and their units.
        fingerprint: The build's fingerprint (see :func:`cache_key`).
        title: The site's title.
        note: A line shown on every page (e.g. "random weights"), or None.
        names: Names of a layer's units (the classes of the output layer), shown on their pages.
        concepts: The layers with a concepts section, each with its folder's name in ``root/_cache``
            (:func:`~convlens.apps.atlas_concepts.concepts_key`), where the section's markup
            (:data:`~convlens.apps.atlas_concepts.SECTION`) and its pictures are; put on the layer's page.
    """
    (root / "layers").mkdir(parents=True, exist_ok=True)
    (root / "units").mkdir(parents=True, exist_ok=True)
    drawn = {row.name for row, _, _ in plan}
    rows = [
        [
            html.link(f"layers/{_slug(r.name)}.html", r.name) if r.name in drawn else r.name,
            r.type, str(list(r.input_shape)), str(list(r.output_shape)), f"{r.params:,}", f"{r.macs:,}",
            "" if r.receptive_field is None else str(r.receptive_field), "" if r.jump is None else str(r.jump),
        ]
        for r in report.rows
    ]  # fmt: skip
    header = ["layer", "type", "in", "out", "params", "MACs", "RF", "jump"]
    links = " ".join(html.link(f"layers/{_slug(row.name)}.html", row.name) for row, _, _ in plan)
    body = (
        html.element("h1", f"{title}: an atlas")
        + html.element(
            "p",
            Html(
                f"{report.params:,} parameters, {report.macs:,} multiply-accumulates for an input of "
                f"{html.escape(list(report.input_shape))}. Layers drawn: {links}"
            ),
        )
        + html.element("h2", "Layer by layer")
        + html.table(header, rows, align="llllrrrr")
    )
    _write(root / "index.html", f"{title}: atlas", body, note, 0)
    for li, (row, shown, _) in enumerate(plan):
        slug = _slug(row.name)
        cells = []
        for unit in shown:
            picture = html.image(
                f"../_cache/{cache_key(fingerprint, row.name, unit)}/viz.png", f"unit {unit}"
            )
            cells.append(
                html.figure(html.link(f"../units/{slug}/{unit}.html", Html(f"{picture}unit {unit}")))
            )
        neighbours = [(f"../layers/{_slug(r.name)}.html", text) for r, text in _neighbours(plan, li)]
        body = (
            html.element("h1", f"{row.name} ({row.type}, output {list(row.output_shape)})")
            + html.nav(neighbours, separator=" · ")
            + html.element("p", "Each unit's feature visualization; follow one for its dataset examples.")
            + html.gallery(cells)
        )
        if row.name in (concepts or {}):
            entry = json.loads(
                (root / "_cache" / (concepts or {})[row.name] / SECTION).read_text(encoding="utf-8")
            )
            body += Html(entry["html"])
        _write(root / "layers" / f"{slug}.html", row.name, body, note, 1)
        (root / "units" / slug).mkdir(parents=True, exist_ok=True)
        for ui, unit in enumerate(shown):
            labels = names.get(row.name, [])
            label = labels[unit] if unit < len(labels) else None
            _write_unit(root, row, shown, ui=ui, unit=unit, fingerprint=fingerprint, note=note, name=label)


def _neighbours(plan: Plan, i: int) -> list[tuple[LayerShape, str]]:
    """The layers before and after layer ``i``, each with its link's text."""
    before = [(plan[i - 1][0], f"← {plan[i - 1][0].name}")] if i > 0 else []
    return before + ([(plan[i + 1][0], f"{plan[i + 1][0].name} →")] if i + 1 < len(plan) else [])


def _write_unit(
    root: Path,
    row: LayerShape,
    shown: list[int],
    *,
    ui: int,
    unit: int,
    fingerprint: str,
    note: str | None,
    name: str | None,
) -> None:
    slug = _slug(row.name)
    key = cache_key(fingerprint, row.name, unit)
    meta: dict[str, Any] = json.loads((root / "_cache" / key / "unit.json").read_text())
    src = f"../../_cache/{key}/"
    links = [(f"../../layers/{slug}.html", row.name)]
    if ui > 0:
        links.append((f"{shown[ui - 1]}.html", f"← unit {shown[ui - 1]}"))
    if ui + 1 < len(shown):
        links.append((f"{shown[ui + 1]}.html", f"unit {shown[ui + 1]} →"))
    what = "class picture" if meta.get("cam") else "feature visualization"
    own = [html.figure(html.image(src + "viz.png", what), f"objective {meta['value']:.3g}")]
    if meta.get("filter"):
        own.append(html.figure(html.image(src + "filter.png", "filter weights"), "its filter weights"))
    examples = meta["examples"]
    parts = [
        html.element("h1", f"{row.name}, unit {unit}{': ' + name if name else ''}"),
        html.nav(links, separator=" · "),
        html.element("h2", f"Its {what}"),
        html.gallery(own),
        html.element("h2", f"The {len(examples)} dataset examples that excite it most"),
        html.gallery(
            html.figure(
                html.image(f"{src}example{i}.png", f"example {e['index']}"),
                f"#{e['index']} · {e['value']:.3g}",
            )
            for i, e in enumerate(examples)
        ),
    ]
    if any(e["box"] is not None for e in examples):
        parts.append(html.element("h2", "The window each one's peak sees (its receptive field)"))
        parts.append(
            html.gallery(
                html.figure(html.image(f"{src}crop{i}.png", f"window {i}"), f"#{e['index']}")
                for i, e in enumerate(examples)
                if e["box"] is not None
            )
        )
    if meta.get("cam"):
        parts.append(html.element("h2", f"Grad-CAM of this class on those examples (at {meta['cam']})"))
        parts.append(
            html.gallery(
                html.figure(html.image(f"{src}cam{i}.png", f"Grad-CAM {i}"), f"#{e['index']}")
                for i, e in enumerate(examples)
            )
        )
    _write(root / "units" / slug / f"{unit}.html", f"{row.name} unit {unit}", "".join(parts), note, 2)
