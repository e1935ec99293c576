from __future__ import annotations

import gc
import warnings
import weakref
from typing import Any, cast

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import convlens as cl
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import InplaceNet, ReusedNet


def torchvision_models() -> Any:
    return pytest.importorskip("torchvision").models


def real_shapes(model: nn.Module, *inputs: Tensor) -> list[tuple[int, ...]]:
    """Output shape of every leaf call of a real forward (hooks of the test's own)."""
    shapes: list[tuple[int, ...]] = []

    def hook(_m: nn.Module, _a: tuple[Any, ...], out: Any) -> None:
        tensor = out if isinstance(out, Tensor) else out[0]
        shapes.append(tuple(tensor.shape))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


# -- the lecture's AlexNet -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "out"),
    [
        ("features.0", (1, 64, 55, 55)),
        ("features.2", (1, 64, 27, 27)),
        ("features.3", (1, 192, 27, 27)),
        ("features.5", (1, 192, 13, 13)),
        ("features.6", (1, 384, 13, 13)),
        ("features.8", (1, 256, 13, 13)),
        ("features.10", (1, 256, 13, 13)),
        ("features.12", (1, 256, 6, 6)),
        ("avgpool", (1, 256, 6, 6)),
        ("classifier.1", (1, 4096)),
        ("classifier.6", (1, 1000)),
    ],
)
def test_alexnet_lecture_shapes(alexnet_report: cl.ShapeReport, name: str, out: tuple[int, ...]) -> None:
    assert alexnet_report[name].output_shape == out


def test_alexnet_report_summary(alexnet: nn.Module, alexnet_report: cl.ShapeReport) -> None:
    report = alexnet_report
    assert report["classifier.1"].input_shape == (1, 9216)
    assert report.input_shape == (1, 3, 224, 224)
    assert report.output_shape == (1, 1000)
    assert report.traced == "meta"
    assert report.note == ""
    assert len(report) == 21
    assert report.names == [name for name, m in alexnet.named_modules() if name and not list(m.children())]
    modules = dict(alexnet.named_modules())
    for row in report:
        assert row.params == sum(p.numel() for p in modules[row.name].parameters())
        assert row.type == type(modules[row.name]).__name__
    assert report.params == sum(p.numel() for p in alexnet.parameters()) == 61_100_840
    assert report.macs == sum(row.macs for row in report)


def test_alexnet_formulas(alexnet_report: cl.ShapeReport) -> None:
    assert alexnet_report["features.0"].formula == "floor((224 + 2*2 - 1*(11-1) - 1) / 4) + 1 = 55"
    assert alexnet_report["features.2"].formula == "floor((55 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 27"
    assert alexnet_report["features.3"].formula == "floor((27 + 2*2 - 1*(5-1) - 1) / 1) + 1 = 27"
    assert alexnet_report["avgpool"].formula == "adaptive: 6 -> 6"
    assert alexnet_report["features.1"].formula == ""
    assert alexnet_report["classifier.1"].formula == ""


def test_alexnet_receptive_field_and_jump(alexnet_report: cl.ShapeReport) -> None:
    rows = alexnet_report
    assert (rows["features.0"].receptive_field, rows["features.0"].jump) == (11, 4)
    assert rows["features.1"].receptive_field == 11  # carried through the ReLU
    assert (rows["features.2"].receptive_field, rows["features.2"].jump) == (11 + (3 - 1) * 4, 8)
    assert (rows["features.3"].receptive_field, rows["features.3"].jump) == (19 + (5 - 1) * 8, 8)
    assert (rows["features.12"].receptive_field, rows["features.12"].jump) == (195, 32)
    assert rows["classifier.0"].receptive_field is None  # after torch.flatten
    assert (rows["classifier.1"].receptive_field, rows["classifier.1"].jump) == (None, None)


