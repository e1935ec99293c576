r"""The tour's report: one self-contained, offline HTML page in the lecture's order.

:func:`write_page` turns what :mod:`convlens.apps.tour` made into ``index.html``:
a heading per part of the lecture, and per item its figure (an image file
beside the page), table or text, the convlens call that made it (copyable),
and the lecture's own numbers beside ours with a tick where they agree. The
markup and the stylesheet (embedded in the page) come from the one HTML writer,
:mod:`convlens.core.html`, in its ``"article"`` layout; there is no script and
nothing is fetched from elsewhere. Nothing here computes: it only writes.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> page = [Part("7.1 CNN", [Item("Shapes", call="cl.trace_shapes(model, (1, 3, 224, 224))",
    ...                                text="| a | b |\\n|---|---|\\n| 1 | 2 |", checks=[Check("conv1", "55", "55")])])]
    >>> with tempfile.TemporaryDirectory() as out:
    ...     html = write_page(Path(out), page).read_text()
    >>> "<table>" in html, "&#10003;" in html, "http" in html.split("<body")[1]
    (True, True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from convlens.core import html
from convlens.core.html import Html

__all__ = ["Check", "Item", "Part", "TourPage", "write_page"]


@dataclass(frozen=True, slots=True)
class Check:
    """One of the lecture's numbers beside ours: ``what``, ours, the lecture's, and a remark."""

    what: str
    ours: str
    lecture: str
    remark: str = ""

    @property
    def agrees(self) -> bool:
        """Whether ours and the lecture's read the same (spaces aside)."""
        return self.ours.replace(" ", "") == self.lecture.replace(" ", "")


@dataclass(slots=True)
class Item:
    """One figure, table or text of the tour, with the call that made it."""

    title: str
    call: str
    figure: str | None = None  # an image file's name, beside the page
    text: str | None = None  # a pipe table (Markdown) or preformatted text
    checks: list[Check] = field(default_factory=list)
    note: str | None = None  # e.g. "random weights": shown on the item
    grids: list[tuple[str, list[list[int]]]] = field(default_factory=list)  # small integer grids, captioned
    link: tuple[str, str] | None = None  # (href, text): a page the tour wrote beside it, e.g. an atlas
    section: str | None = None  # markup of the one HTML writer (a concepts section), placed as it is


@dataclass(slots=True)
class Part:
    """A part of the lecture: ``7.1 CNN``, ``7.2 What does CNN learn``, ..."""

    heading: str
    items: list[Item] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class TourPage:
    r"""The tour's page as it is written: each figure and table saved beside it, and its parts in order.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as out:
        ...     page = TourPage(out=Path(out), echo=lambda line: None)
        ...     page.table("7.1 CNN", "sizes.md", "| a |\n|---|\n| 1 |", "Sizes", "cl.trace_shapes(...)",
        ...                checks=[Check("a", "1", "1")])
        ...     index = page.write(random=["torchvision:alexnet"])
        ...     [p.name for p in page.files], "Random weights: torchvision:alexnet" in index.read_text()
        (['sizes.md', 'index.html'], True)
    """

    out: Path
    echo: Callable[[str], None]
    files: list[Path] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)

    def part(self, heading: str) -> Part:
        """The part ``heading``: the last one if it has that heading, else a new one."""
        if not self.parts or self.parts[-1].heading != heading:
            self.parts.append(Part(heading))
        return self.parts[-1]

    def save(self, name: str, content: Figure | str) -> str:
        """Save a figure (PNG) or a text as ``out/name``; return ``name``."""
        path = self.out / name
        if isinstance(content, Figure):
            content.savefig(path, dpi=90)
        else:
            path.write_text(content if content.endswith("\n") else content + "\n")
        self.files.append(path)
        self.echo(f"  wrote {path}")
        return name

    def figure(self, heading: str, name: str, content: Figure, title: str, call: str, **extra: Any) -> None:
        """Save a figure and put it on the page under ``heading``."""
        self.part(heading).items.append(Item(title, call=call, figure=self.save(name, content), **extra))

    def table(self, heading: str, name: str, content: str, title: str, call: str, **extra: Any) -> None:
        """Save a table or text and put it on the page under ``heading``, with its checks in the file too."""
        checks: list[Check] = extra.get("checks", [])
        lines = [
            f"- {c.what}: {c.ours} (lecture: {c.lecture}){' ' + c.remark if c.remark else ''}" for c in checks
        ]
        self.save(name, content + ("\n\n" + "\n".join(lines) if lines else ""))
        self.part(heading).items.append(Item(title, call=call, text=content, **extra))

    def write(self, *, random: Sequence[str] = ()) -> Path:
        """Write ``index.html`` (last in :attr:`files`), with a banner naming the ``random``-weight models."""
        banner = (
            f"Random weights: {', '.join(random)} have seeded random weights (asked for, or pretrained weights "
            "unavailable: each figure's note says which); the figures marked so show what an untrained network "
            "does, not what the lecture shows."
            if random
            else None
        )
        page = write_page(self.out, self.parts, banner=banner, files=[p.name for p in self.files])
        self.files.append(page)
        return page


