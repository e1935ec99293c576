"""The one HTML writer: escaping, the document frame, tables, figures, and that every page goes through it."""

from __future__ import annotations

import ast
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from torch import nn

import convlens as cl
from convlens.apps.atlas_site import write_site
from convlens.apps.page import Check, Item, Part, write_page
from convlens.core import display, html
from convlens.core.html import Html

SRC = Path(__file__).resolve().parent.parent / "src" / "convlens"
VOID = {"br", "img", "meta"}


class Tree(HTMLParser):
    """Parses markup, checking that every element is closed in order; keeps the text and the start tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.starts: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, {name: value or "" for name, value in attrs}))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def tags(self) -> list[str]:
        return [tag for tag, _ in self.starts]


def parsed(text: str) -> Tree:
    tree = Tree(text)
    assert not tree.errors, tree.errors
    return tree


# -- escaping ---------------------------------------------------------------------------------------


def test_escape_quotes_angles_and_ampersands() -> None:
    assert html.escape("""<a href="x">'&'</a>""") == "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
    assert html.escape("&amp;") == "&amp;amp;"  # text is text: an entity in it is shown, not decoded
    assert html.escape(Html("<b>&amp;</b>")) == "<b>&amp;</b>"  # markup passes as it is
    assert html.escape(12) == "12"
    assert html.escape([1, 2]) == "[1, 2]"


def test_attributes_and_content_are_escaped_and_read_back_the_same() -> None:
    nasty = """x" onclick="alert(1)' <script>&"""
    for markup, shown in (
        (html.element("p", nasty, title=nasty, class_="note"), 1),
        (html.link(nasty, nasty), 1),
        (html.image(nasty, nasty), 0),
        (html.nav([(nasty, nasty), (nasty, nasty)], separator=nasty), 3),  # two links, one separator
    ):
        tree = parsed(markup)
        assert "<script" not in markup
        assert [tag for tag, _ in tree.starts if tag == "script"] == []
        for _, attrs in tree.starts:
            assert all(name in {"title", "class", "href", "src", "alt"} for name in attrs)
            assert all(value == nasty for name, value in attrs.items() if name != "class")
        assert tree.text.count(nasty) == shown
    assert html.element("p", "x", title=None) == "<p>x</p>"  # None leaves the attribute out
    assert html.element("p", "x", class_="a") == '<p class="a">x</p>'


# -- the document frame -----------------------------------------------------------------------------


def test_the_document_frame() -> None:
    page = html.document(
        "A <title> & 'more'", html.element("h1", "Hello"), Html("<p>raw</p>"),
        layout="article", links=[("index.html", "back & forth")], note="random <weights>",
    )  # fmt: skip
    assert page.startswith('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">')
    assert page.endswith("</body></html>\n")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<title>A &lt;title&gt; &amp; &#x27;more&#x27;</title>" in page
    assert page.count("<style>") == 1
    assert f"<style>{html.CSS}</style>" in page
    tree = parsed(page.split("\n", 1)[1])
    assert tree.tags() == [
        "html",
        "head",
        "meta",
        "meta",
        "title",
        "style",
        "body",
        "nav",
        "a",
        "p",
        "h1",
        "p",
    ]
    assert tree.starts[6] == ("body", {"class": "article"})
    assert tree.starts[9] == ("p", {"class": "note"})
    body = page.split("<body", 1)[1]
    assert "back &amp; forth" in body
    assert "random &lt;weights&gt;" in body
    assert "<p>raw</p>" in body
    assert "http" not in page
    assert "<script" not in page


def test_a_document_without_nav_or_note_and_a_bad_layout() -> None:
    page = html.document("t", "<p>x</p>", layout="catalog")
    assert "<nav>" not in page
    assert 'class="note"' not in page
    assert '<body class="catalog">\n<p>x</p>\n</body>' in page
    with pytest.raises(
        cl.InvalidArgumentError,
        match=r"layout must be one of 'article', 'catalog'.*'articel'.*Did you mean 'article'",
    ):
        html.document("t", layout="articel")  # type: ignore[arg-type]


def test_the_stylesheet_scopes_each_layout() -> None:
    assert html.LAYOUTS == ("article", "catalog")
    rules = [r.strip() for r in html.CSS.split("}") if r.strip()]
    for rule in rules:
        selectors = [s.strip() for s in rule.split("{")[0].split(",")]
        # A rule that is not shared styles one layout only, so neither page's look leaks into the other.
        shared = all(s.startswith(("table", ".wide")) for s in selectors)
        assert shared or all(s.split()[0] in {".article", ".catalog"} for s in selectors), rule
    assert "url(" not in html.CSS
    assert "@import" not in html.CSS


# -- tables -----------------------------------------------------------------------------------------


def test_a_page_table() -> None:
    text = html.table(
        ["name", "n"], [["<b>", 3], [html.link("a.html", "a"), "4"]], align="lr", foot=[["total", "7"]],
        caption="a & b", wide=True, kind="numbers", monospace=True,
    )  # fmt: skip
    tree = parsed(text)
    assert tree.tags() == [
        "div", "table", "caption", "thead", "tr", "th", "th", "tbody", "tr", "td", "td", "tr", "td", "a", "td",
        "tfoot", "tr", "td", "td",
    ]  # fmt: skip
    assert tree.starts[0] == ("div", {"class": "wide"})
    assert tree.starts[1] == ("table", {"class": "numbers mono"})
    assert [attrs for tag, attrs in tree.starts if tag in {"td", "th"}] == [{}, {"class": "r"}] * 4
    assert "&lt;b&gt;" in text
    assert "a &amp; b" in text
    assert "style=" not in text  # a page's tables are styled by the stylesheet


