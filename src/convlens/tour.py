"""The lecture tour: one command that reproduces every figure of the CNN lecture.

``convlens tour --out tour/`` walks the lecture in order and writes each
figure and table into ``out``: AlexNet layer by layer with the convolution
arithmetic, the 6x6 convolution example, learned filters, feature maps,
"what does a CNN learn" by gradient ascent on the digits CNN, Grad-CAM on
AlexNet, VGG16 and ResNet18 (the homework's table of predicted classes), and
AlphaGo's policy network. Without the pretrained ImageNet weights it uses
seeded random weights and says so on every figure.

Example:
    >>> import tempfile
    >>> from convlens.tour import run_tour
    >>> with tempfile.TemporaryDirectory() as out:
    ...     result = run_tour(out, sections=["alphago"], echo=lambda line: None)
    ...     [path.name for path in result.files]
    ['alphago_policy_shapes.md']
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

from convlens import images, zoo
from convlens.cam import GradCAM
from convlens.errors import InvalidArgumentError, RandomWeightsWarning, did_you_mean
from convlens.maximize import ActivationMaximizer, MaximizationResult
from convlens.neurons import NeuronVisualizer
from convlens.objectives import channel, class_logit, l1
from convlens.render import FilterRenderer, plot_cam, plot_feature_maps, plot_images
from convlens.shapes import trace_shapes
from convlens.tap import LayerTap

__all__ = ["SECTIONS", "TourResult", "run_tour"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TourResult:
    """What the tour wrote.

    Attributes:
        out: The output folder.
        files: Every file written, in order.
        warnings: Warnings met on the way (such as random weights).
    """

    out: Path
    files: tuple[Path, ...]
    warnings: tuple[str, ...]


@dataclass(slots=True)
class _Tour:
    out: Path
    weights: str
    seed: int
    quick: bool
    echo: Callable[[str], None]
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    models: dict[str, nn.Module] = field(default_factory=dict)

    def model(self, spec: str) -> nn.Module:
        if spec not in self.models:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RandomWeightsWarning)
                self.models[spec] = zoo.load(spec, weights=self.weights, seed=self.seed)
            for warning in caught:
                self.warn(str(warning.message))
        return self.models[spec]

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.echo(f"warning: {message}")

    def save(self, name: str, content: Figure | str) -> None:
        path = self.out / name
        if isinstance(content, Figure):
            content.savefig(path, dpi=90)
        else:
            path.write_text(content if content.endswith("\n") else content + "\n")
        self.files.append(path)
        self.echo(f"  wrote {path}")


def _alexnet_shapes(tour: _Tour) -> None:
    tour.echo("7.1 AlexNet layer by layer: every output size from the formula")
    report = trace_shapes(tour.model("torchvision:alexnet"), (1, 3, 224, 224))
    lecture = {"features.0": 55, "features.2": 27, "features.3": 27, "features.5": 13, "features.6": 13,
               "features.8": 13, "features.10": 13, "features.12": 6}  # fmt: skip
    lines = [f"{name}: {report[name].output_shape[-1]} (lecture: {size})" for name, size in lecture.items()]
    flat = report["classifier.1"].input_shape[-1]
    lines.append(f"flatten: 256 x 6 x 6 = {flat} (lecture: 9216)")
    for line in lines:
        tour.echo(f"  {line}")
    tour.save("alexnet_shapes.md", report.to_markdown() + "\n\n" + "\n".join(f"- {line}" for line in lines))


def _convolution(tour: _Tour) -> None:
    tour.echo("7.1 The 6x6 image, two 3x3 filters, stride 1 and 2, then 2x2 max pooling")
    image = torch.tensor(
        [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0],
         [1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0]],
        dtype=torch.float32,
    )  # fmt: skip
    filters = torch.tensor(
        [[[[1, -1, -1], [-1, 1, -1], [-1, -1, 1]]], [[[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]]]],
        dtype=torch.float32,
    )
    text = []
    for stride in (1, 2):
        conv = nn.Conv2d(1, 2, 3, stride=stride, bias=False)
        with torch.no_grad():
            conv.weight.copy_(filters)
        net = nn.Sequential(conv, nn.MaxPool2d(2))
        acts = LayerTap(net, ["0", "1"] if stride == 1 else ["0"]).run(image[None, None])
        for k in range(2):
            text.append(f"filter {k + 1}, stride {stride}:\n{_grid(acts['0'][0, k])}")
            if stride == 1:
                text.append(f"filter {k + 1}, stride 1, 2x2 max pooling:\n{_grid(acts['1'][0, k])}")
    tour.save("convolution_6x6.txt", "\n\n".join(text))
    tour.echo("  " + text[0].replace("\n", "\n  "))


def _grid(t: torch.Tensor) -> str:
    return "\n".join(" ".join(f"{int(v):3d}" for v in row) for row in t.tolist())


def _filters_and_maps(tour: _Tour) -> None:
    tour.echo("7.1-7.2 Learned filters and feature maps of AlexNet")
    model = tour.model("torchvision:alexnet")
    note = zoo.weights_note(model)
    tour.save("alexnet_filters.png", FilterRenderer(model, "features.0", note=note).plot(n=32, cols=8))
    x = images.preprocess(images.sample_image(), preset="lecture")
    layers = ["features.0", "features.2", "features.3", "features.5", "features.6", "features.8"]
    acts = LayerTap(model, layers).run(x)
    for layer in layers:
        a = acts[layer][0]
        title = f"AlexNet {layer} ({type(model.get_submodule(layer)).__name__}): {tuple(a.shape)}"
        tour.save(f"alexnet_maps_{layer}.png", plot_feature_maps(a, n=32, cols=8, title=title, note=note))


def _digits(tour: _Tour) -> None:
    tour.echo("7.2 The digits CNN: filters and feature maps")
    model = tour.model("convlens:digits_cnn")
    digit = zoo.digits_dataset("test")[0][0][None]
    tour.save("digits_filters.png", FilterRenderer(model, "features.0").plot(n=8, cols=8))
    acts = LayerTap(model, ["features.0", "features.3"]).run(digit)
    for layer in ("features.0", "features.3"):
        tour.save(f"digits_maps_{layer}.png", plot_feature_maps(acts[layer][0], n=16, cols=8))


_CAM_MODELS = (("torchvision:alexnet", "features.12"), ("torchvision:vgg16", "features.30"),
               ("torchvision:resnet18", "layer4"))  # fmt: skip


def _gradcam(tour: _Tour) -> None:
    tour.echo("7.3 Grad-CAM on AlexNet, VGG16 and ResNet18 (HW4: the class each predicts)")
    picture = images.sample_image()
    x = images.preprocess(picture)
    names = images.imagenet_classes()
    rows = ["| model | layer | predicted class index | class | logit |", "|---|---|---:|---|---:|"]
    for spec, layer in _CAM_MODELS:
        model = tour.model(spec)
        out = GradCAM(model, layer)(x)
        index = int(out.targets[0]) if out.targets is not None else -1
        name = spec.split(":")[1]
        title = f"{name} {layer}: {names[index]} ({index}), logit {float(out.scores[0]):.2f}"
        figure = plot_cam(images.deprocess(x), out.maps[0], title=title, note=zoo.weights_note(model))
        tour.save(f"gradcam_{name}.png", figure)
        rows.append(f"| {name} | {layer} | {index} | {names[index]} | {float(out.scores[0]):.2f} |")
        tour.echo(f"  {name}: predicted {index} ({names[index]})")
    random = [spec.split(":")[1] for spec, _ in _CAM_MODELS if zoo.weights_note(tour.model(spec))]
    if random:
        rows.append(
            f"\n**{', '.join(random)}: random weights (pretrained weights unavailable), so these "
            "predictions say nothing about the picture.**"
        )
    tour.save("hw4_predictions.md", "\n".join(rows))


def _learn(tour: _Tour) -> None:
    tour.echo("7.2 What does a CNN learn? Gradient ascent on the input (digits CNN, then AlexNet)")
    model = tour.model("convlens:digits_cnn")
    steps = 32 if tour.quick else 256
    digits = {"steps": steps, "seed": tour.seed, "value_range": (0.0, 1.0)}
    nv = NeuronVisualizer(model, "features.3")
    res = nv.maximize(range(16), **digits)  # type: ignore[arg-type]
    tour.save(
        "learn_digits_conv_channels.png",
        plot_images(
            res.image, [f"channel {i}" for i in range(16)], title="digits CNN features.3: x* = argmax a^k"
        ),
    )
    res = NeuronVisualizer(model, "classifier.0").maximize(range(16), **digits)  # type: ignore[arg-type]
    tour.save(
        "learn_digits_neurons.png",
        plot_images(
            res.image, [f"neuron {i}" for i in range(16)], title="digits CNN classifier.0: x* = argmax a^j"
        ),
    )
    for weight, name in ((0.0, "learn_digits_classes.png"), (100.0, "learn_digits_classes_l1.png")):
        objective = class_logit(range(10)) - weight * l1() if weight else class_logit(range(10))
        am = ActivationMaximizer(model, objective, input_shape=(10, 1, 28, 28), **digits)  # type: ignore[arg-type]
        res = am.run()
        with torch.no_grad():
            predicted = model(res.image).argmax(1).tolist()
        titles = [f"class {i}: says {p}" for i, p in enumerate(predicted)]
        kind = "y^i" if not weight else f"y^i - {weight:g} mean|x|  (L1: no ink)"
        tour.save(name, plot_images(res.image, titles, cols=5, title=f"digits CNN: x* = argmax {kind}"))
        tour.echo(f"  {kind}: the network calls the ten images {predicted}")
    top = NeuronVisualizer(model, "classifier.0").top_examples(zoo.digits_dataset("test"), neuron=3, k=9)
    tour.save(
        "learn_digits_top_examples.png",
        plot_images(
            top.inputs,
            [f"#{int(i)}" for i in top.indices],
            cols=9,
            title="test digits that excite classifier.0 neuron 3 most",
        ),
    )
    alexnet = tour.model("torchvision:alexnet")
    steps = 16 if tour.quick else 128
    # The lecture's preprocessing (mean = std = 0.5) and the recommended recipe: a picture in
    # [0, 1], a decorrelated spectrum decaying as photographs' do, seen through random crops.
    channels = list(range(8))
    objective = channel("features.10", channels)
    shape = (len(channels), 3, 224, 224)
    res = ActivationMaximizer(
        alexnet, objective, input_shape=shape, steps=steps, seed=tour.seed, normalize="lecture"
    ).run()
    titles = [f"channel {c}" for c in channels]
    tour.save(
        "learn_alexnet_channels.png", _pictures(res, titles, "AlexNet features.10: x* = argmax a^k", alexnet)
    )
    names = images.imagenet_classes()
    shape = (len(_CLASSES), 3, 224, 224)
    am = ActivationMaximizer(
        alexnet,
        class_logit(list(_CLASSES)),
        input_shape=shape,
        steps=steps,
        seed=tour.seed,
        normalize="lecture",
    )
    res = am.run()
    with torch.no_grad():
        says = alexnet(res.image).argmax(1).tolist()
    titles = [f"{names[c]} ({c})\nsays {names[p]}" for c, p in zip(_CLASSES, says, strict=True)]
    tour.save("learn_alexnet_classes.png", _pictures(res, titles, "AlexNet: x* = argmax y^c", alexnet))


#: ImageNet classes whose pictures the tour draws: goldfinch, peacock, jellyfish, flamingo,
#: monarch, sports car, strawberry, volcano.
_CLASSES = (11, 84, 107, 130, 323, 817, 949, 980)


def _pictures(res: MaximizationResult, titles: list[str], title: str, model: nn.Module) -> Figure:
    batch = res.image if res.picture is None else res.picture  # with normalize: the picture in [0, 1]
    pictures = [images.to_rgb_array(p.cpu()) for p in batch]
    return plot_images(pictures, titles, cols=4, title=title, note=zoo.weights_note(model), panel_size=2.5)


def _alphago(tour: _Tour) -> None:
    tour.echo("AlphaGo's policy network: 19x19 at every layer, k = 192")
    report = trace_shapes(zoo.alphago_policy(192), (1, 48, 19, 19))
    tour.save("alphago_policy_shapes.md", report.to_markdown())


#: The tour's sections, in lecture order.
SECTIONS: dict[str, Callable[[_Tour], None]] = {
    "shapes": _alexnet_shapes,
    "convolution": _convolution,
    "filters": _filters_and_maps,
    "digits": _digits,
    "learn": _learn,
    "gradcam": _gradcam,
    "alphago": _alphago,
}


def run_tour(
    out: str | Path = "tour",
    *,
    sections: str | Sequence[str] | None = None,
    weights: str = "auto",
    seed: int = 0,
    quick: bool = False,
    echo: Callable[[str], None] = print,
) -> TourResult:
    """Reproduce the lecture's figures and tables into ``out``.

    Args:
        out: Folder to write into (created if missing).
        sections: Which sections, by name (default: all, in order): see :data:`SECTIONS`.
        weights: As :func:`convlens.zoo.load` (``"auto"``: pretrained when cached).
        seed: Seed of random weights and of every optimization.
        quick: Fewer optimization steps (for a fast look or a test).
        echo: Where progress lines go.

    Returns:
        The files written and the warnings met.

    Raises:
        InvalidArgumentError: An unknown section name.
    """
    chosen = (
        list(SECTIONS) if sections is None else [sections] if isinstance(sections, str) else list(sections)
    )
    for name in chosen:
        if name not in SECTIONS:
            raise InvalidArgumentError(
                f"the tour has no section {name!r}; choose from {', '.join(map(repr, SECTIONS))}."
                f"{did_you_mean(name, SECTIONS)}"
            )
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    tour = _Tour(out=path, weights=weights, seed=seed, quick=quick, echo=echo)
    with torch.random.fork_rng(devices=[]):  # the global random state is the caller's
        torch.manual_seed(seed)
        for name in chosen:
            SECTIONS[name](tour)
    return TourResult(out=path, files=tuple(tour.files), warnings=tuple(tour.warnings))
