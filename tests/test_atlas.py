"""convlens atlas: an offline site for the user's own model, resumable, checked in a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import convlens as cl
from convlens.apps.atlas import AtlasResult, build_atlas
from convlens.apps.cli import main
from convlens.core.html import CSS
from invariants import assert_unchanged, snapshot

ROOT = Path(__file__).resolve().parent.parent


def small_atlas(out: Path, **kwargs: object) -> AtlasResult:
    options: dict[str, object] = {"units": 3, "k": 4, "steps": 4, "progress": False, "concepts": 0}
    options.update(kwargs)
    return build_atlas(cl.zoo.digits_cnn(), cl.zoo.digits_dataset("test"), out, **options)  # type: ignore[arg-type]


def pages(root: Path) -> list[Path]:
    return sorted(root.rglob("*.html"))


def references(page: Path) -> list[str]:
    """Every file a page links to or shows: an anchor within the page (``#concept-0``) is the page itself."""
    text = page.read_text()
    return [ref.split("#")[0] or page.name for ref in re.findall(r'(?:href|src)="([^"]+)"', text)]


def test_every_page_link_and_picture_is_there(tmp_path: Path) -> None:
    site = small_atlas(tmp_path, concepts=6)
    assert site.layers == ("features.0", "features.3", "classifier.0", "classifier.2")
    assert site.concepts == ("features.0", "features.3")  # the conv layers (8 and 16 units > 6)
    assert site.units == 12
    assert site.reused == 0
    everything = pages(tmp_path)
    assert len(everything) == 1 + 4 + 12  # the index, a page per layer and per unit
    for page in everything:
        text = page.read_text()
        assert "http:" not in text
        assert "https:" not in text  # nothing fetched from elsewhere
        assert text.count("<style>") == 1
        assert f"<style>{CSS}</style>" in text  # the one writer's stylesheet, as the tour's page has it
        for ref in references(page):
            target = (page.parent / ref).resolve()
            assert target.is_file(), f"{page.relative_to(tmp_path)} -> {ref}"
            assert target.stat().st_size > 0
    index = (tmp_path / "index.html").read_text()
    assert "features.3" in index
    assert "[1, 16, 8, 8]" in index  # the shape table
    unit = (tmp_path / "units" / "classifier.2" / "1.html").read_text()
    assert "Grad-CAM" in unit
    assert "class picture" in unit
    first = (tmp_path / "units" / "features.0" / "0.html").read_text()
    assert "its filter weights" in first


def test_unit_pages_show_what_top_examples_finds(tmp_path: Path) -> None:
    small_atlas(tmp_path, layers=["features.3"], units=2, k=5)
    best = cl.NeuronVisualizer(cl.zoo.digits_cnn(), "features.3").top_examples(
        cl.zoo.digits_dataset("test"), unit=[0, 1], k=5, progress=False
    )
    for unit in (0, 1):
        text = (tmp_path / "units" / "features.3" / f"{unit}.html").read_text()
        shown = [int(i) for i in re.findall(r'alt="example (\d+)"', text)]
        assert shown == best.indices[unit].tolist()


def test_a_second_run_reuses_what_is_done_and_new_weights_do_not(tmp_path: Path) -> None:
    first = small_atlas(tmp_path, layers=["features.3"], units=2)
    cached = sorted((tmp_path / "_cache").rglob("viz.png"))
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    second = small_atlas(tmp_path, layers=["features.3", "classifier.2"], units=3)
    assert (first.reused, second.reused, second.units) == (0, 2, 6)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not redrawn
    model = cl.zoo.digits_cnn()
    conv = model.features[3]
    assert isinstance(conv, torch.nn.Conv2d)
    with torch.no_grad():
        conv.weight.mul_(1.5)
    changed = build_atlas(
        model, cl.zoo.digits_dataset("test"), tmp_path, layers=["features.3"], units=2, k=4, steps=4,
        progress=False,
    )  # fmt: skip
    assert changed.reused == 0  # the cache is keyed by the weights


def test_the_model_is_left_as_found_and_bad_input_fails_first(tmp_path: Path) -> None:
    model = cl.zoo.digits_cnn().train()
    before = snapshot(model)
    build_atlas(model, cl.zoo.digits_dataset("test"), tmp_path, layers=["classifier.2"], units=1, steps=2,
                k=2, progress=False)  # fmt: skip
    assert_unchanged(model, before)
    with pytest.raises(cl.LayerNotFoundError, match=r"Did you mean 'features\.3'"):
        build_atlas(model, cl.zoo.digits_dataset("test"), tmp_path / "bad", layers=["feature.3"])
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'lecture'"):
        build_atlas(model, cl.zoo.digits_dataset("test"), tmp_path / "bad", preset="lectur")
    assert not (tmp_path / "bad").exists()  # nothing written before the error


def test_the_command_writes_the_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["atlas", "convlens:digits_cnn", "--data", "digits", "--out", str(tmp_path), "--units", "2"]
    assert main([*argv, "--steps", "4", "--k", "3", "--layers", "features.0", "classifier.2"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'index.html'}: 2 layers, 4 units (0 from the cache)" in printed
    assert (
        "classifier.2, unit 1: digit 1</h1>" in (tmp_path / "units" / "classifier.2" / "1.html").read_text()
    )


@pytest.mark.slow
def test_every_page_in_a_real_browser(tmp_path: Path) -> None:
    from browser import browser_unavailable, is_local, open_pages

    reason = browser_unavailable()
    if reason is not None:
        pytest.skip(reason)
    small_atlas(tmp_path, units=2, concepts=6)
    everything = pages(tmp_path)
    shots = ROOT / "build" / "screenshots"
    wanted = {
        Path("index.html"): "atlas_index.png",
        Path("layers/features.3.html"): "atlas_layer.png",
        Path("units/classifier.2/1.html"): "atlas_unit.png",
    }
    screenshots = [
        shots / wanted[p.relative_to(tmp_path)] if p.relative_to(tmp_path) in wanted else None
        for p in everything
    ]
    reports = open_pages(everything, screenshots)
    for page, report in zip(everything, reports, strict=True):
        where = page.relative_to(tmp_path)
        assert not report.offsite_requests, where
        assert not report.broken_images, (where, report.broken_images)
        assert not report.console_errors, where
        assert report.headings, where
        for link in report.links:
            assert is_local(link), (where, link)
            assert Path(unquote(urlsplit(link).path)).is_file(), (where, link)
    assert all((shots / name).stat().st_size > 0 for name in wanted.values())
    unit_pages = [r for p, r in zip(everything, reports, strict=True) if "units" in p.parts]
    assert all(len(r.images) >= 1 + 2 for r in unit_pages)  # a picture and the examples at least
    by_page = {p.relative_to(tmp_path).as_posix(): r for p, r in zip(everything, reports, strict=True)}
    for layer in (
        "features.0",
        "features.3",
    ):  # the conv layers' concepts: 6, each a picture and k = 4 examples
        report = by_page[f"layers/{layer}.html"]
        assert any(f"Concepts at {layer}" in h for h in report.heading_texts), report.heading_texts
        assert len(report.images) == 2 + 6 * (1 + 4), layer  # 2 units, then each concept and its examples


def test_cached_unit_data_is_plain_json(tmp_path: Path) -> None:
    small_atlas(tmp_path, layers=["features.3"], units=1, k=3)
    (entry,) = list((tmp_path / "_cache").rglob("unit.json"))
    meta = json.loads(entry.read_text())
    assert (meta["layer"], meta["unit"], len(meta["examples"])) == ("features.3", 0, 3)
    assert all(len(e["box"]) == 4 for e in meta["examples"])


def test_grad_cam_is_read_from_a_grid_not_a_global_pool_and_stages_are_layers(tmp_path: Path) -> None:
    from torch import nn
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    stage = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
    net = nn.Sequential(stage, nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))  # fmt: skip
    data = TensorDataset(torch.rand(10, 3, 12, 12), torch.zeros(10, dtype=torch.long))
    site = build_atlas(net, data, tmp_path, layers=["5", "0"], units=2, k=3, steps=2, progress=False)
    assert site.layers == ("0", "5")  # a container is a layer too, in the model's order
    metas = [json.loads(p.read_text()) for p in (tmp_path / "_cache").rglob("unit.json")]
    classes = [m for m in metas if m["layer"] == "5"]
    assert classes
    assert all(m["cam"] == "2" for m in classes)  # the ReLU's 12 x 12 grid, not the 1 x 1 pool
    stage_pages = sorted((tmp_path / "units" / "0").glob("*.html"))
    assert [p.name for p in stage_pages] == ["0.html", "1.html"]


# --- your own model: its weights, its classes, its forward arguments, its layout (issue 18) -------


def test_the_atlas_of_your_own_model_names_its_classes_and_says_nothing_of_random_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_cli import user_model

    spec, _ = user_model(tmp_path, outputs=3, channels=1)
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    out = tmp_path / "site"
    argv = ["atlas", spec, "--data", "digits", "--out", str(out), "--layers", "4", "--units", "3"]
    assert main([*argv, "--k", "2", "--steps", "2", "--classes", str(tmp_path / "names.txt")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "4, unit 2: bird</h1>" in (out / "units" / "4" / "2.html").read_text()
    for page in pages(out):
        assert 'class="note"' not in page.read_text(), page  # the factory's weights are the user's
    # Asked-for random weights are said on every page.
    assert main([*argv, "--k", "2", "--steps", "2", "--weights", "random", "--out", str(tmp_path / "r")]) == 0
    for page in pages(tmp_path / "r"):
        assert "random weights (seed 0)" in page.read_text(), page
    # Names that do not fit the outputs: one line, before any work.
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    bad = tmp_path / "bad"
    assert main([*argv, "--out", str(bad), "--classes", str(tmp_path / "two.txt")]) == 2
    assert "names 2 classes, but the model has 3 outputs" in capsys.readouterr().err
    assert not bad.exists()


def test_build_atlas_classes_and_the_old_class_names(tmp_path: Path) -> None:
    data = cl.zoo.digits_dataset("test")
    with pytest.raises(cl.InvalidArgumentError, match="names 3 classes, but the model has 10 outputs"):
        build_atlas(cl.zoo.digits_cnn(), data, tmp_path / "bad", classes=["a", "b", "c"])
    assert not (tmp_path / "bad").exists()
    names = [f"n{i}" for i in range(10)]
    small_atlas(tmp_path / "new", layers=["classifier.2"], units=2, classes=names)
    with pytest.warns(DeprecationWarning, match="class_names= is deprecated, use classes="):
        small_atlas(tmp_path / "old", layers=["classifier.2"], units=2, class_names=names)
    for site in ("new", "old"):
        assert (
            "classifier.2, unit 1: n1</h1>"
            in (tmp_path / site / "units" / "classifier.2" / "1.html").read_text()
        )


class Scaled(torch.nn.Module):
    """A net whose forward needs a second argument: ``forward(x, scale)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h = self.conv(x * scale).relu()
        out: torch.Tensor = self.head(h.mean((2, 3)))
        return out


def test_build_atlas_passes_forward_args_on_every_forward(tmp_path: Path) -> None:
    model = Scaled()
    data = torch.utils.data.TensorDataset(torch.rand(12, 1, 10, 10))
    before = snapshot(model)
    scale = torch.tensor(-1.0)  # the sign flips the ranking: a forward without it would differ
    site = build_atlas(model, data, tmp_path, layers=["conv"], units=2, k=3, steps=2, progress=False,
                       forward_args=(scale,))  # fmt: skip
    assert_unchanged(model, before)
    assert site.units == 2
    best = cl.NeuronVisualizer(model, "conv").top_examples(data, unit=[0, 1], k=3, forward_args=(scale,))
    shown = [
        [e["index"] for e in json.loads(p.read_text())["examples"]]
        for p in sorted(
            (tmp_path / "_cache").rglob("unit.json"), key=lambda p: json.loads(p.read_text())["unit"]
        )
    ]
    assert shown == best.indices.tolist()
    with pytest.raises(cl.InvalidTypeError, match="missing a required argument: 'scale'"):
        build_atlas(model, data, tmp_path / "none", layers=["conv"], units=1, steps=1, progress=False)


class ChannelsLast(torch.nn.Module):
    """A stage that returns (N, H, W, C), as Swin and ConvNeXt stages do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 6, 3)
        self.stage = torch.nn.Sequential(torch.nn.LayerNorm(6), torch.nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.stage(self.conv(x).permute(0, 2, 3, 1))
        return out.mean((1, 2))


def test_build_atlas_refuses_a_channels_last_layer_and_reads_it_with_reshape(tmp_path: Path) -> None:
    model = ChannelsLast()
    data = torch.utils.data.TensorDataset(torch.rand(6, 1, 9, 9))
    # The one wording of featureviz.forward.check_channels_first, as top_examples and the maximizer say it.
    with pytest.raises(
        cl.InvalidArgumentError, match=r"build_atlas reads channels.*Pass reshape='channels_last'"
    ):
        build_atlas(model, data, tmp_path / "bad", layers=["stage"], units=None, steps=1, progress=False)
    assert not (tmp_path / "bad").exists()
    site = build_atlas(model, data, tmp_path / "ok", layers=["stage"], units=None, k=2, steps=1,
                       progress=False, reshape="channels_last")  # fmt: skip
    assert site.units == 5  # the stage's 5 features, not its 7 rows


def tiny_classifier() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 2),
    )  # fmt: skip


def unit_metas(root: Path) -> dict[tuple[str, int], dict[str, Any]]:
    metas = [json.loads(p.read_text()) for p in (root / "_cache").rglob("unit.json")]
    return {(str(m["layer"]), int(m["unit"])): m for m in metas}


def test_the_atlas_of_a_wrapper_draws_its_layers_under_either_name(tmp_path: Path) -> None:
    net = tiny_classifier()
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 10, 10))
    options: dict[str, object] = {"units": 1, "k": 2, "steps": 1, "progress": False}
    plain = build_atlas(net, data, tmp_path / "plain", **options)  # type: ignore[arg-type]
    dp = torch.nn.DataParallel(net)
    before = snapshot(dp)
    wrapped = build_atlas(dp, data, tmp_path / "dp", **options)  # type: ignore[arg-type]
    assert_unchanged(dp, before)
    assert plain.layers == ("0", "2", "5")
    assert wrapped.layers == (
        "module.0",
        "module.2",
        "module.5",
    )  # as named_modules() of the wrapper names them
    assert wrapped.units == plain.units == 3
    inner = build_atlas(dp, data, tmp_path / "inner", layers=["5", "0", "module.0"], **options)  # type: ignore[arg-type]
    assert inner.layers == ("0", "5")  # the model's order, the names as given, one page per layer
    metas = unit_metas(tmp_path / "inner")
    assert metas[("0", 0)].get("filter") is True  # the first conv layer, found under its inner name
    assert metas[("5", 0)].get("cam") == "module.2"  # the output layer's Grad-CAM
    assert (tmp_path / "inner" / "units" / "0" / "0.html").is_file()
    with pytest.raises(cl.LayerNotFoundError, match=r"has no layer 'module.9'"):
        build_atlas(dp, data, tmp_path / "bad", layers=["module.9"], **options)  # type: ignore[arg-type]