def assert_fields_match_the_gradient(
    net: nn.Module, row: cl.LayerShape, size: tuple[int, int], positions: list[tuple[int, int]]
) -> None:
    """Each output position's gradient support is start + i * jump .. + receptive_field, clipped to the input."""

    def pair(value: object) -> tuple[int, int]:
        assert isinstance(value, int | tuple)
        return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))

    rf, jump, start = pair(row.receptive_field), pair(row.jump), pair(row.start)
    for i, j in positions:
        x = torch.zeros(1, 1, *size, requires_grad=True)
        net(x)[0, 0, i, j].backward()
        assert x.grad is not None
        rows, cols = x.grad[0, 0].nonzero(as_tuple=True)
        lo = (start[0] + i * jump[0], start[1] + j * jump[1])
        expected = (max(lo[0], 0), max(lo[1], 0), min(lo[0] + rf[0], size[0]), min(lo[1] + rf[1], size[1]))
        got = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        assert got == expected, (i, j)


def test_receptive_field_start_matches_the_gradient_support() -> None:
    """Every output position sees exactly start + i * jump .. + receptive_field (clipped): checked by autograd."""
    net = nn.Sequential(
        nn.Conv2d(1, 1, 5, stride=2, padding=(2, 1), bias=False),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True),
        nn.Conv2d(1, 1, 3, dilation=2, padding="same", bias=False),
        nn.Conv2d(1, 1, 2, stride=1, padding=1, bias=False),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)  # positive weights, no ReLU: the gradient is nonzero over the whole field
    size = (37, 41)
    report = cl.trace_shapes(net, (1, 1, *size))
    row = report["3"]
    assert row.start not in (0, (0, 0))  # the padding moves it
    out_h, out_w = row.output_shape[2:]
    assert_fields_match_the_gradient(
        net, row, size, [(0, 0), (1, 2), (out_h // 2, out_w // 3), (out_h - 1, out_w - 1)]
    )


def test_alexnet_macs_by_hand(alexnet_report: cl.ShapeReport) -> None:
    assert alexnet_report["features.0"].macs == 55 * 55 * 64 * 3 * 11 * 11
    assert alexnet_report["features.3"].macs == 27 * 27 * 192 * 64 * 5 * 5
    assert alexnet_report["classifier.1"].macs == 4096 * 9216
    assert alexnet_report["features.2"].macs == 0


# -- hypothesis: random conv/pool stacks against a real forward --------------------------------


@st.composite
def stacks(draw: st.DrawFn) -> tuple[nn.Sequential, tuple[int, ...]]:
    nd = draw(st.integers(1, 3))
    size = draw(st.integers(1, {1: 24, 2: 12, 3: 6}[nd]))
    groups_in = draw(st.sampled_from([1, 2]))
    channels = 2 * groups_in
    layers: list[nn.Module] = []
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
    maxpool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[nd]
    avgpool = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[nd]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "max", "avg", "transposed"]))
        k, s = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        if kind == "conv":
            groups = draw(st.sampled_from([1, 2]))
            out = groups * draw(st.integers(1, 2))
            p, d = draw(st.integers(0, 2)), draw(st.integers(1, 2))
            layers.append(conv(channels, out, k, s, p, d, groups=groups if channels % groups == 0 else 1))
            channels = out
        elif kind == "transposed":
            p, d = draw(st.integers(0, 1)), draw(st.integers(1, 2))
            op = draw(st.integers(0, max(s, d) - 1))
            tconv = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
            layers.append(tconv(channels, channels, k, s, p, op, dilation=d))
        else:
            p, ceil = draw(st.integers(0, k // 2)), draw(st.booleans())
            if kind == "max":
                layers.append(maxpool(k, s, p, dilation=draw(st.integers(1, 2)), ceil_mode=ceil))
            else:
                layers.append(avgpool(k, s, p, ceil_mode=ceil))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers), (1, 2 * groups_in, *([size] * nd))


@settings(deadline=None, max_examples=60)
@given(stacks())
def test_traced_shapes_equal_a_real_forward(case: tuple[nn.Sequential, tuple[int, ...]]) -> None:
    net, size = case
    try:
        expected = real_shapes(net, torch.zeros(size))
    except RuntimeError:
        with pytest.raises(cl.ShapeError):
            cl.trace_shapes(net, size)
        return
    report = cl.trace_shapes(net, size)
    assert [row.output_shape for row in report] == expected
    assert report.traced == "meta"
    for row, module in zip(report, net, strict=True):
        assert bool(row.formula) == (not isinstance(module, nn.ReLU))
        assert not row.formula or row.formula.endswith(f"= {row.output_shape[-1]}")


# -- torchvision classification models --------------------------------------------------------

ZOO: list[tuple[str, dict[str, Any], int]] = [
    ("alexnet", {}, 64),
    ("vgg11", {}, 32),
    ("resnet18", {}, 64),
    ("resnet50", {}, 64),
    ("mobilenet_v2", {}, 64),
    ("mobilenet_v3_small", {}, 64),
    ("squeezenet1_0", {}, 64),
    ("densenet121", {}, 64),
    ("efficientnet_b0", {}, 64),
    ("shufflenet_v2_x0_5", {}, 64),
    ("googlenet", {"aux_logits": False, "init_weights": False}, 64),
]


@pytest.mark.parametrize(("name", "kwargs", "size"), ZOO, ids=[name for name, _, _ in ZOO])
def test_torchvision_models_match_a_real_forward(name: str, kwargs: dict[str, Any], size: int) -> None:
    torch.manual_seed(0)
    model: nn.Module = getattr(torchvision_models(), name)(weights=None, **kwargs).eval()
    before = snapshot(model)
    report = cl.trace_shapes(model, (1, 3, size, size))
    assert_unchanged(model, before)
    x = torch.randn(1, 3, size, size)
    assert [row.output_shape for row in report] == real_shapes(model, x)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.traced == "meta"
    if name == "resnet50":
        names = report.names
        assert [n for n in names if n.startswith("layer1.0.relu")] == [f"layer1.0.relu#{i}" for i in range(3)]
        assert names.index("layer1.0.relu#2") > names.index("layer1.0.downsample.1")
        with pytest.raises(
            cl.AmbiguousLayerError, match=r"'layer1.0.relu#0', 'layer1.0.relu#1', 'layer1.0.relu#2'"
        ):
            report["layer1.0.relu"]
        assert report["layer1.0.downsample.0"].receptive_field == report["maxpool"].receptive_field


def test_resnet18_receptive_field() -> None:
    model: nn.Module = torchvision_models().resnet18(weights=None)
    report = cl.trace_shapes(model, (1, 3, 224, 224))
    assert report["layer4.1.bn2"].receptive_field == 435  # the published figure
    assert report["layer4.1.bn2"].jump == 32
    assert report["layer2.0.downsample.0"].receptive_field == report["layer1.1.relu#1"].receptive_field
    assert report["fc"].receptive_field is None


# -- errors -------------------------------------------------------------------------------------


def test_wrong_input_channels(alexnet: nn.Module) -> None:
    before = snapshot(alexnet)
    with pytest.raises(cl.ShapeError, match=r"^features\.0 expects 3 input channels, got 1 \(Conv2d") as info:
        cl.trace_shapes(alexnet, (1, 1, 224, 224))
    assert info.value.__cause__ is not None
    assert info.value.report is not None
    assert len(info.value.report) == 0
    assert_unchanged(alexnet, before)


def test_broken_model_names_the_layer() -> None:
    model: Any = torchvision_models().alexnet(weights=None)
    model.features[0] = nn.Conv2d(3, 3, 11, 4, 2)
    before = snapshot(model)
    with pytest.raises(cl.ShapeError, match=r"features\.3 expects 64 input channels, got 3") as info:
        cl.trace_shapes(model, (1, 3, 224, 224))
    partial = info.value.report
    assert partial is not None
    assert partial.names == ["features.0", "features.1", "features.2"]
    assert partial["features.2"].output_shape == (1, 3, 27, 27)
    assert "stopped at the failure: features.3 expects 64" in str(partial)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert_unchanged(model, before)


def test_linear_and_too_small_input_errors(alexnet: nn.Module) -> None:
    with pytest.raises(cl.ShapeError, match=r"features\.12 gets a spatial size of \[1, 1\], too small"):
        cl.trace_shapes(alexnet, (1, 3, 32, 32))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(
        cl.ShapeError, match=r"^2 expects 10 input features, got 144 \(Linear, input shape \[1, 144\]\)"
    ):
        cl.trace_shapes(net, (1, 3, 8, 8))
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5))
    with pytest.raises(cl.ShapeError, match=r"^1 expects 5 channels, got 4 \(BatchNorm2d"):
        cl.trace_shapes(bn, (1, 3, 8, 8))


