"""The concepts section and page: what each concept shows, drawn right, offline, checked in a browser."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens as cl
from convlens.apps.concepts_page import ConceptsPageResult, build_concepts_page, write_concepts_page
from convlens.apps.concepts_section import ConceptPictures, concept_section, importance_line, summary_line
from convlens.core.html import CSS
from convlens.featureviz.concept_result import ConceptsResult
from invariants import ModelState, assert_unchanged, snapshot

ROOT = Path(__file__).resolve().parent.parent
DIGITS = tuple(f"digit {d}" for d in range(10))


def hand_built(*, n: int = 3, k: int = 4, inputs: bool = True, importance: bool = True) -> ConceptsResult:
    """A result as concepts() returns one, built by hand on real digits: concept i's map peaks at row i."""
    data = cl.zoo.digits_dataset("test")
    indices = torch.arange(n * k).view(n, k) * 3
    maps = torch.zeros(n, k, 8, 8)
    for i in range(n):
        maps[i, :, i, :] = torch.linspace(1.0, 0.5, k).view(k, 1)
    xs = torch.stack([data[int(i)][0] for i in indices.flatten()]).view(n, k, 1, 28, 28)
    return ConceptsResult(
        bank=torch.eye(n, 16),
        layer="features.3",
        method="nmf",
        error=0.25,
        explained=0.875,
        examples=len(data),
        indices=indices,
        strengths=maps.amax((2, 3)),
        positions=torch.zeros(n, k, 2, dtype=torch.long),
        boxes=torch.tensor([0, 0, 14, 14]).expand(n, k, 4).clone(),
        maps=maps if inputs else None,
        inputs=xs if inputs else None,
        importance=torch.arange(10 * n, dtype=torch.float32).view(10, n).flip(0) if importance else None,
        classes=torch.arange(10) if importance else None,
        class_counts=torch.full((10,), 36) if importance else None,
    )


