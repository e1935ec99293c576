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
    >>> from convlens.apps.tour import run_tour
    >>> with tempfile.TemporaryDirectory() as out:
    ...     result = run_tour(out, sections=["alphago"], echo=lambda line: None)
    ...     [path.name for path in result.files]
    ['alphago_policy_shapes.md', 'alphago_k.md', 'index.html']
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from convlens.apps import tour_accent, tour_concepts
from convlens.apps.atlas import build_atlas
from convlens.apps.page import Check, Item, TourPage
from convlens.attribution.cam import GradCAM
from convlens.core.checks import check_device
from convlens.core.shapes import trace_shapes
from convlens.core.tap import LayerTap
from convlens.errors import InvalidArgumentError, RandomWeightsWarning, did_you_mean
from convlens.featureviz.maximize import ActivationMaximizer, MaximizationResult
from convlens.featureviz.neurons import NeuronVisualizer
from convlens.featureviz.objectives import channel, class_logit, l1
from convlens.models import images, zoo
from convlens.render import FilterRenderer, plot_cam, plot_feature_maps, plot_images

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


@dataclass(slots=True, kw_only=True)
class _Tour(TourPage):
    weights: str
    seed: int
    quick: bool
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    image: Path | None = None
    warnings: list[str] = field(default_factory=list)
    models: dict[str, nn.Module] = field(default_factory=dict)

    def model(self, spec: str) -> nn.Module:
        if spec not in self.models:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RandomWeightsWarning)
                self.models[spec] = zoo.load(spec, weights=self.weights, seed=self.seed).to(self.device)
            for warning in caught:
                self.warn(str(warning.message))
        return self.models[spec]

    def picture(self) -> Image.Image:
        """The picture the tour looks at: the user's (``--image``) or the sample photo."""
        return images.load_image(self.image) if self.image is not None else images.sample_image()

    def picture_name(self) -> str:
        return "images.sample_image()" if self.image is None else f"images.load_image({str(self.image)!r})"

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.echo(f"warning: {message}")


CNN = "7.1 CNN"
LEARN = tour_accent.LEARN
CAM = "7.3 Grad-CAM"
HW4 = "HW4: the class each network predicts"
ALPHAGO = "AlphaGo's policy network"
ATLAS = "An atlas of the digits CNN"


def _alexnet_shapes(tour: _Tour) -> None:
    tour.echo("7.1 AlexNet layer by layer: every output size from the formula")
    model = tour.model("torchvision:alexnet")
    note = zoo.weights_note(model)
    conv1 = "Conv2d(3, 64, kernel_size=(11, 11), stride=(4, 4), padding=(2, 2))"
    tour.table(CNN, "alexnet.txt", str(model), "AlexNet, printed: two sections, features and classifier",
               'model = cl.zoo.load("torchvision:alexnet", weights="auto").eval()\nprint(model)',
               checks=[Check("features[0]", str(model.get_submodule("features.0")), conv1),
                       Check("features[6]", _short(model.get_submodule("features.6")), "Conv2d(192, 384)")])  # fmt: skip
    _preprocessing(tour)
    report = trace_shapes(model, (1, 3, 224, 224))
    conv = model.get_submodule("features.0")
    weight = tuple(conv.weight.shape) if isinstance(conv, nn.Conv2d) else ()
    first = report["features.0"]
    tour.table(CNN, "alexnet_conv1.txt",
               f"conv1 = {conv1}\nweight {weight}: 64 filters, 3 channels (RGB), 11 x 11\n"
               f"output {first.output_shape}\n\nH_out = floor((H_in + 2 * padding - dilation * (kernel_size - 1) - 1)"
               f" / stride) + 1\n      = {first.formula}",
               "conv1, its weight shape and the H_out formula",
               'conv1 = model.features[0]\nconv1.weight.shape\ncl.trace_shapes(model, (1, 3, 224, 224))["features.0"].formula',
               checks=[Check("weight", str(weight), "(64, 3, 11, 11)"),
                       Check("conv1 output", str(first.output_shape), "(1, 64, 55, 55)"),
                       Check("(224 + 2*2 - 11) / 4 + 1", "55", "55.25",
                             "the lecture's 55.25 is before the floor; PyTorch takes floor(...) = 55")], note=note)  # fmt: skip
    lecture = {"features.0": 55, "features.2": 27, "features.3": 27, "features.5": 13, "features.6": 13,
               "features.8": 13, "features.10": 13, "features.12": 6}  # fmt: skip
    checks = [Check(name, str(report[name].output_shape[-1]), str(size)) for name, size in lecture.items()]
    checks.append(Check("features.6 channels", str(report["features.6"].output_shape[1]), "394",
                        "a slip in the lecture: it prints torch.Size([1, 384, 13, 13]) and then says 394"))  # fmt: skip
    checks.append(Check("flatten: 256 x 6 x 6", str(report["classifier.1"].input_shape[-1]), "9216"))
    lines = [f"{c.what}: {c.ours} (lecture: {c.lecture})" for c in checks]
    for line in lines:
        tour.echo(f"  {line}")
    tour.table(CNN, "alexnet_shapes.md", report.to_markdown(), "Every layer's output size, from the formula, without compute",
               "print(cl.trace_shapes(model, (1, 3, 224, 224)))", checks=checks)  # fmt: skip