def test_generic_error_names_layer_and_cause() -> None:
    ln = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(7))
    with pytest.raises(
        cl.ShapeError, match=r"^1 \(LayerNorm\) failed on an input of shape \[1, 4, 6, 6\]: Runtime"
    ) as info:
        cl.trace_shapes(ln, (1, 3, 8, 8))
    assert isinstance(info.value.__cause__, RuntimeError)

    class Reshape(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.conv(x).view(7, -1)
            return out

    with pytest.raises(
        cl.ShapeError, match=r"The forward of Reshape failed after layer 'conv': RuntimeError"
    ):
        cl.trace_shapes(Reshape(), (1, 3, 8, 8))


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ((1, 0, 8, 8), cl.InvalidArgumentError, r"ints >= 1; got 0 at position 1"),
        ((1, -3), cl.InvalidArgumentError, r"got -3 at position 1"),
        ((), cl.InvalidArgumentError, r"input size is empty"),
        ((1, 3.0, 8), cl.InvalidTypeError, r"got float 3.0 at position 1"),
        ((True, 3), cl.InvalidTypeError, r"got bool True"),
        (
            "1x3x8x8",
            cl.InvalidTypeError,
            r"size such as \(1, 3, 224, 224\) or an example tensor .*; got str ",
        ),
        (None, cl.InvalidTypeError, r"got None\."),
    ],
)
def test_invalid_input(reused_net: ReusedNet, bad: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        cl.trace_shapes(reused_net, bad)


def test_invalid_model_and_dtype(reused_net: ReusedNet) -> None:
    with pytest.raises(cl.InvalidTypeError, match=r"model must be a torch\.nn\.Module; got function"):
        cl.trace_shapes(lambda x: x, (1, 3))  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidTypeError, match=r"dtype must be a torch\.dtype"):
        cl.trace_shapes(reused_net, (1, 3, 8, 8), dtype="float32")  # type: ignore[arg-type]


