from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.apps.tour import SECTIONS, TourResult, run_tour


def offline(monkeypatch: pytest.MonkeyPatch, hub: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(hub))

    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


def red_pixels(path: Path) -> int:
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    return int(((pixels[:, :, 0] > 180) & (pixels[:, :, 1] < 80) & (pixels[:, :, 2] < 80)).sum())


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> TourResult:
    pytest.importorskip("torchvision")
    monkeypatch = pytest.MonkeyPatch()
    out = tmp_path_factory.mktemp("tour")
    offline(monkeypatch, out / "hub")
    lines: list[str] = []
    try:
        result = run_tour(out / "figures", quick=True, echo=lines.append)
    finally:
        monkeypatch.undo()
    (out / "log.txt").write_text("\n".join(lines))
    return result


@pytest.mark.slow
def test_every_section_writes_its_files(tour: TourResult) -> None:
    names = {path.name for path in tour.files}
    assert {
        "alexnet_shapes.md",
        "convolution_6x6.txt",
        "alexnet_filters.png",
        "gradcam_resnet18.png",
    } <= names
    assert {"hw4_predictions.md", "alphago_policy_shapes.md", "digits_filters.png"} <= names
    assert {"learn_digits_classes.png", "learn_digits_classes_l1.png", "learn_alexnet_channels.png"} <= names
    assert all(path.exists() and path.stat().st_size > 0 for path in tour.files)
    assert list(SECTIONS) == [
        "shapes",
        "convolution",
        "filters",
        "digits",
        "learn",
        "accentuate",
        "concepts",
        "gradcam",
        "alphago",
        "atlas",
    ]


@pytest.mark.slow
def test_the_last_section_links_to_an_atlas_of_every_digits_unit(tour: TourResult) -> None:
    page = (tour.out / "index.html").read_text()
    assert page.rindex('<h2 id="an-atlas-of-the-digits-cnn">') > page.rindex('<h2 id="alphago')
    assert '<a href="atlas/index.html">Open the atlas</a>' in page
    atlas = tour.out / "atlas"
    assert (atlas / "index.html").is_file()
    units = sorted(p.relative_to(atlas / "units").as_posix() for p in (atlas / "units").rglob("*.html"))
    assert len(units) == 8 + 16 + 64 + 10  # every unit of features.0, features.3, classifier.0, classifier.2
    assert "classifier.2/9.html" in units


@pytest.mark.slow
def test_the_lecture_numbers(tour: TourResult) -> None:
    text = (tour.out / "alexnet_shapes.md").read_text()
    for layer, size in [("features.0", 55), ("features.2", 27), ("features.5", 13), ("features.12", 6)]:
        assert f"{layer}: {size} (lecture: {size})" in text
    assert "flatten: 256 x 6 x 6: 9216 (lecture: 9216)" in text
    assert "features.6 channels: 384 (lecture: 394) a slip in the lecture" in text
    conv = (tour.out / "convolution_6x6.txt").read_text()
    assert "  3  -1  -3  -1\n -3   1   0  -3\n -3  -3   0   1\n  3  -2  -2  -1" in conv


@pytest.mark.slow
def test_random_weights_are_said_on_every_imagenet_figure(tour: TourResult) -> None:
    assert any("random weights" in w for w in tour.warnings)
    for name in (
        "alexnet_filters.png",
        "alexnet_maps_features.0.png",
        "gradcam_alexnet.png",
        "gradcam_vgg16.png",
    ):
        assert red_pixels(tour.out / name) > 20, name
    assert red_pixels(tour.out / "digits_filters.png") == 0  # the digits CNN ships trained weights


@pytest.mark.slow
def test_hw4_table_has_a_row_per_model(tour: TourResult) -> None:
    text = (tour.out / "hw4_predictions.md").read_text()
    rows = text.strip().splitlines()
    assert [row.split("|")[1].strip() for row in rows[2:5]] == ["alexnet", "vgg16", "resnet18"]
    assert "alexnet, vgg16, resnet18: random weights" in text


def test_unknown_section() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'gradcam'"):
        run_tour("unused", sections=["gradcm"])