class TwoBranches(torch.nn.Module):
    """A stage that returns two tensors (4 and 6 channels), as multi-resolution networks' stages do."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 6, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), self.b(x)


class Branching(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.two, self.fc = torch.nn.Conv2d(3, 4, 3), TwoBranches(), torch.nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, b = self.two(self.conv(x))
        out: torch.Tensor = self.fc(b.mean((2, 3)))
        return out


def test_build_atlas_reads_the_tensor_layout_part_picks(tmp_path: Path) -> None:
    model = Branching()
    data = torch.utils.data.TensorDataset(torch.rand(5, 3, 12, 12))
    before = snapshot(model)
    options: dict[str, object] = {"layers": ["two"], "units": None, "k": 2, "steps": 1, "progress": False}
    second = build_atlas(model, data, tmp_path / "b", reshape=cl.Layout(part=1), **options)  # type: ignore[arg-type]
    first = build_atlas(model, data, tmp_path / "a", **options)  # type: ignore[arg-type]
    assert_unchanged(model, before)
    assert (first.units, second.units) == (4, 6)  # the first tensor by default, the second as asked
    best = cl.NeuronVisualizer(model, "two", reshape=cl.Layout(part=1)).top_examples(data, k=2)
    metas = unit_metas(tmp_path / "b")
    shown = [[e["index"] for e in metas[("two", u)]["examples"]] for u in range(6)]
    assert shown == best.indices.tolist()


class MaskedInput(torch.nn.Module):
    """forward(x, mask): the mask is one more input channel, so its batch must be x's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(torch.relu(self.conv(torch.cat([x, mask], 1))).mean((2, 3)))
        return out


