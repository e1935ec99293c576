"""Load pictures, turn them into model inputs and back, and name ImageNet classes.

Two preprocessing presets: ``"imagenet"`` is the transform of torchvision's
ImageNet weights (resize the short side to 256, centre crop 224, ImageNet
mean and std) and ``"lecture"`` is the lecture's (resize 224, centre crop 224,
mean = std = 0.5). Both are done here with PIL and torch, identical to
torchvision's transforms (a test pins that), so they work without torchvision.

Example:
    >>> from convlens import images
    >>> x = images.preprocess(images.sample_image(), preset="lecture")
    >>> x.shape, x.dtype
    (torch.Size([1, 3, 224, 224]), torch.float32)
    >>> images.deprocess(x, preset="lecture").shape
    (224, 224, 3)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from convlens.core.checks import check_choice
from convlens.errors import InvalidArgumentError, InvalidTypeError, did_you_mean

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "ClassesSpec",
    "ImageSource",
    "PictureFolder",
    "Preset",
    "class_names",
    "deprocess",
    "imagenet_classes",
    "load_image",
    "preprocess",
    "sample_image",
    "sample_image_path",
    "to_rgb_array",
]

#: Anything :func:`load_image` accepts.
ImageSource = str | Path | Image.Image | np.ndarray | Tensor
PresetName = Literal["imagenet", "lecture"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    """A preprocessing recipe: resize the short side, centre crop, normalize."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: The two presets by name.
PRESETS = MappingProxyType(
    {
        "imagenet": Preset(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        "lecture": Preset(resize=224, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    }
)


def sample_image_path() -> Path:
    """The default picture: matplotlib's sample photo of Grace Hopper (works offline).

    Example:
        >>> sample_image_path().name
        'grace_hopper.jpg'
    """
    cbook = importlib.import_module("matplotlib.cbook")
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def sample_image() -> Image.Image:
    """The default picture as an RGB PIL image.

    Example:
        >>> sample_image().size
        (512, 600)
    """
    return load_image(sample_image_path())


def load_image(source: ImageSource) -> Image.Image:
    """Load a picture as an RGB PIL image.

    Grayscale becomes three equal channels, transparency is composited on
    white, 16-bit images are scaled to 8 bits.

    Args:
        source: A file path, a PIL image, an ``(H, W)`` or ``(H, W, 3|4)``
            array (uint8, or float in [0, 1]), or a ``(3, H, W)`` / ``(H, W)``
            float tensor in [0, 1].

    Returns:
        An RGB image.

    Raises:
        InvalidArgumentError: A path that does not exist or is not an image,
            or an array of an unsupported shape.
        InvalidTypeError: Something that is not a picture.

    Example:
        >>> import numpy as np
        >>> load_image(np.zeros((4, 5), dtype=np.uint8)).size, load_image(np.zeros((4, 5), dtype=np.uint8)).mode
        ((5, 4), 'RGB')
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidArgumentError(f"image file {str(path)!r} does not exist.")
        try:
            with Image.open(path) as opened:
                opened.load()
                return _rgb(opened)
        except OSError as err:
            raise InvalidArgumentError(f"{str(path)!r} is not an image PIL can read: {err}") from err
    if isinstance(source, Image.Image):
        return _rgb(source)
    if isinstance(source, Tensor | np.ndarray):
        return Image.fromarray(to_rgb_array(source))
    raise InvalidTypeError(
        f"an image must be a path, PIL image, numpy array or tensor; got {type(source).__name__}."
    )


def to_rgb_array(image: ImageSource) -> np.ndarray:
    """A picture as an ``(H, W, 3)`` uint8 array.

    Tensors are ``(3, H, W)`` or ``(H, W)`` floats in [0, 1] (``(1, 3, H, W)``
    with a batch of one is accepted); arrays are ``(H, W)`` or ``(H, W, 3|4)``,
    uint8 or float in [0, 1].

    Example:
        >>> import torch
        >>> to_rgb_array(torch.ones(3, 2, 2))[0, 0].tolist()
        [255, 255, 255]
    """
    if isinstance(image, str | Path | Image.Image):
        return np.asarray(load_image(image))
    if isinstance(image, Tensor):
        t = image.detach().float().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 3 and t.shape[0] in {1, 3}:
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise InvalidArgumentError(
                f"an image tensor must be (3, H, W), (1, H, W) or (H, W); got shape {tuple(image.shape)}."
            )
        return to_rgb_array(t.numpy())
    if not isinstance(image, np.ndarray):
        raise InvalidTypeError(
            f"an image must be a path, PIL image, array or tensor; got {type(image).__name__}."
        )
    a = image
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in {2, 3} or (a.ndim == 3 and a.shape[2] not in {3, 4}):
        raise InvalidArgumentError(
            f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {a.shape}."
        )
    if a.dtype == np.uint16:
        a = (a.astype(np.float64) / 65535.0 * 255.0).round().astype(np.uint8)
    elif a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:
        return np.asarray(_rgb(Image.fromarray(a, mode="RGBA")))
    return np.ascontiguousarray(a)


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
        a = np.asarray(image).astype(np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
        gray = (np.clip(a / peak, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in {"RGBA", "LA", "P", "PA"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(image: ImageSource, *, preset: PresetName = "imagenet") -> Tensor:
    """Turn a picture into a model input: resize, centre crop, normalize.

    Args:
        image: Anything :func:`load_image` accepts.
        preset: ``"imagenet"`` (torchvision's ImageNet weights: resize 256,
            crop 224, ImageNet mean/std) or ``"lecture"`` (resize 224, crop
            224, mean = std = 0.5).

    Returns:
        A float32 batch of one.

    Shape:
        Output :math:`(1, 3, 224, 224)`.

    Example:
        >>> preprocess(sample_image()).shape
        torch.Size([1, 3, 224, 224])
    """
    recipe = PRESETS[check_choice("preset", preset, list(PRESETS))]
    img = load_image(image)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    resized_long = int(recipe.resize * long / short)
    size = (recipe.resize, resized_long) if w <= h else (resized_long, recipe.resize)
    img = img.resize(size, Image.Resampling.BILINEAR)
    w, h = img.size
    top, left = round((h - recipe.crop) / 2.0), round((w - recipe.crop) / 2.0)
    img = img.crop((left, top, left + recipe.crop, top + recipe.crop))
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(recipe.mean).view(3, 1, 1)
    std = torch.tensor(recipe.std).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def deprocess(x: Tensor, *, preset: PresetName = "imagenet") -> np.ndarray:
    """Undo a preset's normalization: a model input back to a displayable picture.

    Args:
        x: ``(3, H, W)`` or a batch of one ``(1, 3, H, W)``, normalized as ``preset`` does.
        preset: The preset that normalized it.

    Returns:
        An ``(H, W, 3)`` uint8 array (values outside the displayable range are clipped).

    Example:
        >>> import torch
        >>> deprocess(torch.zeros(1, 3, 2, 2), preset="lecture")[0, 0].tolist()
        [128, 128, 128]
    """
    recipe = PRESETS[check_choice("preset", preset, list(PRESETS))]
    t = x.detach().float().cpu()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise InvalidArgumentError(
            f"deprocess expects (3, H, W) or (1, 3, H, W); got shape {tuple(x.shape)}."
        )
    mean = torch.tensor(recipe.mean).view(3, 1, 1)
    std = torch.tensor(recipe.std).view(3, 1, 1)
    return to_rgb_array((t * std + mean).clamp(0, 1))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (offline).

    Raises:
        InvalidArgumentError: torchvision is not installed.

    Example:
        >>> names = imagenet_classes()
        >>> len(names), names[0], names[281]
        (1000, 'tench', 'tabby')
    """
    try:
        models = importlib.import_module("torchvision.models")
    except ImportError as err:
        raise InvalidArgumentError(
            "ImageNet class names come from torchvision: pip install 'convlens[torchvision]'."
        ) from err
    categories: list[str] = list(models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return categories


#: What ``classes=`` (and ``--classes``) accepts: ``"imagenet"``, a file of names, or the names themselves.
ClassesSpec = str | Path | Sequence[str]


def class_names(classes: ClassesSpec, *, outputs: int | None = None) -> tuple[str, ...]:
    """The names of a model's output classes, from a preset name, a file or a list, checked.

    Args:
        classes: ``"imagenet"``: the 1000 ImageNet categories (:func:`imagenet_classes`,
            offline); a path to a text file with one name per line (a trailing
            empty line is allowed) or to a JSON list of strings; or the names.
        outputs: The model's number of outputs: the names must be exactly as
            many (checked before any work). None: not checked.

    Returns:
        One name per output, in output order.

    Raises:
        InvalidArgumentError: A file that does not exist or cannot be read, an
            empty name, or a count of names that differs from ``outputs`` (both
            counts are named).
        InvalidTypeError: ``classes`` is none of the above.

    Example:
        >>> class_names("imagenet", outputs=1000)[281]
        'tabby'
        >>> class_names(["cat", "dog"])
        ('cat', 'dog')
        >>> class_names(["cat", "dog"], outputs=3)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: classes names 2 classes, but the model has 3 outputs: give one name per output.
    """
    where = "classes"
    if isinstance(classes, str) and classes == "imagenet":
        names: list[str] = imagenet_classes()
    elif isinstance(classes, str | Path):
        names, where = _names_file(Path(classes)), f"classes file {str(classes)!r}"
    elif isinstance(classes, Sequence) and all(isinstance(n, str) for n in classes):
        names = list(classes)
    else:
        raise InvalidTypeError(
            f"classes must be 'imagenet', the path of a file of names, or a list of str; "
            f"got {type(classes).__name__}."
        )
    blank = [i for i, name in enumerate(names) if not name.strip()]
    if blank:
        raise InvalidArgumentError(f"{where}: class {blank[0]} has an empty name; every output needs one.")
    if outputs is not None and len(names) != outputs:
        raise InvalidArgumentError(
            f"{where} names {len(names)} classes, but the model has {outputs} outputs: give one name per output."
        )
    return tuple(name.strip() for name in names)


def _names_file(path: Path) -> list[str]:
    """The names in a text file (one per line) or a JSON list."""
    if not path.is_file():
        hint = did_you_mean(str(path), ["imagenet"])
        raise InvalidArgumentError(
            f"classes must be 'imagenet' or the path of a file of class names; got {str(path)!r}, "
            f"which is no file.{hint}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidArgumentError(f"cannot read class names from {str(path)!r}: {err}") from err
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidArgumentError(f"{str(path)!r} is not valid JSON: {err}") from err
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidArgumentError(f"{str(path)!r} must hold a JSON list of strings (one per output).")
        return names
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


#: The picture files a :class:`PictureFolder` reads (torchvision's ImageFolder list).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class PictureFolder(Dataset[tuple[Tensor, int]]):
    """The pictures of a folder as a Dataset of ``(x, class index)``, preprocessed with a preset.

    Two layouts: torchvision's ImageFolder (one sub-folder per class, the
    classes sorted by name, pictures found at any depth below them) or a flat
    folder of pictures (one class, ``""``). Either way the pictures are in
    sorted path order, so an index names the same file on every machine and
    every rank. Needs no torchvision.

    Args:
        root: The folder.
        preset: ``"imagenet"`` or ``"lecture"``, as :func:`preprocess`.
        transform: Instead of the preset, any callable from a PIL RGB image
            to the model input for one picture (e.g. grayscale 28x28 for the
            digits CNN).

    Attributes:
        classes: The class names, sorted (``[""]`` for a flat folder).
        samples: ``(path, class index)`` per picture, in index order.

    Raises:
        InvalidArgumentError: ``root`` is not a folder, or holds no picture
            (the message lists the extensions read).

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("cat/a.png", "cat/b.jpg", "dog/c.png"):
        ...     (root / name).parent.mkdir(exist_ok=True)
        ...     sample_image().resize((40, 30)).save(root / name)
        >>> folder = PictureFolder(root)
        >>> len(folder), folder.classes, folder[2][0].shape, folder[2][1]
        (3, ['cat', 'dog'], torch.Size([3, 224, 224]), 1)
    """

    def __init__(
        self,
        root: str | Path,
        *,
        preset: PresetName = "imagenet",
        transform: Callable[[Image.Image], Tensor] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidArgumentError(
                f"picture folder {str(self.root)!r} does not exist or is not a folder."
            )
        self.preset = check_choice("preset", preset, list(PRESETS))
        self.transform = transform
        subfolders = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        groups = [(d.name, _pictures(d, recursive=True)) for d in subfolders]
        groups = [(name, files) for name, files in groups if files]
        if not groups:
            groups = [("", _pictures(self.root, recursive=False))]
        self.classes = [name for name, _ in groups]
        self.samples = [(path, label) for label, (_, files) in enumerate(groups) for path in files]
        if not self.samples:
            raise InvalidArgumentError(
                f"picture folder {str(self.root)!r} holds no picture (read: {', '.join(IMAGE_EXTENSIONS)}), "
                "neither directly nor in class sub-folders."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        picture = load_image(path)
        if self.transform is not None:
            return self.transform(picture), label
        return preprocess(picture, preset=self.preset)[0], label  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"PictureFolder({str(self.root)!r}, {len(self)} pictures, {len(self.classes)} classes)"


def _pictures(folder: Path, *, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
