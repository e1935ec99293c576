from __future__ import annotations

from typing import Any, cast

import pytest
import torch
from torch import Tensor, nn

import convlens as cl
from convlens.core import tap as tap_module
from convlens.core.tap import LayerTap
from convlens.errors import ShapeError
from helpers import Tolerance
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import DictNet, InplaceNet, ReusedNet, seeded_alexnet, without_inplace


class Boom(nn.Module):
    """Raises when called: proves that nothing after the last tapped layer runs."""

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("boom: this layer must not run")


def test_alexnet_tap_equals_the_layer_despite_inplace_relu() -> None:
    model = seeded_alexnet()
    features = cast("nn.Sequential", model.features)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), cl.LayerTap(model, ["features.0", "features.10"]) as tap:
        model(x)
        expected = features[0](x)
        reference = features[:11](x)  # ends with features.10, before its in-place ReLU
    assert (expected < 0).any()
    torch.testing.assert_close(tap["features.0"], expected, rtol=0, atol=0)
    torch.testing.assert_close(tap["features.10"], reference)
    plain = without_inplace(model)
    with torch.no_grad(), cl.LayerTap(plain, ["features.10"]) as plain_tap:
        plain(x)
    torch.testing.assert_close(tap["features.10"], plain_tap["features.10"])


def test_residual_plus_equals_cannot_change_a_tapped_value(inplace_net: InplaceNet, image: Tensor) -> None:
    inplace_net.eval()
    with torch.no_grad():
        expected = inplace_net.bn(inplace_net.features(image))
        # "classifier" runs after `out += identity`, so the forward cannot stop before the +=.
        tap = cl.LayerTap(inplace_net, ["bn", "classifier"])
        acts = tap.run(image)
    torch.testing.assert_close(acts["bn"], expected)
    assert "bn" in tap.copied
    with torch.no_grad(), cl.LayerTap(inplace_net, ["bn"]) as block:
        inplace_net(image)  # the user's own forward: the += surely runs
    torch.testing.assert_close(block["bn"], expected)


def test_resnet_out_plus_identity() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    # layer1.1.conv1 runs after layer1.0's `out += identity`, so the += rewrites bn2's output first.
    tap = cl.LayerTap(model, ["layer1.0.bn2", "maxpool", "layer1.1.conv1"])
    acts = tap.run(x)
    block: Any = cast("nn.Sequential", model.layer1)[0]
    with torch.no_grad():
        h = block.relu(block.bn1(block.conv1(acts["maxpool"])))
        expected = block.bn2(block.conv2(h))
    torch.testing.assert_close(acts["layer1.0.bn2"], expected)
    assert tap.copied == {"layer1.0.bn2"}  # the only tapped output a later op writes into


def test_the_residual_tests_fail_on_a_tap_that_never_copies(
    inplace_net: InplaceNet, image: Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convlens.core.probe import Probe

    monkeypatch.setattr(Probe, "rewritten", lambda _self, _name, _call: False)
    with pytest.raises(AssertionError):
        test_residual_plus_equals_cannot_change_a_tapped_value(inplace_net, image)
    with pytest.raises(AssertionError):
        test_resnet_out_plus_identity()


def sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )


def autograd_reference(model: nn.Sequential, x: Tensor, index: int) -> Tensor:
    plain = without_inplace(model)
    activation: Tensor = plain[: index + 1](x)
    out: Tensor = plain[index + 1 :](activation)
    (grad,) = torch.autograd.grad(out.sum(), activation)
    return grad


def test_grads_in_users_backward_equal_autograd() -> None:
    model = sequential()
    x = torch.randn(2, 3, 5, 5)
    with cl.LayerTap(model, ["0", "2"], grads=True) as tap:
        model(x).sum().backward()
    torch.testing.assert_close(tap.gradients["0"], autograd_reference(model, x, 0))
    torch.testing.assert_close(tap.gradient("2"), autograd_reference(model, x, 2))
    assert tap.gradients.keys() == {"0", "2"}


def test_run_with_grads_writes_no_parameter_grad() -> None:
    model = sequential()
    x = torch.randn(2, 3, 5, 5)
    before = snapshot(model)
    with torch.no_grad():  # a caller's no_grad does not stop grads=True
        cl_tap = cl.LayerTap(model, ["0"], grads=True)
        cl_tap.run(x)
    torch.testing.assert_close(cl_tap.gradients["0"], autograd_reference(model, x, 0))
    assert all(p.grad is None for p in model.parameters())
    assert not x.requires_grad
    assert_unchanged(model, before)


def test_gradient_needs_grads_flag() -> None:
    model = sequential()
    tap = cl.LayerTap(model, ["0"])
    tap.run(torch.randn(1, 3, 5, 5))
    with pytest.raises(cl.ConvlensError, match="grads=True"):
        tap.gradient("0")