def test_a_table_without_header_and_rows_of_any_length() -> None:
    text = html.table(None, [[1, 0, 1], [0, 1, 0]], caption="3 x 2", kind="numbers")
    assert text == (
        '<table class="numbers"><caption>3 x 2</caption><tbody><tr><td>1</td><td>0</td><td>1</td></tr>'
        "<tr><td>0</td><td>1</td><td>0</td></tr></tbody></table>"
    )
    assert html.table(["a"], []) == "<table><thead><tr><th>a</th></tr></thead><tbody></tbody></table>"
    with pytest.raises(ValueError, match="zip"):
        html.table(["a", "b"], [["only one"]])


def test_an_inline_table_is_styled_in_place() -> None:
    text = html.table(["a", "b"], [["x", "1"]], align="lr", foot=[["t", "1"]], caption="c", inline=True)
    tree = parsed(text)
    assert "class=" not in text
    assert tree.starts[0] == ("div", {"style": "overflow-x:auto"})
    cells = [attrs["style"] for tag, attrs in tree.starts if tag in {"td", "th"}]
    assert [c.split(";")[0] for c in cells] == ["text-align:left", "text-align:right"] * 3
    assert all("font-weight:bold" in c for c in cells[-2:])
    assert not any("font-weight" in c for c in cells[:-2])


# -- figures ----------------------------------------------------------------------------------------


def test_figures_and_galleries() -> None:
    picture = html.image("u/0.png", "unit <0>", width=8, height=4)
    assert picture == '<img src="u/0.png" alt="unit &lt;0&gt;" width="8" height="4">'
    assert html.figure(picture) == f"<figure>{picture}</figure>"
    captioned = html.figure(picture, "#3 · 0.5", "a < b")
    assert captioned == f"<figure>{picture}<figcaption>#3 · 0.5<br>a &lt; b</figcaption></figure>"
    linked = html.figure(html.link("u/0.html", Html(picture + "unit 0")))
    assert parsed(linked).tags() == ["figure", "a", "img"]
    page = html.gallery([captioned, linked])
    assert page == f'<div class="gallery">{captioned}{linked}</div>'
    inline = html.gallery([html.figure(picture, "x", inline=True)], inline=True)
    assert "class=" not in inline
    assert parsed(inline).tags() == ["div", "div", "img", "br"]
    assert html.data_uri(b"png").startswith("data:image/png;base64,")


# -- everything goes through it ---------------------------------------------------------------------


def test_the_notebook_displays_are_the_writers_inline_blocks() -> None:
    assert display.Html is Html
    assert display.escape is html.escape
    rows = [["<x>", Html("<b>y</b>")]]
    assert display.table(["a", "b"], rows, align="rl", caption="c") == html.table(
        ["a", "b"], rows, align="rl", caption="c", inline=True
    )
    assert display.cell("<img>", "a", "b") == html.figure("<img>", "a", "b", inline=True)
    assert display.gallery(["x"]) == html.gallery(["x"], inline=True)
    tag = display.image_tag(display.plane([[0.0, 1.0]]), alt="a 'map'")
    assert re.fullmatch(
        r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="a &#x27;map&#x27;" width="\d+" height="\d+" '
        r'style="image-rendering:pixelated">',
        tag,
    )


def test_the_tour_page_and_an_atlas_page_embed_the_one_stylesheet(tmp_path: Path) -> None:
    part = Part("7.1 CNN", [Item("Shapes", call="cl.trace_shapes(model)", checks=[Check("a", "1", "1")])])
    tour = write_page(tmp_path, [part], banner="random weights").read_text()
    report = cl.trace_shapes(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 1, 8, 8))
    write_site(tmp_path / "atlas", report, [], fingerprint="f", title="Tiny", note="a note", names={})
    atlas = (tmp_path / "atlas" / "index.html").read_text()
    for page, layout in ((tour, "article"), (atlas, "catalog")):
        assert page.count("<style>") == 1
        assert f"<style>{html.CSS}</style>" in page
        assert f'<body class="{layout}">' in page
        assert page.split("\n", 1)[0] == "<!DOCTYPE html>"
        parsed(page.split("\n", 1)[1])
    assert '<p class="banner">random weights</p>' in tour
    assert '<nav><a href="index.html">atlas index</a></nav>\n<p class="note">a note</p>' in atlas


def test_no_other_module_writes_its_own_markup_helpers() -> None:
    """Only the writer imports the standard library's html module or holds a stylesheet."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "core" / "html.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "html" for a in node.names):
                offenders.append(f"{path.relative_to(SRC)}: import html")
            if isinstance(node, ast.ImportFrom) and node.module in {"html", "html.parser"}:
                offenders.append(f"{path.relative_to(SRC)}: from {node.module} import ...")
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.lstrip("_").upper() == "CSS" for t in node.targets
            ):
                offenders.append(f"{path.relative_to(SRC)}: a stylesheet of its own")
    assert offenders == []
