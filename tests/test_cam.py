from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import convlens as cl
from convlens.attribution.cam import CAMContext, GradCAM
from helpers import tolerance
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import InplaceNet, ReusedNet, quantize, seeded_alexnet

# -- a model small enough to compute every method by hand -------------------------------


class HandNet(nn.Module):
    """x (N, 1, 2, 2) -> 1x1 conv, 2 channels (the tapped layer "conv") -> flatten -> Linear(8 -> 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(
                torch.tensor(
                    [
                        [0.5, -1.0, 0.25, 2.0, -0.5, 1.0, 0.75, -0.25],
                        [1.0, 0.5, -0.5, 0.25, 0.125, -1.0, 0.5, 1.5],
                    ]
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc(self.conv(x).flatten(1))
        return out


X = [[1.0, -2.0], [3.0, 0.5]]
POSITIONS = list(itertools.product(range(2), range(2)))


def hand_activation() -> list[list[list[float]]]:
    """A_k[i][j] = c_k * x[i][j] with c = (1, 2)."""
    return [[[c * X[i][j] for j in range(2)] for i in range(2)] for c in (1.0, 2.0)]


def hand_gradient(target: int) -> list[list[list[float]]]:
    """d logit_target / d A_k[i][j] is the Linear weight at the flattened position k*4 + i*2 + j."""
    w = HandNet().fc.weight[target].tolist()
    return [[[w[k * 4 + i * 2 + j] for j in range(2)] for i in range(2)] for k in range(2)]


def relu(v: float) -> float:
    return max(v, 0.0)


def hand_map(weights: Callable[[int, int, int], float]) -> list[list[float]]:
    """relu(sum_k w_k[i][j] A_k[i][j])."""
    a = hand_activation()
    return [[relu(sum(weights(k, i, j) * a[k][i][j] for k in range(2))) for j in range(2)] for i in range(2)]


def hand_gradcam(target: int) -> list[list[float]]:
    g = hand_gradient(target)
    mean = [sum(g[k][i][j] for i, j in POSITIONS) / 4 for k in range(2)]
    return hand_map(lambda k, i, j: mean[k])


def hand_xgradcam(target: int) -> list[list[float]]:
    a, g = hand_activation(), hand_gradient(target)
    w = [
        sum(a[k][i][j] * g[k][i][j] for i, j in POSITIONS) / sum(a[k][i][j] for i, j in POSITIONS)
        for k in range(2)
    ]
    return hand_map(lambda k, i, j: w[k])


def hand_gradcampp(target: int) -> list[list[float]]:
    a, g = hand_activation(), hand_gradient(target)
    w = []
    for k in range(2):
        total = sum(a[k][i][j] for i, j in POSITIONS)
        alpha = {
            (i, j): g[k][i][j] ** 2 / (2 * g[k][i][j] ** 2 + total * g[k][i][j] ** 3) if g[k][i][j] else 0.0
            for i, j in POSITIONS
        }
        w.append(sum(alpha[i, j] * relu(g[k][i][j]) for i, j in POSITIONS))
    return hand_map(lambda k, i, j: w[k])


def hand_layercam(target: int) -> list[list[float]]:
    g = hand_gradient(target)
    return hand_map(lambda k, i, j: relu(g[k][i][j]))


def min_max(m: list[list[float]]) -> list[list[float]]:
    flat = [v for row in m for v in row]
    low, high = min(flat), max(flat)
    return [[0.0 if high == low else (v - low) / (high - low) for v in row] for row in m]


@pytest.mark.parametrize(
    ("method", "reference"),
    [
        (cl.GradCAM, hand_gradcam),
        (cl.XGradCAM, hand_xgradcam),
        (cl.GradCAMPlusPlus, hand_gradcampp),
        (cl.LayerCAM, hand_layercam),
    ],
)
@pytest.mark.parametrize("target", [0, 1])
def test_family_equals_hand_computation(
    method: type[GradCAM], reference: Callable[[int], list[list[float]]], target: int
) -> None:
    x = torch.tensor(X).view(1, 1, 2, 2)
    out = method(HandNet(), "conv")(x, target=target)
    expected = reference(target)
    torch.testing.assert_close(out.raw[0], torch.tensor(expected))
    torch.testing.assert_close(out.maps[0], torch.tensor(min_max(expected)))
    a, g = hand_activation(), hand_gradient(target)  # the logit is linear: sum of A times its weight
    logit = sum(a[k][i][j] * g[k][i][j] for k in range(2) for i, j in POSITIONS)
    assert out.scores.tolist() == pytest.approx([logit])
    assert out.targets is not None
    assert out.targets.tolist() == [target]


def test_gradcam_hand_values_written_out() -> None:
    """Class 0 by hand: mean gradients are (0.4375, 0.25), so raw = relu(0.9375 x)."""
    out = cl.GradCAM(HandNet(), "conv")(torch.tensor(X).view(1, 1, 2, 2), target=0)
    torch.testing.assert_close(out.raw[0], torch.tensor([[0.9375, 0.0], [2.8125, 0.46875]]))
    torch.testing.assert_close(out.maps[0], torch.tensor([[1 / 3, 0.0], [1.0, 0.5 / 3]]))


def test_scorecam_equals_its_definition() -> None:
    model = HandNet()
    x = torch.tensor(X).view(1, 1, 2, 2)
    a = torch.tensor(hand_activation())  # (2, 2, 2)
    scores = []
    for k in range(2):
        mask = (a[k] - a[k].min()) / (a[k].max() - a[k].min())
        with torch.no_grad():
            scores.append(float(model(x * mask)[0, 1]))
    weights = torch.softmax(torch.tensor(scores), dim=0)
    expected = F.relu((weights.view(2, 1, 1) * a).sum(0))
    for chunk in (1, 32):
        out = cl.ScoreCAM(model, "conv", chunk_size=chunk)(x, target=1)
        torch.testing.assert_close(out.raw[0], expected)


def test_eigencam_finds_the_shared_pattern() -> None:
    """Rank-one activations A_k = c_k x: the first component is x centred; its positive part is the map."""
    x = torch.tensor(X).view(1, 1, 2, 2)
    out = cl.EigenCAM(HandNet(), "conv")(x)
    centred = torch.tensor(X) - torch.tensor(X).mean()
    expected = F.relu(centred)
    torch.testing.assert_close(out.maps[0], expected / expected.max())
    torch.testing.assert_close(out.raw[0], expected * math.sqrt(5.0))  # |c| = sqrt(1 + 4)


def test_scorecam_rejects_bad_chunk_size() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="chunk_size must be an int >= 1; got 0"):
        cl.ScoreCAM(HandNet(), "conv", chunk_size=0)


# -- correctness on real architectures -----------------------------------------------------


@pytest.mark.parametrize("layer", ["features.10", "features.11", "features.12"])
def test_alexnet_inplace_relu_equals_inplace_false(layer: str) -> None:
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    ours = cl.GradCAM(seeded_alexnet(), layer)(x)
    plain = cl.GradCAM(seeded_alexnet(inplace=False), layer)(x)
    torch.testing.assert_close(ours.raw, plain.raw)
    torch.testing.assert_close(ours.maps, plain.maps)
    assert ours.targets is not None
    assert plain.targets is not None
    assert torch.equal(ours.targets, plain.targets)


def reference_gradcam(model: nn.Module, layer: str, x: Tensor, targets: list[int]) -> Tensor:
    """Grad-CAM the long way: LayerTap(grads=True) and the user's own backward of the scores."""
    with cl.LayerTap(model, [layer], grads=True) as tap:
        logits = model(x.clone().requires_grad_())
        logits[torch.arange(len(targets)), targets].sum().backward()
    a, g = tap[layer], tap.gradient(layer)
    return F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))