def _short(module: nn.Module) -> str:
    conv = module if isinstance(module, nn.Conv2d) else None
    return f"Conv2d({conv.in_channels}, {conv.out_channels})" if conv is not None else type(module).__name__


def _preprocessing(tour: _Tour) -> None:
    picture = tour.picture()
    recipe = images.PRESETS["lecture"]
    w, h = picture.size
    scale = recipe.resize / min(w, h)
    resized = (round(w * scale), round(h * scale))
    x = images.preprocess(picture, preset="lecture")
    steps = (
        f"picture: {w} x {h} (width x height), RGB\n"
        f"Resize(224): short side to 224 -> {resized[0]} x {resized[1]}\n"
        "CenterCrop(224) -> 224 x 224\n"
        f"ToTensor, Normalize(mean=0.5, std=0.5) -> {tuple(x.shape[1:])}, values in [{float(x.min()):.2f}, {float(x.max()):.2f}]\n"
        f"unsqueeze(0) -> {tuple(x.shape)}"
    )
    tour.table(CNN, "preprocessing.txt", steps, "Image pre-processing: Compose(Resize(224), CenterCrop(224), ToTensor, Normalize)",
               f'x = cl.images.preprocess({tour.picture_name()}, preset="lecture")   # (1, 3, 224, 224)',
               checks=[Check("after the transforms", str(tuple(x.shape[1:])), "(3, 224, 224)"),
                       Check("after unsqueeze(0)", str(tuple(x.shape)), "(1, 3, 224, 224)")])  # fmt: skip


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
    text = [f"6 x 6 image:\n{_grid(image)}", *(f"filter {k + 1}:\n{_grid(filters[k, 0])}" for k in range(2))]
    results: dict[tuple[int, int, bool], torch.Tensor] = {}
    for stride in (1, 2):
        conv = nn.Conv2d(1, 2, 3, stride=stride, bias=False)
        with torch.no_grad():
            conv.weight.copy_(filters)
        net = nn.Sequential(conv, nn.MaxPool2d(2))
        acts = LayerTap(net, ["0", "1"] if stride == 1 else ["0"]).run(image[None, None])
        for k in range(2):
            results[k, stride, False] = acts["0"][0, k]
            text.append(f"filter {k + 1}, stride {stride}:\n{_grid(acts['0'][0, k])}")
            if stride == 1:
                results[k, stride, True] = acts["1"][0, k]
                text.append(f"filter {k + 1}, stride 1, 2x2 max pooling:\n{_grid(acts['1'][0, k])}")
    grids = [("6 x 6 image", image.int().tolist())]
    grids += [(f"filter {k + 1}", filters[k, 0].int().tolist()) for k in range(2)]
    grids += [(f"filter {k + 1}, stride {stride}" + (", 2 x 2 max pooling" if pooled else ""), t.int().tolist())
              for (k, stride, pooled), t in sorted(results.items())]  # fmt: skip
    lecture = "[[3, -1, -3, -1], [-3, 1, 0, -3], [-3, -3, 0, 1], [3, -2, -2, -1]]"
    ours = str(results[0, 1, False].int().tolist())
    tour.table(CNN, "convolution_6x6.txt", "\n\n".join(text), "The 6 x 6 example: two 3 x 3 filters, stride 1 and 2, then 2 x 2 max pooling",
               'conv = nn.Conv2d(1, 2, 3, stride=1, bias=False)   # the two filters copied in\n'
               'acts = cl.LayerTap(nn.Sequential(conv, nn.MaxPool2d(2)), ["0", "1"]).run(image[None, None])',
               checks=[Check("filter 1, stride 1", ours, lecture)], grids=grids)  # fmt: skip
    tour.echo("  " + text[3].replace("\n", "\n  "))


