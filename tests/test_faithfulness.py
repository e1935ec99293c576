from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import convlens as cl
from convlens.attribution.cam import GradCAM
from convlens.attribution.faithfulness import FaithfulnessResult, deletion, insertion
from convlens.errors import ConvlensError, InvalidArgumentError, InvalidTypeError
from helpers import tolerance
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import Bound, Conditioned, InplaceNet, quantize

Method = Callable[..., FaithfulnessResult]
METHODS = [pytest.param(deletion, id="deletion"), pytest.param(insertion, id="insertion")]

# -- a model whose scores can be computed by hand ------------------------------------------

QUADRANT = torch.zeros(4, 4)
QUADRANT[:2, :2] = 1.0  # pixels 0, 1, 4, 5 in raster order


def quadrant_net(constant: float = 2.0) -> nn.Sequential:
    """(N, 1, 4, 4) -> logit 0 = sum of the top-left 2x2 quadrant, logit 1 = ``constant``."""
    linear = nn.Linear(16, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0] = QUADRANT.flatten()
        linear.bias.copy_(torch.tensor([0.0, constant]))
    return nn.Sequential(nn.Flatten(), linear)


def ones(n: int = 1) -> Tensor:
    return torch.ones(n, 1, 4, 4)


def logits(method: Method, maps: Tensor, **kwargs: Any) -> FaithfulnessResult:
    return method(quadrant_net(), ones(), maps.unsqueeze(0), 0, probability=False, **kwargs)


def quadrant_first() -> Tensor:
    return QUADRANT.clone()


def quadrant_last() -> Tensor:
    return 1.0 - QUADRANT


def close(actual: Tensor, expected: list[float] | list[list[float]] | float) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def test_deletion_of_the_quadrant_first_drops_by_one_per_step_then_stays_at_the_baseline() -> None:
    res = logits(deletion, quadrant_first(), intervals=16)
    close(res.fractions, [k / 16 for k in range(17)])
    close(res.curve, [[4.0, 3.0, 2.0, 1.0] + [0.0] * 13])
    close(res.auc, [(3.5 + 2.5 + 1.5 + 0.5) / 16])  # 0.5
    assert res.mode == "deletion"
    assert res.targets is not None
    assert res.targets.tolist() == [0]


def test_deletion_reaches_the_baseline_exactly_when_the_last_quadrant_pixel_goes() -> None:
    close(logits(deletion, quadrant_first(), intervals=4).curve, [[4.0, 0.0, 0.0, 0.0, 0.0]])
    close(
        logits(deletion, quadrant_first(), intervals=8).curve, [[4.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    )


def test_a_reversed_map_gives_a_higher_deletion_auc() -> None:
    good = logits(deletion, quadrant_first(), intervals=16)
    bad = logits(deletion, quadrant_last(), intervals=16)
    close(bad.curve, [[4.0] * 13 + [3.0, 2.0, 1.0, 0.0]])
    close(bad.auc, [(12 * 4 + 8) / 16])  # 3.5
    assert float(bad.auc) > float(good.auc)


def test_insertion_is_the_mirror() -> None:
    good = logits(insertion, quadrant_first(), intervals=16)
    bad = logits(insertion, quadrant_last(), intervals=16)
    close(good.curve, [[0.0, 1.0, 2.0, 3.0] + [4.0] * 13])
    close(bad.curve, [[0.0] * 13 + [1.0, 2.0, 3.0, 4.0]])
    close(good.auc, [3.5])
    close(bad.auc, [0.5])
    assert good.mode == "insertion"


def test_ties_keep_raster_order() -> None:
    # A flat map removes pixels 0, 1 (quadrant), 2, 3 (not), 4, 5 (quadrant), ...
    close(
        logits(deletion, torch.zeros(4, 4), intervals=16).curve, [[4.0, 3.0, 2.0, 2.0, 2.0, 1.0] + [0.0] * 11]
    )


def test_intervals_that_do_not_divide_the_pixels_take_the_floor() -> None:
    # 16 pixels in 3 intervals: 0, 5, 10, 16 pixels removed.
    close(logits(deletion, quadrant_first(), intervals=3).curve, [[4.0, 0.0, 0.0, 0.0]])
    close(logits(insertion, quadrant_last(), intervals=3).curve, [[0.0, 0.0, 0.0, 4.0]])


def test_more_intervals_than_pixels() -> None:
    # 4 pixels in 8 intervals: floor(k / 2) pixels removed at point k.
    x = torch.ones(1, 1, 2, 2)
    linear = nn.Linear(4, 1, bias=False)
    nn.init.ones_(linear.weight)
    model = nn.Sequential(nn.Flatten(), linear)
    res = deletion(model, x, torch.zeros(1, 2, 2), 0, intervals=8, probability=False)
    close(res.curve, [[4.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 0.0]])


def test_mean_and_tensor_baselines() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)  # quadrant holds 0 + 1 + 4 + 5 = 10, mean 7.5
    maps = quadrant_first().unsqueeze(0)
    mean = deletion(quadrant_net(), x, maps, 0, intervals=4, baseline="mean", probability=False)
    close(mean.curve, [[10.0, 30.0, 30.0, 30.0, 30.0]])
    minus_one = insertion(
        quadrant_net(), x, maps, 0, intervals=4, baseline=torch.tensor(-1.0), probability=False
    )
    close(minus_one.curve, [[-4.0, 10.0, 10.0, 10.0, 10.0]])
    per_pixel = torch.arange(16.0).flip(0).view(1, 4, 4)  # broadcast over batch and channels
    res = deletion(quadrant_net(), x, maps, 0, intervals=4, baseline=per_pixel, probability=False)
    close(res.curve, [[10.0, 15.0 + 14 + 11 + 10, 50.0, 50.0, 50.0]])


def reference_blur(x: Tensor, sigma: float = 5.0, radius: int = 5) -> Tensor:
    """A 2-D (not separable) Gaussian blur with replicate padding."""
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    grid = taps.view(-1, 1) ** 2 + taps.view(1, -1) ** 2
    kernel = torch.exp(-grid / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, -1, -1)
    return F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=x.shape[1])


