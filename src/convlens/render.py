"""Turn tensors into pictures: convolution filters, feature maps, heat-map overlays.

This module imports no compute module and never imports ``matplotlib.pyplot``:
figures are built as :class:`matplotlib.figure.Figure` objects directly, so they
work on any backend (``Agg`` included), are never shown, and leave pyplot's
global figure list alone. Save one with ``fig.savefig(path)``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import convlens.render as render
    >>> conv = nn.Conv2d(3, 8, 5)
    >>> render.FilterRenderer(conv).images().shape
    (8, 5, 5, 3)
    >>> fig = render.plot_feature_maps(torch.rand(16, 6, 6), n=4, cols=2)
    >>> [ax.get_title() for ax in fig.axes]
    ['channel 0', 'channel 1', 'channel 2', 'channel 3']
    >>> render.overlay(torch.rand(3, 20, 30), torch.rand(7, 7)).shape
    (20, 30, 3)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn
from torch.ao.nn import quantized as nnq

from convlens.core.checks import check_choice, check_int, choices
from convlens.core.layers import LayerSpec, resolve_layer
from convlens.errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError, did_you_mean
from convlens.models.images import ImageSource, deprocess, to_rgb_array

if TYPE_CHECKING:
    from convlens.featureviz.neurons import TopExamplesResult

__all__ = [
    "FilterRenderer",
    "FilterScale",
    "figure_grid",
    "masked",
    "overlay",
    "plot_cam",
    "plot_feature_maps",
    "plot_images",
    "plot_top_examples",
]

#: How :class:`FilterRenderer` maps weights to colours.
FilterScale = Literal["symmetric", "lecture", "minmax"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONV_NAMES = "Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d or ConvTranspose3d"
#: PyTorch's public quantized convolutions (the fused quantized ones, ConvReLU2d and others, subclass them).
_QUANTIZED_CONV_TYPES = (
    nnq.Conv1d,
    nnq.Conv2d,
    nnq.Conv3d,
    nnq.ConvTranspose1d,
    nnq.ConvTranspose2d,
    nnq.ConvTranspose3d,
)
#: The class names of PyTorch's convolutions, as a scripted module's ``original_name`` gives them.
_CONV_CLASS_NAMES = frozenset(t.__name__ for t in _CONV_TYPES)


def _weight_reader(module: nn.Module) -> Callable[[], Tensor] | None:
    """How to read the convolution weight that ``module`` holds (a float tensor), or None if it holds none.

    A convolution (quantization-aware ones included: they subclass it), its ``weight``; a fused module
    (``torch.ao.nn.intrinsic``'s ConvReLU2d, ConvBn2d, ...: the convolution first, then what follows it),
    its convolution's own weight (a ConvBn2d's batch norm is not folded in); a quantized convolution
    (``torch.ao.nn.quantized``, where ``weight()`` is a method giving a quantized tensor), that weight
    dequantized; a scripted convolution or fused module (``torch.jit.script``), its ``weight`` attribute.
    """
    if isinstance(module, _CONV_TYPES):
        return lambda: module.weight
    kind = str(getattr(module, "original_name", type(module).__name__))
    children = dict(module.named_children())
    if isinstance(module, torch.jit.ScriptModule):
        weight = getattr(module, "weight", None)
        if kind in _CONV_CLASS_NAMES and isinstance(weight, Tensor):
            return lambda: getattr(module, "weight")  # noqa: B009 - read now, not when constructed
    elif isinstance(module, _QUANTIZED_CONV_TYPES):
        # weight() is a method here, untyped in some torch versions: read it the same way in all.
        return lambda: getattr(module, "weight")().dequantize()  # noqa: B009
    fused = type(module).__module__.startswith("torch.ao.nn.intrinsic") or (
        isinstance(module, torch.jit.ScriptModule) and kind.startswith("Conv")
    )
    if fused and "0" in children:
        return _weight_reader(children["0"])
    return None


class FilterRenderer:
    """Draw the weights of a convolution layer, one small picture per filter.

    Filter ``i`` is ``weight[i]``: for a convolution, the kernel that makes output
    channel ``i``; for a transposed convolution, the pattern that input channel
    ``i`` stamps onto the output channels. Filters with 3 channels are drawn in
    colour (channel 0, 1, 2 -> red, green, blue, as in the lecture), 1-channel
    filters in grey, others in grey as the mean over their channels or as the one
    channel named by ``channel``. 1-D kernels are drawn as strips; of a 3-D kernel
    the middle depth slice is drawn (the title says which). The bias is ignored.

    Any module that holds a convolution weight is drawn: a convolution (a
    quantization-aware one too); a fused one (``torch.ao.nn.intrinsic``'s
    ``ConvReLU2d``, ``ConvBn2d``, ...: its convolution's own weight, a batch
    norm is not folded in); a quantized one (``torch.ao.nn.quantized``: its
    weight dequantized); a scripted one (``torch.jit.script`` of a convolution
    or of a network, addressed by name). The module is only read.

    Weights become colours by an increasing affine map, chosen by ``scale``:

    - ``"symmetric"`` (the default): ``0.5 + w / (2 * m)`` with ``m`` the largest
      ``|w|`` over all the filters drawn. Zero is mid-grey and the sign is
      visible, one scale serves every filter so they can be compared, and nothing
      clips. The lecture's fixed ``w * 0.5 + 0.5`` clips weights beyond ±1 to
      black or white and leaves typical weights (``|w|`` ~ 0.01 to 0.1) an almost
      uniform grey; this map uses the full range whatever the weights' size.
    - ``"lecture"``: ``w * 0.5 + 0.5`` clipped to [0, 1], exactly the lecture's code.
    - ``"minmax"``: ``(w - min) / (max - min)`` per filter (over all its colour
      channels together); a flat filter is mid-grey. Shows each filter's
      pattern best, but their contrasts can no longer be compared.

    Args:
        model: The model, or the convolution module itself when ``layer`` is None.
        layer: A qualified name (``"features.0"``) or a submodule of ``model``.
        scale: How weights become colours (above).
        channel: ``"mean"`` draws filters of 1 or 3 channels as they are and
            averages the channels of other counts; an ``int`` draws that one
            channel of every filter, in grey.
        note: A line written in red on every figure (e.g. ``"random weights:
            pretrained unavailable"``).
        name: The layer's name in titles; by default its qualified name, or its
            class name when a module is given alone.

    Raises:
        InvalidTypeError: The layer holds no convolution weight, or ``model`` is not a module.
        LayerNotFoundError: No such layer; the message names the nearest ones.
        InvalidArgumentError: A bad ``scale`` or ``channel``, or lazy weights
            that are not initialized yet.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU())
        >>> r = FilterRenderer(model, "0")
        >>> r.images(n=4).shape
        (4, 5, 5, 3)
        >>> fig = r.plot(n=6, cols=3)
        >>> len(fig.axes), fig.axes[5].get_title()
        (6, '#5')
        >>> fig.texts[0].get_text()
        '0: 16 filters 3x5x5, scale=symmetric, showing 6'
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerSpec | None = None,
        *,
        scale: FilterScale = "symmetric",
        channel: Literal["mean"] | int = "mean",
        note: str | None = None,
        name: str | None = None,
    ) -> None:
        if layer is None:
            if not isinstance(model, nn.Module):
                raise InvalidTypeError(
                    f"FilterRenderer needs an nn.Module (a model and a layer, or a conv layer); "
                    f"got {type(model).__name__}."
                )
            module, default_name = model, str(getattr(model, "original_name", type(model).__name__))
        else:
            ref = resolve_layer(model, layer)
            module, default_name = ref.module, ref.name
        self.name = default_name if name is None else name
        what = "the module given" if layer is None else f"layer {self.name!r}"
        read = _weight_reader(module)
        kind = str(getattr(module, "original_name", type(module).__name__))
        if read is None:
            raise InvalidTypeError(
                f"FilterRenderer draws convolution filters, but {what} is {kind}, which holds no "
                f"convolution weight. Pass a {_CONV_NAMES} layer (fused, quantized or scripted ones "
                "too); call convlens.list_layers(model) to see the model's layers and their types."
            )
        weight = read()
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise InvalidArgumentError(
                f"layer {self.name!r} ({kind}) has no weights yet: "
                "run one forward pass to initialize the lazy module first."
            )
        if weight.is_meta:
            raise UnsupportedModelError(
                f"FilterRenderer cannot draw a layer on the meta device: it holds no data ({self.name!r}, "
                f'{kind}, has shapes only). Load its weights first, e.g. model.to_empty(device="cpu") '
                "then model.load_state_dict(state)."
            )
        self.module = module
        self._read = read
        self.scale: FilterScale = check_choice("scale", scale, choices(FilterScale))  # type: ignore[assignment]
        shape = tuple(weight.shape)
        self._channels = shape[1]
        if isinstance(channel, bool) or not isinstance(channel, int | str):
            raise InvalidTypeError(f"channel must be 'mean' or an int; got {type(channel).__name__}.")
        if isinstance(channel, str):
            check_choice("channel", channel, ["mean"])
        elif not 0 <= channel < self._channels:
            raise InvalidArgumentError(
                f"channel must be in [0, {self._channels - 1}]: the filters of {self.name!r} have "
                f"{self._channels} channels; got {channel}."
            )
        self.channel = channel
        self.note = note

    def images(self, n: int | None = None) -> np.ndarray:
        r"""The first ``n`` filters as RGB pictures in [0, 1] (grey repeated over R, G, B).

        The weights are read now (``.detach().float().cpu()``), so a model that
        trains in between is drawn as it is; the model is not modified.

        Args:
            n: How many filters at most; None for all of them.

        Returns:
            A float32 array, one picture per filter.

        Raises:
            InvalidArgumentError: ``n`` < 1.

        Shape:
            Output :math:`(\min(n, F), k_h, k_w, 3)`; a 1-D kernel of size k
            gives :math:`k_h = 1, k_w = k`.

        Example:
            >>> from torch import nn
            >>> FilterRenderer(nn.Conv1d(64, 10, 7)).images(n=100).shape
            (10, 1, 7, 3)
        """
        count = self.filters if n is None else min(check_int("n", n, 1), self.filters)
        w = self._read().detach()[:count].float().cpu()
        if w.dim() == 5:  # 3-D kernel: the middle depth slice
            w = w[:, :, w.shape[2] // 2]
        elif w.dim() == 3:  # 1-D kernel: a strip one pixel high
            w = w.unsqueeze(2)
        if isinstance(self.channel, int):
            w = w[:, self.channel : self.channel + 1]
        elif self._channels not in {1, 3}:
            w = w.mean(dim=1, keepdim=True)
        a = w.permute(0, 2, 3, 1).numpy().astype(np.float32)  # (n, kh, kw, 1 or 3)
        if self.scale == "lecture":
            a = np.clip(a * 0.5 + 0.5, 0.0, 1.0)
        elif self.scale == "symmetric":
            peak = float(np.abs(a).max()) if a.size else 0.0
            a = 0.5 + a / (2.0 * peak) if peak > 0 else np.full_like(a, 0.5)
        else:
            lo = a.min(axis=(1, 2, 3), keepdims=True)
            span = a.max(axis=(1, 2, 3), keepdims=True) - lo
            a = np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.5)
        a = np.clip(a, 0.0, 1.0).astype(np.float32)  # guards float rounding only
        return np.repeat(a, 3, axis=3) if a.shape[3] == 1 else a

    @property
    def filters(self) -> int:
        """How many filters the layer has (``weight.shape[0]``)."""
        return int(self._read().shape[0])

    def describe(self) -> str:
        """A one-line description of what is drawn, used as the figure's title.

        Example:
            >>> from torch import nn
            >>> FilterRenderer(nn.Conv3d(2, 4, 3), channel=1).describe()
            'Conv3d: 4 filters 2x3x3x3, scale=symmetric, channel 1, depth slice 1 of 3'
        """
        shape = tuple(self._read().shape)
        text = f"{self.name}: {shape[0]} filters {'x'.join(map(str, shape[1:]))}, scale={self.scale}"
        if isinstance(self.channel, int):
            text += f", channel {self.channel}"
        elif self._channels not in {1, 3}:
            text += f", mean of {self._channels} channels"
        if len(shape) == 5:
            text += f", depth slice {shape[2] // 2} of {shape[2]}"
        return text

    def plot(self, n: int = 32, cols: int = 8, *, title: str | None = None) -> Figure:
        """Draw the first ``n`` filters in a grid, each panel titled ``#i``.

        Args:
            n: How many filters at most (the lecture draws 32).
            cols: Panels per row.
            title: The figure's title; by default the layer, its shape and the scale.

        Returns:
            A figure with one axes per filter drawn.

        Raises:
            InvalidArgumentError: ``n`` or ``cols`` < 1.

        Example:
            >>> from torch import nn
            >>> fig = FilterRenderer(nn.Conv2d(1, 3, 3), note="random weights").plot()
            >>> len(fig.axes), [t.get_text() for t in fig.texts]
            (3, ['Conv2d: 3 filters 1x3x3, scale=symmetric', 'random weights'])
        """
        check_int("cols", cols, 1)
        pictures = self.images(n)
        count = len(pictures)
        strip = self._read().dim() == 3
        fig, axes = figure_grid(count, cols, panel_size=(2.0, 0.9) if strip else 1.5)
        for i, (ax, picture) in enumerate(zip(axes, pictures, strict=True)):
            ax.imshow(picture, interpolation="nearest", aspect="auto" if strip else "equal")
            ax.set_title(f"#{i}", fontsize=8)
        default = self.describe() + (f", showing {count}" if count < self.filters else "")
        _decorate(fig, default if title is None else title, self.note)
        return fig


