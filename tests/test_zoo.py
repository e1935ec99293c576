from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import convlens as cl
from convlens.models import zoo
from invariants import assert_unchanged, snapshot


def test_alphago_policy_as_the_lecture_describes_it() -> None:
    k = 192
    net = zoo.alphago_policy(k)
    report = cl.trace_shapes(net, (1, 48, 19, 19))
    convs = [row for row in report if row.type == "Conv2d"]
    assert len(convs) == 13  # 1 (5x5) + 11 (3x3) + 1 (1x1)
    for row in report:
        if len(row.output_shape) == 4:
            assert row.output_shape[-2:] == (19, 19), row.name
    assert convs[0].params == 48 * k * 5 * 5 + k
    assert all(row.params == k * k * 3 * 3 + k for row in convs[1:12])
    assert convs[12].params == k  # one 1x1 filter, no shared bias
    assert report["position_bias"].params == 19 * 19  # a different bias at each point
    # Zero padding to 23x23 (5x5 filters) and to 21x21 (3x3 filters) keeps 19x19.
    assert convs[0].formula == "floor((19 + 2*2 - 1*(5-1) - 1) / 1) + 1 = 19"
    assert convs[1].formula == "floor((19 + 2*1 - 1*(3-1) - 1) / 1) + 1 = 19"
    assert report.output_shape == (1, 361)
    total = 48 * k * 25 + k + 11 * (k * k * 9 + k) + k + 361
    assert report.params == total == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("k", [128, 256, 384])
def test_alphago_policy_other_widths(k: int) -> None:
    net = zoo.alphago_policy(k)
    probs = net(torch.zeros(2, 48, 19, 19))
    assert probs.shape == (2, 361)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    assert net.get_parameter("features.22.weight").shape == (k, k, 3, 3)


def test_alphago_rejects_bad_width() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="k must be an int >= 1; got 0"):
        zoo.alphago_policy(0)


def test_position_bias_is_per_position() -> None:
    net = zoo.alphago_policy(4)
    with torch.no_grad():
        net.head.weight.zero_()
        net.position_bias.bias[0, 0, 3, 4] = 5.0
    probs = net(torch.randn(1, 48, 19, 19))
    assert int(probs.argmax()) == 3 * 19 + 4


