"""The one HTML writer: escaping, the stylesheet, the document frame, and the blocks pages are made of.

Three things write HTML: the notebook displays of results (:mod:`convlens.core.display`),
the tour's ``index.html`` (:mod:`convlens.apps.page`) and the atlas site
(:mod:`convlens.apps.atlas_site`). They all escape with :func:`escape`, and build
their tables, figures and pictures with :func:`table`, :func:`figure`,
:func:`gallery` and :func:`image`. A page is :func:`document`: the one
stylesheet :data:`CSS` embedded in its head, and a ``layout`` (``"article"`` for
the tour's long read, ``"catalog"`` for the atlas's pages of thumbnails) that
picks its part of the stylesheet. A notebook display cannot carry a stylesheet
(it would leak into the notebook's own page), so each block also writes itself
with inline ``style`` attributes (``inline=True``). There is never a script
and nothing is fetched from elsewhere.

Example:
    >>> print(element("p", "1 < 2 & 'three'", class_="note"))
    <p class="note">1 &lt; 2 &amp; &#x27;three&#x27;</p>
    >>> page = document("A <page>", element("h1", "Hello"), layout="catalog", links=[("index.html", "index")])
    >>> page.splitlines()[-4:]
    ['<body class="catalog">', '<nav><a href="index.html">index</a></nav>', '<h1>Hello</h1>', '</body></html>']
    >>> "<title>A &lt;page&gt;</title>" in page, CSS in page, "<script" in page
    (True, True, False)
"""

from __future__ import annotations

import base64
import html as _stdlib_html
from collections.abc import Iterable, Sequence
from typing import Literal

from convlens.core.checks import check_choice, choices

__all__ = [
    "CSS",
    "LAYOUTS",
    "Html",
    "Layout",
    "data_uri",
    "document",
    "element",
    "escape",
    "figure",
    "gallery",
    "image",
    "link",
    "nav",
    "table",
]

#: The layouts a page can have: its part of :data:`CSS`, named on the ``<body>``.
Layout = Literal["article", "catalog"]
LAYOUTS: tuple[str, ...] = choices(Layout)

#: The one stylesheet every page embeds. Rules both layouts share come first; the rest are scoped
#: by the layout's class on ``<body>``: ``article`` (the tour's page: a long read with figures,
#: tables and code) and ``catalog`` (the atlas: pages of thumbnails and a shape table).
CSS = """
table { border-collapse: collapse; }
.wide { overflow-x: auto; }
.wide td, .wide th { white-space: nowrap; }
table.mono { font-family: ui-monospace, monospace; }

.article { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62rem;
           margin: 0 auto; padding: 1rem 1.5rem 4rem; color: #1d1d1f; background: #fff; }
.article h1 { font-size: 1.9rem; margin-bottom: 0.2rem; }
.article h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
.article h3 { margin: 1.8rem 0 0.4rem; }
.article nav a { margin-right: 1rem; }
.article .banner { background: #fff3cd; border: 1px solid #e0b84c; padding: 0.7rem 1rem; border-radius: 6px; }
.article .note { color: #b00020; font-weight: 600; }
.article figure { margin: 0.5rem 0; }
.article img { max-width: 100%; height: auto; border: 1px solid #eee; }
.article .gallery { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.article .gallery figure { margin: 0; text-align: center; font-size: 0.8rem; }
.article .gallery img { image-rendering: pixelated; }
.article pre, .article code { font: 0.85rem/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.article pre { background: #f6f8fa; padding: 0.6rem 0.8rem; overflow-x: auto; border-radius: 6px; }
.article pre.call { background: #eef4ff; border-left: 4px solid #4a78c2; user-select: all; }
.article table { margin: 0.4rem 0; font-size: 0.85rem; }
.article th, .article td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
.article th:first-child, .article td:first-child { text-align: left; }
.article .ok { color: #1a7f37; font-weight: 700; }
.article .slip { color: #b00020; font-weight: 700; }
.article .grids { display: flex; flex-wrap: wrap; gap: 1.2rem; align-items: flex-start; }
.article table.numbers td { width: 1.8rem; text-align: center; font-family: ui-monospace, monospace; }
.article caption { font-size: 0.8rem; color: #555; caption-side: bottom; }

.catalog { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0 auto;
           max-width: 1100px; padding: 1em 1.5em; color: #222; }
.catalog a { color: #0b5cad; text-decoration: none; }
.catalog a:hover { text-decoration: underline; }
.catalog nav { font-size: 0.9em; margin-bottom: 1em; }
.catalog table { font-size: 0.85em; }
.catalog td, .catalog th { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
.catalog td.r { text-align: right; }
.catalog .gallery { display: flex; flex-wrap: wrap; gap: 0.6em; }
.catalog figure { margin: 0; text-align: center; font-size: 0.8em; }
.catalog figure img { display: block; border: 1px solid #ccc; image-rendering: pixelated; }
.catalog .note { color: #b00; font-weight: bold; }
.catalog h1 { font-size: 1.5em; }
.catalog h2 { font-size: 1.15em; margin-top: 1.4em; }
"""

