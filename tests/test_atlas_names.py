"""Layer names that could break a site: markup, ``&``, slashes, spaces, unicode, names alike but for case.

Each layer of a model whose modules are so named gets its own page and unit folder, and every page
of its atlas opens in Chromium with its pictures and its links, the names shown as text.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from convlens.apps.atlas import AtlasResult, build_atlas
from convlens.apps.atlas_site import layer_file

#: "a b" and "a_b", "a/b" and "a&b" sanitize alike; "Up" and "up" differ only by case.
NAMES = ["<b>x</b>", "a&b", "a/b", "a b", "a_b", "café", "层", "Up", "up"]


class Hostile(nn.Module):
    """A chain of convolutions, each a module with one of :data:`NAMES`."""

    def __init__(self) -> None:
        super().__init__()
        for i, name in enumerate(NAMES):
            self.add_module(name, nn.Conv2d(2 if i else 1, 2, 1 if i else 3, padding=0 if i else 1))

    def forward(self, x: Tensor) -> Tensor:
        for name in NAMES:
            x = self.get_submodule(name)(x)
        return x


def atlas(out: Path) -> AtlasResult:
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(6, 1, 6, 6), torch.arange(6) % 3)
    return build_atlas(Hostile(), data, out, units=2, k=2, steps=2, concepts=0, progress=False)


def test_every_layer_gets_its_own_page_and_unit_folder(tmp_path: Path) -> None:
    site = atlas(tmp_path)
    assert site.layers == tuple(NAMES)
    stems = [layer_file(name) for name in NAMES]
    assert len({stem.lower() for stem in stems}) == len(NAMES)  # distinct on a disk that ignores case too
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == sorted(f"{s}.html" for s in stems)
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == sorted(stems)
    for name, stem in zip(NAMES, stems, strict=True):
        assert sorted(p.name for p in (tmp_path / "units" / stem).iterdir()) == ["0.html", "1.html"]
        page = (tmp_path / "layers" / f"{stem}.html").read_text(encoding="utf-8")
        escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert f"<title>{escaped}</title>" in page  # this layer's page, not another's written over it
        unit = (tmp_path / "units" / stem / "1.html").read_text(encoding="utf-8")
        assert f"<h1>{escaped}, unit 1</h1>" in unit
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    for name, stem in zip(NAMES, stems, strict=True):
        escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert index.count(f'<a href="layers/{stem}.html">{escaped}</a>') == 2  # the shape table, the list
    for path in tmp_path.rglob("*.html"):
        assert "<b>" not in path.read_text(encoding="utf-8"), path  # the name is never markup


def test_every_page_opens_in_a_real_browser_with_the_names_as_text(tmp_path: Path) -> None:
    from browser import browser_unavailable, is_local, open_pages

    reason = browser_unavailable()
    if reason is not None:
        pytest.skip(reason)
    atlas(tmp_path)
    everything = sorted(tmp_path.rglob("*.html"))
    assert len(everything) == 1 + len(NAMES) * (1 + 2)
    reports = open_pages(everything)
    titles = set()
    for page, report in zip(everything, reports, strict=True):
        where = page.relative_to(tmp_path)
        assert not report.offsite_requests, where
        assert report.images or where == Path("index.html"), where
        assert not report.broken_images, (where, report.broken_images)
        assert not report.console_errors, (where, report.console_errors)
        assert not report.page_errors, (where, report.page_errors)
        for link in report.links:
            assert is_local(link), (where, link)
            target = Path(unquote(urlsplit(link).path))
            assert target.is_file(), (where, link)
            assert target.resolve().is_relative_to(tmp_path.resolve()), (where, link)
        titles.add(report.title)
        if "layers" in where.parts:
            (name,) = [n for n in NAMES if layer_file(n) == page.stem]
            assert report.title == name, where  # "<b>x</b>" as text, not bold
            assert report.heading_texts[0] == f"{name} (Conv2d, output [1, 2, 6, 6])", where
        elif "units" in where.parts:
            (name,) = [n for n in NAMES if layer_file(n) == page.parent.name]
            assert report.title == f"{name} unit {page.stem}", where
            assert report.heading_texts[0] == f"{name}, unit {page.stem}", where
    assert set(NAMES) <= titles
