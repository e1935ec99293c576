"""The atlas's pages: an index with the shape table, a page per layer and a page per unit.

:func:`~convlens.apps.atlas.build_atlas` computes what each unit needs into
``out/_cache`` (its pictures as PNGs and a ``unit.json``); :func:`write_site`
turns that into plain HTML linking those PNGs, with the one HTML writer
(:mod:`convlens.core.html`, the ``"catalog"`` layout of its stylesheet): no
script, nothing fetched. Nothing here computes: it only reads the cache and writes.

A unit's page has, in order: its feature visualization (or class picture) and, for the first conv
layer, its filter weights; its top dataset examples, each captioned with its index, its activation
and (when the data has labels) its class, then a line naming the classes among them, most frequent
first ("classes among its 8 top examples: 5 of class cat, 3 of class dog"); the window each one's
peak sees; the output units' Grad-CAMs; and its circuits, from the :data:`CIRCUITS` files in the cache:

- **Fed by** the drawn layer before it: that layer's drawn units ranked by ``|strength|`` into this
  unit (ties: the lower channel), top 5, each with its signed strength, its picture and a link to its
  page; and, when stronger feeders are among the channels not drawn, a line naming the 5 strongest of
  all its channels;
- **Feeds** the next drawn layer: that layer's drawn units ranked by ``|strength|`` from this unit, top 5;
- how the strengths were found: from the weights (the norm of the weights between the two
  channels: a conv's kernel slice, a Linear layer's columns of the channel; through the ops :func:`convlens.featureviz.circuits.connections` followed) or from
  attribution (the mean gradient x activation over the unit's top examples).

A layer's page has the grid of its units (the output layer's named by their classes) and, when the
data has labels, a table of its units by the most frequent class among their top examples.

Each layer's files are named by :func:`layer_file`, which never gives two distinct layer names one
file, on a case-sensitive disk or not: ``layers/<file>.html`` and ``units/<file>/<unit>.html``.

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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convlens.core import html
from convlens.core.html import Html
from convlens.core.report import LayerShape, ShapeReport

__all__ = [
    "CIRCUITS",
    "SECTION",
    "Plan",
    "cache_key",
    "circuits_key",
    "concepts_key",
    "layer_file",
    "write_site",
]

#: Each layer with a page: its row of the shape report, the units shown, and those to compute.
Plan = list[tuple[LayerShape, list[int], list[int]]]

#: The file of a layer's concepts section in its cache folder (its markup under ``"html"``, plain JSON as a
#: unit's ``unit.json``), written last: its presence means done.
SECTION = "concepts.json"

#: The file of the circuits into a layer's units in its cache folder (:func:`circuits_key`): JSON,
#: ``{"earlier": A, "later": B, "method": "weights" | "attribution", "path": str, "units": [B's units],
#: "strengths": [[one float per channel of A] per unit, in the order of "units"]}``.
CIRCUITS = "circuits.json"

_PLAIN = re.compile(r"[a-z0-9_][a-z0-9_.-]*")  # a name that may be its own file name ...
_HASHED = re.compile(r".*-[0-9a-f]{8}")  # ... unless it looks like a hashed one
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)
_LONGEST = 64  # characters of a file name's stem
_READABLE = 40  # characters of a hashed name's readable part
_TOP = 5  # units shown for each direction of a unit's circuits
_SMALL = 64  # pixels: a thumbnail in a unit's circuits


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


def circuits_key(fingerprint: str, earlier: str, later: str, units: Sequence[int]) -> str:
    """The name of the folder in ``out/_cache`` of the circuits from ``earlier`` into ``later``'s ``units``.

    Its :data:`CIRCUITS` file holds them. A hash of everything they depend on: the build's
    fingerprint (the weights, the data and the options), both layers and the units.

    Example:
        >>> len(circuits_key("f", "a", "b", [0, 1])), circuits_key("f", "a", "b", [0]) == (
        ...     circuits_key("f", "a", "b", [0, 1]))
        (20, False)
    """
    what = json.dumps([fingerprint, earlier, later, "circuits", [int(u) for u in units]])
    return hashlib.sha256(what.encode()).hexdigest()[:20]


def layer_file(name: str) -> str:
    """The stem of a layer's files: ``layers/<stem>.html`` and the folder ``units/<stem>/``.

    Distinct names never share a stem, even on a disk that ignores case, and a name always has the
    same one. A name of at most 64 lower-case letters, digits, ``_``, ``.`` and ``-`` (not starting
    with ``.`` or ``-``, and not itself ending as a hashed stem does) is its own stem, so
    ``features.3`` stays ``features.3``. Any other name is a readable slug of it (lower-cased, other
    characters as ``_``, at most 40 of them) then ``-`` and 8 hex digits of the SHA-256 of the exact
    name: ``"a b"`` and ``"a_b"``, or ``"Conv"`` and ``"conv"``, get files of their own.

    Example:
        >>> layer_file("features.3"), layer_file("a_b"), layer_file("a b"), layer_file("A_b")
        ('features.3', 'a_b', 'a_b-c8687a08', 'a_b-08eb65ad')
        >>> layer_file("<b>x</b>"), layer_file("层"), len(layer_file("x" * 500))
        ('_b_x__b_-e31e3a8e', 'layer-b6fd20c0', 49)
    """
    if (
        len(name) <= _LONGEST
        and _PLAIN.fullmatch(name)
        and not _HASHED.fullmatch(name)
        and not name.endswith(".")
        and name.split(".", maxsplit=1)[0] not in _RESERVED
    ):
        return name
    readable = re.sub(r"[^a-z0-9_.-]", "_", name.lower())[:_READABLE].strip(".-")
    if not readable.strip("_"):
        readable = "layer"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}"


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
    circuits: dict[str, str] | None = None,
    labels: Sequence[str] | None = None,
) -> None:
    """Write ``root/index.html``, ``root/layers/<layer>.html`` and ``root/units/<layer>/<unit>.html``.

    ``<layer>`` is :func:`layer_file` of the layer's name.

    Args:
        root: The site's folder; the units' pictures are in ``root/_cache`` already.
        report: The model's shape report, shown on the index.
        plan: The layers with a page, in order, and their units.
        fingerprint: The build's fingerprint (see :func:`cache_key`).
        title: The site's title.
        note: A line shown on every page (e.g. "random weights"), or None.
        names: Names of a layer's units (the classes of the output layer), shown on their pages and
            on the layer's grid.
        concepts: The layers with a concepts section, each with its folder's name in ``root/_cache``
            (:func:`concepts_key`), where the section's markup (:data:`SECTION`) and its pictures
            are; put on the layer's page.
        circuits: The layers whose unit pages say what feeds them, each with its folder's name in
            ``root/_cache`` (:func:`circuits_key`), whose :data:`CIRCUITS` file holds the strengths
            from the drawn layer before it. A unit's page
            also says what it feeds when the next drawn layer has an entry from its layer.
        labels: The names of the data's labels, for the examples whose ``unit.json`` entry has a
            ``"label"`` (an index into these): each unit page says the classes among its top
            examples and each layer page has a table of its units by their most frequent class.
            None: a label is shown as its number.
    """
    (root / "layers").mkdir(parents=True, exist_ok=True)
    (root / "units").mkdir(parents=True, exist_ok=True)
    files = {row.name: layer_file(row.name) for row, _, _ in plan}
    site = _Site(
        root=root,
        files=files,
        order=[row.name for row, _, _ in plan],
        shown={row.name: list(shown) for row, shown, _ in plan},
        keys={(row.name, u): cache_key(fingerprint, row.name, u) for row, shown, _ in plan for u in shown},
        circuits={
            later: json.loads((root / "_cache" / folder / CIRCUITS).read_text(encoding="utf-8"))
            for later, folder in (circuits or {}).items()
        },
        labels=None if labels is None else list(labels),
    )
    rows = [
        [
            html.link(f"layers/{files[r.name]}.html", r.name) if r.name in files else r.name,
            r.type, str(list(r.input_shape)), str(list(r.output_shape)), f"{r.params:,}", f"{r.macs:,}",
            "" if r.receptive_field is None else str(r.receptive_field), "" if r.jump is None else str(r.jump),
        ]
        for r in report.rows
    ]  # fmt: skip
    header = ["layer", "type", "in", "out", "params", "MACs", "RF", "jump"]
    links = " ".join(html.link(f"layers/{files[row.name]}.html", row.name) for row, _, _ in plan)
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
        stem = files[row.name]
        metas = {u: site.meta(row.name, u) for u in shown}
        unit_names = names.get(row.name, [])
        cells = []
        for unit in shown:
            picture = html.image(f"../_cache/{site.keys[row.name, unit]}/viz.png", f"unit {unit}")
            linked = html.link(f"../units/{stem}/{unit}.html", Html(f"{picture}unit {unit}"))
            cells.append(html.figure(linked, *([unit_names[unit]] if unit < len(unit_names) else [])))
        neighbours = [(f"../layers/{files[r.name]}.html", text) for r, text in _neighbours(plan, li)]
        body = (
            html.element("h1", f"{row.name} ({row.type}, output {list(row.output_shape)})")
            + html.nav(neighbours, separator=" · ")
            + html.element("p", "Each unit's feature visualization; follow one for its dataset examples.")
            + html.gallery(cells)
            + _classes_table(site, stem, metas)
        )
        if row.name in (concepts or {}):
            entry = json.loads(
                (root / "_cache" / (concepts or {})[row.name] / SECTION).read_text(encoding="utf-8")
            )
            body += Html(entry["html"])
        _write(root / "layers" / f"{stem}.html", row.name, body, note, 1)
        (root / "units" / stem).mkdir(parents=True, exist_ok=True)
        for ui, unit in enumerate(shown):
            label = unit_names[unit] if unit < len(unit_names) else None
            page = _unit_page(site, row, ui=ui, meta=metas[unit], name=label)
            _write(root / "units" / stem / f"{unit}.html", f"{row.name} unit {unit}", page, note, 2)


def _neighbours(plan: Plan, i: int) -> list[tuple[LayerShape, str]]:
    """The layers before and after layer ``i``, each with its link's text."""
    before = [(plan[i - 1][0], f"← {plan[i - 1][0].name}")] if i > 0 else []
    return before + ([(plan[i + 1][0], f"{plan[i + 1][0].name} →")] if i + 1 < len(plan) else [])