def test_per_example_forward_args_follow_the_examples_through_the_atlas(tmp_path: Path) -> None:
    model = MaskedInput()
    images = torch.rand(6, 1, 9, 9)
    masks = (torch.rand(6, 1, 9, 9) > 0.5).float()  # one per example: len(data) rows
    data = torch.utils.data.TensorDataset(images)
    before = snapshot(model)
    site = build_atlas(model, data, tmp_path, units=2, k=3, steps=2, batch_size=4, progress=False,
                       forward_args=(masks,))  # fmt: skip
    assert_unchanged(model, before)
    assert site.layers == ("conv", "fc")
    assert site.units == 4
    metas = unit_metas(tmp_path)
    best = cl.NeuronVisualizer(model, "fc").top_examples(data, [0, 1], 3, forward_args=(masks,))
    assert [[e["index"] for e in metas[("fc", u)]["examples"]] for u in (0, 1)] == best.indices.tolist()
    for u in (0, 1):  # the output units' Grad-CAM over their top examples, each with its own mask row
        assert metas[("fc", u)].get("cam") == "conv"
        assert all((tmp_path / "_cache").rglob(f"cam{i}.png") for i in range(3))


def test_build_atlas_refuses_data_on_the_meta_device_and_names_both_devices(tmp_path: Path) -> None:
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 10, 10, device="meta"))
    with pytest.raises(cl.DeviceMismatchError, match=r"model is on cpu.*on meta"):
        build_atlas(tiny_classifier(), data, tmp_path, units=1, k=1, steps=1, progress=False)
    assert not tmp_path.joinpath("index.html").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_model_on_the_gpu_draws_cpu_data(tmp_path: Path) -> None:
    net = tiny_classifier().cuda()
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 10, 10))  # CPU tensors, moved batch by batch
    site = build_atlas(net, data, tmp_path, units=1, k=2, steps=1, progress=False)
    assert site.layers == ("0", "2", "5")
    assert site.units == 3


