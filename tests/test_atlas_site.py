"""The atlas's pages from a hand-made cache: file names, circuits, and the classes a unit answers to.

Nothing is computed here: the cache (``unit.json``, ``viz.png``, ``circuits.json``) is written by hand,
so every ranking, link and count on the pages has a known answer.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import convlens as cl
from convlens.apps.atlas_site import CIRCUITS, Plan, cache_key, circuits_key, layer_file, write_site

FINGERPRINT = "hand-made"
LABELS = ["cat", "dog", "bird"]
VOID = {"br", "img", "meta"}

# Layer b, unit 1 reads a's 7 channels with these strengths: |0.9| twice (channels 1 and 3), then 0.5
# (6), |0.3| twice (2 and 5), then 0.1 (0) and 0 (4), which the top 5 leaves out.
FROM_A_INTO_B1 = [0.1, -0.9, 0.3, 0.9, 0.0, -0.3, 0.5]
# What b's unit 1 gives each of c's 8 units: unit 6 is the strongest but not drawn (c shows 0-5).
FROM_B1_INTO_C = [0.2, -0.05, 0.7, 0.2, -0.6, 0.1, 5.0, 0.0]
# The labels of each b unit's 4 top examples (None: an example without one).
B_LABELS: dict[int, list[int | None]] = {0: [1, 0, 1, None], 1: [2, 2, 0, 0], 2: [2, 2, 2, 1]}


@dataclass
class Node:
    """An element of a parsed page: its tag, attributes and children (elements and text)."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    @property
    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]

    def find_all(self, tag: str) -> list[Node]:
        found = []
        for child in self.elements:
            found += [child] if child.tag == tag else []
            found += child.find_all(tag)
        return found


class Tree(HTMLParser):
    """A page as :class:`Node` s; every element must close in order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]
        self.feed(text)
        self.close()
        assert self.stack == [self.root], [n.tag for n in self.stack]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, (tag, self.stack[-1].tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def body(page: Path) -> Node:
    (found,) = Tree(page.read_text(encoding="utf-8")).root.find_all("body")
    return found


def after(parent: Node, tag: str, text: str) -> list[Node]:
    """The elements after the child ``<tag>`` whose text is ``text``, up to the next heading."""
    children = parent.elements
    at = next(i for i, c in enumerate(children) if c.tag == tag and c.text == text)
    rest = []
    for child in children[at + 1 :]:
        if child.tag in {"h1", "h2", "h3"}:
            break
        rest.append(child)
    return rest


def figures(gallery: Node) -> list[tuple[str | None, str | None, list[str]]]:
    """Each figure of a gallery: its link, its picture, and its lines of text (the link's, then the caption's)."""
    found = []
    for figure in gallery.find_all("figure"):
        links, images, captions = figure.find_all("a"), figure.find_all("img"), figure.find_all("figcaption")
        lines = [links[0].text] if links else []
        lines += [c for c in captions[0].children if isinstance(c, str)] if captions else []
        found.append(
            (links[0].attrs["href"] if links else None, images[0].attrs["src"] if images else None, lines)
        )
    return found


def png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 100, 0)).save(path)


def unit(root: Path, layer: str, u: int, labels: list[int | None] | None = None) -> None:
    """A unit's cache folder: its picture, 4 examples (with labels, if given) and its ``unit.json``."""
    folder = root / "_cache" / cache_key(FINGERPRINT, layer, u)
    png(folder / "viz.png")
    examples = []
    for i in range(4):
        png(folder / f"example{i}.png")
        entry: dict[str, Any] = {"index": 10 * u + i, "value": 4.0 - i, "box": None}
        if labels is not None:
            entry["label"] = labels[i]
        examples.append(entry)
    meta = {"layer": layer, "unit": u, "value": 1.5, "examples": examples}
    (folder / "unit.json").write_text(json.dumps(meta))


