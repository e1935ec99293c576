"""connections(): circuits between two layers, from the weights where they can be followed, else attribution."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import convlens as cl
from convlens.errors import (
    AmbiguousLayerError,
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    ShapeError,
)
from convlens.featureviz.circuits import Connections, connections
from helpers import exact, tolerance
from invariants import assert_unchanged, snapshot

torchvision = pytest.importorskip("torchvision")


def reads_channel_two() -> nn.Sequential:
    """A = Conv2d(1, 4, 3), B = Conv2d(4, 3, 3), B's unit 1 reads channel 2 of A only."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 3, 3))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
        w = weight(net, "1")  # a view: writes reach the layer
        keep = w[1, 2].clone()
        w[1].zero_()
        w[1, 2] = keep
    return net.eval()


def slice_norms(weight: Tensor) -> Tensor:
    """||W[j, i]||_2 for every (j, i) of a conv weight, by hand."""
    out = torch.zeros(weight.shape[0], weight.shape[1], dtype=torch.float64)
    for j in range(weight.shape[0]):
        for i in range(weight.shape[1]):
            out[j, i] = weight[j, i].double().pow(2).sum().sqrt()
    return out


def weight(model: nn.Module, name: str) -> Tensor:
    """A layer's weight, detached (a view of it)."""
    found = model.get_submodule(name).weight
    assert isinstance(found, Tensor)
    return found.detach()


def running_var(model: nn.Module, name: str) -> Tensor:
    found = model.get_submodule(name).running_var
    assert isinstance(found, Tensor)
    return found


def bn_scale(model: nn.Module, name: str) -> Tensor:
    """gamma / sqrt(var + eps) of a BatchNorm, by hand."""
    bn = model.get_submodule(name)
    assert isinstance(bn, nn.BatchNorm2d)
    return weight(model, name).double() / (running_var(model, name).double() + bn.eps).sqrt()


def close(a: Tensor, b: Tensor) -> None:
    torch.testing.assert_close(a, b.float(), **tolerance(scale=float(b.abs().max())))


# -- the hand-made network -------------------------------------------------------------------------


def test_weights_read_only_channel_two() -> None:
    net = reads_channel_two()
    c = connections(net, "0", "1", input_shape=(1, 1, 9, 9))
    assert (c.method, c.path, c.units, c.earlier, c.later) == ("weights", "direct", (0, 1, 2), "0", "1")
    assert c.strengths.dtype == torch.float32
    assert c.strengths.device.type == "cpu"
    assert c.strengths.shape == (3, 4)
    row = c.strengths[1]
    assert row[[0, 1, 3]].eq(0).all()
    close(row[2], weight(net, "1")[1, 2].norm())
    close(c.strengths, slice_norms(weight(net, "1")))
    assert c.top(1, n=2)[0][0] == 2