def plot_feature_maps(
    activation: Tensor | np.ndarray,
    n: int = 32,
    cols: int = 8,
    cmap: str | Colormap = "gray",
    *,
    title: str | None = None,
    note: str | None = None,
) -> Figure:
    """Draw the first ``n`` channels of one sample's feature maps, as in the lecture.

    Each panel is scaled on its own, from its minimum (first colour of ``cmap``)
    to its maximum (last colour), as ``plt.imshow`` does by default; a flat map
    shows the first colour. 1-D maps are drawn as strips.

    Args:
        activation: One sample's activation: ``(C, H, W)``, a batch of one
            ``(1, C, H, W)``, or 1-D maps ``(C, L)``.
        n: How many channels at most.
        cols: Panels per row.
        cmap: A matplotlib colormap or its name.
        title: The figure's title; by default how many channels of what size.
        note: A line written in red on the figure.

    Returns:
        A figure with one axes per channel drawn, titled ``channel i``.

    Raises:
        InvalidArgumentError: A batch of more than one sample, an unsupported
            shape, ``n`` or ``cols`` < 1, or an unknown colormap name.

    Example:
        >>> import torch
        >>> fig = plot_feature_maps(torch.rand(1, 64, 55, 55))
        >>> len(fig.axes), fig.axes[31].get_title(), fig.texts[0].get_text()
        (32, 'channel 31', 'feature maps: 32 of 64 channels, 55x55')
    """
    colormap = _colormap(cmap)
    check_int("cols", cols, 1)
    check_int("n", n, 1)
    a = _as_tensor("activation", activation)
    shape = tuple(a.shape)
    if a.dim() == 4:
        if shape[0] != 1:
            raise InvalidArgumentError(
                f"plot_feature_maps draws one sample; got a batch of {shape[0]} with shape {shape}. "
                "Index one sample first, e.g. activation[0]."
            )
        a = a[0]
    elif a.dim() not in {2, 3}:
        raise InvalidArgumentError(
            f"activation must be (C, H, W), (1, C, H, W) or (C, L); got shape {shape}."
        )
    maps = a[:n].float().cpu().numpy()
    strip = maps.ndim == 2
    if strip:
        maps = maps[:, None, :]
    fig, axes = figure_grid(len(maps), cols, panel_size=(2.0, 0.9) if strip else 1.5)
    for i, (ax, m) in enumerate(zip(axes, maps, strict=True)):
        ax.imshow(m, cmap=colormap, interpolation="nearest", aspect="auto" if strip else "equal")
        ax.set_title(f"channel {i}", fontsize=8)
    size = "x".join(map(str, a.shape[1:]))
    default = f"feature maps: {len(maps)} of {a.shape[0]} channels, {size}"
    _decorate(fig, default if title is None else title, note)
    return fig