def tiny_cnn(seed: int = 0, classes: int = 5) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    ).eval()


def batch(n: int = 3, size: int = 12, seed: int = 1) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_maps(n: int = 3, size: int = 12, seed: int = 2) -> Tensor:
    return torch.rand(n, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("baseline", ["zeros", "blur", "mean"])
def test_the_curve_starts_at_x_and_ends_at_the_baseline_for_deletion_and_reverse_for_insertion(
    baseline: str,
) -> None:
    model, x = tiny_cnn(), batch()
    base = {
        "zeros": torch.zeros_like(x),
        "blur": reference_blur(x),
        "mean": x.mean(dim=(2, 3), keepdim=True).expand_as(x),
    }[baseline]
    with torch.no_grad():
        on_x, on_base = model(x).softmax(1), model(base).softmax(1)
    targets = on_x.argmax(1)
    expected_x, expected_base = on_x.gather(1, targets.view(-1, 1)), on_base.gather(1, targets.view(-1, 1))
    dele = deletion(model, x, random_maps(), intervals=6, baseline=baseline)  # type: ignore[arg-type]
    ins = insertion(model, x, random_maps(), intervals=6, baseline=baseline)  # type: ignore[arg-type]
    for res in (dele, ins):
        assert res.targets is not None
        assert torch.equal(res.targets, targets)
    torch.testing.assert_close(dele.curve[:, :1], expected_x)
    torch.testing.assert_close(dele.curve[:, -1:], expected_base)
    torch.testing.assert_close(ins.curve[:, :1], expected_base)
    torch.testing.assert_close(ins.curve[:, -1:], expected_x)


def test_blur_of_a_constant_image_is_the_image() -> None:
    x = torch.full((1, 3, 6, 6), 0.25)
    maps = torch.zeros(1, 6, 6)
    model = tiny_cnn()
    a = insertion(model, x, maps, intervals=2, baseline="blur")
    torch.testing.assert_close(a.curve[:, 0], a.curve[:, -1])


# -- a property of every linear model --------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    intervals=st.integers(1, 20),
    levels=st.integers(1, 5),
    batch_size=st.integers(1, 40),
)
def test_deletion_plus_insertion_is_the_score_of_x_plus_that_of_the_baseline_for_a_linear_model(
    seed: int, intervals: int, levels: int, batch_size: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3)).double()
    x = torch.randn(2, 2, 5, 5, generator=generator, dtype=torch.float64)
    base = torch.randn(2, 2, 5, 5, generator=generator, dtype=torch.float64)
    maps = torch.randint(0, levels, (2, 5, 5), generator=generator)  # integer maps with many ties
    kwargs: dict[str, Any] = {
        "intervals": intervals,
        "baseline": base,
        "batch_size": batch_size,
        "probability": False,
    }
    dele, ins = deletion(model, x, maps, 1, **kwargs), insertion(model, x, maps, 1, **kwargs)
    with torch.no_grad():
        total = model(x)[:, 1] + model(base)[:, 1]
    torch.testing.assert_close(dele.curve + ins.curve, total.view(-1, 1).expand(-1, intervals + 1))
    assert dele.curve.dtype == torch.float64


