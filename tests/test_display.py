"""Rich display in Jupyter: every ``_repr_html_`` is well-formed, self-contained, and shows the result's numbers."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import convlens as cl
from convlens.attribution.cam import CAMResult, GradCAM
from convlens.attribution.faithfulness import FaithfulnessResult, deletion, insertion
from convlens.attribution.saliency import Saliency, SaliencyResult
from convlens.core import display
from convlens.core.layers import LayerInfo, LayerList
from convlens.featureviz.maximize import ActivationMaximizer, MaximizationResult
from convlens.featureviz.neurons import NeuronVisualizer
from convlens.featureviz.objectives import channel, class_logit
from convlens.models.zoo import DigitsCNN
from invariants import assert_unchanged, snapshot

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
PNG = "data:image/png;base64,"


class Page(HTMLParser):
    """Parses a display, checking that every tag is closed in order; collects attributes, images, table rows."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.rows: list[list[str]] = []
        self.texts: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((name, value or "") for name, value in attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in {"td", "th"}:
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.errors.append(f"<{tag}/> is not a void element")
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"</{tag}> closes a void element")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag in {"td", "th"} and self._cell is not None:
            self.rows[-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())

    @property
    def sources(self) -> list[str]:
        return [value for name, value in self.attrs if name == "src"]

    def images(self) -> list[Image.Image]:
        out: list[Image.Image] = []
        for src in self.sources:
            assert src.startswith(PNG), src[:40]
            data = base64.b64decode(src[len(PNG) :], validate=True)
            Image.open(io.BytesIO(data)).verify()
            image = Image.open(io.BytesIO(data))
            image.load()
            assert image.format == "PNG"
            assert image.width > 0
            assert image.height > 0
            out.append(image)
        return out


def check(text: str) -> Page:
    """The checks every display passes: one well-formed element, inline PNGs only, nothing external."""
    assert isinstance(text, str)
    page = Page(text)
    assert not page.errors, page.errors
    assert page.tags[0] == "div"
    assert text.startswith("<div>")
    assert text.endswith("</div>")
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    assert "<style" not in text.lower()
    for name, value in page.attrs:
        assert not name.startswith("on"), f"event handler {name}"
        if name != "src":
            assert "http:" not in value
            assert "https:" not in value
            assert "//" not in value
            assert "url(" not in value
    images = page.images()
    assert len(images) == len(page.sources) == text.count("<img")
    no_data = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', 'src=""', text)
    assert "http:" not in no_data
    assert "https:" not in no_data
    assert "//" not in no_data
    return page


def dataclass_repr(result: Any) -> str:
    """The repr a dataclass writes for ``result``: what its repr was before display existed."""
    fields = ", ".join(f"{f.name}={getattr(result, f.name)!r}" for f in dataclasses.fields(result))
    return f"{type(result).__name__}({fields})"


def tensors(result: Any) -> dict[str, Tensor]:
    return {
        f.name: getattr(result, f.name).clone()
        for f in dataclasses.fields(result)
        if isinstance(getattr(result, f.name), Tensor)
    }


def assert_same_tensors(result: Any, before: dict[str, Tensor]) -> None:
    for name, value in before.items():
        now = getattr(result, name)
        assert (now.dtype, now.device) == (value.dtype, value.device), name
        assert torch.equal(now, value), name


def shown_as(value: Tensor | float) -> str:
    return display.number(float(value))


@pytest.fixture(scope="module")
def batch(test_set: TensorDataset) -> tuple[Tensor, Tensor]:
    images, labels = test_set.tensors
    return images[:40], labels[:40]


@pytest.fixture(scope="module")
def cam(digits: DigitsCNN, batch: tuple[Tensor, Tensor]) -> CAMResult:
    return GradCAM(digits, "features.3")(batch[0][:4], target=[3, 1, 4, 1])


# -- the shared machinery ------------------------------------------------------------------------


