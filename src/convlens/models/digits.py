"""The lecture's small digit classifier, trained on scikit-learn's handwritten digits.

The lecture's "what does a CNN learn" part uses a small CNN trained on MNIST.
convlens ships a LeNet-style stand-in, :class:`DigitsCNN`, trained on the
1797 8x8 digits of ``sklearn.datasets.load_digits`` (UCI optical digits),
upsampled to 28x28 by :func:`upsample_digits`. Ink is bright: white pixels
are ink, black pixels are no ink, as in the lecture. The weights and the data
(raw images, labels and the train/test split) live in ``convlens/data``;
``scripts/train_digits.py`` regenerates both. Nothing here imports
scikit-learn.

Example:
    >>> model = load_digits_cnn()
    >>> images, labels = load_digits_dataset("test").tensors
    >>> images.shape, labels.shape
    (torch.Size([360, 1, 28, 28]), torch.Size([360]))
    >>> model(images[:4]).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

from importlib import resources
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from convlens.core.checks import check_choice, choices
from convlens.errors import InvalidTypeError, ShapeError

__all__ = [
    "DIGITS_INK_MAX",
    "DIGITS_SIZE",
    "DigitsCNN",
    "Split",
    "load_digits_cnn",
    "load_digits_dataset",
    "upsample_digits",
]

#: Side of the images the model reads.
DIGITS_SIZE = 28
#: The brightest value of a raw 8x8 digit (a cell fully covered by ink).
DIGITS_INK_MAX = 16

_DATA = "data/digits.npz"
_WEIGHTS = "data/digits_cnn.pt"
Split = Literal["train", "test", "all"]
_SPLITS = choices(Split)


class DigitsCNN(nn.Module):
    """A LeNet-style CNN for 28x28 digits, named like torchvision's AlexNet.

    ``features`` holds two 5x5 convolutions, each followed by a ReLU and a 2x2
    max pool (28 -> 24 -> 12 -> 8 -> 4); ``classifier`` holds two linear
    layers. The ReLUs are not in place. The forward returns raw logits.

    Shape:
        Input ``(N, 1, 28, 28)``, ink bright, values in ``[0, 1]``; output
        ``(N, 10)`` logits, one per digit.

    Example:
        >>> import torch
        >>> net = DigitsCNN()
        >>> net.features[3]
        Conv2d(8, 16, kernel_size=(5, 5), stride=(1, 1))
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    #: The input of one digit, read by convlens's NeuronVisualizer when no size is given.
    input_shape: ClassVar[tuple[int, ...]] = (1, 1, 28, 28)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the ten digits."""
        out = self.features(x)
        return self.classifier(torch.flatten(out, 1))  # type: ignore[no-any-return]


def upsample_digits(images: Tensor) -> Tensor:
    """Turn raw 8x8 digits (values 0 to 16) into the 28x28 images the model reads.

    Scales to ``[0, 1]`` (divides by 16), then resizes bilinearly
    (``align_corners=False``) and clips to ``[0, 1]``. The training script and
    :func:`load_digits_dataset` both call this, so the model sees at run time
    exactly what it was trained on.

    Args:
        images: Raw digits, any real dtype, values 0 to 16.

    Returns:
        float32 images in ``[0, 1]``, ink bright, on the input's device.

    Raises:
        InvalidTypeError: ``images`` is not a tensor.
        ShapeError: ``images`` is not ``(N, 8, 8)``.

    Shape:
        Input ``(N, 8, 8)``; output ``(N, 1, 28, 28)``.

    Example:
        >>> import torch
        >>> out = upsample_digits(torch.full((2, 8, 8), 16, dtype=torch.uint8))
        >>> out.shape, out.dtype, torch.allclose(out, torch.ones(2, 1, 28, 28))
        (torch.Size([2, 1, 28, 28]), torch.float32, True)
    """
    if not isinstance(images, Tensor):
        raise InvalidTypeError(f"images must be a torch.Tensor; got {type(images).__name__}.")
    if images.dim() != 3 or tuple(images.shape[1:]) != (8, 8):
        raise ShapeError(f"images must have shape (N, 8, 8); got {tuple(images.shape)}.")
    scaled = images.to(torch.float32).unsqueeze(1) / DIGITS_INK_MAX
    resized = F.interpolate(scaled, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    return resized.clamp_(0.0, 1.0)


def load_digits_cnn() -> DigitsCNN:
    """The trained :class:`DigitsCNN` that ships with convlens, on the CPU, in eval mode.

    The global random state is left as it was.

    Returns:
        The model, with the weights ``scripts/train_digits.py`` produced.

    Example:
        >>> model = load_digits_cnn()
        >>> model.training, model.classifier[2]
        (False, Linear(in_features=64, out_features=10, bias=True))
    """
    with resources.files("convlens").joinpath(_WEIGHTS).open("rb") as file:
        state = torch.load(file, weights_only=True, map_location="cpu")
    with torch.random.fork_rng(devices=[]):
        model = DigitsCNN()
    model.load_state_dict(state)
    return model.eval()


def load_digits_dataset(split: Split = "test") -> TensorDataset:
    """scikit-learn's 1797 handwritten digits, upsampled as the model was trained.

    The split is the one the shipped model was trained and evaluated on: a
    stratified 80/20 split (1437 train, 360 test) made once by
    ``scripts/train_digits.py``. Samples keep their order in
    ``sklearn.datasets.load_digits``.

    Args:
        split: ``"train"``, ``"test"`` (held out from training) or ``"all"``.

    Returns:
        A dataset of ``(image, label)``: images float32 ``(N, 1, 28, 28)`` in
        ``[0, 1]``, ink bright; labels int64 ``(N,)``, the digit 0 to 9.

    Raises:
        InvalidArgumentError: An unknown split.

    Example:
        >>> [len(load_digits_dataset(s)) for s in ("train", "test", "all")]
        [1437, 360, 1797]
        >>> image, label = load_digits_dataset("all")[0]
        >>> image.shape, label.dtype
        (torch.Size([1, 28, 28]), torch.int64)
    """
    check_choice("split", split, _SPLITS)
    with resources.files("convlens").joinpath(_DATA).open("rb") as file, np.load(file) as data:
        raw = torch.from_numpy(np.asarray(data["images"], dtype=np.uint8))
        labels = torch.from_numpy(np.asarray(data["labels"], dtype=np.int64))
        test = torch.from_numpy(np.asarray(data["test"], dtype=np.bool_))
    if split == "train":
        raw, labels = raw[~test], labels[~test]
    elif split == "test":
        raw, labels = raw[test], labels[test]
    return TensorDataset(upsample_digits(raw), labels)