def circuits_entry(
    root: Path, earlier: str, later: str, *, method: str, path: str, strengths: list[list[float]]
) -> str:
    units = list(range(len(strengths)))
    key = circuits_key(FINGERPRINT, earlier, later, units)
    folder = root / "_cache" / key
    folder.mkdir(parents=True)
    entry = {"earlier": earlier, "later": later, "method": method, "path": path, "units": units}
    (folder / CIRCUITS).write_text(json.dumps(entry | {"strengths": strengths}))
    return key


def model() -> nn.Sequential:
    return nn.Sequential(OrderedDict(a=nn.Conv2d(1, 7, 3), b=nn.Conv2d(7, 4, 3), c=nn.Conv2d(4, 8, 1)))


def site(root: Path, *, circuits: bool = True, labels: bool = True, names: bool = True) -> None:
    """Layers a (units 0-2 of 7 shown), b (0-2 of 4) and c (0-5 of 8), their cache, then the site."""
    report = cl.trace_shapes(model(), (1, 1, 8, 8))
    rows = {row.name: row for row in report.rows}
    plan: Plan = [(rows["a"], [0, 1, 2], []), (rows["b"], [0, 1, 2], []), (rows["c"], list(range(6)), [])]
    for row, shown, _ in plan:
        for u in shown:
            unit(root, row.name, u, B_LABELS[u] if labels and row.name == "b" else None)
    entries = {}
    if circuits:
        into_b = [[0.0] * 7 for _ in range(4)]  # a's unit 0 feeds b's units 0, 1, 2 with 0.25, 0.1, -0.5
        into_b[0] = [0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2]
        into_b[1] = FROM_A_INTO_B1
        into_b[2] = [-0.5, 0.0, 0.0, 0.0, 0.0, 0.0, -0.4]
        into_c = [[0.0, value, 0.0, 0.0] for value in FROM_B1_INTO_C]
        entries["b"] = circuits_entry(
            root, "a", "b", method="weights", path="BatchNorm2d -> ReLU", strengths=into_b
        )
        entries["c"] = circuits_entry(root, "b", "c", method="attribution", path="", strengths=into_c)
    write_site(
        root, report, plan, fingerprint=FINGERPRINT, title="Hand-made", note=None,
        names={"c": [f"class {i}" for i in range(8)]} if names else {},
        circuits=entries if circuits else None, labels=LABELS if labels else None,
    )  # fmt: skip


def test_a_unit_page_says_what_feeds_it_and_what_it_feeds(tmp_path: Path) -> None:
    site(tmp_path)
    page = body(tmp_path / "units" / "b" / "1.html")
    assert [h.text for h in page.elements if h.tag in {"h2", "h3"}][-3:] == [
        "Circuits",
        "Fed by a",
        "Feeds c",
    ]
    gallery, overall, how = after(page, "h3", "Fed by a")
    thumb = "../../_cache/{}/viz.png"
    assert figures(gallery) == [  # a's drawn units (0-2), by |strength|: each with its picture and page
        ("../a/1.html", thumb.format(cache_key(FINGERPRINT, "a", 1)), ["unit 1", "strength -0.9"]),
        ("../a/2.html", thumb.format(cache_key(FINGERPRINT, "a", 2)), ["unit 2", "strength +0.3"]),
        ("../a/0.html", thumb.format(cache_key(FINGERPRINT, "a", 0)), ["unit 0", "strength +0.1"]),
    ]
    assert overall.text == (  # stronger feeders are not drawn: named, by |strength|
        "The strongest of its 7 channels: 1 (-0.9), 3 (+0.9, not drawn), 6 (+0.5, not drawn), 2 (+0.3), "
        "5 (-0.3, not drawn)."
    )
    assert how.text == (
        "Strengths from the weights: the norm of the weights between the two channels (a conv's kernel "
        "slice, a Linear layer's columns of that channel), through BatchNorm2d -> ReLU."
    )
    gallery, how = after(page, "h3", "Feeds c")
    ranked = [(link, lines) for link, _, lines in figures(gallery)]
    assert ranked == [
        ("../c/2.html", ["unit 2", "strength +0.7"]),
        ("../c/4.html", ["unit 4", "strength -0.6"]),
        ("../c/0.html", ["unit 0", "strength +0.2"]),
        ("../c/3.html", ["unit 3", "strength +0.2"]),
        ("../c/5.html", ["unit 5", "strength +0.1"]),
    ]  # unit 6 (5.0) is not drawn: c's page shows units 0-5
    assert how.text == (
        "Strengths from attribution: the mean gradient x activation of each unit of c with respect "
        "to b's channels over its top examples."
    )
    for link in re.findall(r'(?:href|src)="([^"]+)"', (tmp_path / "units" / "b" / "1.html").read_text()):
        assert (tmp_path / "units" / "b" / link).resolve().is_file(), link