def test_pictures_from_any_shape_dtype_and_range() -> None:
    assert display.picture(torch.rand(3, 5, 7)).shape == (5, 7, 3)
    assert display.picture(torch.rand(1, 5, 7, dtype=torch.float64)).shape == (5, 7)
    assert display.picture(torch.rand(6, 5, 7).bfloat16()).shape == (5, 7)  # mean over channels
    assert display.picture(torch.rand(2, 9)).shape == (1, 9)  # a 1-D signal: a strip
    assert display.picture(torch.rand(1, 4, 5, 6)).shape == (5, 6)  # 3-D: the middle slice
    stretched = display.picture(torch.tensor([[[-2.0, 0.0], [2.0, float("nan")]]]))
    assert stretched.min() == 0.0
    assert stretched.max() == 1.0
    inside = torch.tensor([[0.25, 0.5]])
    assert display.plane(inside).tolist() == [[0.25, 0.5]]  # kept as it is inside [0, 1]
    assert display.plane(torch.full((3, 3), 7.0)).max() == 0.0  # flat: all zeros
    assert display.plane(torch.rand(4, 5).half()).shape == (4, 5)


def test_image_tags_are_inline_pngs_of_the_announced_size() -> None:
    cases = [
        (display.plane(torch.rand(7, 7)), "jet", (77, 77), "P"),
        (display.plane(torch.rand(300, 150)), "gray", (40, 80), "P"),
        (display.picture(torch.rand(3, 28, 28)), None, (56, 56), "P"),
        (display.picture(torch.rand(1, 28, 28)), None, (56, 56), "L"),
        (display.plane(torch.rand(500)), "jet", (80, 12), "P"),  # a strip stays visible
    ]
    for values, cmap, (width, height), mode in cases:
        page = check(f"<div>{display.image_tag(values, cmap=cmap)}</div>")
        (image,) = page.images()
        assert image.size == (width, height)
        assert image.mode == mode
        assert (f'width="{width}"', f'height="{height}"') == tuple(
            f'{k}="{v}"' for k, v in page.attrs if k in {"width", "height"}
        )


def test_a_box_is_outlined_in_yellow() -> None:
    tag = display.image_tag(display.picture(torch.zeros(1, 10, 10)), box=(2, 3, 6, 8))
    (image,) = check(f"<div>{tag}</div>").images()
    rgb = np.asarray(image.convert("RGB"))
    yellow = np.all(rgb == (255, 255, 0), axis=-1)
    rows, cols = np.nonzero(yellow)
    f = 8  # 10 pixels enlarged to 80
    assert (rows.min(), cols.min(), rows.max(), cols.max()) == (2 * f, 3 * f, 6 * f - 1, 8 * f - 1)


def test_tables_escape_and_cap() -> None:
    page = check(
        display.block(
            display.table(["a", "b"], [["<x> & 'y'", display.Html("<b>bold</b>")]], caption="c < d"),
            display.left_out(32, 40, "maps"),
        )
    )
    assert page.rows == [["a", "b"], ["<x> & 'y'", "bold"]]
    assert "c < d" in page.text
    assert "8 of 40 maps not shown (the first 32 are)." in page.text
    assert display.cap(40) == display.MAX_ITEMS == 32
    assert display.left_out(3, 3, "maps") == ""


# -- ShapeReport -----------------------------------------------------------------------------------


def test_shape_report_html_has_every_row_and_column(digits: DigitsCNN) -> None:
    report = dataclasses.replace(
        cl.trace_shapes(digits, (1, 1, 28, 28)), note="a note with <tags> & 'quotes'"
    )
    text, rep = str(report), repr(report)
    page = check(report._repr_html_())
    assert str(report) == text
    assert repr(report) == rep
    assert str(report) == cl.ShapeReport.__str__(report)
    assert repr(report) == cl.ShapeReport.__repr__(report)
    lines = text.splitlines()
    table_lines, footer = lines[:-1], lines[-1]
    assert page.rows[0] == ["name", "type", "in", "out", "params", "MACs", "RF", "jump", "formula"]
    assert len(page.rows) == len(table_lines) == len(report) + 2  # header, rows, total
    for cells, line in zip(page.rows, table_lines, strict=True):  # the same cells as the text table
        assert " ".join(c for c in cells if c) == " ".join(line.split())
    for row in report:
        assert row.name in page.text
        assert row.formula in page.text
    assert footer.endswith("; a note with <tags> & 'quotes'")
    assert footer in page.text
    assert page.rows[-1][:2] == ["total", "DigitsCNN"]


