r"""The tour's report: one self-contained, offline HTML page in the lecture's order.

:func:`write_page` turns what :mod:`convlens.apps.tour` made into ``index.html``:
a heading per part of the lecture, and per item its figure (an image file
beside the page), table or text, the convlens call that made it (copyable),
and the lecture's own numbers beside ours with a tick where they agree. The
CSS is inline; there is no script and nothing is fetched from elsewhere.
Nothing here computes: it only writes.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> page = [Part("7.1 CNN", [Item("Shapes", call="cl.trace_shapes(model, (1, 3, 224, 224))",
    ...                                text="| a | b |\\n|---|---|\\n| 1 | 2 |", checks=[Check("conv1", "55", "55")])])]
    >>> with tempfile.TemporaryDirectory() as out:
    ...     html = write_page(Path(out), page).read_text()
    >>> "<table>" in html, "&#10003;" in html, "http" in html.split("<body>")[1]
    (True, True, False)
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Check", "Item", "Part", "write_page"]


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


@dataclass(slots=True)
class Part:
    """A part of the lecture: ``7.1 CNN``, ``7.2 What does CNN learn``, ..."""

    heading: str
    items: list[Item] = field(default_factory=list)


_CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62rem;
       margin: 0 auto; padding: 1rem 1.5rem 4rem; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.9rem; margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
h3 { margin: 1.8rem 0 0.4rem; }
nav a { margin-right: 1rem; }
.banner { background: #fff3cd; border: 1px solid #e0b84c; padding: 0.7rem 1rem; border-radius: 6px; }
.note { color: #b00020; font-weight: 600; }
figure { margin: 0.5rem 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre, code { font: 0.85rem/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
pre { background: #f6f8fa; padding: 0.6rem 0.8rem; overflow-x: auto; border-radius: 6px; }
pre.call { background: #eef4ff; border-left: 4px solid #4a78c2; user-select: all; }
table { border-collapse: collapse; margin: 0.4rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #1a7f37; font-weight: 700; }
.wide { overflow-x: auto; }
.wide td, .wide th { white-space: nowrap; }
.grids { display: flex; flex-wrap: wrap; gap: 1.2rem; align-items: flex-start; }
table.grid td { width: 1.8rem; text-align: center; font-family: ui-monospace, monospace; }
caption { font-size: 0.8rem; color: #555; caption-side: bottom; }
.slip { color: #b00020; font-weight: 700; }
"""


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
    body = ["<h1>The CNN lecture, reproduced with convlens</h1>"]
    if banner:
        body.append(f'<p class="banner">{_e(banner)}</p>')
    body.append(
        "<nav>" + "".join(f'<a href="#{_anchor(p.heading)}">{_e(p.heading)}</a>' for p in parts) + "</nav>"
    )
    for part in parts:
        body.append(f'<h2 id="{_anchor(part.heading)}">{_e(part.heading)}</h2>')
        body.extend(_item(item) for item in part.items)
    if files:
        body.append('<h2 id="files">Files</h2><ul>')
        body.extend(f'<li><a href="{_e(name)}">{_e(name)}</a></li>' for name in files)
        body.append("</ul>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>convlens: the CNN lecture tour</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _item(item: Item) -> str:
    parts = [f"<h3>{_e(item.title)}</h3>"]
    if item.note:
        parts.append(f'<p class="note">{_e(item.note)}</p>')
    if item.figure:
        parts.append(f'<figure><img src="{_e(item.figure)}" alt="{_e(item.title)}"></figure>')
    if item.grids:
        parts.append(
            '<div class="grids">' + "".join(_grid(caption, rows) for caption, rows in item.grids) + "</div>"
        )
    if item.text and not item.grids:
        parts.append(_text(item.text))
    if item.link:
        href, words = item.link
        parts.append(f'<p class="link"><a href="{_e(href)}">{_e(words)}</a></p>')
    if item.checks:
        rows = "".join(
            f"<tr><td>{_e(c.what)}</td><td>{_e(c.ours)}</td><td>{_e(c.lecture)}</td>"
            f"<td>{'<span class=ok>&#10003;</span>' if c.agrees else '<span class=slip>&#10007;</span>'}"
            f"{(' ' + _e(c.remark)) if c.remark else ''}</td></tr>"
            for c in item.checks
        )
        parts.append(
            f"<table><tr><th>what</th><th>convlens</th><th>the lecture</th><th></th></tr>{rows}</table>"
        )
    parts.append(f'<pre class="call">{_e(item.call)}</pre>')
    return "\n".join(parts)


def _text(text: str) -> str:
    """A pipe table as an HTML table; anything else preformatted."""
    lines = text.strip().splitlines()
    if len(lines) >= 2 and lines[0].startswith("|") and set(lines[1].replace("|", "").strip()) <= set("-: "):
        rows = [lines[0], *(line for line in lines[2:] if line.startswith("|"))]
        rest = [line for line in lines[2:] if not line.startswith("|")]
        cells = [[_e(c.strip()) for c in row.strip().strip("|").split("|")] for row in rows]
        head = "".join(f"<th>{c}</th>" for c in cells[0])
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
        table = f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'
        return table + (_text("\n".join(rest)) if any(line.strip() for line in rest) else "")
    return f"<pre>{_e(text)}</pre>"


def _grid(caption: str, rows: list[list[int]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="grid"><caption>{_e(caption)}</caption>{body}</table>'


def _anchor(heading: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in heading.lower()).strip("-")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
