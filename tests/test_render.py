from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import cast, get_args

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn

import convlens as cl
from convlens.render import FilterRenderer, FilterScale, figure_grid, overlay, plot_feature_maps
from invariants import assert_unchanged, snapshot
from models import InplaceNet, quantize, seeded


def conv_with(weight: list[float] | Tensor, in_channels: int = 1) -> nn.Conv2d:
    """A conv whose filters are given by hand: shape (filters, in_channels, kh, kw)."""
    w = torch.as_tensor(weight, dtype=torch.float32)
    conv = nn.Conv2d(in_channels, w.shape[0], tuple(w.shape[2:]))  # type: ignore[arg-type]
    with torch.no_grad():
        conv.weight.copy_(w)
    return conv


def flat_filters(*values: float, size: int = 2) -> Tensor:
    """One 1-channel filter per value, every weight of filter i equal to values[i]."""
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()


# --- weights to colours -------------------------------------------------------------------


def test_symmetric_scale_maps_max_to_white_zero_to_grey_min_to_black() -> None:
    images = FilterRenderer(conv_with(flat_filters(1.0, -1.0, 0.0, 0.25))).images()
    assert images.shape == (4, 2, 2, 3)
    assert images.dtype == np.float32
    np.testing.assert_allclose(images[:, 0, 0, 0], [1.0, 0.0, 0.5, 0.625])
    np.testing.assert_allclose(images[..., 0], images[..., 2])  # grey: R = G = B


def test_symmetric_scale_is_shared_and_nothing_clips() -> None:
    images = FilterRenderer(conv_with(flat_filters(4.0, -2.0, 0.5))).images()
    np.testing.assert_allclose(images[:, 0, 0, 0], [1.0, 0.25, 0.5625])


def test_lecture_scale_is_w_half_plus_half_clipped() -> None:
    w = torch.tensor([[[[2.0, 0.5], [-0.5, -3.0]]]])
    images = FilterRenderer(conv_with(w), scale="lecture").images()
    np.testing.assert_allclose(images[0, :, :, 1], [[1.0, 0.75], [0.25, 0.0]])


def test_minmax_scale_is_per_filter_and_flat_is_grey() -> None:
    w = torch.stack([torch.tensor([[[0.0, 1.0], [2.0, 4.0]]]), torch.full((1, 2, 2), 7.0)])
    images = FilterRenderer(conv_with(w), scale="minmax").images()
    np.testing.assert_allclose(images[0, :, :, 0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(images[1], 0.5)


@pytest.mark.parametrize("scale", get_args(FilterScale))
def test_zero_weights_are_grey_under_every_scale(scale: FilterScale) -> None:
    conv = conv_with(torch.zeros(2, 3, 3, 3), in_channels=3)
    np.testing.assert_allclose(FilterRenderer(conv, scale=scale).images(), 0.5)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=4, max_size=4),
    st.sampled_from(["symmetric", "lecture", "minmax"]),
)
def test_every_scale_is_increasing_and_in_unit_range(values: list[float], scale: str) -> None:
    w = torch.tensor(values).view(1, 1, 2, 2)
    image = FilterRenderer(conv_with(w), scale=cast("FilterScale", scale)).images()[0, :, :, 0].ravel()
    assert ((image >= 0.0) & (image <= 1.0)).all()
    order = np.argsort(np.array(values, dtype=np.float32), kind="stable")
    assert (np.diff(image[order]) >= -1e-6).all()


def test_symmetric_scale_uses_only_the_filters_shown() -> None:
    renderer = FilterRenderer(conv_with(flat_filters(0.5, 1.0, 2.0)))
    np.testing.assert_allclose(renderer.images(n=2)[:, 0, 0, 0], [0.75, 1.0])
    np.testing.assert_allclose(renderer.images()[:, 0, 0, 0], [0.625, 0.75, 1.0])


# --- channels -----------------------------------------------------------------------------


def test_three_channel_filters_are_rgb_in_channel_order() -> None:
    w = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    images = FilterRenderer(conv_with(w, in_channels=3)).images()
    np.testing.assert_allclose(images[0, 1, 1], [1.0, 0.0, 0.5])


def test_one_channel_filters_are_grey() -> None:
    conv = seeded(nn.Conv2d(1, 5, 3))
    images = FilterRenderer(conv).images()
    assert images.shape == (5, 3, 3, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 1])
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert images.min() < 0.4
    assert images.max() > 0.6


