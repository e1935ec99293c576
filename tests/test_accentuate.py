"""Feature accentuation, the importance mask and the trust numbers of a feature visualization."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.core.tap import LayerTap
from convlens.errors import InvalidArgumentError, InvalidTypeError, LayerNotFoundError
from convlens.featureviz.accentuate import accentuate
from convlens.featureviz.anchor import Anchor
from convlens.featureviz.maximize import ActivationMaximizer, Param, TransformName
from convlens.featureviz.objectives import channel, class_logit, diversity, l1, neuron
from convlens.featureviz.quality import Transfer, stability_of
from convlens.models.zoo import digits_dataset
from convlens.render import masked
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import InplaceNet, seeded


def digit(index: int) -> tuple[Tensor, int]:
    x, y = digits_dataset("test")[index]
    return x[None], int(y)


def features(model: nn.Module, layer: str, x: Tensor) -> Tensor:
    with torch.no_grad(), LayerTap(model, [layer]) as tap:
        model(x)
        return tap[layer].detach().clone()


# -- where the picture matters -----------------------------------------------------------


def test_the_mask_is_zero_outside_the_receptive_field() -> None:
    # One 3x3 conv, a neuron at (2, 5): only the 3x3 window around it can move the objective.
    net = seeded(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)))
    res = ActivationMaximizer(net, neuron("0", 1, position=(2, 5)), input_shape=(1, 1, 9, 9), steps=5).run()
    assert res.mask is not None
    assert res.mask.shape == (1, 1, 9, 9)
    inside = torch.zeros(9, 9, dtype=torch.bool)
    inside[1:4, 4:7] = True
    assert bool((res.mask[0, 0][~inside] == 0).all())
    assert bool((res.mask[0, 0][inside] > 0).all())
    assert float(res.mask.max()) == 1.0


def test_the_mask_is_the_accumulated_gradient_magnitude() -> None:
    # By hand: the same optimization, each step's gradient with respect to the image summed.
    net = seeded(nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh()))
    objective = channel("1", 2)
    res = ActivationMaximizer(net, objective, input_shape=(2, 1, 6, 6), steps=4, lr=0.1).run()
    image = (torch.randn((2, 1, 6, 6), generator=torch.Generator().manual_seed(0)) * 0.01).requires_grad_()
    optimizer = torch.optim.Adam([image], lr=0.1)
    total = torch.zeros(2, 1, 6, 6)
    for _ in range(4):
        value = net(image)[:, 2].mean((1, 2)).sum()
        (grad,) = torch.autograd.grad(-value, [image])
        total += grad.abs()
        image.grad = grad
        optimizer.step()
    expected = total / total.flatten(1).amax(1).view(2, 1, 1, 1)
    assert res.mask is not None
    torch.testing.assert_close(res.mask, expected)


def test_masked_makes_the_mask_the_alpha_channel() -> None:
    mask = torch.zeros(1, 8, 8)
    mask[0, 2:4, 2:4] = 1.0
    rgba = masked(torch.full((3, 8, 8), 0.5), mask, clip=1.0)
    assert rgba.shape == (8, 8, 4)
    assert rgba[2, 2, 3] == 255
    assert rgba[6, 6, 3] == 0
    assert rgba[..., :3].min() == rgba[..., :3].max() == 128
    with pytest.raises(InvalidArgumentError, match="nonnegative"):
        masked(torch.zeros(3, 8, 8), -mask)
    with pytest.raises(InvalidArgumentError, match="clip"):
        masked(torch.zeros(3, 8, 8), mask, clip=0.0)


# -- starting from a picture ---------------------------------------------------------------


@pytest.mark.parametrize("param", ["pixel", "fft"])
@pytest.mark.parametrize("space", ["picture", "values"])
def test_the_first_render_is_the_start(param: Param, space: str) -> None:
    net = seeded(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    start = torch.rand((2, 3, 10, 12), generator=torch.Generator().manual_seed(1)) * 0.98 + 0.01
    options: dict[str, Any] = {"normalize": "imagenet"} if space == "picture" else {"value_range": (0, 1)}
    res = ActivationMaximizer(
        net, channel("1", 0), input_shape=start.shape, steps=1, lr=1e-12, param=param, start=start, **options
    ).run()
    made = res.picture if space == "picture" else res.image
    assert made is not None
    torch.testing.assert_close(made, start, atol=1e-5, rtol=1e-5)


def test_bad_starts_are_refused_before_any_work() -> None:
    net = seeded(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(InvalidArgumentError, match="input_shape"):
        ActivationMaximizer(net, channel("0", 0), input_shape=(1, 3, 8, 8), start=torch.zeros(1, 3, 9, 8))
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        ActivationMaximizer(
            net,
            channel("0", 0),
            input_shape=(1, 3, 8, 8),
            normalize="imagenet",
            start=torch.full((1, 3, 8, 8), 2.0),
        )
    with pytest.raises(InvalidArgumentError, match="maco"):
        ActivationMaximizer(
            net,
            channel("0", 0),
            input_shape=(1, 3, 8, 8),
            normalize="imagenet",
            param="maco",
            start=torch.zeros(1, 3, 8, 8),
        )
    with pytest.raises(InvalidTypeError, match="floating-point"):
        ActivationMaximizer(
            net, channel("0", 0), input_shape=(1, 3, 8, 8), start=torch.zeros(1, 3, 8, 8, dtype=torch.long)
        )
    with pytest.raises(InvalidArgumentError, match="start="):
        ActivationMaximizer(net, channel("0", 0), input_shape=(1, 3, 8, 8), anchor=Anchor("0"))
    with pytest.raises(LayerNotFoundError, match="no layer 'O'"):
        accentuate(net, channel("0", 0), torch.zeros(1, 3, 8, 8), layer="O")
    with pytest.raises(InvalidArgumentError, match="weight"):
        accentuate(net, channel("0", 0), torch.zeros(1, 3, 8, 8), layer="0", weight=-1.0)


# -- accentuation ---------------------------------------------------------------------------


def test_accentuation_raises_the_target_more_than_noise_and_stays_near_the_seed(digits: nn.Module) -> None:
    seed_picture, label = digit(3)  # a 6
    target = 8

    def logit(x: Tensor) -> float:
        return float(digits(x)[0, target])

    res = accentuate(
        digits, class_logit(target), seed_picture, layer="features.1", steps=64, value_range=(0, 1)
    )
    with torch.no_grad():
        moved = (res.image - seed_picture).norm()
        noise = torch.randn(seed_picture.shape, generator=torch.Generator().manual_seed(0))
        noisy = (seed_picture + noise / noise.norm() * moved).clamp(0, 1)
        gain, noise_gain = logit(res.image) - logit(seed_picture), logit(noisy) - logit(seed_picture)
    assert label != target
    assert gain > 5 * max(noise_gain, 0.1), (gain, noise_gain)
    free = ActivationMaximizer(
        digits, class_logit(target), input_shape=(1, 1, 28, 28), steps=64, value_range=(0, 1)
    ).run()
    assert moved < (free.image - seed_picture).norm()
    # A stronger anchor stays closer to the seed's representation.
    tight = accentuate(
        digits,
        class_logit(target),
        seed_picture,
        layer="features.1",
        weight=1000.0,
        steps=64,
        value_range=(0, 1),
    )
    anchor = Anchor("features.1")
    seed_features = features(digits, "features.1", seed_picture)
    assert anchor.distance(features(digits, "features.1", tight.image), seed_features) < anchor.distance(
        features(digits, "features.1", res.image), seed_features
    )


def test_accentuation_in_picture_space_leaves_the_model_as_found() -> None:
    net = InplaceNet()
    seeded(net)
    net.train()
    before, hooks = snapshot(net), global_hook_counts()
    pictures = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    res = accentuate(
        net, channel("features.3", [0, 1]), pictures, layer="features.1", steps=3, normalize="imagenet"
    )
    assert res.picture is not None
    assert res.picture.shape == pictures.shape
    assert_unchanged(net, before)
    assert global_hook_counts() == hooks


@pytest.mark.parametrize("transforms", ["standard", "maco"])
def test_the_anchor_compares_the_seed_through_the_very_same_view(transforms: TransformName) -> None:
    # At the first step the picture is the seed: seen through the same random view, the anchor's
    # distance and its gradient are 0, so one step moves the picture exactly as without an anchor.
    # Another view of the seed would pull (one Adam step moves a value by about 1e-2).
    net = seeded(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh()))
    pictures = torch.rand((2, 1, 24, 24), generator=torch.Generator().manual_seed(2)) * 0.9 + 0.05
    options: dict[str, Any] = {"steps": 1, "value_range": (0, 1), "transforms": transforms, "seed": 3}
    anchored = accentuate(net, channel("1", [0, 1]), pictures, layer="0", weight=10.0, **options)
    free = accentuate(net, channel("1", [0, 1]), pictures, layer="0", weight=0.0, **options)
    assert float((free.image - pictures).abs().max()) > 1e-3  # the step did move the picture
    torch.testing.assert_close(anchored.image, free.image, atol=1e-4, rtol=0)


def test_the_callers_pictures_are_never_written() -> None:
    # Model values without a range: the start is the parameter's own copy, and the anchor's seed
    # another; a model writing into its input cannot reach the caller's pictures either.
    net = seeded(nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(1, 2, 3), nn.Tanh()))
    x = torch.randn((1, 1, 10, 10), generator=torch.Generator().manual_seed(0))
    kept = x.clone()
    am = ActivationMaximizer(
        net, channel("2", 0), input_shape=x.shape, start=x, anchor=Anchor("1", 1e6), steps=20
    )
    first, second = am.run(), am.run()
    torch.testing.assert_close(x, kept, rtol=0, atol=0)
    torch.testing.assert_close(first.image, second.image, rtol=0, atol=0)  # the same start each run
    assert first.image.data_ptr() != x.data_ptr()
    # At a huge weight the picture keeps the seed's representation: it moves far less than freely.
    free = ActivationMaximizer(net, channel("2", 0), input_shape=x.shape, start=x, steps=20).run()
    assert (first.image - x).abs().max() < 0.5 * (free.image - x).abs().max()
    res = accentuate(net, channel("2", 0), x, layer="1", steps=3, value_range=(-5, 5))
    torch.testing.assert_close(x, kept, rtol=0, atol=0)
    assert res.image.shape == x.shape


def test_starts_that_are_not_finite_or_out_of_range_are_refused() -> None:
    net = seeded(nn.Sequential(nn.Conv2d(1, 2, 3)))
    bad = torch.zeros(1, 1, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidArgumentError, match="finite"):
        ActivationMaximizer(net, channel("0", 0), input_shape=(1, 1, 8, 8), start=bad)
    with pytest.raises(InvalidArgumentError, match="value_range"):
        ActivationMaximizer(
            net,
            channel("0", 0),
            input_shape=(1, 1, 8, 8),
            start=torch.full((1, 1, 8, 8), 3.0),
            value_range=(0, 1),
        )


# -- the trust numbers ---------------------------------------------------------------------


def test_relative_activation_is_the_unit_over_its_reference(digits: nn.Module) -> None:
    objective = channel("features.4", [1, 3]) - 100.0 * l1()  # the l1 term is not the unit's activation
    res = ActivationMaximizer(
        digits, objective, input_shape=(2, 1, 28, 28), steps=8, value_range=(0, 1), reference=[2.0, 4.0]
    ).run()
    acts = features(digits, "features.4", res.image)
    expected = torch.stack([acts[0, 1].mean(), acts[1, 3].mean()]) / torch.tensor([2.0, 4.0])
    assert res.quality.relative is not None
    torch.testing.assert_close(res.quality.relative, expected)
    assert res.quality.stability is None
    assert res.quality.transfer is None


def test_stability_is_the_mean_cosine_across_seeds(digits: nn.Module) -> None:
    options: dict[str, Any] = {"input_shape": (2, 1, 28, 28), "steps": 6, "value_range": (0, 1)}
    res = ActivationMaximizer(digits, channel("features.4", [0, 5]), seeds=3, seed=4, **options).run()
    pooled = [
        features(
            digits,
            "features.4",
            ActivationMaximizer(digits, channel("features.4", [0, 5]), seed=s, **options).run().image,
        ).mean((2, 3))
        for s in (4, 5, 6)
    ]
    assert res.quality.stability is not None
    torch.testing.assert_close(res.quality.stability, stability_of(pooled))
    first = ActivationMaximizer(digits, channel("features.4", [0, 5]), seed=4, **options).run()
    torch.testing.assert_close(res.image, first.image)  # the picture is the first seed's


def test_transfer_is_the_second_networks_probability(digits: nn.Module) -> None:
    other = seeded(
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    )
    other.train()
    before = snapshot(other)
    res = ActivationMaximizer(
        digits,
        class_logit([2, 7]),
        input_shape=(2, 1, 28, 28),
        steps=4,
        value_range=(0, 1),
        transfer=Transfer(other, targets=[2, 7], size=20),
    ).run()
    with torch.no_grad():
        other.eval()
        x = F.interpolate(res.image, size=(20, 20), mode="bilinear", antialias=True, align_corners=False)
        expected = other(x).softmax(1)[[0, 1], [2, 7]]
        other.train()
    assert res.quality.transfer is not None
    torch.testing.assert_close(res.quality.transfer, expected)
    assert_unchanged(other, before)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        ActivationMaximizer(
            digits,
            class_logit(2),
            input_shape=(1, 1, 28, 28),
            steps=1,
            value_range=(0, 1),
            transfer=Transfer(other, targets=12),
        ).run()


def test_the_rich_display_shows_the_numbers(digits: nn.Module) -> None:
    res = ActivationMaximizer(
        digits,
        channel("features.4", 0),
        input_shape=(1, 1, 28, 28),
        steps=3,
        value_range=(0, 1),
        reference=1.0,
        seeds=2,
    ).run()
    page = res._repr_html_()
    assert "x the top example" in page
    assert "across seeds" in page


def test_bad_quality_options() -> None:
    net = seeded(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(InvalidArgumentError, match="one per image"):
        ActivationMaximizer(net, channel("0", 0), input_shape=(2, 1, 8, 8), reference=[1.0, 2.0, 3.0])
    with pytest.raises(InvalidArgumentError, match="seeds"):
        ActivationMaximizer(net, channel("0", 0), input_shape=(2, 1, 8, 8), seeds=0)
    with pytest.raises(InvalidTypeError, match="Transfer"):
        ActivationMaximizer(net, channel("0", 0), input_shape=(2, 1, 8, 8), transfer=net)  # type: ignore[arg-type]


def test_relative_reads_the_one_activation_term_unweighted(digits: nn.Module) -> None:
    options: dict[str, Any] = {
        "input_shape": (2, 1, 28, 28),
        "steps": 4,
        "value_range": (0, 1),
        "reference": 2.0,
    }
    objective = 2 * channel("features.4", [1, 3]) - 0.5 * diversity("features.4")
    res = ActivationMaximizer(digits, objective, **options).run()
    acts = features(digits, "features.4", res.image)
    expected = torch.stack([acts[0, 1].mean(), acts[1, 3].mean()]) / 2.0
    assert res.quality.relative is not None
    torch.testing.assert_close(res.quality.relative, expected)
    with pytest.raises(InvalidArgumentError, match="several"):
        ActivationMaximizer(digits, channel("features.4", 1) + channel("features.1", 2), **options)


def test_stability_reads_the_layer_as_the_objective_does() -> None:
    # A channels-last stage: the features compared are its channels, averaged over positions.
    stage = seeded(nn.Sequential(nn.Linear(3, 5), nn.Tanh()))
    objective = channel("1", [0, 4], reshape="channels_last")
    options: dict[str, Any] = {"input_shape": (2, 6, 6, 3), "steps": 3}
    res = ActivationMaximizer(stage, objective, seeds=2, **options).run()

    def pooled(seed: int) -> Tensor:
        image = ActivationMaximizer(stage, objective, seed=seed, **options).run().image
        with torch.no_grad():
            out: Tensor = stage(image)
            return out.mean((1, 2))  # (N, H, W, C) -> (N, C)

    assert res.quality.stability is not None
    torch.testing.assert_close(res.quality.stability, stability_of([pooled(0), pooled(1)]))


def test_transfer_mistakes_are_refused_before_any_work(digits: nn.Module) -> None:
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1

    handle = digits.register_forward_pre_hook(count)
    try:
        other = seeded(
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        )
        base: dict[str, Any] = {"input_shape": (2, 1, 28, 28), "steps": 50, "value_range": (0, 1)}
        with pytest.raises(InvalidArgumentError, match="one per picture"):
            ActivationMaximizer(
                digits, class_logit([1, 2]), transfer=Transfer(other, targets=[1, 2, 3]), **base
            )
        with pytest.raises(InvalidArgumentError, match="rejects"):  # a 3-channel network, 1-channel pictures
            ActivationMaximizer(digits, class_logit([1, 2]), transfer=Transfer(other, targets=[1, 2]), **base)
        grey = seeded(
            nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        )
        with pytest.raises(InvalidArgumentError, match="out of range"):
            ActivationMaximizer(digits, class_logit([1, 2]), transfer=Transfer(grey, targets=[1, 12]), **base)
    finally:
        handle.remove()
    assert calls[0] == 0  # the digits CNN never ran a real forward


def test_masked_shows_a_mask_smaller_than_its_clip_quantile() -> None:
    mask = torch.zeros(1, 64, 64)
    mask[0, 10:13, 10:13] = 1.0  # 9 of 4096 pixels: the 0.99 quantile is 0
    rgba = masked(torch.ones(3, 64, 64), mask)
    assert rgba[11, 11, 3] == 255
    assert rgba[40, 40, 3] == 0