def test_create_is_seeded_and_keeps_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = zoo.create("convlens:alphago_policy", seed=1)
    b = zoo.create("convlens:alphago_policy", seed=1)
    c = zoo.create("convlens:alphago_policy", seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    weight = "features.0.weight"
    assert torch.equal(a.get_parameter(weight), b.get_parameter(weight))
    assert not torch.equal(a.get_parameter(weight), c.get_parameter(weight))
    assert not a.training


def test_create_torchvision() -> None:
    pytest.importorskip("torchvision")
    model = zoo.create("torchvision:alexnet")
    assert type(model).__name__ == "AlexNet"
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'alexnet'"):
        zoo.create("torchvision:alexnt")


def test_create_from_file(tmp_path: Path) -> None:
    source = tmp_path / "my_net.py"
    source.write_text(
        "import torch.nn as nn\n"
        "def build():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())\n"
        "def broken():\n    return 3\n"
    )
    model = zoo.create(f"{source}:build")
    assert isinstance(model, nn.Sequential)
    with pytest.raises(cl.InvalidArgumentError, match=r"has no function 'buld'\. Did you mean 'build'"):
        zoo.create(f"{source}:buld")
    with pytest.raises(cl.InvalidTypeError, match=r"returned int, not an nn\.Module"):
        zoo.create(f"{source}:broken")
    with pytest.raises(cl.InvalidArgumentError, match="does not exist"):
        zoo.create(f"{tmp_path / 'missing.py'}:build")
    (tmp_path / "bad.py").write_text("import no_such_module_here\n")
    with pytest.raises(cl.InvalidArgumentError, match="ModuleNotFoundError"):
        zoo.create(f"{tmp_path / 'bad.py'}:build")


@pytest.mark.parametrize("spec", ["alexnet", "torchvision:", "foo:bar", ":x"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(cl.InvalidArgumentError):
        zoo.create(spec)


def test_tracing_alphago_leaves_it_unchanged() -> None:
    net = zoo.alphago_policy(8).train()
    before = snapshot(net)
    cl.trace_shapes(net, (1, 48, 19, 19))
    cl.LayerTap(net, ["features.0", "head"]).run(torch.randn(1, 48, 19, 19))
    assert_unchanged(net, before)


# -- weights ------------------------------------------------------------------------


def fail_downloads(monkeypatch: pytest.MonkeyPatch, hub: Path) -> list[str]:
    """Point the torch hub cache at ``hub`` and make every download fail, offline or not."""
    monkeypatch.setenv("TORCH_HOME", str(hub))
    attempts: list[str] = []

    def offline(url: str, *_args: object, **_kwargs: object) -> None:
        attempts.append(url)
        raise OSError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return attempts


def seeded_state(spec: str, seed: int) -> dict[str, torch.Tensor]:
    return zoo.create(spec, seed=seed).state_dict()


def test_load_a_saved_state_dict(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    state = seeded_state("torchvision:alexnet", seed=7)
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    model = zoo.load("torchvision:alexnet", weights=path)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not model.training
    assert zoo.weights_note(model) is None
    other = zoo.load("torchvision:alexnet", weights=str(path), seed=3)  # the file wins over the seed
    assert torch.equal(other.state_dict()["features.0.weight"], state["features.0.weight"])


def test_imagenet_weights_come_from_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torchvision = pytest.importorskip("torchvision")
    attempts = fail_downloads(monkeypatch, tmp_path)
    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = seeded_state("torchvision:alexnet", seed=11)  # stands in for the real ImageNet file
    torch.save(state, cache / Path(url).name)
    for weights in ("imagenet", "auto"):
        model = zoo.load("torchvision:alexnet", weights=weights)
        assert torch.equal(model.state_dict()["classifier.6.weight"], state["classifier.6.weight"])
        assert zoo.weights_note(model) is None
    assert attempts == []


def test_imagenet_fails_clearly_when_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torchvision")
    attempts = fail_downloads(monkeypatch, tmp_path)
    with pytest.raises(
        cl.WeightsUnavailableError, match=r"AlexNet_Weights\.IMAGENET1K_V1 are not in the torch hub cache"
    ):
        zoo.load("torchvision:alexnet", weights="imagenet")
    assert len(attempts) == 1
    # Offline, one failed download per process and cache is enough: the next model does not wait again.
    with pytest.raises(cl.WeightsUnavailableError, match="earlier in this process"):
        zoo.load("torchvision:resnet18", weights="imagenet")
    assert len(attempts) == 1
    with pytest.warns(cl.RandomWeightsWarning):
        zoo.load("torchvision:vgg11", weights="auto")
    assert len(attempts) == 1


def test_auto_falls_back_to_seeded_random_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torchvision")
    fail_downloads(monkeypatch, tmp_path)
    with pytest.warns(cl.RandomWeightsWarning, match="random weights \\(seed 4\\)"):
        model = zoo.load("torchvision:resnet18", seed=4)
    assert zoo.weights_note(model) == "random weights (seed 4): pretrained weights unavailable"
    reference = zoo.load("torchvision:resnet18", weights="random", seed=4)
    assert torch.equal(model.state_dict()["fc.weight"], reference.state_dict()["fc.weight"])
    assert zoo.weights_note(reference) == "random weights (seed 4)"  # asked for: no warning, but said


def test_bad_weights_arguments(tmp_path: Path) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'imagenet'"):
        zoo.load("convlens:alphago_policy", weights="imagnet")
    with pytest.raises(cl.InvalidTypeError, match="got int"):
        zoo.load("convlens:alphago_policy", weights=3)  # type: ignore[arg-type]
    wrong = tmp_path / "wrong.pth"
    torch.save(zoo.alphago_policy(8).state_dict(), wrong)
    with pytest.raises(cl.InvalidArgumentError, match="does not fit AlphaGoPolicy"):
        zoo.load("convlens:alphago_policy", weights=wrong)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(cl.InvalidArgumentError, match="cannot read a state dict"):
        zoo.load("convlens:alphago_policy", weights=junk)
    with pytest.raises(cl.WeightsUnavailableError, match="has no pretrained weights"):
        zoo.load("convlens:alphago_policy", weights="imagenet")


def test_digits_cnn_ships_its_weights() -> None:
    model = zoo.load("convlens:digits_cnn")
    shipped = zoo.digits_cnn()
    assert zoo.weights_note(model) is None
    for name, value in model.state_dict().items():
        assert torch.equal(value, shipped.state_dict()[name])
    random = zoo.load("convlens:digits_cnn", weights="random")
    assert not torch.equal(
        random.state_dict()["features.0.weight"], shipped.state_dict()["features.0.weight"]
    )
    assert zoo.default_input_size("convlens:digits_cnn") == (1, 1, 28, 28)


# --- your own model's weights (issue 18) ----------------------------------------------------------


class TrainedNet(nn.Module):
    """A user's net with a custom parameter that no reset_parameters() covers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x)).relu().mean((2, 3))
        out: torch.Tensor = self.head(h) / self.temperature
        return out


def user_factory(tmp_path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """A ``path.py:build`` spec whose factory loads "trained" weights saved beside it, and those weights."""
    torch.manual_seed(123)
    trained = TrainedNet()
    with torch.no_grad():
        trained.bn.get_buffer("running_mean").copy_(torch.randn(4))
        trained.temperature.fill_(2.0)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    torch.save(state, tmp_path / "trained.pt")
    source = tmp_path / "my_net.py"
    source.write_text(
        "import torch\n"
        "from pathlib import Path\n"
        "from test_zoo import TrainedNet\n"
        "def build():\n"
        "    net = TrainedNet()\n"
        "    net.load_state_dict(torch.load(Path(__file__).parent / 'trained.pt', weights_only=True))\n"
        "    return net\n"
    )
    return f"{source}:build", state


def test_a_user_factory_keeps_its_own_weights_without_a_warning(tmp_path: Path) -> None:
    spec, state = user_factory(tmp_path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RandomWeightsWarning, nothing else either
        model = zoo.load(spec)
    assert zoo.weights_note(model) is None
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not model.training
    with pytest.raises(cl.WeightsUnavailableError, match=r"your own model.*weights='auto'"):
        zoo.load(spec, weights="imagenet")


def test_random_weights_for_a_user_factory_are_reset_seeded_and_said(tmp_path: Path) -> None:
    spec, state = user_factory(tmp_path)
    with pytest.warns(cl.RandomWeightsWarning, match="1 parameters belong to none.*temperature"):
        random = zoo.load(spec, weights="random", seed=5)
    assert zoo.weights_note(random) == "random weights (seed 5)"
    now = random.state_dict()
    assert not torch.equal(now["conv.weight"], state["conv.weight"])
    assert not torch.equal(now["head.weight"], state["head.weight"])
    assert torch.equal(now["bn.running_mean"], torch.zeros(4))  # running statistics reset too
    assert torch.equal(now["temperature"], state["temperature"])  # kept, and the warning names it
    # The reference: the modules' own initialisation under the same seed.
    torch.manual_seed(5)
    reference = TrainedNet()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        for module in reference.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()  # type: ignore[operator]
    assert torch.equal(now["conv.weight"], reference.state_dict()["conv.weight"])
    with pytest.warns(cl.RandomWeightsWarning):
        again = zoo.load(spec, weights="random", seed=5)
    assert torch.equal(again.state_dict()["head.weight"], now["head.weight"])


def test_random_weights_leave_the_global_rng_as_found(tmp_path: Path) -> None:
    spec, _ = user_factory(tmp_path)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    with pytest.warns(cl.RandomWeightsWarning):
        first = zoo.load(spec, weights="random", seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.rand(7)  # another global state: the seeded draws do not depend on it
    with pytest.warns(cl.RandomWeightsWarning):
        second = zoo.load(spec, weights="random", seed=5)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_random_weights_of_a_factory_building_on_cuda_are_seeded_there(tmp_path: Path) -> None:
    source = tmp_path / "cuda_net.py"
    source.write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n    return nn.Conv2d(3, 4, 3, device='cuda')\n"
    )
    torch.cuda.manual_seed(123)
    state = torch.cuda.get_rng_state()
    weight = zoo.load(f"{source}:build", weights="random", seed=5).state_dict()["weight"]
    assert weight.is_cuda
    assert torch.equal(torch.cuda.get_rng_state(), state)  # the user's CUDA generator as found
    torch.rand(7, device="cuda")
    again = zoo.load(f"{source}:build", weights="random", seed=5).state_dict()["weight"]
    assert torch.equal(weight, again)
    reference = nn.Conv2d(3, 4, 3, device="cuda")
    with torch.random.fork_rng(devices=[weight.get_device()]):
        torch.cuda.manual_seed(5)
        reference.reset_parameters()  # drawn from the seeded CUDA generator
    assert torch.equal(weight, reference.weight)


def test_default_classes_of_the_zoo() -> None:
    torchvision = pytest.importorskip("torchvision")
    names = zoo.default_classes("torchvision:alexnet")
    assert names is not None
    assert names == tuple(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    assert zoo.default_classes("convlens:digits_cnn") == tuple(f"digit {d}" for d in range(10))
    assert zoo.default_classes("convlens:alphago_policy") is None
    assert zoo.default_classes("my_net.py:build") is None


# --- naming the output classes (issue 18) ---------------------------------------------------------


def test_class_names_from_imagenet_a_text_file_a_json_list_and_a_list(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    from convlens.models.images import class_names

    imagenet = class_names("imagenet", outputs=1000)
    assert imagenet == tuple(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    text = tmp_path / "classes.txt"
    text.write_text("cat\ndog\n  bird \n\n")  # trailing empty lines are allowed, names are stripped
    assert class_names(text, outputs=3) == ("cat", "dog", "bird")
    assert class_names(str(text)) == ("cat", "dog", "bird")
    listed = tmp_path / "classes.json"
    listed.write_text('["cat", "dog"]')
    assert class_names(listed, outputs=2) == ("cat", "dog")
    assert class_names(["a", "b"], outputs=2) == ("a", "b")


def test_class_names_errors_name_both_counts_and_the_nearest_choice(tmp_path: Path) -> None:
    from convlens.models.images import class_names

    text = tmp_path / "classes.txt"
    text.write_text("cat\ndog\n")
    with pytest.raises(cl.InvalidArgumentError, match="names 2 classes, but the model has 10 outputs"):
        class_names(text, outputs=10)
    with pytest.raises(cl.InvalidArgumentError, match=r"which is no file\. Did you mean 'imagenet'"):
        class_names("imagenett")
    gap = tmp_path / "gap.txt"
    gap.write_text("cat\n\ndog\n")
    with pytest.raises(cl.InvalidArgumentError, match="class 1 has an empty name"):
        class_names(gap)
    bad = tmp_path / "bad.json"
    bad.write_text('{"0": "cat"}')
    with pytest.raises(cl.InvalidArgumentError, match="JSON list of strings"):
        class_names(bad)
    with pytest.raises(cl.InvalidTypeError, match="got int"):
        class_names(3)  # type: ignore[arg-type]
