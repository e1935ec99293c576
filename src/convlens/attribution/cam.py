"""Grad-CAM and its family: class activation maps, exact, fast and safe.

One forward: autograd is off until the chosen layer, whose output becomes a
leaf that requires grad (later in-place ops get a clone), and the gradient of
the target score is taken with :func:`torch.autograd.grad` to that leaf only,
so no parameter gradient is computed and nothing is written to ``.grad``.
The model runs in eval mode (restored after), and nothing outlives the call.

A family member overrides only :meth:`GradCAM.weights`, how the channels of
the activation are weighted; ScoreCAM and EigenCAM, which need no gradient,
override :meth:`GradCAM.raw_map`.

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> import convlens as cl
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 10))
    >>> out = cl.GradCAM(net, "1")(torch.randn(2, 3, 16, 16), target=[3, 7])
    >>> out.maps.shape, out.raw.shape, out.targets.tolist()
    (torch.Size([2, 16, 16]), torch.Size([2, 16, 16]), [3, 7])

References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017. https://arxiv.org/abs/1610.02391
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.core import display
from convlens.core.checks import check_int, check_ran, require_autograd
from convlens.core.inputs import NO_ARGS, ForwardArgs, ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import LayerSpec, call_index, resolve_layer, unwrap
from convlens.core.layouts import Reshape, ReshapeSpec, as_layout, channels_last_hint
from convlens.core.leaf import forward_with_leaf
from convlens.core.probe import Probe, Prober, check_inputs, require_hooks
from convlens.core.recorder import grad_mode_restored, internal, preserved_modes
from convlens.core.targets import (
    Target,
    callable_scores,
    check_target,
    class_scores,
    take_target,
    target_scores,
)
from convlens.core.values import describe
from convlens.errors import ConvlensError, InvalidArgumentError, InvalidTypeError

__all__ = [
    "CAMResult",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "Images",
    "LayerCAM",
    "Reshape",
    "ReshapeSpec",
    "ScoreCAM",
    "Target",
    "XGradCAM",
    "batch_shape",
    "min_max",
]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
#: A map is flat when its range is below this fraction of its largest magnitude
#: (float32 rounding in the upsampling of a 1x1 map stays far below it).
_FLAT = 1e-5

#: What a CAM or saliency call takes as its input: a batch ``(N, C, *spatial)``, or a list of
#: images ``(C, *spatial)`` of one size for a model that takes a list (torchvision's detectors).
Images = Tensor | list[Tensor] | tuple[Tensor, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CAMResult:
    """What a CAM call returns; every tensor is on the model's device, free of the graph.

    Attributes:
        maps: ``(N, H, W)`` float32 in [0, 1] at the input's resolution:
            ``raw`` upsampled (``align_corners=False``), then min-max per
            sample; a flat map is all zeros.
        raw: ``(N, h, w)`` map at the layer's resolution, ``relu(sum_k w_k A_k)``.
        scores: ``(N,)`` the scores explained (the raw model output, a logit,
            for class targets).
        targets: ``(N,)`` int64 class indices used, or None for a callable target.
        layer: The layer's qualified name.
    """

    maps: Tensor
    raw: Tensor
    scores: Tensor
    targets: Tensor | None
    layer: str

    def _repr_html_(self) -> str:
        """The maps as small heat maps (jet: 0 blue, 1 red), each with its target and score, for Jupyter.

        The result does not keep the input, so the maps are drawn alone (lay
        one over its picture with :func:`convlens.overlay`). At most
        ``MAX_ITEMS`` (32) maps are drawn, a line says how many were left out.

        Example:
            >>> import torch
            >>> result = CAMResult(maps=torch.rand(2, 8, 8), raw=torch.rand(2, 4, 4),
            ...                    scores=torch.tensor([1.5, 2.0]), targets=torch.tensor([3, 7]), layer="1")
            >>> page = result._repr_html_()
            >>> page.count("<img"), "target 7" in page
            (2, True)
        """
        return display.map_gallery(
            "CAMResult", f"layer {self.layer!r}", self.maps, self.scores, self.targets, cmap="jet"
        )


class GradCAM:
    """Grad-CAM: weight each channel by the spatial mean of the score's gradient.

    Args:
        model: Any ``nn.Module`` whose output is ``(N, classes)`` scores (or
            anything, with a callable ``target``: a detector's list of dicts,
            a segmenter's ``{"out": ...}``, see :class:`~convlens.attribution.detection.BoxScoreTarget`
            and :class:`~convlens.attribution.detection.SegmentationTarget`).
        layer: A layer with a spatial output ``(N, C, ...)``, by name
            (``"features.12"``, ``"layer4"``, ``"layer1.0.relu#1"``) or module.
            Of a layer that returns several tensors (a tuple, list or dict: an
            FPN's ``OrderedDict``, a multi-branch stage), the first tensor is
            read unless ``reshape=Layout(part=...)`` says otherwise.
        reshape: How the layer's output becomes ``(N, C, *spatial)``, applied
            alike to the activation and to its gradient (as pytorch-grad-cam's
            ``reshape_transform``): ``None`` (it already is), ``"vit"`` (tokens
            ``(N, L, C)``: the class and register tokens dropped, the square
            grid kept), ``"channels_last"`` (``(N, *spatial, C)``, as Swin and
            ConvNeXt stages give), a callable, or :class:`convlens.Layout`
            (which tensor of a multi-tensor output, then how to reshape it).

    Raises:
        LayerNotFoundError: No such layer (the message names the nearest).
        InvalidArgumentError: An unknown ``reshape`` preset (the nearest is named).
        InvalidTypeError: ``reshape`` is not a preset, a callable or a Layout.
        UnsupportedModelError: A TorchScript model (hooks cannot see inside it).

    Shape:
        Input ``(N, C_in, H, W)`` (1-D and 3-D convs work alike), or a list of
        ``N`` images ``(C_in, H, W)`` of one size (torchvision's detectors);
        ``maps`` ``(N, H, W)``, ``raw`` ``(N, h, w)``.

    Precision:
        A float16 or bfloat16 model gives maps computed in float32: the channel
        weights, the weighted sum and the upsampling are float32 (the forward
        and the gradient stay in the model's dtype). Against the float32 model's
        maps on the same input, a bfloat16 model's ``maps`` (in [0, 1]) differ by
        at most 0.25 at any pixel and by at most 0.03 on average: bfloat16 keeps
        8 bits of mantissa, and the rounding of every layer before the map adds
        up (checked for every method and for saliency on AlexNet in
        ``tests/test_cam.py``).

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 6 * 6, 5))
        >>> out = GradCAM(net, "0")(torch.randn(3, 1, 8, 8))
        >>> out.maps.shape, out.maps.dtype, out.raw.shape, out.scores.shape
        (torch.Size([3, 8, 8]), torch.float32, torch.Size([3, 6, 6]), torch.Size([3]))
        >>> GradCAM(net, "0")(torch.randn(1, 1, 8, 8), target=5)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: target 5 is out of range: the model gives 5 scores per sample (0 to 4).

    References:
        Selvaraju et al., ICCV 2017. https://arxiv.org/abs/1610.02391
    """

    #: Whether :meth:`weights` needs the gradient of the score.
    needs_gradient: ClassVar[bool] = True

    def __init__(self, model: nn.Module, layer: LayerSpec, *, reshape: ReshapeSpec = None) -> None:
        self.model = model
        self._module = unwrap(model)
        require_hooks(self._module, type(self).__name__)
        self.ref = resolve_layer(model, layer)
        self.layout = as_layout(reshape)
        self._prober = Prober(self._module, {self.ref.name: self.ref.module})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, layer={self.ref.key!r})"

    # -- what a family member overrides ------------------------------------------

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Channel weights, broadcastable to ``activation`` ``(N, K, ...)``.

        Grad-CAM: ``w_k = mean over positions of d score / d A_k``.
        """
        return gradient.mean(dim=tuple(range(2, gradient.dim())), keepdim=True)

    def raw_map(self, activation: Tensor, gradient: Tensor | None, context: CAMContext) -> Tensor:
        """The map at the layer's resolution: ``relu(sum_k w_k A_k)``."""
        if gradient is None:  # pragma: no cover - only gradient-free subclasses reach here without one
            raise ConvlensError(f"{type(self).__name__} needs a gradient.")
        return F.relu((self.weights(activation, gradient) * activation).sum(dim=1))

    # -- the call --------------------------------------------------------------

    def __call__(
        self, x: Images, target: Target = None, *, forward_args: ForwardArgsLike = None
    ) -> CAMResult:
        """Explain ``target`` for the inputs ``x``.

        Args:
            x: A batch of inputs on the model's device, or a list of images
                ``(C, H, W)`` of one size for a model that takes a list
                (torchvision's detectors); the maps are at the images' size.
            target: None for each sample's predicted class (found in the same
                forward), a class index for all, one per sample (list or
                integer tensor), or a callable mapping the model output to one
                score per sample (:class:`~convlens.attribution.detection.BoxScoreTarget`
                for a detector, :class:`~convlens.attribution.detection.SegmentationTarget`
                for a segmenter). Where :class:`ScoreCAM` runs masked copies of one
                sample, a target that holds a mask or boxes per image scores them
                with that sample's.
            forward_args: The model's other forward arguments, passed on every
                forward (the probe's included) after ``x``: a tuple (positional),
                a dict (keyword) or :class:`convlens.ForwardArgs`. Where
                :class:`ScoreCAM` runs masked copies of one sample, a tensor
                among them whose first dimension is the batch size follows
                that sample.

        Returns:
            The maps, raw maps, scores and targets.

        Raises:
            InvalidArgumentError: A target out of range, a target list of the
                wrong length, a layer without spatial output (or channels last
                without ``reshape="channels_last"``, tokens without
                ``reshape="vit"``), or a layer the score does not depend on.
            AmbiguousLayerError: The bare name of a layer that runs more than once.
            InvalidTypeError: ``x`` not a tensor or a list of images, or a target of the wrong type.
            UnsupportedModelError: A quantized model (no gradients) or a model on the meta device.
            DeviceMismatchError: The model and the input (or ``forward_args``) on different devices.
        """
        shape = batch_shape(x)
        extra = as_forward_args(forward_args)
        check_runnable(
            self._module, x, who=type(self).__name__, gradients=self.needs_gradient, forward_args=extra
        )
        require_autograd(type(self).__name__)
        probe = self._probe(x, shape, extra)
        fixed = check_target(target, shape[0], probe.output_shape)
        with preserved_modes(self._module, training=False), grad_mode_restored():
            leaf, output = self._forward(x, extra, probe)
            targets, scores = target_scores(output, target, fixed, shape[0])
            gradient = None
            if self.needs_gradient:
                gradient = self._gradient(scores, leaf)
            torch.set_grad_enabled(False)
            activation = self.layout.apply(_dequantized(leaf.detach()))
            gradient = None if gradient is None else self.layout.apply(gradient)
            self._check_layer_shape(tuple(activation.shape), shape)
            work = torch.promote_types(activation.dtype, torch.float32)
            context = CAMContext(cam=self, x=x, target=target, targets=targets, forward_args=extra)
            raw = self.raw_map(activation.to(work), None if gradient is None else gradient.to(work), context)
        return CAMResult(
            maps=_upsample_normalize(raw, shape[2:]),
            raw=raw.detach(),
            scores=scores.detach(),
            targets=targets,
            layer=self.ref.key,
        )

    def _gradient(self, scores: Tensor, leaf: Tensor) -> Tensor:
        """``d sum(scores) / d leaf``; an error where the score does not depend on the layer."""
        grad = None
        if scores.requires_grad:
            (grad,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
        if grad is None:
            raise InvalidArgumentError(
                f"the score does not depend on layer {self.ref.key!r}: no gradient reaches it (a detection "
                "target that matches no predicted box scores a constant 0)."
            )
        return grad

    def _probe(self, x: Images, shape: tuple[int, ...], extra: ForwardArgs) -> Probe:
        """The meta pass (cached per input signature), with every check it allows before real work."""
        probe = self._prober((x, *extra.args), extra.kwargs)
        probe.check()
        calls = probe.count(self.ref.name) or 0
        if probe.complete:
            self._check_calls(calls)
        elif calls > 1 and self.ref.call is None:
            call_index(self.ref, calls)  # ambiguous whatever comes after the failure
        seen = probe.seen.get(self.ref.name, ())
        index = self.ref.call or 0
        if index < len(seen):
            found = seen[index].shape
            if found is None:
                raise InvalidArgumentError(f"layer {self.ref.key!r} returns no tensor to explain.")
            if self.layout.part not in (None, 0):  # the probe saw the first tensor: checked after the forward
                return probe
            if self.layout.reshapes:
                try:  # the reshape on a meta twin; one that needs values is checked after
                    found = tuple(self.layout.apply(torch.empty(found, device="meta")).shape)
                except Exception:  # noqa: BLE001 - checked again on the real activation
                    return probe
            self._check_layer_shape(found, shape)
        return probe

    def _check_layer_shape(self, shape: tuple[int, ...], batch: tuple[int, ...]) -> None:
        """The map must be ``(N, C, *spatial)`` with as many spatial dimensions as the input."""
        spatial = len(batch) - 2
        reshaped = self.layout.reshapes
        if len(shape) >= 3 and len(shape) - 2 == spatial and shape[0] == batch[0]:
            if not reshaped and (features := channels_last_hint(self.ref.module, shape)) is not None:
                raise InvalidArgumentError(
                    f"{type(self).__name__} needs channels first (N, C, H, W); {self.ref.key!r} gives {shape}, "
                    f"channels last: a {features} in it computes {shape[-1]} features along the last "
                    'dimension (as in a Swin or ConvNeXt stage). Pass reshape="channels_last".'
                )
            return
        where = f"after {self.layout.describe()} " if reshaped else ""
        hint = (
            ' That looks like tokens (N, L, C): pass reshape="vit" (a class token and register tokens '
            "before a square grid, or the grid alone), or a callable to (N, C, H, W)."
            if len(shape) == 3 and spatial == 2 and not reshaped
            else " Pick a convolutional layer, e.g. the last conv block, or pass reshape= a callable to "
            '(N, C, *spatial) (presets: "vit", "channels_last").'
        )
        raise InvalidArgumentError(
            f"{type(self).__name__} needs a layer with spatial output (N, C, H, W); {self.ref.key!r} gives "
            f"{where}{shape} for an input of shape {batch} ({spatial} spatial dimensions).{hint}"
        )

    def _check_calls(self, calls: int) -> None:
        """The layer must run, and a reused one must be named per call (``name#i``)."""
        check_ran(self.ref, calls, model=type(self._module).__name__)

    def _forward(self, x: Images, extra: ForwardArgs, probe: Probe) -> tuple[Tensor, Any]:
        """One forward, autograd off until the layer (:func:`convlens.core.leaf.forward_with_leaf`)."""
        return forward_with_leaf(
            self._module,
            self.ref,
            self.layout,
            x,
            extra,
            gradient=self.needs_gradient,
            rewritten=probe.rewritten,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CAMContext:
    """What a gradient-free method may need besides the activation.

    Attributes:
        cam: The CAM object (its model and layer).
        x: The input batch.
        target: The target as given.
        targets: The class indices used, or None for a callable target.
        forward_args: The model's other forward arguments.
    """

    cam: GradCAM
    x: Images
    target: Target
    targets: Tensor | None
    forward_args: ForwardArgs = dataclasses.field(default_factory=lambda: NO_ARGS)

    def score(self, output: Any) -> Tensor:
        """Each sample's score in ``output`` (the model's output for ``x``), for the same targets."""
        if self.targets is None:
            return callable_scores(self.target, output, len(self.x))  # type: ignore[arg-type]
        return class_scores(output, self.targets)


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++: pixel-wise weights from second and third powers of the gradient.

    ``alpha = g^2 / (2 g^2 + sum_ij(A) g^3)``, ``w_k = sum_ij alpha relu(g)``
    (the closed form for an exponential of the score, as in the paper).

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4))
        >>> GradCAMPlusPlus(net, "1")(torch.randn(2, 1, 8, 8)).maps.shape
        torch.Size([2, 8, 8])

    References:
        Chattopadhyay et al., WACV 2018. https://arxiv.org/abs/1710.11063
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """``sum_ij alpha_ij relu(g_ij)`` per channel."""
        spatial = tuple(range(2, gradient.dim()))
        g2, g3 = gradient.pow(2), gradient.pow(3)
        denominator = 2 * g2 + activation.sum(dim=spatial, keepdim=True) * g3
        alpha = torch.where(gradient != 0, g2 / torch.where(denominator != 0, denominator, 1), 0)
        return (alpha * F.relu(gradient)).sum(dim=spatial, keepdim=True)


class XGradCAM(GradCAM):
    """XGrad-CAM: ``w_k = sum_ij(A_k g_k) / sum_ij(A_k)``.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4))
        >>> XGradCAM(net, "1")(torch.randn(2, 1, 8, 8)).raw.shape
        torch.Size([2, 6, 6])

    References:
        Fu et al., BMVC 2020. https://arxiv.org/abs/2008.02312
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Activation-weighted mean of the gradient per channel."""
        spatial = tuple(range(2, gradient.dim()))
        total = activation.sum(dim=spatial, keepdim=True)
        return (activation * gradient).sum(dim=spatial, keepdim=True) / torch.where(total != 0, total, 1)


class LayerCAM(GradCAM):
    """LayerCAM: each position weighted by its own positive gradient, ``relu(g) A``.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4))
        >>> LayerCAM(net, "0")(torch.randn(1, 1, 8, 8)).maps.shape
        torch.Size([1, 8, 8])

    References:
        Jiang et al., IEEE TIP 2021. https://doi.org/10.1109/TIP.2021.3089943
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Element-wise ``relu(gradient)``."""
        return F.relu(gradient)


class ScoreCAM(GradCAM):
    """Score-CAM: weight each channel by the score of the input masked by it.

    Each channel, upsampled to the input size and min-max scaled to [0, 1],
    masks the input; the channel weights are the softmax over channels of
    the target's scores for the masked inputs. No gradient; the masked inputs
    run in batches of ``chunk_size``.

    Args:
        model: As :class:`GradCAM`.
        layer: As :class:`GradCAM`.
        chunk_size: Masked inputs per forward.
        reshape: As :class:`GradCAM`.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4))
        >>> ScoreCAM(net, "1", chunk_size=1)(torch.randn(2, 1, 8, 8), target=0).maps.shape
        torch.Size([2, 8, 8])

    References:
        Wang et al., CVPR Workshops 2020. https://arxiv.org/abs/1910.01279
    """

    needs_gradient = False

    def __init__(
        self, model: nn.Module, layer: LayerSpec, *, chunk_size: int = 32, reshape: ReshapeSpec = None
    ) -> None:
        self.chunk_size = check_int("chunk_size", chunk_size, 1)
        super().__init__(model, layer, reshape=reshape)

    def raw_map(self, activation: Tensor, gradient: Tensor | None, context: CAMContext) -> Tensor:
        """``relu(sum_k softmax_k(score(x * mask_k)) A_k)``.

        The masked copies of sample ``i`` run with the rows ``i`` of the batched tensors among
        ``forward_args`` (:meth:`convlens.ForwardArgs.take`), and are scored by sample ``i``'s
        target: a :class:`~convlens.core.targets.ScoreTarget` that holds something per
        sample (a mask or boxes per image) takes its row ``i``
        (:meth:`~convlens.core.targets.ScoreTarget.take`); a plain callable is called on
        the masked copies as it is.
        """
        x = context.x
        size = batch_shape(x)[2:]
        masks = min_max(_resize(activation, size), dims=tuple(range(2, 2 + len(size))))  # (N, K, *spatial)
        n, k = masks.shape[:2]
        scores = torch.empty(n, k, dtype=activation.dtype, device=activation.device)
        for i in range(n):
            for start in range(0, k, self.chunk_size):
                chunk = masks[i, start : start + self.chunk_size]
                masked: Images = (
                    x[i : i + 1] * chunk.unsqueeze(1).to(x.dtype)
                    if isinstance(x, Tensor)
                    else [x[i] * mask.to(x[i].dtype) for mask in chunk]
                )
                rows = torch.full((len(chunk),), i, dtype=torch.int64)
                with internal():
                    out = context.forward_args.take(rows, batch=n).call(self._module, masked)
                index = None if context.targets is None else context.targets[i : i + 1].expand(len(chunk))
                target = take_target(context.target, rows)  # a mask or boxes per image follow sample i
                sub = CAMContext(cam=self, x=masked, target=target, targets=index)
                scores[i, start : start + len(chunk)] = sub.score(out).to(scores.dtype)
        weights = torch.softmax(scores, dim=1).view(n, k, *([1] * (activation.dim() - 2)))
        return F.relu((weights * activation).sum(dim=1))


class EigenCAM(GradCAM):
    """Eigen-CAM: the activation's first principal component; no gradient, no target.

    Per sample, the ``(positions, channels)`` activation matrix is centred and
    projected on its first right singular vector; the sign is chosen so the
    projection agrees with the channel mean, then negative values are cut.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4))
        >>> EigenCAM(net, "1")(torch.randn(2, 1, 8, 8)).maps.shape
        torch.Size([2, 8, 8])

    References:
        Muhammad and Yeasin, IJCNN 2020. https://arxiv.org/abs/2008.00299
    """

    needs_gradient = False

    def raw_map(self, activation: Tensor, gradient: Tensor | None, context: CAMContext) -> Tensor:
        """First-principal-component projection per sample, ``relu``-ed."""
        n, k = activation.shape[:2]
        matrix = activation.reshape(n, k, -1).transpose(1, 2)  # (N, positions, K)
        centred = matrix - matrix.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = (centred @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)  # (N, positions)
        mean = matrix.mean(dim=2)
        agree = ((projection - projection.mean(1, keepdim=True)) * (mean - mean.mean(1, keepdim=True))).sum(1)
        sign = torch.where(agree < 0, -1.0, 1.0).to(projection.dtype).unsqueeze(1)
        return F.relu(projection * sign).reshape(n, *activation.shape[2:])


# -- helpers ---------------------------------------------------------------------


def batch_shape(x: object) -> tuple[int, ...]:
    """``(N, C, *spatial)`` of a batch, or of a list of ``N`` images ``(C, *spatial)`` of one size.

    Raises:
        InvalidTypeError: Neither a batch tensor nor a non-empty list of image tensors.
        InvalidArgumentError: Images of different sizes (their maps could not share one tensor).

    Example:
        >>> import torch
        >>> batch_shape([torch.zeros(3, 32, 40), torch.zeros(3, 32, 40)])
        (2, 3, 32, 40)
    """
    check_inputs((x,))
    if isinstance(x, Tensor):
        if x.dim() >= 2:
            return tuple(x.shape)
    elif isinstance(x, list | tuple) and x and all(isinstance(t, Tensor) and t.dim() >= 1 for t in x):
        shapes = [tuple(t.shape) for t in x]
        if len(set(shapes)) > 1:
            raise InvalidArgumentError(
                f"the images of one call must share a size, so that their maps share one tensor; got "
                f"{', '.join(map(str, shapes))}. Explain images of different sizes in separate calls."
            )
        return (len(x), *shapes[0])
    got = tuple(x.shape) if isinstance(x, Tensor) else describe(x)
    raise InvalidTypeError(
        f"x must be a batch tensor (N, ...) or a list of images (C, H, W) (as torchvision's detectors "
        f"take); got {got}."
    )


def _dequantized(tensor: Tensor) -> Tensor:
    """A quantized activation's float values (gradient-free methods read quantized models)."""
    return tensor.dequantize() if tensor.is_quantized else tensor


def _resize(raw: Tensor, size: Sequence[int]) -> Tensor:
    """``(N, K, *spatial)`` resized to ``size`` (linear/bilinear/trilinear, ``align_corners=False``)."""
    dims = raw.dim() - 2
    if dims != len(size) or dims not in _MODES:
        raise InvalidArgumentError(
            f"cannot upsample a {dims}-D map to an input with {len(size)} spatial dimensions {tuple(size)}."
        )
    if tuple(raw.shape[2:]) == tuple(size):
        return raw
    return F.interpolate(raw, size=tuple(size), mode=_MODES[dims], align_corners=False)


def min_max(maps: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Scale each map to [0, 1] over ``dims``; a flat map becomes zeros (shared with saliency).

    Flat means flat relative to its scale: a range below ``1e-5`` of the map's
    largest magnitude is rounding (the bilinear upsampling of a 1x1 map), not signal.

    Example:
        >>> import torch
        >>> min_max(torch.tensor([[1.0, 3.0], [2.0, 2.0 + 1e-7]]), dims=(1,)).tolist()
        [[0.0, 1.0], [0.0, 0.0]]
    """
    low = maps.amin(dim=dims, keepdim=True)
    high = maps.amax(dim=dims, keepdim=True)
    span = high - low
    varies = span > _FLAT * torch.maximum(low.abs(), high.abs())
    return torch.where(varies, (maps - low) / torch.where(varies, span, 1), 0)


def _upsample_normalize(raw: Tensor, size: Sequence[int]) -> Tensor:
    up = _resize(raw.detach().float().unsqueeze(1), size).squeeze(1)
    return min_max(up, dims=tuple(range(1, up.dim())))