# -- batching ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_batch_size_does_not_change_the_result(method: Method) -> None:
    model, x, maps = tiny_cnn(), batch(), random_maps()
    results = [method(model, x, maps, intervals=5, batch_size=b, baseline="blur") for b in (1, 4, 7, 1000)]
    for res in results[1:]:
        torch.testing.assert_close(res.curve, results[0].curve)
        torch.testing.assert_close(res.auc, results[0].auc)


@pytest.mark.parametrize("method", METHODS)
def test_samples_are_independent(method: Method) -> None:
    model, x, maps = tiny_cnn(), batch(), random_maps()
    together = method(model, x, maps, intervals=5, baseline="mean", batch_size=5)
    for i in range(len(x)):
        alone = method(model, x[i : i + 1], maps[i : i + 1], intervals=5, baseline="mean")
        torch.testing.assert_close(alone.curve, together.curve[i : i + 1])
        assert alone.targets is not None
        assert together.targets is not None
        assert alone.targets.tolist() == together.targets[i : i + 1].tolist()


# -- targets --------------------------------------------------------------------------------


def test_target_none_is_the_prediction_on_x_and_stays_fixed_along_the_curve() -> None:
    x = torch.cat([ones(), torch.zeros(1, 1, 4, 4)])  # predicted: class 0 (4 > 2), class 1 (0 < 2)
    maps = quadrant_first().expand(2, 4, 4)
    res = deletion(quadrant_net(), x, maps, intervals=4, probability=False)
    assert res.targets is not None
    assert res.targets.tolist() == [0, 1]
    close(res.curve, [[4.0, 0.0, 0.0, 0.0, 0.0], [2.0] * 5])  # class 0 kept though class 1 wins after step 0


@pytest.mark.parametrize("target", [[1, 0], torch.tensor([1, 0])], ids=["list", "tensor"])
def test_targets_per_sample(target: list[int] | Tensor) -> None:
    maps = quadrant_first().expand(2, 4, 4)
    res = deletion(quadrant_net(), ones(2), maps, target, intervals=4, probability=False)
    assert res.targets is not None
    assert res.targets.tolist() == [1, 0]
    close(res.curve, [[2.0] * 5, [4.0, 0.0, 0.0, 0.0, 0.0]])


def test_probability_is_the_softmax_of_the_target() -> None:
    res = deletion(quadrant_net(), ones(), quadrant_first().unsqueeze(0), 0, intervals=4)
    expected = [1 / (1 + math.exp(2.0 - v)) for v in (4.0, 0.0, 0.0, 0.0, 0.0)]
    close(res.curve, [expected])
    assert bool(((res.auc >= 0) & (res.auc <= 1)).all())


def test_callable_target_scores_are_used_as_returned() -> None:
    def margin(output: Tensor) -> Tensor:
        return output[:, 0] - output[:, 1]

    res = deletion(quadrant_net(), ones(), quadrant_first().unsqueeze(0), margin, intervals=4)
    assert res.targets is None
    close(res.curve, [[2.0, -2.0, -2.0, -2.0, -2.0]])


# -- errors, raised before any work -------------------------------------------------------