def decoded(markup: str) -> list[Image.Image]:
    """The pictures a section inlines as data URIs, in order."""
    import base64

    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', markup)
    return [Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB") for s in sources]


def test_the_section_shows_each_concept_its_examples_and_importance() -> None:
    result = hand_built()
    section = concept_section(result, pictures=torch.rand(3, 1, 28, 28), class_names=DIGITS)
    assert section.count("<h2>") == 1
    assert re.findall(r"<h3[^>]*>(Concept \d+)</h3>", section) == ["Concept 0", "Concept 1", "Concept 2"]
    assert section.count("<img") == 3 * (1 + 4)  # a picture and four examples per concept
    assert "87.5% of the variance" in section
    assert "relative reconstruction error 0.250" in section
    assert "3 concepts (nmf) in the 16 channels of features.3" in section
    assert "fitted over 360 examples" in section
    assert "4 top examples each" in section
    shown = [int(i) for i in re.findall(r'alt="concept 1 example (\d+)"', section)]
    assert shown == result.indices[1].tolist()
    # importance[c, i] is 3 * (9 - c) + i: for every concept class 0 matters most, then 1, then 2
    assert "Matters most for: digit 0 (27), digit 1 (24), digit 2 (21)" in section
    assert "Matters most for: digit 0 (29), digit 1 (26), digit 2 (23)" in section
    assert "http" not in section
    assert "<script" not in section


def test_a_panel_is_the_example_under_its_heat_map_with_the_window_outlined() -> None:
    result = hand_built(n=2, k=1)
    panels = decoded(concept_section(result))
    assert len(panels) == 2
    for i, panel in enumerate(panels):
        a = np.asarray(panel).astype(int)
        assert a.shape == (112, 112, 3)  # 28 pixels at 4x, as the atlas shows examples
        side = 112 // 8  # one cell of the 8 x 8 map
        hot = a[i * side + side // 2, 60:100].mean(0)  # the map's row i: 1 -> jet's dark red
        cold = a[6 * side + side // 2, 60:100].mean(0)  # the map's 0 -> jet's dark blue
        assert hot[0] > hot[2] + 40, hot  # 0.45 of jet's (127, 0, 0) over the digit
        assert cold[2] > cold[0] + 40, cold
        # the window (0, 0)-(14, 14) of the input is outlined in yellow at 4x: its right edge at x = 55
        edge = a[10:40, 54:56].reshape(-1, 3)
        assert (np.abs(edge - [255, 220, 0]).max(1) <= 1).all()
        assert not (np.abs(a[70:100, 54:56].reshape(-1, 3) - [255, 220, 0]).max(1) <= 1).all()


def test_pictures_may_be_png_bytes_pil_images_or_a_tensor_and_k_limits_the_examples() -> None:
    result = hand_built(n=2, k=4)
    red = Image.new("RGB", (10, 10), (255, 0, 0))
    buffer = io.BytesIO()
    red.save(buffer, format="PNG")
    given: list[ConceptPictures] = [
        [buffer.getvalue(), red],
        torch.ones(2, 3, 10, 10) * torch.tensor([1.0, 0, 0]).view(3, 1, 1),
    ]
    for pictures in given:
        section = concept_section(result, pictures=pictures, k=2)
        images = decoded(section)
        assert len(images) == 2 * (1 + 2)
        assert images[0].size == (160, 160)
        assert images[0].getpixel((80, 80)) == (255, 0, 0)
    with pytest.raises(cl.InvalidArgumentError, match="one per concept: 2 concepts, got 3 pictures"):
        concept_section(result, pictures=torch.rand(3, 1, 8, 8))
    with pytest.raises(cl.InvalidArgumentError, match=r"k must be"):
        concept_section(result, k=0)
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'imagenet'"):
        concept_section(result, preset="imagenett")  # type: ignore[arg-type]


def test_without_inputs_the_examples_are_listed_and_without_importance_it_says_so() -> None:
    result = hand_built(inputs=False, importance=False)
    section = concept_section(result)
    assert "<img" not in section
    assert "#3 · " in section  # concept 0's second example, by its position in the data
    assert section.count("Importance not computed") == 3
    assert importance_line(hand_built(), 2, class_names=None).startswith("Matters most for: class 0 (")


def test_a_layer_without_a_grid_shows_its_examples_plain() -> None:
    grid = hand_built(n=2, k=2)
    flat = dataclasses.replace(grid, maps=grid.strengths, positions=None, boxes=None)  # a Linear layer's
    panels = decoded(concept_section(flat))
    assert len(panels) == 2 * 2
    for panel in panels:
        a = np.asarray(panel).astype(int)
        assert (a[..., 0] == a[..., 2]).all()  # the grey digit as it is: no heat map, no yellow window
        assert a.max() > 200  # the digit's strokes
    assert summary_line(dataclasses.replace(flat, bank=torch.eye(1, 16))).startswith(
        "1 concept (nmf) in the 16"
    )


def test_files_in_a_folder_are_linked_by_href(tmp_path: Path) -> None:
    section = concept_section(hand_built(n=2, k=2), folder=tmp_path / "c", href="../c/")
    sources = re.findall(r'src="([^"]+)"', section)
    assert sources == [f"../c/concept{i}_example{j}.png" for i in range(2) for j in range(2)]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [s.split("/")[-1] for s in sources]
    assert all(Image.open(tmp_path / "c" / s.split("/")[-1]).size == (112, 112) for s in sources)


def test_the_page_is_offline_with_every_picture_beside_it(tmp_path: Path) -> None:
    result = hand_built()
    index = write_concepts_page(
        result, tmp_path, pictures=torch.rand(3, 1, 28, 28), class_names=DIGITS, note="random weights"
    )
    assert index == tmp_path / "index.html"
    page = index.read_text()
    assert page.count(f"<style>{CSS}</style>") == 1
    assert "<h1>Concepts at features.3</h1>" in page
    assert '<p class="note">random weights</p>' in page
    assert "convlens.concepts(" not in page  # no call given, none shown
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 3 * 5
    for src in sources:
        assert src.startswith("images/")
        assert (tmp_path / src).is_file()
        assert (tmp_path / src).stat().st_size > 0
    anchors = re.findall(r'href="([^"]+)"', page)
    assert anchors == ["#concept-0", "#concept-1", "#concept-2"]
    assert all(f'id="{a[1:]}"' in page for a in anchors)
    assert summary_line(result) in page


@dataclasses.dataclass(frozen=True)
class DigitsPage:
    """One real build on the digits CNN (its last conv layer's ReLU, 4 concepts), shared by two tests."""

    made: ConceptsPageResult
    model: nn.Module
    before: ModelState


@pytest.fixture(scope="module")
def digits_page(tmp_path_factory: pytest.TempPathFactory) -> DigitsPage:
    model = cl.zoo.digits_cnn().train()  # a training-mode model: it must come back in training mode
    before = snapshot(model)
    made = build_concepts_page(
        model, "features.4", cl.zoo.digits_dataset("test"), 4, tmp_path_factory.mktemp("digits"), k=4,
        steps=8, class_names=DIGITS, progress=False,
    )  # fmt: skip
    return DigitsPage(made=made, model=model, before=before)


def test_the_page_of_a_real_run_on_the_digits_cnn(digits_page: DigitsPage, tmp_path: Path) -> None:
    made, model = digits_page.made, digits_page.model
    assert_unchanged(model, digits_page.before)
    result = made.result
    assert made.index.name == "index.html"
    assert made.pictures
    assert result.n == 4
    assert result.examples == len(cl.zoo.digits_dataset("test"))
    page = made.index.read_text()
    assert summary_line(result) in page
    for i in range(4):
        shown = [int(j) for j in re.findall(rf'alt="concept {i} example (\d+)"', page)]
        assert shown == result.indices[i].tolist()
        assert importance_line(result, i, class_names=DIGITS) in page
        assert "Matters most for: digit " in importance_line(result, i, class_names=DIGITS)
    assert len(re.findall(r'alt="concept \d+"', page)) == 4  # each concept's picture
    assert "convlens.concepts(model, &#x27;features.4&#x27;, data, 4" in page
    data = cl.zoo.digits_dataset("test")
    with pytest.raises(cl.InvalidArgumentError, match="steps must be"):
        build_concepts_page(model, "features.4", data, 4, tmp_path / "bad", steps=-1, progress=False)
    with pytest.raises(cl.LayerNotFoundError, match=r"Did you mean 'features\.4'"):
        build_concepts_page(model, "feature.4", data, 4, tmp_path / "bad", steps=1, progress=False)
    assert not (tmp_path / "bad").exists()  # nothing written before the error
    assert_unchanged(model, digits_page.before)


@pytest.mark.slow
def test_the_page_in_a_real_browser(digits_page: DigitsPage) -> None:
    from browser import browser_unavailable, is_local, open_page

    reason = browser_unavailable()
    if reason is not None:
        pytest.skip(reason)
    index = digits_page.made.index
    shot = ROOT / "build" / "screenshots" / "concepts_page.png"
    report = open_page(index, shot)
    assert not report.offsite_requests
    assert not report.broken_images, report.broken_images
    assert len(report.images) == 4 * (1 + 4)  # a picture and four examples per concept
    assert all(image.natural_width > 0 for image in report.images)
    assert not report.console_errors
    assert not report.page_errors
    assert report.heading_texts[0] == "Concepts at features.4"
    assert len(report.links) == 4
    for link in report.links:
        assert is_local(link), link
        parts = urlsplit(link)
        assert Path(unquote(parts.path)) == index.resolve(), link
        assert f'id="{parts.fragment}"' in index.read_text(), link  # the anchor is on the page
    assert shot.stat().st_size > 0


def test_the_section_nests_under_a_page_s_headings() -> None:
    """The tour puts the section under its own part and item headings: level 4, concepts at 5."""
    section = concept_section(hand_built(), level=4)
    assert "<h4>" in section
    assert '<h5 id="concept-0"' in section
    assert "<h2>" not in section
    with pytest.raises(cl.InvalidArgumentError, match="level must be 1 to 5"):
        concept_section(hand_built(), level=6)