def plot_images(
    images: Sequence[ImageSource] | Tensor,
    titles: Sequence[str] | None = None,
    cols: int = 8,
    *,
    title: str | None = None,
    note: str | None = None,
    panel_size: float = 1.5,
) -> Figure:
    """Draw pictures in a grid, each with its title (maximized images, dataset examples).

    Args:
        images: A batch ``(N, C, H, W)`` tensor of pictures in [0, 1] (C = 1 or 3;
            values outside are clipped), or a sequence of anything
            :func:`~convlens.models.images.to_rgb_array` takes.
        titles: One title per picture.
        cols: Panels per row.
        title: The figure's title.
        note: A line written in red on the figure.
        panel_size: Each panel's side in inches.

    Returns:
        A figure with one axes per picture.

    Raises:
        InvalidArgumentError: No pictures, or ``titles`` of the wrong length.

    Example:
        >>> import torch
        >>> fig = plot_images(torch.rand(3, 1, 28, 28), ["0", "1", "2"], cols=3, title="digits")
        >>> len(fig.axes), fig.axes[2].get_title()
        (3, '2')
    """
    pictures = [to_rgb_array(img.clamp(0, 1) if isinstance(img, Tensor) else img) for img in images]
    if not pictures:
        raise InvalidArgumentError("plot_images needs at least one picture; got none.")
    if titles is not None and len(titles) != len(pictures):
        raise InvalidArgumentError(f"got {len(titles)} titles for {len(pictures)} pictures; give one each.")
    fig, axes = figure_grid(len(pictures), cols, panel_size=panel_size)
    for i, (ax, picture) in enumerate(zip(axes, pictures, strict=True)):
        ax.imshow(picture, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    _decorate(fig, title or "", note)
    return fig


def plot_top_examples(
    result: TopExamplesResult,
    *,
    preset: str | None = None,
    crops: bool = False,
    rows: int | None = 16,
    title: str | None = None,
    note: str | None = None,
    panel_size: float = 1.3,
    names: Sequence[str] | None = None,
) -> Figure:
    """Draw :meth:`~convlens.NeuronVisualizer.top_examples`: one row per unit, its examples highest first.

    Each panel is the example with, for a conv channel, the window its peak
    position sees (the receptive field, ``result.boxes``) outlined in yellow;
    ``crops=True`` draws that window alone (Zeiler and Fergus's patches).

    Args:
        result: What ``top_examples`` returned, with its inputs kept.
        preset: The preprocessing that made the inputs (``"imagenet"`` or
            ``"lecture"``), undone for display; None: inputs are shown as
            they are when in [0, 1], else each stretched to [0, 1].
        crops: Draw the receptive-field window only (needs ``result.boxes``).
        rows: At most this many units (None: all).
        title: The figure's title (default: the layer's name).
        note: A line written in red on the figure.
        panel_size: Each panel's side in inches.
        names: Names of the units (the classes, for an output layer:
            :func:`~convlens.models.images.class_names`): a row is labelled
            ``"name (unit)"`` instead of ``"unit 3"``.

    Returns:
        A figure with one axes per example; each row's first panel names the
        unit, each panel gives the example's index and activation.

    Raises:
        InvalidArgumentError: No inputs kept (``keep_inputs=False``), or
            ``crops`` without boxes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from convlens import NeuronVisualizer
        >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
        >>> best = NeuronVisualizer(net, "1").top_examples(TensorDataset(torch.rand(6, 1, 8, 8)), k=4)
        >>> fig = plot_top_examples(best)
        >>> len(fig.axes), fig.axes[0].get_ylabel()
        (12, 'channel 0')
    """
    if result.inputs is None:
        raise InvalidArgumentError(
            "plot_top_examples needs the inputs: call top_examples with keep_inputs=True."
        )
    single = result.indices.dim() == 1
    units = [result.unit] if isinstance(result.unit, int) else list(result.unit)
    indices = result.indices[None] if single else result.indices
    values = result.activations[None] if single else result.activations
    inputs = result.inputs[None] if single else result.inputs
    boxes = None if result.boxes is None else (result.boxes[None] if single else result.boxes)
    if crops and boxes is None:
        raise InvalidArgumentError(
            f"crops=True needs receptive-field boxes; layer {result.layer!r} has none (no spatial grid)."
        )
    shown = len(units) if rows is None else min(len(units), check_int("rows", rows, 1))
    k = indices.shape[1]
    fig, axes = figure_grid(shown * k, k, panel_size=panel_size)
    kind = "channel" if result.positions is not None else "unit"
    for u in range(shown):
        for j in range(k):
            ax = axes[u * k + j]
            x = inputs[u, j].detach().float().cpu()
            box = None if boxes is None else boxes[u, j].tolist()
            if crops and box is not None:
                x = x[:, box[0] : box[2], box[1] : box[3]]
            if preset is not None and x.shape[0] == 3:
                picture: np.ndarray = deprocess(x, preset=preset)  # type: ignore[arg-type]
            else:
                low, high = float(x.min()), float(x.max())
                inside = low >= 0.0 and high <= 1.0
                picture = to_rgb_array(x if inside else (x - low) / max(high - low, 1e-12))
            ax.imshow(picture, interpolation="nearest")
            if box is not None and not crops and len(box) == 4:
                top, left, bottom, right = box
                ax.add_patch(
                    Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                              fill=False, edgecolor="yellow", linewidth=1.2)
                )  # fmt: skip
            ax.set_title(f"#{int(indices[u, j])}  {float(values[u, j]):.2f}", fontsize=7)
            if j == 0:
                unit = units[u]
                named = names[unit] if names is not None and 0 <= unit < len(names) else None
                ax.set_ylabel(f"{named} ({unit})" if named is not None else f"{kind} {unit}", fontsize=8)
    more = "" if shown == len(units) else f" (first {shown} of {len(units)} {kind}s)"
    _decorate(fig, title or f"{result.layer}: the examples that excite each {kind} most{more}", note)
    return fig


