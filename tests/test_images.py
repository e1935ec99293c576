from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.models import images


def photo() -> Image.Image:
    return images.sample_image()


def test_sample_image_is_a_real_rgb_photo() -> None:
    img = photo()
    assert img.mode == "RGB"
    assert img.size == (512, 600)
    assert np.asarray(img).std() > 20  # a photo, not a flat placeholder


@pytest.mark.parametrize("size", [(512, 600), (640, 360), (300, 300)])
def test_imagenet_preset_equals_torchvision_weights_transforms(size: tuple[int, int]) -> None:
    torchvision = pytest.importorskip("torchvision")
    img = photo().resize(size)
    ours = images.preprocess(img, preset="imagenet")
    theirs = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()(img).unsqueeze(0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_lecture_preset_equals_the_lectures_transforms() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    img = photo().resize((400, 300))
    lecture = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )
    torch.testing.assert_close(
        images.preprocess(img, preset="lecture"), lecture(img).unsqueeze(0), rtol=0, atol=1e-6
    )


def test_deprocess_inverts_the_normalization() -> None:
    # Sizes at which the resize is the identity, so only the crop remains.
    cases: list[tuple[Literal["imagenet", "lecture"], int, int]] = [
        ("lecture", 224, 0),
        ("imagenet", 256, 16),
    ]
    for preset, side, offset in cases:
        img = photo().resize((side, side))
        back = images.deprocess(images.preprocess(img, preset=preset), preset=preset)
        expected = np.asarray(img)[offset : offset + 224, offset : offset + 224]
        assert back.dtype == np.uint8
        assert np.abs(back.astype(int) - expected.astype(int)).max() <= 1


def test_bad_preset_lists_choices() -> None:
    with pytest.raises(
        cl.InvalidArgumentError, match=r"'imagenet', 'lecture'; got 'imagnet'\. Did you mean 'imagenet'"
    ):
        images.preprocess(photo(), preset="imagnet")  # type: ignore[arg-type]


def test_inputs_of_every_kind(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    assert np.asarray(images.load_image(rgb))[0, 0].tolist() == [200, 0, 0]
    tensor = torch.zeros(3, 4, 6)
    tensor[1] = 1.0
    assert np.asarray(images.load_image(tensor))[0, 0].tolist() == [0, 255, 0]
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    assert np.asarray(images.load_image(path)).tolist() == rgb.tolist()
    assert np.asarray(images.load_image(str(path))).shape == (4, 6, 3)


def test_grayscale_rgba_and_16_bit_png(tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((3, 3), 77, dtype=np.uint8)).save(gray)
    assert np.asarray(images.load_image(gray))[1, 1].tolist() == [77, 77, 77]

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red
    rgba[1, 1] = [0, 0, 255, 0]  # fully transparent: white
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = np.asarray(images.load_image(path))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]

    deep = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 65535], [32896, 1000]], dtype=np.uint16)).save(deep)
    loaded = images.load_image(deep)
    assert Image.open(deep).mode.startswith("I")
    assert np.asarray(loaded)[:, :, 0].tolist() == [[0, 255], [128, 4]]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="does not exist"):
        images.load_image(tmp_path / "missing.jpg")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(cl.InvalidArgumentError, match="not an image PIL can read"):
        images.load_image(text)
    with pytest.raises(cl.InvalidTypeError, match="got int"):
        images.load_image(3)  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidArgumentError, match=r"got shape \(2, 3, 4, 5\)"):
        images.to_rgb_array(torch.zeros(2, 3, 4, 5))


def test_imagenet_classes_offline() -> None:
    pytest.importorskip("torchvision")
    names = images.imagenet_classes()
    assert len(names) == 1000
    assert names[:3] == ["tench", "goldfish", "great white shark"]


def _write(path: Path, value: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_picture_folder_reads_the_imagefolder_layout_like_torchvision(tmp_path: Path) -> None:
    for name, value in [("dog/b.png", 10), ("dog/deep/a.jpg", 20), ("cat/z.png", 30), ("cat/a.bmp", 40)]:
        _write(tmp_path / name, value)
    (tmp_path / "cat" / "notes.txt").write_text("not a picture")
    (tmp_path / "empty").mkdir()
    folder = images.PictureFolder(tmp_path, preset="lecture")
    assert folder.classes == ["cat", "dog"]
    assert [(p.relative_to(tmp_path).as_posix(), y) for p, y in folder.samples] == [
        ("cat/a.bmp", 0),
        ("cat/z.png", 0),
        ("dog/b.png", 1),
        ("dog/deep/a.jpg", 1),
    ]
    x, y = folder[2]
    assert y == 1
    torch.testing.assert_close(x, images.preprocess(tmp_path / "dog/b.png", preset="lecture")[0])
    tv = pytest.importorskip("torchvision")
    (tmp_path / "empty").rmdir()  # torchvision refuses an empty class folder; we skip it
    reference = tv.datasets.ImageFolder(str(tmp_path))
    assert reference.classes == folder.classes
    assert [(Path(p), y) for p, y in reference.samples] == folder.samples


def test_picture_folder_flat_and_errors(tmp_path: Path) -> None:
    for name, value in [("b.png", 1), ("a.png", 2)]:
        _write(tmp_path / name, value)
    folder = images.PictureFolder(tmp_path, transform=lambda img: torch.tensor(img.size))
    assert folder.classes == [""]
    assert [p.name for p, _ in folder.samples] == ["a.png", "b.png"]
    assert folder[0][0].tolist() == [40, 30]
    with pytest.raises(cl.InvalidArgumentError, match="does not exist"):
        images.PictureFolder(tmp_path / "nowhere")
    (tmp_path / "void").mkdir()
    with pytest.raises(cl.InvalidArgumentError, match="holds no picture"):
        images.PictureFolder(tmp_path / "void")
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'lecture'"):
        images.PictureFolder(tmp_path, preset="lectur")  # type: ignore[arg-type]
