from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.tour import SECTIONS, TourResult, run_tour


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
    assert list(SECTIONS) == ["shapes", "convolution", "filters", "digits", "learn", "gradcam", "alphago"]


def test_the_lecture_numbers(tour: TourResult) -> None:
    text = (tour.out / "alexnet_shapes.md").read_text()
    for layer, size in [("features.0", 55), ("features.2", 27), ("features.5", 13), ("features.12", 6)]:
        assert f"{layer}: {size} (lecture: {size})" in text
    assert "256 x 6 x 6 = 9216 (lecture: 9216)" in text
    conv = (tour.out / "convolution_6x6.txt").read_text()
    assert "  3  -1  -3  -1\n -3   1   0  -3\n -3  -3   0   1\n  3  -2  -2  -1" in conv


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
    assert [p.name for p in result.files] == ["alphago_policy_shapes.md"]
    assert torch.equal(torch.random.get_rng_state(), state)