def many_channel_conv() -> nn.Conv2d:
    w = (torch.arange(64.0) / 100).view(1, 64, 1, 1).expand(2, 64, 2, 2).clone()
    w[1] = -w[1]
    return conv_with(w, in_channels=64)


def test_many_channels_mean() -> None:
    images = FilterRenderer(many_channel_conv(), scale="lecture").images()
    np.testing.assert_allclose(images[:, 0, 0], [[0.6575] * 3, [0.3425] * 3], rtol=1e-6)
    assert "mean of 64 channels" in FilterRenderer(many_channel_conv()).describe()


def test_many_channels_one_channel() -> None:
    renderer = FilterRenderer(many_channel_conv(), scale="lecture", channel=5)
    np.testing.assert_allclose(renderer.images()[:, 0, 0], [[0.525] * 3, [0.475] * 3], rtol=1e-6)
    assert "channel 5" in renderer.describe()


def test_channel_int_on_rgb_filters_shows_that_channel_in_grey() -> None:
    w = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    images = FilterRenderer(conv_with(w, in_channels=3), channel=1).images()
    np.testing.assert_allclose(images[0, 0, 0], [0.0, 0.0, 0.0])


def test_channel_out_of_range_or_wrong_type() -> None:
    with pytest.raises(cl.InvalidArgumentError, match=r"channel must be in \[0, 63\].*64 channels; got 64"):
        FilterRenderer(many_channel_conv(), channel=64)
    with pytest.raises(cl.InvalidArgumentError, match=r"channel must be in \[0, 63\]"):
        FilterRenderer(many_channel_conv(), channel=-1)
    with pytest.raises(cl.InvalidArgumentError, match="channel must be one of 'mean'; got 'max'"):
        FilterRenderer(many_channel_conv(), channel="max")  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidTypeError, match="channel must be 'mean' or an int; got bool"):
        FilterRenderer(many_channel_conv(), channel=True)


# --- other convolutions -------------------------------------------------------------------


def test_conv1d_filters_are_strips() -> None:
    renderer = FilterRenderer(seeded(nn.Conv1d(2, 4, 5)))
    assert renderer.images().shape == (4, 1, 5, 3)
    fig = renderer.plot()
    assert len(fig.axes) == 4
    assert fig.axes[0].images[0].get_array().shape == (1, 5, 3)  # type: ignore[union-attr]


def test_conv3d_draws_the_middle_depth_slice() -> None:
    conv = nn.Conv3d(1, 2, (3, 2, 2))
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1] = 1.0  # only the middle slice is non-zero
    renderer = FilterRenderer(conv)
    np.testing.assert_allclose(renderer.images(), 1.0)
    assert renderer.describe().endswith("depth slice 1 of 3")


def test_transposed_conv_filter_i_is_weight_i() -> None:
    conv = nn.ConvTranspose2d(4, 3, 3)  # weight (4, 3, 3, 3): 4 filters of 3 channels
    assert FilterRenderer(conv).images().shape == (4, 3, 3, 3)


def test_bfloat16_conv() -> None:
    conv = seeded(nn.Conv2d(3, 4, 3)).to(torch.bfloat16)
    images = FilterRenderer(conv).images()
    assert images.dtype == np.float32
    assert images.shape == (4, 3, 3, 3)


def test_lazy_conv_without_weights() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="no weights yet: run one forward"):
        FilterRenderer(nn.LazyConv2d(4, 3))


def test_weights_are_read_when_drawing() -> None:
    conv = conv_with(flat_filters(1.0, -1.0))
    renderer = FilterRenderer(conv)
    with torch.no_grad():
        conv.weight.neg_()
    np.testing.assert_allclose(renderer.images()[:, 0, 0, 0], [0.0, 1.0])


# --- layers and errors --------------------------------------------------------------------


def test_layer_by_name_and_by_module_and_module_alone() -> None:
    net = InplaceNet()
    by_name = FilterRenderer(net, "features.3")
    by_module = FilterRenderer(net, net.features[3])
    alone = FilterRenderer(net.features[3])
    assert by_name.name == by_module.name == "features.3"
    assert alone.name == "Conv2d"
    assert FilterRenderer(net.features[3], name="conv2").describe().startswith("conv2: 6 filters 6x3x3")
    np.testing.assert_array_equal(by_name.images(), alone.images())


