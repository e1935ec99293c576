"""Deletion, insertion and evaluate on every input rank: 1-D signals (N, C, L) and 3-D clips (N, C, T, H, W).

Every curve is checked against a brute force written here: each perturbed input built by hand (the
positions sorted in Python, the baseline's values copied in a loop), each baseline by an independent
formula (the blur as one non-separable Gaussian kernel), the area by the trapezoid rule by hand.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from convlens.attribution.cam import GradCAM
from convlens.attribution.evaluation import evaluate
from convlens.attribution.faithfulness import deletion, insertion
from convlens.attribution.perturbation import baseline_tensor, blur
from convlens.errors import ConvlensError, InvalidArgumentError, ShapeError
from helpers import tolerance
from invariants import assert_unchanged, global_hook_counts, snapshot

# -- models and data ---------------------------------------------------------------------------------


def signal_net(seed: int = 0) -> nn.Sequential:
    """A 1-D audio-like CNN: (N, 2, L) -> (N, 4); layer "2" a ReLU at the input's length."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(2, 6, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def volume_net(seed: int = 0) -> nn.Sequential:
    """A tiny 3-D CNN: (N, 2, T, H, W) -> (N, 3)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv3d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


@pytest.fixture(scope="module")
def r3d() -> nn.Module:
    """torchvision's r3d_18 video network, random weights (seed 0), eval mode."""
    video = pytest.importorskip("torchvision.models.video")
    torch.manual_seed(0)
    model: nn.Module = video.r3d_18(weights=None).eval()
    return model


