"""The tour's index.html as a browser renders it: every image loads, nothing leaves the machine.

The page is opened in Debian's headless ``chromium`` through playwright (see browser.py); where
either is missing the tests skip and say what to install. The full-page screenshot is kept in the
build output: ``$CONVLENS_SCREENSHOTS/tour_index.png`` (default ``build/screenshots/``, relative to
the repository root).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from browser import PageReport, browser_unavailable, is_local, open_page

#: What the page's headings must name, in this order: the lecture's sections, then the homework
#: and AlphaGo. Each is looked for as a substring of the h1/h2 texts; one heading may name several.
EXPECTED_SECTIONS = ("7.1", "7.2", "7.3", "HW4", "AlphaGo")

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.slow  # the tour, then a real browser


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("CONVLENS_SCREENSHOTS", "build/screenshots"))
    return folder if folder.is_absolute() else ROOT / folder


@pytest.fixture(scope="module")
def chromium() -> None:
    reason = browser_unavailable()
    if reason is not None:
        pytest.skip(reason)


def png_bytes(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def first_mention(headings: tuple[str, ...], label: str) -> int | None:
    return next((i for i, text in enumerate(headings) if label in text), None)


def test_the_harness_sees_broken_images_and_offsite_requests(chromium: None, tmp_path: Path) -> None:
    (tmp_path / "red.png").write_bytes(png_bytes((30, 20), (255, 0, 0)))
    (tmp_path / "blue.png").write_bytes(png_bytes((8, 12), (0, 0, 255)))
    inline = "data:image/png;base64," + base64.b64encode(png_bytes((5, 7), (0, 255, 0))).decode()
    (tmp_path / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>fixture</title></head><body>"
        "<h1>Fixture</h1><h2>7.1 local</h2><img src='red.png'><img src='blue.png'>"
        f"<h2>7.2 inline</h2><img src='{inline}'>"
        "<h2>offsite</h2><img src='https://example.com/x.png'>"
        "</body></html>"
    )
    shot = tmp_path / "shots" / "fixture.png"

    report = open_page(tmp_path / "index.html", shot)

    assert report.title == "fixture"
    assert report.heading_texts == ("Fixture", "7.1 local", "7.2 inline", "offsite")
    assert [(i.natural_width, i.natural_height, i.loaded) for i in report.images] == [
        (30, 20, True),
        (8, 12, True),
        (5, 7, True),
        (0, 0, False),
    ]
    assert report.images[0].src.endswith("/red.png")
    assert report.images[2].src.startswith("data:image/png")
    assert report.broken_images == (report.images[3],)
    assert report.broken_images[0].src == "https://example.com/x.png"
    # The https image was asked for, aborted before it left, and reported as having tried.
    assert report.offsite_requests == ("https://example.com/x.png",)
    assert report.blocked == ("https://example.com/x.png",)
    assert any(line.startswith("https://example.com/x.png") for line in report.failed)
    assert all(is_local(url) for url in report.requests if url != "https://example.com/x.png")
    assert any(url.endswith("/red.png") for url in report.requests)
    assert report.page_errors == ()
    with Image.open(shot) as png:
        assert png.size[0] == 1280
        assert png.size[1] >= 800


@pytest.fixture(scope="module")
def tour_page(chromium: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PageReport]:
    """Run the quick tour offline (random ImageNet weights) and open the index.html it writes."""
    pytest.importorskip("torchvision")
    from convlens.apps.tour import run_tour

    out = tmp_path_factory.mktemp("tour_page")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TORCH_HOME", str(out / "hub"))

    def no_download(*_args: object, **_kwargs: object) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    try:
        run_tour(out / "figures", quick=True, echo=lambda line: None)
    finally:
        monkeypatch.undo()
    index = out / "figures" / "index.html"
    if not index.is_file():
        pytest.skip("the tour does not write index.html yet")
    return index, open_page(index, screenshot_dir() / "tour_index.png")


def test_every_image_on_the_tour_page_loads(tour_page: tuple[Path, PageReport]) -> None:
    _, report = tour_page
    assert report.images, "the page shows no image"
    broken = [
        f"{i.src}: {i.natural_width}x{i.natural_height}, complete={i.complete}" for i in report.broken_images
    ]
    assert broken == []


def test_the_tour_page_stays_on_the_machine(tour_page: tuple[Path, PageReport]) -> None:
    index, report = tour_page
    assert report.offsite_requests == ()
    assert report.blocked == ()
    assert report.failed == ()
    # Self-contained: every file it loads lies in the tour's folder, so the folder can be moved.
    folder = index.parent.resolve().as_uri() + "/"
    assert [url for url in report.requests if url.startswith("file:") and not url.startswith(folder)] == []


def test_the_tour_page_has_no_errors(tour_page: tuple[Path, PageReport]) -> None:
    _, report = tour_page
    assert report.console_errors == ()
    assert report.page_errors == ()


def test_the_tour_page_follows_the_lecture(tour_page: tuple[Path, PageReport]) -> None:
    _, report = tour_page
    assert report.title
    headings = report.heading_texts
    found = {label: first_mention(headings, label) for label in EXPECTED_SECTIONS}
    assert [label for label, at in found.items() if at is None] == [], headings
    order = [at for at in found.values() if at is not None]
    assert order == sorted(order), headings


def test_the_tour_page_embeds_the_one_stylesheet(tour_page: tuple[Path, PageReport]) -> None:
    from convlens.core.html import CSS

    index, _ = tour_page
    text = index.read_text(encoding="utf-8")
    assert text.count("<style>") == 1
    assert f"<style>{CSS}</style>" in text  # the writer's, as every atlas page has it
    assert '<body class="article">' in text


def test_the_screenshot_is_kept(tour_page: tuple[Path, PageReport]) -> None:
    _, report = tour_page
    assert report.screenshot == screenshot_dir() / "tour_index.png"
    with Image.open(report.screenshot) as png:
        assert png.format == "PNG"
        assert min(png.size) > 0


def test_the_concepts_item_shows_its_digits(tour_page: tuple[Path, PageReport]) -> None:
    from convlens.apps.tour_concepts import K, N

    _, report = tour_page
    shown = [image for image in report.images if "/concepts/" in image.src]
    assert len(shown) == N * (1 + K)  # every concept's picture, its top digits with their coefficient maps
    assert all(image.loaded and image.natural_width > 0 for image in shown)
