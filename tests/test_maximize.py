from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import pytest
import torch
from torch import Tensor, nn

import convlens as cl
from convlens.errors import (
    AmbiguousLayerError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    ShapeError,
)
from convlens.featureviz.maximize import ActivationMaximizer, MaximizationResult
from convlens.featureviz.objectives import Objective, channel, class_logit, l1, neuron
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import InplaceNet, ReusedNet, seeded, seeded_alexnet, without_inplace

DIGITS = (1, 1, 28, 28)


def small_net() -> nn.Sequential:
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    seeded(net)
    return net


# -- the result ---------------------------------------------------------------------------


def test_result_shapes_and_final_value() -> None:
    net = small_net()
    am = ActivationMaximizer(
        net, channel("3", 2) - 0.1 * l1(), input_shape=(2, 3, 12, 12), steps=6, transforms=True
    )
    res = am.run()
    assert isinstance(res, MaximizationResult)
    assert res.image.shape == (2, 3, 12, 12)
    assert res.image.dtype == torch.float32
    assert not res.image.requires_grad
    assert res.history.shape == (6,)
    assert res.values.shape == (2,)
    assert res.value == pytest.approx(float(res.values.mean()))
    assert repr(res.objective) == "channel('3', 2) - 0.1 * l1()"
    # The final value is the objective of res.image itself, without augmentation.
    with torch.no_grad():
        act = net[:4](res.image)
    want = act[:, 2].mean((1, 2)) - 0.1 * res.image.abs().mean((1, 2, 3))
    torch.testing.assert_close(res.values, want)


def test_objective_rises(digits: nn.Module) -> None:
    res = ActivationMaximizer(digits, channel("features.3", 4), input_shape=DIGITS, steps=20).run()
    assert res.history[-1] > res.history[0]
    assert res.value > float(res.history[0])


def test_value_range_is_respected(digits: nn.Module) -> None:
    for param in ("pixel", "fft"):
        res = ActivationMaximizer(
            digits, class_logit(1), input_shape=DIGITS, steps=10, lr=0.5, param=param, value_range=(0.2, 0.7)
        ).run()
        assert float(res.image.min()) >= 0.2
        assert float(res.image.max()) <= 0.7


def test_fft_parameterization_odd_sizes_and_1d() -> None:
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())
    res = ActivationMaximizer(net, channel("1", 1), input_shape=(1, 2, 9, 11), steps=4, param="fft").run()
    assert res.image.shape == (1, 2, 9, 11)
    net1d = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU())
    res1d = ActivationMaximizer(net1d, channel("0", 0), input_shape=(2, 2, 15), steps=4, param="fft").run()
    assert res1d.image.shape == (2, 2, 15)
    assert res1d.history[-1] > res1d.history[0]


def test_one_objective_per_sample() -> None:
    net = small_net()
    res = ActivationMaximizer(net, channel("3", [0, 5, 7]), input_shape=(3, 3, 8, 8), steps=15, lr=0.1).run()
    with torch.no_grad():
        means = net[:4](res.image).mean((2, 3))  # (3 images, 8 channels)
    torch.testing.assert_close(res.values, means[[0, 1, 2], [0, 5, 7]])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype: torch.dtype) -> None:
    net = small_net().to(dtype)
    res = ActivationMaximizer(net, class_logit(2), input_shape=(1, 3, 8, 8), steps=3, transforms=True).run()
    assert res.image.dtype == dtype
    assert res.history.dtype == torch.float32


# -- determinism and the global RNG ------------------------------------------------------------


@pytest.mark.parametrize(("param", "transforms"), [("pixel", False), ("pixel", True), ("fft", True)])
def test_same_seed_same_image(digits: nn.Module, param: str, transforms: bool) -> None:
    def run(seed: int) -> Tensor:
        am = ActivationMaximizer(
            digits,
            class_logit(7) - 0.1 * l1(),
            input_shape=(2, 1, 28, 28),
            steps=8,
            seed=seed,
            param=param,  # type: ignore[arg-type]
            transforms=transforms,
            value_range=(0, 1),
        )
        return am.run().image

    rng = torch.random.get_rng_state()
    first = run(3)
    assert torch.equal(first, run(3))
    assert not torch.equal(first, run(4))
    assert torch.equal(torch.random.get_rng_state(), rng)