def test_attribution_reads_only_channel_two() -> None:
    net = reads_channel_two()
    x = torch.randn(3, 4, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    c = connections(net, "0", "1", x, method="attribution")
    assert (c.method, c.path) == ("attribution", "")
    assert c.strengths[1, [0, 1, 3]].eq(0).all()
    assert c.strengths[1, 2] != 0
    assert c.strengths[0].ne(0).sum() > 1  # the other units read several channels


def test_batchnorm_and_relu_scale_the_weights() -> None:
    net = nn.Sequential(*reads_channel_two()[:1], nn.BatchNorm2d(4), nn.ReLU(), reads_channel_two()[1])
    with torch.no_grad():
        weight(net, "1").copy_(torch.tensor([0.5, -2.0, 1.5, 3.0]))
        running_var(net, "1").copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
    net.eval()
    c = connections(net, "0", "3", input_shape=(1, 1, 9, 9))
    assert (c.method, c.path) == ("weights", "BatchNorm2d -> ReLU")
    eps = 1e-5  # BatchNorm2d's default
    by_hand = torch.tensor(
        [0.5 / (4 + eps) ** 0.5, 2.0 / (0.25 + eps) ** 0.5, 1.5 / (1 + eps) ** 0.5, 3 / (9 + eps) ** 0.5]
    )
    close(c.strengths, slice_norms(weight(net, "3")) * by_hand.double())
    assert c.strengths[1, [0, 1, 3]].eq(0).all()


class TwoAddends(nn.Module):
    """Both addends come from A: their paths' products add."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        return self.b(torch.add(self.bn(y), F.relu(y), alpha=-2.0))  # type: ignore[no-any-return]


def test_two_addends_from_a_add_and_alpha_scales() -> None:
    net = TwoAddends()
    with torch.no_grad():
        running_var(net, "bn").uniform_(0.5, 2.0)
        weight(net, "bn").normal_()
    net.eval()
    c = connections(net, "a", "b", input_shape=(1, 2, 5, 5))
    assert c.path == "(BatchNorm2d | relu) -> add"
    expected = (bn_scale(net, "bn").abs() + 2.0) * slice_norms(weight(net, "b"))
    close(c.strengths, expected)


def test_flatten_into_linear_takes_each_channels_block() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(), nn.Linear(2 * 4 * 4, 3)
    ).eval()
    c = connections(net, "0", "4", input_shape=(1, 1, 6, 6))
    assert c.path == "ReLU -> Flatten -> Dropout"
    w = weight(net, "4").double()
    close(c.strengths, torch.stack([w[:, :16].norm(dim=1), w[:, 16:].norm(dim=1)], dim=1))


def test_grouped_conv_reads_its_group_only() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, groups=2)).eval()
    c = connections(net, "0", "2", units=[0, 5], input_shape=(1, 1, 12, 12))
    assert c.path == "MaxPool2d"
    w = weight(net, "2")
    assert c.strengths[0, 2:].eq(0).all()
    assert c.strengths[1, :2].eq(0).all()
    close(c.strengths[0, :2], w[0].flatten(1).norm(dim=1))
    close(c.strengths[1, 2:], w[5].flatten(1).norm(dim=1))


# -- torchvision resnet18 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
                m.running_mean.normal_()  # type: ignore[union-attr]
                m.weight.normal_()
    assert isinstance(model, nn.Module)
    return model


SMALL = (1, 3, 64, 64)


@pytest.mark.parametrize(
    ("earlier", "later", "bn", "conv"),
    [
        ("layer1.0.conv2", "layer1.1.conv1", "layer1.0.bn2", "layer1.1.conv1"),
        ("layer1.1.conv2", "layer2.0.conv1", "layer1.1.bn2", "layer2.0.conv1"),
        ("layer1.1.conv2", "layer2.0.downsample.0", "layer1.1.bn2", "layer2.0.downsample.0"),
    ],
)
def test_resnet_weights_across_a_residual_block(
    resnet: nn.Module, earlier: str, later: str, bn: str, conv: str
) -> None:
    c = connections(resnet, earlier, later, units=[0, 7, 63], input_shape=SMALL)
    assert (c.method, c.path) == ("weights", "BatchNorm2d -> add -> ReLU")
    expected = bn_scale(resnet, bn).abs() * slice_norms(weight(resnet, conv))[[0, 7, 63]]
    close(c.strengths, expected)


def test_resnet_fc_from_layer4(resnet: nn.Module) -> None:
    c = connections(resnet, "layer4", "fc", units=[3, 999], input_shape=SMALL)
    assert (c.method, c.path) == ("weights", "AdaptiveAvgPool2d -> flatten")
    close(c.strengths, weight(resnet, "fc")[[3, 999]].abs())
    deeper = connections(resnet, "layer4.1.conv2", "fc", units=[3], input_shape=SMALL)
    assert deeper.path == "BatchNorm2d -> add -> ReLU -> AdaptiveAvgPool2d -> flatten"
    close(deeper.strengths, bn_scale(resnet, "layer4.1.bn2").abs() * weight(resnet, "fc")[[3]].abs())


def test_resnet_conv_in_between_falls_back_to_attribution(resnet: nn.Module) -> None:
    x = torch.randn(2, 3, *SMALL[1:], generator=torch.Generator().manual_seed(2))
    c = connections(resnet, "layer1.0.conv1", "layer1.1.conv1", x, units=[4, 9])
    assert (c.method, c.path, c.strengths.shape) == ("attribution", "", (2, 64))
    with pytest.raises(InvalidArgumentError, match=r"Conv2d 'layer1\.0\.conv2' stands between them"):
        connections(
            resnet, "layer1.0.conv1", "layer1.1.conv1", units=[4], method="weights", input_shape=SMALL
        )
    with pytest.raises(InvalidArgumentError, match="needs inputs"):
        connections(resnet, "layer1.0.conv1", "layer1.1.conv1", units=[4], input_shape=SMALL)
    block = connections(resnet, "layer1", "layer2", x, units=[4, 9])  # B is a block, not a conv
    assert block.method == "attribution"


def by_hand(model: nn.Module, earlier: str, later: str, inputs: Tensor, units: list[int]) -> Tensor:
    """Attribution per example: LayerTap on A for its activation and gradient, B's unit by autograd by hand."""
    outputs: list[Tensor] = []
    handle = model.get_submodule(later).register_forward_hook(lambda _m, _a, out: outputs.append(out))
    rows = []
    try:
        for u, unit in enumerate(units):
            per = []
            for example in inputs[u]:
                x = example[None].clone().requires_grad_()
                with cl.LayerTap(model, [earlier], grads=True) as tap, torch.enable_grad():
                    model(x)
                    # the last output is the real one (the tap's probe ran B on the meta device first)
                    torch.autograd.grad(outputs[-1][0, unit].mean(), [x])
                per.append((tap.gradient(earlier)[0] * tap[earlier][0]).flatten(1).sum(1))
            rows.append(torch.stack(per).mean(0))
    finally:
        handle.remove()
    return torch.stack(rows)


def test_attribution_equals_an_independent_computation(resnet: nn.Module) -> None:
    x = torch.randn(2, 3, *SMALL[1:], generator=torch.Generator().manual_seed(3))
    c = connections(resnet, "layer1.0.conv1", "layer1.1.conv1", x, units=[4, 9], method="attribution")
    expected = by_hand(resnet, "layer1.0.conv1", "layer1.1.conv1", x, [4, 9])
    torch.testing.assert_close(c.strengths, expected, **tolerance(scale=float(expected.abs().max())))


def test_reused_module_and_functional_ops() -> None:
    from models import ReusedNet, seeded

    net = seeded(ReusedNet()).eval()
    c = connections(net, "relu#1", "fc", input_shape=(1, 3, 8, 8))
    assert (c.method, c.path) == ("weights", "adaptive_avg_pool2d -> flatten")
    close(c.strengths, weight(net, "fc").abs())
    assert connections(net, "conv1", "conv2", input_shape=(1, 3, 8, 8)).path == "ReLU"
    with pytest.raises(AmbiguousLayerError, match=r"'relu#0', 'relu#1', 'relu#2'"):
        connections(net, "relu", "fc", input_shape=(1, 3, 8, 8))


def test_top_ranks_by_size_ties_to_the_lower_channel() -> None:
    c = Connections(
        earlier="a", later="b", units=(4, 9), strengths=torch.tensor([[1.0, -3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 2.0]]),
        method="attribution", path="",
    )  # fmt: skip
    assert c.top(0, n=3) == [(1, -3.0), (2, 3.0), (0, 1.0)]
    assert c.top(1, n=10)[:2] == [(3, 2.0), (0, 0.0)]
    with pytest.raises(
        InvalidArgumentError, match=exact("u must be a row index from 0 to 1 (one per unit); got 2.")
    ):
        c.top(2)
    with pytest.raises(InvalidArgumentError, match="n must be an int >= 1"):
        c.top(0, n=0)


class Scaled(nn.Module):
    """b(a(x) * scale): the scale is a forward argument (a number, or one per example)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)

    def forward(self, x: Tensor, *, scale: float | Tensor) -> Tensor:
        return self.b(self.a(x) * scale)  # type: ignore[no-any-return]


def test_forward_args_reach_every_forward() -> None:
    net = Scaled().eval()
    x = torch.randn(2, 3, 1, 7, 7, generator=torch.Generator().manual_seed(4))
    c = connections(net, "a", "b", x, forward_args={"scale": 2.0})
    assert c.method == "attribution"  # a product is not followed
    half = connections(net, "a", "b", x, forward_args={"scale": 1.0})
    close(c.strengths, 2 * half.strengths.double())


def test_a_per_example_forward_arg_follows_its_example_in_any_batch() -> None:
    net = Scaled().eval()
    x = torch.randn(2, 3, 1, 7, 7, generator=torch.Generator().manual_seed(4))
    scale = torch.arange(1.0, 7.0).reshape(6, 1, 1, 1)  # example (u, j) is row 3 * u + j
    whole = connections(net, "a", "b", x, forward_args={"scale": scale})
    ones = connections(net, "a", "b", x, forward_args={"scale": scale}, batch_size=1)
    close(ones.strengths, whole.strengths.double())
    # each example alone, scale 1: its own contribution; the scale multiplies it (b is linear in its input)
    alone = torch.stack([
        torch.stack([connections(net, "a", "b", x[u : u + 1, j : j + 1], units=[u], forward_args={"scale": 1.0})
                     .strengths[0] for j in range(3)])
        for u in range(2)
    ])  # fmt: skip
    expected = (alone * scale.reshape(2, 3, 1)).mean(1)
    close(whole.strengths, expected.double())


# -- errors and hygiene ----------------------------------------------------------------------------


class Counted(nn.Sequential):
    """Counts its real forwards (the meta probe is not one)."""

    runs = 0

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_meta:
            type(self).runs += 1
        for layer in self:
            x = layer(x)
        return x


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"earlier": "2", "later": "1"}, LayerNotFoundError, "has no layer '2'. Did you mean"),
        (
            {"units": [3]},
            InvalidArgumentError,
            exact("unit 3 is out of range: layer '1' has 3 units (0 to 2)."),
        ),
        ({"units": [-1]}, InvalidArgumentError, "unit -1 is out of range"),
        ({"method": "weight"}, InvalidArgumentError, "Did you mean 'weights'"),
        ({"method": "attribution"}, InvalidArgumentError, "method='attribution' needs inputs"),
        ({"inputs": torch.zeros(3, 9)}, InvalidArgumentError, r"inputs must be \(U, k, \*sample\)"),
        (
            {"inputs": torch.zeros(2, 1, 1, 9, 9)},
            InvalidArgumentError,
            r"each of the 3 units, \(U=3, k, \*sample\)",
        ),
        ({"inputs": [1]}, InvalidTypeError, "inputs must be a tensor"),
        ({"inputs": torch.zeros(3, 1, 2, 9, 9)}, ShapeError, "expects 1 input channels, got 2"),
        (
            {"earlier": "1", "later": "0"},
            InvalidArgumentError,
            "earlier must run before later: layer '1' runs after '0'",
        ),
    ],
)
def test_bad_input_before_any_work(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    net = Counted(*reads_channel_two())
    before = snapshot(net)
    call = {"earlier": "0", "later": "1", "input_shape": (1, 1, 9, 9), **kwargs}
    Counted.runs = 0
    with pytest.raises(error, match=message):
        connections(net, call.pop("earlier"), call.pop("later"), call.pop("inputs", None), **call)
    assert Counted.runs == (
        1 if kwargs.get("earlier") == "1" else 0
    )  # the order is read from the one-example trace
    assert_unchanged(net, before)


class Fussy(nn.Module):
    """Passes one example, refuses a batch: fails inside the attribution's batched forward."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > 1 and not x.is_meta:
            raise RuntimeError("fussy")
        return x * 1.0


@pytest.mark.parametrize("grad_mode", [True, False])
def test_model_left_as_found(resnet: nn.Module, grad_mode: bool) -> None:
    resnet.train()
    resnet.get_submodule("layer1").requires_grad_(False)
    before = snapshot(resnet)
    x = torch.randn(2, 2, *SMALL[1:], generator=torch.Generator().manual_seed(5))
    try:
        with torch.set_grad_enabled(grad_mode):
            connections(resnet, "layer1.0.conv2", "layer1.1.conv1", x, units=[1, 2])
            connections(resnet, "layer1.0.conv1", "layer1.1.conv1", x, units=[1, 2])
            with pytest.raises(InvalidArgumentError):
                connections(resnet, "layer1.0.conv1", "layer2.0.conv1", x, units=[1, 2], method="weights")
            assert torch.is_grad_enabled() == grad_mode
        assert_unchanged(resnet, before)
    finally:
        resnet.requires_grad_(True)
        resnet.eval()
    net = nn.Sequential(nn.Conv2d(1, 2, 3), Fussy(), nn.Conv2d(2, 2, 3)).train()
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="fussy"):
        connections(net, "0", "2", torch.zeros(2, 2, 1, 7, 7))
    assert torch.is_grad_enabled()
    assert_unchanged(net, before)