def test_resnet18_layer4_equals_the_long_way() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = [1, 500, 999]
    out = cl.GradCAM(model, "layer4")(x, target=targets)
    torch.testing.assert_close(out.raw, reference_gradcam(copy.deepcopy(model), "layer4", x, targets))
    with torch.no_grad():
        torch.testing.assert_close(out.scores, model(x)[torch.arange(3), targets])


def test_reused_module_by_call(reused_net: ReusedNet) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with pytest.raises(cl.AmbiguousLayerError, match="'relu#0', 'relu#1', 'relu#2'"):
        cl.GradCAM(reused_net, "relu")(x)
    with pytest.raises(cl.LayerNotFoundError, match="runs 3 times"):
        cl.GradCAM(reused_net, "relu#3")(x)
    out = cl.GradCAM(reused_net, "relu#1")(x, target=[0, 4])
    # By hand: A = relu(conv2(relu(conv1 x))); score = relu(fc(mean A)) at the target.
    with torch.enable_grad():
        a = reused_net.relu(reused_net.conv2(reused_net.relu(reused_net.conv1(x)))).detach().requires_grad_()
        scores = reused_net.relu(reused_net.fc(a.mean(dim=(2, 3))))[torch.arange(2), [0, 4]]
        (g,) = torch.autograd.grad(scores.sum(), a)
    torch.testing.assert_close(out.raw, F.relu((g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1)))