def write_page(
    out: Path, parts: Sequence[Part], *, banner: str | None = None, files: Sequence[str] = ()
) -> Path:
    """Write ``out/index.html`` and return its path.

    Args:
        out: The tour's folder; figures are files in it, linked by name.
        parts: The lecture's parts, in order.
        banner: Shown at the top when set (e.g. that some models use random weights).
        files: Every file the tour wrote, listed at the end.
    """
    body: list[str] = [html.element("h1", "The CNN lecture, reproduced with convlens")]
    if banner:
        body.append(html.element("p", banner, class_="banner"))
    body.append(html.nav((f"#{_anchor(p.heading)}", p.heading) for p in parts))
    for part in parts:
        body.append(html.element("h2", part.heading, id=_anchor(part.heading)))
        body.extend(_item(item) for item in part.items)
    if files:
        body.append(html.element("h2", "Files", id="files"))
        body.append(html.element("ul", Html("".join(html.element("li", html.link(n, n)) for n in files))))
    page = html.document("convlens: the CNN lecture tour", *body, layout="article")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _item(item: Item) -> str:
    parts: list[str] = [html.element("h3", item.title)]
    if item.note:
        parts.append(html.element("p", item.note, class_="note"))
    if item.figure:
        parts.append(html.figure(html.image(item.figure, item.title)))
    if item.section:
        # A section of thumbnails (the atlas's concepts) keeps the stylesheet's catalog layout on this page.
        parts.append(html.element("div", Html(item.section), class_="catalog"))
    if item.grids:
        grids = "".join(
            html.table(None, rows, caption=caption, kind="numbers") for caption, rows in item.grids
        )
        parts.append(html.element("div", Html(grids), class_="grids"))
    if item.text and not item.grids:
        parts.append(_text(item.text))
    if item.link:
        href, words = item.link
        parts.append(html.element("p", html.link(href, words), class_="link"))
    if item.checks:
        rows = [[c.what, c.ours, c.lecture, _verdict(c)] for c in item.checks]
        parts.append(html.table(["what", "convlens", "the lecture", ""], rows))
    parts.append(html.element("pre", item.call, class_="call"))
    return "\n".join(parts)


def _verdict(check: Check) -> Html:
    """A tick where ours and the lecture's agree, else a cross; then the remark."""
    mark = '<span class="ok">&#10003;</span>' if check.agrees else '<span class="slip">&#10007;</span>'
    return Html(mark + (" " + html.escape(check.remark) if check.remark else ""))


def _text(text: str) -> str:
    """A pipe table as an HTML table; anything else preformatted."""
    lines = text.strip().splitlines()
    if len(lines) >= 2 and lines[0].startswith("|") and set(lines[1].replace("|", "").strip()) <= set("-: "):
        rows = [lines[0], *(line for line in lines[2:] if line.startswith("|"))]
        rest = [line for line in lines[2:] if not line.startswith("|")]
        cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
        table = html.table(cells[0], cells[1:], wide=True)
        return table + (_text("\n".join(rest)) if any(line.strip() for line in rest) else "")
    return html.element("pre", text)


def _anchor(heading: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in heading.lower()).strip("-")