def randn(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def rand(*shape: int, seed: int = 2) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# -- the brute force ---------------------------------------------------------------------------------


def reference_blur(x: Tensor, sigma: float = 5.0, radius: int = 5) -> Tensor:
    """One Gaussian kernel over every non-channel axis at once (not separable), replicate padding."""
    rank = x.dim() - 2
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    grids = torch.meshgrid(*([taps] * rank), indexing="ij")
    squared = torch.stack([g**2 for g in grids]).sum(0)
    kernel = torch.exp(-squared / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.dtype).expand(x.shape[1], 1, *([2 * radius + 1] * rank))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv(F.pad(x, (radius,) * (2 * rank), mode="replicate"), kernel, groups=x.shape[1])


def reference_baseline(name: str, x: Tensor) -> Tensor:
    if name == "zeros":
        return torch.zeros_like(x)
    if name == "mean":  # each sample's per-channel mean over every non-channel axis
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        return (flat.sum(-1) / flat.shape[-1]).reshape(*x.shape[:2], *([1] * (x.dim() - 2))).expand_as(x)
    return reference_blur(x)


def hand_curve(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    base: Tensor,
    target: Tensor,
    *,
    mode: str,
    intervals: int,
    forward_args: tuple[Any, ...] = (),
) -> tuple[Tensor, Tensor]:
    """``(curve, auc)``: every perturbed input built in a loop, softmax probability of ``target``.

    ``forward_args`` are positional; a tensor among them whose first dimension is N gets the sample's row.
    """
    n, channels = x.shape[:2]
    positions = maps[0].numel()
    curve = torch.zeros(n, intervals + 1, dtype=torch.float64)
    for i in range(n):
        values = maps[i].flatten().tolist()
        order = sorted(range(positions), key=lambda p: (-values[p], p))  # descending, ties in raster order
        start, other = (x[i], base[i]) if mode == "deletion" else (base[i], x[i])
        inputs = []
        for k in range(intervals + 1):
            perturbed = start.clone().reshape(channels, positions)
            replacement = other.reshape(channels, positions)
            for p in order[: k * positions // intervals]:
                perturbed[:, p] = replacement[:, p]
            inputs.append(perturbed.reshape(x.shape[1:]))
        batch = torch.stack(inputs)
        extra = [
            a[i : i + 1].expand(len(batch), *a.shape[1:]) if isinstance(a, Tensor) and len(a) == n else a
            for a in forward_args
        ]
        with torch.no_grad():
            probabilities = model(batch, *extra).double().softmax(1)
        curve[i] = probabilities[:, int(target[i])]
    auc = sum((curve[:, k] + curve[:, k + 1]) / 2 / intervals for k in range(intervals))
    assert isinstance(auc, Tensor)
    return curve, auc


def check_against_hand(
    model: nn.Module, x: Tensor, maps: Tensor, *, baseline: str, intervals: int, batch_size: int = 64
) -> None:
    with torch.no_grad():
        predicted = model(x).argmax(1)
    base = reference_baseline(baseline, x)
    for mode, method in (("deletion", deletion), ("insertion", insertion)):
        res = method(model, x, maps, intervals=intervals, baseline=baseline, batch_size=batch_size)  # type: ignore[arg-type]
        assert res.targets is not None
        assert torch.equal(res.targets, predicted)
        curve, auc = hand_curve(model, x, maps, base, predicted, mode=mode, intervals=intervals)
        assert res.curve.shape == (len(x), intervals + 1)
        torch.testing.assert_close(res.curve.double(), curve, **tolerance())
        torch.testing.assert_close(res.auc.double(), auc, **tolerance())
        expected = torch.arange(intervals + 1, dtype=torch.float64) / intervals
        torch.testing.assert_close(res.fractions.double(), expected)


# -- deletion and insertion ---------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["zeros", "blur", "mean"])
def test_a_signal_is_perturbed_along_its_length_as_by_hand(baseline: str) -> None:
    x, maps = randn(3, 2, 20), rand(3, 20)
    check_against_hand(signal_net(), x, maps, baseline=baseline, intervals=7, batch_size=5)


@pytest.mark.parametrize("baseline", ["zeros", "blur", "mean"])
def test_a_volume_is_perturbed_along_time_height_and_width_as_by_hand(baseline: str) -> None:
    x, maps = randn(2, 2, 3, 5, 4), rand(2, 3, 5, 4)
    check_against_hand(volume_net(), x, maps, baseline=baseline, intervals=6, batch_size=4)


def test_ties_keep_raster_order_over_every_axis() -> None:
    x = randn(2, 2, 2, 3, 3)
    maps = torch.randint(0, 3, (2, 2, 3, 3), generator=torch.Generator().manual_seed(4))  # many ties
    check_against_hand(volume_net(), x, maps.float(), baseline="zeros", intervals=5)


def test_r3d_18_on_a_clip_as_by_hand(r3d: nn.Module) -> None:
    x = randn(1, 3, 4, 32, 32)
    maps = GradCAM(r3d, "layer3")(x).maps
    assert maps.shape == (1, 4, 32, 32)
    before = snapshot(r3d)
    check_against_hand(r3d, x, maps, baseline="blur", intervals=4)
    assert_unchanged(r3d, before)


def test_a_linear_model_sums_deletion_and_insertion_to_x_plus_the_baseline_on_every_rank() -> None:
    for shape in [(2, 3, 11), (2, 2, 3, 4, 5)]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape[1:]), 2)).double()
        x, base = randn(*shape).double(), randn(*shape, seed=9).double()
        maps = rand(shape[0], *shape[2:])
        kwargs: dict[str, Any] = {"intervals": 9, "baseline": base, "probability": False, "batch_size": 7}
        dele, ins = deletion(model, x, maps, 1, **kwargs), insertion(model, x, maps, 1, **kwargs)
        with torch.no_grad():
            total = model(x)[:, 1] + model(base)[:, 1]
        torch.testing.assert_close(dele.curve + ins.curve, total.view(-1, 1).expand(-1, 10))


def test_the_model_is_left_as_found_on_signals_and_volumes() -> None:
    for model, x, maps in [
        (signal_net(), randn(2, 2, 12), rand(2, 12)),
        (volume_net(), randn(2, 2, 2, 3, 3), rand(2, 2, 3, 3)),
    ]:
        model.train()
        before, hooks = snapshot(model), global_hook_counts()
        deletion(model, x, maps, intervals=3, baseline="blur")
        insertion(model, x, maps, intervals=3, baseline="mean")
        assert_unchanged(model, before)
        assert global_hook_counts() == hooks
        assert all(m.training for m in model.modules())


# -- the baselines, per rank --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 17), (2, 3, 9, 10), (2, 3, 3, 6, 7)], ids=["1-D", "2-D", "3-D"])
def test_every_baseline_is_defined_for_every_rank(shape: tuple[int, ...]) -> None:
    x = randn(*shape).double()
    for name in ("zeros", "blur", "mean"):
        got = baseline_tensor(name, x)
        # The blur's taps are computed in float32 whatever x's dtype: float32's tolerance.
        torch.testing.assert_close(got.expand_as(x), reference_baseline(name, x), **tolerance())