def overlay(
    image: ImageSource,
    heatmap: Tensor | np.ndarray,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
) -> np.ndarray:
    """Blend a heat map, coloured with ``cmap``, over a picture.

    The heat map is clipped to [0, 1] (NaN counts as 0), resized bilinearly
    (``align_corners=False``, as Grad-CAM upsamples) to the picture's size,
    coloured, and blended as ``(1 - alpha) * image + alpha * colour``.

    Args:
        image: A PIL image, an ``(H, W, 3|4)`` or ``(H, W)`` uint8 array, or a
            ``(3, H, W)`` float tensor in [0, 1] (see :func:`convlens.models.images.to_rgb_array`).
        heatmap: An ``(H', W')`` tensor or array with values in [0, 1].
        alpha: The heat map's weight, in [0, 1]: 0 gives the picture back unchanged.
        cmap: A matplotlib colormap or its name.

    Returns:
        The blended picture as uint8.

    Raises:
        InvalidArgumentError: ``alpha`` outside [0, 1], a heat map that is not
            2-D, or an unknown colormap name.

    Shape:
        Output :math:`(H, W, 3)`, the picture's size.

    Example:
        >>> import numpy as np
        >>> picture = np.zeros((32, 48, 3), dtype=np.uint8)
        >>> overlay(picture, np.ones((7, 7)), alpha=1.0, cmap="gray")[0, 0].tolist()
        [255, 255, 255]
    """
    colormap = _colormap(cmap)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise InvalidTypeError(f"alpha must be a number in [0, 1]; got {type(alpha).__name__}.")
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"alpha must be in [0, 1]; got {alpha}.")
    hm = _as_tensor("heatmap", heatmap)
    if hm.dim() != 2:
        raise InvalidArgumentError(
            f"heatmap must be 2-D (H, W); got shape {tuple(hm.shape)}. Pass one map of a batch, e.g. maps[0]."
        )
    picture = to_rgb_array(image)
    h, w = picture.shape[:2]
    hm = hm.float().cpu().nan_to_num(0.0).clamp(0.0, 1.0)
    if tuple(hm.shape) != (h, w):
        hm = F.interpolate(hm[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    colour: np.ndarray = colormap(hm.clamp(0.0, 1.0).numpy())[..., :3] * 255.0
    blended = (1.0 - alpha) * picture.astype(np.float64) + alpha * colour
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def masked(image: ImageSource, mask: Tensor | np.ndarray, *, clip: float = 0.99) -> np.ndarray:
    """A picture whose transparency is a mask: where a feature visualization matters (MACO).

    The mask (a result's ``mask[i]``, ``(1, H', W')`` or ``(H', W')``) is resized bilinearly to the
    picture, divided by its ``clip`` quantile (so one bright pixel does not make the rest
    transparent; by its maximum when that quantile is 0, a mask that covers less) and clipped to [0, 1]: the alpha channel of an RGBA picture, opaque where the
    objective's gradient was largest over the optimization.

    Args:
        image: A PIL image, an ``(H, W, 3|4)`` or ``(H, W)`` uint8 array, or a ``(3, H, W)`` float
            tensor in [0, 1] (a result's ``picture[i]``).
        mask: The importance, nonnegative.
        clip: The quantile that becomes fully opaque, in (0, 1].

    Returns:
        ``(H, W, 4)`` uint8 RGBA, the picture's colours with the mask as alpha.

    Raises:
        InvalidArgumentError: A mask that is not 2-D (after dropping a leading 1), negative values,
            or ``clip`` outside (0, 1].

    Example:
        >>> import torch
        >>> mask = torch.zeros(1, 4, 4)
        >>> mask[0, :2] = 1.0
        >>> rgba = masked(torch.ones(3, 4, 4), mask)
        >>> rgba.shape, rgba[0, 0].tolist(), rgba[3, 0].tolist()
        ((4, 4, 4), [255, 255, 255, 255], [255, 255, 255, 0])
    """
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not 0.0 < clip <= 1.0:
        raise InvalidArgumentError(f"clip must be a number in (0, 1]; got {clip!r}.")
    m = _as_tensor("mask", mask).float().cpu()
    m = m[0] if m.dim() == 3 and m.shape[0] == 1 else m
    if m.dim() != 2:
        raise InvalidArgumentError(f"mask must be (H, W) or (1, H, W); got shape {tuple(m.shape)}.")
    if bool((m < 0).any()):
        raise InvalidArgumentError("mask must be nonnegative (an accumulated gradient magnitude).")
    picture = to_rgb_array(image)
    h, w = picture.shape[:2]
    if tuple(m.shape) != (h, w):
        m = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    top = float(torch.quantile(m.flatten(), clip))
    top = top if top > 0 else float(m.max())  # what matters covers under 1 - clip of the picture
    alpha = (m / top).clamp(0.0, 1.0) if top > 0 else torch.zeros_like(m)
    a = np.round(alpha.numpy() * 255.0).astype(np.uint8)
    return np.concatenate([picture[..., :3], a[..., None]], axis=-1)


def plot_cam(
    image: ImageSource,
    heatmap: Tensor | np.ndarray,
    *,
    title: str | None = None,
    note: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Figure:
    """The picture beside its heat map overlaid (Grad-CAM's figure).

    Args:
        image: The picture, as :func:`overlay` takes it.
        heatmap: ``(h, w)`` values in [0, 1], resized to the picture.
        title: Written above both panels (e.g. the class and its score).
        note: Written in red on the figure's face (e.g. "random weights").
        alpha: Opacity of the heat map.
        cmap: Matplotlib colormap of the heat map.

    Returns:
        A two-panel figure.

    Example:
        >>> import torch
        >>> fig = plot_cam(torch.rand(3, 32, 32), torch.rand(7, 7), title="tabby (281): 12.3")
        >>> len(fig.axes), fig.axes[1].get_title()
        (2, 'heat map')
    """
    picture = to_rgb_array(image)
    fig, (left, right) = figure_grid(2, 2, panel_size=4.0)
    left.imshow(picture)
    left.set_title("input")
    right.imshow(overlay(picture, heatmap, alpha=alpha, cmap=cmap))
    right.set_title("heat map")
    _decorate(fig, title or "", note)
    return fig


def figure_grid(
    count: int, cols: int, *, panel_size: float | tuple[float, float] = 1.5
) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` panels in rows of ``cols``, and no empty axes.

    Args:
        count: How many panels.
        cols: Panels per row (fewer when ``count`` is smaller).
        panel_size: Each panel's size in inches: a side, or ``(width, height)``.

    Returns:
        The figure (constrained layout) and its axes in reading order, ticks hidden.

    Raises:
        InvalidArgumentError: ``count`` or ``cols`` < 1.

    Example:
        >>> fig, axes = figure_grid(10, 4)
        >>> len(axes), len(fig.axes), fig.get_size_inches().tolist()
        (10, 10, [6.0, 4.5])
    """
    check_int("count", count, 1)
    check_int("cols", cols, 1)
    width, height = (panel_size, panel_size) if isinstance(panel_size, int | float) else panel_size
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(cols * width, rows * height), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(count)]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _decorate(fig: Figure, title: str, note: str | None) -> None:
    fig.suptitle(title)
    if note:
        fig.supxlabel(note, color="red")


def _as_tensor(name: str, value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    raise InvalidTypeError(f"{name} must be a tensor or a numpy array; got {type(value).__name__}.")


def _colormap(cmap: object) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    if not isinstance(cmap, str):
        raise InvalidTypeError(f"cmap must be a colormap name or a Colormap; got {type(cmap).__name__}.")
    names = list(colormaps)
    if cmap not in colormaps:
        raise InvalidArgumentError(
            f"cmap must be a matplotlib colormap; got {cmap!r}.{did_you_mean(cmap, names)} "
            f"See list(matplotlib.colormaps) for all {len(names)}."
        )
    return colormaps[cmap]