# -- the model is left as found --------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"input_shape": (1, 3, 8, 8), "steps": 3, "transforms": True},
        {"input_shape": (1, 3, 16, 16), "steps": 2, "normalize": "imagenet"},  # picture space
    ],
)
def test_model_unchanged_after_success(options: dict[str, object]) -> None:
    net = InplaceNet()
    seeded(net)
    net.train()
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    net.features[0].weight.requires_grad_(False)
    before, hooks_before = snapshot(net), global_hook_counts()
    obj = channel("features.3", 1) + 0.5 * class_logit(2)
    ActivationMaximizer(net, obj, **options).run()  # type: ignore[arg-type]
    assert_unchanged(net, before)
    assert global_hook_counts() == hooks_before


def test_runs_in_eval_mode() -> None:
    modes: list[bool] = []

    class Spy(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            modes.append(self.training)
            return x

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), Spy(), nn.Dropout(0.5))
    net.train()
    ActivationMaximizer(net, channel("2", 1), input_shape=(1, 1, 6, 6), steps=2).run()
    assert len(modes) >= 3  # two steps and the final evaluation (and a shape pass on meta)
    assert not any(modes)
    assert net.training
    assert all(m.training for m in net.modules())


def test_model_unchanged_after_exception_in_objective() -> None:
    net = small_net()
    calls = [0]

    def boom(acts: Mapping[str, Tensor], image: Tensor) -> Tensor:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("objective failed")
        return acts["3"][:, 0].mean((1, 2))

    before = snapshot(net)
    am = ActivationMaximizer(
        net, Objective(boom, name="boom()", layers=frozenset({"3"})), input_shape=(1, 3, 8, 8), steps=5
    )
    with pytest.raises(RuntimeError, match="objective failed"):
        am.run()
    assert_unchanged(net, before)


def test_model_unchanged_after_exception_in_forward() -> None:
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.calls = 0

        def forward(self, x: Tensor) -> Tensor:
            if x.device.type != "meta":
                self.calls += 1
                if self.calls == 2:
                    raise RuntimeError("forward failed")
            out: Tensor = self.conv(x)
            return out

    net = Flaky()
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="forward failed"):
        ActivationMaximizer(net, channel("conv", 1), input_shape=(1, 1, 5, 5), steps=4).run()
    assert_unchanged(net, before)


# -- hooks: only the objective's layers, early stop, in-place ReLU --------------------------