@pytest.mark.parametrize(
    ("layer", "kind"), [("features.1", "ReLU"), ("classifier", "Linear"), ("bn", "BatchNorm2d")]
)
def test_non_conv_layer(layer: str, kind: str) -> None:
    with pytest.raises(
        cl.InvalidTypeError,
        match=rf"layer '{layer}' is {kind}, which holds no convolution weight\. Pass a Conv1d",
    ):
        FilterRenderer(InplaceNet(), layer)


def test_non_conv_module_alone_and_non_module() -> None:
    with pytest.raises(cl.InvalidTypeError, match="but the module given is Linear"):
        FilterRenderer(nn.Linear(3, 4))
    with pytest.raises(cl.InvalidTypeError, match=r"needs an nn\.Module"):
        FilterRenderer("features.0")  # type: ignore[arg-type]


def test_layer_name_typo() -> None:
    with pytest.raises(cl.LayerNotFoundError, match=r"no layer 'featurs\.3'\. Did you mean 'features\.3'"):
        FilterRenderer(InplaceNet(), "featurs.3")


def test_bad_scale_lists_the_choices() -> None:
    with pytest.raises(
        cl.InvalidArgumentError,
        match=r"scale must be one of 'symmetric', 'lecture', 'minmax'; got 'symetric'\. Did you mean 'symmetric'\?",
    ):
        FilterRenderer(nn.Conv2d(3, 4, 3), scale="symetric")  # type: ignore[arg-type]


def test_bad_n_and_cols() -> None:
    renderer = FilterRenderer(nn.Conv2d(3, 4, 3))
    with pytest.raises(cl.InvalidArgumentError, match="n must be an int >= 1; got 0"):
        renderer.images(0)
    with pytest.raises(cl.InvalidArgumentError, match="n must be an int >= 1; got -2"):
        renderer.plot(n=-2)
    with pytest.raises(cl.InvalidArgumentError, match="cols must be an int >= 1; got 0"):
        renderer.plot(cols=0)
    with pytest.raises(cl.InvalidTypeError, match="n must be an int"):
        renderer.images(2.5)  # type: ignore[arg-type]


def test_model_is_left_unchanged() -> None:
    net = seeded(InplaceNet())
    before = snapshot(net)
    renderer = FilterRenderer(net, "features.0", scale="minmax")
    renderer.images()
    renderer.plot(n=4)
    assert_unchanged(net, before)


# --- fused, quantized and scripted convolutions (issue 18) ----------------------------------


def fused_quantized(conv: nn.Module) -> nn.Sequential:
    """``conv`` (3 input channels) + ReLU fused (ConvReLU2d), then quantized the eager way: a quantized ConvReLU2d."""
    import warnings

    model = nn.Sequential(
        torch.ao.quantization.QuantStub(), conv, nn.ReLU(), torch.ao.quantization.DeQuantStub()
    ).eval()
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices, not ours
        warnings.simplefilter("ignore")
        fused: nn.Sequential = torch.ao.quantization.fuse_modules(model, [["1", "2"]])  # type: ignore[no-untyped-call]
    return quantize(fused, torch.rand(8, 3, 9, 9))


def scripted(module: nn.Module) -> torch.jit.ScriptModule:
    import warnings

    with warnings.catch_warnings():  # torch.jit.script's deprecation notice, not ours
        warnings.simplefilter("ignore")
        return torch.jit.script(module)


def test_fused_conv_relu_and_conv_bn_draw_their_conv() -> None:
    from torch.ao.nn import intrinsic

    conv = seeded(nn.Conv2d(3, 6, 3))
    expected = FilterRenderer(conv).images()
    relu = intrinsic.ConvReLU2d(conv, nn.ReLU())  # type: ignore[no-untyped-call]
    bn = intrinsic.ConvBn2d(conv, nn.BatchNorm2d(6))  # type: ignore[no-untyped-call]
    for fused in (relu, bn):
        model = nn.Sequential(fused, nn.Flatten())
        before = snapshot(model)
        renderer = FilterRenderer(model, "0")
        np.testing.assert_array_equal(renderer.images(), expected)
        assert renderer.describe() == "0: 6 filters 3x3x3, scale=symmetric"
        renderer.plot(n=4)
        assert_unchanged(model, before)