def test_the_first_layer_only_feeds_and_the_last_is_only_fed(tmp_path: Path) -> None:
    site(tmp_path)
    first = body(tmp_path / "units" / "a" / "0.html")
    assert "Fed by a" not in first.text
    assert not any(h.text.startswith("Fed by") for h in first.find_all("h3"))
    (gallery, _) = after(first, "h3", "Feeds b")
    # b's units 0, 1, 2 take 0.25, 0.1 and -0.5 from a's unit 0.
    assert [(link, lines[1]) for link, _, lines in figures(gallery)] == [
        ("../b/2.html", "strength -0.5"),
        ("../b/0.html", "strength +0.25"),
        ("../b/1.html", "strength +0.1"),
    ]
    last = body(tmp_path / "units" / "c" / "3.html")
    assert [h.text for h in last.find_all("h3")] == ["Fed by b"]
    (gallery, overall, how) = after(last, "h3", "Fed by b")
    assert [(link, lines[1]) for link, _, lines in figures(gallery)] == [
        ("../b/1.html", "strength +0.2"),
        ("../b/0.html", "strength +0"),  # ties: the lower channel first
        ("../b/2.html", "strength +0"),
    ]
    assert overall.text == "The strongest of its 4 channels: 1 (+0.2), 0 (+0), 2 (+0), 3 (+0, not drawn)."

    assert "with respect to b's channels" in how.text


def test_no_circuits_no_section(tmp_path: Path) -> None:
    site(tmp_path, circuits=False)
    for page in (tmp_path / "units").rglob("*.html"):
        text = page.read_text()
        for word in ("Circuits", "Fed by", "Feeds"):
            assert word not in text, page


def test_a_unit_page_names_the_classes_among_its_top_examples(tmp_path: Path) -> None:
    site(tmp_path)
    page = body(tmp_path / "units" / "b" / "0.html")
    (gallery, line) = after(page, "h2", "The 4 dataset examples that excite it most")
    assert (
        line.text == "Classes among its 4 top examples: 2 of class dog, 1 of class cat (1 without a label)."
    )
    assert [lines for _, _, lines in figures(gallery)] == [
        ["#0 · 4", "class dog"], ["#1 · 3", "class cat"], ["#2 · 2", "class dog"], ["#3 · 1"],
    ]  # fmt: skip
    tie = body(tmp_path / "units" / "b" / "1.html")
    assert (
        "Classes among its 4 top examples: 2 of class cat, 2 of class bird." in tie.text
    )  # a tie: the lower label first
    unlabelled = (tmp_path / "units" / "a" / "0.html").read_text()
    assert "Classes among" not in unlabelled


def test_a_layer_page_tables_its_units_by_their_most_frequent_class(tmp_path: Path) -> None:
    site(tmp_path)
    page = body(tmp_path / "layers" / "b.html")
    (table,) = after(page, "h2", "Its units by the class of their top examples")
    rows = [[cell.text for cell in tr.find_all("td")] for tr in table.find_all("tr")[1:]]
    assert rows == [["unit 1", "cat", "2 of 4"], ["unit 0", "dog", "2 of 4"], ["unit 2", "bird", "3 of 4"]]
    assert [a.attrs["href"] for a in table.find_all("a")] == [
        "../units/b/1.html",
        "../units/b/0.html",
        "../units/b/2.html",
    ]
    assert "Its units by the class" not in (tmp_path / "layers" / "a.html").read_text()