def test_per_sample_targets_are_independent() -> None:
    model = seeded_alexnet()
    x = torch.randn(3, 3, 80, 80, generator=torch.Generator().manual_seed(4))
    batch = cl.GradCAM(model, "features.10")(x, target=torch.tensor([3, 100, 7]))
    for i, t in enumerate([3, 100, 7]):
        single = cl.GradCAM(model, "features.10")(x[i : i + 1], target=t)
        torch.testing.assert_close(batch.maps[i], single.maps[0], atol=1e-5, rtol=1e-4)


def test_predicted_class_found_in_the_same_forward(inplace_net: InplaceNet, image: Tensor) -> None:
    inplace_net.eval()
    out = cl.GradCAM(inplace_net, "features.3")(image)
    with torch.no_grad():
        logits = inplace_net(image)
    assert out.targets is not None
    assert out.targets.tolist() == logits.argmax(1).tolist()
    torch.testing.assert_close(out.scores, logits.max(1).values)


def test_upsampling_is_bilinear_without_corner_alignment(inplace_net: InplaceNet, image: Tensor) -> None:
    out = cl.GradCAM(inplace_net, "features.3")(image)  # layer at 4x4, input 8x8
    up = F.interpolate(out.raw[:, None].float(), size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = up.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(out.maps, (up - low) / (high - low))
    assert out.maps.dtype == torch.float32
    assert float(out.maps.amin()) == 0.0
    assert float(out.maps.amax()) == 1.0


def test_flat_map_is_all_zeros() -> None:
    model = HandNet()
    x = -torch.ones(1, 1, 2, 2)  # positive conv weights: the class-1 map is relu(negative) = 0 everywhere
    out = cl.GradCAM(model, "conv")(x, target=1)
    assert torch.equal(out.maps, torch.zeros(1, 2, 2))


def test_under_callers_no_grad_and_results_are_free_of_the_graph(
    inplace_net: InplaceNet, image: Tensor
) -> None:
    with torch.no_grad():
        out = cl.GradCAM(inplace_net, "features.3")(image)
        assert not torch.is_grad_enabled()
    for t in (out.maps, out.raw, out.scores):
        assert not t.requires_grad
        assert t.grad_fn is None
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(inplace_net: InplaceNet, image: Tensor, dtype: torch.dtype) -> None:
    inplace_net.eval()
    reference = cl.GradCAM(inplace_net, "features.3")(image)
    model = copy.deepcopy(inplace_net).to(dtype)
    out = cl.GradCAM(model, "features.3")(image.to(dtype))
    assert out.maps.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float64 else 0.1
    torch.testing.assert_close(out.maps, reference.maps, atol=tolerance, rtol=0)


def test_train_mode_model_is_computed_in_eval_and_restored(inplace_net: InplaceNet, image: Tensor) -> None:
    inplace_net.train()
    before = snapshot(inplace_net)
    out = cl.GradCAM(inplace_net, "features.3")(image)
    assert_unchanged(inplace_net, before)  # BatchNorm statistics untouched, flags restored
    inplace_net.eval()
    torch.testing.assert_close(out.maps, cl.GradCAM(inplace_net, "features.3")(image).maps)


def test_nothing_written_to_grad_and_nothing_retained(inplace_net: InplaceNet, image: Tensor) -> None:
    for p in inplace_net.parameters():
        p.grad = None
    before = snapshot(inplace_net)
    globals_before = global_hook_counts()
    cam = cl.GradCAM(inplace_net, "features.3")
    for method in (cl.GradCAM, cl.GradCAMPlusPlus, cl.XGradCAM, cl.LayerCAM, cl.ScoreCAM, cl.EigenCAM):
        method(inplace_net, "features.3")(image)
    cam(image)
    assert_unchanged(inplace_net, before)
    assert all(p.grad is None for p in inplace_net.parameters())
    assert global_hook_counts() == globals_before
    held = [v for v in vars(cam).values() if isinstance(v, Tensor)]
    assert held == []
    assert not image.requires_grad


class RaisesAfterLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: Tensor) -> Tensor:
        h: Tensor = self.bn(self.conv(x))
        if not h.is_meta:
            raise RuntimeError("failure after the layer")
        return h.flatten(1)


def test_model_left_as_found_when_forward_raises() -> None:
    model = RaisesAfterLayer().train()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="failure after the layer"):
        cl.GradCAM(model, "conv")(torch.randn(2, 1, 5, 5), target=0)
    assert_unchanged(model, before)
    assert torch.is_grad_enabled()