def test_quantized_fused_conv_draws_its_dequantized_weight() -> None:
    conv = seeded(nn.Conv2d(3, 6, 3))
    model = fused_quantized(conv)
    layer = model.get_submodule("1")
    assert type(layer).__module__.startswith("torch.ao.nn.intrinsic.quantized")  # a quantized ConvReLU2d
    packed = layer.weight().int_repr().clone()  # type: ignore[operator]
    renderer = FilterRenderer(model, "1", scale="lecture")
    # The independent reference: the dequantized weight through the lecture's map w * 0.5 + 0.5.
    reference = layer.weight().dequantize().permute(0, 2, 3, 1).numpy() * 0.5 + 0.5  # type: ignore[operator]
    np.testing.assert_allclose(renderer.images(), np.clip(reference, 0, 1), rtol=0, atol=1e-6)
    # Quantization changed the weights only to within a quantization step of the float conv's.
    scale = float(layer.weight().q_per_channel_scales().max())  # type: ignore[operator]
    assert torch.allclose(layer.weight().dequantize(), conv.weight.detach(), atol=scale)  # type: ignore[operator]
    renderer.plot(n=6)
    assert torch.equal(layer.weight().int_repr(), packed)  # type: ignore[operator]


_QUANTIZED_TO_FLOAT = {
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
    "ConvTranspose1d": nn.ConvTranspose1d,
    "ConvTranspose2d": nn.ConvTranspose2d,
    "ConvTranspose3d": nn.ConvTranspose3d,
}


@pytest.mark.parametrize("kind", sorted(_QUANTIZED_TO_FLOAT))
def test_every_public_quantized_conv_draws_its_dequantized_weight(kind: str) -> None:
    import warnings

    from torch.ao.nn import quantized as nnq

    with warnings.catch_warnings():  # PyTorch's notice that quantized tensors are deprecated, not ours
        warnings.simplefilter("ignore")
        layer: nn.Module = getattr(nnq, kind)(3, 4, 3)
        floats = _QUANTIZED_TO_FLOAT[kind](3, 4, 3)
        weight = torch.quantize_per_tensor(
            torch.randn(floats.weight.shape, generator=torch.Generator().manual_seed(0)), 0.02, 0, torch.qint8
        )
        layer.set_weight_bias(weight, None)  # type: ignore[operator]
    with torch.no_grad():  # the independent reference: a float conv holding the dequantized weight
        floats.weight.copy_(weight.dequantize())
    renderer = FilterRenderer(layer)
    np.testing.assert_array_equal(renderer.images(), FilterRenderer(floats).images())


def test_render_imports_no_private_torch_name() -> None:
    """Private names (``_ConvNd``) move between torch versions: render.py uses public classes only."""
    import ast

    import convlens.render

    tree = ast.parse(Path(convlens.render.__file__).read_text())
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch"
        for alias in node.names
        if alias.name.startswith("_") or any(part.startswith("_") for part in (node.module or "").split("."))
    ]
    assert private == []


def test_scripted_conv_and_scripted_net_by_name() -> None:
    conv = seeded(nn.Conv2d(3, 5, 3))
    expected = FilterRenderer(conv).images()
    alone = FilterRenderer(scripted(conv))
    np.testing.assert_array_equal(alone.images(), expected)
    assert alone.describe().startswith("Conv2d: 5 filters 3x3x3")
    net = scripted(nn.Sequential(conv, nn.ReLU()))
    before = snapshot(net)
    by_name = FilterRenderer(net, "0")
    np.testing.assert_array_equal(by_name.images(), expected)
    by_name.plot(n=3)
    assert_unchanged(net, before)
    with pytest.raises(cl.InvalidTypeError, match="is Linear, which holds no convolution weight"):
        FilterRenderer(scripted(nn.Linear(3, 4)))
    with pytest.raises(cl.InvalidTypeError, match="layer '1' is ReLU, which holds no convolution weight"):
        FilterRenderer(net, "1")


# --- the grid -----------------------------------------------------------------------------


def geometry(fig: Figure) -> tuple[int, int]:
    spec = fig.axes[0].get_subplotspec()
    assert spec is not None
    rows, cols, _, _ = spec.get_geometry()
    return rows, cols


