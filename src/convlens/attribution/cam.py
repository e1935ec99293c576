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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.attribution.targets import Target, callable_scores, check_target, class_scores, target_scores
from convlens.core import display
from convlens.core.checks import check_int, check_ran, require_autograd
from convlens.core.layers import LayerSpec, call_index, resolve_layer, unwrap
from convlens.core.probe import Probe, Prober, check_inputs, require_hooks
from convlens.core.recorder import Recorder, grad_mode_restored, internal, preserved_modes
from convlens.core.values import first_tensor, with_first_tensor
from convlens.errors import (
    ConvlensError,
    InvalidArgumentError,
    InvalidTypeError,
)

__all__ = [
    "CAMResult",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "LayerCAM",
    "Reshape",
    "ScoreCAM",
    "Target",
    "XGradCAM",
]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
#: A map is flat when its range is below this fraction of its largest magnitude
#: (float32 rounding in the upsampling of a 1x1 map stays far below it).
_FLAT = 1e-5

#: What ``reshape=`` accepts: a function from the layer's output to ``(N, C, *spatial)``,
#: e.g. a vision transformer's tokens ``(N, 1 + H*W, C)`` to ``(N, C, H, W)``.
Reshape = Callable[[Tensor], Tensor]


@dataclass(frozen=True, slots=True, kw_only=True)
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
            anything, with a callable ``target``).
        layer: A layer with a spatial output ``(N, C, ...)``, by name
            (``"features.12"``, ``"layer4"``, ``"layer1.0.relu#1"``) or module.
        reshape: For a layer whose output is not ``(N, C, *spatial)``: a
            function mapping it there, applied alike to the activation and to
            its gradient (as pytorch-grad-cam's ``reshape_transform``), e.g.
            ``lambda t: t[:, 1:].reshape(t.shape[0], 14, 14, -1).permute(0, 3, 1, 2)``
            for a ViT-B/16's tokens (drop the class token, then a 14x14 grid).

    Raises:
        LayerNotFoundError: No such layer (the message names the nearest).
        InvalidTypeError: ``reshape`` is not callable.
        UnsupportedModelError: A TorchScript model (hooks cannot see inside it).

    Shape:
        Input ``(N, C_in, H, W)`` (1-D and 3-D convs work alike); ``maps``
        ``(N, H, W)``, ``raw`` ``(N, h, w)``.

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

    def __init__(self, model: nn.Module, layer: LayerSpec, *, reshape: Reshape | None = None) -> None:
        self.model = model
        self._module = unwrap(model)
        require_hooks(self._module, type(self).__name__)
        self.ref = resolve_layer(model, layer)
        if reshape is not None and not callable(reshape):
            raise InvalidTypeError(
                f"reshape must be a callable from the layer's output to (N, C, H, W); got {type(reshape).__name__}."
            )
        self.reshape = reshape
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

    def __call__(self, x: Tensor, target: Target = None) -> CAMResult:
        """Explain ``target`` for the inputs ``x``.

        Args:
            x: A batch of inputs on the model's device.
            target: None for each sample's predicted class (found in the same
                forward), a class index for all, one per sample (list or
                integer tensor), or a callable mapping the model output to one
                score per sample.

        Returns:
            The maps, raw maps, scores and targets.

        Raises:
            InvalidArgumentError: A target out of range, a target list of the
                wrong length, a layer without spatial output, or a layer the
                score does not depend on.
            AmbiguousLayerError: The bare name of a layer that runs more than once.
            InvalidTypeError: ``x`` not a tensor, or a target of the wrong type.
        """
        check_inputs((x,))
        if not isinstance(x, Tensor) or x.dim() < 2:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InvalidTypeError(f"x must be a batch tensor (N, ...); got {got}.")
        require_autograd(type(self).__name__)
        probe = self._probe(x)
        fixed = check_target(target, x.shape[0], probe.output_shape)
        with preserved_modes(self._module, training=False), grad_mode_restored():
            leaf, output = self._forward(x, probe)
            targets, scores = target_scores(output, target, fixed, x.shape[0])
            gradient = None
            if self.needs_gradient:
                (grad,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
                if grad is None:
                    raise InvalidArgumentError(
                        f"the score does not depend on layer {self.ref.key!r}: no gradient reaches it."
                    )
                gradient = grad
            torch.set_grad_enabled(False)
            activation = self._reshaped(leaf.detach())
            gradient = None if gradient is None else self._reshaped(gradient)
            self._check_layer_shape(tuple(activation.shape), x, reshaped=self.reshape is not None)
            work = torch.promote_types(activation.dtype, torch.float32)
            context = CAMContext(cam=self, x=x, target=target, targets=targets)
            raw = self.raw_map(activation.to(work), None if gradient is None else gradient.to(work), context)
        return CAMResult(
            maps=_upsample_normalize(raw, x),
            raw=raw.detach(),
            scores=scores.detach(),
            targets=targets,
            layer=self.ref.key,
        )

    def _probe(self, x: Tensor) -> Probe:
        """The meta pass (cached per input signature), with every check it allows before real work."""
        probe = self._prober((x,))
        probe.check()
        calls = probe.count(self.ref.name) or 0
        if probe.complete:
            self._check_calls(calls)
        elif calls > 1 and self.ref.call is None:
            call_index(self.ref, calls)  # ambiguous whatever comes after the failure
        seen = probe.seen.get(self.ref.name, ())
        index = self.ref.call or 0
        if index < len(seen):
            shape = seen[index].shape
            if shape is None:
                raise InvalidArgumentError(f"layer {self.ref.key!r} returns no tensor to explain.")
            if self.reshape is not None:
                try:  # the user's function on a meta twin; one that needs values is checked after
                    shape = tuple(self.reshape(torch.empty(shape, device="meta")).shape)
                except Exception:  # noqa: BLE001 - checked again on the real activation
                    return probe
            self._check_layer_shape(shape, x, reshaped=self.reshape is not None)
        return probe

    def _check_layer_shape(self, shape: tuple[int, ...], x: Tensor, *, reshaped: bool) -> None:
        """The map must be ``(N, C, *spatial)`` with as many spatial dimensions as the input."""
        spatial = x.dim() - 2
        if len(shape) >= 3 and len(shape) - 2 == spatial and shape[0] == x.shape[0]:
            if not reshaped and (features := _channels_last(self.ref.module, shape)) is not None:
                dims = ", ".join(str(d) for d in range(1, len(shape) - 1))
                raise InvalidArgumentError(
                    f"{type(self).__name__} needs channels first (N, C, H, W); {self.ref.key!r} gives {shape}, "
                    f"channels last: a {features} in it computes {shape[-1]} features along the last "
                    f"dimension (as in a Swin block). Pass reshape=lambda t: t.permute(0, "
                    f"{len(shape) - 1}, {dims})."
                )
            return
        where = "after reshape " if reshaped else ""
        hint = (
            " That looks like tokens (N, L, C): pass reshape= a callable to (N, C, H, W), e.g. "
            "reshape=lambda t: t[:, 1:].reshape(t.shape[0], 14, 14, -1).permute(0, 3, 1, 2) for a class "
            "token and a 14x14 grid."
            if len(shape) == 3 and spatial == 2 and not reshaped
            else " Pick a convolutional layer, e.g. the last conv block, or pass reshape= a callable to "
            "(N, C, *spatial)."
        )
        raise InvalidArgumentError(
            f"{type(self).__name__} needs a layer with spatial output (N, C, H, W); {self.ref.key!r} gives "
            f"{where}{shape} for an input of shape {tuple(x.shape)} ({spatial} spatial dimensions).{hint}"
        )

    def _reshaped(self, tensor: Tensor) -> Tensor:
        return tensor if self.reshape is None else self.reshape(tensor)

    def _check_calls(self, calls: int) -> None:
        """The layer must run, and a reused one must be named per call (``name#i``)."""
        check_ran(self.ref, calls, model=type(self._module).__name__)

    def _forward(self, x: Tensor, probe: Probe) -> tuple[Tensor, Any]:
        """One forward, autograd off until the layer; returns (activation leaf, model output)."""
        captured: list[Tensor] = []
        name, wanted = self.ref.name, self.ref.call or 0

        def keep(_name: str, call: int, output: Any) -> Any:
            tensor = first_tensor(output)
            if tensor is None:
                return None
            leaf = tensor.detach().requires_grad_(self.needs_gradient)
            captured.append(leaf)
            torch.set_grad_enabled(self.needs_gradient)  # record autograd from here on
            # Where a later op writes into the output in place, a clone flows on instead; a tuple
            # output keeps its other items.
            return with_first_tensor(output, leaf.clone() if probe.rewritten(name, call) else leaf)

        recorder = Recorder(self._module, {name: self.ref.module}, wanted={name: {wanted}}, keep=keep)
        torch.set_grad_enabled(False)
        with recorder.attached(), recorder.owned():
            output = self._module(x)
        self._check_calls(recorder.counts[name])  # again: the probe cannot see every forward whole
        if not captured:
            raise InvalidArgumentError(f"layer {self.ref.key!r} returns no tensor to explain.")
        return captured[0], output


@dataclass(frozen=True, slots=True)
class CAMContext:
    """What a gradient-free method may need besides the activation.

    Attributes:
        cam: The CAM object (its model and layer).
        x: The input batch.
        target: The target as given.
        targets: The class indices used, or None for a callable target.
    """

    cam: GradCAM
    x: Tensor
    target: Target
    targets: Tensor | None

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
        self, model: nn.Module, layer: LayerSpec, *, chunk_size: int = 32, reshape: Reshape | None = None
    ) -> None:
        self.chunk_size = check_int("chunk_size", chunk_size, 1)
        super().__init__(model, layer, reshape=reshape)

    def raw_map(self, activation: Tensor, gradient: Tensor | None, context: CAMContext) -> Tensor:
        """``relu(sum_k softmax_k(score(x * mask_k)) A_k)``."""
        x = context.x
        masks = min_max(_resize(activation, x.shape[2:]), dims=tuple(range(2, x.dim())))  # (N, K, H, W)
        n, k = masks.shape[:2]
        scores = torch.empty(n, k, dtype=activation.dtype, device=activation.device)
        for i in range(n):
            for start in range(0, k, self.chunk_size):
                chunk = masks[i, start : start + self.chunk_size].unsqueeze(1).to(x.dtype)
                masked = x[i : i + 1] * chunk
                with internal():
                    out = self._module(masked)
                index = None if context.targets is None else context.targets[i : i + 1].expand(len(chunk))
                sub = CAMContext(cam=self, x=masked, target=context.target, targets=index)
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


def _channels_last(layer: nn.Module, shape: tuple[int, ...]) -> str | None:
    """The kind of module that says the layer's output is channels last, if one does.

    A Linear or LayerNorm inside the layer (itself included) of width ``shape[-1]``,
    while dimension 1 has another size and no convolution there makes ``shape[1]``
    channels, means the output is ``(N, *spatial, C)`` (a Swin stage or its patch merging).
    """
    if shape[1] == shape[-1]:
        return None
    found = None
    for module in layer.modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.out_channels == shape[1]:
            return None
        if isinstance(module, nn.Linear) and module.out_features == shape[-1]:
            found = "Linear"
        elif isinstance(module, nn.LayerNorm) and module.normalized_shape[-1:] == (shape[-1],):
            found = found or "LayerNorm"
    return found


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


def _upsample_normalize(raw: Tensor, x: Tensor) -> Tensor:
    up = _resize(raw.detach().float().unsqueeze(1), x.shape[2:]).squeeze(1)
    return min_max(up, dims=tuple(range(1, up.dim())))