def test_run_stops_after_last_tapped_layer() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.randn(1, 1, 5, 5))
    acts = cl.LayerTap(model, ["1"]).run(torch.randn(1, 1, 5, 5))
    assert list(acts) == ["1"]


class ReusedThenBoom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.relu = nn.ReLU()
        self.boom = Boom()

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv(x))
        x = self.relu(x - 1)
        return self.boom(x)  # type: ignore[no-any-return]


def test_run_waits_for_every_call_of_a_reused_module() -> None:
    model = ReusedThenBoom()
    acts = cl.LayerTap(model, ["relu"]).run(torch.randn(1, 1, 3, 3))
    assert list(acts) == ["relu#0", "relu#1"]
    first = cl.LayerTap(model, ["relu#0"]).run(torch.randn(1, 1, 3, 3))
    assert list(first) == ["relu#0"]


def test_reused_module_keys_and_errors(reused_net: ReusedNet, image: Tensor) -> None:
    with torch.no_grad(), cl.LayerTap(reused_net, ["relu", "conv2"]) as tap:
        reused_net(image)
        # Calling submodules directly inside the block records nothing.
        expected = reused_net.relu(reused_net.conv2(reused_net.relu(reused_net.conv1(image))))
    assert set(tap.activations) == {"relu#0", "relu#1", "relu#2", "conv2"}
    torch.testing.assert_close(tap["relu#1"], expected)
    with pytest.raises(cl.AmbiguousLayerError, match="'relu#0', 'relu#1', 'relu#2'") as info:
        tap["relu"]
    assert isinstance(info.value, KeyError)
    with pytest.raises(cl.LayerNotFoundError, match="ran 3 times"):
        tap["relu#3"]
    with pytest.raises(cl.LayerNotFoundError, match="was not tapped"):
        tap["fc"]
    with pytest.raises(cl.LayerNotFoundError, match="no layer 'relux'"):
        tap["relux"]
    assert tap[reused_net.conv2].shape == (2, 4, 8, 8)


def test_explicit_call_is_the_only_one_kept(reused_net: ReusedNet, image: Tensor) -> None:
    acts = cl.LayerTap(reused_net, ["relu#2"]).run(image)
    assert list(acts) == ["relu#2"]


def test_layer_that_did_not_run() -> None:
    model = sequential()
    tap = cl.LayerTap(model, ["0"])
    with pytest.raises(cl.LayerNotFoundError, match="did not run"):
        tap["0"]


def test_store_on_another_device() -> None:
    model = sequential()
    acts = cl.LayerTap(model, ["0"], device="meta").run(torch.randn(1, 3, 5, 5))
    assert acts["0"].device.type == "meta"
    assert acts["0"].shape == (1, 4, 5, 5)


def test_validation_before_any_work() -> None:
    model = sequential()
    with pytest.raises(cl.LayerNotFoundError, match="Did you mean '5'"):
        cl.LayerTap(model, ["6"])
    with pytest.raises(cl.InvalidArgumentError, match="empty"):
        cl.LayerTap(model, [])


def test_run_is_eval_mode_and_restores_flags(inplace_net: InplaceNet, image: Tensor) -> None:
    inplace_net.train()
    inplace_net.features[0].eval()  # mixed flags must come back exactly
    before = snapshot(inplace_net)
    acts = cl.LayerTap(inplace_net, ["bn"]).run(image)
    assert_unchanged(inplace_net, before)
    inplace_net.eval()
    with torch.no_grad():
        expected = inplace_net.bn(inplace_net.features(image))
    torch.testing.assert_close(acts["bn"], expected)
    assert not acts["bn"].requires_grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(dtype: torch.dtype) -> None:
    model = sequential().to(dtype)
    x = torch.randn(1, 3, 5, 5, dtype=dtype)
    acts = cl.LayerTap(model, ["2"]).run(x)
    assert acts["2"].dtype == dtype
    with torch.no_grad():
        torch.testing.assert_close(acts["2"], model[:3](x))


def test_tuple_and_dict_outputs(dict_net: DictNet) -> None:
    x = torch.randn(2, 2, 7)
    with torch.no_grad(), cl.LayerTap(dict_net, ["conv", "gru"]) as tap:
        out = dict_net(x)
    torch.testing.assert_close(tap["gru"], out["out"])
    assert tap["conv"].shape == (2, 3, 5)


def test_nested_and_repeated_taps() -> None:
    model = sequential()
    x = torch.randn(1, 3, 5, 5)
    outer = cl.LayerTap(model, ["0", "2"])
    with outer, cl.LayerTap(model, ["2"]) as inner, torch.no_grad():
        model(x)
    torch.testing.assert_close(outer["2"], inner["2"])
    with outer, torch.no_grad():  # the same tap again: fresh records
        model(2 * x)
    torch.testing.assert_close(outer["0"], model[0](2 * x))
    with outer, pytest.raises(cl.ConvlensError, match="already active"), outer:
        pass
    outer.close()
    outer.close()


