"""The tour's feature accentuations: what in a real picture would make it more of a class.

After "what does a CNN learn?" by gradient ascent from noise, the same ascent from a real picture
(:func:`convlens.accentuate`): the digits CNN turns test digits into the digit they are not, while
staying close to them in its first conv layer, and AlexNet makes the tour's photograph more of two
ImageNet classes while staying close to it at ``features.7``. Beside each, where the optimization
pushed (the importance mask as transparency, :func:`convlens.render.masked`).

Example:
    >>> DIGITS
    ((3, 8), (1, 7), (2, 3))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from matplotlib.figure import Figure
from torch import nn

from convlens.apps.page import Check
from convlens.featureviz.accentuate import accentuate
from convlens.featureviz.objectives import class_logit
from convlens.models import images, zoo
from convlens.models.images import ImageSource
from convlens.render import masked, plot_images

__all__ = [
    "ALEXNET_CLASSES",
    "ALEXNET_LAYER",
    "DIGITS",
    "DIGITS_LAYER",
    "DIGITS_WEIGHT",
    "Tour",
    "add_items",
    "section",
]

#: Test digits to accentuate: (the digit, the class it is pushed towards).
DIGITS = ((3, 8), (1, 7), (2, 3))
#: The layer whose representation of the seed the digits' accentuations stay close to, and how
#: strongly (a logit rises by tens: at the default weight of 10 the digit is lost in noise).
DIGITS_LAYER = "features.1"
DIGITS_WEIGHT = 100.0
#: The tour's heading the items go under (``apps/tour.py``'s LEARN).
LEARN = "7.2 What does CNN learn"
#: AlexNet's accentuations: military uniform and Windsor tie; the layer they stay close at.
ALEXNET_CLASSES = (652, 906)
ALEXNET_LAYER = "features.7"


class Tour(Protocol):
    """What the section needs of the tour (``apps/tour.py``'s ``_Tour``): its page, models, settings, picture."""

    @property
    def seed(self) -> int: ...  # noqa: D102

    @property
    def quick(self) -> bool: ...  # noqa: D102

    @property
    def echo(self) -> Callable[[str], None]: ...  # noqa: D102

    def figure(self, heading: str, name: str, content: Figure, title: str, call: str, **extra: Any) -> None:
        """Save a figure and put it on the page under ``heading``."""

    def model(self, spec: str) -> nn.Module:
        """The model of a zoo spec, loaded once."""

    def picture(self) -> ImageSource:
        """The picture the tour looks at."""


def section(tour: Tour) -> None:
    """The tour's section: both items under 7.2, 64 steps (16 with ``quick``)."""
    tour.echo("Feature accentuation: gradient ascent from a real picture (digits CNN, then AlexNet)")
    add_items(
        tour, tour.model("convlens:digits_cnn"), tour.model("torchvision:alexnet"), heading=LEARN,
        steps=16 if tour.quick else 64, seed=tour.seed, picture=tour.picture(),
    )  # fmt: skip


def add_items(
    tour: Tour,
    digits: nn.Module,
    alexnet: nn.Module,
    *,
    heading: str,
    steps: int,
    seed: int,
    picture: ImageSource,
) -> None:
    """Put the digits' and AlexNet's accentuations on the tour's page under ``heading``."""
    data = zoo.digits_dataset("test")
    firsts: dict[int, torch.Tensor] = {}
    for i in range(len(data)):
        x, y = data[i]
        firsts.setdefault(int(y), x)
    seeds = torch.stack([firsts[d] for d, _ in DIGITS])
    targets = [t for _, t in DIGITS]
    res = accentuate(
        digits,
        class_logit(targets),
        seeds,
        layer=DIGITS_LAYER,
        weight=DIGITS_WEIGHT,
        steps=steps,
        seed=seed,
        value_range=(0.0, 1.0),
        param="fft",
    )
    with torch.no_grad():
        before = digits(seeds).argmax(1).tolist()
        after = digits(res.image).argmax(1).tolist()
    assert res.mask is not None  # every optimization accumulates one
    shown: list[ImageSource] = []
    titles: list[str] = []
    for i, (d, t) in enumerate(DIGITS):
        shown += [
            seeds[i],
            res.image[i].clamp(0, 1),
            masked(res.image[i].clamp(0, 1).expand(3, -1, -1), res.mask[i]),
        ]
        titles += [f"a {d} (says {before[i]})", f"towards {t}: says {after[i]}", "where it changed most"]
    figure = plot_images(shown, titles, cols=3, title="digits accentuated towards another digit")
    reads = sum(a == t for a, t in zip(after, targets, strict=True))
    tour.figure(
        heading, "learn_digits_accentuated.png", figure,
        "Feature accentuation: what would make this digit another one (starting at the digit, staying close at features.1)",
        f"cl.accentuate(digits, ob.class_logit({targets}), threes_ones_twos, layer={DIGITS_LAYER!r},\n"
        f'              weight={DIGITS_WEIGHT:g}, steps={steps}, value_range=(0, 1), param="fft")',
        checks=[Check("accentuated digits read as their target", str(reads), str(len(DIGITS)), "a small, local change")],
    )  # fmt: skip
    x = images.preprocess(picture, preset="lecture")
    start = (
        (x * 0.5 + 0.5)
        .clamp(0, 1)
        .expand(len(ALEXNET_CLASSES), -1, -1, -1)
        .to(next(alexnet.parameters()).device)
    )
    res = accentuate(
        alexnet,
        class_logit(list(ALEXNET_CLASSES)),
        start,
        layer=ALEXNET_LAYER,
        steps=steps,
        seed=seed,
        normalize="lecture",
    )
    assert res.picture is not None
    assert res.mask is not None
    names = images.imagenet_classes()
    with torch.no_grad():
        p0 = alexnet((start - 0.5) / 0.5).softmax(1)
        p1 = alexnet(res.image).softmax(1)
    shown = [start[0].cpu()]
    titles = ["the picture"]
    for i, c in enumerate(ALEXNET_CLASSES):
        shown += [res.picture[i].cpu(), masked(res.picture[i].cpu(), res.mask[i].cpu())]
        titles += [
            f"more {names[c]}: p {float(p0[i, c]):.2f} -> {float(p1[i, c]):.2f}",
            "where it changed most",
        ]
    figure = plot_images(
        shown,
        titles,
        cols=5,
        title="AlexNet: the picture accentuated towards two classes",
        note=zoo.weights_note(alexnet),
        panel_size=2.5,
    )
    tour.figure(
        heading, "learn_alexnet_accentuated.png", figure,
        f"Feature accentuation on AlexNet: the picture made more of two classes, staying close at {ALEXNET_LAYER}",
        f"cl.accentuate(model, ob.class_logit({list(ALEXNET_CLASSES)}), pictures, layer={ALEXNET_LAYER!r},\n"
        f'              normalize="lecture", steps={steps}).picture',
    )  # fmt: skip
