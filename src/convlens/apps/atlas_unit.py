"""The atlas's unit pages: a unit's pictures, its top examples and their classes, and its circuits.

:func:`~convlens.apps.atlas_site.write_site` writes the site; each unit's page body is
:func:`unit_page`'s, from the unit's ``unit.json`` in ``out/_cache`` and, for its circuits, the
:data:`CIRCUITS` files there. Nothing here computes: it reads the cache and writes markup with the
one HTML writer (:mod:`convlens.core.html`).

A page has, in order: the unit's feature visualization (or class picture) and, for the first conv
layer, its filter weights; its top dataset examples, each captioned with its index, its activation
and (when the data has labels) its class, and a line naming the classes among them, most frequent
first; the window each one's peak sees; the output units' Grad-CAMs; and its circuits:

- **Fed by** the drawn layer before it: that layer's 5 channels with the largest ``|strength|``
  into this unit (ties: the lower channel), each with its signed strength, its picture and a link to
  its page when it is drawn, else its number and "not drawn";
- **Feeds** the next drawn layer: its drawn units ranked by ``|strength|`` from this unit, top 5;
- how the strengths were found: from the weights (the norm of the kernel slice between the two
  channels, through the ops :func:`convlens.featureviz.circuits.connections` followed) or from
  attribution (the mean gradient x activation over the unit's top examples).

A :data:`CIRCUITS` file is JSON: ``{"earlier": A, "later": B, "method": "weights" | "attribution",
"path": str, "units": [B's units], "strengths": [[one float per channel of A] per unit, in order]}``.

Example:
    >>> class_counts([{"label": 3}, {"label": 1}, {"label": 3}, {"label": None}, {}])
    [(3, 2), (1, 1)]
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convlens.core import html
from convlens.core.html import Html
from convlens.core.report import LayerShape

__all__ = ["CIRCUITS", "Site", "class_counts", "class_name", "unit_page"]

#: The file of the circuits into a layer's units, in its cache folder
#: (:func:`~convlens.apps.atlas_site.circuits_key`).
CIRCUITS = "circuits.json"

_TOP = 5  # units shown for each direction of a unit's circuits
_SMALL = 64  # pixels: a thumbnail in a unit's circuits


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """What every page of one atlas needs to know of the others.

    Attributes:
        root: The site's folder (``_cache`` inside).
        files: Each drawn layer's file stem (:func:`~convlens.apps.atlas_site.layer_file`).
        order: The drawn layers, in the model's order.
        shown: Each drawn layer's units with a page.
        keys: Each shown unit's cache folder, by ``(layer, unit)``.
        circuits: The circuits into a layer's units (a :data:`CIRCUITS` file's content), by that layer.
        labels: The names of the data's labels, or None.
    """

    root: Path
    files: dict[str, str]
    order: list[str]
    shown: dict[str, list[int]]
    keys: dict[tuple[str, int], str]
    circuits: dict[str, dict[str, Any]]
    labels: list[str] | None

    def meta(self, layer: str, unit: int) -> dict[str, Any]:
        """The ``unit.json`` of a shown unit."""
        path = self.root / "_cache" / self.keys[layer, unit] / "unit.json"
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return meta


def class_counts(examples: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(label, how many)`` among examples with a ``"label"``: most frequent first, ties the lower label.

    Example:
        >>> class_counts([{"label": 2}, {"label": 0}, {"label": 2}, {"label": 0}]), class_counts([{}])
        ([(0, 2), (2, 2)], [])
    """
    counts = Counter(int(e["label"]) for e in examples if e.get("label") is not None)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def class_name(site: Site, label: int) -> str:
    """A label's name (its number when the site has no names for it)."""
    labels = site.labels or []
    return labels[label] if 0 <= label < len(labels) else str(label)


def unit_page(site: Site, row: LayerShape, *, ui: int, meta: dict[str, Any], name: str | None) -> Html:
    """The body of the page of ``row``'s ``ui``-th shown unit, whose ``unit.json`` is ``meta``."""
    shown, unit = site.shown[row.name], site.shown[row.name][ui]
    stem = site.files[row.name]
    src = f"../../_cache/{site.keys[row.name, unit]}/"
    links = [(f"../../layers/{stem}.html", row.name)]
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
                *([class_name(site, e["label"])] if e.get("label") is not None else []),
            )
            for i, e in enumerate(examples)
        ),
    ]
    counts = class_counts(examples)
    if counts:
        said = ", ".join(f"{class_name(site, label)} {n}" for label, n in counts)
        unlabelled = len(examples) - sum(n for _, n in counts)
        said += f" ({unlabelled} without a label)" if unlabelled else ""
        parts.append(html.element("p", f"Classes among its {len(examples)} top examples: {said}."))
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
    return Html("".join(parts) + _circuits(site, row.name, unit))


def _circuits(site: Site, layer: str, unit: int) -> Html:
    """The "Circuits" section of ``layer``'s ``unit``: what feeds it and what it feeds (empty: neither known)."""
    parts = []
    into = site.circuits.get(layer)
    if into is not None and unit in into["units"]:
        earlier = into["earlier"]
        strengths = into["strengths"][into["units"].index(unit)]
        ranked = _strongest([(c, float(s)) for c, s in enumerate(strengths)])
        parts += [
            html.element("h3", f"Fed by {earlier}"),
            html.gallery(_neighbour(site, earlier, c, s) for c, s in ranked),
            html.element("p", _how(into, f"this unit with respect to {earlier}'s channels")),
        ]
    at = site.order.index(layer)
    later = site.order[at + 1] if at + 1 < len(site.order) else None
    out = None if later is None else site.circuits.get(later)
    if later is not None and out is not None and out["earlier"] == layer:
        drawn = set(site.shown[later])
        pairs = [(u, float(row[unit])) for u, row in zip(out["units"], out["strengths"], strict=True)]
        ranked = _strongest([(u, s) for u, s in pairs if u in drawn])
        parts += [
            html.element("h3", f"Feeds {later}"),
            html.gallery(_neighbour(site, later, u, s) for u, s in ranked),
            html.element("p", _how(out, f"each unit of {later} with respect to {layer}'s channels")),
        ]
    if not parts:
        return Html("")
    return Html(html.element("h2", "Circuits") + "".join(parts))


def _strongest(pairs: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The :data:`_TOP` pairs of largest ``|strength|``; ties: the lower unit."""
    return sorted(pairs, key=lambda pair: (-abs(pair[1]), pair[0]))[:_TOP]


def _neighbour(site: Site, layer: str, unit: int, strength: float) -> Html:
    """A unit of another layer in a circuit: its picture, linked to its page, or its number if it is not drawn."""
    value = f"strength {strength:+.3g}"
    if unit not in site.shown.get(layer, []):
        return html.figure(Html(""), f"channel {unit} (not drawn)", value)
    picture = html.image(
        f"../../_cache/{site.keys[layer, unit]}/viz.png", f"{layer} unit {unit}", width=_SMALL
    )
    return html.figure(html.link(f"../{site.files[layer]}/{unit}.html", Html(f"{picture}unit {unit}")), value)


def _how(entry: dict[str, Any], of: str) -> str:
    """The sentence saying how a circuit's strengths were found."""
    if entry["method"] == "weights":
        through = f"through {entry['path']}" if entry["path"] else "directly connected"
        return (
            f"Strengths from the weights: the norm of the kernel slice between the two channels, {through}."
        )
    return f"Strengths from attribution: the mean gradient x activation of {of} over its top examples."