class Counted(nn.Module):
    """Any model, its real (not meta) forwards counted; every argument passed on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.real_calls = 0

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        first = x[0] if isinstance(x, list) else x
        if not first.is_meta:
            self.real_calls += 1
        return self.net(x, *args, **kwargs)


class CountingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)
        self.real_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_meta:
            self.real_calls += 1
        out: Tensor = self.fc(self.conv(x).mean(dim=(2, 3)))
        return out


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (
            10,
            cl.InvalidArgumentError,
            r"target 10 is out of range: the model gives 10 scores per sample \(0 to 9\)",
        ),
        (-1, cl.InvalidArgumentError, "target -1 is out of range"),
        ([1, 2, 3], cl.InvalidArgumentError, "target has 3 entries for a batch of 2"),
        ([1, 12], cl.InvalidArgumentError, "target 12 is out of range"),
        (torch.tensor([0.5, 1.0]), cl.InvalidTypeError, "class indices"),
        ("cat", cl.InvalidTypeError, "got str"),
        (True, cl.InvalidTypeError, "got True"),
    ],
)
def test_bad_targets_fail_before_any_work(target: Any, error: type[Exception], message: str) -> None:
    model = CountingNet()
    with pytest.raises(error, match=message):
        cl.GradCAM(model, "conv")(torch.randn(2, 3, 6, 6), target=target)
    assert model.real_calls == 0
    assert issubclass(error, ValueError | TypeError)


def test_bad_layers() -> None:
    model = CountingNet()
    with pytest.raises(cl.LayerNotFoundError, match="Did you mean 'conv'"):
        cl.GradCAM(model, "cnv")
    with pytest.raises(
        cl.InvalidArgumentError, match=r"needs a layer with spatial output .* 'fc' gives \(2, 10\)"
    ):
        cl.GradCAM(model, "fc")(torch.randn(2, 3, 6, 6))
    assert model.real_calls == 0
    with pytest.raises(cl.InvalidTypeError, match="x must be a batch tensor"):
        cl.GradCAM(model, "conv")(cast("Tensor", [1.0]))


class Segmenter(nn.Module):
    """Not a classifier: one score map per image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv2(F.relu(self.conv1(x)))
        return out


def test_callable_target_for_a_model_that_is_not_a_classifier() -> None:
    torch.manual_seed(0)
    model = Segmenter()
    x = torch.randn(2, 3, 8, 8)

    def region(output: Tensor) -> Tensor:
        return output[:, 0, 2:5, 2:5].sum(dim=(1, 2))

    out = cl.GradCAM(model, "conv1")(x, target=region)
    assert out.targets is None
    with torch.no_grad():
        torch.testing.assert_close(out.scores, region(model(x)))
    with pytest.raises(cl.InvalidArgumentError, match="one score per sample"):
        cl.GradCAM(model, "conv1")(x, target=lambda o: o.sum())
    with pytest.raises(cl.InvalidArgumentError, match=r"need a model output of shape \(N, classes\)"):
        cl.GradCAM(model, "conv1")(x)


def test_one_dimensional_convolutions() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 5), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    out = cl.GradCAM(model, "1")(torch.randn(2, 2, 40))
    assert out.maps.shape == (2, 40)
    assert out.raw.shape == (2, 36)


def test_score_that_ignores_the_layer() -> None:
    model = CountingNet()
    with pytest.raises(cl.InvalidArgumentError, match="does not depend on layer 'conv'"):
        cl.GradCAM(model, "conv")(
            torch.randn(1, 3, 6, 6), target=lambda o: o.new_ones(1, requires_grad=True) * 1.0
        )


def test_repr() -> None:
    assert repr(cl.LayerCAM(HandNet(), "conv")) == "LayerCAM(HandNet, layer='conv')"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_results_on_the_model_device() -> None:
    model = Segmenter().cuda()
    out = cl.GradCAM(model, "conv1")(
        torch.randn(2, 3, 8, 8, device="cuda"), target=lambda o: o.sum((1, 2, 3))
    )
    assert out.maps.device.type == "cuda"
    assert out.raw.device.type == "cuda"


# -- errors before work, reuse without a probe, numpy targets, inference mode ---------------


def test_channel_mismatch_is_a_shape_error_before_any_work() -> None:
    model = CountingNet()
    with pytest.raises(cl.ShapeError, match="conv expects 3 input channels, got 1"):
        cl.GradCAM(model, "conv")(torch.randn(2, 1, 6, 6))
    assert model.real_calls == 0