class Counting(nn.Module):
    """Counts real (non-meta) forwards."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "meta":
            self.calls += 1
        out: Tensor = self.inner(x)
        return out


ERRORS: list[tuple[dict[str, Any], type[Exception], str]] = [
    (
        {"maps": torch.zeros(1, 4, 4)},
        InvalidArgumentError,
        r"\(2, 4, 4\) for x of shape \(2, 1, 4, 4\); got \(1, 4, 4\)",
    ),
    (
        {"maps": torch.zeros(2, 4, 3)},
        InvalidArgumentError,
        r"maps must have shape \(N, H, W\).*got \(2, 4, 3\)",
    ),
    ({"maps": torch.full((2, 4, 4), math.nan)}, InvalidArgumentError, "NaN"),
    ({"maps": torch.zeros(2, 4, 4, dtype=torch.complex64)}, InvalidTypeError, "maps must be a real tensor"),
    ({"x": torch.ones(2, 1, 4, 4, dtype=torch.int64)}, InvalidTypeError, r"x must be a float tensor"),
    ({"x": torch.ones(2, 16)}, InvalidTypeError, r"\(N, C, H, W\); got torch.float32 of shape \(2, 16\)"),
    (
        {"x": torch.ones(0, 1, 4, 4), "maps": torch.zeros(0, 4, 4)},
        InvalidArgumentError,
        "at least one sample",
    ),
    ({"intervals": 0}, InvalidArgumentError, "intervals must be an int >= 1; got 0"),
    ({"intervals": 2.5}, InvalidTypeError, "intervals must be an int"),
    ({"intervals": True}, InvalidTypeError, "intervals must be an int"),
    ({"steps": 2, "intervals": 3}, InvalidArgumentError, "steps= is the old spelling of intervals="),
    ({"batch_size": 0}, InvalidArgumentError, "batch_size must be an int >= 1"),
    ({"probability": "yes"}, InvalidTypeError, "probability must be True or False"),
    ({"baseline": "blurr"}, InvalidArgumentError, r"baseline must be one of .*Did you mean 'blur'\?"),
    ({"baseline": "none"}, InvalidArgumentError, r"'zeros', 'blur', 'mean'; got 'none'"),
    (
        {"baseline": torch.zeros(3, 1, 1)},
        InvalidArgumentError,
        r"broadcast to x's shape \(2, 1, 4, 4\).*\(3, 1, 1\)",
    ),
    ({"baseline": torch.zeros(1, 2, 1, 4, 4)}, InvalidArgumentError, "broadcast"),
    ({"target": 2}, InvalidArgumentError, r"target 2 is out of range.*2 scores per sample"),
    ({"target": -1}, InvalidArgumentError, "target -1 is out of range"),
    ({"target": [0, 1, 0]}, InvalidArgumentError, "target has 3 entries for a batch of 2"),
    ({"target": torch.tensor([0.0, 1.0])}, InvalidTypeError, "class indices"),
    ({"target": "0"}, InvalidTypeError, "target must be None"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("change", "error", "match"), ERRORS)
def test_bad_arguments_raise_before_any_forward(
    method: Method, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    model = Counting(quadrant_net())
    args: dict[str, Any] = {"x": ones(2), "maps": torch.zeros(2, 4, 4), "target": None, **change}
    x, maps, target = args.pop("x"), args.pop("maps"), args.pop("target")
    before = snapshot(model)
    with pytest.raises(error, match=match) as info:
        method(model, x, maps, target, **args)
    assert isinstance(info.value, ConvlensError)
    assert model.calls == 0
    assert_unchanged(model, before)


def test_a_model_output_without_classes_is_explained() -> None:
    model = nn.Sequential(nn.Flatten(0))
    with pytest.raises(InvalidArgumentError, match=r"\(N, classes\).*callable"):
        deletion(model, ones(2), torch.zeros(2, 4, 4), intervals=2)


def test_a_callable_returning_the_wrong_shape_is_explained() -> None:
    with pytest.raises(InvalidArgumentError, match=r"one score per sample, shape \(3,\); got \(3, 2\)"):
        deletion(quadrant_net(), ones(), torch.zeros(1, 4, 4), lambda out: out, intervals=2)


# -- the model is left as found ---------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_model_left_as_found_and_train_mode_restored(method: Method, inplace_net: InplaceNet) -> None:
    inplace_net.train()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    maps = torch.rand(2, 8, 8, requires_grad=True)
    before, hooks_before, grad_mode = snapshot(inplace_net), global_hook_counts(), torch.is_grad_enabled()
    res = method(inplace_net, x, maps, intervals=4, baseline="blur", batch_size=3)
    assert_unchanged(inplace_net, before)
    assert global_hook_counts() == hooks_before
    assert torch.is_grad_enabled() == grad_mode
    assert all(m.training for m in inplace_net.modules())
    for tensor in (res.curve, res.auc, res.fractions):
        assert not tensor.requires_grad
    reference = copy.deepcopy(inplace_net).eval()
    torch.testing.assert_close(res.curve, method(reference, x, maps, intervals=4, baseline="blur").curve)


class FailsOnCall(nn.Module):
    """A CNN with BatchNorm and Dropout whose ``fail_on``-th real forward raises."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(3)
        )
        self.fail_on, self.calls = fail_on, 0

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "meta":
            self.calls += 1
            if self.calls == self.fail_on:
                raise RuntimeError("boom inside the forward")
        out: Tensor = self.body(x)
        return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fail_on", [1, 3])