def _grid(t: torch.Tensor) -> str:
    return "\n".join(" ".join(f"{int(v):3d}" for v in row) for row in t.tolist())


#: AlexNet's layers whose feature maps the tour shows, with the lecture's words for them.
_MAPS = {
    "features.0": "after conv1",
    "features.1": "after conv1's ReLU",
    "features.2": "after the 1st max pooling",
    "features.3": "after conv2",
    "features.5": "after the 2nd max pooling",
    "features.6": "after conv3",
    "features.8": 'features[7:9], which the lecture calls "max pooling after the 3rd convolution": '
    "it is ReLU and conv4 (AlexNet has no pooling there)",
}


#: The shapes the lecture prints for them.
_PRINTED = {
    "features.0": "(1, 64, 55, 55)",
    "features.6": "(1, 384, 13, 13)",
    "features.8": "(1, 256, 13, 13)",
}


def _filters_and_maps(tour: _Tour) -> None:
    tour.echo("7.1-7.2 Learned filters and feature maps of AlexNet")
    model = tour.model("torchvision:alexnet")
    note = zoo.weights_note(model)
    tour.figure(CNN, "alexnet_filters.png", FilterRenderer(model, "features.0", note=note).plot(n=32, cols=8),
                "conv1's 64 learned filters (the first 32), as RGB pictures",
                'cl.FilterRenderer(model, "features.0").plot(n=32, cols=8)', note=note)  # fmt: skip
    x = images.preprocess(tour.picture(), preset="lecture").to(tour.device)
    acts = LayerTap(model, list(_MAPS)).run(x)
    report = trace_shapes(model, tuple(x.shape))
    for layer, words in _MAPS.items():
        # The lecture's H_out formula beside the maps it explains, with this layer's own numbers.
        formula = report[layer].formula
        text = f"H_out = floor((H_in + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1\n      = {formula}"
        a = acts[layer][0]
        kind = type(model.get_submodule(layer)).__name__
        title = f"AlexNet {layer} ({kind}): {tuple(a.shape)}"
        tour.figure(CNN, f"alexnet_maps_{layer}.png", plot_feature_maps(a, n=32, cols=8, title=title, note=note),
                    f"Feature maps {words}: {tuple(acts[layer].shape)}",
                    f'acts = cl.LayerTap(model, ["{layer}"]).run(x)\ncl.plot_feature_maps(acts["{layer}"][0], n=32, cols=8)',
                    checks=[Check("shape", str(tuple(acts[layer].shape)), _PRINTED[layer])] if layer in _PRINTED else [],
                    text=text if formula else None, note=note)  # fmt: skip


def _digits(tour: _Tour) -> None:
    tour.echo("7.2 The digits CNN: filters and feature maps")
    model = tour.model("convlens:digits_cnn")
    digit = zoo.digits_dataset("test")[0][0][None].to(tour.device)
    tour.figure(LEARN, "digits_filters.png", FilterRenderer(model, "features.0").plot(n=8, cols=8),
                "The digits CNN's first filters (it stands in for the lecture's MNIST CNN)",
                'digits = cl.zoo.digits_cnn()\ncl.FilterRenderer(digits, "features.0").plot(n=8, cols=8)')  # fmt: skip
    acts = LayerTap(model, ["features.0", "features.3"]).run(digit)
    for layer in ("features.0", "features.3"):
        tour.figure(LEARN, f"digits_maps_{layer}.png", plot_feature_maps(acts[layer][0], n=16, cols=8),
                    f"Feature maps of a test digit at {layer}: {tuple(acts[layer].shape)}",
                    f'acts = cl.LayerTap(digits, ["{layer}"]).run(digit)\ncl.plot_feature_maps(acts["{layer}"][0], n=16, cols=8)')  # fmt: skip


_CAM_MODELS = (("torchvision:alexnet", "features.12"), ("torchvision:vgg16", "features.30"),
               ("torchvision:resnet18", "layer4"))  # fmt: skip


