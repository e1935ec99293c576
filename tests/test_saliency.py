from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import convlens as cl
from convlens.attribution.cam import GradCAM
from convlens.attribution.saliency import GuidedBackprop, GuidedGradCAM, Saliency, SaliencyResult, _GuidedReLU
from convlens.errors import InvalidArgumentError, InvalidTypeError, LayerNotFoundError
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import InplaceNet, seeded, seeded_alexnet

# The hand model: x (1, 1, 1, 3) -> flatten -> h = W1 x -> relu -> logits = W2 relu(h).
W1 = [[1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [1.0, -1.0, 1.0]]
W2 = [[2.0, 5.0, -3.0], [1.0, 1.0, 1.0]]
X = [1.0, 2.0, 3.0]
# h = W1 x = [1 + 3, 2 - 3, 1 - 2 + 3] = [4, -1, 2]; relu(h) = [4, 0, 2]
# logits = [2*4 + 5*0 - 3*2, 4 + 0 + 2] = [2, 6]: class 1 is predicted.
#
# Class 0, plain gradient: d logit0 / d relu(h) = W2[0] = [2, 5, -3]; ReLU passes it where h > 0:
#   g_h = [2, 0, -3];  d logit0 / d x = W1^T g_h = 2*[1, 0, 1] + 0*[0, 1, -1] - 3*[1, -1, 1] = [-1, 3, -1].
# Class 0, guided: unit 3 has h = 2 > 0 but gradient -3 < 0, so it is cut as well:
#   g_h = [2, 0, 0];   d logit0 / d x = 2*[1, 0, 1] = [2, 0, 2].
# Class 1: W2[1] = [1, 1, 1] -> g_h = [1, 0, 1] (all positive: guided changes nothing)
#   d logit1 / d x = [1, 0, 1] + [1, -1, 1] = [2, -1, 2].
SALIENCY_0 = [-1.0, 3.0, -1.0]
GUIDED_0 = [2.0, 0.0, 2.0]
BOTH_1 = [2.0, -1.0, 2.0]

RELU_FORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "nn.ReLU": nn.ReLU(),
    "nn.ReLU(inplace=True)": nn.ReLU(inplace=True),
    "F.relu": F.relu,
    "F.relu(inplace=True)": lambda h: F.relu(h, inplace=True),
    "F.relu_": F.relu_,
    "torch.relu": torch.relu,
    "torch.relu_": torch.relu_,
    "Tensor.relu": lambda h: h.relu(),
    "Tensor.relu_": lambda h: h.relu_(),
    "relu_ on a view": lambda h: (h[:, 0:3].relu_(), h)[1],
}


class HandNet(nn.Module):
    """The hand model, with its ReLU written in any of RELU_FORMS."""

    def __init__(self, relu: str = "nn.ReLU") -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 3, bias=False)
        self.out = nn.Linear(3, 2, bias=False)
        self.relu = relu
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor(W1))
            self.out.weight.copy_(torch.tensor(W2))

    def forward(self, x: Tensor) -> Tensor:
        h = RELU_FORMS[self.relu](self.hidden(x.flatten(1)))
        logits: Tensor = self.out(h)
        return logits


class RaisesAfterReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        self.relu(self.conv(x))
        raise RuntimeError("boom after the ReLU")


def hand_input() -> Tensor:
    return torch.tensor(X).view(1, 1, 1, 3)


def small_cnn() -> nn.Sequential:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )
    seeded(net)
    return net


def positive_only(_module: nn.Module, grad_in: Any, _grad_out: Any) -> tuple[Tensor]:
    return (grad_in[0].clamp(min=0),)


def modes_active() -> int:
    return len(torch.overrides._get_current_function_mode_stack())  # type: ignore[no-untyped-call]