def test_model_left_as_found_after_an_exception_inside_the_forward(method: Method, fail_on: int) -> None:
    torch.manual_seed(0)
    model = FailsOnCall(fail_on=fail_on + 1)
    x = batch(2, 8)
    model(x)  # materialise the lazy layer (call 1)
    model.train()
    before, hooks_before, grad_mode = snapshot(model), global_hook_counts(), torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match="boom inside the forward") as info:
        method(model, x, random_maps(2, 8), intervals=4, batch_size=2)
    assert any("convlens.attribution.faithfulness" in note for note in getattr(info.value, "__notes__", []))
    assert_unchanged(model, before)
    assert global_hook_counts() == hooks_before
    assert torch.is_grad_enabled() == grad_mode
    assert model.training


# -- dtypes and devices ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "curve_dtype"),
    [(torch.float32, torch.float32), (torch.float64, torch.float64), (torch.bfloat16, torch.float32)],
)
def test_dtypes(dtype: torch.dtype, curve_dtype: torch.dtype) -> None:
    model = tiny_cnn().to(dtype)
    res = deletion(model, batch().to(dtype), random_maps(), intervals=3, baseline="blur")
    assert res.curve.dtype == curve_dtype
    assert res.fractions.dtype == curve_dtype
    assert res.auc.dtype == curve_dtype
    assert bool(((res.auc >= 0) & (res.auc <= 1)).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_results_on_the_model_device() -> None:
    model = tiny_cnn().cuda()
    x = batch().cuda()
    res = insertion(model, x, random_maps(), intervals=3, baseline="blur")  # maps on the CPU are moved
    assert res.curve.device.type == "cuda"
    assert res.auc.device.type == "cuda"
    assert res.targets is not None
    assert res.targets.device.type == "cuda"
    cpu = insertion(tiny_cnn(), x.cpu(), random_maps(), intervals=3, baseline="blur")
    torch.testing.assert_close(res.curve.cpu(), cpu.curve, atol=1e-4, rtol=1e-4)


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_gradcam_maps_and_random_maps_on_a_seeded_cnn(method: Method) -> None:
    model, x = tiny_cnn(seed=4, classes=10), batch(4, 16, seed=5)
    cam = GradCAM(model, "2")(x)
    for maps in (cam.maps, random_maps(4, 16, seed=6)):
        res = method(model, x, maps, intervals=8, baseline="blur", batch_size=16)
        assert res.curve.shape == (4, 9)
        assert res.auc.shape == (4,)
        assert res.fractions.shape == (9,)
        assert res.targets is not None
        assert cam.targets is not None
        assert torch.equal(res.targets, cam.targets)
        assert bool(((res.auc >= 0) & (res.auc <= 1)).all())
        assert bool(((res.curve >= 0) & (res.curve <= 1)).all())


def test_a_channel_mismatch_names_the_layer() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with pytest.raises(cl.ShapeError, match=r"0 expects 1 input channels, got 3 \(Conv2d"):
        deletion(net, torch.randn(2, 3, 6, 6), torch.rand(2, 6, 6), intervals=2)


def test_a_model_writing_into_its_input_leaves_the_callers_x_alone() -> None:
    class Normalizes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

        def forward(self, x: Tensor) -> Tensor:
            x.sub_(0.5)
            out: Tensor = self.net(x)
            return out

    torch.manual_seed(0)
    x = torch.rand(2, 1, 4, 4)
    before = x.clone()
    deletion(Normalizes(), x, torch.rand(2, 4, 4), intervals=2)
    assert torch.equal(x, before)


# -- the old spelling steps= -----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_the_old_steps_keyword_warns_and_gives_the_same_result(method: Method) -> None:
    torch.manual_seed(0)
    model, x, maps = tiny_cnn(), batch(), random_maps()
    new = method(model, x, maps, intervals=6, baseline="blur")
    with pytest.warns(DeprecationWarning, match=r"steps= is deprecated, use intervals=") as caught:
        old = method(model, x, maps, steps=6, baseline="blur")
    assert caught[0].filename == __file__  # the warning points at the caller's line
    torch.testing.assert_close(old.curve, new.curve, rtol=0, atol=0)
    torch.testing.assert_close(old.auc, new.auc, rtol=0, atol=0)
    assert old.fractions.shape == (7,)
    with pytest.warns(
        DeprecationWarning, match="steps="
    ):  # both spellings, the same value: allowed, still warns
        same = method(model, x, maps, steps=6, intervals=6, baseline="blur")
    torch.testing.assert_close(same.curve, new.curve, rtol=0, atol=0)


def test_the_default_is_50_intervals() -> None:
    res = deletion(quadrant_net(), ones(), quadrant_first().unsqueeze(0))
    assert res.curve.shape == (1, 51)
    assert res.fractions.shape == (51,)


# -- the perturbation core --------------------------------------------------------------------


def test_the_core_equals_deletion_and_insertion_given_the_targets() -> None:
    from convlens.attribution import perturbation

    torch.manual_seed(0)
    model, x, maps = tiny_cnn(), batch(), random_maps()
    targets = torch.tensor([1, 0, 2, 1])[: x.shape[0]]
    for mode, method in (("deletion", deletion), ("insertion", insertion)):
        public = method(model, x, maps, targets, intervals=5, baseline="mean", batch_size=3)
        fractions, curve, auc = perturbation.perturbation_curve(
            model, x, maps, perturbation.baseline_tensor("mean", x), targets, mode=mode,  # type: ignore[arg-type]
            intervals=5, batch_size=3, probability=True, who="test",
        )  # fmt: skip
        torch.testing.assert_close(curve, public.curve, rtol=0, atol=0)
        torch.testing.assert_close(auc, public.auc, rtol=0, atol=0)
        torch.testing.assert_close(fractions, public.fractions, rtol=0, atol=0)


def test_the_core_ranking_and_baselines() -> None:
    from convlens.attribution import perturbation

    # Descending, ties in raster order.
    rank = perturbation.ranking(torch.tensor([[[1.0, 3.0], [3.0, 0.0]]]), torch.device("cpu"))
    assert rank.tolist() == [[2, 0, 1, 3]]
    assert perturbation.BASELINES == ("zeros", "blur", "mean")
    x = torch.arange(8.0).view(1, 2, 2, 2)
    assert perturbation.baseline_tensor("mean", x).flatten().tolist() == [1.5, 5.5]
    assert perturbation.baseline_tensor(torch.tensor(-1.0), x).shape == x.shape
    assert perturbation.check_baseline(torch.zeros(1, 2, 1, 1)) == "tensor [1, 2, 1, 1]"
    with pytest.raises(InvalidArgumentError, match="must be real"):
        perturbation.check_baseline(torch.zeros(1, dtype=torch.complex64))
    with pytest.raises(InvalidArgumentError, match=r"broadcast to x's shape \(1, 2, 2, 2\)"):
        perturbation.check_baseline_fits(torch.zeros(3, 1, 1), x)
    # The softmax of a low-precision output is computed in float32.
    probabilities = perturbation.softmax(torch.zeros(2, 4, dtype=torch.bfloat16))
    assert probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities, torch.full((2, 4), 0.25))