def test_blur_refuses_a_rank_it_does_not_define_and_names_it() -> None:
    with pytest.raises(ShapeError, match=r"defined for 1-D, 2-D and 3-D inputs.*got a 4-D input of shape"):
        blur(torch.zeros(1, 2, 3, 3, 3, 3))
    with pytest.raises(ShapeError, match="got a 0-D input"):
        blur(torch.zeros(2, 3))


# -- wrong shapes, named per rank ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "maps", "match"),
    [
        (randn(2, 2, 12), rand(2, 11), r"maps must have shape \(N, L\) = \(2, 12\)"),
        (randn(2, 2, 2, 3, 3), rand(2, 3, 3), r"maps must have shape \(N, T, H, W\) = \(2, 2, 3, 3\)"),
    ],
)
def test_maps_of_the_wrong_shape_name_the_axes_of_the_rank(x: Tensor, maps: Tensor, match: str) -> None:
    model = signal_net() if x.dim() == 3 else volume_net()
    with pytest.raises(InvalidArgumentError, match=match):
        deletion(model, x, maps)


def test_an_input_of_a_rank_the_model_does_not_take_gets_the_models_own_error_before_any_forward() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    real: list[str] = []
    model[0].register_forward_hook(lambda m, i, o: real.append(o.device.type) if not o.is_meta else None)
    for method in (deletion, insertion):
        with pytest.raises(ShapeError, match=r"0 expects a 3-D or 4-D input, got 5-D") as info:
            method(model, torch.zeros(1, 3, 2, 8, 8), rand(1, 2, 8, 8))
        assert isinstance(info.value, ConvlensError)
    assert real == []


# -- evaluate on every rank ---------------------------------------------------------------------------


def hand_numbers(
    model: nn.Module, x: Tensor, layer: str, *, intervals: int, baseline: str
) -> tuple[float, float, float, float]:
    """The four numbers of evaluate, by hand: the curves of :func:`hand_curve`, drop and increase in plain torch."""
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    maps = GradCAM(model, layer)(x, target).maps
    spread = maps.reshape(len(x), 1, *maps.shape[1:])
    with torch.no_grad():
        masked = model(spread * x)
    rows = torch.arange(len(x))
    big_y = logits.double().softmax(1)[rows, target]
    big_o = masked.double().softmax(1)[rows, target]
    drop = float((torch.clamp(big_y - big_o, min=0) / (big_y + 1e-7)).mean() * 100)
    increase = float((big_o > big_y).double().mean() * 100)
    base = reference_baseline(baseline, x)
    aucs = [
        float(hand_curve(model, x, maps, base, target, mode=mode, intervals=intervals)[1].mean())
        for mode in ("deletion", "insertion")
    ]
    return aucs[0], aucs[1], drop, increase


def assert_rows_close(got: tuple[float, ...], expected: tuple[float, ...]) -> None:
    scales = torch.tensor([1.0, 1.0, 100.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(
        torch.tensor(got, dtype=torch.float64) / scales,
        torch.tensor(expected, dtype=torch.float64) / scales,
        **tolerance(),
    )


def test_evaluate_on_signals_equals_the_brute_force() -> None:
    model, x = signal_net(), randn(5, 2, 16)
    res = evaluate(
        model, "gradcam", TensorDataset(x), layer="2", intervals=5, baseline="blur", batch_size=2,
        progress=False,
    )  # fmt: skip
    assert res.count == 5
    assert_rows_close(res["gradcam"].values(), hand_numbers(model, x, "2", intervals=5, baseline="blur"))


def test_evaluate_on_volumes_equals_the_brute_force() -> None:
    model, x = volume_net(), randn(3, 2, 2, 4, 4)
    res = evaluate(
        model, "gradcam", TensorDataset(x), layer="1", intervals=4, baseline="mean", batch_size=2,
        progress=False,
    )  # fmt: skip
    assert_rows_close(res["gradcam"].values(), hand_numbers(model, x, "1", intervals=4, baseline="mean"))


@pytest.mark.slow
def test_evaluate_on_r3d_18_equals_the_brute_force(r3d: nn.Module) -> None:
    x = randn(2, 3, 4, 32, 32)
    before = snapshot(r3d)
    res = evaluate(r3d, "gradcam", TensorDataset(x), layer="layer3", intervals=4, progress=False)
    assert_unchanged(r3d, before)
    assert_rows_close(res["gradcam"].values(), hand_numbers(r3d, x, "layer3", intervals=4, baseline="zeros"))
