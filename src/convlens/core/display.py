"""Rich display in Jupyter: the small pieces every result's ``_repr_html_`` is built from.

Everything here makes self-contained HTML for committed notebooks: pictures
are inline ``data:image/png;base64,...`` URIs (drawn with PIL; a plot with a
:class:`matplotlib.figure.Figure` on the Agg canvas, never pyplot), styling
is inline ``style`` attributes only, and there is no script, no CSS file and
no external resource. The markup comes from the one HTML writer,
:mod:`convlens.core.html` (its blocks with ``inline=True``), which the tour's
page and the atlas share. Drawing reads tensors only: they are copied to the CPU
as float64 (any device, any float dtype), one item at a time, and never
written. At most :data:`MAX_ITEMS` pictures are drawn per result; a line
says how many were left out.

Example:
    >>> import torch
    >>> from convlens.core import display
    >>> tag = display.image_tag(display.plane(torch.rand(7, 7)), cmap="jet", alt="a map")
    >>> tag.startswith('<img src="data:image/png;base64,'), 'width="77"' in tag
    (True, True)
    >>> print(display.table(["name", "n"], [["<b>", "3"]], align="lr"))
    <div style="overflow-x:auto"><table style="border-collapse:collapse"><thead><tr><th style="text-align:left;padding:1px 6px;white-space:nowrap">name</th><th style="text-align:right;padding:1px 6px;white-space:nowrap">n</th></tr></thead><tbody><tr><td style="text-align:left;padding:1px 6px;white-space:nowrap">&lt;b&gt;</td><td style="text-align:right;padding:1px 6px;white-space:nowrap">3</td></tr></tbody></table></div>
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor

from convlens.core import html
from convlens.core.html import Html, escape

__all__ = [
    "MAX_ITEMS",
    "MAX_ROWS",
    "THUMB",
    "Html",
    "block",
    "box_in_plane",
    "cap",
    "cell",
    "escape",
    "figure_tag",
    "gallery",
    "heading",
    "image_tag",
    "left_out",
    "map_gallery",
    "number",
    "picture",
    "plane",
    "table",
]

#: At most this many pictures (thumbnails, curves) are drawn for one result.
MAX_ITEMS = 32
#: At most this many rows in a table of numbers that could be long (top-k indices).
MAX_ROWS = 64
#: A thumbnail's longest side in pixels: smaller pictures are enlarged by a whole factor
#: (nearest neighbour, so pixels stay sharp), larger ones shrunk (box filter).
THUMB = 80
#: Colour levels of a heat map (of its colormap's 256): a thumbnail looks the same, its PNG is half.
_MAP_LEVELS = 64
#: A strip (a 1-D map or signal) is at least this many pixels high.
_STRIP = 12
_BOX_COLOUR = (255, 255, 0)  # the receptive-field outline, yellow as in render.plot_top_examples

Float = npt.NDArray[np.float64]


def number(value: float) -> str:
    """A float as the displays print it: four significant digits.

    Example:
        >>> number(3.14159), number(-0.000123456), number(12345678.0)
        ('3.142', '-0.0001235', '1.235e+07')
    """
    return f"{value:.4g}"


def cap(total: int, limit: int = MAX_ITEMS) -> int:
    """How many of ``total`` items are drawn.

    Example:
        >>> cap(40), cap(5)
        (32, 5)
    """
    return min(total, limit)


def left_out(shown: int, total: int, what: str) -> Html:
    """A line saying how many of ``total`` ``what`` are not drawn, or nothing when all are.

    Example:
        >>> print(left_out(32, 40, "maps"))
        <div style="color:#666">8 of 40 maps not shown (the first 32 are).</div>
        >>> print(left_out(1, 3, "channels"))
        <div style="color:#666">2 of 3 channels not shown (the first is).</div>
        >>> left_out(5, 5, "maps")
        ''
    """
    if shown >= total:
        return Html("")
    first = "the first is" if shown == 1 else f"the first {shown} are"
    return html.element("div", f"{total - shown} of {total} {what} not shown ({first}).", style="color:#666")


def heading(kind: str, detail: str = "") -> Html:
    """The first line of a display: the result's type in bold, then ``detail``.

    Example:
        >>> print(heading("CAMResult", "layer '1'"))
        <div><strong>CAMResult</strong> layer &#x27;1&#x27;</div>
    """
    rest = f" {escape(detail)}" if detail else ""
    return html.element("div", Html(html.element("strong", kind) + rest))


def block(*parts: str) -> Html:
    """The parts (already HTML) inside one ``<div>``: a display is one element."""
    return Html("<div>" + "".join(parts) + "</div>")


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    align: str | None = None,
    foot: Iterable[Sequence[str]] = (),
    caption: str = "",
    monospace: bool = False,
) -> Html:
    """An HTML table styled in place (:func:`convlens.core.html.table` with ``inline=True``).

    Args:
        header: The column names.
        rows: The body rows, each as long as ``header``; cells are escaped unless :class:`Html`.
        align: One letter per column, ``"l"`` or ``"r"`` (default: all left);
            set on every cell, since notebook styles right-align by default.
        foot: Rows set in bold in a ``<tfoot>`` (a total).
        caption: A line under the table.
        monospace: Set the table in a monospace font (shapes and formulas line up).

    Returns:
        The table's markup.
    """
    return html.table(header, rows, align=align, foot=foot, caption=caption, monospace=monospace, inline=True)


def cell(picture: str, *lines: str) -> Html:
    """A thumbnail (an ``<img>`` tag) with caption lines under it, as one inline box."""
    return html.figure(picture, *lines, inline=True)


def gallery(cells: Iterable[str]) -> Html:
    """Cells side by side, wrapping at the notebook's width."""
    return html.gallery(cells, inline=True)