def _classes_table(site: _Site, stem: str, metas: dict[int, dict[str, Any]]) -> Html:
    """A layer's units by the most frequent class among their top examples: unit, class, how many of k.

    Sorted by class, then unit; a unit with no labelled example is left out; empty without labels.
    """
    rows = []
    for unit, meta in metas.items():
        counts = _class_counts(meta["examples"])
        if counts:
            label, count = counts[0]
            rows.append((label, unit, count, len(meta["examples"])))
    if not rows:
        return Html("")
    table = html.table(
        ["unit", "most frequent class", "top examples of that class"],
        [
            [
                html.link(f"../units/{stem}/{unit}.html", f"unit {unit}"),
                _class_name(site, label),
                f"{n} of {k}",
            ]
            for label, unit, n, k in sorted(rows)
        ],
        align="llr",
    )
    return Html(html.element("h2", "Its units by the class of their top examples") + table)


# -- a unit's page ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Site:
    """What every page of one atlas needs to know of the others.

    Attributes:
        root: The site's folder (``_cache`` inside).
        files: Each drawn layer's file stem (:func:`layer_file`).
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


def _class_counts(examples: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(label, how many)`` among examples with a ``"label"``: most frequent first, ties the lower label.

    Example:
        >>> _class_counts([{"label": 2}, {"label": 0}, {"label": 2}, {"label": 0}]), _class_counts([{}])
        ([(0, 2), (2, 2)], [])
    """
    counts = Counter(int(e["label"]) for e in examples if e.get("label") is not None)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _class_name(site: _Site, label: int) -> str:
    """A label's name (its number when the site has no names for it)."""
    labels = site.labels or []
    return labels[label] if 0 <= label < len(labels) else str(label)