def test_train_mode_reads_the_eval_network(resnet: nn.Module) -> None:
    x = torch.randn(1, 2, *SMALL[1:], generator=torch.Generator().manual_seed(6))
    evaluated = connections(resnet, "layer1.0.conv1", "layer1.1.conv1", x, units=[3])
    resnet.train()
    try:
        trained = connections(resnet, "layer1.0.conv1", "layer1.1.conv1", x, units=[3])
    finally:
        resnet.eval()
    torch.testing.assert_close(trained.strengths, evaluated.strengths, rtol=0, atol=0)


def test_train_mode_follows_the_weights_through_batchnorm_as_eval_mode_does(resnet: nn.Module) -> None:
    """torchvision builds models in train mode: the path is read in eval mode, BatchNorm's running scale."""
    evaluated = connections(resnet, "layer1.0.conv2", "layer1.1.conv1", units=[5], input_shape=SMALL)
    resnet.train()
    try:
        trained = connections(resnet, "layer1.0.conv2", "layer1.1.conv1", units=[5], input_shape=SMALL)
        assert resnet.training  # left as found
    finally:
        resnet.eval()
    assert (trained.method, trained.path) == ("weights", "BatchNorm2d -> add -> ReLU")
    torch.testing.assert_close(trained.strengths, evaluated.strengths, rtol=0, atol=0)