# -- list_layers ------------------------------------------------------------------------------------


def test_list_layers_is_still_a_plain_list(digits: DigitsCNN) -> None:
    layers = cl.list_layers(digits)
    plain = [
        LayerInfo(
            name,
            type(m).__name__,
            m,
            next(m.children(), None) is None,
            sum(p.numel() for p in m.parameters()),
        )
        for name, m in digits.named_modules()
        if name
    ]
    assert isinstance(layers, list)
    assert isinstance(layers, LayerList)
    assert layers == plain
    assert plain == layers
    assert repr(layers) == repr(plain)
    assert str(layers) == str(plain)
    assert layers[0] == plain[0]
    assert layers[-1].name == "classifier.2"
    assert layers[1:3] == plain[1:3]
    assert type(layers[1:3]) is list
    assert len(layers) == len(plain)
    assert list(layers) == plain
    assert layers + plain == plain + plain
    page = check(layers._repr_html_())
    assert page.rows[0] == ["name", "type", "params", "leaf"]
    assert page.rows[1:] == [
        [info.name, info.type, f"{info.params:,}", "yes" if info.leaf else "no"] for info in layers
    ]


# -- CAMResult and SaliencyResult -------------------------------------------------------------------


def test_cam_html_shows_each_map_target_and_score(digits: DigitsCNN, cam: CAMResult) -> None:
    before, model, rep = tensors(cam), snapshot(digits), repr(cam)
    page = check(cam._repr_html_())
    assert len(page.images()) == 4
    assert all(image.size == (56, 56) for image in page.images())
    for i, (target, score) in enumerate(zip(cam.targets.tolist(), cam.scores, strict=True)):  # type: ignore[union-attr]
        assert f"#{i} target {target} score {shown_as(score)}" in page.text
    assert "features.3" in page.text
    assert "28x28" in page.text
    assert_same_tensors(cam, before)
    assert_unchanged(digits, model)
    assert repr(cam) == rep == dataclass_repr(cam)
    assert str(cam) == rep


def test_cam_html_caps_the_thumbnails(digits: DigitsCNN, batch: tuple[Tensor, Tensor]) -> None:
    many = GradCAM(digits, "features.3")(batch[0])
    text = many._repr_html_()
    page = check(text)
    assert len(page.images()) == display.MAX_ITEMS == 32
    assert "8 of 40 maps not shown (the first 32 are)." in page.text
    assert "#31 target" in page.text
    assert "#32 target" not in page.text
    assert len(text) < 32 * 6_000  # small enough for a committed notebook


def test_any_float_dtype_and_a_callable_target(cam: CAMResult) -> None:
    expected = check(cam._repr_html_()).text
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        cast = dataclasses.replace(cam, maps=cam.maps.to(dtype), scores=cam.scores.to(dtype))
        page = check(cast._repr_html_())
        assert len(page.images()) == 4
        if dtype == torch.float64:
            assert page.text == expected
    anonymous = check(dataclasses.replace(cam, targets=None)._repr_html_())
    assert anonymous.text.count("callable target") == 4


def test_3d_and_1d_maps() -> None:
    for shape in [(2, 6, 8, 8), (2, 30)]:
        result = CAMResult(
            maps=torch.rand(shape), raw=torch.rand(shape), scores=torch.ones(2), targets=None, layer="x"
        )
        assert len(check(result._repr_html_()).images()) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_results_on_cuda_display_as_on_the_cpu(digits: DigitsCNN, batch: tuple[Tensor, Tensor]) -> None:
    import copy

    cpu = GradCAM(digits, "features.3")(batch[0][:3])
    gpu = GradCAM(copy.deepcopy(digits).cuda(), "features.3")(batch[0][:3].cuda())
    assert gpu.maps.device.type == "cuda"
    assert check(gpu._repr_html_()).text == check(cpu._repr_html_()).text
    moved = dataclasses.replace(cpu, maps=cpu.maps.cuda(), scores=cpu.scores.cuda())
    assert moved._repr_html_() == cpu._repr_html_()