def _unit_page(site: _Site, row: LayerShape, *, ui: int, meta: dict[str, Any], name: str | None) -> Html:
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
    trust = [] if meta.get("relative") is None else [f"{meta['relative']:.2f}x its top example's activation"]
    if meta.get("stability") is not None:
        trust.append(f"stability {meta['stability']:.2f} across seeds")
    own = [html.figure(html.image(src + "viz.png", what), f"objective {meta['value']:.3g}", *trust)]
    if meta.get("mask"):
        own.append(
            html.figure(html.image(src + "mask.png", "where it matters"), "where it matters (opaque: most)")
        )
    examples = meta["examples"]
    if meta.get("filter"):
        own.append(html.figure(html.image(src + "filter.png", "filter weights"), "its filter weights"))
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
                *([f"class {_class_name(site, e['label'])}"] if e.get("label") is not None else []),
            )
            for i, e in enumerate(examples)
        ),
    ]
    if meta.get("accent") is not None and examples:
        top = examples[0]
        parts.append(html.element("h2", "Its top example accentuated: what would make it more of this unit"))
        parts.append(
            html.gallery(
                [
                    html.figure(
                        html.image(src + "example0.png", "top example"),
                        f"#{top['index']} · {top['value']:.3g}",
                    ),
                    html.figure(
                        html.image(src + "accent.png", "accentuated"), f"accentuated · {meta['accent']:.3g}"
                    ),
                ]
            )
        )
    counts = _class_counts(examples)
    if counts:
        said = ", ".join(f"{n} of class {_class_name(site, label)}" for label, n in counts)
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


