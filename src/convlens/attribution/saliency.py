"""Gradient saliency: vanilla gradients, guided backpropagation and guided Grad-CAM.

One forward on a copy of the input that requires grad, then
:func:`torch.autograd.grad` of the target score to that copy only: the
caller's input keeps its ``requires_grad`` and ``.grad``, no parameter
gradient is computed and nothing is written to any ``.grad``. The model runs
in eval mode (every flag restored after), and nothing outlives the call.

Guided backpropagation changes the backward of every ReLU without touching a
module: during the forward, a :class:`torch.overrides.TorchFunctionMode`
(thread-local, entered only for the call and exited even when the forward
raises) routes ``F.relu`` (so ``nn.ReLU``), ``torch.relu``, ``torch.relu_``,
``F.relu_``, ``Tensor.relu`` and ``Tensor.relu_`` through an autograd
function with the same forward whose backward lets only positive gradients
through at positive inputs. Only ReLU is guided: ``relu6``, ``hardtanh``,
``leaky_relu`` and other activations keep their ordinary backward.

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> from convlens.attribution.saliency import GuidedBackprop, Saliency
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 10))
    >>> out = Saliency(net)(torch.randn(2, 3, 16, 16), target=[3, 7])
    >>> out.gradients.shape, out.maps.shape, out.targets.tolist()
    (torch.Size([2, 3, 16, 16]), torch.Size([2, 16, 16]), [3, 7])
    >>> GuidedBackprop(net)(torch.randn(1, 3, 16, 16)).maps.dtype
    torch.float32

References:
    Simonyan et al., "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR 2014 workshop.
    https://arxiv.org/abs/1312.6034

    Springenberg et al., "Striving for Simplicity: The All Convolutional
    Net", ICLR 2015 workshop. https://arxiv.org/abs/1412.6806

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017. https://arxiv.org/abs/1610.02391
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.overrides import TorchFunctionMode

from convlens.attribution.cam import GradCAM, Images, batch_shape, min_max
from convlens.core import display
from convlens.core.checks import require_autograd
from convlens.core.inputs import ForwardArgs, ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import LayerSpec, unwrap
from convlens.core.layouts import ReshapeSpec
from convlens.core.probe import Prober, require_hooks
from convlens.core.recorder import grad_mode_restored, internal, preserved_modes
from convlens.core.targets import Target, check_target, target_scores
from convlens.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["GuidedBackprop", "GuidedGradCAM", "Saliency", "SaliencyResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SaliencyResult:
    """What a saliency call returns; every tensor is on the model's device, free of the graph.

    Attributes:
        gradients: ``(N, C, *spatial)`` the (guided) gradient of the score with
            respect to the input; for :class:`GuidedGradCAM`, the guided
            gradient times the Grad-CAM map ``cam``.
        maps: ``(N, *spatial)`` float32 in [0, 1]: the largest ``|gradients|``
            over channels, min-max scaled per sample; a flat map is all zeros.
        scores: ``(N,)`` the scores explained (the raw model output, a logit,
            for class targets).
        targets: ``(N,)`` int64 class indices used, or None for a callable target.
        cam: ``(N, *spatial)`` the Grad-CAM map that weighted the guided
            gradient (:class:`GuidedGradCAM` only; None otherwise).
    """

    gradients: Tensor
    maps: Tensor
    scores: Tensor
    targets: Tensor | None
    cam: Tensor | None = None

    def _repr_html_(self) -> str:
        """The maps as small grey pictures (white: most salient), each with its target and score, for Jupyter.

        At most ``MAX_ITEMS`` (32) maps are drawn, a line says how many were left out.

        Example:
            >>> import torch
            >>> result = SaliencyResult(gradients=torch.randn(2, 3, 8, 8), maps=torch.rand(2, 8, 8),
            ...                         scores=torch.tensor([1.5, 2.0]), targets=torch.tensor([3, 7]))
            >>> page = result._repr_html_()
            >>> page.count("<img"), "target 7" in page
            (2, True)
        """
        what = "guided Grad-CAM" if self.cam is not None else "largest |gradient| over channels"
        return display.map_gallery("SaliencyResult", what, self.maps, self.scores, self.targets, cmap="gray")


class Saliency:
    """Vanilla gradient saliency: ``d score / d input``.

    Args:
        model: Any ``nn.Module`` whose output is ``(N, classes)`` scores (or
            anything, with a callable ``target``).

    Shape:
        Input ``(N, C, H, W)`` (1-D and 3-D inputs work alike); ``gradients``
        like the input, ``maps`` ``(N, H, W)``.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> from convlens.attribution.saliency import Saliency
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(72, 5))
        >>> out = Saliency(net)(torch.randn(3, 1, 8, 8))
        >>> out.gradients.shape, out.maps.shape, out.scores.shape, out.targets.shape
        (torch.Size([3, 1, 8, 8]), torch.Size([3, 8, 8]), torch.Size([3]), torch.Size([3]))
        >>> Saliency(net)(torch.randn(1, 1, 8, 8), target=5)
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: target 5 is out of range: the model gives 5 scores per sample (0 to 4).

    References:
        Simonyan et al., ICLR 2014 workshop. https://arxiv.org/abs/1312.6034
    """

    #: Whether ReLUs pass only positive gradients at positive inputs.
    guided: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._module = unwrap(model)
        if self.guided:
            require_hooks(self._module, type(self).__name__)
        self._prober = Prober(self._module)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    def __call__(
        self, x: Images, target: Target = None, *, forward_args: ForwardArgsLike = None
    ) -> SaliencyResult:
        """Explain ``target`` for the inputs ``x``.

        Args:
            x: A floating-point batch ``(N, C, ...)`` on the model's device, or
                a list of images ``(C, H, W)`` of one size for a model that takes
                a list (torchvision's detectors). It is not modified: its
                ``requires_grad`` and ``.grad`` stay as they are.
            target: None for each sample's predicted class (found in the same
                forward), a class index for all, one per sample (list or
                integer tensor), or a callable mapping the model output to one
                score per sample.
            forward_args: The model's other forward arguments, passed on every
                forward (the probe's included) after ``x``: a tuple (positional),
                a dict (keyword) or :class:`convlens.ForwardArgs`.

        Returns:
            The gradients, maps, scores and targets.

        Raises:
            InvalidTypeError: ``x`` not a floating-point batch tensor (or list
                of images), or a target of the wrong type.
            InvalidArgumentError: A target out of range, a target list of the
                wrong length, or a score that does not depend on the input.
            UnsupportedModelError: A quantized model (no gradients) or a model on the meta device.
            DeviceMismatchError: The model and the input (or ``forward_args``) on different devices.
        """
        n = _check_input(x)
        extra = as_forward_args(forward_args)
        check_runnable(self._module, x, who=type(self).__name__, gradients=True, forward_args=extra)
        require_autograd(type(self).__name__)
        probe = self._prober((x, *extra.args), extra.kwargs)
        probe.check()
        fixed = check_target(target, n, None if _decided_later(target) else probe.output_shape)
        return self._explain(x, target, fixed, extra)

    def _explain(self, x: Images, target: Target, fixed: Tensor | None, extra: ForwardArgs) -> SaliencyResult:
        """The forward and backward, for an input and target already validated."""
        images = [x] if isinstance(x, Tensor) else list(x)
        # An inference tensor cannot require grad itself; in-place ops on the input hit a clone.
        leaves = [image.detach().clone().requires_grad_() for image in images]
        with preserved_modes(self._module, training=False), grad_mode_restored():
            torch.set_grad_enabled(True)
            given: Images = leaves[0].clone() if isinstance(x, Tensor) else [leaf.clone() for leaf in leaves]
            with _GuidedReLU() if self.guided else contextlib.nullcontext(), internal():
                output = extra.call(self._module, given)
            targets, scores = target_scores(
                output, target, fixed, len(leaves[0]) if isinstance(x, Tensor) else len(leaves)
            )
            if not scores.requires_grad:
                raise InvalidArgumentError("the score does not depend on the input: no gradient reaches it.")
            found = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
        if any(g is None for g in found):
            raise InvalidArgumentError("the score does not depend on the input: no gradient reaches it.")
        gradient = found[0] if isinstance(x, Tensor) else torch.stack(found)
        return SaliencyResult(
            gradients=gradient.detach(), maps=_channel_max(gradient), scores=scores.detach(), targets=targets
        )


class GuidedBackprop(Saliency):
    """Guided backpropagation: ReLUs pass only positive gradients at positive inputs.

    The backward of every ReLU in the forward becomes
    ``grad_in = grad_out * (input > 0) * (grad_out > 0)``; the forward is
    unchanged. ReLUs are caught wherever they are written, ``nn.ReLU``
    (in-place or not), ``F.relu``, ``torch.relu`` or ``x.relu()`` inside a
    custom ``forward``, without replacing or hooking any module. Only ReLU is
    guided; other activations keep their ordinary backward.

    Args:
        model: As :class:`Saliency`.

    Shape:
        As :class:`Saliency`.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> from convlens.attribution.saliency import GuidedBackprop
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(72, 5))
        >>> out = GuidedBackprop(net)(torch.randn(2, 1, 8, 8), target=torch.tensor([0, 4]))
        >>> out.gradients.shape, out.maps.shape, out.targets.tolist()
        (torch.Size([2, 1, 8, 8]), torch.Size([2, 8, 8]), [0, 4])

    References:
        Springenberg et al., ICLR 2015 workshop. https://arxiv.org/abs/1412.6806
    """

    guided = True


class GuidedGradCAM:
    """Guided Grad-CAM: the guided gradient weighted by the Grad-CAM map.

    ``gradients = guided_gradient * cam`` where ``cam`` is the
    :class:`~convlens.attribution.cam.GradCAM` map of ``layer``, upsampled to the input
    and min-max scaled; ``maps`` as :class:`Saliency`. Both passes explain
    the same targets (with ``target=None``, the classes Grad-CAM found).

    Args:
        model: As :class:`Saliency`.
        layer: The Grad-CAM layer, by name or module (see
            :class:`~convlens.attribution.cam.GradCAM`).
        reshape: How the layer's output becomes ``(N, C, *spatial)``
            (``"vit"``, ``"channels_last"``, a callable or :class:`convlens.Layout`),
            passed to the Grad-CAM part (see :class:`~convlens.attribution.cam.GradCAM`).

    Raises:
        LayerNotFoundError: No such layer (the message names the nearest).
        InvalidArgumentError: An unknown ``reshape`` preset.
        InvalidTypeError: ``reshape`` is not a preset, a callable or a Layout.

    Shape:
        Input ``(N, C, H, W)``; ``gradients`` like the input, ``maps`` and
        ``cam`` ``(N, H, W)``.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> from convlens.attribution.saliency import GuidedGradCAM
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
        >>> out = GuidedGradCAM(net, "1")(torch.randn(2, 3, 8, 8), target=1)
        >>> out.gradients.shape, out.maps.shape, out.cam.shape, out.targets.tolist()
        (torch.Size([2, 3, 8, 8]), torch.Size([2, 8, 8]), torch.Size([2, 8, 8]), [1, 1])

    References:
        Selvaraju et al., ICCV 2017. https://arxiv.org/abs/1610.02391
    """

    def __init__(self, model: nn.Module, layer: LayerSpec, *, reshape: ReshapeSpec = None) -> None:
        self.model = model
        self.gradcam = GradCAM(model, layer, reshape=reshape)
        self.guided_backprop = GuidedBackprop(model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, layer={self.gradcam.ref.key!r})"

    def __call__(
        self, x: Images, target: Target = None, *, forward_args: ForwardArgsLike = None
    ) -> SaliencyResult:
        """Explain ``target`` for the inputs ``x``.

        Args:
            x: As :meth:`Saliency.__call__`.
            target: As :meth:`Saliency.__call__`.
            forward_args: The model's other forward arguments, passed on every
                forward of both passes (see :meth:`Saliency.__call__`).

        Returns:
            The weighted guided gradients, their maps, the Grad-CAM maps
            (``cam``), scores and targets.

        Raises:
            InvalidTypeError: ``x`` not a floating-point batch tensor, or a
                target of the wrong type.
            InvalidArgumentError: As :meth:`Saliency.__call__` and
                :meth:`~convlens.attribution.cam.GradCAM.__call__`.
            UnsupportedModelError: A quantized model (no gradients) or a model on the meta device.
            DeviceMismatchError: The model and the input (or ``forward_args``) on different devices.
        """
        _check_input(x)
        extra = as_forward_args(forward_args)
        cam = self.gradcam(x, target, forward_args=extra)
        guided = self.guided_backprop._explain(x, target if cam.targets is None else None, cam.targets, extra)
        work = torch.promote_types(guided.gradients.dtype, torch.float32)
        product = guided.gradients.to(work) * cam.maps.to(work).unsqueeze(1)
        return SaliencyResult(
            gradients=product,
            maps=_channel_max(product),
            scores=cam.scores,
            targets=cam.targets,
            cam=cam.maps,
        )


# -- the guided ReLU ---------------------------------------------------------------


class _GuidedReLUFunction(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at positive inputs."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, inplace: bool) -> Tensor:
        ctx.positive = x > 0  # type: ignore[attr-defined]
        if inplace:
            ctx.mark_dirty(x)
            return torch.relu_(x)
        return torch.relu(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        keep = ctx.positive & (grad > 0)  # type: ignore[attr-defined]
        return torch.where(keep, grad, torch.zeros_like(grad)), None


_RELU = frozenset([torch.relu, Tensor.relu])
_RELU_INPLACE = frozenset([torch.relu_, Tensor.relu_])  # F.relu_ is torch.relu_


class _GuidedReLU(TorchFunctionMode):
    """While active (this thread only), every ReLU that autograd records is guided."""

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.relu:
            inplace = bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
        elif func in _RELU or func in _RELU_INPLACE:
            inplace = func in _RELU_INPLACE
        else:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input", kwargs.get("self"))
        if not (isinstance(x, Tensor) and torch.is_grad_enabled() and x.requires_grad):
            return func(*args, **kwargs)  # nothing to guide
        return _GuidedReLUFunction.apply(x, inplace)


# -- helpers ------------------------------------------------------------------------


def _check_input(x: object) -> int:
    """The batch size of a floating-point batch ``(N, C, ...)`` or list of images ``(C, ...)``."""
    shape = batch_shape(x)
    images = [x] if isinstance(x, Tensor) else list(x) if isinstance(x, list | tuple) else []
    if len(shape) < 3 or not all(t.is_floating_point() for t in images):
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else f"images {shape[1:]}"
        raise InvalidTypeError(
            f"x must be a floating-point batch tensor (N, C, ...) or a list of images (C, ...); got {got}."
        )
    return shape[0]


def _decided_later(target: Target) -> bool:
    """None and callables are resolved from the output; no shape is needed to check them."""
    return target is None or (callable(target) and not isinstance(target, Tensor))


def _channel_max(gradients: Tensor) -> Tensor:
    """``(N, C, *spatial)`` to ``(N, *spatial)`` float32: max over channels of ``|g|``, min-max per sample."""
    magnitude = gradients.detach().abs().amax(dim=1).float()
    return min_max(magnitude, dims=tuple(range(1, magnitude.dim())))