class DataDependent(nn.Module):
    """Cannot run on meta (``.item()``), and calls its ReLU twice."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3)
        self.c2 = nn.Conv2d(4, 4, 3)
        self.r = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum().item() > 1e9:
            x = x * 0
        h = self.r(self.c2(self.r(self.c1(x))))
        out: Tensor = self.fc(h.mean(dim=(2, 3)))
        return out


def test_reuse_checked_on_the_real_forward_when_meta_cannot_run() -> None:
    model = DataDependent()
    x = torch.randn(2, 3, 10, 10)
    with pytest.raises(cl.AmbiguousLayerError, match="'r#0', 'r#1'"):
        cl.GradCAM(model, "r")(x)
    with pytest.raises(cl.LayerNotFoundError, match="runs 2 times"):
        cl.GradCAM(model, "r#2")(x)
    assert cl.GradCAM(model, "r#1")(x).maps.shape == (2, 10, 10)


def test_numpy_targets_and_tuple_layers() -> None:
    np = pytest.importorskip("numpy")
    model = CountingNet()
    x = torch.randn(2, 3, 6, 6)
    by_list = cl.GradCAM(model, "conv")(x, target=[1, 2])
    by_numpy = cl.GradCAM(model, "conv")(x, target=np.array([1, 2]))
    torch.testing.assert_close(by_numpy.maps, by_list.maps)
    torch.testing.assert_close(
        cl.GradCAM(model, "conv")(x, target=np.int64(1)).raw, cl.GradCAM(model, "conv")(x, target=1).raw
    )


def test_inference_mode_is_refused_clearly() -> None:
    with torch.inference_mode(), pytest.raises(cl.ConvlensError, match="inference_mode"):
        cl.GradCAM(CountingNet(), "conv")(torch.randn(1, 3, 6, 6))


@pytest.mark.parametrize("method", [cl.EigenCAM, cl.ScoreCAM, cl.GradCAM])
def test_a_layer_rewritten_in_place_later_is_read_as_it_returned(method: type[cl.GradCAM]) -> None:
    torch.manual_seed(0)
    model = InplaceNet().eval()
    plain = InplaceNet(inplace=False).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    # features.0 is followed by ReLU(inplace=True): a gradient-free method once read the ReLU's output.
    out = method(model, "features.0")(x, target=1)
    expected = method(plain, "features.0")(x, target=1)
    assert bool((out.raw != 0).any())
    torch.testing.assert_close(out.raw, expected.raw, rtol=0, atol=0)
    torch.testing.assert_close(out.maps, expected.maps, rtol=0, atol=0)


class ChannelsLast(nn.Module):
    """Swin in miniature: a patch embedding, then a block that works on (N, H, W, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.block(self.embed(x).permute(0, 2, 3, 1))  # (N, H, W, C)
        out: Tensor = self.head(tokens.mean(dim=(1, 2)))
        return out


def test_a_channels_last_layer_is_refused_before_work_and_explained_with_the_preset() -> None:
    torch.manual_seed(0)
    model = ChannelsLast().eval()
    counted = Counted(model)
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(cl.InvalidArgumentError, match=r'channels last.*Pass reshape="channels_last"\.$'):
        cl.GradCAM(counted, "net.block")(x)
    assert counted.real_calls == 0  # refused on the probe, before any real forward
    out = cl.GradCAM(counted, "net.block", reshape="channels_last")(x, target=1)
    with torch.enable_grad():
        a = model.block(model.embed(x).permute(0, 2, 3, 1)).detach().requires_grad_()
        (g,) = torch.autograd.grad(model.head(a.mean(dim=(1, 2)))[:, 1].sum(), a)
    a, g = a.permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    raw = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
    torch.testing.assert_close(out.raw, raw)
    # An ordinary CNN layer is channels first, even with a Linear elsewhere in the model.
    assert cl.GradCAM(model, "embed")(x).raw.shape == (2, 4, 4)


def test_guided_gradcam_passes_reshape_to_its_gradcam() -> None:
    torch.manual_seed(0)
    model = ChannelsLast().eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(cl.InvalidArgumentError, match="channels last"):
        cl.GuidedGradCAM(model, "block")(x)
    with pytest.raises(cl.InvalidArgumentError, match="reshape must be one of 'vit', 'channels_last'"):
        cl.GuidedGradCAM(model, "block", reshape="permute")  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidTypeError, match="reshape must be a preset name"):
        cl.GuidedGradCAM(model, "block", reshape=3)  # type: ignore[arg-type]
    permute = partial(Tensor.permute, dims=(0, 3, 1, 2))
    out = cl.GuidedGradCAM(model, "block", reshape=permute)(x, target=1)
    cam = cl.GradCAM(model, "block", reshape=permute)(x, target=1)
    guided = cl.GuidedBackprop(model)(x, target=1)  # no ReLU in the model: the plain gradient
    torch.testing.assert_close(out.cam, cam.maps)
    torch.testing.assert_close(out.gradients, guided.gradients * cam.maps.unsqueeze(1))
    assert out.targets is not None
    assert out.targets.tolist() == [1, 1]


# -- any model: forward arguments, multi-tensor layers, models that cannot run, half precision ------