def _gradcam(tour: _Tour) -> None:
    tour.echo("7.3 Grad-CAM on AlexNet, VGG16 and ResNet18 (HW4: the class each predicts)")
    x = images.preprocess(tour.picture()).to(tour.device)
    names = images.imagenet_classes()
    rows = ["| model | layer | predicted class index | class | logit |", "|---|---|---:|---|---:|"]
    for spec, layer in _CAM_MODELS:
        model = tour.model(spec)
        out = GradCAM(model, layer)(x)
        index = int(out.targets[0]) if out.targets is not None else -1
        name = spec.split(":")[1]
        note = zoo.weights_note(model)
        title = f"{name} {layer}: {names[index]} ({index}), logit {float(out.scores[0]):.2f}"
        figure = plot_cam(images.deprocess(x), out.maps[0], title=title, note=note)
        tour.figure(CAM, f"gradcam_{name}.png", figure, f"{name}: where {layer} sees \"{names[index]}\"",
                    f'x = cl.images.preprocess({tour.picture_name()})\nout = cl.GradCAM(cl.zoo.load("{spec}"), "{layer}")(x)\n'
                    "cl.overlay(cl.images.deprocess(x), out.maps[0])", note=note)  # fmt: skip
        rows.append(f"| {name} | {layer} | {index} | {names[index]} | {float(out.scores[0]):.2f} |")
        tour.echo(f"  {name}: predicted {index} ({names[index]})")
    random = [spec.split(":")[1] for spec, _ in _CAM_MODELS if zoo.weights_note(tour.model(spec))]
    note = (
        f"{', '.join(random)}: random weights, so these predictions say nothing about the picture."
        if random
        else None
    )
    tour.save("hw4_predictions.md", "\n".join(rows) + (f"\n\n**{note}**" if note else ""))
    call = "out = cl.GradCAM(model, layer)(x)   # target=None: the predicted class\nout.targets, out.scores"
    item = Item("The class each network predicts for the picture", call=call, text="\n".join(rows), note=note)
    tour.part(HW4).items.append(item)