# -- fallback to a real forward -------------------------------------------------------------------


class DataDependent(nn.Module):
    """Control flow that needs values: cannot run on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.wide = nn.Conv2d(4, 8, 3)
        self.narrow = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        if x.sum() > 1e9:
            wide: Tensor = self.wide(x)
            return wide
        pooled = self.narrow(x).mean(dim=(2, 3))
        out: Tensor = self.fc(pooled[: int(pooled.shape[0])])
        return out


def test_fallback_to_real_forward() -> None:
    torch.manual_seed(0)
    model = DataDependent()
    model.train()
    model.bn.eval()
    model.fc.weight.requires_grad_(False)
    before, globals_before = snapshot(model), global_hook_counts()
    report = cl.trace_shapes(model, (2, 3, 8, 8))
    assert_unchanged(model, before)
    assert global_hook_counts() == globals_before
    assert report.traced == "real"
    assert "the meta trace failed in 'DataDependent'" in report.note
    assert "ran on cpu" in report.note
    assert str(report).splitlines()[-1].startswith("traced by a real forward; the meta trace failed")
    with torch.no_grad():
        model.eval()
        expected = real_shapes(model, torch.zeros(2, 3, 8, 8))
    assert [row.output_shape for row in report] == expected
    assert report.names == ["conv", "bn", "narrow", "fc"]
    assert report.output_shape == (2, 3)


def test_fallback_with_example_tensor_leaves_it_alone() -> None:
    model = nn.Sequential(nn.ReLU(inplace=True), DataDependent())
    x = -torch.ones(1, 3, 8, 8)
    report = cl.trace_shapes(model, x)
    assert report.traced == "real"
    assert torch.equal(x, -torch.ones(1, 3, 8, 8))  # the in-place ReLU ran on a copy


def test_fallback_that_fails_too() -> None:
    model = DataDependent()
    model.fc = nn.Linear(5, 3)
    before = snapshot(model)
    with pytest.raises(cl.ShapeError, match=r"^fc expects 5 input features, got 2") as info:
        cl.trace_shapes(model, (1, 3, 8, 8))
    assert info.value.report is not None
    assert info.value.report.traced == "real"
    assert info.value.report.names == ["conv", "bn", "narrow"]
    assert_unchanged(model, before)


def test_fast_path_touches_meta_tensors_only() -> None:
    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 5, 1)

        def forward(self, x: Tensor) -> Tensor:
            gate = torch.relu(torch.full((1,), -1.0))  # a real CPU tensor created in forward
            out: Tensor = self.a(x) if bool(gate == 0) else self.b(x)
            return out

    report = cl.trace_shapes(Probe(), (1, 3, 4, 4))
    assert report.traced == "meta"
    assert report.names == ["a"]


# -- the fast path keeps shapes and checks --------------------------------------------------------


class Zoo(nn.Module):
    def __init__(self, *, lrn: bool = True) -> None:
        super().__init__()
        acts = [
            nn.ReLU(),
            nn.ReLU6(),
            nn.Hardtanh(),
            nn.LeakyReLU(),
            nn.ELU(),
            nn.SELU(),
            nn.CELU(),
            nn.GELU(),
        ]
        acts += [
            nn.SiLU(),
            nn.Mish(),
            nn.Hardswish(),
            nn.Hardsigmoid(),
            nn.Sigmoid(),
            nn.Tanh(),
            nn.Softplus(),
        ]
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.GroupNorm(2, 8),
            nn.InstanceNorm2d(8, affine=True),
            nn.LayerNorm(6),
            nn.LocalResponseNorm(2) if lrn else nn.Identity(),  # not implemented for bfloat16 on CPU
            nn.PReLU(8),
            *acts,
            nn.Dropout2d(),
            nn.Identity(),
            nn.LogSoftmax(dim=1),
            nn.AdaptiveMaxPool2d((3, 2)),
            nn.Flatten(),
            nn.Linear(48, 5),
            nn.Softmax(dim=-1),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_preserving_layers_and_dtypes(dtype: torch.dtype) -> None:
    model = Zoo(lrn=dtype != torch.bfloat16).to(dtype)
    report = cl.trace_shapes(model, (2, 3, 6, 6))
    assert report.traced == "meta"
    assert [row.output_shape for row in report] == real_shapes(
        model.eval(), torch.zeros(2, 3, 6, 6, dtype=dtype)
    )
    assert report["body.25"].formula == "adaptive: 6 -> 3; adaptive: 6 -> 2"
    assert report["body.25"].receptive_field == (
        3 + 1,
        3 + 2,
    )  # windows of 2 and 3, carried through the norms
    assert report["body.25"].jump == (2, 3)
    assert report["body.27"].receptive_field is None


def test_fast_path_still_rejects_bad_shapes() -> None:
    cases: list[tuple[nn.Module, str]] = [
        (nn.GroupNorm(2, 8), r"^1 expects 8 channels, got 6 \(GroupNorm"),
        (nn.PReLU(5), r"^1 \(PReLU\) failed on an input of shape \[1, 6, 4, 4\]"),
        (nn.LayerNorm(5), r"^1 \(LayerNorm\) failed"),
        (nn.BatchNorm2d(4), r"^1 expects 4 channels, got 6"),
    ]
    for layer, match in cases:
        with pytest.raises(cl.ShapeError, match=match):
            cl.trace_shapes(nn.Sequential(nn.Conv2d(3, 6, 3), layer), (1, 3, 6, 6))


# -- the model is left as found ------------------------------------------------------------------


def test_model_unchanged_after_success_and_errors(inplace_net: InplaceNet) -> None:
    inplace_net.train()
    inplace_net.features[0].eval()
    inplace_net.classifier.bias.requires_grad_(False)
    attrs = {name: set(vars(m)) for name, m in inplace_net.named_modules()}
    before, globals_before = snapshot(inplace_net), global_hook_counts()
    report = cl.trace_shapes(inplace_net, (2, 3, 8, 8))
    assert report["bn"].output_shape == (2, 6, 4, 4)
    with pytest.raises(cl.ShapeError):
        cl.trace_shapes(inplace_net, (2, 4, 8, 8))
    with pytest.raises(cl.ShapeError):
        cl.trace_shapes(inplace_net, (2, 3, 1, 1))
    assert_unchanged(inplace_net, before)
    assert global_hook_counts() == globals_before
    assert {name: set(vars(m)) for name, m in inplace_net.named_modules()} == attrs
    assert inplace_net.training
    assert not inplace_net.features[0].training
    assert inplace_net.features[1].training
    assert torch._C._len_torch_function_stack() == 0  # the fast-path mode is gone, also after errors


def test_lazy_modules_are_refused_not_initialized() -> None:
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(cl.InvalidArgumentError, match=r"uninitialized lazy parameters \('0\.weight'"):
        cl.trace_shapes(model, (1, 3, 8, 8))
    assert isinstance(model[0], nn.LazyConv2d)
    model(torch.zeros(1, 3, 8, 8))
    assert cl.trace_shapes(model, (1, 3, 8, 8)).output_shape == (1, 2)


def test_default_dtype_follows_the_model() -> None:
    model = DataDependent().double()  # the real fallback needs a float64 input
    report = cl.trace_shapes(model, (1, 3, 8, 8))
    assert report.traced == "real"
    assert report.output_shape == (1, 3)


def test_example_tensors_tuple_and_nothing_retained() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(2, 3, 3)
            self.b = nn.Linear(4, 3)

        def forward(self, x: Tensor, y: Tensor) -> Tensor:
            out: Tensor = self.a(x).mean(-1) + self.b(y)
            return out

    model = Two()
    report = cl.trace_shapes(model, (torch.zeros(5, 2, 9), torch.zeros(5, 4)))
    assert report.input_shape == (5, 2, 9)
    assert [row.output_shape for row in report] == [(5, 3, 7), (5, 3)]
    assert report.output_shape == (5, 3)
    assert repr(report) == "ShapeReport(Two, 2 rows, [5, 2, 9] -> [5, 3], params=36, traced='meta')"
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # neither the report nor convlens keeps the model alive


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        out: Tensor = self.conv(a + b)
        return out


class _ListOfImages(nn.Module):
    """A detector's signature in small: ``forward(images, targets=None)`` takes one list of images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, images: list[Tensor], targets: object = None) -> Tensor:
        out: Tensor = self.conv(torch.stack(images))
        return out