def reference_guided(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Guided backprop the classic way, on a copy: backward hooks on out-of-place ReLU modules."""
    ref = copy.deepcopy(model).eval()
    for module in ref.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
            module.register_full_backward_hook(positive_only)
    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ref(xr).gather(1, target.view(-1, 1)).sum(), xr)
    return grad


def test_saliency_matches_the_hand_computation() -> None:
    out = Saliency(HandNet())(hand_input(), target=0)
    assert isinstance(out, SaliencyResult)
    torch.testing.assert_close(out.gradients, torch.tensor(SALIENCY_0).view(1, 1, 1, 3), rtol=0, atol=0)
    torch.testing.assert_close(out.maps, torch.tensor([[[0.0, 1.0, 0.0]]]), rtol=0, atol=0)  # |g| = [1, 3, 1]
    assert out.scores.tolist() == [2.0]
    assert out.targets is not None
    assert out.targets.tolist() == [0]
    assert out.cam is None


def test_guided_backprop_cuts_the_negative_gradient_at_a_positive_relu() -> None:
    guided = GuidedBackprop(HandNet())(hand_input(), target=0)
    torch.testing.assert_close(guided.gradients, torch.tensor(GUIDED_0).view(1, 1, 1, 3), rtol=0, atol=0)
    torch.testing.assert_close(guided.maps, torch.tensor([[[1.0, 0.0, 1.0]]]), rtol=0, atol=0)
    predicted = GuidedBackprop(HandNet())(hand_input())  # None: class 1, all gradients positive at the ReLU
    assert predicted.targets is not None
    assert predicted.targets.tolist() == [1]
    assert predicted.scores.tolist() == [6.0]
    torch.testing.assert_close(predicted.gradients, torch.tensor(BOTH_1).view(1, 1, 1, 3), rtol=0, atol=0)


@pytest.mark.parametrize("relu", list(RELU_FORMS))
def test_every_form_of_relu_is_guided(relu: str) -> None:
    net = HandNet(relu)
    x = hand_input()
    plain = Saliency(net)(x, target=0).gradients.flatten().tolist()
    guided = GuidedBackprop(net)(x, target=0).gradients.flatten().tolist()
    assert (plain, guided) == (SALIENCY_0, GUIDED_0)
    with torch.no_grad():
        expected = net(x)
    with torch.enable_grad(), _GuidedReLU():
        value = net(x.clone().requires_grad_())
    assert torch.equal(value.detach(), expected)


def test_guidance_leaves_the_forward_value_unchanged() -> None:
    model = seeded_alexnet()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    with _GuidedReLU():
        value = model(x.clone().requires_grad_())
    assert torch.equal(value.detach(), expected)


def test_saliency_equals_autograd_on_alexnet() -> None:
    model = seeded_alexnet(train=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = Saliency(model)(x)
    model.eval()
    xr = x.clone().requires_grad_()
    logits = model(xr)
    (expected,) = torch.autograd.grad(logits[0, logits[0].argmax()], xr)
    assert out.targets is not None
    assert out.targets.tolist() == [int(logits[0].argmax())]
    torch.testing.assert_close(out.gradients, expected, rtol=0, atol=0)
    model.zero_grad(set_to_none=True)


def test_guided_backprop_equals_backward_hooks_on_alexnet() -> None:
    model = seeded_alexnet(train=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = GuidedBackprop(model)(x, target=7)
    expected = reference_guided(model, x, torch.tensor([7]))
    assert (expected > 0).any()
    torch.testing.assert_close(out.gradients, expected)


def every_method(model: nn.Module) -> list[Callable[[Tensor], SaliencyResult]]:
    return [Saliency(model), GuidedBackprop(model), GuidedGradCAM(model, "conv")]


def test_the_model_and_input_are_left_as_found() -> None:
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 4, 3))
    net.add_module("relu", nn.ReLU(inplace=True))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(4 * 6 * 6, 3))
    net.add_module("drop", nn.Dropout(0.5))
    seeded(net).train()
    x = torch.randn(2, 3, 8, 8)
    x_copy = x.clone()
    before, global_before = snapshot(net), global_hook_counts()
    for method in every_method(net):
        out = method(x)
        assert not out.gradients.requires_grad
        assert not out.maps.requires_grad
        assert out.maps.dtype == torch.float32
        assert float(out.maps.min()) >= 0.0
        assert float(out.maps.max()) <= 1.0
        assert_unchanged(net, before)
        assert all(p.grad is None for p in net.parameters())
        assert not x.requires_grad
        assert x.grad is None
        assert torch.equal(x, x_copy)
    assert global_hook_counts() == global_before
    assert modes_active() == 0
    x_leaf = x.clone().requires_grad_()
    Saliency(net)(x_leaf)
    assert x_leaf.requires_grad
    assert x_leaf.grad is None


@pytest.mark.parametrize("kind", [Saliency, GuidedBackprop, GuidedGradCAM])
def test_nothing_is_left_behind_when_the_forward_raises(kind: type[Any]) -> None:
    net = RaisesAfterReLU()
    seeded(net).train()
    before = snapshot(net)
    method = kind(net, "relu") if kind is GuidedGradCAM else kind(net)
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="boom after the ReLU"):
        method(x)
    assert_unchanged(net, before)
    assert x.requires_grad
    assert x.grad is None
    assert modes_active() == 0
    z = torch.tensor([1.0, -1.0, 2.0], requires_grad=True)
    (grad,) = torch.autograd.grad((F.relu(z) * torch.tensor([-1.0, 1.0, 3.0])).sum(), z)
    assert grad.tolist() == [-1.0, 0.0, 3.0]  # the ordinary ReLU backward, not the guided one


def test_guidance_is_local_to_the_calling_thread() -> None:
    seen: list[list[float]] = []

    def plain_relu_gradient() -> None:
        z = torch.tensor([1.0, -1.0], requires_grad=True)
        (grad,) = torch.autograd.grad((F.relu(z) * -1.0).sum(), z)
        seen.append(grad.tolist())

    class SpawnsAThread(HandNet):
        def forward(self, x: Tensor) -> Tensor:
            worker = threading.Thread(target=plain_relu_gradient)
            worker.start()
            worker.join()
            return super().forward(x)

    out = GuidedBackprop(SpawnsAThread())(hand_input(), target=0)
    assert out.gradients.flatten().tolist() == GUIDED_0
    assert seen
    assert all(grad == [-1.0, 0.0] for grad in seen)  # one per forward (the meta pass included)


@pytest.mark.parametrize("kind", [Saliency, GuidedBackprop])
def test_batched_targets_equal_single_calls(kind: type[Saliency], inplace_net: InplaceNet) -> None:
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    method = kind(inplace_net)
    batch = method(x, target=torch.tensor([0, 3, 1]))
    assert batch.targets is not None
    assert batch.targets.tolist() == [0, 3, 1]
    for i, t in enumerate([0, 3, 1]):
        single = method(x[i : i + 1], target=t)
        torch.testing.assert_close(batch.gradients[i : i + 1], single.gradients)
        torch.testing.assert_close(batch.maps[i : i + 1], single.maps)
        torch.testing.assert_close(batch.scores[i : i + 1], single.scores)


@pytest.mark.parametrize("kind", [Saliency, GuidedBackprop])
def test_no_grad_float64_and_callable_targets(kind: type[Saliency]) -> None:
    net = small_cnn().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = kind(net)(x, target=[2, 4])
    with torch.no_grad():
        out = kind(net)(x, target=[2, 4])
        assert not torch.is_grad_enabled()
    assert out.gradients.dtype == torch.float64
    assert out.maps.dtype == torch.float32
    torch.testing.assert_close(out.gradients, expected.gradients, rtol=0, atol=0)
    by_callable = kind(net)(x, target=lambda logits: logits[:, 2] + 0 * logits[:, 4])
    assert by_callable.targets is None
    torch.testing.assert_close(by_callable.gradients[0], out.gradients[0], rtol=0, atol=0)


def test_in_place_ops_on_the_input_hit_a_copy() -> None:
    class ClampsItsInput(HandNet):
        def forward(self, x: Tensor) -> Tensor:
            x.mul_(1.0)
            return super().forward(x)

    x = hand_input()
    out = GuidedBackprop(ClampsItsInput())(x, target=0)
    assert out.gradients.flatten().tolist() == GUIDED_0
    assert not x.requires_grad


def test_guided_gradcam_is_guided_gradients_times_the_upsampled_map() -> None:
    net = small_cnn()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    out = GuidedGradCAM(net, "3")(x)
    # Grad-CAM by hand, at net[3] (the in-place ReLU) -> (N, 6, 8, 8)
    net.eval()
    activation = net[:4](x).detach().requires_grad_()
    logits = net[4:](activation)
    targets = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), activation)
    raw = F.relu((grad.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1)).detach()
    up = F.interpolate(raw.unsqueeze(1), size=(8, 8), mode="bilinear", align_corners=False).squeeze(1)
    low = up.amin(dim=(1, 2), keepdim=True)
    cam = (up - low) / (up.amax(dim=(1, 2), keepdim=True) - low)
    expected = reference_guided(net, x, targets) * cam.unsqueeze(1)
    assert out.targets is not None
    assert out.cam is not None
    assert torch.equal(out.targets, targets)
    torch.testing.assert_close(out.cam, cam)
    torch.testing.assert_close(out.gradients, expected)
    magnitude = expected.abs().amax(dim=1)
    low = magnitude.amin(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(out.maps, (magnitude - low) / (magnitude.amax(dim=(1, 2), keepdim=True) - low))
    torch.testing.assert_close(out.cam, GradCAM(net, "3")(x).maps, rtol=0, atol=0)
    torch.testing.assert_close(out.scores, logits.gather(1, targets.view(-1, 1)).squeeze(1).detach())


def test_guided_gradcam_passes_one_target_to_both_passes() -> None:
    net = small_cnn()
    x = torch.randn(1, 3, 8, 8)
    out = GuidedGradCAM(net, net[3])(x, target=[4])
    assert out.targets is not None
    assert out.targets.tolist() == [4]
    expected = GuidedBackprop(net)(x, target=4).gradients * GradCAM(net, "3")(x, target=4).maps
    torch.testing.assert_close(out.gradients, expected, rtol=0, atol=0)
    assert repr(GuidedGradCAM(net, "3")) == "GuidedGradCAM(Sequential, layer='3')"
    with pytest.raises(LayerNotFoundError, match="'7'"):
        GuidedGradCAM(net, "7")


class CountsRealForwards(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_meta:
            self.calls += 1
        out: Tensor = self.net(x)
        return out


@pytest.mark.parametrize("kind", [Saliency, GuidedBackprop, GuidedGradCAM])
@pytest.mark.parametrize(
    ("x", "target", "error", "match"),
    [
        (torch.randn(2, 3, 8, 8), 5, InvalidArgumentError, r"target 5 is out of range: .* 5 scores"),
        (torch.randn(2, 3, 8, 8), -1, InvalidArgumentError, "target -1 is out of range"),
        (torch.randn(2, 3, 8, 8), [1, 2, 3], InvalidArgumentError, "3 entries for a batch of 2"),
        (torch.randn(2, 3, 8, 8), 1.5, InvalidTypeError, "target must be"),
        (torch.randn(2, 3, 8, 8), True, InvalidTypeError, "target must be"),
        (torch.randn(2, 3, 8, 8), torch.tensor([0.0, 1.0]), InvalidTypeError, "class indices"),
        (torch.ones(2, 3, 8, 8, dtype=torch.int64), 0, InvalidTypeError, "floating-point batch"),
        (
            torch.randn(3, 8),
            0,
            InvalidTypeError,
            r"batch tensor \(N, C, ...\) or a list of images .*got \(3, 8\)",
        ),
        ([[1.0]], 0, InvalidTypeError, r"got list \[list \[float 1.0\]\]"),
        ([], 0, InvalidTypeError, r"got list \[\]"),
        (
            [torch.ones(3, 8, 8, dtype=torch.int64)],
            0,
            InvalidTypeError,
            r"floating-point .*got images \(3, 8, 8\)",
        ),
        ([torch.ones(3, 8, 8), torch.ones(3, 8, 9)], 0, InvalidArgumentError, "must share a size"),
    ],
)
def test_bad_input_fails_before_any_forward(
    kind: type[Any], x: Any, target: Any, error: type[Exception], match: str
) -> None:
    model = CountsRealForwards()
    method = kind(model, "net.3") if kind is GuidedGradCAM else kind(model)
    with pytest.raises(error, match=match):
        method(x, target=target)
    assert model.calls == 0
    assert isinstance(InvalidArgumentError("x"), ValueError)
    assert isinstance(InvalidTypeError("x"), TypeError)


def test_a_score_that_ignores_the_input_is_an_error() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(3))

        def forward(self, x: Tensor) -> Tensor:
            return self.bias.expand(len(x), -1)

    with pytest.raises(InvalidArgumentError, match="does not depend on the input"):
        Saliency(Constant())(torch.randn(1, 3, 4, 4))
    with pytest.raises(InvalidArgumentError, match="does not depend on the input"):
        Saliency(HandNet())(hand_input(), target=lambda logits: torch.zeros(1))
    assert repr(Saliency(HandNet())) == "Saliency(HandNet)"


def test_a_channel_mismatch_names_the_layer() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    for explainer in (Saliency(net), GuidedBackprop(net)):
        with pytest.raises(cl.ShapeError, match=r"0 expects 1 input channels, got 3 \(Conv2d"):
            explainer(torch.randn(2, 3, 6, 6))