class Tripwire(nn.Module):
    """Fails if it runs on real data: the forward must stop before it."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "meta":
            raise AssertionError("ran past the last tapped layer")
        return x


def test_forward_stops_after_the_last_tapped_layer() -> None:
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3), Tripwire())
    res = ActivationMaximizer(
        net, channel("2", 1) + 0.1 * neuron("0", 2), input_shape=(1, 1, 8, 8), steps=3
    ).run()
    assert res.history[-1] > res.history[0]


def test_class_logit_runs_the_whole_forward() -> None:
    calls = [0]
    net = small_net()

    def count(_m: nn.Module, _a: tuple[Tensor, ...], _o: Tensor) -> None:
        calls[0] += 1

    handle = net[7].register_forward_hook(count)
    try:
        ActivationMaximizer(net, class_logit(1) + channel("0", 0), input_shape=(1, 3, 8, 8), steps=4).run()
    finally:
        handle.remove()
    assert calls[0] >= 5  # four steps and the final evaluation (the meta pass may add one)


def test_inplace_relu_alexnet_equals_inplace_false() -> None:
    model = seeded_alexnet()
    twin = without_inplace(model)
    shape = (1, 3, 64, 64)
    for obj in (channel("features.10", 5), channel("features.10", 5) + 0.01 * class_logit(3)):
        a = ActivationMaximizer(model, obj, input_shape=shape, steps=3, lr=0.1).run()
        b = ActivationMaximizer(twin, obj, input_shape=shape, steps=3, lr=0.1).run()
        assert torch.equal(a.image, b.image)
        assert torch.equal(a.history, b.history)
        # features.10 is read before the in-place ReLU of features.11: its mean can be negative.
        with cl.LayerTap(model, ["features.10"]) as tap, torch.no_grad():
            logits = model(a.image)
        want = tap["features.10"][:, 5].mean((1, 2))
        if obj.reads_output:
            want = want + 0.01 * logits[:, 3]
        torch.testing.assert_close(a.values, want)


def test_reused_module_by_call() -> None:
    net = ReusedNet()
    seeded(net)
    res = ActivationMaximizer(net, channel("relu#1", 2), input_shape=(1, 3, 6, 6), steps=3).run()
    assert res.values.shape == (1,)
    with pytest.raises(AmbiguousLayerError, match="'relu#0', 'relu#1', 'relu#2'"):
        ActivationMaximizer(net, channel("relu", 2), input_shape=(1, 3, 6, 6))
    with pytest.raises(LayerNotFoundError, match="runs 3 times"):
        ActivationMaximizer(net, channel("relu#3", 2), input_shape=(1, 3, 6, 6))


# -- bad input: clear errors before any work --------------------------------------------------


class RealCallCounter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.real_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "meta":
            self.real_calls += 1
        out: Tensor = self.features(x)
        return out


def test_unknown_layer_names_the_nearest() -> None:
    net = RealCallCounter()
    with pytest.raises(
        LayerNotFoundError, match=r"has no layer 'features\.2'\. Did you mean 'features\.1'\?"
    ):
        ActivationMaximizer(net, channel("features.2", 0), input_shape=(1, 3, 8, 8))
    assert net.real_calls == 0


def test_index_out_of_range_names_layer_and_size() -> None:
    net = RealCallCounter()
    with pytest.raises(
        InvalidArgumentError,
        match=r"channel 4 is out of range: layer 'features\.0' has 4 channels \(0 to 3\)",
    ):
        ActivationMaximizer(net, channel("features.0", 4), input_shape=(1, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="class 9 is out of range"):
        ActivationMaximizer(small_net(), class_logit(9), input_shape=(1, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="lists 2 indices for a batch of 1"):
        ActivationMaximizer(net, channel("features.0", [0, 1]), input_shape=(1, 3, 8, 8))
    assert net.real_calls == 0


def test_input_the_model_rejects() -> None:
    with pytest.raises(
        ShapeError, match=r"0 expects 3 input channels, got 1 \(Conv2d, input shape \[1, 1, 8, 8\]\)"
    ):
        ActivationMaximizer(small_net(), channel("0", 0), input_shape=(1, 1, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, InvalidArgumentError, "steps must be an int >= 1"),
        ({"steps": 2.5}, InvalidTypeError, "steps must be an int"),
        ({"lr": 0}, InvalidArgumentError, "lr must be a finite number > 0"),
        ({"seed": -1}, InvalidArgumentError, "seed must be an int >= 0"),
        ({"param": "pixl"}, InvalidArgumentError, "Did you mean 'pixel'"),
        ({"value_range": (1, 0)}, InvalidArgumentError, "lo < hi"),
        ({"value_range": 1}, InvalidTypeError, "pair"),
        ({"transforms": "yes"}, InvalidArgumentError, "'standard', 'maco'; got 'yes'"),
        ({"transforms": 1}, InvalidTypeError, "True, False, None or one of"),
        ({"input_shape": (3,)}, InvalidArgumentError, "at least two ints"),
        ({"input_shape": "1,3,8,8"}, InvalidTypeError, "sequence of ints"),
        ({"input_shape": (1, 3, 8), "transforms": True}, InvalidArgumentError, "2-D images"),
    ],
)
def test_bad_options(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    options: dict[str, object] = {"input_shape": (1, 3, 8, 8), **kwargs}
    with pytest.raises(error, match=match):
        ActivationMaximizer(small_net(), channel("0", 0), **options)  # type: ignore[arg-type]


def test_bad_model_or_objective() -> None:
    with pytest.raises(InvalidTypeError, match="Objective"):
        ActivationMaximizer(small_net(), "features.0", input_shape=(1, 3, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"nn\.Module"):
        ActivationMaximizer(object(), channel("0", 0), input_shape=(1, 3, 8, 8))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda acts, image: acts["0"].mean(), r"one value per sample, shape \(1,\)"),
        (lambda acts, image: torch.ones(1), "does not depend on the image"),
    ],
)
def test_bad_custom_objective(fn: Callable[[Mapping[str, Tensor], Tensor], Tensor], match: str) -> None:
    net = small_net()
    before = snapshot(net)
    am = ActivationMaximizer(
        net, Objective(fn, name="custom()", layers=frozenset({"0"})), input_shape=(1, 3, 8, 8), steps=2
    )
    with pytest.raises(InvalidArgumentError, match=match):
        am.run()
    assert_unchanged(net, before)


# -- the lecture: "CNN is easily fooled", and "no ink" --------------------------------------


def test_class_logits_are_easily_fooled(digits: nn.Module) -> None:
    # One image per class in one batch: image i ascends the logit of class i.
    res = ActivationMaximizer(
        digits, class_logit(range(10)), input_shape=(10, 1, 28, 28), steps=30, lr=0.1, value_range=(0, 1)
    ).run()
    with torch.no_grad():
        start = digits(torch.full((1, 1, 28, 28), 0.5))[0]  # the initial image is ~0.5 everywhere
        logits = digits(res.image)
    torch.testing.assert_close(res.values, logits.diagonal())
    assert bool((logits.diagonal() > start + 10).all())  # every logit rose well above its start
    assert int((logits.argmax(1) == torch.arange(10)).sum()) >= 8  # "CNN is easily fooled"


def test_l1_penalty_means_no_ink(digits: nn.Module) -> None:
    classes = [0, 3, 8]

    def run(weight: float) -> Tensor:
        obj = class_logit(classes) - weight * l1() if weight else class_logit(classes)
        res = ActivationMaximizer(
            digits, obj, input_shape=(3, 1, 28, 28), steps=50, lr=0.1, value_range=(0, 1)
        ).run()
        return res.image

    plain, sparse = run(0.0), run(100.0)
    ink_plain, ink_sparse = plain.abs().mean((1, 2, 3)), sparse.abs().mean((1, 2, 3))
    assert bool((ink_sparse < 0.5 * ink_plain).all())
    with torch.no_grad():
        assert digits(sparse).argmax(1).tolist() == classes  # still read as its class, with little ink


# -- the pieces: transforms and the spectrum ----------------------------------------------------


def test_standard_transforms_are_differentiable_and_stay_in_range() -> None:
    from convlens.featureviz.transforms import standard

    image = torch.rand(4, 3, 20, 30, generator=torch.Generator().manual_seed(0), requires_grad=True)
    generator = torch.Generator().manual_seed(1)
    out = standard(image, generator, fill=0.5)
    assert out.shape == image.shape
    # Bilinear sampling mixes input values and the grey pad: nothing leaves their range.
    low, high, values = float(image.detach().min()), float(image.detach().max()), out.detach()
    assert float(values.min()) >= min(low, 0.5) - 1e-6
    assert float(values.max()) <= max(high, 0.5) + 1e-6
    (grad,) = torch.autograd.grad(out.sum(), [image])
    assert grad.abs().sum() > 0
    again = standard(image, torch.Generator().manual_seed(1), fill=0.5)
    assert torch.equal(out, again)  # the generator alone decides the draw
    assert not torch.equal(out, standard(image, generator, fill=0.5))


def test_spectrum_scale_is_one_over_frequency() -> None:
    from convlens.featureviz.param import spectrum_scale as _spectrum_scale

    scale = _spectrum_scale((8, 10), decay_power=1.0)
    assert scale.shape == (8, 6)  # rfft keeps 10 // 2 + 1 columns
    assert float(scale[0, 0]) == pytest.approx(10.0)  # f = 0 is clamped to 1 / max(h, w)
    assert float(scale[0, 5]) == pytest.approx(2.0)  # f = 0.5 cycles per pixel
    assert float(scale[4, 0]) == pytest.approx(2.0)
    assert torch.equal(_spectrum_scale((8, 10), decay_power=0.0), torch.ones(8, 6, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda(digits: nn.Module) -> None:
    model = copy.deepcopy(digits).cuda()
    before = snapshot(model)

    def run() -> MaximizationResult:
        am = ActivationMaximizer(
            model, class_logit([1, 2]) - 0.1 * l1(), input_shape=(2, 1, 28, 28), steps=10, transforms=True
        )
        return am.run()

    res = run()
    assert res.image.device.type == "cuda"
    assert res.history.device.type == "cuda"
    assert res.history[-1] > res.history[0]
    torch.testing.assert_close(run().image, res.image)  # cuDNN may not be bit-exact
    assert_unchanged(model, before)


# -- the probe stops at the objective; a model writing into its input ------------------------


class Raiser(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("must not run")


def test_building_the_maximizer_does_not_run_past_the_objective() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Raiser())
    res = ActivationMaximizer(net, channel("0", 1), input_shape=(1, 3, 8, 8), steps=2).run()
    assert res.image.shape == (1, 3, 8, 8)
    # The digits CNN's head cannot take 32x32, but an objective on features.3 never reaches it.
    from convlens.models.zoo import digits_cnn

    ActivationMaximizer(digits_cnn(), channel("features.3", 1), input_shape=(1, 1, 32, 32), steps=1).run()
    with pytest.raises(RuntimeError, match="must not run"):  # the model's own error, as it is
        ActivationMaximizer(net, class_logit(0), input_shape=(1, 3, 8, 8))


def test_a_model_writing_into_its_input_cannot_change_the_image() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3))
    res = ActivationMaximizer(
        net, channel("1", 0), input_shape=(1, 3, 8, 8), steps=3, value_range=(-1.0, 1.0)
    ).run()
    assert float(res.image.min()) < 0


# -- picture space: normalize, param, transforms ------------------------------------------------

PICTURE = (1, 3, 16, 16)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def picture_net(channels: int = 6) -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(3, channels, 3), nn.ReLU())
    seeded(net)
    return net


def picture_run(**kwargs: object) -> MaximizationResult:
    options: dict[str, object] = {"input_shape": PICTURE, "steps": 3, "normalize": "imagenet", **kwargs}
    return ActivationMaximizer(picture_net(), channel("1", 2), **options).run()  # type: ignore[arg-type]


@pytest.mark.parametrize("param", ["pixel", "fft", "maco"])
@pytest.mark.parametrize("transforms", [False, "standard", "maco"])
def test_same_seed_same_picture(param: str, transforms: object) -> None:
    first = picture_run(param=param, transforms=transforms, seed=3)
    again = picture_run(param=param, transforms=transforms, seed=3)
    assert first.picture is not None
    assert again.picture is not None
    assert torch.equal(first.picture, again.picture)
    assert torch.equal(first.image, again.image)
    assert torch.equal(first.history, again.history)
    if param == "maco" and transforms == "maco":  # the seed matters
        other = picture_run(param=param, transforms=transforms, seed=4)
        assert other.picture is not None
        assert not torch.equal(first.picture, other.picture)


@pytest.mark.parametrize(
    ("normalize", "mean", "std"),
    [
        ("imagenet", IMAGENET_MEAN, IMAGENET_STD),
        ("lecture", (0.5,) * 3, (0.5,) * 3),
        (((0.1, 0.2, 0.3), (0.5, 0.25, 2.0)), (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)),
        ((0.3, 0.7), (0.3,) * 3, (0.7,) * 3),
    ],
)
def test_the_image_is_the_normalized_picture(
    normalize: object, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    res = picture_run(normalize=normalize, steps=2)
    assert res.picture is not None
    assert res.picture.shape == PICTURE
    assert res.picture.dtype == torch.float32
    assert not res.picture.requires_grad
    assert float(res.picture.min()) >= 0
    assert float(res.picture.max()) <= 1
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in (mean, std))
    torch.testing.assert_close(res.image, (res.picture - m) / s)
    # The final values are the objective of res.image, as the model sees it.
    with torch.no_grad():
        want = picture_net()(res.image)[:, 2].mean((1, 2))
    torch.testing.assert_close(res.values, want)


def test_without_normalize_there_is_no_picture() -> None:
    res = ActivationMaximizer(picture_net(), channel("1", 2), input_shape=PICTURE, steps=2).run()
    assert res.picture is None


@pytest.mark.parametrize(("param", "transforms"), [("maco", "maco"), ("fft", "standard"), ("pixel", True)])
def test_picture_space_leaves_the_global_rng_alone(param: str, transforms: object) -> None:
    net = picture_net()  # building a module draws its initial weights from the global RNG
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    expected = torch.randn(5)
    torch.manual_seed(123)
    ActivationMaximizer(
        net,
        channel("1", 2),
        input_shape=PICTURE,
        steps=2,
        normalize="imagenet",
        param=param,  # type: ignore[arg-type]
        transforms=transforms,  # type: ignore[arg-type]
    ).run()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(torch.randn(5), expected)


@pytest.mark.parametrize("param", ["maco", "fft"])
def test_picture_space_leaves_the_model_as_found_after_an_error(param: str) -> None:
    net = InplaceNet()
    seeded(net)
    net.train()
    calls = [0]

    def boom(acts: Mapping[str, Tensor], image: Tensor) -> Tensor:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("objective failed")
        return acts["features.3"][:, 0].mean((1, 2))

    before, hooks_before = snapshot(net), global_hook_counts()
    grad_mode = torch.is_grad_enabled()
    am = ActivationMaximizer(
        net,
        Objective(boom, name="boom()", layers=frozenset({"features.3"})),
        input_shape=PICTURE,
        steps=4,
        normalize="imagenet",
        param=param,  # type: ignore[arg-type]
    )
    with pytest.raises(RuntimeError, match="objective failed"):
        am.run()
    assert calls[0] == 2
    assert_unchanged(net, before)
    assert global_hook_counts() == hooks_before
    assert torch.is_grad_enabled() == grad_mode


def test_a_batch_optimizes_one_objective_per_image() -> None:
    net = picture_net(6)
    res = ActivationMaximizer(
        net, channel("1", range(6)), input_shape=(6, 3, 16, 16), steps=6, normalize="imagenet"
    ).run()
    with torch.no_grad():
        means = net(res.image).mean((2, 3))  # (image, channel)
    torch.testing.assert_close(res.values, means.diagonal())
    # Image k excites channel k more than the other images do: each image had its own objective.
    own = means.diagonal()
    others = (means.sum(0) - own) / 5
    assert int((own > others).sum()) >= 5, f"own {own.tolist()} vs others {others.tolist()}"
    assert float((own - others).mean()) > 0


def test_a_whole_layer_of_64_channels_in_one_run() -> None:
    # The atlas's use: every channel of a layer, one picture each, in one batch. Each picture
    # follows its own objective only: changing image 0's channel leaves the other 63 as they were.
    net = picture_net(64)

    def run(first: int) -> MaximizationResult:
        channels = [first, *range(1, 64)]
        shape = (64, 3, 12, 12)
        return ActivationMaximizer(
            net, channel("1", channels), input_shape=shape, steps=8, normalize="lecture"
        ).run()

    res, other = run(0), run(5)
    assert res.picture is not None
    assert other.picture is not None
    assert res.picture.shape == (64, 3, 12, 12)
    torch.testing.assert_close(other.picture[1:], res.picture[1:], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(other.picture[0], res.picture[0])
    with torch.no_grad():
        means = net(res.image).mean((2, 3))
    torch.testing.assert_close(res.values, means.diagonal())


def test_the_recommended_defaults() -> None:
    from convlens.featureviz.maximize import RECOMMENDED_PARAM, RECOMMENDED_TRANSFORMS

    assert (RECOMMENDED_PARAM, RECOMMENDED_TRANSFORMS) == ("fft", "standard")
    am = ActivationMaximizer(picture_net(), channel("1", 0), input_shape=PICTURE, normalize="imagenet")
    assert am.param == RECOMMENDED_PARAM
    assert am.transforms == RECOMMENDED_TRANSFORMS
    assert am.decorrelate is True
    assert am.decay_power == 1.25  # the photographs' amplitude decay, in picture space only
    assert am.lr == 0.05
    assert am.steps == 256
    assert am.normalize == (IMAGENET_MEAN, IMAGENET_STD)
    plain = ActivationMaximizer(picture_net(), channel("1", 0), input_shape=PICTURE)
    assert (plain.param, plain.transforms, plain.decorrelate, plain.lr) == ("pixel", None, False, 0.05)
    assert plain.decay_power == 1.0
    assert plain.normalize is None
    # True is the recommended transforms, in either space; an explicit choice is kept.
    assert ActivationMaximizer(
        picture_net(), channel("1", 0), input_shape=PICTURE, transforms=True
    ).transforms == (RECOMMENDED_TRANSFORMS)
    fft = ActivationMaximizer(
        picture_net(),
        channel("1", 0),
        input_shape=PICTURE,
        normalize="lecture",
        param="fft",
        transforms="standard",
    )
    assert (fft.param, fft.transforms, fft.decorrelate, fft.lr) == ("fft", "standard", True, 0.05)
    grey = ActivationMaximizer(
        nn.Sequential(nn.Conv2d(1, 2, 3)), channel("0", 0), input_shape=(1, 1, 16, 16), normalize=(0.5, 0.5)
    )
    assert (grey.param, grey.decorrelate) == ("fft", False)


def test_naturalness_defaults_and_checks() -> None:
    from convlens.featureviz.maximize import NATURALNESS

    def made(**kwargs: object) -> ActivationMaximizer:
        options: dict[str, object] = {"input_shape": PICTURE, **kwargs}
        return ActivationMaximizer(picture_net(), channel("1", 0), **options)  # type: ignore[arg-type]

    assert made(normalize="imagenet").naturalness == NATURALNESS == 20.0  # pictures, fft
    assert made(normalize="imagenet", param="pixel").naturalness == NATURALNESS
    assert made(normalize="imagenet", param="maco").naturalness == 0.0  # a photograph's amplitude already
    assert made().naturalness == 0.0  # model values: no picture to hold to photographs
    start = torch.full(PICTURE, 0.5)
    assert made(normalize="imagenet", start=start).naturalness == 0.0  # accentuation: the anchor's job
    assert made(normalize="imagenet", naturalness=3).naturalness == 3.0
    assert made(naturalness=0).naturalness == 0.0
    with pytest.raises(InvalidArgumentError, match=r"naturalness=2\.0 .* needs normalize="):
        made(naturalness=2)
    with pytest.raises(InvalidArgumentError, match="naturalness must be a finite number >= 0; got -1"):
        made(normalize="imagenet", naturalness=-1)
    with pytest.raises(InvalidTypeError, match="naturalness must be a number"):
        made(normalize="imagenet", naturalness=True)


def test_naturalness_holds_the_spectrum_to_photographs() -> None:
    from convlens.featureviz.colour import spectrum_deviation

    def deviation(weight: float) -> tuple[Tensor, MaximizationResult]:
        res = ActivationMaximizer(
            picture_net(),
            channel("1", 2),
            input_shape=(2, 3, 32, 32),
            steps=40,
            normalize="imagenet",
            naturalness=weight,
        ).run()
        assert res.picture is not None
        return spectrum_deviation(res.picture.double()), res

    free, _ = deviation(0.0)
    held, held_res = deviation(200.0)
    assert bool((held < 0.5 * free).all()), (held, free)
    # The penalty is not the objective: values are the unit's alone, evaluated on the final image.
    again = channel("1", 2)({"1": picture_net()(held_res.image)}, held_res.image)
    torch.testing.assert_close(held_res.values, again.float())


def test_standard_transforms_on_the_model_values() -> None:
    res = ActivationMaximizer(
        picture_net(),
        channel("1", 2),
        input_shape=(2, 3, 16, 16),
        steps=6,
        lr=0.1,
        transforms="standard",
        value_range=(0, 1),
    ).run()
    assert res.picture is None
    assert res.image.shape == (2, 3, 16, 16)
    assert float(res.image.min()) >= 0
    assert float(res.image.max()) <= 1
    assert res.history[-1] > res.history[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_picture_equals_cpu() -> None:
    net = picture_net()
    shape = (2, 3, 32, 32)
    obj = channel("1", [1, 4])

    def run(model: nn.Module) -> MaximizationResult:
        am = ActivationMaximizer(model, obj, input_shape=shape, steps=5, normalize="imagenet", seed=2)
        assert (am.param, am.transforms) == ("maco", "maco")
        return am.run()

    cpu = run(net)
    model = copy.deepcopy(net).cuda()
    before = snapshot(model)
    gpu = run(model)
    assert gpu.picture is not None
    assert cpu.picture is not None
    assert gpu.picture.device.type == "cuda"
    assert gpu.image.device.type == "cuda"
    # The draws come from a CPU generator: the same crops and noise on both devices.
    torch.testing.assert_close(gpu.picture.cpu(), cpu.picture, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.values.cpu(), cpu.values, rtol=1e-4, atol=1e-4)
    assert_unchanged(model, before)