def test_each_model_forward_replaces_the_record() -> None:
    model = sequential()
    with cl.LayerTap(model, ["0"]) as tap, torch.no_grad():
        model(torch.zeros(1, 3, 5, 5))
        model(torch.ones(1, 3, 5, 5))
        expected = model[0](torch.ones(1, 3, 5, 5))
    torch.testing.assert_close(tap["0"], expected)


class RaisingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        self.bn(self.conv(x))
        raise ValueError("failure inside forward")


def test_hooks_removed_and_flags_restored_when_forward_raises() -> None:
    model = RaisingNet().train()
    before = snapshot(model)
    globals_before = global_hook_counts()
    with pytest.raises(ValueError, match="failure inside forward"):
        cl.LayerTap(model, ["conv", "bn"], grads=True).run(torch.randn(2, 1, 3, 3))
    assert_unchanged(model, before)
    model.eval()  # a user's own forward in train mode would rightly update BatchNorm's statistics
    before = snapshot(model)
    with pytest.raises(ValueError, match="failure inside forward"), cl.LayerTap(model, ["bn"]):
        model(torch.randn(2, 1, 3, 3))
    assert_unchanged(model, before)
    assert global_hook_counts() == globals_before


def test_hooks_removed_when_a_hook_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    model = sequential().train()
    before = snapshot(model)

    def broken(_value: Any) -> Tensor:
        raise MemoryError("out of memory inside the hook")

    monkeypatch.setattr(tap_module, "first_tensor", broken)
    with pytest.raises(MemoryError, match="inside the hook"):
        cl.LayerTap(model, ["0"]).run(torch.randn(1, 3, 5, 5))
    assert_unchanged(model, before)


def test_success_leaves_model_unchanged(inplace_net: InplaceNet, image: Tensor) -> None:
    for p in inplace_net.parameters():
        p.grad = torch.ones_like(p)
    inplace_net.features[0].weight.requires_grad_(False)
    before = snapshot(inplace_net)
    for grads in (False, True):
        tap = cl.LayerTap(inplace_net, ["features.0", "bn", "classifier"], grads=grads)
        tap.run(image)
        assert_unchanged(inplace_net, before)


def test_lecture_six_by_six_convolution() -> None:
    """The lecture's 6x6 image, filters 1 and 2, stride 1 and 2, then 2x2 max pooling."""
    image = torch.tensor(
        [
            [1, 0, 0, 0, 0, 1],
            [0, 1, 0, 0, 1, 0],
            [0, 0, 1, 1, 0, 0],
            [1, 0, 0, 0, 1, 0],
            [0, 1, 0, 0, 1, 0],
            [0, 0, 1, 0, 1, 0],
        ],
        dtype=torch.float32,
    )
    filter1 = [[1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
    filter2 = [[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]]

    def by_hand(kernel: list[list[int]], stride: int) -> list[list[int]]:
        size = (6 - 3) // stride + 1
        return [
            [
                sum(
                    kernel[a][b] * int(image[r * stride + a, c * stride + b])
                    for a in range(3)
                    for b in range(3)
                )
                for c in range(size)
            ]
            for r in range(size)
        ]

    # The seed prints the stride-1 map of filter 1 and the first row at stride 2.
    lecture_map1 = [[3, -1, -3, -1], [-3, 1, 0, -3], [-3, -3, 0, 1], [3, -2, -2, -1]]
    assert by_hand(filter1, 1) == lecture_map1
    assert by_hand(filter1, 2)[0] == [3, -3]

    for stride in (1, 2):
        conv = nn.Conv2d(1, 2, 3, stride=stride, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[filter1], [filter2]], dtype=torch.float32))
        model = nn.Sequential(conv, nn.MaxPool2d(2))
        acts = cl.LayerTap(model, ["0", "1"]).run(image[None, None])
        assert acts["0"][0].tolist() == [by_hand(filter1, stride), by_hand(filter2, stride)]
        if stride == 1:
            assert acts["1"][0, 0].tolist() == [[3, 0], [3, 1]]
            pooled2 = [
                [
                    max(by_hand(filter2, 1)[2 * r + a][2 * c + b] for a in (0, 1) for b in (0, 1))
                    for c in (0, 1)
                ]
                for r in (0, 1)
            ]
            assert acts["1"][0, 1].tolist() == pooled2


def test_repr() -> None:
    assert repr(cl.LayerTap(sequential(), ["0"])) == "LayerTap(Sequential, ['0'], grads=False)"