def _learn(tour: _Tour) -> None:
    tour.echo("7.2 What does a CNN learn? Gradient ascent on the input (digits CNN, then AlexNet)")
    model = tour.model("convlens:digits_cnn")
    steps = 32 if tour.quick else 256
    digits = {"steps": steps, "seed": tour.seed, "value_range": (0.0, 1.0)}
    res = NeuronVisualizer(model, "features.3").maximize(range(16), **digits)  # type: ignore[arg-type]
    figure = plot_images(
        res.image, [f"channel {i}" for i in range(16)], title="digits CNN features.3: x* = argmax a^k"
    )
    tour.figure(LEARN, "learn_digits_conv_channels.png", figure, "x* = argmax a^k: the digit each conv channel likes best",
                f'cl.NeuronVisualizer(digits, "features.3").maximize(range(16), steps={steps}, value_range=(0, 1))')  # fmt: skip
    res = NeuronVisualizer(model, "classifier.0").maximize(range(16), **digits)  # type: ignore[arg-type]
    figure = plot_images(
        res.image, [f"neuron {i}" for i in range(16)], title="digits CNN classifier.0: x* = argmax a^j"
    )
    tour.figure(LEARN, "learn_digits_neurons.png", figure, "x* = argmax a^j: the digit each hidden neuron likes best",
                f'cl.NeuronVisualizer(digits, "classifier.0").maximize(range(16), steps={steps}, value_range=(0, 1))')  # fmt: skip
    for weight, name in ((0.0, "learn_digits_classes.png"), (100.0, "learn_digits_classes_l1.png")):
        objective = class_logit(range(10)) - weight * l1() if weight else class_logit(range(10))
        am = ActivationMaximizer(model, objective, input_shape=(10, 1, 28, 28), **digits)  # type: ignore[arg-type]
        res = am.run()
        with torch.no_grad():
            predicted = model(res.image).argmax(1).tolist()
        titles = [f"class {i}: says {p}" for i, p in enumerate(predicted)]
        kind = "y^i" if not weight else f"y^i - {weight:g} mean|x|  (L1: no ink)"
        term = " - 100 * ob.l1()" if weight else ""
        tour.figure(LEARN, name, plot_images(res.image, titles, cols=5, title=f"digits CNN: x* = argmax {kind}"),
                    f"x* = argmax {kind}: the network calls the ten images {predicted}",
                    f"cl.ActivationMaximizer(digits, ob.class_logit(range(10)){term}, input_shape=(10, 1, 28, 28),\n"
                    f"                       steps={steps}, value_range=(0, 1)).run()",
                    checks=[Check("images read as their class", str(sum(p == i for i, p in enumerate(predicted))), "10",
                                  "the lecture: \"CNN is easily fooled\"")])  # fmt: skip
        tour.echo(f"  {kind}: the network calls the ten images {predicted}")
    top = NeuronVisualizer(model, "classifier.0").top_examples(zoo.digits_dataset("test"), unit=3, k=9)
    shown = top.inputs if top.inputs is not None else torch.zeros(0)  # kept: keep_inputs is True
    figure = plot_images(shown, [f"#{int(i)}" for i in top.indices], cols=9,
                         title="test digits that excite classifier.0 neuron 3 most")  # fmt: skip
    tour.figure(LEARN, "learn_digits_top_examples.png", figure, "The test digits that excite a neuron most",
                'cl.NeuronVisualizer(digits, "classifier.0").top_examples(cl.zoo.digits_dataset("test"), unit=3, k=9)')  # fmt: skip
    alexnet = tour.model("torchvision:alexnet")
    note = zoo.weights_note(alexnet)
    steps = 16 if tour.quick else 128
    # The lecture's preprocessing (mean = std = 0.5) and the recommended recipe: a picture in
    # [0, 1], a decorrelated spectrum decaying as photographs' do, held to a photograph's spectrum, seen through Lucid's standard transforms.
    channels = list(range(8))
    shape = (len(channels), 3, 224, 224)
    res = ActivationMaximizer(
        alexnet,
        channel("features.10", channels),
        input_shape=shape,
        steps=steps,
        seed=tour.seed,
        normalize="lecture",
    ).run()
    titles = [f"channel {c}" for c in channels]
    tour.figure(LEARN, "learn_alexnet_channels.png", _pictures(res, titles, "AlexNet features.10: x* = argmax a^k", alexnet),
                "x* = argmax a^k for AlexNet's features.10, as pictures",
                f'cl.ActivationMaximizer(model, ob.channel("features.10", range(8)), input_shape=(8, 3, 224, 224),\n'
                f'                       normalize="lecture", steps={steps}).run().picture', note=note)  # fmt: skip
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
    tour.figure(LEARN, "learn_alexnet_classes.png", _pictures(res, titles, "AlexNet: x* = argmax y^c", alexnet),
                "x* = argmax y^c: eight ImageNet classes as AlexNet sees them",
                f"cl.ActivationMaximizer(model, ob.class_logit({list(_CLASSES)}), input_shape=(8, 3, 224, 224),\n"
                f'                       normalize="lecture", steps={steps}).run().picture', note=note)  # fmt: skip


#: ImageNet classes whose pictures the tour draws: goldfinch, peacock, jellyfish, flamingo,
#: monarch, sports car, strawberry, volcano.
_CLASSES = (11, 84, 107, 130, 323, 817, 949, 980)


def _pictures(res: MaximizationResult, titles: list[str], title: str, model: nn.Module) -> Figure:
    batch = res.image if res.picture is None else res.picture  # with normalize: the picture in [0, 1]
    pictures = [images.to_rgb_array(p.cpu()) for p in batch]
    return plot_images(pictures, titles, cols=4, title=title, note=zoo.weights_note(model), panel_size=2.5)


def _concepts(tour: _Tour) -> None:
    steps = 32 if tour.quick else 128  # concept_pictures' default, as the atlas draws concepts
    tour_concepts.add_item(
        tour, tour.model("convlens:digits_cnn"), heading=LEARN, steps=steps, seed=tour.seed
    )