def _circuits(site: _Site, layer: str, unit: int) -> Html:
    """The "Circuits" section of ``layer``'s ``unit``: what feeds it and what it feeds (empty: neither known)."""
    parts = []
    into = site.circuits.get(layer)
    if into is not None and into["method"] == "none":  # measured neither way: say why
        parts += [html.element("h3", f"Fed by {into['earlier']}"), html.element("p", _none(into))]
    elif into is not None and unit in into["units"]:
        earlier = into["earlier"]
        strengths = [(c, float(s)) for c, s in enumerate(into["strengths"][into["units"].index(unit)])]
        drawn = set(site.shown.get(earlier, []))
        ranked = _strongest([(c, s) for c, s in strengths if c in drawn])  # those with a page
        overall = _strongest(strengths)
        parts += [html.element("h3", f"Fed by {earlier}")]
        parts += [html.gallery(_neighbour(site, earlier, c, s) for c, s in ranked)] if ranked else []
        if any(c not in drawn for c, _ in overall):  # stronger feeders among the channels not drawn
            listed = ", ".join(f"{c} ({s:+.3g}{'' if c in drawn else ', not drawn'})" for c, s in overall)
            parts += [html.element("p", f"The strongest of its {len(strengths)} channels: {listed}.")]
        parts += [html.element("p", _how(into, f"this unit with respect to {earlier}'s channels"))]
    at = site.order.index(layer)
    later = site.order[at + 1] if at + 1 < len(site.order) else None
    out = None if later is None else site.circuits.get(later)
    if later is not None and out is not None and out["earlier"] == layer and out["method"] == "none":
        parts += [html.element("h3", f"Feeds {later}"), html.element("p", _none(out))]
    elif later is not None and out is not None and out["earlier"] == layer:
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


def _neighbour(site: _Site, layer: str, unit: int, strength: float) -> Html:
    """A unit of another layer in a circuit: its picture, linked to its page, or its number if it is not drawn."""
    value = f"strength {strength:+.3g}"
    if unit not in site.shown.get(layer, []):
        return html.figure(Html(""), f"channel {unit} (not drawn)", value)
    picture = html.image(
        f"../../_cache/{site.keys[layer, unit]}/viz.png", f"{layer} unit {unit}", width=_SMALL
    )
    return html.figure(html.link(f"../{site.files[layer]}/{unit}.html", Html(f"{picture}unit {unit}")), value)


def _none(entry: dict[str, Any]) -> str:
    """The sentence of a circuit measured neither from the weights nor by attribution."""
    return f"No strengths between {entry['earlier']} and {entry['later']}: {entry.get('reason', 'not measured')}."


def _how(entry: dict[str, Any], of: str) -> str:
    """The sentence saying how a circuit's strengths were found."""
    if entry["method"] == "weights":
        path = entry["path"]
        through = (
            f"through {path}" if path and path != "direct" else "the one reading the other's output directly"
        )
        return (
            "Strengths from the weights: the norm of the weights between the two channels (a conv's kernel "
            f"slice, a Linear layer's columns of that channel), {through}."
        )
    return f"Strengths from attribution: the mean gradient x activation of {of} over its top examples."
