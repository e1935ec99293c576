"""The atlas's unit pages: where each picture matters, the activation it reaches, its top example accentuated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convlens as cl
from convlens.apps.atlas import build_atlas
from convlens.apps.atlas_pictures import accent_steps
from convlens.apps.cli import main


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("atlas")
    build_atlas(
        cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test"), out, layers=["features.4", "classifier.2"], units=4,
        k=3, steps=32, progress=False, concepts=0,
    )  # fmt: skip
    return out


def unit_json(site: Path, layer: str, unit: int) -> dict[str, object]:
    (found,) = [
        p
        for p in (site / "_cache").glob("*/unit.json")
        if (m := json.loads(p.read_text()))["layer"] == layer and m["unit"] == unit
    ]
    meta: dict[str, object] = json.loads(found.read_text())
    return meta | {"folder": str(found.parent)}


@pytest.mark.parametrize("unit", [2, 3])  # units 0 and 1 are dead at a grey start (see below)
def test_each_unit_page_shows_its_mask_its_relative_activation_and_its_accentuation(
    site: Path, unit: int
) -> None:
    page = (site / "units" / "features.4" / f"{unit}.html").read_text()
    meta = unit_json(site, "features.4", unit)
    folder = Path(str(meta["folder"]))
    assert "mask.png" in page
    assert "accent.png" in page
    assert "top example&#x27;s activation" in page or "top example's activation" in page
    examples = meta["examples"]
    assert isinstance(examples, list)
    top = float(examples[0]["value"])
    # The conv units' objective is their own activation: relative is it over the top example's.
    assert meta["relative"] == pytest.approx(float(meta["value"]) / top, rel=1e-5)  # type: ignore[arg-type]
    # The accentuation raises the unit above what its top example gave it.
    assert float(meta["accent"]) > top  # type: ignore[arg-type]
    mask = np.asarray(Image.open(folder / "mask.png"))
    assert mask.shape[-1] == 4  # RGBA: the mask is the alpha channel
    assert mask[..., 3].max() == 255
    assert mask[..., 3].min() < 255


def test_class_pictures_with_no_ink_have_no_relative_of_their_penalty(site: Path) -> None:
    # The no-ink class pictures' objective holds -100 * l1; relative is of the class score alone.
    meta = unit_json(site, "classifier.2", 1)
    examples = meta["examples"]
    assert isinstance(examples, list)
    assert meta["relative"] is not None
    assert float(meta["relative"]) * float(examples[0]["value"]) > float(meta["value"])  # type: ignore[arg-type]


def test_accentuation_takes_half_the_steps() -> None:
    assert accent_steps(12) == 6
    assert accent_steps(1) == 1


def test_a_unit_no_example_excites_has_no_relative_activation(site: Path) -> None:
    # features.4 unit 1 (a ReLU) is 0 on every test digit: no natural maximum to compare with.
    meta = unit_json(site, "features.4", 1)
    examples = meta["examples"]
    assert isinstance(examples, list)
    assert float(examples[0]["value"]) == 0.0
    assert meta["relative"] is None
    own = (site / "units" / "features.4" / "1.html").read_text().split("<h2>")[1]
    assert own.startswith("Its feature visualization")
    assert "activation" not in own


def test_with_two_seeds_each_unit_page_shows_its_stability(tmp_path: Path) -> None:
    build_atlas(
        cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test"), tmp_path, layers=["classifier.2"], units=2, k=2,
        steps=6, seeds=2, progress=False, concepts=0,
    )  # fmt: skip
    for unit in (0, 1):
        meta = unit_json(tmp_path, "classifier.2", unit)
        assert isinstance(meta["stability"], float)
        assert -1.0 <= meta["stability"] <= 1.0
        page = (tmp_path / "units" / "classifier.2" / f"{unit}.html").read_text()
        assert f"stability {meta['stability']:.2f} across seeds" in page
    with pytest.raises(cl.InvalidArgumentError, match="seeds"):
        build_atlas(cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test"), tmp_path, seeds=0)


def test_without_accents_no_unit_is_accentuated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["atlas", "convlens:digits_cnn", "--data", "digits", "--layers", "features.4", "--units", "2", "--k", "2",
          "--steps", "4", "--concepts", "0", "--no-accents", "--out", str(tmp_path)])  # fmt: skip
    capsys.readouterr()
    assert not list((tmp_path / "_cache").glob("*/accent.png"))
    for unit in (0, 1):
        assert unit_json(tmp_path, "features.4", unit)["accent"] is None
        assert "accentuated" not in (tmp_path / "units" / "features.4" / f"{unit}.html").read_text()
    with pytest.raises(cl.InvalidTypeError, match="accents"):
        build_atlas(cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test"), tmp_path, accents="no")  # type: ignore[arg-type]