def test_a_list_of_tensors_is_still_several_inputs_where_forward_takes_only_those() -> None:
    model = _TwoInputs()
    before = snapshot(model)
    a, b = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    with pytest.warns(DeprecationWarning, match=r"pass a tuple \(trace_shapes\(model, \(a, b\)\)\)"):
        report = cl.trace_shapes(model, [a, b])
    assert str(report) == str(cl.trace_shapes(model, (a, b)))
    assert report["conv"].output_shape == (1, 4, 6, 6)
    assert_unchanged(model, before)


def test_a_list_of_tensors_is_one_input_where_forward_takes_the_list() -> None:
    model = _ListOfImages()
    before = snapshot(model)
    images = [torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)]  # forward(images, targets) binds these two too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = cl.trace_shapes(model, images)
    assert report.input_shape == (3, 8, 8)
    assert report["conv"].output_shape == (2, 4, 6, 6)
    assert_unchanged(model, before)


class _PaddedConv(nn.Conv2d):
    """EfficientNet's Conv2dStaticSamePadding, in small: a conv that pads through a child ZeroPad2d."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, pad: tuple[int, int, int, int]) -> None:
        super().__init__(cin, cout, k, stride=stride, bias=False)
        self.static_padding = nn.ZeroPad2d(pad)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.conv2d(self.static_padding(x), self.weight, None, self.stride)


def test_a_conv_that_pads_through_a_child_is_a_row_with_its_field_from_the_padding() -> None:
    net = nn.Sequential(
        _PaddedConv(1, 2, 3, 2, (0, 1, 0, 1)), nn.Identity(), _PaddedConv(2, 1, 5, 2, (1, 2, 2, 2))
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
    size = (23, 19)
    report = cl.trace_shapes(net, (1, 1, *size))
    assert report.names[:2] == ["0", "0.static_padding"]  # the conv, then the child it calls
    row = report["2"]
    assert row.macs == 1 * 2 * 25 * int(torch.tensor(row.output_shape).prod())
    assert row.formula.startswith("floor((15 + 2*0")  # on what its padding made (12 + 1 + 2), not on 12
    assert row.output_shape == (1, 1, 6, 4)

    assert_fields_match_the_gradient(net, row, size, [(0, 0), (2, 3), (5, 3)])


# -- issue 18: any model ---------------------------------------------------------------------------


class _Log:
    """Outside what the probe restores (it walks lists and dicts held by modules, not other objects)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []


class Conditioned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.log = _Log()

    def forward(self, x: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
        self.log.calls.append((x.device.type, temperature))
        out: Tensor = self.conv(x * mask) / temperature
        return out


def test_forward_args_reach_the_meta_pass() -> None:
    model = Conditioned().eval()
    mask = torch.ones(2, 3, 7, 7)
    before = snapshot(model)
    report = cl.trace_shapes(model, (2, 3, 7, 7), forward_args=cl.ForwardArgs(mask, temperature=3.0))
    assert report["conv"].output_shape == (2, 4, 5, 5)
    assert model.log.calls == [("meta", 3.0)]  # shapes only: no real forward
    assert_unchanged(model, before)
    with pytest.raises(cl.InvalidTypeError, match=r"cannot take the inputs given"):
        cl.trace_shapes(model, (2, 3, 7, 7), forward_args=(mask,))


def test_the_old_kwargs_spelling_warns_and_still_works() -> None:
    model = Conditioned().eval()
    mask = torch.ones(1, 3, 7, 7)
    with pytest.warns(DeprecationWarning, match=r"kwargs=\.\.\.\) is deprecated, use forward_args="):
        report = cl.trace_shapes(model, (1, 3, 7, 7), forward_args=(mask,), kwargs={"temperature": 2.0})
    assert report["conv"].output_shape == (1, 4, 5, 5)


def test_mode_is_checked_before_any_work() -> None:
    model = Conditioned().eval()
    with pytest.raises(cl.InvalidArgumentError, match=r"mode must be one of 'eval', 'train'; got 'training'"):
        cl.trace_shapes(model, (1, 3, 7, 7), mode="training")  # type: ignore[arg-type]
    assert model.log.calls == []


def _googlenet() -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = _tv().googlenet(weights=None, aux_logits=True, init_weights=False)
    return model.eval()


def _tv() -> Any:
    return pytest.importorskip("torchvision").models


#: Rows of torchinfo's own golden output for GoogLeNet at (1, 3, 112, 112) in train mode
#: (TylerYep/torchinfo, tests/test_output/google.out, second table; test_google in torchinfo_xl_test.py):
#: the auxiliary classifiers' layers, which run in train mode only, with output shape and parameters.
TORCHINFO_GOOGLENET_TRAIN = {
    "aux1.conv.conv": ((1, 128, 4, 4), 65_536),
    "aux1.conv.bn": ((1, 128, 4, 4), 256),
    "aux1.fc1": ((1, 1024), 2_098_176),
    "aux1.fc2": ((1, 1000), 1_025_000),
    "aux2.conv.conv": ((1, 128, 4, 4), 67_584),
    "aux2.fc1": ((1, 1024), 2_098_176),
    "aux2.fc2": ((1, 1000), 1_025_000),
    "conv1.conv": ((1, 64, 56, 56), 9_408),
    "inception4e.branch4.1.conv": ((1, 128, 7, 7), 67_584),
    "inception5b.branch2.1.conv": ((1, 384, 4, 4), 663_552),
    "fc": ((1, 1000), 1_025_000),
}
TORCHINFO_GOOGLENET_PARAMS = 13_004_888  # "Total params" in both of its tables


@pytest.mark.slow  # GoogLeNet on meta, twice
def test_train_mode_shows_googlenets_auxiliary_classifiers_as_torchinfo_does() -> None:
    model = _googlenet()
    before = snapshot(model)
    train = cl.trace_shapes(model, (1, 3, 112, 112), mode="train")
    evaluated = cl.trace_shapes(model, (1, 3, 112, 112))
    assert_unchanged(model, before)  # eval flags back, and no buffer touched
    for name, (shape, params) in TORCHINFO_GOOGLENET_TRAIN.items():
        assert train[name].output_shape == shape, name
        assert train[name].params == params, name
    assert train.params == evaluated.params == TORCHINFO_GOOGLENET_PARAMS
    assert sum(row.params for row in train) == TORCHINFO_GOOGLENET_PARAMS  # every layer ran once
    assert not any(name.startswith("aux") for name in evaluated.names)
    aux = {n for n in train.names if n.startswith("aux")}
    assert set(train.names) - aux == set(evaluated.names)
    assert train.output_shape == evaluated.output_shape == (1, 1000)


class TrainOnlyBranch(nn.Module):
    """Cannot run on meta (``.item()``); BatchNorm and Dropout behave differently in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.extra = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h: Tensor = self.drop(self.bn(self.conv(x)))
        if self.training and h.sum().item() != 0.0:  # data-dependent, and a train-only branch
            out: Tensor = self.extra(h.mean(dim=(2, 3)))
            return out
        return h


def test_train_mode_with_a_real_forward_leaves_statistics_and_the_rng_as_found() -> None:
    torch.manual_seed(0)
    model = TrainOnlyBranch().eval()
    before = snapshot(model)
    rng = torch.get_rng_state()
    report = cl.trace_shapes(model, (2, 3, 6, 6), mode="train")
    assert report.traced == "real"
    assert report["extra"].output_shape == (2, 2)
    assert "extra" not in cl.trace_shapes(model, (2, 3, 6, 6)).names
    assert torch.equal(torch.get_rng_state(), rng)  # the dropout mask came from a forked generator
    assert_unchanged(model, before)  # running statistics put back, eval flags restored


def test_a_quantized_model_falls_back_to_one_real_forward() -> None:
    from models import quantized_cnn

    model = cast("nn.Sequential", quantized_cnn())
    before = snapshot(model)
    report = cl.trace_shapes(model, (2, 3, 12, 12))
    assert_unchanged(model, before)
    with torch.no_grad():
        expected = model[3](model[2](model[1](model[0](torch.zeros(2, 3, 12, 12)))))
    assert report["3"].output_shape == tuple(expected.shape) == (2, 8, 8, 8)
    assert report.output_shape == (2, 4)
    assert report.traced in ("meta", "real")  # "real" where quantized kernels have no meta support
    if report.traced == "real":
        assert "meta" in report.note


def test_a_bfloat16_model_traces_in_bfloat16() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).to(torch.bfloat16).eval()
    report = cl.trace_shapes(model, (1, 3, 8, 8))
    assert report["0"].output_shape == (1, 4, 6, 6)
    example = cl.trace_shapes(model, torch.zeros(1, 3, 8, 8, dtype=torch.bfloat16))
    assert str(example) == str(report)


def test_a_meta_model_whose_forward_needs_data_is_refused() -> None:
    with torch.device("meta"):
        model = TrainOnlyBranch().train()
    with pytest.raises(cl.UnsupportedModelError, match="meta device: it holds no data"):
        cl.trace_shapes(model, (2, 3, 6, 6), mode="train")
    assert cl.trace_shapes(model, (2, 3, 6, 6))["bn"].output_shape == (2, 4, 4, 4)  # eval runs on meta