def test_labels_without_names_show_their_numbers(tmp_path: Path) -> None:
    site(tmp_path, labels=True)
    report = cl.trace_shapes(model(), (1, 1, 8, 8))
    rows = {row.name: row for row in report.rows}
    write_site(
        tmp_path,
        report,
        [(rows["b"], [0, 1, 2], [])],
        fingerprint=FINGERPRINT,
        title="t",
        note=None,
        names={},
    )
    assert "Classes among its 4 top examples: 2 of class 1, 1 of class 0 (1 without a label)." in (
        body(tmp_path / "units" / "b" / "0.html").text
    )


def test_the_output_layer_names_its_units_on_its_grid_and_their_pages(tmp_path: Path) -> None:
    site(tmp_path)
    page = body(tmp_path / "layers" / "c.html")
    grid = next(div for div in page.find_all("div") if div.attrs.get("class") == "gallery")
    assert [(link, lines) for link, _, lines in figures(grid)] == [
        (f"../units/c/{u}.html", [f"unit {u}", f"class {u}"]) for u in range(6)
    ]
    assert body(tmp_path / "units" / "c" / "4.html").find_all("h1")[0].text == "c, unit 4: class 4"
    other = body(tmp_path / "layers" / "b.html")
    grid = next(div for div in other.find_all("div") if div.attrs.get("class") == "gallery")
    assert [lines for _, _, lines in figures(grid)] == [["unit 0"], ["unit 1"], ["unit 2"]]


HOSTILE = [
    "<b>x</b>",
    "a&b",
    "a/b",
    "a b",
    "a_b",
    "A_b",
    "café",
    "层",
    "Up",
    "up",
    "..",
    "con",
    "a_b-c8687a08",
]


def test_every_layer_name_gets_a_file_of_its_own() -> None:
    stems = [layer_file(name) for name in HOSTILE]
    assert len({s.lower() for s in stems}) == len(HOSTILE), stems
    assert stems[HOSTILE.index("a_b")] == "a_b"
    assert stems[HOSTILE.index("up")] == "up"
    assert layer_file("features.3") == "features.3"  # a plain name is its own file: links stay readable
    assert (
        layer_file("a b") == "a_b-c8687a08" != layer_file("a_b-c8687a08")
    )  # one that looks hashed is hashed too
    assert all(re.fullmatch(r"[a-z0-9_][a-z0-9_.-]*", s) and not s.endswith(".") for s in stems), stems
    assert [layer_file(name) for name in HOSTILE] == stems  # the same every time


@given(st.text(max_size=80), st.text(max_size=80))
def test_distinct_names_never_share_a_file_even_ignoring_case(a: str, b: str) -> None:
    fa, fb = layer_file(a), layer_file(b)
    assert (fa.lower() == fb.lower()) == (a == b)
    assert re.fullmatch(r"[a-z0-9_][a-z0-9_.-]*[a-z0-9_-]|[a-z0-9_]", fa), fa
    assert len(fa) <= 64, fa


def test_the_index_links_each_layer_to_its_own_page(tmp_path: Path) -> None:
    site(tmp_path)
    index = body(tmp_path / "index.html")
    links = {a.text: a.attrs["href"] for a in index.find_all("a") if a.attrs["href"].startswith("layers/")}
    assert links == {"a": "layers/a.html", "b": "layers/b.html", "c": "layers/c.html"}


@pytest.mark.parametrize("units", [[0], [0, 1]])
def test_circuits_key_depends_on_everything(units: list[int]) -> None:
    key = circuits_key("f", "a", "b", units)
    assert re.fullmatch(r"[0-9a-f]{20}", key)
    others = [
        circuits_key("g", "a", "b", units), circuits_key("f", "x", "b", units),
        circuits_key("f", "a", "x", units), circuits_key("f", "a", "b", [*units, 5]),
    ]  # fmt: skip
    assert key not in others
    assert len(set(others)) == 4