def test_saliency_html(digits: DigitsCNN, batch: tuple[Tensor, Tensor]) -> None:
    result = Saliency(digits)(batch[0][:3])
    before, rep = tensors(result), repr(result)
    page = check(result._repr_html_())
    assert len(page.images()) == 3
    for i, (target, score) in enumerate(zip(result.targets.tolist(), result.scores, strict=True)):  # type: ignore[union-attr]
        assert f"#{i} target {target} score {shown_as(score)}" in page.text
    assert_same_tensors(result, before)
    assert repr(result) == rep == dataclass_repr(result)
    assert isinstance(result, SaliencyResult)


# -- MaximizationResult -----------------------------------------------------------------------------


def test_maximization_html_shows_each_image_and_value(digits: DigitsCNN) -> None:
    res = ActivationMaximizer(digits, class_logit([0, 1, 2]), input_shape=(3, 1, 28, 28), steps=3).run()
    assert res.picture is None
    before, rep = tensors(res), repr(res)
    page = check(res._repr_html_())
    assert len(page.images()) == 3
    assert all(image.mode == "L" for image in page.images())
    for i, value in enumerate(res.values):
        assert f"#{i} value {shown_as(value)}" in page.text
    assert f"3 images of 1x28x28 (min-max scaled unless in [0, 1]), 3 steps, value {shown_as(res.value)}" in (
        page.text
    )
    assert_same_tensors(res, before)
    assert repr(res) == rep == dataclass_repr(res)
    assert isinstance(res, MaximizationResult)


def test_maximization_html_draws_the_picture_when_there_is_one() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    res = ActivationMaximizer(
        net, channel("1", 1), input_shape=(2, 3, 16, 16), steps=2, normalize="imagenet"
    ).run()
    assert res.picture is not None
    page = check(res._repr_html_())
    assert "2 pictures of 3x16x16" in page.text
    ours = [np.asarray(image.convert("RGB")) for image in page.images()]
    for drawn, picture in zip(ours, res.picture, strict=True):  # the picture itself, not the model input
        want = np.round(picture.permute(1, 2, 0).numpy() * 255.0)
        assert np.abs(drawn[::5, ::5].astype(float) - want).mean() < 8.0  # a 256-colour palette


# -- TopExamplesResult ------------------------------------------------------------------------------


def test_top_examples_grid_with_boxes(digits: DigitsCNN, test_set: TensorDataset) -> None:
    best = NeuronVisualizer(digits, "features.3").top_examples(test_set, unit=[2, 5, 7], k=4)
    assert best.boxes is not None
    assert best.inputs is not None
    before, rep = tensors(best), repr(best)
    page = check(best._repr_html_())
    images = page.images()
    assert len(images) == 12
    assert page.rows[0] == ["channel", "1", "2", "3", "4"]
    for u, unit in enumerate([2, 5, 7]):
        row = page.rows[1 + u]
        assert row[0] == str(unit)
        for j in range(4):
            assert row[1 + j] == f"#{int(best.indices[u, j])} {shown_as(best.activations[u, j])}"
    for image in images:  # every box is outlined
        assert np.all(np.asarray(image.convert("RGB")) == (255, 255, 0), axis=-1).any()
    assert "receptive field" in page.text
    assert_same_tensors(best, before)
    assert repr(best) == rep == dataclass_repr(best)