def _alphago(tour: _Tour) -> None:
    tour.echo("AlphaGo's policy network: 19x19 at every layer, k = 128, 192, 256, 384")
    rows = [
        "| k | parameters | first layer | hidden layers 2-12 | output | softmax over |",
        "|---:|---:|---|---|---|---:|",
    ]
    for k in (128, 192, 256, 384):
        net = zoo.alphago_policy(k)
        report = trace_shapes(net, (1, 48, 19, 19))
        params = sum(p.numel() for p in net.parameters())
        convs = [r for r in report.rows if r.type == "Conv2d"]
        moves = int(torch.tensor(report.output_shape[1:]).prod()) if report.output_shape else 0
        rows.append(f"| {k} | {params:,} | {convs[0].output_shape} | {convs[1].output_shape} x {len(convs) - 2} | "
                    f"{report.output_shape} | {moves} |")  # fmt: skip
        if k == 192:
            tour.table(ALPHAGO, "alphago_policy_shapes.md", report.to_markdown(), "k = 192, layer by layer: 19 x 19 at every layer",
                       'print(cl.trace_shapes(cl.zoo.alphago_policy(192), (1, 48, 19, 19)))',
                       checks=[Check("moves the softmax chooses from", str(moves), "361", "19 x 19")])  # fmt: skip
    tour.table(ALPHAGO, "alphago_k.md", "\n".join(rows), "k = 128, 192, 256 and 384 filters (Extended Data Table 3)",
               "for k in (128, 192, 256, 384):\n    net = cl.zoo.alphago_policy(k)\n    sum(p.numel() for p in net.parameters())")  # fmt: skip


def _atlas(tour: _Tour) -> None:
    digits = tour.model("convlens:digits_cnn")
    steps = 32 if tour.quick else 128
    site = build_atlas(digits, zoo.digits_dataset("test"), tour.out / "atlas", units=None, steps=steps,
                       seed=tour.seed, title="The digits CNN", progress=False)  # fmt: skip
    tour.files.append(site.index)
    text = (f"Every unit of every layer of the trained digits CNN ({site.units} units in {len(site.layers)} layers: "
            f"{', '.join(site.layers)}), each with its feature visualization, the {8} test digits that excite it "
            "most and the window each one's peak sees; the first conv layer's filters; each class's picture "
            "and Grad-CAM on its best digits.")  # fmt: skip
    tour.part(ATLAS).items.append(Item(
        "Every unit, linked: the digits CNN's atlas", text=text, link=("atlas/index.html", "Open the atlas"),
        call=f'cl.build_atlas(cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test"), "tour/atlas", units=None, steps={steps})',
    ))  # fmt: skip
    tour.echo(f"  wrote {site.index} ({site.units} units, {site.reused} from the cache)")


#: The tour's sections, in lecture order.
SECTIONS: dict[str, Callable[[_Tour], None]] = {
    "shapes": _alexnet_shapes,
    "convolution": _convolution,
    "filters": _filters_and_maps,
    "digits": _digits,
    "learn": _learn,
    "accentuate": tour_accent.section,
    "concepts": _concepts,
    "gradcam": _gradcam,
    "alphago": _alphago,
    "atlas": _atlas,
}


def run_tour(
    out: str | Path = "tour",
    *,
    sections: str | Sequence[str] | None = None,
    weights: str = "auto",
    seed: int = 0,
    quick: bool = False,
    image: str | Path | None = None,
    device: str | torch.device = "cpu",
    echo: Callable[[str], None] = print,
) -> TourResult:
    """Reproduce the lecture's figures and tables into ``out``, and ``out/index.html``.

    Args:
        out: Folder to write into (created if missing).
        sections: Which sections, by name (default: all, in order): see :data:`SECTIONS`.
        weights: As :func:`convlens.models.zoo.load` (``"auto"``: pretrained when cached).
        seed: Seed of random weights and of every optimization.
        quick: Fewer optimization steps (for a fast look or a test).
        image: The user's own picture, through the whole tour (default: the sample photo).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``: where the models run.
        echo: Where progress lines go (one per section, with its time).

    Returns:
        The files written (``index.html`` last) and the warnings met.

    Raises:
        InvalidArgumentError: An unknown section name, a device this machine
            does not have, or an image that does not exist; before any work.
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
    where = check_device(device)
    picture = None if image is None else Path(image)
    if picture is not None:
        images.load_image(picture)  # a missing or unreadable picture fails here, before any work
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    tour = _Tour(out=path, weights=weights, seed=seed, quick=quick, echo=echo, device=where, image=picture)
    with torch.random.fork_rng(devices=[]):  # the global random state is the caller's
        torch.manual_seed(seed)
        for name in chosen:
            began = time.perf_counter()
            SECTIONS[name](tour)
            echo(f"[{name}] done in {time.perf_counter() - began:.1f} s")
    page = tour.write(random=sorted({spec for spec, model in tour.models.items() if zoo.weights_note(model)}))
    echo(f"the tour wrote {len(tour.files)} files into {path}; open {page}")
    return TourResult(out=path, files=tuple(tour.files), warnings=tuple(tour.warnings))