def test_one_section_by_name_keeps_the_global_rng(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    result = run_tour(tmp_path, sections="alphago", echo=lambda _line: None)
    assert [p.name for p in result.files] == ["alphago_policy_shapes.md", "alphago_k.md", "index.html"]
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.slow
def test_the_page_holds_every_part_with_its_calls(tour: TourResult) -> None:
    page = (tour.out / "index.html").read_text()
    headings = ["7.1 CNN", "7.2 What does CNN learn", "7.3 Grad-CAM", "HW4", "AlphaGo"]
    positions = [page.index(f">{h}") for h in headings]
    assert positions == sorted(positions)  # the lecture's order
    for name in (p.name for p in tour.files if p.suffix == ".png"):
        assert f'src="{name}"' in page, name
    assert "cl.trace_shapes(model, (1, 3, 224, 224))" in page
    assert "cl.GradCAM(" in page
    assert 'class="banner"' in page  # random weights here
    assert "features[7:9]" in page
    assert "it is ReLU and conv4" in page
    assert "(64, 3, 11, 11)" in page
    # The formula in the conv1 item and again beside conv1's feature maps.
    assert page.count("= floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55") >= 2
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page


@pytest.mark.slow
def test_alphago_for_every_k(tour: TourResult) -> None:
    rows = (tour.out / "alphago_k.md").read_text().strip().splitlines()[2:6]
    assert [row.split("|")[1].strip() for row in rows] == ["128", "192", "256", "384"]
    assert "3,882,793" in rows[1]  # k = 192, the match version
    assert all(row.split("|")[6].strip() == "361" for row in rows)


def test_an_unavailable_device_or_picture_fails_before_work(tmp_path: Path) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="not available on this machine"):
        run_tour(tmp_path / "a", device="mps" if torch.cuda.is_available() else "cuda")
    with pytest.raises(cl.InvalidArgumentError, match="device must be"):
        run_tour(tmp_path / "b", device="gpu")
    with pytest.raises(cl.InvalidArgumentError):
        run_tour(tmp_path / "c", image=tmp_path / "missing.jpg")
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "c").exists()


def test_the_users_picture_goes_through_the_tour(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "mine.png"
    Image.new("RGB", (300, 240), (200, 30, 30)).save(path)
    lines: list[str] = []
    run_tour(tmp_path / "out", sections=["shapes"], image=path, weights="random", echo=lines.append)
    steps = (tmp_path / "out" / "preprocessing.txt").read_text()
    assert "picture: 300 x 240" in steps
    assert "-> 280 x 224" in steps
    assert any(line.startswith("[shapes] done in ") for line in lines)


def test_the_concepts_item_answers_the_lecture_at_the_level_of_concepts(tmp_path: Path) -> None:
    from convlens.apps.tour_concepts import LAYER, K, N

    layers = {info.name: info.type for info in cl.list_layers(cl.zoo.digits_cnn())}
    last_conv = [name for name, kind in layers.items() if kind == "Conv2d"][-1]
    assert (last_conv, layers[LAYER]) == ("features.3", "ReLU")  # the ReLU right after the last conv layer
    assert list(layers).index(LAYER) == list(layers).index(last_conv) + 1
    result = run_tour(tmp_path, sections=["concepts"], quick=True, echo=lambda _line: None)
    assert [p.name for p in result.files] == ["concepts_digits.md", "index.html"]
    page = (tmp_path / "index.html").read_text()
    assert '<h2 id="7-2-what-does-cnn-learn">' in page
    assert f"cl.concepts(digits, &quot;{LAYER}&quot;, cl.zoo.digits_dataset(&quot;test&quot;), {N}" in page
    assert f"<h4>Concepts at {LAYER}</h4>" in page  # under the part (h2) and the item (h3)
    assert page.count('<h5 id="concept-') == N
    sources = re.findall(r'src="(concepts/[^"]+)"', page)
    assert len(sources) == N * (1 + K)  # each concept's picture, its top digits with its coefficient map
    assert all((tmp_path / src).is_file() and (tmp_path / src).stat().st_size > 0 for src in sources)
    assert "Matters most for: digit " in page
    table = (tmp_path / "concepts_digits.md").read_text().splitlines()
    rows = [line.split("|")[1:-1] for line in table[2:] if line.startswith("|")]
    assert [int(r[0]) for r in rows] == list(range(10))  # a row per digit: every label is in the test set
    assert sum(int(r[1]) for r in rows) == len(cl.zoo.digits_dataset("test"))
    for r in rows:  # "most" names the concept with the largest importance for that digit
        values = [float(v) for v in r[2 : 2 + N]]
        assert int(r[-1]) == values.index(max(values))