class Masked(nn.Module):
    """A forward that needs more than the image: ``forward(x, mask, *, temperature)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
        features = torch.relu(self.conv(x)) * mask
        out: Tensor = self.fc(features.mean(dim=(2, 3))) / temperature
        return out


ALL_CAMS: list[Callable[[nn.Module, str], cl.GradCAM]] = [
    cl.GradCAM,
    cl.GradCAMPlusPlus,
    cl.XGradCAM,
    cl.LayerCAM,
    partial(cl.ScoreCAM, chunk_size=3),
    cl.EigenCAM,
]


@pytest.mark.parametrize("method", ALL_CAMS)
def test_forward_args_reach_every_forward_and_follow_the_batch(
    method: Callable[[nn.Module, str], cl.GradCAM],
) -> None:
    torch.manual_seed(0)
    model = Masked().eval()
    x = torch.randn(3, 3, 8, 8)
    mask = (torch.rand(3, 1, 8, 8) > 0.3).float()
    out = method(model, "conv")(x, target=[0, 1, 2], forward_args=cl.ForwardArgs(mask, temperature=2.0))
    # One sample at a time, its own row of the mask: ScoreCAM's masked copies of sample i must see
    # mask[i], every method the same arguments.
    for i in range(3):
        alone = method(model, "conv")(
            x[i : i + 1], target=i, forward_args=cl.ForwardArgs(mask[i : i + 1], temperature=2.0)
        )
        torch.testing.assert_close(
            out.raw[i], alone.raw[0], **tolerance(scale=float(alone.raw.abs().amax()) + 1)
        )
    with pytest.raises(cl.InvalidTypeError, match="cannot take the inputs given"):
        method(model, "conv")(x, target=0)
    with pytest.raises(cl.InvalidTypeError, match="forward_args must be a tuple"):
        method(model, "conv")(x, target=0, forward_args=[mask])  # type: ignore[arg-type]


def test_forward_args_as_a_tuple_and_a_dict_equal_the_long_way() -> None:
    torch.manual_seed(0)
    model = Masked().eval()
    x, mask = torch.randn(2, 3, 8, 8), torch.ones(2, 1, 8, 8)
    out = cl.GradCAM(model, "conv")(x, 4, forward_args=cl.ForwardArgs(mask, temperature=0.5))
    with torch.enable_grad():
        a = model.conv(x).detach().requires_grad_()
        score = model.fc((torch.relu(a) * mask).mean(dim=(2, 3)))[:, 4] / 0.5
        (g,) = torch.autograd.grad(score.sum(), a)
    torch.testing.assert_close(out.raw, F.relu((g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(dim=1)))
    torch.testing.assert_close(out.scores, score.detach())

    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Masked()

        def forward(self, x: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
            out: Tensor = self.net(x, mask, temperature=temperature)
            return out

    wrapped = Keyword().eval()
    wrapped.net.load_state_dict(model.state_dict())
    by_tuple = cl.GradCAM(wrapped, "net.conv")(x, 4, forward_args=(mask, 0.5))
    by_dict = cl.GradCAM(wrapped, "net.conv")(x, 4, forward_args={"mask": mask, "temperature": 0.5})
    torch.testing.assert_close(by_tuple.raw, out.raw)
    torch.testing.assert_close(by_dict.raw, out.raw)
    saliency = cl.Saliency(model)(x, 4, forward_args=cl.ForwardArgs(mask, temperature=0.5))
    guided = cl.GuidedGradCAM(model, "conv")(x, 4, forward_args=cl.ForwardArgs(mask, temperature=0.5))
    torch.testing.assert_close(guided.cam, out.maps)
    assert saliency.gradients.shape == x.shape


class Branches(nn.Module):
    """A multi-resolution stage: returns (high, low) or {"high": ..., "low": ...}."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.high = nn.Conv2d(3, 4, 3, padding=1)
        self.low = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.as_dict = as_dict

    def forward(self, x: Tensor) -> Any:
        high, low = torch.relu(self.high(x)), torch.relu(self.low(x))
        return {"high": high, "low": low} if self.as_dict else (high, low)