def test_concepts_grid_with_boxes_and_importance(digits: DigitsCNN, test_set: TensorDataset) -> None:
    res = cl.concepts(digits, "features.4", test_set, 3, k=4, progress=False)
    assert res.boxes is not None
    assert res.importance is not None
    page = check(res._repr_html_())
    assert len(page.images()) == 12
    assert f"{100 * res.explained:.1f}% of the variance" in page.text
    assert page.rows[0] == ["concept", "1", "2", "3", "4"]
    for i in range(3):
        row = page.rows[1 + i]
        (best, value), *_ = res.top_classes(i, 2)
        assert row[0].startswith(f"{i} class {best} ({display.number(value)})")
        for j in range(4):
            assert row[1 + j] == f"#{int(res.indices[i, j])} {shown_as(res.strengths[i, j])}"
    for image in page.images():  # every peak's window is outlined
        assert np.all(np.asarray(image.convert("RGB")) == (255, 255, 0), axis=-1).any()
    table = check(dataclasses.replace(res, inputs=None)._repr_html_())
    assert not table.images()
    assert table.rows[1][1] == f"#{int(res.indices[0, 0])} {shown_as(res.strengths[0, 0])}"


def test_top_examples_of_one_unit_without_grid(digits: DigitsCNN, test_set: TensorDataset) -> None:
    best = NeuronVisualizer(digits, "classifier.0").top_examples(test_set, unit=3, k=5)
    assert best.boxes is None
    assert best.indices.shape == (5,)
    page = check(best._repr_html_())
    assert len(page.images()) == 5
    assert page.rows[1] == [
        "3",
        *(f"#{i} {shown_as(a)}" for i, a in zip(best.indices, best.activations, strict=True)),
    ]
    for image in page.images():
        assert not np.all(np.asarray(image.convert("RGB")) == (255, 255, 0), axis=-1).any()


def test_top_examples_cap_keeps_whole_rows(digits: DigitsCNN, test_set: TensorDataset) -> None:
    best = NeuronVisualizer(digits, "features.0").top_examples(test_set, k=5)  # 8 channels x 5
    page = check(best._repr_html_())
    assert len(page.images()) == 30  # six whole rows of five
    assert "2 of 8 channels not shown (the first 6 are)." in page.text


def test_top_examples_without_inputs_is_a_table(digits: DigitsCNN, test_set: TensorDataset) -> None:
    best = NeuronVisualizer(digits, "features.0").top_examples(test_set, k=3, keep_inputs=False)
    assert best.inputs is None
    page = check(best._repr_html_())
    assert page.images() == []
    assert len(page.rows) == 9
    for u, row in enumerate(page.rows[1:]):
        assert row == [
            str(u),
            *(f"#{int(i)} {shown_as(a)}" for i, a in zip(best.indices[u], best.activations[u], strict=True)),
        ]
    assert all(f"#{int(i)}" in page.text for i in best.indices.flatten())


# -- FaithfulnessResult -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faithfulness(digits: DigitsCNN, batch: tuple[Tensor, Tensor], cam: CAMResult) -> FaithfulnessResult:
    return deletion(digits, batch[0][:4], cam.maps, intervals=8)


def test_faithfulness_html_plots_the_curves_and_gives_the_auc(faithfulness: FaithfulnessResult) -> None:
    before, rep = tensors(faithfulness), repr(faithfulness)
    page = check(faithfulness._repr_html_())
    (plot,) = page.images()
    assert plot.width > 200
    assert plot.height > 150
    targets = faithfulness.targets.tolist()  # type: ignore[union-attr]
    assert page.rows[0] == ["sample", "AUC"]
    assert page.rows[1:-1] == [
        [f"#{i} target {t}", shown_as(a)]
        for i, (t, a) in enumerate(zip(targets, faithfulness.auc, strict=True))
    ]
    assert page.rows[-1] == ["mean", shown_as(faithfulness.auc.mean())]
    assert f"deletion: 4 samples, 9 points, mean AUC {shown_as(faithfulness.auc.mean())}" in page.text
    assert_same_tensors(faithfulness, before)
    assert repr(faithfulness) == rep == dataclass_repr(faithfulness)