# Inline styles of the blocks in a notebook display, where no stylesheet may go.
_INLINE_CELL = "padding:1px 6px;white-space:nowrap"
_INLINE_FIGURE = "display:inline-block;vertical-align:top;margin:2px;text-align:center;font-size:smaller"
_INLINE_GALLERY = "display:flex;flex-wrap:wrap;gap:4px"


class Html(str):
    """Markup that is already HTML: every writer here keeps it as it is instead of escaping it.

    Example:
        >>> escape(Html("<b>bold</b>")), escape("<b>")
        ('<b>bold</b>', '&lt;b&gt;')
    """

    __slots__ = ()


def escape(text: object) -> str:
    """``str(text)`` with ``&``, ``<``, ``>`` and both quotes escaped; :class:`Html` passes unchanged.

    Example:
        >>> escape("a < b & 'c'"), escape('say "hi"'), escape(Html("<br>")), escape(3)
        ('a &lt; b &amp; &#x27;c&#x27;', 'say &quot;hi&quot;', '<br>', '3')
    """
    if isinstance(text, Html):
        return str(text)
    return _stdlib_html.escape(str(text), quote=True)


def _attributes(attributes: dict[str, object]) -> str:
    """`` name="value"`` for each attribute that is not None; ``class_`` is written ``class``."""
    return "".join(
        f' {name.rstrip("_")}="{escape(value)}"' for name, value in attributes.items() if value is not None
    )


def element(tag: str, content: object = "", **attributes: object) -> Html:
    """``<tag ...>content</tag>``: the content escaped unless :class:`Html`, the attributes always.

    Args:
        tag: The element's name (``"p"``, ``"h2"``, ``"pre"``, ...).
        content: What goes inside.
        attributes: Its attributes; a None value is left out, ``class_`` is ``class``.

    Returns:
        The element's markup.

    Example:
        >>> print(element("h2", "7.1 <CNN>", id="cnn"), element("pre", "x", class_="call", title=None))
        <h2 id="cnn">7.1 &lt;CNN&gt;</h2> <pre class="call">x</pre>
    """
    return Html(f"<{tag}{_attributes(attributes)}>{escape(content)}</{tag}>")


def link(href: str, text: object) -> Html:
    """A link to ``href`` (escaped) reading ``text`` (escaped unless :class:`Html`).

    Example:
        >>> print(link("layers/a&b.html", "a & b →"))
        <a href="layers/a&amp;b.html">a &amp; b →</a>
    """
    return element("a", text, href=href)


def nav(links: Iterable[tuple[str, object]], *, separator: str = "") -> Html:
    """A ``<nav>`` of links, each ``(href, text)``, with ``separator`` (escaped) between them.

    Example:
        >>> print(nav([("a.html", "← a"), ("c.html", "c →")], separator=" · "))
        <nav><a href="a.html">← a</a> · <a href="c.html">c →</a></nav>
    """
    return Html("<nav>" + escape(separator).join(link(href, text) for href, text in links) + "</nav>")


def image(
    src: str, alt: str = "", *, width: int | None = None, height: int | None = None, style: str | None = None
) -> Html:
    """An ``<img>``: a file beside the page or a :func:`data_uri`, with its text alternative.

    Example:
        >>> print(image("units/0/viz.png", 'unit "0"'), image("x.png", width=8, height=4))
        <img src="units/0/viz.png" alt="unit &quot;0&quot;"> <img src="x.png" alt="" width="8" height="4">
    """
    return Html(
        f"<img{_attributes({'src': src, 'alt': alt, 'width': width, 'height': height, 'style': style})}>"
    )