class MultiBranch(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.stage = Branches(as_dict)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stage(x)
        high, low = (out["high"], out["low"]) if isinstance(out, dict) else out
        result: Tensor = self.fc(torch.cat([high.mean(dim=(2, 3)), low.mean(dim=(2, 3))], dim=1))
        return result


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_multi_tensor_layer_reads_the_first_tensor_unless_layout_part_says(as_dict: bool) -> None:
    torch.manual_seed(0)
    model = MultiBranch(as_dict).eval()
    x = torch.randn(2, 3, 8, 8)
    first = cl.GradCAM(model, "stage")(x, target=1)
    second = cl.GradCAM(model, "stage", reshape=cl.Layout(part="low" if as_dict else 1))(x, target=1)
    by_position = cl.GradCAM(model, "stage", reshape=cl.Layout(part=1))(x, target=1)
    assert first.raw.shape == (2, 8, 8)
    assert second.raw.shape == (2, 4, 4)
    torch.testing.assert_close(by_position.raw, second.raw, rtol=0, atol=0)
    for name, result in (("high", first), ("low", second)):
        with torch.enable_grad():
            high = torch.relu(model.stage.high(x)).detach().requires_grad_()
            low = torch.relu(model.stage.low(x)).detach().requires_grad_()
            score = model.fc(torch.cat([high.mean(dim=(2, 3)), low.mean(dim=(2, 3))], dim=1))[:, 1]
            a = high if name == "high" else low
            (g,) = torch.autograd.grad(score.sum(), a)
        torch.testing.assert_close(
            result.raw, F.relu((g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(dim=1))
        )
    before = snapshot(model)
    wrong = cl.Layout(part="middle" if as_dict else 5)
    with pytest.raises(cl.InvalidArgumentError, match="Layout part"):
        cl.GradCAM(model, "stage", reshape=wrong)(x, target=1)
    assert_unchanged(model, before)


def quantized_net() -> nn.Module:
    torch.manual_seed(0)
    float_net = nn.Sequential(
        torch.ao.quantization.QuantStub(),
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
        torch.ao.quantization.DeQuantStub(),
    ).eval()
    return quantize(float_net, torch.randn(8, 3, 8, 8))


@pytest.mark.parametrize(
    "call",
    [
        lambda m: cl.GradCAM(m, "1")(torch.randn(1, 3, 8, 8)),
        lambda m: cl.LayerCAM(m, "1")(torch.randn(1, 3, 8, 8)),
        lambda m: cl.Saliency(m)(torch.randn(1, 3, 8, 8)),
        lambda m: cl.GuidedBackprop(m)(torch.randn(1, 3, 8, 8)),
        lambda m: cl.GuidedGradCAM(m, "1")(torch.randn(1, 3, 8, 8)),
    ],
)
def test_a_quantized_model_gets_a_typed_error_before_work(call: Callable[[nn.Module], Any]) -> None:
    try:
        model = quantized_net()
    except RuntimeError as err:  # pragma: no cover - a torch build without a quantized engine
        pytest.skip(f"no quantized engine: {err}")
    before = snapshot(model)
    with pytest.raises(cl.UnsupportedModelError, match=r"quantized model has none.*float model"):
        call(model)
    assert_unchanged(model, before)


def test_gradient_free_methods_read_a_quantized_model() -> None:
    try:
        model = quantized_net()
    except RuntimeError as err:  # pragma: no cover
        pytest.skip(f"no quantized engine: {err}")
    x = torch.randn(2, 3, 8, 8)
    kept: list[Tensor] = []
    handle = model.get_submodule("2").register_forward_hook(lambda _m, _i, out: kept.append(out.dequantize()))
    try:
        model(x)
    finally:
        handle.remove()
    eigen = cl.EigenCAM(model, "2")(x)
    expected = cl.EigenCAM(nn.Sequential(nn.Identity()), "0")  # the same method on the dequantized activation
    context = CAMContext(cam=expected, x=x, target=None, targets=None)
    torch.testing.assert_close(eigen.raw, expected.raw_map(kept[0], None, context))
    score = cl.ScoreCAM(model, "2", chunk_size=2)(x, target=1)
    assert score.maps.shape == (2, 8, 8)


def test_a_meta_model_gets_a_typed_error_before_work() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).to("meta")
    for call in (
        lambda: cl.GradCAM(model, "0")(torch.randn(1, 3, 8, 8)),
        lambda: cl.ScoreCAM(model, "0")(torch.randn(1, 3, 8, 8)),
        lambda: cl.Saliency(model)(torch.randn(1, 3, 8, 8)),
    ):
        with pytest.raises(cl.UnsupportedModelError, match=r"meta device.*Load its weights"):
            call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_device_mismatch_names_both_devices_before_work() -> None:
    model = CountingNet().cuda()
    with pytest.raises(cl.DeviceMismatchError, match=r"cuda:0.*cpu"):
        cl.GradCAM(model, "conv")(torch.randn(1, 3, 6, 6))
    with pytest.raises(cl.DeviceMismatchError, match="forward_args"):
        cl.Saliency(Masked().cuda())(
            torch.randn(1, 3, 8, 8, device="cuda"),
            forward_args=cl.ForwardArgs(torch.ones(1, 1, 8, 8), temperature=1.0),
        )
    assert model.real_calls == 0


#: A bfloat16 model's maps against the float32 model's (GradCAM's docstring states it): maps lie in
#: [0, 1]; bfloat16 keeps 8 bits of mantissa and every layer before the map rounds, so a few pixels
#: move by up to 0.25 while the maps agree on average within 0.03.
BFLOAT16_MAX, BFLOAT16_MEAN = 0.25, 0.03


def assert_near_float32(low: Tensor, full: Tensor) -> None:
    difference = (low - full).abs()
    assert float(difference.amax()) <= BFLOAT16_MAX, float(difference.amax())
    assert float(difference.mean()) <= BFLOAT16_MEAN, float(difference.mean())


@pytest.mark.slow
@pytest.mark.parametrize("method", [*ALL_CAMS, lambda m, layer: cl.Saliency(m)])
def test_bfloat16_model_maps_are_float32_and_near_the_float32_models(
    method: Callable[[nn.Module, str], Any],
) -> None:
    model = seeded_alexnet()
    half = copy.deepcopy(model).to(torch.bfloat16)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 67, 67)
    layer = "features.7"
    target = [1, 2]
    full = method(model, layer)(x, target=target)
    low = method(half, layer)(x.to(torch.bfloat16), target=target)
    assert low.maps.dtype == torch.float32
    assert_near_float32(low.maps, full.maps)
    if isinstance(low, cl.CAMResult):
        assert low.raw.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", [*ALL_CAMS, lambda m, layer: cl.Saliency(m)])
