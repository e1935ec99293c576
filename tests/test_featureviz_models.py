"""Feature visualization on any model (issue 18): extra forward arguments, channels-last and
multi-tensor layers, quantized and meta models, half precision; the model left as found in each."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import convlens as cl
from convlens.core.layouts import Layout
from convlens.errors import (
    DeviceMismatchError,
    InvalidArgumentError,
    InvalidTypeError,
    UnsupportedModelError,
)
from convlens.featureviz.maximize import ActivationMaximizer
from convlens.featureviz.neurons import NeuronVisualizer
from convlens.featureviz.objectives import channel, neuron
from helpers import tolerance
from invariants import assert_unchanged, snapshot
from models import quantized_cnn

# -- models ------------------------------------------------------------------------------


class Masked(nn.Module):
    """``forward(x, mask, *, temperature)``: both are needed; ``scaled`` is ``conv(x) * mask / temperature``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scaled = nn.Identity()
        self.head = nn.Linear(4, 2)
        self.seen: list[tuple[torch.dtype, str]] = []

    def forward(self, x: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
        self.seen.append((x.dtype, x.device.type))
        h = self.scaled(self.conv(x) * mask / temperature)
        out: Tensor = self.head(h.mean((2, 3)))
        return out

    def reference(self, x: Tensor, mask: Tensor, temperature: float) -> Tensor:
        """``scaled``'s channel means, computed by hand."""
        with torch.no_grad():
            means: Tensor = (self.conv(x) * mask / temperature).mean((2, 3))
        return means


class ToChannelsLast(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


class ChannelsLast(nn.Module):
    """A ConvNeXt/Swin-like stage: a patch stem, then LayerNorm and Linear over the last dimension."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), ToChannelsLast())
        self.stage = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 12))  # (N, 4, 4, 12) for 8x8 inputs
        self.head = nn.Linear(12, 3)
        self.real_forwards = 0

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_meta:
            self.real_forwards += 1
        out: Tensor = self.head(self.stage(self.stem(x)).mean((1, 2)))
        return out

    def channel_means(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            means: Tensor = self.stage(self.stem(x)).mean((1, 2))  # (N, 12)
        return means


class Branches(nn.Module):
    """A multi-resolution stage: a high branch (N, 4, 8, 8) and a low one (N, 6, 4, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.high = nn.Conv2d(3, 4, 3, padding=1)
        self.low = nn.Conv2d(3, 6, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.high(x), self.low(x)


class MultiBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stage = Branches()
        self.head = nn.Linear(10, 2)

    def forward(self, x: Tensor) -> Tensor:
        high, low = self.stage(x)
        out: Tensor = self.head(torch.cat([high.mean((2, 3)), low.mean((2, 3))], 1))
        return out


def ranking(values: Tensor, k: int) -> tuple[list[int], list[float]]:
    """The top ``k`` of a 1-D tensor, high to low, ties to the lower index (a plain sort)."""
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))[:k]
    return order, [float(values[i]) for i in order]


# -- forward arguments -------------------------------------------------------------------


def test_the_maximizer_passes_forward_args_on_every_forward() -> None:
    model = Masked()
    mask = torch.ones(2, 1, 8, 8)
    mask[1, :, :4] = 0  # the second image is seen through half a window
    before = snapshot(model)
    with pytest.raises(InvalidTypeError):  # without them the probe refuses, before any work
        ActivationMaximizer(model, channel("scaled", 1), input_shape=(2, 3, 8, 8), steps=2)
    assert model.seen == []
    am = ActivationMaximizer(
        model,
        channel("scaled", [1, 2]),
        input_shape=(2, 3, 8, 8),
        steps=3,
        forward_args=cl.ForwardArgs(mask, temperature=2.0),
    )
    res = am.run()
    assert_unchanged(model, before)
    assert len([s for s in model.seen if s[1] != "meta"]) == 3 + 1  # every step and the final value
    expected = model.reference(res.image, mask, 2.0)[[0, 1], [1, 2]]
    torch.testing.assert_close(res.values, expected, **tolerance(scale=float(expected.abs().max())))


def test_the_temperature_reaches_the_layer_given_as_forward_args_or_a_dict() -> None:
    model = Masked()
    mask = torch.ones(1, 1, 8, 8)
    hot = ActivationMaximizer(
        model, channel("scaled", 0), input_shape=(1, 3, 8, 8), steps=2,
        forward_args=cl.ForwardArgs(mask, temperature=1.0),
    ).run()  # fmt: skip
    cold = ActivationMaximizer(
        model, channel("scaled", 0), input_shape=(1, 3, 8, 8), steps=2,
        forward_args=cl.ForwardArgs(mask, temperature=4.0),
    ).run()  # fmt: skip
    # The temperature reaches the layer: the same start, a quarter of the objective at step 0.
    torch.testing.assert_close(
        cold.history[0], hot.history[0] / 4, **tolerance(scale=abs(float(hot.history[0])))
    )
    with pytest.raises(InvalidTypeError, match="forward_args must be a tuple"):
        ActivationMaximizer(model, channel("scaled", 0), input_shape=(1, 3, 8, 8), forward_args=[mask])  # type: ignore[arg-type]


def test_neuron_visualizer_maximize_takes_forward_args() -> None:
    model = Masked()
    mask = torch.ones(3, 1, 8, 8)
    before = snapshot(model)
    nv = NeuronVisualizer(model, "scaled", input_shape=(1, 3, 8, 8))
    res = nv.maximize(range(3), steps=2, forward_args=cl.ForwardArgs(mask, temperature=3.0))
    assert_unchanged(model, before)
    expected = model.reference(res.image, mask, 3.0).diagonal()
    torch.testing.assert_close(res.values, expected, **tolerance(scale=float(expected.abs().max())))


@pytest.mark.parametrize("wrap", ["dataset", "loader"])
def test_top_examples_per_example_forward_args_follow_the_examples(wrap: str) -> None:
    """A mask with one row per example in the data is indexed by each batch's positions."""
    model = Masked()
    torch.manual_seed(1)
    images = torch.randn(10, 3, 8, 8)
    masks = (torch.rand(10, 1, 8, 8) > 0.5).float()
    data: Any = TensorDataset(images, torch.zeros(10))
    if wrap == "loader":
        data = DataLoader(data, batch_size=3)
    before = snapshot(model)
    best = NeuronVisualizer(model, "scaled").top_examples(
        data, [0, 3], 4, batch_size=4, forward_args=cl.ForwardArgs(masks, temperature=0.5)
    )
    assert_unchanged(model, before)
    means = model.reference(images, masks, 0.5)
    for row, unit in enumerate([0, 3]):
        order, values = ranking(means[:, unit], 4)
        assert best.indices[row].tolist() == order
        torch.testing.assert_close(
            best.activations[row], torch.tensor(values), **tolerance(scale=max(map(abs, values)))
        )
    assert best.inputs is not None
    torch.testing.assert_close(best.inputs[0], images[best.indices[0]])


def test_top_examples_without_the_model_s_arguments_fails_before_work() -> None:
    model = Masked()
    data = TensorDataset(torch.randn(4, 3, 8, 8))
    with pytest.raises(InvalidTypeError):
        NeuronVisualizer(model, "scaled").top_examples(data, 0, 2)
    assert model.seen == []


# -- channels last -----------------------------------------------------------------------


def test_a_channels_last_stage_is_refused_before_work() -> None:
    model = ChannelsLast()
    data = TensorDataset(torch.randn(6, 3, 8, 8))
    before = snapshot(model)
    nv = NeuronVisualizer(model, "stage")
    with pytest.raises(InvalidArgumentError, match=r"'stage' gives \(6, 4, 4, 12\).*reshape='channels_last'"):
        nv.top_examples(data, 0, 2, batch_size=6)
    for objective in (channel("stage", 2), neuron("stage", 2)):
        with pytest.raises(InvalidArgumentError, match=r"channels last.*reshape='channels_last'"):
            ActivationMaximizer(model, objective, input_shape=(1, 3, 8, 8), steps=2)
    with pytest.raises(InvalidArgumentError, match="reshape='channels_last'"):
        NeuronVisualizer(model, "stage", input_shape=(1, 3, 8, 8)).maximize([0], steps=2)
    assert model.real_forwards == 0
    assert_unchanged(model, before)


def test_a_channels_last_stage_with_reshape_ranks_its_channels() -> None:
    model = ChannelsLast()
    torch.manual_seed(2)
    images = torch.randn(9, 3, 8, 8)
    before = snapshot(model)
    nv = NeuronVisualizer(model, "stage", reshape="channels_last")
    best = nv.top_examples(TensorDataset(images), None, 3, batch_size=4)
    assert_unchanged(model, before)
    means = model.channel_means(images)
    assert best.unit == list(range(12))  # its 12 channels, not its 4 rows
    for unit in range(12):
        order, values = ranking(means[:, unit], 3)
        assert best.indices[unit].tolist() == order
        torch.testing.assert_close(best.activations[unit], torch.tensor(values), **tolerance(scale=4.0))
    assert best.positions is not None
    assert best.positions.shape == (12, 3, 2)
    assert best.boxes is None  # the receptive field is not traced through a reshape
    with pytest.raises(
        InvalidArgumentError, match=r"has 12 channels after reshape='channels_last' \(0 to 11\)"
    ):
        nv.top_examples(TensorDataset(images), 12, 3)


def test_channels_last_objectives_maximize_the_channel() -> None:
    model = ChannelsLast()
    before = snapshot(model)
    res = NeuronVisualizer(model, "stage", input_shape=(1, 3, 8, 8), reshape="channels_last").maximize(
        [5, 11], steps=3
    )
    assert_unchanged(model, before)
    expected = model.channel_means(res.image)[[0, 1], [5, 11]]
    torch.testing.assert_close(res.values, expected, **tolerance(scale=float(expected.abs().max())))
    spot = ActivationMaximizer(
        model, neuron("stage", 7, position=(1, 2), reshape="channels_last"), input_shape=(1, 3, 8, 8), steps=2
    ).run()
    with torch.no_grad():
        direct = model.stage(model.stem(spot.image))[0, 1, 2, 7]
    torch.testing.assert_close(spot.values[0], direct, **tolerance(scale=float(direct.abs())))
    with pytest.raises(InvalidArgumentError, match=r"position \(4, 0\) is outside the \(4, 4\) feature map"):
        ActivationMaximizer(
            model, neuron("stage", 7, position=(4, 0), reshape="channels_last"), input_shape=(1, 3, 8, 8)
        )


# -- multi-tensor layers -----------------------------------------------------------------


def test_a_multi_branch_stage_reads_the_first_tensor_unless_told() -> None:
    model = MultiBranch()
    torch.manual_seed(3)
    images = torch.randn(7, 3, 8, 8)
    with torch.no_grad():
        high, low = model.stage(images)
    before = snapshot(model)
    first = NeuronVisualizer(model, "stage").top_examples(TensorDataset(images), None, 2)
    second = NeuronVisualizer(model, "stage", reshape=Layout(part=1)).top_examples(
        TensorDataset(images), None, 2
    )
    assert_unchanged(model, before)
    assert first.unit == list(range(4))
    assert second.unit == list(range(6))
    for best, maps in ((first, high), (second, low)):
        means = maps.mean((2, 3))
        for unit in best.unit if isinstance(best.unit, list) else []:
            order, values = ranking(means[:, unit], 2)
            assert best.indices[unit].tolist() == order
            torch.testing.assert_close(best.activations[unit], torch.tensor(values), **tolerance(scale=4.0))
    assert first.boxes is not None
    assert second.boxes is None
    with pytest.raises(InvalidArgumentError, match="layer 'stage' has 4 channels"):
        NeuronVisualizer(model, "stage").top_examples(TensorDataset(images), 5, 2)
    with pytest.raises(InvalidArgumentError, match=r"part=2: the layer returned 2 tensor\(s\)"):
        NeuronVisualizer(model, "stage", reshape=Layout(part=2)).top_examples(TensorDataset(images), 0, 2)


def test_the_maximizer_reads_the_branch_its_layout_picks() -> None:
    model = MultiBranch()
    before = snapshot(model)
    res = NeuronVisualizer(model, "stage", input_shape=(1, 3, 8, 8), reshape=Layout(part=1)).maximize(
        [5, 0], steps=3
    )
    assert_unchanged(model, before)
    with torch.no_grad():
        low = model.stage(res.image)[1].mean((2, 3))
    torch.testing.assert_close(res.values, low[[0, 1], [5, 0]], **tolerance(scale=4.0))
    with pytest.raises(InvalidArgumentError, match="channel 5 is out of range: layer 'stage' has 4 channels"):
        ActivationMaximizer(model, channel("stage", 5), input_shape=(1, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="reads each layer through one layout"):
        channel("stage", 0) + channel("stage", 1, reshape=Layout(part=1))
    assert_unchanged(model, before)


# -- quantized, meta, other devices ------------------------------------------------------


def test_a_quantized_model_is_refused_where_gradients_are_needed() -> None:
    model = quantized_cnn()
    before = snapshot(model)
    with pytest.raises(UnsupportedModelError, match=r"quantized model has none.*float model"):
        ActivationMaximizer(model, channel("1", 0), input_shape=(1, 3, 12, 12), steps=2)
    with pytest.raises(UnsupportedModelError, match=r"NeuronVisualizer.maximize needs gradients"):
        NeuronVisualizer(model, "1", input_shape=(1, 3, 12, 12)).maximize([0], steps=2)
    assert_unchanged(model, before)


def test_top_examples_ranks_a_quantized_model_on_dequantized_values() -> None:
    model = quantized_cnn()
    torch.manual_seed(4)
    images = torch.rand(10, 3, 12, 12)
    before = snapshot(model)
    best = NeuronVisualizer(model, "3").top_examples(TensorDataset(images), [0, 7], 3, batch_size=4)
    assert_unchanged(model, before)
    layers = list(model.children())
    with torch.no_grad():  # by hand, layer after layer
        acts = layers[3](layers[2](layers[1](layers[0](images)))).dequantize().mean((2, 3))
    for row, unit in enumerate([0, 7]):
        order, values = ranking(acts[:, unit], 3)
        assert best.indices[row].tolist() == order
        torch.testing.assert_close(best.activations[row], torch.tensor(values), **tolerance(scale=1.0))
    assert best.activations.dtype == torch.float32


def test_a_meta_model_gets_a_typed_error_before_work() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).to("meta")
    with pytest.raises(UnsupportedModelError, match=r"meta device.*Load its weights"):
        ActivationMaximizer(model, channel("1", 0), input_shape=(1, 3, 8, 8), steps=2)
    with pytest.raises(UnsupportedModelError, match="meta device"):
        NeuronVisualizer(model, "1", input_shape=(1, 3, 8, 8)).maximize([0], steps=2)
    with pytest.raises(
        UnsupportedModelError, match=r"NeuronVisualizer.top_examples cannot run a model on the meta"
    ):
        NeuronVisualizer(model, "1").top_examples(TensorDataset(torch.randn(2, 3, 8, 8)), 0, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_args_on_another_device_name_both() -> None:
    model = Masked().cuda()
    mask = torch.ones(1, 1, 8, 8)  # on the CPU
    with pytest.raises(
        DeviceMismatchError, match="model is on cuda:0 but a tensor of forward_args is on cpu"
    ):
        ActivationMaximizer(
            model,
            channel("scaled", 0),
            input_shape=(1, 3, 8, 8),
            forward_args=cl.ForwardArgs(mask, temperature=1.0),
        )
    with pytest.raises(DeviceMismatchError, match=r"cuda:0.*cpu"):
        NeuronVisualizer(model, "scaled").top_examples(
            TensorDataset(torch.randn(2, 3, 8, 8)), 0, 1, forward_args=cl.ForwardArgs(mask, temperature=1.0)
        )


# -- half precision ----------------------------------------------------------------------


def test_a_bfloat16_model_is_maximized_in_float32_and_sees_its_dtype() -> None:
    model = Masked().to(torch.bfloat16)
    mask = torch.ones(1, 1, 8, 8, dtype=torch.bfloat16)
    before = snapshot(model)
    res = ActivationMaximizer(
        model, channel("scaled", 1), input_shape=(1, 3, 8, 8), steps=3, normalize="imagenet",
        forward_args=cl.ForwardArgs(mask, temperature=1.0),
    ).run()  # fmt: skip
    assert_unchanged(model, before)
    assert res.picture is not None
    assert res.picture.dtype == torch.float32
    assert res.image.dtype == torch.bfloat16
    assert res.values.dtype == torch.float32
    assert {dtype for dtype, where in model.seen if where != "meta"} == {torch.bfloat16}
    assert torch.isfinite(res.history).all()


def test_top_examples_on_bfloat16_equals_float32_within_its_tolerance() -> None:
    """bfloat16 keeps 8 bits of mantissa: each activation within 2 of its epsilons of the layer's largest."""
    model = ChannelsLast()
    torch.manual_seed(5)
    images = torch.randn(16, 3, 8, 8)
    exact = model.channel_means(images)  # float32
    half = ChannelsLast().to(torch.bfloat16)
    half.load_state_dict(model.state_dict())
    before = snapshot(half)
    best = NeuronVisualizer(half, "stage", reshape="channels_last").top_examples(
        TensorDataset(images), None, 4
    )
    assert_unchanged(half, before)
    assert best.activations.dtype == torch.float32  # averaged in float32
    close = tolerance(torch.bfloat16, scale=float(exact.abs().max()), roundings=2)
    for unit in range(12):
        # Each kept example's activation is its float32 activation, within the tolerance ...
        torch.testing.assert_close(best.activations[unit], exact[best.indices[unit], unit], **close)
        # ... and the kept ones are the float32 top 4, ties within the tolerance aside.
        _, values = ranking(exact[:, unit], 4)
        torch.testing.assert_close(exact[best.indices[unit], unit], torch.tensor(values), **close)


@pytest.mark.slow
def test_timm_swin_stage_is_refused_then_ranked_with_channels_last() -> None:
    """A real channels-last family: timm's Swin stages return (N, H, W, C)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    images = torch.randn(3, 3, 224, 224)
    before = snapshot(model)
    with pytest.raises(
        InvalidArgumentError, match=r"'layers.1' gives \(3, 28, 28, 192\).*reshape='channels_last'"
    ):
        NeuronVisualizer(model, "layers.1").top_examples(TensorDataset(images), 0, 2)
    best = NeuronVisualizer(model, "layers.1", reshape="channels_last").top_examples(
        TensorDataset(images), [0, 191], 2
    )
    assert_unchanged(model, before)
    with torch.no_grad():  # by hand: the stages up to layers.1, channels last, averaged over the grid
        means = model.layers[1](model.layers[0](model.patch_embed(images))).mean((1, 2))
    for row, unit in enumerate([0, 191]):
        order, values = ranking(means[:, unit], 2)
        assert best.indices[row].tolist() == order
        torch.testing.assert_close(best.activations[row], torch.tensor(values), **tolerance(scale=1.0))