def data_uri(png: bytes) -> str:
    r"""PNG bytes as an inline ``data:image/png;base64,...`` URI (nothing to fetch).

    Example:
        >>> data_uri(b"\x89PNG")
        'data:image/png;base64,iVBORw=='
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(picture: str, *lines: str, inline: bool = False) -> Html:
    """A picture (an ``<img>``, maybe inside a link) with caption lines under it.

    Args:
        picture: The picture's markup, kept as it is.
        lines: Caption lines, escaped unless :class:`Html`; none: no caption.
        inline: For a notebook display: an inline box styled in place; else a
            ``<figure>`` with a ``<figcaption>``, styled by the page's layout.

    Returns:
        The figure's markup.

    Example:
        >>> print(figure(image("a.png", "a"), "unit 3", "value <1"))
        <figure><img src="a.png" alt="a"><figcaption>unit 3<br>value &lt;1</figcaption></figure>
        >>> print(figure(image("a.png"), "#0", inline=True))
        <div style="display:inline-block;vertical-align:top;margin:2px;text-align:center;font-size:smaller"><img src="a.png" alt=""><br>#0</div>
    """
    caption = "<br>".join(escape(line) for line in lines)
    if inline:
        return Html(f'<div style="{_INLINE_FIGURE}">{picture}<br>{caption}</div>')
    return Html(f"<figure>{picture}" + (f"<figcaption>{caption}</figcaption>" if lines else "") + "</figure>")


def gallery(figures: Iterable[str], *, inline: bool = False) -> Html:
    """Figures side by side, wrapping at the page's (or the notebook's) width.

    Example:
        >>> print(gallery(["<figure></figure>"]), gallery([], inline=True))
        <div class="gallery"><figure></figure></div> <div style="display:flex;flex-wrap:wrap;gap:4px"></div>
    """
    where = f'style="{_INLINE_GALLERY}"' if inline else 'class="gallery"'
    return Html(f"<div {where}>" + "".join(figures) + "</div>")


def table(
    header: Sequence[object] | None,
    rows: Iterable[Sequence[object]],
    *,
    align: str | None = None,
    foot: Iterable[Sequence[object]] = (),
    caption: str = "",
    monospace: bool = False,
    kind: str | None = None,
    wide: bool = False,
    inline: bool = False,
) -> Html:
    """An HTML table; every cell is escaped unless it is :class:`Html`.

    Args:
        header: The column names (None: a table without a header row).
        rows: The body rows, each as long as the header.
        align: One letter per column, ``"l"`` or ``"r"`` (default: all left).
            Inline, set on every cell (notebook styles right-align by
            default); on a page, the ``r`` cells get ``class="r"``.
        foot: Rows set in bold in a ``<tfoot>`` (a total).
        caption: A line under the table.
        monospace: Set the table in a monospace font (shapes and formulas line up).
        kind: A class naming what the table is (``"numbers"``: a grid of small integers).
        wide: Scroll sideways instead of wrapping (inline tables always do).
        inline: For a notebook display: styled in place, no class.

    Returns:
        The table's markup.

    Example:
        >>> print(table(["name", "n"], [["<b>", "3"]], align="lr"))
        <table><thead><tr><th>name</th><th class="r">n</th></tr></thead><tbody><tr><td>&lt;b&gt;</td><td class="r">3</td></tr></tbody></table>
        >>> print(table(None, [[1, 0], [0, 1]], kind="numbers", caption="2 x 2"))
        <table class="numbers"><caption>2 x 2</caption><tbody><tr><td>1</td><td>0</td></tr><tr><td>0</td><td>1</td></tr></tbody></table>
    """
    body = [list(r) for r in rows]
    width = len(header) if header is not None else max((len(r) for r in body), default=0)
    sides = ["right" if a == "r" else "left" for a in (align or "l" * width)]

    def row(cells: Sequence[object], tag: str, bold: bool = False) -> str:
        if inline:
            weight = ";font-weight:bold" if bold else ""
            styles = [f' style="text-align:{side};{_INLINE_CELL}{weight}"' for side in sides]
        else:
            styles = [' class="r"' if side == "right" else "" for side in sides]
        pairs = zip(cells, styles, strict=True)
        return "<tr>" + "".join(f"<{tag}{style}>{escape(c)}</{tag}>" for c, style in pairs) + "</tr>"

    if inline:
        font = ";font-family:monospace" if monospace else ""
        parts = [f'<div style="overflow-x:auto"><table style="border-collapse:collapse{font}">']
        if caption:
            parts.append(f'<caption style="caption-side:bottom;text-align:left">{escape(caption)}</caption>')
    else:
        classes = " ".join(c for c in (kind, "mono" if monospace else None) if c) or None
        parts = [('<div class="wide">' if wide else "") + f"<table{_attributes({'class': classes})}>"]
        if caption:
            parts.append(element("caption", caption))
    if header is not None:
        parts.append("<thead>" + row(header, "th") + "</thead>")
    parts.append("<tbody>" + "".join(row(r, "td") for r in body) + "</tbody>")
    footer = "".join(row(r, "td", bold=True) for r in foot)
    if footer:
        parts.append("<tfoot>" + footer + "</tfoot>")
    return Html("".join(parts) + "</table>" + ("</div>" if inline or wide else ""))


def document(
    title: str,
    *body: str,
    layout: Layout,
    links: Iterable[tuple[str, object]] = (),
    note: str | None = None,
) -> str:
    """A whole page: the head (charset, viewport, title, :data:`CSS`), then the body.

    Args:
        title: The page's title (escaped).
        body: The body's parts, already HTML, one per line.
        layout: Which part of the stylesheet styles it: ``"article"`` or ``"catalog"``.
        links: Links ``(href, text)`` in a ``<nav>`` at the top of the body (none: no ``<nav>`` there).
        note: A warning line at the top (e.g. "random weights").

    Returns:
        The page, ending with a newline.

    Raises:
        InvalidArgumentError: An unknown layout (the nearest is named).
    """
    check_choice("layout", layout, LAYOUTS)
    pairs = list(links)
    top = [nav(pairs)] if pairs else []
    if note:
        top.append(element("p", note, class_="note"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f'<body class="{escape(layout)}">\n' + "\n".join([*top, *body]) + "\n</body></html>\n"
    )