@pytest.mark.parametrize(
    ("n", "cols", "panels", "grid"),
    [(32, 8, 10, (2, 8)), (4, 8, 4, (1, 4)), (7, 3, 7, (3, 3)), (10, 1, 10, (10, 1)), (100, 5, 10, (2, 5))],
)
def test_grid_has_one_axes_per_filter(n: int, cols: int, panels: int, grid: tuple[int, int]) -> None:
    fig = FilterRenderer(nn.Conv2d(3, 10, 3)).plot(n=n, cols=cols)
    assert len(fig.axes) == panels
    assert geometry(fig) == grid
    assert [ax.get_title() for ax in fig.axes] == [f"#{i}" for i in range(panels)]
    assert all(ax.get_xticks().size == 0 and ax.get_yticks().size == 0 for ax in fig.axes)
    assert fig.axes[0].images[0].get_interpolation() == "nearest"


def test_suptitle_names_the_layer_and_note_is_red() -> None:
    net = InplaceNet()
    fig = FilterRenderer(net, "features.0", note="random weights: pretrained unavailable").plot(n=4)
    texts = {t.get_text(): t for t in fig.texts}
    assert "features.0: 6 filters 3x3x3, scale=symmetric, showing 4" in texts
    note = texts["random weights: pretrained unavailable"]
    assert note.get_color() == "red"
    assert FilterRenderer(net, "features.0").plot(title="mine").texts[0].get_text() == "mine"


def test_figure_grid_sizes() -> None:
    fig, axes = figure_grid(5, 2, panel_size=(2.0, 1.0))
    assert len(axes) == len(fig.axes) == 5
    assert fig.get_size_inches().tolist() == [4.0, 3.0]
    with pytest.raises(cl.InvalidArgumentError, match="count must be an int >= 1"):
        figure_grid(0, 2)


def pixel_at_centre(fig: Figure, ax: Axes, png: Path) -> np.ndarray:
    """The RGB pixel of the saved PNG at the centre of ``ax``."""
    picture = np.asarray(Image.open(png).convert("RGB"))
    box = ax.get_window_extent()
    x, y = int((box.x0 + box.x1) / 2), int(picture.shape[0] - (box.y0 + box.y1) / 2)
    pixel: np.ndarray = picture[y, x]
    return pixel


def test_saved_png_shows_the_filters(tmp_path: Path) -> None:
    w = torch.zeros(3, 3, 4, 4)
    w[0] = 0.3  # the largest weight: white
    w[1] = -0.3  # the smallest: black
    w[2, 0] = 0.3  # red channel only
    fig = FilterRenderer(conv_with(w, in_channels=3), note="hand-set").plot()
    png = tmp_path / "filters.png"
    fig.savefig(png)
    with Image.open(png) as opened:
        assert opened.size[0] > 100
        assert opened.size[1] > 100
    white, black, red = (pixel_at_centre(fig, ax, png) for ax in fig.axes)
    assert (white >= 250).all()
    assert (black <= 5).all()
    assert red[0] >= 250
    assert abs(int(red[1]) - 128) <= 2
    assert abs(int(red[2]) - 128) <= 2
    assert "hand-set" in [t.get_text() for t in fig.texts]


def test_alexnet_first_layer() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model: nn.Module = torchvision.models.alexnet(weights=None)
    before = snapshot(model)
    renderer = FilterRenderer(model, "features.0")
    images = renderer.images()
    assert images.shape == (64, 11, 11, 3)
    assert 0.0 <= images.min() < 0.1
    assert 0.9 < images.max() <= 1.0
    assert len(renderer.plot(n=64).axes) == 64
    fig = renderer.plot()
    assert len(fig.axes) == 32
    assert geometry(fig) == (4, 8)
    assert fig.texts[0].get_text() == "features.0: 64 filters 3x11x11, scale=symmetric, showing 32"
    assert_unchanged(model, before)


# --- feature maps -------------------------------------------------------------------------