# --- concepts on the layer pages (issue 19) -------------------------------------------------------------


def section_sources(page: Path) -> list[str]:
    """The pictures of a layer page's concepts section: everything after its heading."""
    text = page.read_text()
    return (
        re.findall(r'src="([^"]+)"', text[text.index("<h2>Concepts at ") :])
        if "<h2>Concepts at " in text
        else []
    )


def test_layer_pages_show_their_concepts_with_the_method_their_sign_needs(tmp_path: Path) -> None:
    layers = ["features.3", "features.4", "classifier.0"]
    site = small_atlas(tmp_path, layers=layers, units=1, concepts=6)
    # features.3 (16 units) is a signed conv output: semi-NMF; features.4 is its ReLU: NMF; classifier.0
    # is a signed Linear layer without a grid: no section. (features.0's section: the tests above.)
    assert site.concepts == ("features.3", "features.4")
    assert site.concepts_reused == 0
    pictures = {}
    for layer, method in (("features.3", "semi-nmf"), ("features.4", "nmf")):
        page = tmp_path / "layers" / f"{layer}.html"
        text = page.read_text()
        assert f"<h2>Concepts at {layer}</h2>" in text
        assert f"6 concepts ({method}) in the" in text
        assert text.count('<h3 id="concept-') == 6
        pictures[layer] = section_sources(page)
        assert len(pictures[layer]) == 6 * (1 + 4)  # its picture and k = 4 top examples per concept
        for src in pictures[layer]:
            assert (page.parent / src).resolve().is_file(), src
        assert "Matters most for: class " in text  # importance for the predicted classes
    assert "Concepts at" not in (tmp_path / "layers" / "classifier.0.html").read_text()
    folders = {layer: {str(Path(src).parent) for src in srcs} for layer, srcs in pictures.items()}
    assert all(len(f) == 1 for f in folders.values())  # one folder per layer
    assert len(set.union(*folders.values())) == 2  # distinct layers never share a file