def test_the_core_note_names_the_caller_and_the_points() -> None:
    from convlens.attribution import perturbation

    class Fails(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise RuntimeError("boom")

    x = torch.ones(2, 1, 2, 2)
    with pytest.raises(RuntimeError, match="boom") as info:
        perturbation.perturbation_curve(
            Fails(), x, torch.rand(2, 2, 2), torch.zeros_like(x), torch.tensor([0, 0]), mode="insertion",
            intervals=2, batch_size=4, probability=False, who="caller",
        )  # fmt: skip
    assert info.value.__notes__ == [
        "caller: raised on insertion points 0 to 1, a batch of shape (4, 1, 2, 2)."
    ]


# -- any model: forward arguments, model checks, quantized and half-precision models ------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("spelling", ["ForwardArgs", "tuple", "dict"])
def test_forward_args_reach_every_forward_and_batched_tensors_follow_each_sample(
    method: Method, spelling: str
) -> None:
    model, x, maps = Conditioned(tiny_cnn()), batch(3, 8), random_maps(3, 8)
    masks = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(7)) > 0.3).float()
    extra: Any = {
        "ForwardArgs": cl.ForwardArgs(masks, temperature=0.5),
        "tuple": (masks,),  # the temperature keeps its default, 1
        "dict": {"mask": masks, "temperature": 0.5},
    }[spelling]
    temperature = 1.0 if spelling == "tuple" else 0.5
    res = method(model, x, maps, intervals=5, baseline="blur", batch_size=4, forward_args=extra)
    assert {device for device, _ in model.log.entries} == {"cpu", "meta"}  # the probe got them too
    assert {t for _, t in model.log.entries} == {temperature}
    for i in range(len(x)):  # each sample alone, its mask bound into the model: the same row
        alone = method(Bound(model, masks[i : i + 1], temperature), x[i : i + 1], maps[i : i + 1],
                       intervals=5, baseline="blur")  # fmt: skip
        assert alone.targets is not None
        assert res.targets is not None
        assert alone.targets.tolist() == res.targets[i : i + 1].tolist()
        torch.testing.assert_close(alone.curve, res.curve[i : i + 1], **tolerance())