def test_run_inside_an_active_tap_then_a_users_forward() -> None:
    model = sequential()
    x = torch.randn(1, 3, 5, 5)
    before = snapshot(model)
    with cl.LayerTap(model, ["0"]) as tap, torch.no_grad():
        tap.run(x)  # stops early, skipping the model's own forward hooks
        model(2 * x)
        expected = model[0](2 * x)
    torch.testing.assert_close(tap["0"], expected)
    assert_unchanged(model, before)


def test_run_accepts_keyword_inputs() -> None:
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x: Tensor, *, scale: float = 1.0) -> Tensor:
            out: Tensor = self.conv(x) * scale
            return out

    model = Keyword()
    x = torch.randn(1, 1, 2, 2)
    acts = cl.LayerTap(model, ["conv"]).run(x, scale=3.0)
    with torch.no_grad():
        torch.testing.assert_close(acts["conv"], model.conv(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_results_on_the_model_device_or_where_asked() -> None:
    model = sequential().cuda()
    x = torch.randn(1, 3, 5, 5, device="cuda")
    acts = cl.LayerTap(model, ["0"]).run(x)
    assert acts["0"].device.type == "cuda"
    on_cpu = cl.LayerTap(model, ["0"], device="cpu").run(x)
    assert on_cpu["0"].device.type == "cpu"
    torch.testing.assert_close(on_cpu["0"], acts["0"].cpu())
    with cl.LayerTap(model, ["0"], grads=True) as tap:
        model(x).sum().backward()
    assert tap.gradients["0"].device.type == "cuda"


# -- shape errors, tuple outputs, frozen backbones, nesting --------------------------------


def test_channel_mismatch_names_the_layer() -> None:
    model = sequential()
    with pytest.raises(cl.ShapeError, match=r"0 expects 3 input channels, got 1 \(Conv2d") as info:
        cl.LayerTap(model, ["2"]).run(torch.randn(1, 1, 5, 5))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, RuntimeError)  # the real forward's own error, kept
    with pytest.raises(cl.ShapeError, match="0 expects 3 input channels"):
        cl.LayerTap(model, ["2"], grads=True).run(torch.randn(1, 1, 5, 5))


class TupleLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.conv(x)
        return y, y.mean()


class TupleThenInplace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TupleLayer()
        self.head = nn.Conv2d(4, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.block(x)
        y.relu_()
        out: Tensor = self.head(y).flatten(1)
        return out


def test_tuple_output_then_inplace_op_with_grads() -> None:
    torch.manual_seed(0)
    model = TupleThenInplace()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        expected = model.block.conv(x)
    acts = cl.LayerTap(model, ["block"], grads=True).run(x)
    torch.testing.assert_close(acts["block"], expected)  # recorded before the in-place ReLU
    with torch.enable_grad():
        a = model.block.conv(x).detach().requires_grad_()
        (g,) = torch.autograd.grad(model.head(torch.relu(a)).sum(), a)
    tap = cl.LayerTap(model, ["block"], grads=True)
    tap.run(x)
    torch.testing.assert_close(tap.gradients["block"], g)


def test_frozen_backbone_still_gets_gradients() -> None:
    model = sequential()
    model[0].requires_grad_(False)
    model[2].requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(2, 3, 5, 5)
    with cl.LayerTap(model, ["0", "5"], grads=True) as tap:
        model(x)[:, 1].sum().backward()
    plain = without_inplace(model)
    with torch.enable_grad():
        a = plain[0](x).detach().requires_grad_()
        (g,) = torch.autograd.grad(plain[1:](a)[:, 1].sum(), a)
    torch.testing.assert_close(tap.gradients["0"], g)
    assert set(tap.gradients) == {"0", "5"}
    model[5].weight.grad = None
    model[5].bias.grad = None
    assert_unchanged(model, before)


def test_gradient_read_before_backward_says_so() -> None:
    model = sequential()
    with cl.LayerTap(model, ["0"], grads=True) as tap:
        model(torch.randn(1, 3, 5, 5))
    with pytest.raises(cl.LayerNotFoundError, match="no gradient reached it"):
        tap.gradient("0")


def test_an_active_tap_ignores_convlens_own_passes() -> None:
    model = sequential()
    x = torch.randn(1, 3, 5, 5)
    with cl.LayerTap(model, ["0"]) as outer, torch.no_grad():
        model(x)
        cl.trace_shapes(model, (1, 3, 5, 5))  # a meta pass
        assert outer["0"].device.type == "cpu"
        cl.LayerTap(model, ["2"]).run(x)  # an early-stopped forward inside
        model(x)
        torch.testing.assert_close(outer["0"], model[0](x))
    assert list(outer.activations) == ["0"]


def test_keyword_inputs_still_stop_early() -> None:
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.boom = Boom()

        def forward(self, x: Tensor, *, scale: float = 1.0) -> Tensor:
            out: Tensor = self.boom(self.conv(x) * scale)
            return out

    acts = cl.LayerTap(Keyword(), ["conv"]).run(torch.randn(1, 1, 2, 2), scale=2.0)
    assert list(acts) == ["conv"]


class DataDependentReuse(nn.Module):
    """A ReLU used twice, with data-dependent code between the calls (the meta pass stops there)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.c1(x))
        if x.sum() > 0:
            x = x * 1.0
        out: Tensor = self.fc(self.relu(self.c2(x)).mean((2, 3)))
        return out


def test_a_reused_module_after_data_dependent_code_records_every_call() -> None:
    torch.manual_seed(0)
    model = DataDependentReuse().eval()
    x = torch.rand(1, 3, 8, 8)
    acts = cl.LayerTap(model, ["relu"]).run(x)  # the probe cannot count: no early stop on a guess
    assert sorted(acts) == ["relu#0", "relu#1"]
    with pytest.raises(cl.AmbiguousLayerError, match="'relu#0', 'relu#1'"):
        cl.ActivationMaximizer(model, cl.objectives.channel("relu", 0), input_shape=(1, 3, 8, 8), steps=1)


def test_an_unbatched_input_is_refused_even_by_an_early_stopping_run() -> None:
    model = sequential()
    with pytest.raises(cl.ShapeError, match=r"without a batch dimension.*unsqueeze\(0\)"):
        cl.LayerTap(model, ["0"]).run(torch.randn(3, 5, 5))


def test_a_layer_that_does_not_run_or_a_call_past_the_last_is_said_before_work() -> None:
    model = ReusedThenBoom()
    model.boom = nn.Identity()  # type: ignore[assignment]
    model.spare = nn.Conv2d(1, 1, 1)
    with pytest.raises(cl.LayerNotFoundError, match="'spare' does not run in the forward"):
        cl.LayerTap(model, ["spare"]).run(torch.randn(1, 1, 3, 3))
    with pytest.raises(cl.LayerNotFoundError, match="runs 2 times"):
        cl.LayerTap(model, ["relu#5"]).run(torch.randn(1, 1, 3, 3))


def test_grads_on_a_model_that_writes_into_its_input() -> None:
    class Normalizes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x: Tensor) -> Tensor:
            x.sub_(0.5)
            out: Tensor = self.conv(x).mean((2, 3))
            return out

    torch.manual_seed(0)
    model = Normalizes()
    x = torch.rand(1, 3, 6, 6)
    given = x.clone()
    tap = cl.LayerTap(model, ["conv"], grads=True)
    tap.run(x)
    assert torch.equal(x, given)  # the caller's input is not written into
    torch.testing.assert_close(tap.gradients["conv"], torch.full((1, 2, 4, 4), 1 / 16))


def test_a_with_block_around_a_compiled_model_is_refused_clearly() -> None:
    model = sequential()
    compiled = cast("nn.Module", torch.compile(model, backend="eager"))
    with pytest.raises(cl.UnsupportedModelError, match=r"tap\.run\(x\)"), cl.LayerTap(compiled, ["0"]):
        pass
    assert list(cl.LayerTap(compiled, ["0"]).run(torch.randn(1, 3, 5, 5))) == ["0"]


def test_convlens_own_forwards_inside_a_users_block_leave_its_record_alone() -> None:
    model = sequential()
    x1, x2 = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    with cl.LayerTap(model, ["2"]) as tap:
        with torch.no_grad():
            model(x1)
        mine = tap["2"].clone()
        cl.GradCAM(model, "2")(x2)
        cl.LayerTap(model, ["0"]).run(x2)
        cl.Saliency(model)(x2)
        torch.testing.assert_close(tap["2"], mine, rtol=0, atol=0)
        with torch.no_grad():
            model(x2)  # the user's own forward is recorded, as always
        assert not torch.equal(tap["2"], mine)


def test_module_and_probe_are_the_taps_public_pieces() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3))
    tap = cl.LayerTap(nn.DataParallel(net), ["0", "2"])
    assert tap.module is net
    assert cl.LayerTap(net, ["0"]).module is net
    x = torch.randn(2, 3, 8, 8)
    seen = tap.probe(x)
    assert seen.complete
    assert (seen.count("0"), seen.count("2")) == (1, 1)
    assert seen.seen["0"][0].shape == (2, 4, 6, 6)
    assert seen.rewritten("0", 0)
    assert not seen.rewritten("2", 0)
    assert cl.LayerTap(net, ["0", "2"]).probe(torch.zeros(2, 3, 8, 8)) is seen  # shared, same signature
    with pytest.raises(cl.ShapeError, match="expects 3 input channels"):
        tap.probe(torch.zeros(2, 1, 8, 8)).check()


def test_steady_registers_the_hooks_once_and_reads_the_structure_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import convlens.core.probe as probe_module
    from convlens.core.memo import structure as real

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    tap = LayerTap(net, ["0", "2"])
    reads: list[int] = []

    def counted(model: nn.Module) -> object:
        reads.append(1)
        return real(model)

    monkeypatch.setattr(probe_module, "structure", counted)
    x = torch.randn(2, 1, 7, 7)
    with tap.steady():
        assert len(net[0]._forward_hooks) == 1  # registered on entry, not per run
        results = [tap.run(x)["2"].clone() for _ in range(4)]
    assert len(reads) == 1
    assert all(torch.equal(r, net(x)) for r in results)
    assert not net[0]._forward_hooks
    assert not net[2]._forward_hooks
    tap.run(x)  # outside the block every lookup reads the structure again (an edit is noticed)
    assert len(reads) == 2


def test_steady_removes_its_hooks_when_a_run_raises() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    tap = LayerTap(net, "0")
    with tap.steady():
        tap.run(torch.randn(2, 1, 7, 7))
        with pytest.raises(ShapeError):
            tap.run(torch.randn(2, 3, 7, 7))  # the wrong channels
        assert len(net[0]._forward_hooks) == 1
    with pytest.raises(ShapeError), tap.steady():
        tap.run(torch.randn(2, 3, 7, 7))
    assert not net[0]._forward_hooks
    with tap:  # inside a user's own with block, steady() leaves the hooks to it
        with tap.steady():
            tap.run(torch.randn(1, 1, 5, 5))
        assert len(net[0]._forward_hooks) == 1
    assert not net[0]._forward_hooks


def test_grads_must_be_a_bool_before_any_work() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(cl.InvalidTypeError, match=r"grads must be True or False; got str 'yes'"):
        LayerTap(net, "0", grads="yes")  # type: ignore[arg-type]
    assert not net[0]._forward_hooks


# -- issue 18: any model ---------------------------------------------------------------------------


class Conditioned(nn.Module):
    """``forward(x, mask, *, temperature)``: needs both; logs the device of every call (the probe's too)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)
        self.log = _Log()

    def forward(self, x: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
        self.log.devices.append(x.device.type)
        out: Tensor = self.head(torch.relu(self.conv(x * mask))) / temperature
        return out


class _Log:
    """Kept outside what the probe restores (it walks lists and dicts, not objects)."""

    def __init__(self) -> None:
        self.devices: list[str] = []


def test_forward_args_reach_the_probe_and_the_real_forward() -> None:
    torch.manual_seed(0)
    model = Conditioned().eval()
    x, mask = torch.rand(2, 3, 6, 6), torch.rand(2, 1, 6, 6)
    before = snapshot(model)
    tap = LayerTap(model, ["conv", "head"])
    acts = tap.run(x, forward_args=cl.ForwardArgs(mask, temperature=2.0))
    assert model.log.devices == ["meta", "cpu"]  # the probe got the arguments too
    torch.testing.assert_close(acts["conv"], model.conv(x * mask).detach(), rtol=0, atol=0)
    # A tuple and a dict, and the old keyword passthrough, give the same thing.
    again = LayerTap(model, ["head"]).run(x, forward_args=(mask,), temperature=2.0)
    torch.testing.assert_close(again["head"], acts["head"], rtol=0, atol=0)
    with_dict = LayerTap(model, ["head"]).run(x, mask, forward_args={"temperature": 2.0})
    torch.testing.assert_close(with_dict["head"], acts["head"], rtol=0, atol=0)
    assert_unchanged(model, before)


def test_forward_args_with_grads_give_the_gradient_of_the_conditioned_model() -> None:
    torch.manual_seed(0)
    model = Conditioned().eval()
    x, mask = torch.rand(2, 3, 6, 6), torch.rand(2, 1, 6, 6)
    before = snapshot(model)
    tap = LayerTap(model, "conv", grads=True)
    tap.run(x, forward_args=cl.ForwardArgs(mask, temperature=4.0))
    act = model.conv(x * mask).detach().requires_grad_()
    expected = torch.autograd.grad((model.head(torch.relu(act)) / 4.0).sum(), act)[0]
    torch.testing.assert_close(tap.gradient("conv"), expected)
    assert_unchanged(model, before)


def test_forward_args_errors_before_work() -> None:
    model = Conditioned().eval()
    x, mask = torch.rand(2, 3, 6, 6), torch.rand(2, 1, 6, 6)
    with pytest.raises(cl.InvalidTypeError, match=r"forward_args must be a tuple"):
        LayerTap(model, "conv").run(x, forward_args=[mask])  # type: ignore[arg-type]
    with pytest.raises(
        cl.InvalidArgumentError, match=r"temperature both as a keyword input and in forward_args"
    ):
        LayerTap(model, "conv").run(x, mask, forward_args={"temperature": 1.0}, temperature=2.0)
    with pytest.raises(cl.InvalidTypeError, match=r"cannot take the inputs given"):
        LayerTap(model, "conv").run(x, forward_args=(mask,))  # temperature missing: said before any forward
    assert model.log.devices == []


class MultiResolution(nn.Module):
    """An HRNet-like stage: one branch per resolution, returned as a tuple; ReLU in place after it."""

    def __init__(self) -> None:
        super().__init__()
        self.high = nn.Conv2d(3, 4, 3, padding=1)
        self.mid = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.low = nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.high(x), self.mid(x), self.low(x)


class HRNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage = MultiResolution()
        self.fuse = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        high, mid, low = self.stage(x)
        mid.relu_()  # a later in-place op rewrites the second tensor only
        up = nn.functional.interpolate(self.fuse(low), size=high.shape[-2:])
        out: Tensor = high + up + nn.functional.interpolate(mid[:, :4], size=high.shape[-2:])
        return out


def test_outputs_keep_every_tensor_of_a_multi_branch_stage() -> None:
    torch.manual_seed(0)
    model = HRNetLike().eval()
    x = torch.rand(2, 3, 16, 16)
    before = snapshot(model)
    tap = LayerTap(model, "stage")
    acts = tap.run(x)
    high, mid, low = tap.outputs["stage"]
    with torch.no_grad():
        expected = model.stage(x)  # before the in-place ReLU
    for got, want in zip((high, mid, low), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert not got.requires_grad
    assert (mid < 0).any()  # recorded before the later relu_ rewrote it
    assert acts["stage"] is high
    assert tap["stage"] is high
    assert tap.copied == frozenset()  # tap.run stops right after the stage: nothing can rewrite it
    assert_unchanged(model, before)


def test_outputs_copy_only_what_a_later_op_rewrites() -> None:
    torch.manual_seed(0)
    model = HRNetLike().eval()
    x = torch.rand(1, 3, 16, 16)
    real: list[tuple[Tensor, ...]] = []
    handle = model.stage.register_forward_hook(lambda _m, _a, out: real.append(out))
    try:
        with LayerTap(model, "stage") as tap:
            model(x)
    finally:
        handle.remove()
    high, mid, low = tap.outputs["stage"]
    (returned,) = [out for out in real if not out[0].is_meta]  # the probe's meta pass ran the hook too
    assert tap.copied == {"stage"}
    assert high.data_ptr() == returned[0].data_ptr()  # kept by reference
    assert low.data_ptr() == returned[2].data_ptr()
    assert mid.data_ptr() != returned[1].data_ptr()  # rewritten later: copied


def test_outputs_keep_a_dict_as_the_fpn_returns_it(dict_net: DictNet) -> None:
    from collections import OrderedDict

    class Pyramid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p3 = nn.Conv2d(3, 4, 1)
            self.p4 = nn.Conv2d(3, 4, 1, stride=2)

        def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
            return OrderedDict([("p3", self.p3(x)), ("p4", self.p4(x))])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fpn = Pyramid()

        def forward(self, x: Tensor) -> Tensor:
            levels = self.fpn(x)
            out: Tensor = levels["p3"].mean() + levels["p4"].mean()
            return out

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.rand(1, 3, 8, 8)
    tap = LayerTap(model, "fpn")
    tap.run(x)
    out = tap.outputs["fpn"]
    assert type(out) is OrderedDict
    assert list(out) == ["p3", "p4"]
    torch.testing.assert_close(out["p4"], model.fpn.p4(x).detach(), rtol=0, atol=0)
    assert tap["fpn"] is out["p3"]


def test_a_quantized_model_is_tapped_without_gradients() -> None:
    from models import quantized_cnn

    model = cast("nn.Sequential", quantized_cnn())
    x = torch.rand(2, 3, 12, 12)
    before = snapshot(model)
    name = "3"  # the second quantized convolution
    acts = LayerTap(model, name).run(x)
    with torch.no_grad():
        expected = model[3](model[2](model[1](model[0](x))))
    assert acts[name].is_quantized
    torch.testing.assert_close(acts[name].dequantize(), expected.dequantize(), rtol=0, atol=0)
    with pytest.raises(cl.UnsupportedModelError, match="needs gradients through the model"):
        LayerTap(model, name, grads=True).run(x)
    with pytest.raises(cl.UnsupportedModelError, match="needs gradients through the model"):
        LayerTap(model, name, grads=True).__enter__()
    assert_unchanged(model, before)


def test_a_meta_model_and_a_device_mismatch_are_refused_before_work() -> None:
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(cl.UnsupportedModelError, match="meta device: it holds no data"):
        LayerTap(meta, "0").run(torch.rand(1, 3, 5, 5))
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    calls: list[str] = []
    model.register_forward_pre_hook(lambda _m, a: calls.append(a[0].device.type))
    with pytest.raises(
        cl.DeviceMismatchError, match=r"the model is on cpu but a tensor of the input is on meta"
    ):
        LayerTap(model, "0").run(torch.rand(1, 3, 5, 5, device="meta"))
    with pytest.raises(cl.DeviceMismatchError, match=r"tensor of forward_args is on meta"):
        LayerTap(model, "0").run(torch.rand(1, 3, 5, 5), forward_args=(torch.zeros(1, device="meta"),))
    assert calls == []


class _MovesItsInput(nn.Module):
    """A model that brings its input to its own device itself (the input may live anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        device = self.conv.weight.device
        here = x.to(device) if not x.is_meta else torch.ones(x.shape, device=device)  # meta: shape only
        out: Tensor = self.conv(here)
        return out


def test_a_users_own_forward_in_a_with_block_runs_the_model_as_it_is() -> None:
    """No device check inside ``with LayerTap(...)``: the model's forward decides what it takes."""
    torch.manual_seed(0)
    model = _MovesItsInput().eval()
    before = snapshot(model)
    elsewhere = torch.rand(1, 3, 5, 5, device="meta")  # another device than the model's, on a CPU-only host
    with LayerTap(model, "conv") as tap:
        out = model(elsewhere)
    torch.testing.assert_close(tap["conv"], out.detach(), rtol=0, atol=0)
    torch.testing.assert_close(tap["conv"], model.conv(torch.ones(1, 3, 5, 5)).detach(), rtol=0, atol=0)
    assert_unchanged(model, before)
    with pytest.raises(cl.DeviceMismatchError, match="a tensor of the input is on meta"):
        LayerTap(model, "conv").run(elsewhere)  # tap.run still checks: convlens runs the model there


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_model_that_moves_a_cpu_input_itself_is_recorded_in_a_with_block() -> None:
    torch.manual_seed(0)
    model = _MovesItsInput().cuda().eval()
    x = torch.rand(1, 3, 5, 5)  # on the CPU: the forward moves it
    with LayerTap(model, "conv") as tap:
        out = model(x)
    assert tap["conv"].device.type == "cuda"
    torch.testing.assert_close(tap["conv"], out.detach(), rtol=0, atol=0)


#: bfloat16 keeps 8 bits of mantissa: one rounding is a relative error of 2**-8; a conv, a SiLU and a
#: second conv over 27-36 terms stay within 4 roundings of values of size ~1 (measured: ~1.5).
BF16: Tolerance = {"rtol": 4 * 2.0**-8, "atol": 4 * 2.0**-8}


def test_a_bfloat16_model_matches_the_float32_model() -> None:
    """Activations and gradients stay bfloat16 (as the layers return them) and equal float32's within BF16."""
    torch.manual_seed(0)
    # SiLU, not ReLU: a ReLU's gate flips where bfloat16 rounds a value near 0 to the other side.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(inplace=True), nn.Conv2d(4, 2, 3)).eval()
    half = copy_to(model, torch.bfloat16)
    x = torch.rand(2, 3, 8, 8)
    before = snapshot(half)
    full_tap, half_tap = LayerTap(model, ["0", "2"], grads=True), LayerTap(half, ["0", "2"], grads=True)
    full_tap.run(x)
    half_tap.run(x.to(torch.bfloat16))
    for name in ("0", "2"):
        assert half_tap[name].dtype == torch.bfloat16
        assert half_tap.gradient(name).dtype == torch.bfloat16
        torch.testing.assert_close(half_tap[name].float(), full_tap[name], **BF16)
        torch.testing.assert_close(half_tap.gradient(name).float(), full_tap.gradient(name), **BF16)
    assert_unchanged(half, before)


def copy_to(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(dtype)


#: float16 keeps 11 bits of mantissa: 4 roundings of values of size ~1 (2**-11 each).
FP16: Tolerance = {"rtol": 4 * 2.0**-11, "atol": 4 * 2.0**-11}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_float16_model_on_cuda_matches_the_float32_model() -> None:
    torch.manual_seed(0)
    model = (
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(inplace=True), nn.Conv2d(4, 2, 3)).eval().cuda()
    )
    half = copy_to(model, torch.float16)
    x = torch.rand(2, 3, 8, 8, device="cuda")
    before = snapshot(half)
    full_tap, half_tap = LayerTap(model, ["0", "2"], grads=True), LayerTap(half, ["0", "2"], grads=True)
    full_tap.run(x)
    half_tap.run(x.half())
    for name in ("0", "2"):
        assert half_tap[name].dtype == torch.float16
        assert half_tap[name].device.type == "cuda"
        torch.testing.assert_close(half_tap[name].float(), full_tap[name], **FP16)
        torch.testing.assert_close(half_tap.gradient(name).float(), full_tap.gradient(name), **FP16)
    assert_unchanged(half, before)