def test_a_rebuild_reuses_the_concepts_without_refitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convlens.apps import atlas_concepts

    first = small_atlas(tmp_path, layers=["features.3"], units=1, concepts=6)
    (section,) = list((tmp_path / "_cache").rglob("concepts.json"))
    stamp = section.stat().st_mtime_ns

    def refit(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the concepts were fitted again")

    monkeypatch.setattr(atlas_concepts, "fit_concepts", refit)
    second = small_atlas(tmp_path, layers=["features.3"], units=2, concepts=6)
    assert (first.concepts_reused, second.concepts, second.concepts_reused) == (0, ("features.3",), 1)
    assert section.stat().st_mtime_ns == stamp
    assert "<h2>Concepts at features.3</h2>" in (tmp_path / "layers" / "features.3.html").read_text()
    with pytest.raises(AssertionError, match="fitted again"):  # another n is another section
        small_atlas(tmp_path, layers=["features.3"], units=1, concepts=5)


def test_concepts_off_and_a_bad_count(tmp_path: Path) -> None:
    for off in (0, None):
        site = small_atlas(tmp_path / str(off), layers=["features.3"], units=1, concepts=off)
        assert site.concepts == ()
        assert "Concepts at" not in (tmp_path / str(off) / "layers" / "features.3.html").read_text()
        assert not list((tmp_path / str(off) / "_cache").rglob("concepts.json"))
    with pytest.raises(cl.InvalidArgumentError, match="concepts"):
        small_atlas(tmp_path / "bad", concepts=-1)
    assert not (tmp_path / "bad").exists()


def test_a_layer_signed_only_after_its_first_examples_falls_back_to_semi_nmf(tmp_path: Path) -> None:
    """The sign is read from the first examples; a later negative value makes NMF refuse, and semi-NMF fits."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)  # each channel is the picture itself
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.rand(12, 1, 6, 6)
    x[8:] -= 0.5  # signed from the ninth example on
    site = build_atlas(
        net, TensorDataset(x), tmp_path, layers=["0"], units=1, k=2, steps=2, concepts=2, progress=False
    )
    assert site.concepts == ("0",)
    assert "2 concepts (semi-nmf) in the" in (tmp_path / "layers" / "0.html").read_text()