class Branches(nn.Module):
    """Two convs on parallel branches of the same input: neither feeds the other."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3), nn.Conv2d(1, 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x) + self.b(x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", ["auto", "weights", "attribution"])
def test_layers_on_parallel_branches_have_no_circuit(method: str) -> None:
    """No strengths of zeros for layers that never meet: a refusal that says why."""
    net = Branches().eval()
    before = snapshot(net)
    with pytest.raises(InvalidArgumentError, match="does not read the output of 'a'"):
        connections(net, "a", "b", torch.rand(3, 2, 1, 8, 8), method=method)  # type: ignore[arg-type]
    assert_unchanged(net, before)


class Tokens(nn.Module):
    """Channels last, (N, H, W, C): Linear layers over the last dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 5), nn.Linear(5, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.relu(self.a(x)))  # type: ignore[no-any-return]


def test_reshape_applies_to_both_layers() -> None:
    net = seeded_tokens()
    x = torch.randn(4, 2, 6, 6, 3, generator=torch.Generator().manual_seed(7))
    with pytest.raises(InvalidArgumentError, match="reshape='channels_last'"):
        connections(net, "a", "b", x)
    c = connections(net, "a", "b", x, reshape="channels_last")
    assert (c.method, c.strengths.shape) == ("attribution", (4, 5))
    # by hand: b's unit u averaged over positions is linear in relu(a(x)): d/d a_i = w_b[u, i] * relu'(a_i) / HW
    acts = net.a(x)
    slope = (acts > 0).to(acts.dtype)
    w = weight(net, "b")
    expected = torch.stack([(w[u] * slope[u] * acts[u]).sum((1, 2)).mean(0) / 36 for u in range(4)]).detach()
    close(c.strengths, expected.double())