def test_forward_args_of_the_wrong_type_are_refused_before_any_forward() -> None:
    model = Counting(quadrant_net())
    with pytest.raises(InvalidTypeError, match=r"forward_args must be a tuple.*got list"):
        deletion(model, ones(2), torch.zeros(2, 4, 4), forward_args=[1])  # type: ignore[arg-type]
    assert model.calls == 0


def test_a_model_on_the_meta_device_is_refused_before_work() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, device="meta"))
    for method in (deletion, insertion):
        with pytest.raises(cl.UnsupportedModelError, match="cannot run a model on the meta device") as info:
            method(model, ones(2), torch.rand(2, 4, 4))
        assert isinstance(info.value, ValueError | TypeError | RuntimeError)
        assert str(info.value).startswith(method.__name__)


@pytest.mark.parametrize("method", METHODS)
def test_an_input_or_forward_args_on_another_device_name_both_devices_before_any_forward(
    method: Method,
) -> None:
    model = Counting(tiny_cnn())
    before = snapshot(model)
    with pytest.raises(
        cl.DeviceMismatchError, match="the model is on cpu but a tensor of the input is on meta"
    ):
        method(model, batch().to("meta"), random_maps())
    with pytest.raises(
        cl.DeviceMismatchError, match="the model is on cpu but a tensor of forward_args is on meta"
    ):
        method(model, batch(), random_maps(), forward_args=(torch.zeros(3, device="meta"),))
    assert model.calls == 0
    assert_unchanged(model, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_device_mismatch_names_both_devices_before_any_forward() -> None:
    model = Counting(tiny_cnn().cuda())
    with pytest.raises(
        cl.DeviceMismatchError, match=r"the model is on cuda:0 but a tensor of the input is on cpu"
    ):
        deletion(model, batch(), random_maps())
    with pytest.raises(cl.DeviceMismatchError, match="a tensor of forward_args is on cpu"):
        insertion(model, batch().cuda(), random_maps(), forward_args=(torch.zeros(3),))
    assert model.calls == 0


def quantized_cnn() -> nn.Module:
    """tiny_cnn's shape, quantized in eager mode (int8 weights, uint8 activations), calibrated on random data."""
    from torch.ao import quantization as tq

    class Float(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.body = tiny_cnn()

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.dequant(self.body(self.quant(x)))
            return out

    return quantize(Float(), batch(8, 12, seed=11))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("method", METHODS)
def test_a_quantized_model_runs_as_it_is_no_gradients_needed(method: Method) -> None:
    model = quantized_cnn()
    x, maps = batch(), random_maps()
    before = snapshot(model)
    res = method(model, x, maps, intervals=4, baseline="mean", batch_size=5)
    assert_unchanged(model, before)
    # The reference: the quantized model run on each perturbed input built here.
    with torch.no_grad():
        targets = model(x).argmax(1)
    assert res.targets is not None
    assert torch.equal(res.targets, targets)
    base = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    order = torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices
    for k in range(5):
        chosen = torch.zeros(3, 144, dtype=torch.bool)
        chosen.scatter_(1, order[:, : k * 144 // 4], True)
        chosen = chosen.view(3, 1, 12, 12)
        perturbed = torch.where(chosen, base, x) if method is deletion else torch.where(chosen, x, base)
        with torch.no_grad():
            expected = model(perturbed).softmax(1).gather(1, targets.view(-1, 1)).squeeze(1)
        torch.testing.assert_close(res.curve[:, k], expected, **tolerance())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("probability", [True, False])
def test_a_bfloat16_model_gives_the_float32_curves_to_the_documented_tolerance(
    method: Method, probability: bool
) -> None:
    """The docstring's promise: float32 curves, within four bfloat16 epsilons of the scores' size."""
    x, maps = batch(), random_maps()
    full = method(tiny_cnn(), x, maps, intervals=6, baseline="blur", probability=probability)
    half = method(
        tiny_cnn().to(torch.bfloat16), x.to(torch.bfloat16), maps, intervals=6, baseline="blur",
        probability=probability,
    )  # fmt: skip
    assert half.curve.dtype == half.auc.dtype == torch.float32
    assert full.targets is not None
    assert half.targets is not None
    assert torch.equal(half.targets, full.targets)
    scale = float(full.curve.abs().max())
    torch.testing.assert_close(half.curve, full.curve, **tolerance(torch.bfloat16, scale=scale, roundings=4))
    torch.testing.assert_close(half.auc, full.auc, **tolerance(torch.bfloat16, scale=scale, roundings=4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_a_float16_model_on_cuda_gives_the_float32_curves_to_the_documented_tolerance(method: Method) -> None:
    """As for bfloat16 (float16 rounds finer): against the float32 model on the CPU (no TF32 there)."""
    x, maps = batch(), random_maps()
    full = method(tiny_cnn(), x, maps, intervals=6, baseline="blur")
    half = method(tiny_cnn().cuda().half(), x.cuda().half(), maps, intervals=6, baseline="blur")
    assert half.curve.dtype == torch.float32
    assert half.curve.device.type == "cuda"
    scale = float(full.curve.abs().max())
    torch.testing.assert_close(
        half.curve.cpu(), full.curve, **tolerance(torch.bfloat16, scale=scale, roundings=4)
    )


# -- targets that hold a mask or boxes per image -------------------------------------------


class TinyBoxes(nn.Module):
    """A detector's output from a conv: per image, two fixed boxes (labels 1, 2) scored by channels 0, 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0]])

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))  # (N, 4)
        labels = torch.tensor([1, 2])
        return [{"boxes": self.boxes, "labels": labels, "scores": torch.sigmoid(row[:2])} for row in pooled]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["mask", "boxes"])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 64])
def test_a_target_per_image_scores_each_perturbed_input_with_its_own_samples(
    method: Method, kind: str, batch_size: int
) -> None:
    # The perturbed inputs of a chunk belong to any sample: a mask or boxes given per image must
    # score each with its own sample's (before, a chunk as long as the batch was scored with the
    # other images' masks, and any other chunk raised mid-run). The reference gives the target once,
    # for one sample run alone.
    torch.manual_seed(0)
    x, maps = batch(3, 8), random_maps(3, 8)
    if kind == "mask":
        model: nn.Module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
        masks = torch.zeros(3, 8, 8)
        masks[0, :4], masks[1, 4:], masks[2, :, :3] = 1.0, 1.0, 1.0
        target: Any = cl.SegmentationTarget(1, masks)
        alone_target: Callable[[int], Any] = lambda i: cl.SegmentationTarget(1, masks[i])  # noqa: E731
    else:
        model = TinyBoxes()
        labels, boxes = [[1], [2], [2]], [[[0, 0, 4, 4]], [[2, 2, 8, 8]], [[2, 2, 8, 8]]]
        target = cl.BoxScoreTarget(labels, boxes)
        alone_target = lambda i: cl.BoxScoreTarget(labels[i], boxes[i])  # noqa: E731
    model.eval()
    before = snapshot(model)
    res = method(model, x, maps, target=target, intervals=4, batch_size=batch_size)
    assert res.targets is None
    for i in range(len(x)):
        alone = method(model, x[i : i + 1], maps[i : i + 1], target=alone_target(i), intervals=4)
        torch.testing.assert_close(res.curve[i : i + 1], alone.curve, **tolerance())
    assert_unchanged(model, before)