def test_faithfulness_cap_and_one_sample() -> None:
    many = FaithfulnessResult(
        fractions=torch.linspace(0, 1, 5),
        curve=torch.rand(40, 5),
        auc=torch.rand(40),
        targets=None,
        mode="insertion",
    )
    page = check(many._repr_html_())
    assert len(page.images()) == 1
    assert len(page.rows) == 1 + 32 + 1
    assert "8 of 40 samples not shown (the first 32 are)." in page.text
    one = FaithfulnessResult(
        fractions=torch.linspace(0, 1, 3).double(), curve=torch.rand(1, 3).bfloat16(), auc=torch.rand(1).bfloat16(),
        targets=torch.tensor([2]), mode="insertion",
    )  # fmt: skip
    assert check(one._repr_html_()).rows[1:] == [["#0 target 2", shown_as(one.auc[0])]]


def test_no_pyplot_state_is_touched(
    faithfulness: FaithfulnessResult, digits: DigitsCNN, batch: tuple[Tensor, Tensor]
) -> None:
    # pyplot's figures are the same before and after, whatever ran before in this process.
    import matplotlib.pyplot as plt

    mine = plt.figure()
    try:
        figures = plt.get_fignums()
        check(faithfulness._repr_html_())
        check(insertion(digits, batch[0][:2], torch.rand(2, 28, 28), intervals=4)._repr_html_())
        assert plt.get_fignums() == figures
    finally:
        plt.close(mine)


#: Every kind of result, made and displayed in a fresh interpreter: then pyplot must not have been
#: imported (in this process another test may have imported it, so it is checked there).
FRESH_DISPLAYS = """
import sys
import torch
import convlens as cl
from convlens.attribution.cam import GradCAM
from convlens.attribution.faithfulness import deletion, insertion
from convlens.attribution.saliency import Saliency
from convlens.featureviz.maximize import ActivationMaximizer
from convlens.featureviz.neurons import NeuronVisualizer
from convlens.featureviz.objectives import class_logit
from convlens.models.zoo import digits_cnn, digits_dataset

digits, test_set = digits_cnn(), digits_dataset("test")
x = test_set.tensors[0][:2]
results = [
    cl.trace_shapes(digits, (1, 1, 28, 28)),
    cl.list_layers(digits),
    GradCAM(digits, "features.3")(x),
    Saliency(digits)(x),
    ActivationMaximizer(digits, class_logit(1), input_shape=(1, 1, 28, 28), steps=2).run(),
    NeuronVisualizer(digits, "features.0").top_examples(test_set, unit=1, k=2),
    deletion(digits, x, torch.rand(2, 28, 28), intervals=4),
    insertion(digits, x, torch.rand(2, 28, 28), intervals=4),
]
shown = [len(result._repr_html_()) > 0 for result in results]
print(sum(shown), "matplotlib.pyplot" in sys.modules)
"""


@pytest.mark.slow
def test_displays_never_import_pyplot() -> None:
    done = subprocess.run([sys.executable, "-c", FRESH_DISPLAYS], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["8", "False"]


def test_every_display_leaves_the_model_alone(digits: DigitsCNN, test_set: TensorDataset) -> None:
    x = test_set.tensors[0][:2]
    results: list[Any] = [
        cl.trace_shapes(digits, (1, 1, 28, 28)),
        cl.list_layers(digits),
        GradCAM(digits, "features.3")(x),
        Saliency(digits)(x),
        ActivationMaximizer(digits, class_logit(1), input_shape=(1, 1, 28, 28), steps=2).run(),
        NeuronVisualizer(digits, "features.0").top_examples(test_set, unit=1, k=2),
        deletion(digits, x, torch.rand(2, 28, 28), intervals=4),
    ]
    model = snapshot(digits)
    for result in results:
        before = tensors(result) if dataclasses.is_dataclass(result) else {}
        check(result._repr_html_())
        assert_same_tensors(result, before)
    assert_unchanged(digits, model)  # and no pyplot imported: test_displays_never_import_pyplot