def seeded_tokens() -> Tokens:
    torch.manual_seed(8)
    return Tokens().eval()


def test_wrapped_model_and_float64() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3)).eval()
    c = connections(nn.DataParallel(net), "module.0", "module.3", input_shape=(1, 1, 8, 8))
    assert (c.earlier, c.later, c.method, c.path) == (
        "module.0",
        "module.3",
        "weights",
        "BatchNorm2d -> ReLU",
    )
    x = torch.randn(3, 2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    double = connections(net.double(), net[0], net[3], x, method="attribution")
    assert (double.earlier, double.strengths.dtype) == ("0", torch.float32)
    single = connections(net.float(), "0", "3", x.float(), method="attribution")
    close(single.strengths, double.strengths.double())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_gives_the_cpu_answer(resnet: nn.Module) -> None:
    x = torch.randn(2, 2, *SMALL[1:], generator=torch.Generator().manual_seed(10))
    on_cpu = [connections(resnet, "layer1.0.conv1", "layer1.1.conv1", x, units=[1, 5]),
              connections(resnet, "layer1.0.conv2", "layer1.1.conv1", x, units=[1, 5])]  # fmt: skip
    resnet.cuda()
    try:
        on_gpu = [connections(resnet, "layer1.0.conv1", "layer1.1.conv1", x.cuda(), units=[1, 5]),
                  connections(resnet, "layer1.0.conv2", "layer1.1.conv1", x.cuda(), units=[1, 5])]  # fmt: skip
    finally:
        resnet.cpu()
    for cpu, gpu in zip(on_cpu, on_gpu, strict=True):
        assert gpu.strengths.device.type == "cpu"
        assert gpu.method == cpu.method
        # TF32 convolutions on the GPU: a loose, relative tolerance
        torch.testing.assert_close(
            gpu.strengths, cpu.strengths, rtol=1e-2, atol=1e-2 * float(cpu.strengths.abs().max())
        )


def test_inplace_relus_give_the_inplace_false_answer() -> None:
    from models import InplaceNet, seeded, without_inplace

    net = seeded(InplaceNet()).eval()
    plain = without_inplace(net)
    x = torch.randn(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    for earlier, later in [
        ("features.0", "features.1"),
        ("features.0", "features.3"),
        ("features.3", "classifier"),
    ]:
        got, want = (
            connections(net, earlier, later, x, units=[0, 3]),
            connections(plain, earlier, later, x, units=[0, 3]),
        )
        assert (got.method, got.path) == (want.method, want.path)
        torch.testing.assert_close(got.strengths, want.strengths, rtol=0, atol=0)
    residual = connections(net, "bn", "classifier", units=[1], input_shape=(1, 3, 16, 16))
    assert (residual.method, residual.path) == ("weights", "add -> mean")  # the skip comes from before bn
    close(residual.strengths, weight(net, "classifier")[[1]].abs())  # from bn's output: its scale is behind A