def test_float16_on_cuda(method: Callable[[nn.Module, str], Any]) -> None:
    model = seeded_alexnet().cuda()
    half = copy.deepcopy(model).half()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 67, 67, device="cuda")
    full = method(model, "features.7")(x, target=[1, 2])
    low = method(half, "features.7")(x.half(), target=[1, 2])
    assert low.maps.dtype == torch.float32
    assert_near_float32(low.maps, full.maps)


# -- targets that hold a mask or boxes per image -------------------------------------------


class TinyBoxes(nn.Module):
    """A detector's output from a conv: per image, two fixed boxes (labels 1, 2) scored by channels 0, 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0]])

    def forward(self, x: Tensor | list[Tensor]) -> list[dict[str, Tensor]]:
        batch = torch.stack(list(x)) if isinstance(x, list | tuple) else x
        pooled = torch.relu(self.conv(batch)).mean(dim=(2, 3))  # (N, 4)
        labels = torch.tensor([1, 2])
        return [{"boxes": self.boxes, "labels": labels, "scores": torch.sigmoid(row[:2])} for row in pooled]


def per_image_targets(kind: str) -> tuple[nn.Module, Any, Callable[[int], Any]]:
    """A model, a target per image for a batch of 3, and the same target given once for image i alone."""
    torch.manual_seed(0)
    if kind == "mask":
        model: nn.Module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
        masks = torch.zeros(3, 8, 8)
        masks[0, :4], masks[1, 4:], masks[2, :, :3] = 1.0, 1.0, 1.0
        return model.eval(), cl.SegmentationTarget(1, masks), lambda i: cl.SegmentationTarget(1, masks[i])
    model = TinyBoxes().eval()
    labels, boxes = [[1], [2], [2]], [[[0.0, 0.0, 4.0, 4.0]], [[2.0, 2.0, 8.0, 8.0]], [[2.0, 2.0, 8.0, 8.0]]]
    return model, cl.BoxScoreTarget(labels, boxes), lambda i: cl.BoxScoreTarget(labels[i], boxes[i])


@pytest.mark.parametrize("kind", ["mask", "boxes"])
@pytest.mark.parametrize(
    "method",
    [*ALL_CAMS, partial(cl.ScoreCAM, chunk_size=1), partial(cl.ScoreCAM, chunk_size=4), cl.ScoreCAM],
)
def test_a_target_per_image_scores_each_sample_as_if_it_ran_alone(
    method: Callable[[nn.Module, str], cl.GradCAM], kind: str
) -> None:
    # ScoreCAM runs masked copies of one sample: a mask or boxes given per image must score them with
    # that sample's (before, a chunk as long as the batch was scored with the other images' masks, and
    # any other chunk raised mid-run). The reference gives the target once, for one image run alone.
    model, target, alone_target = per_image_targets(kind)
    x = torch.rand(3, 3, 8, 8)
    before = snapshot(model)
    out = method(model, "0" if kind == "mask" else "conv")(x, target=target)
    for i in range(3):
        alone = method(model, "0" if kind == "mask" else "conv")(x[i : i + 1], target=alone_target(i))
        scale = float(alone.raw.abs().amax()) + 1
        torch.testing.assert_close(out.raw[i], alone.raw[0], **tolerance(scale=scale))
        torch.testing.assert_close(out.scores[i], alone.scores[0], **tolerance(scale=scale))
    assert_unchanged(model, before)
