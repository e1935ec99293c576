from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convlens.apps.cli import main
from helpers import torchrun


def test_shapes_prints_the_lecture_alexnet_table(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchvision")
    assert main(["shapes", "torchvision:alexnet"]) == 0
    out = capsys.readouterr().out
    assert "floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55" in out
    assert "1, 256, 6, 6" in out
    assert "total" in out.lower()


def test_shapes_markdown_and_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shapes", "convlens:alphago_policy", "--input", "2,48,19,19", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("|")
    assert "2, 192, 19, 19" in out


def test_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", "convlens:alphago_policy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "type", "params", "leaf"]
    assert lines[2].split() == ["features.0", "Conv2d", str(48 * 192 * 25 + 192), "yes"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shapes", "torchvision:alexnt"], "Did you mean 'alexnet'"),
        (["shapes", "convlens:alphago_policy", "--input", "1,3,a"], "--input must be integers"),
        (
            ["shapes", "convlens:alphago_policy", "--input", "1,3,19,19"],
            "features.0 expects 48 input channels, got 3",
        ),
        (["layers", "nowhere/net.py:build"], "does not exist"),
    ],
)
def test_errors_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "torchvision" in argv[1]:
        pytest.importorskip("torchvision")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("convlens: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.slow
def test_console_script_runs(tmp_path: Path) -> None:
    source = tmp_path / "tiny.py"
    source.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Conv1d(2, 4, 3))\n")
    done = subprocess.run(
        [sys.executable, "-m", "convlens.apps.cli", "shapes", f"{source}:build", "--input", "1,2,10"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1, 4, 8" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "convlens.apps.cli", "shapes", f"{source}:nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def offline_hub(monkeypatch: pytest.MonkeyPatch, hub: Path) -> None:
    import torch

    monkeypatch.setenv("TORCH_HOME", str(hub))

    def offline(*_args: object, **_kwargs: object) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def test_filters_png_with_random_weights_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torchvision")
    offline_hub(monkeypatch, tmp_path / "hub")
    out = tmp_path / "figs" / "filters.png"
    assert (
        main(["filters", "torchvision:alexnet", "--layer", "features.0", "--out", str(out), "--n", "16"]) == 0
    )
    captured = capsys.readouterr()
    assert "warning" in captured.err
    assert "random weights (seed 0)" in captured.err
    from PIL import Image

    with Image.open(out) as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    # Red ink of the note on the figure's face: some strongly red pixels exist.
    red = (pixels[:, :, 0] > 180) & (pixels[:, :, 1] < 80) & (pixels[:, :, 2] < 80)
    assert red.sum() > 20


def test_featuremaps_of_the_digits_cnn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "maps.png"
    argv = [
        "featuremaps",
        "convlens:digits_cnn",
        "--layer",
        "features.0",
        "--out",
        str(out),
        "--n",
        "8",
        "--cols",
        "4",
    ]
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err  # shipped weights: nothing to warn about
    from PIL import Image

    with Image.open(out) as png:
        pixels = np.asarray(png.convert("L"))
    assert pixels.std() > 10  # maps were drawn, not a blank canvas


def test_featuremaps_layer_typo_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["featuremaps", "convlens:digits_cnn", "--layer", "feature.0", "--out", str(tmp_path / "m.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'features.0'" in err
    assert not (tmp_path / "m.png").exists()


def test_featuremaps_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "featuremaps", "convlens:alphago_policy", "--layer", "features.0",
        "--out", str(tmp_path / "m.png"), "--image", str(tmp_path / "nope.jpg"), "--weights", "random",
    ]  # fmt: skip
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gradcam_overlay_names_the_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cam.png"
    argv = ["gradcam", "convlens:digits_cnn", "--layer", "features.3", "--out", str(out), "--target", "4"]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    # The jet overlay puts saturated colours on the right panel; the input panel is grey.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    half = pixels.shape[1] // 2
    assert saturation[:, half:].mean() > 3 * saturation[:, :half].mean()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "gradcm"], "Did you mean 'gradcam'"),
        (["--target", "10"], "target 10 is out of range"),
        (["--layer", "classifier.2"], "needs a layer with spatial output"),
    ],
)
def test_gradcam_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = [
        "gradcam",
        "convlens:digits_cnn",
        "--layer",
        "features.3",
        "--out",
        str(tmp_path / "c.png"),
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_topk_over_the_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "topk.png"
    argv = ["topk", "convlens:digits_cnn", "--layer", "features.3", "--data", "digits"]
    assert main([*argv, "--units", "0-2,5", "--k", "4", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out) as png:
        pixels = np.asarray(png.convert("L"))
    assert pixels.std() > 10


def test_topk_over_a_picture_folder_ranks_what_the_library_ranks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from PIL import Image

    import convlens as cl

    rng = np.random.default_rng(0)
    for i in range(7):
        folder = tmp_path / "pics" / ("odd" if i % 2 else "even")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "topk.png"
    argv = ["topk", "convlens:digits_cnn", "--layer", "features.0", "--data", str(tmp_path / "pics")]
    assert main([*argv, "--k", "3", "--crops", "--out", str(out), "--batch-size", "2"]) == 0
    assert out.stat().st_size > 0
    # The same ranking by hand: the folder's pictures as the digits CNN sees them.
    data = cl.images.PictureFolder(tmp_path / "pics", transform=lambda img: torch.from_numpy(
        np.asarray(img.convert("L").resize((28, 28)), dtype=np.float32).copy())[None] / 255.0)  # fmt: skip
    best = cl.NeuronVisualizer(cl.zoo.digits_cnn(), "features.0").top_examples(data, k=3)
    assert best.indices.shape == (8, 3)
    printed = capsys.readouterr().out.splitlines()[1:]
    assert printed == [
        f"channel {c}: " + " ".join(f"#{i}" for i in row) for c, row in enumerate(best.indices.tolist())
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--units", "0,a"], "--units must be integers or ranges"),
        (["--units", "0,99"], "out of range"),
        (["--data", "nowhere"], "does not exist"),
        (["--layer", "feature.3"], "Did you mean 'features.3'"),
        (["--device", "cuda:7"], "not available"),
    ],
)
def test_topk_errors_are_one_line(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["topk", "convlens:digits_cnn", "--layer", "features.3", "--data", "digits"]
    assert main([*argv, "--out", str(tmp_path / "t.png"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "t.png").exists()


def test_evaluate_prints_the_library_table(capsys: pytest.CaptureFixture[str]) -> None:
    import convlens as cl

    argv = ["evaluate", "convlens:digits_cnn", "--layer", "features.3", "--data", "digits"]
    assert main([*argv, "--methods", "gradcam,layercam", "--intervals", "4", "--markdown"]) == 0
    printed = capsys.readouterr().out
    expected = cl.evaluate(
        cl.zoo.digits_cnn(), ["gradcam", "layercam"], cl.zoo.digits_dataset("test"),
        layer="features.3", intervals=4, progress=False,
    )  # fmt: skip
    assert printed.strip() == expected.to_markdown().strip()
    assert expected.count == 360
    assert main([*argv, "--methods", "gradcam,layercam", "--steps", "4", "--markdown"]) == 0  # the old flag
    assert capsys.readouterr().out == printed


def test_evaluate_unknown_method_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "convlens:digits_cnn", "--layer", "features.3", "--data", "digits"]
    assert main([*argv, "--methods", "gradcam,gradcamm++"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'gradcam++'" in err
    assert err.count("\n") == 1


# --- your own model: its weights and its classes (issue 18) ---------------------------------------

USER_NET = """
import torch
from pathlib import Path
from torch import nn


def build():
    net = nn.Sequential(
        nn.Conv2d({channels}, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, {outputs}),
    )
    net.load_state_dict(torch.load(Path(__file__).parent / "trained.pt", weights_only=True))
    return net
"""


def user_model(tmp_path: Path, *, outputs: int = 3, channels: int = 3) -> tuple[str, dict[str, object]]:
    """A ``my_net.py:build`` spec whose factory loads the "trained" weights saved beside it."""
    import torch
    from torch import nn

    torch.manual_seed(42)
    trained = nn.Sequential(
        nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, outputs),
    )  # fmt: skip
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    torch.save(state, tmp_path / "trained.pt")
    (tmp_path / "my_net.py").write_text(USER_NET.format(channels=channels, outputs=outputs))
    return f"{tmp_path / 'my_net.py'}:build", state


def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The figures the command saves, as it saves them (their texts can be read back)."""
    from convlens.apps import cli

    figures: list[object] = []
    save = cli._save

    def keep(figure: object, out: Path) -> None:
        figures.append(figure)
        save(figure, out)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "_save", keep)
    return figures


def texts(figure: object) -> list[str]:
    from matplotlib.figure import Figure

    assert isinstance(figure, Figure)
    return [t.get_text() for t in figure.texts]


def test_gradcam_of_your_own_model_names_its_classes_and_warns_of_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    import convlens as cl

    spec, _ = user_model(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    figures = saved_figures(monkeypatch)
    out = tmp_path / "cam.png"
    argv = ["gradcam", spec, "--layer", "0", "--out", str(out), "--classes", str(tmp_path / "classes.txt")]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""  # no RandomWeightsWarning: the factory's weights are the user's
    # The class the library predicts for the same picture, named as the file names it.
    model = cl.zoo.create(spec)
    x = cl.images.preprocess(cl.images.sample_image())
    predicted = int(model(x).argmax())
    expected = cl.GradCAM(model, "0")(x)
    assert int(expected.targets[0]) == predicted  # type: ignore[index]
    name = ["cat", "dog", "bird"][predicted]
    [figure] = figures
    assert texts(figure) == [f"gradcam at 0: {name} ({predicted}), score {float(expected.scores[0]):.2f}"]
    # Asked for random weights: reset, and said in red on the figure (no warning: it was asked for).
    assert main([*argv, "--weights", "random"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert texts(figures[1])[1] == "random weights (seed 0)"
    assert not torch.equal(cl.zoo.load(spec, weights="random").state_dict()["4.weight"],
                           model.state_dict()["4.weight"])  # fmt: skip


def test_gradcam_classes_imagenet_on_your_own_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torchvision")
    spec, _ = user_model(tmp_path, outputs=1000)
    figures = saved_figures(monkeypatch)
    argv = ["gradcam", spec, "--layer", "0", "--out", str(tmp_path / "c.png"), "--target", "281"]
    assert main([*argv, "--classes", "imagenet"]) == 0
    assert texts(figures[0])[0].startswith("gradcam at 0: tabby (281), score ")
    assert main(argv) == 0  # no names known for your own model: the index alone, not "class 281 (281)"
    assert texts(figures[1])[0].startswith("gradcam at 0: class 281, score ")
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("two", "classes file '{tmp}/two.txt' names 2 classes, but the model has 3 outputs"),
        ("imagenet", "classes names 1000 classes, but the model has 3 outputs"),
        ("imagenett", "which is no file. Did you mean 'imagenet'?"),
    ],
)
def test_gradcam_classes_that_do_not_fit_fail_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], classes: str, message: str
) -> None:
    if classes == "imagenet":
        pytest.importorskip("torchvision")
    spec, _ = user_model(tmp_path)
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    chosen = str(tmp_path / "two.txt") if classes == "two" else classes
    out = tmp_path / "c.png"
    assert main(["gradcam", spec, "--layer", "0", "--out", str(out), "--classes", chosen]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_topk_of_the_output_layer_names_the_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["topk", "convlens:digits_cnn", "--data", "digits", "--k", "2", "--out", str(tmp_path / "t.png")]
    assert main([*argv, "--layer", "classifier.2", "--units", "3,5"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split(":")[0] for line in lines] == ["digit 3 (3)", "digit 5 (5)"]
    (tmp_path / "names.txt").write_text("\n".join(f"n{i}" for i in range(10)))
    assert (
        main([*argv, "--layer", "classifier.2", "--units", "4", "--classes", str(tmp_path / "names.txt")])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[1].startswith("n4 (4): #")
    assert main([*argv, "--layer", "features.0", "--classes", str(tmp_path / "names.txt")]) == 2
    assert "layer 'features.0' is not its output layer ('classifier.2' is)" in capsys.readouterr().err


def test_every_command_in_the_readme_parses() -> None:
    """The README's command list cannot drift from the parser (its user-model lines included)."""
    import shlex

    from convlens.apps.cli_parser import parser

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text[text.index("From the command line:") :].split("```")[1]
    commands = [line.split("#")[0] for line in block.splitlines() if line.startswith("convlens ")]
    assert any("my_net.py:build" in c and "--classes" in c for c in commands)
    for command in commands:
        args = parser().parse_args(shlex.split(command)[1:])  # exits (SystemExit) on a wrong flag
        assert args.command == shlex.split(command)[1]


# -- convlens concepts ------------------------------------------------------------------------------


def test_concepts_writes_the_page_with_pictures_and_the_digits_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    out = tmp_path / "page"
    argv = ["concepts", "convlens:digits_cnn", "--layer", "features.4", "--data", "digits", "--n", "3"]
    assert main([*argv, "--k", "2", "--steps", "3", "--target", "label", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.fullmatch(
        rf"wrote {re.escape(str(out / 'index.html'))}: 3 concepts explain \d+\.\d% of features\.4 over 360 "
        r"examples\n",
        printed,
    ), printed
    page = (out / "index.html").read_text()
    assert "<h1>convlens:digits_cnn: concepts at features.4</h1>" in page
    assert "convlens concepts convlens:digits_cnn --layer features.4 --data digits --n 3 --k 2" in page
    assert len(re.findall(r'alt="concept \d+"', page)) == 3  # the pictures
    assert len(re.findall(r'alt="concept \d+ example \d+"', page)) == 3 * 2
    assert page.count("Matters most for: digit ") == 3  # the zoo model's own class names
    assert "random weights" not in page.lower()  # the shipped weights: no warning
    written = sorted(p.name for p in (out / "images").iterdir())
    assert written == sorted([f"concept{i}.png" for i in range(3)] + [
        f"concept{i}_example{j}.png" for i in range(3) for j in range(2)
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "feature.4"], "Did you mean 'features.4'"),
        (["--layer", "features.4", "--method", "nmff"], "Did you mean 'nmf'"),
        (["--layer", "features.3"], "method='nmf' needs nonnegative activations"),
        (
            ["--layer", "features.4", "--classes", "{tmp}/names.txt"],
            "names 3 classes, but the model has 10 outputs",
        ),
        (["--layer", "features.4", "--target", "lbl"], "or a class index >= 0; got 'lbl'"),
        (["--layer", "features.4", "--target", "12"], "target 12 is out of range"),
    ],
)
def test_concepts_refuses_bad_input_before_writing(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "names.txt").write_text("a\nb\nc\n")  # 3 names for 10 classes
    out = tmp_path / "page"
    argv = [
        "concepts",
        "convlens:digits_cnn",
        "--data",
        "digits",
        "--n",
        "3",
        "--steps",
        "1",
        "--out",
        str(out),
    ]
    assert main([*argv, *[e.format(tmp=tmp_path) for e in extra]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convlens: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow
def test_concepts_under_torchrun_rank_0_alone_writes_the_page(tmp_path: Path) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is needed")
    argv = ["concepts", "convlens:digits_cnn", "--layer", "features.4", "--data", "digits", "--n", "3"]
    argv += ["--k", "2", "--steps", "2", "--out", str(tmp_path / "two")]
    # "--": torchrun's argparse would read --n as an abbreviation of its own --nnodes, --nproc-per-node, ...
    done = torchrun("-m", "convlens.apps.cli", "--", *argv)
    assert done.stdout.count("wrote ") == 1  # rank 0 alone writes and prints
    assert "over 360 examples" in done.stdout  # every example, read in two shards
    page = (tmp_path / "two" / "index.html").read_text()
    assert len(list((tmp_path / "two" / "images").iterdir())) == 3 * (1 + 2)
    assert page.count("<h3") == 3


def test_atlas_concepts_flag_sets_each_layer_s_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--concepts N`` is build_atlas(concepts=N); 0 turns the section off."""
    pages = {}
    for count in (2, 0):
        out = tmp_path / str(count)
        argv = ["atlas", "convlens:digits_cnn", "--data", "digits", "--layers", "features.4", "--units", "1"]
        assert main([*argv, "--k", "1", "--steps", "1", "--concepts", str(count), "--out", str(out)]) == 0
        pages[count] = "\n".join(p.read_text() for p in out.rglob("*.html"))
    capsys.readouterr()
    assert pages[2].count('id="concept-') == 2
    assert 'id="concept-' not in pages[0]


def test_concepts_of_a_model_without_class_scores_has_no_importance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A segmenter's per-pixel scores have no class to weigh a concept for: the page says so."""
    spec = tmp_path / "seg.py"
    spec.write_text(
        "from torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))\n"
    )
    out = tmp_path / "page"
    argv = ["concepts", f"{spec}:build", "--layer", "1", "--data", "digits", "--n", "2", "--k", "2"]
    assert main([*argv, "--steps", "0", "--weights", "random", "--out", str(out)]) == 0
    assert "no (N, classes) scores: no importance" in capsys.readouterr().err
    assert "Importance not computed" in (out / "index.html").read_text()