# -- pictures ---------------------------------------------------------------------------------


def _array(t: Tensor | npt.ArrayLike) -> Float:
    """A float64 copy on the CPU, NaN and infinities replaced by finite numbers; the input is untouched."""
    if isinstance(t, Tensor):
        a = t.detach().to(device="cpu").double().numpy().copy()  # any device, any dtype; never a view
    else:
        a = np.array(t, dtype=np.float64)
    finite: Float = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return finite


def _unit(a: Float) -> Float:
    """As it is when inside [0, 1], else stretched to [0, 1] (min-max); a flat array is all zeros."""
    if a.size == 0:
        return a
    low, high = float(a.min()), float(a.max())
    if low >= 0.0 and high <= 1.0:
        return a
    if high - low <= 0.0:
        return np.zeros_like(a)
    out: Float = (a - low) / (high - low)
    return out


def _to_2d(a: Float) -> Float:
    """A plane from any number of spatial dimensions: 1-D as a strip, 3-D and more their middle slice."""
    if a.size == 0:
        return np.zeros((1, 1))
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a[None, :]
    if a.ndim > 2:
        middle: Float = a[tuple(s // 2 for s in a.shape[:-2])]
        return middle
    return a


def plane(values: Tensor | npt.ArrayLike) -> Float:
    """One map ``(*spatial)`` as an ``(H, W)`` array in [0, 1], ready for :func:`image_tag`.

    A 1-D map becomes a strip, of a 3-D map the middle slice is drawn; values
    inside [0, 1] are kept, others stretched (min-max).

    Example:
        >>> import torch
        >>> plane(torch.tensor([2.0, 4.0, 3.0])).tolist()
        [[0.0, 1.0, 0.5]]
    """
    return _unit(_to_2d(_array(values)))


def picture(x: Tensor | npt.ArrayLike) -> Float:
    """One input sample ``(C, *spatial)`` as ``(H, W)`` grey or ``(H, W, 3)`` RGB in [0, 1].

    Three channels are drawn as red, green, blue; one as grey; any other
    number as the mean over channels in grey. A sample without a channel
    dimension (``(L,)``, a feature vector) is a grey strip. Values inside
    [0, 1] are kept, others stretched (min-max, all channels together).

    Example:
        >>> import torch
        >>> picture(torch.rand(3, 4, 5)).shape, picture(torch.rand(1, 4, 5)).shape, picture(torch.rand(6)).shape
        ((4, 5, 3), (4, 5), (1, 6))
    """
    a = _array(x)
    if a.ndim <= 1:
        return _unit(_to_2d(a))
    if a.shape[0] == 3:
        rgb = np.stack([_to_2d(channel) for channel in a], axis=-1)
        return _unit(rgb)
    return _unit(_to_2d(a.mean(axis=0)))


def box_in_plane(box: Sequence[int], spatial: Sequence[int]) -> tuple[int, int, int, int] | None:
    """A receptive-field box (starts, then exclusive ends) in the plane :func:`picture` draws.

    A 2-D box is ``(top, left, bottom, right)`` already; a 1-D one spans the
    strip's height; of a 3-D one, the part in the middle slice (None when the
    box misses that slice).

    Example:
        >>> box_in_plane([2, 3, 6, 7], (8, 8)), box_in_plane([4, 9], (16,))
        ((2, 3, 6, 7), (0, 4, 1, 9))
        >>> box_in_plane([0, 1, 2, 3, 4, 5], (8, 8, 8)), box_in_plane([3, 1, 2, 7, 4, 5], (8, 8, 8))
        (None, (1, 2, 4, 5))
    """
    nd = len(box) // 2
    starts, ends = list(box[:nd]), list(box[nd:])
    if nd == 1:
        return 0, starts[0], 1, ends[0]
    middle = [s // 2 for s in spatial[:-2]]
    if any(not a <= m < b for a, b, m in zip(starts[:-2], ends[:-2], middle, strict=True)):
        return None
    return starts[-2], starts[-1], ends[-2], ends[-1]


def _palette(cmap: str) -> bytes:
    """The 256 colours of a matplotlib colormap as a PIL palette."""
    lut = colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    return bytes(np.round(lut * 255.0).astype(np.uint8).flatten().tolist())


def _resized(a: Float, side: int) -> tuple[Float, float, float]:
    """``a`` (``(H, W)`` or ``(H, W, 3)`` in [0, 1]) with its longest side near ``side``, and the scales."""
    h, w = a.shape[:2]
    if max(h, w) <= side:  # enlarge by a whole factor, pixels kept sharp; a strip made tall enough
        f = max(1, side // max(h, w))
        fy, fx = max(f, -(-_STRIP // h)), max(f, -(-_STRIP // w))
        out: Float = np.repeat(np.repeat(a, fy, axis=0), fx, axis=1)
        return out, float(fy), float(fx)
    scale = side / max(h, w)
    size = (max(_STRIP, round(w * scale)), max(_STRIP, round(h * scale)))
    planes = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[2])]
    small = [
        np.asarray(Image.fromarray(p.astype(np.float32)).resize(size, Image.Resampling.BOX)) for p in planes
    ]
    shrunk = np.stack(small, axis=-1) if a.ndim == 3 else small[0]
    return np.clip(shrunk.astype(np.float64), 0.0, 1.0), size[1] / h, size[0] / w


def _pil(a: Float, cmap: str | None) -> Image.Image:
    if a.ndim == 3:  # an adaptive palette of 256 colours: a photo's PNG is half the size
        rgb = Image.fromarray(np.ascontiguousarray(np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)))
        return rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if cmap is None:
        return Image.fromarray(np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8))  # grey
    steps = np.round(np.clip(a, 0.0, 1.0) * (_MAP_LEVELS - 1)) / (_MAP_LEVELS - 1)
    levels = np.ascontiguousarray(np.round(steps * 255.0).astype(np.uint8))
    image = Image.frombytes("P", (levels.shape[1], levels.shape[0]), levels.tobytes())
    image.putpalette(_palette(cmap))  # one byte per pixel and the colormap as palette
    return image


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return html.data_uri(buffer.getvalue())


def _img(uri: str, width: int, height: int, alt: str, *, pixelated: bool = True) -> Html:
    style = "image-rendering:pixelated" if pixelated else None  # sharp pixels when a browser zooms
    return html.image(uri, alt, width=width, height=height, style=style)


def image_tag(
    values: Float,
    *,
    cmap: str | None = None,
    side: int = THUMB,
    box: Sequence[int] | None = None,
    alt: str = "",
) -> Html:
    """An ``<img>`` holding ``values`` as an inline PNG, its longest side about ``side`` pixels.

    Args:
        values: ``(H, W)`` or ``(H, W, 3)`` in [0, 1] (see :func:`plane` and :func:`picture`).
        cmap: A matplotlib colormap name to colour an ``(H, W)`` map (in 64
            levels); None: grey. RGB pictures get an adaptive 256-colour palette.
        side: The longest side to aim at (whole-factor enlargement, box-filter shrinking).
        box: ``(top, left, bottom, right)`` in ``values``' pixels, ends
            exclusive: outlined in yellow (a receptive field).
        alt: The image's text alternative.

    Returns:
        The tag, with ``width`` and ``height`` set to the PNG's size.
    """
    scaled, sy, sx = _resized(values, side)
    image = _pil(scaled, cmap)
    if box is not None:
        top, left, bottom, right = box
        image = image.convert("RGB")
        x0, y0 = round(left * sx), round(top * sy)
        x1, y1 = max(x0, round(right * sx) - 1), max(y0, round(bottom * sy) - 1)
        ImageDraw.Draw(image).rectangle((x0, y0, x1, y1), outline=_BOX_COLOUR, width=1)
    return _img(_data_uri(image), image.width, image.height, alt)


def figure_tag(fig: Figure, *, alt: str = "") -> Html:
    """An ``<img>`` holding a matplotlib figure as an inline PNG, drawn on the Agg canvas (no pyplot).

    The drawing is laid on white and stored with a 256-colour palette (a
    line plot's PNG shrinks to about a third).

    Example:
        >>> from matplotlib.figure import Figure
        >>> fig = Figure(figsize=(2, 1), dpi=50)
        >>> _ = fig.add_subplot().plot([0, 1], [1, 0])
        >>> figure_tag(fig, alt="a line")[:40]
        '<img src="data:image/png;base64,iVBORw0K'
    """
    FigureCanvasAgg(fig)  # draw on Agg whatever the backend; pyplot never sees the figure
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    drawn = Image.open(io.BytesIO(buffer.getvalue())).convert("RGBA")
    opaque = Image.alpha_composite(Image.new("RGBA", drawn.size, "white"), drawn).convert("RGB")
    image = opaque.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    # The size as saved: a user's savefig.bbox rcParam may crop the figure.
    return _img(_data_uri(image), image.width, image.height, alt, pixelated=False)


def map_gallery(
    kind: str, detail: str, maps: Tensor, scores: Tensor, targets: Tensor | None, *, cmap: str
) -> Html:
    """A batch of ``(N, *spatial)`` maps in [0, 1], one thumbnail each with its target and score.

    Args:
        kind: The result's type, in bold first.
        detail: What comes after it (the layer).
        maps: The maps; at most :data:`MAX_ITEMS` are drawn.
        scores: ``(N,)`` the scores explained.
        targets: ``(N,)`` the class indices, or None for a callable target.
        cmap: The matplotlib colormap that colours them.

    Returns:
        The display.

    Example:
        >>> import torch
        >>> page = map_gallery("CAMResult", "layer '1'", torch.rand(3, 4, 4), torch.ones(3), None, cmap="jet")
        >>> page.count("<img"), "#2 callable target" in page
        (3, True)
    """
    n = int(maps.shape[0])
    shown = cap(n)
    size = "x".join(map(str, maps.shape[1:]))
    deep = "; of 3-D maps the middle slice" if maps.dim() > 3 else ""
    cells = []
    for i in range(shown):
        target = "callable target" if targets is None else f"target {int(targets[i])}"
        tag = image_tag(plane(maps[i]), cmap=cmap, alt=f"map {i}, {target}")
        cells.append(cell(tag, f"#{i} {target}", f"score {number(float(scores[i]))}"))
    what = f"{n} map{'s' if n != 1 else ''} of {size} ({cmap}: 0 to 1{deep})"
    return block(heading(kind, f"{detail}: {what}"), gallery(cells), left_out(shown, n, "maps"))