def test_feature_maps_panels_and_titles() -> None:
    activation = torch.rand(1, 10, 6, 5, generator=torch.Generator().manual_seed(0))
    fig = plot_feature_maps(activation, n=8, cols=4, note="random weights")
    assert len(fig.axes) == 8
    assert geometry(fig) == (2, 4)
    assert [ax.get_title() for ax in fig.axes] == [f"channel {i}" for i in range(8)]
    assert [t.get_text() for t in fig.texts] == ["feature maps: 8 of 10 channels, 6x5", "random weights"]
    for i, ax in enumerate(fig.axes):  # each panel scaled min-max on its own
        image = ax.images[0]
        np.testing.assert_allclose(image.get_array(), activation[0, i].numpy())  # type: ignore[arg-type]
        lo, hi = image.get_clim()
        assert lo == pytest.approx(activation[0, i].min().item())
        assert hi == pytest.approx(activation[0, i].max().item())
        assert image.get_cmap().name == "gray"


def test_feature_maps_from_numpy_and_one_d() -> None:
    assert len(plot_feature_maps(np.random.default_rng(0).random((3, 4, 4))).axes) == 3
    fig = plot_feature_maps(torch.rand(5, 40), cols=2, cmap="viridis")
    assert len(fig.axes) == 5
    assert fig.axes[0].images[0].get_array().shape == (1, 40)  # type: ignore[union-attr]
    assert fig.texts[0].get_text() == "feature maps: 5 of 5 channels, 40"


def test_feature_maps_pixels(tmp_path: Path) -> None:
    activation = torch.zeros(2, 8, 8)
    activation[0, :, 4:] = 1.0  # left half black, right half white
    activation[1, :, :4] = 3.0  # the opposite
    fig = plot_feature_maps(activation)
    png = tmp_path / "maps.png"
    fig.savefig(png)
    picture = np.asarray(Image.open(png).convert("L"))
    for ax, (left, right) in zip(fig.axes, [(0, 255), (255, 0)], strict=True):
        box = ax.get_window_extent()
        y = int(picture.shape[0] - (box.y0 + box.y1) / 2)
        x_left, x_right = int(box.x0 + 0.25 * box.width), int(box.x0 + 0.75 * box.width)
        assert abs(int(picture[y, x_left]) - left) <= 3
        assert abs(int(picture[y, x_right]) - right) <= 3


def test_feature_maps_errors() -> None:
    with pytest.raises(
        cl.InvalidArgumentError, match=r"batch of 2 .* Index one sample first, e\.g\. activation\[0\]"
    ):
        plot_feature_maps(torch.rand(2, 4, 5, 5))
    with pytest.raises(cl.InvalidArgumentError, match=r"got shape \(1, 2, 3, 4, 5\)"):
        plot_feature_maps(torch.rand(1, 2, 3, 4, 5))
    with pytest.raises(cl.InvalidArgumentError, match=r"got 'grey_r_'\. Did you mean 'grey_r'"):
        plot_feature_maps(torch.rand(4, 5, 5), cmap="grey_r_")
    with pytest.raises(cl.InvalidArgumentError, match=r"Did you mean 'viridis'"):
        plot_feature_maps(torch.rand(4, 5, 5), cmap="viridsi")
    with pytest.raises(cl.InvalidArgumentError, match="n must be an int >= 1"):
        plot_feature_maps(torch.rand(4, 5, 5), n=0)
    with pytest.raises(cl.InvalidTypeError, match="activation must be a tensor"):
        plot_feature_maps([[1.0]])  # type: ignore[arg-type]


# --- overlay ------------------------------------------------------------------------------


def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_overlay_shapes_for_every_image_kind() -> None:
    heatmap = torch.rand(7, 7)
    pil = Image.fromarray(photo())
    tensor = torch.from_numpy(photo()).permute(2, 0, 1).float() / 255
    for image in (pil, photo(), tensor, pil.convert("L"), pil.convert("RGBA")):
        out = overlay(image, heatmap)
        assert out.shape == (20, 30, 3)
        assert out.dtype == np.uint8


def test_overlay_alpha_zero_is_the_image() -> None:
    np.testing.assert_array_equal(overlay(photo(), torch.rand(7, 7), alpha=0.0), photo())
    tensor = torch.from_numpy(photo()).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(overlay(tensor, np.zeros((3, 3)), alpha=0), photo())


def test_overlay_alpha_one_is_the_colormap_colour() -> None:
    out = overlay(photo(), torch.full((7, 7), 0.3), alpha=1.0)
    expected = np.round(np.asarray(colormaps["jet"](0.3)[:3]) * 255)
    np.testing.assert_array_equal(out[0, 0], expected)
    np.testing.assert_array_equal(out[-1, -1], expected)
    np.testing.assert_array_equal(out, np.broadcast_to(expected, out.shape))


