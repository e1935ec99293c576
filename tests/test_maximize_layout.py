"""The maximizer feeds convolutional networks channels-last pictures: faster, same results, model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from convlens.featureviz.maximize import ActivationMaximizer, MaximizationResult
from convlens.featureviz.objectives import Objective, channel, class_logit
from convlens.featureviz.recipe import input_layout
from helpers import tolerance
from invariants import assert_unchanged, snapshot
from models import seeded


def conv_net() -> nn.Sequential:
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    seeded(net)
    return net.eval()


class Viewed(nn.Module):
    """A classic small CNN that flattens with ``view``: it refuses a channels-last tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv(x))
        out: Tensor = self.fc(x.view(x.size(0), -1))
        return out


def run(
    model: nn.Module, objective: Objective, *, layout: torch.memory_format | None = None
) -> MaximizationResult:
    am = ActivationMaximizer(
        model, objective, input_shape=(2, 3, 8, 8), normalize="imagenet", steps=3, seed=3
    )
    if layout is not None:
        am._layout = layout  # the layout before this change, to compare with
    return am.run()


def test_layout_is_channels_last_only_for_pictures_into_convolutions_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert input_layout(conv_net(), (2, 3, 8, 8), cpu) == torch.channels_last
    one_channel = (2, 1, 8, 8)  # nothing to reorder
    assert input_layout(conv_net(), one_channel, cpu) == torch.preserve_format
    assert input_layout(conv_net(), (2, 3, 8), cpu) == torch.preserve_format
    assert input_layout(conv_net(), (2, 3, 8, 8), torch.device("meta")) == torch.preserve_format
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    assert input_layout(mlp, (2, 3, 4, 4), cpu) == torch.preserve_format


def test_the_model_sees_channels_last_and_is_left_as_found() -> None:
    net = conv_net()
    before = snapshot(net)
    strides = {name: p.stride() for name, p in net.named_parameters()}
    am = ActivationMaximizer(net, class_logit(1), input_shape=(2, 3, 8, 8), normalize="imagenet", steps=2)
    seen: list[bool] = []
    handle = net[0].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        am.run()
    finally:
        handle.remove()
    assert len(seen) == 3  # two steps and the final evaluation
    assert all(seen), "the picture did not reach the model channels last"
    assert_unchanged(net, before)
    assert {name: p.stride() for name, p in net.named_parameters()} == strides


@pytest.mark.parametrize("objective", [class_logit([1, 4]), channel("3", [2, 7])], ids=["output", "layer"])
def test_channels_last_changes_only_rounding(objective: Objective) -> None:
    net = conv_net()
    fast = run(net, objective)
    plain = run(net, objective, layout=torch.preserve_format)
    assert fast.picture is not None
    assert plain.picture is not None
    torch.testing.assert_close(fast.picture, plain.picture, **tolerance())
    torch.testing.assert_close(fast.values, plain.values, **tolerance(scale=float(plain.values.abs().max())))


def test_a_model_that_views_its_input_falls_back_to_the_plain_layout() -> None:
    net = seeded(Viewed())
    with pytest.raises(RuntimeError, match="view"):
        net(torch.zeros(2, 3, 8, 8).contiguous(memory_format=torch.channels_last))
    before = snapshot(net)
    fallen = run(net, class_logit([0, 2]))
    assert_unchanged(net, before)
    plain = run(net, class_logit([0, 2]), layout=torch.preserve_format)
    assert fallen.picture is not None
    assert plain.picture is not None
    assert torch.equal(fallen.picture, plain.picture)
    assert torch.equal(fallen.history, plain.history)