def test_overlay_blends_half_and_half() -> None:
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    out = overlay(image, np.ones((4, 4)), alpha=0.5, cmap="gray")
    np.testing.assert_array_equal(out, np.full((4, 4, 3), 178, dtype=np.uint8))  # (100 + 255) / 2 = 177.5


def test_overlay_resizes_the_heatmap_bilinearly() -> None:
    heatmap = torch.rand(7, 7, generator=torch.Generator().manual_seed(0))
    out = overlay(photo(), heatmap, alpha=1.0, cmap="gray")
    resized = F.interpolate(heatmap[None, None], size=(20, 30), mode="bilinear", align_corners=False)[0, 0]
    expected = np.round(colormaps["gray"](resized.numpy())[..., :3] * 255)
    np.testing.assert_array_equal(out, expected)
    half = np.zeros((7, 7))
    half[:, 4:] = 1.0
    out = overlay(photo(), half, alpha=1.0, cmap="gray")
    assert (out[:, 0] == 0).all()
    assert (out[:, -1] == 255).all()


def test_overlay_clips_the_heatmap() -> None:
    out = overlay(photo(), np.array([[-5.0, 7.0], [np.nan, 0.5]]), alpha=1.0, cmap="gray")
    assert out[0, 0, 0] == 0
    assert out[0, -1, 0] == 255


def test_overlay_errors() -> None:
    with pytest.raises(cl.InvalidArgumentError, match=r"alpha must be in \[0, 1\]; got 1.5"):
        overlay(photo(), torch.rand(7, 7), alpha=1.5)
    with pytest.raises(cl.InvalidArgumentError, match=r"alpha must be in \[0, 1\]; got -0.1"):
        overlay(photo(), torch.rand(7, 7), alpha=-0.1)
    with pytest.raises(cl.InvalidArgumentError, match=r"heatmap must be 2-D \(H, W\); got shape \(1, 7, 7\)"):
        overlay(photo(), torch.rand(1, 7, 7))
    with pytest.raises(cl.InvalidArgumentError, match="Did you mean 'jet'"):
        overlay(photo(), torch.rand(7, 7), cmap="jte")


# --- no pyplot ----------------------------------------------------------------------------


def test_render_never_imports_pyplot() -> None:
    code = (
        "import io, sys, torch\n"
        "import convlens.render as r\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'imported'\n"
        "fig = r.FilterRenderer(torch.nn.Conv2d(3, 4, 3), note='x').plot()\n"
        "r.plot_feature_maps(torch.rand(4, 5, 5)).savefig(io.BytesIO(), format='png')\n"
        "fig.savefig(io.BytesIO(), format='png')\n"
        "r.overlay(torch.rand(3, 8, 8), torch.rand(2, 2))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'used'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_plot_cam_two_panels_title_and_note() -> None:
    from convlens.render import plot_cam

    picture = np.zeros((16, 16, 3), dtype=np.uint8)
    fig = plot_cam(picture, torch.ones(4, 4), title="tabby (281), score 3.00", note="random weights")
    assert [ax.get_title() for ax in fig.axes] == ["input", "heat map"]
    texts = [t.get_text() for t in fig.texts]
    assert "random weights" in texts
    assert fig.get_suptitle() == "tabby (281), score 3.00"
    shown = fig.axes[1].images[0].get_array()
    assert shown is not None
    # A constant heat map of 1 over black: half of jet(1.0) = dark red everywhere.
    assert np.asarray(shown)[8, 8].tolist() == [64, 0, 0]


def test_plot_images_grid_titles_and_pixels() -> None:
    from convlens.render import plot_images

    batch = torch.zeros(3, 1, 4, 4)
    batch[1] = 1.0
    batch[2] = 2.0  # clipped to white
    fig = plot_images(batch, ["a", "b", "c"], cols=2, title="three", note="random weights")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    shown = [np.asarray(ax.images[0].get_array()) for ax in fig.axes]
    assert [s[0, 0].tolist() for s in shown] == [[0, 0, 0], [255, 255, 255], [255, 255, 255]]
    assert "random weights" in [t.get_text() for t in fig.texts]
    with pytest.raises(cl.InvalidArgumentError, match="got 1 titles for 3 pictures"):
        plot_images(batch, ["a"])
