"""Activation maximization: the input that a channel, a neuron or a class likes best.

The lecture's ``x* = argmax_x a^k`` by gradient ascent. An
:class:`ActivationMaximizer` ascends an :class:`~convlens.featureviz.objectives.Objective`
with Adam, on the pixels or on a 1/f-scaled spectrum, optionally squashed into
a value range and seen through small random jitter, scale and rotation.

Each step runs the model in eval mode with hooks on the objective's layers
only (and an ``anchor``'s); the forward stops right after the last of them (unless the objective
reads the model's output), and the gradient goes to the image parameters
only, through :func:`torch.autograd.grad`: no parameter gradient is computed
and no ``.grad`` of the model is written. Randomness comes from a
:class:`torch.Generator` seeded with ``seed``, so the global RNG is untouched
and the same seed gives the same image. The model is left as found (hooks,
parameters, buffers, training and ``requires_grad`` flags), also after an error.

Example:
    >>> import torch.nn as nn
    >>> from convlens.featureviz.maximize import ActivationMaximizer
    >>> from convlens.featureviz.objectives import channel, l1
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 3))
    >>> am = ActivationMaximizer(net, channel("1", 5) - 0.01 * l1(), input_shape=(1, 3, 16, 16), steps=8)
    >>> res = am.run()
    >>> res.image.shape, res.history.shape, res.values.shape
    (torch.Size([1, 3, 16, 16]), torch.Size([8]), torch.Size([1]))

References:
    Erhan et al., "Visualizing Higher-Layer Features of a Deep Network", 2009.
    Olah et al., "Feature Visualization", Distill 2017. https://distill.pub/2017/feature-visualization/
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, cast

import torch
from torch import Tensor, nn

from convlens.core import display
from convlens.core.checks import (
    check_choice,
    check_int,
    check_model,
    check_real,
    check_shape,
    require_autograd,
)
from convlens.core.inputs import ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import resolve_layer, unwrap
from convlens.core.probe import Prober, require_hooks
from convlens.core.recorder import grad_mode_restored, preserved_modes
from convlens.core.values import model_dtype_device
from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz import transforms as augment
from convlens.featureviz.algebra import Activations
from convlens.featureviz.anchor import Anchor
from convlens.featureviz.colour import NATURALNESS, check_naturalness, resolve_normalize, spectrum_deviation
from convlens.featureviz.forward import ObjectiveForward, check_channels_first, layer_shapes
from convlens.featureviz.objectives import Objective
from convlens.featureviz.param import check_start, parameterize
from convlens.featureviz.quality import (
    Quality,
    Transfer,
    check_reference,
    check_transfer,
    relative_to,
    stability_of,
    transfer_of,
)
from convlens.featureviz.recipe import (
    PARAMS,
    RECOMMENDED_PARAM,
    RECOMMENDED_TRANSFORMS,
    Param,
    TransformName,
    activation_part,
    check_range,
    check_transforms,
    input_layout,
    unit_features,
)

__all__ = [
    "NATURALNESS",
    "NATURAL_DECAY",
    "RECOMMENDED_PARAM",
    "RECOMMENDED_TRANSFORMS",
    "ActivationMaximizer",
    "MaximizationResult",
    "Normalize",
    "Param",
    "TransformName",
]

#: Picture space: an ImageNet preset's name or per-channel ``(mean, std)``.
Normalize = Literal["imagenet", "lecture"] | tuple[float | Sequence[float], float | Sequence[float]]
#: The decay of the photographs' Fourier amplitude (their power spectrum falls as f^-2.53,
#: scripts/natural_spectrum.py), the fft's default decay_power for pictures.
NATURAL_DECAY = 1.25
#: Adam's default learning rate per parameterization (a phase is in radians).
_LR = MappingProxyType({"pixel": 0.05, "fft": 0.05, "maco": 0.1})


@dataclass(frozen=True, slots=True, kw_only=True)
class MaximizationResult:
    """What an activation maximization returns; tensors on the model's device, free of the graph.

    Attributes:
        image: The optimized model input, before the random augmentations,
            shape ``input_shape`` (one image per sample), the model's dtype.
        history: ``(steps,)`` float32: at step ``i``, the objective of the
            image as it was before that step's update, seen through that step's
            augmentations; the mean over the batch when it holds several images.
        values: ``(N,)`` float32, each image's objective at the end,
            evaluated on ``image`` without augmentation.
        value: ``values.mean()`` as a float (the objective of the final image
            for a batch of one).
        objective: The objective that was maximized.
        picture: With ``normalize``, the optimized picture in [0, 1] RGB,
            ``(N, C, H, W)`` float32 (``image`` is ``(picture - mean) / std``);
            None without ``normalize``.
        mask: Where the picture matters (MACO's importance): the magnitude of the optimized
            loss's gradient with respect to the picture (the image without ``normalize``): the
            objective's, and with an ``anchor`` the pull towards the start too (where an
            accentuation changed the picture); not the ``naturalness`` penalty's. Summed over
            colour channels and accumulated over every step, divided by each picture's maximum:
            ``(N, 1, *spatial)`` float32 in [0, 1]. Draw it as the picture's transparency
            (:func:`convlens.render.masked`).
        quality: The numbers that say how much to trust each picture (:class:`~convlens.featureviz.quality.Quality`):
            the activation reached relative to ``reference``, the stability across ``seeds``, the
            transfer to a second network; each None unless asked for.
    """

    image: Tensor
    history: Tensor
    values: Tensor
    value: float
    objective: Objective
    picture: Tensor | None = None
    mask: Tensor | None = None
    quality: Quality = field(default_factory=Quality)

    def _repr_html_(self) -> str:
        """The optimized pictures as small thumbnails, each with its final objective value, for Jupyter.

        ``picture`` is drawn when there is one (it is in [0, 1]), else
        ``image``, each stretched to [0, 1] (min-max) unless already inside it.
        At most ``MAX_ITEMS`` (32) are drawn, a line says how many were left out.

        Example:
            >>> import torch.nn as nn
            >>> from convlens.featureviz.objectives import channel
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            >>> res = ActivationMaximizer(net, channel("1", 2), input_shape=(2, 3, 12, 12), steps=2).run()
            >>> page = res._repr_html_()
            >>> page.count("<img"), "2 images of 3x12x12" in page
            (2, True)
        """
        pictures = self.image if self.picture is None else self.picture
        n = int(pictures.shape[0])
        shown = display.cap(n)
        cells = []
        for i in range(shown):
            value = display.number(float(self.values[i]))
            tag = display.image_tag(display.picture(pictures[i]), alt=f"image {i}, value {value}")
            trust = self.quality.describe(i)
            cells.append(display.cell(tag, f"#{i}", f"value {value}", *([trust] if trust else [])))
        drawn = "picture" if self.picture is not None else "image"
        scaled = "" if self.picture is not None else " (min-max scaled unless in [0, 1])"
        size = "x".join(map(str, pictures.shape[1:]))
        title = display.heading(
            "MaximizationResult",
            f"{self.objective!r}: {n} {drawn}{'s' if n != 1 else ''} of {size}{scaled}, "
            f"{self.history.numel()} steps, value {display.number(self.value)}",
        )
        return display.block(title, display.gallery(cells), display.left_out(shown, n, "images"))


class ActivationMaximizer:
    """Find the input that maximizes an objective by gradient ascent (Adam).

    Two spaces to optimize in. Without ``normalize`` the optimized tensor is
    the model's input itself (the digits, in ``value_range=(0, 1)``). With
    ``normalize`` it is a *picture* in [0, 1] RGB, and the model sees
    ``(picture - mean) / std``; the defaults are then the recipe that did best
    on a real pretrained network (``bench/featureviz.py``, EfficientNet-Lite0):
    a spectrum in decorrelated colours whose 1/f prior decays as photographs'
    amplitude does (``decay_power=1.25``), a penalty that keeps its power
    spectrum's shape a photograph's (``naturalness=20``), seen through
    Lucid's standard random jitter, scale and rotation, so that ``ActivationMaximizer(model, objective,
    input_shape=(1, 3, 224, 224), normalize="imagenet")`` gives a picture that
    another network recognizes, with a photograph's spectrum slope and no more
    colour than a photograph.

    Args:
        model: Any ``nn.Module``; run in eval mode (flags restored after).
        objective: What to maximize, e.g. ``channel("features.10", 5) - 1e-3 * l1()``.
            A batch optimizes one image per sample, each its own objective
            when the objective's index is one per sample
            (``channel("features.10", range(64))`` with ``input_shape=(64, 3, 224, 224)``).
        input_shape: The model input, batch first, ``(N, C, H, W)`` (1-D and
            3-D inputs work with ``param="pixel"`` or ``"fft"`` and no transforms).
            Each of the N images is optimized on its own (the loss is the sum
            of their objectives) unless the objective couples them
            (:func:`~convlens.featureviz.objectives.diversity`).
        steps: Adam steps.
        lr: Adam's learning rate; None: 0.05 for ``"pixel"`` and ``"fft"``,
            0.1 (radians) for ``"maco"``.
        seed: Seeds the initial image and the random transforms (a private
            :class:`torch.Generator`; the global RNG is untouched).
        normalize: None, ``"imagenet"`` (mean 0.485, 0.456, 0.406; std 0.229,
            0.224, 0.225), ``"lecture"`` (mean = std = 0.5, the seed's
            preprocessing) or ``(mean, std)`` (numbers or one per channel):
            optimize a picture in [0, 1] and show the model ``(picture - mean) / std``.
        param: ``"pixel"`` optimizes the values; ``"fft"`` a Fourier spectrum
            scaled by ``1 / max(f, 1 / max(H, W)) ** decay_power`` (``f`` in
            cycles per pixel), as in Lucid and Lucent; ``"maco"`` only the
            Fourier phase of a picture whose amplitude is fixed to the
            photographs' spectrum (needs ``normalize``; 1 or 3 channels, 2-D).
            None: ``"pixel"`` without ``normalize``, ``"fft"`` with it.
        decorrelate: Optimize 3-channel colours in Lucid's decorrelated colour
            space (the square root of ImageNet's colour correlation), mapped to
            RGB before the model sees them. None: True for 3-channel pictures
            (``normalize`` given), False otherwise. ``"maco"`` is always decorrelated.
        decay_power: The spectrum's decay exponent (``param="fft"``). None:
            Lucid's 1.0 without ``normalize``; with it 1.25, the decay of
            photographs' amplitude (their power spectrum falls as f^-2.5).
        naturalness: The weight of a penalty on the picture's power spectrum
            deviating in shape from photographs' ``f^-2.53``
            (:func:`~convlens.featureviz.colour.spectrum_deviation`: mean
            square log deviations in log-spaced bins and in rings, the contrast free),
            subtracted from the objective at every step; it is not part of
            ``history`` or ``values``. Without it the optimization adds the high
            frequencies a 1/f prior does not ask for. None: 20 for 2-D pictures
            made with ``param="fft"`` or ``"pixel"`` and no ``start``, else 0;
            above 0 it needs ``normalize`` and 2-D pictures.
        value_range: Without ``normalize``: ``(lo, hi)``: the image is
            ``lo + (hi - lo) * sigmoid(p)``, so every value stays in range (the
            digits need ``(0, 1)``, where 0 is "no ink"). None: unbounded.
        transforms: The random views each step sees, so that the result is
            robust rather than adversarial (2-D images only): ``"standard"``,
            Lucid's pad 12 px, jitter 8 px, scale 0.90 to 1.10, rotation -10 to
            10 degrees, jitter 4 px (pixel numbers at 224, scaled with the
            image); ``"maco"``, one random crop of 50% to 100% of the side
            resized to the input, plus noise of 0.02; True, the best of them
            (``"standard"``); False, none. None: False without ``normalize``,
            True with it.
        start: Start from this image rather than from noise, ``input_shape``: a picture in
            [0, 1] with ``normalize``, else the model's values (inside ``value_range`` when one is
            given); the first rendered image is it (up to 0.5% of the range at its ends). Not with
            ``param="maco"``. Copied: the caller's tensor is never written.
        anchor: With ``start``: stay close to the start's representation in a layer
            (:class:`~convlens.featureviz.anchor.Anchor`; feature accentuation, see
            :func:`~convlens.featureviz.accentuate.accentuate`).
        reference: The unit's top natural activation, a number or one per image: the result's
            ``quality.relative`` is the activation reached over it (the objective must hold one
            activation term; penalties such as ``l1`` are left out of it).
        seeds: Optimize from ``seed``, ``seed + 1``, ... this many times: the result's
            ``quality.stability`` is the mean cosine between the layer's features (averaged over
            positions) of the pictures of each pair of seeds. The images returned are the first seed's.
        transfer: A second network and each picture's target class
            (:class:`~convlens.featureviz.quality.Transfer`): the result's ``quality.transfer``
            is its probability of the target; checked with one forward before any work.
        forward_args: The model's other forward arguments, after the input: a tuple (positional),
            a dict (keyword) or :class:`convlens.ForwardArgs` for both; every forward gets them
            (the probe's included), ``model(image, *args, **kwargs)``. The optimized batch is
            ``input_shape[0]`` images at every step, so a tensor among them with that first
            dimension lines up with the images as it is; nothing is indexed or copied.

    Raises:
        LayerNotFoundError: A layer the objective reads that the model lacks
            (the message names the nearest), or that does not run.
        AmbiguousLayerError: The bare name of a layer that runs more than once.
        InvalidArgumentError: An option out of range or that does not fit the
            input (``"maco"`` without ``normalize``, ``decorrelate`` without 3
            channels), a ``start`` of another shape, out of range or not finite, an ``anchor``
            without a ``start``, a ``reference`` neither one number nor one per image or with
            no single activation term to compare, ``seeds < 1``, a ``transfer`` network that
            cannot score the pictures or targets out of its range, an objective index out of range for its layer (channels counted
            after the objective's ``reshape=``), or a layer whose output looks channels last
            ``(N, H, W, C)`` read by ``channel``/``neuron`` without ``reshape=``.
        InvalidTypeError: An argument of the wrong type.
        ShapeError: The model rejects an input of ``input_shape``.
        UnsupportedModelError: A quantized model (it gives no gradients: use the float model) or
            a model on the ``meta`` device (it holds no weights: load them first).
        DeviceMismatchError: A tensor of ``forward_args`` on another device than the model.

    Example:
        >>> import torch
        >>> from convlens.featureviz.objectives import class_logit
        >>> from convlens.models.zoo import digits_cnn
        >>> model = digits_cnn()
        >>> am = ActivationMaximizer(model, class_logit(3), input_shape=(1, 1, 28, 28), steps=30,
        ...                          value_range=(0, 1), seed=0)
        >>> res = am.run()
        >>> res.image.shape, int(model(res.image).argmax()), res.picture
        (torch.Size([1, 1, 28, 28]), 3, None)
        >>> bool(res.history[-1] > res.history[0])
        True

        In picture space, with the recommended recipe:

        >>> import torch.nn as nn
        >>> from convlens.featureviz.objectives import channel
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> am = ActivationMaximizer(net, channel("1", 2), input_shape=(1, 3, 32, 32), normalize="imagenet", steps=4)
        >>> am.param, am.transforms, am.decorrelate, am.decay_power, am.naturalness
        ('fft', 'standard', True, 1.25, 20.0)
        >>> res = am.run()
        >>> res.picture.shape, bool(0 <= res.picture.min() and res.picture.max() <= 1)
        (torch.Size([1, 3, 32, 32]), True)

        A model whose forward takes more than the image, and a channels-last stage:

        >>> class Scaled(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(3, 4, 3)
        ...     def forward(self, x: torch.Tensor, *, temperature: float) -> torch.Tensor:
        ...         return self.conv(x) / temperature
        >>> am = ActivationMaximizer(Scaled(), channel("conv", 1), input_shape=(1, 3, 8, 8), steps=2,
        ...                          forward_args={"temperature": 2.0})
        >>> am.run().image.shape
        torch.Size([1, 3, 8, 8])
        >>> swin_like = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8))  # (N, H, W, 3) to (N, H, W, 8)
        >>> ActivationMaximizer(swin_like, channel("1", 3), input_shape=(1, 6, 6, 3))
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: ActivationMaximizer reads channels at dimension 1 ... Pass reshape='channels_last' ...
        >>> am = ActivationMaximizer(swin_like, channel("1", 3, reshape="channels_last"), input_shape=(1, 6, 6, 3), steps=2)
        >>> am.run().values.shape
        torch.Size([1])

    References:
        Olah et al., "Feature Visualization", Distill 2017 (Lucid's ``fft``,
        colour decorrelation and standard transforms).
        Fel et al., "Unlocking Feature Visualization for Deep Network with
        MAgnitude Constrained Optimization", NeurIPS 2023. https://arxiv.org/abs/2306.06805
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        *,
        input_shape: Sequence[int],
        steps: int = 256,
        lr: float | None = None,
        seed: int = 0,
        normalize: Normalize | None = None,
        param: Param | None = None,
        decorrelate: bool | None = None,
        decay_power: float | None = None,
        naturalness: float | None = None,
        value_range: tuple[float, float] | None = None,
        transforms: bool | TransformName | None = None,
        forward_args: ForwardArgsLike = None,
        start: Tensor | None = None,
        anchor: Anchor | None = None,
        reference: float | Sequence[float] | Tensor | None = None,
        seeds: int = 1,
        transfer: Transfer | None = None,
    ) -> None:
        check_model(model)
        if not isinstance(objective, Objective):
            raise InvalidTypeError(
                f"objective must be a convlens Objective (e.g. objectives.channel('features.10', 5)); "
                f"got {type(objective).__name__}."
            )
        self.model = model
        self._module = unwrap(model)
        self.forward_args = as_forward_args(forward_args)
        check_runnable(
            self._module,
            start if isinstance(start, Tensor) else (),  # a start on another device is named here
            who="ActivationMaximizer",
            gradients=True,
            forward_args=self.forward_args,
        )
        require_hooks(self._module, "ActivationMaximizer")
        self.objective = objective
        self.input_shape = check_shape("input_shape", input_shape)
        self.steps = check_int("steps", steps, 1)
        self.seed = check_int("seed", seed, 0)
        channels, spatial = self.input_shape[1], len(self.input_shape) - 2
        self.normalize = resolve_normalize(normalize, channels)
        picture = self.normalize is not None
        default_param = RECOMMENDED_PARAM if picture else "pixel"
        self.param = cast("Param", check_choice("param", default_param if param is None else param, PARAMS))
        default_decay = NATURAL_DECAY if picture else 1.0
        self.decay_power = check_real(
            "decay_power", default_decay if decay_power is None else decay_power, positive=False
        )
        self.value_range = check_range(value_range)
        if picture and self.value_range is not None:
            raise InvalidArgumentError(
                f"value_range={self.value_range} is for images in the model's own values; with "
                f"normalize={normalize!r} the picture is in [0, 1] by construction: drop one of them."
            )
        self.decorrelate = self._check_decorrelate(decorrelate, channels, picture)
        self.transforms = check_transforms(transforms, picture)
        self.lr = check_real("lr", _LR[self.param] if lr is None else lr, positive=True)
        if self.transforms is not None and spatial != 2:
            raise InvalidArgumentError(
                f"transforms={self.transforms!r} needs 2-D images (N, C, H, W); input_shape is "
                f"{self.input_shape}."
            )
        if self.param != "pixel" and spatial < 1:
            raise InvalidArgumentError(
                f"param={self.param!r} needs spatial dimensions (N, C, ...); input_shape is {self.input_shape}."
            )
        if self.param == "maco" and (not picture or spatial != 2 or channels not in (1, 3)):
            raise InvalidArgumentError(
                "param='maco' fixes the amplitude to photographs' spectrum: it needs a picture "
                f"(normalize='imagenet', 'lecture' or (mean, std)) of 1 or 3 channels, 2-D; got "
                f"normalize={normalize!r}, input_shape={self.input_shape}."
            )
        self.start = check_start(
            start, self.input_shape, self.param, picture=picture, value_range=self.value_range
        )
        natural = picture and spatial == 2 and self.param != "maco" and self.start is None
        self.naturalness = check_naturalness(naturalness, natural, self.normalize, self.input_shape)
        if anchor is not None and not isinstance(anchor, Anchor):
            raise InvalidTypeError(
                f"anchor must be a convlens Anchor(layer, weight) or None; got {anchor!r}."
            )
        if anchor is not None and start is None:
            raise InvalidArgumentError("anchor keeps the picture close to a start picture: pass start= too.")
        self.anchor = anchor
        self.seeds = check_int("seeds", seeds, 1)
        if transfer is not None and not isinstance(transfer, Transfer):
            raise InvalidTypeError(
                f"transfer must be a convlens Transfer(model, targets) or None; got {transfer!r}."
            )
        self.transfer = transfer
        if transfer is not None:
            check_transfer(transfer, self.input_shape)
        self.reference = check_reference(reference, self.input_shape[0])
        if self.reference is not None and activation_part(objective) is None:
            raise InvalidArgumentError(
                f"reference= compares one unit's activation with its top natural example's; {objective!r} "
                "holds no activation term or several (penalties such as l1 and diversity aside)."
            )
        read = objective.layers | ({anchor.layer} if anchor is not None else set())
        self.refs = {key: resolve_layer(model, key) for key in sorted(read)}
        self.dtype, self.device = model_dtype_device(self._module)
        self._layout = input_layout(self._module, self.input_shape, self.device)
        self._needs_output = objective.reads_output
        modules = {ref.name: ref.module for ref in self.refs.values()}
        meta = torch.empty(self.input_shape, dtype=self.dtype, device="meta")
        fa = self.forward_args
        self._probe = Prober(self._module, modules)((meta, *fa.args), fa.kwargs)
        self.shapes = layer_shapes(
            self._module,
            self.refs,
            self.input_shape,
            dtype=self.dtype,
            device=self.device,
            needs_output=self._needs_output,
            probe=self._probe,
            forward_args=fa,
            layouts=objective.layouts,
        )
        for key, layout in objective.layouts.items():
            check_channels_first("ActivationMaximizer", key, self.refs[key].module, self.shapes[key], layout)
        objective.validate(self.shapes)

    def _check_decorrelate(self, decorrelate: object, channels: int, picture: bool) -> bool:
        if decorrelate is None:
            return channels == 3 and (picture or self.param == "maco")
        if not isinstance(decorrelate, bool):
            raise InvalidTypeError(f"decorrelate must be True, False or None; got {decorrelate!r}.")
        if decorrelate and channels != 3:
            raise InvalidArgumentError(
                f"decorrelate=True maps 3 colour channels (RGB); input_shape {self.input_shape} has {channels}."
            )
        if not decorrelate and self.param == "maco" and channels == 3:
            raise InvalidArgumentError(
                "param='maco' is always decorrelated (its amplitude is a spectrum of decorrelated colours); "
                "drop decorrelate=False or pick param='fft'."
            )
        return decorrelate

    def __repr__(self) -> str:
        extra = (
            "" if self.normalize is None else f", normalize={self.normalize}, transforms={self.transforms!r}"
        )
        return (
            f"ActivationMaximizer({type(self.model).__name__}, {self.objective!r}, "
            f"input_shape={self.input_shape}, steps={self.steps}, param={self.param!r}{extra})"
        )

    def run(self) -> MaximizationResult:
        """Run the optimization.

        Returns:
            The image (and, with ``normalize``, the picture), the objective per
            step, the final objective per image, the importance ``mask`` and the ``quality``
            numbers asked for (``reference``, ``seeds``, ``transfer``).

        Raises:
            InvalidArgumentError: The objective does not return one value per
                sample, or does not depend on the image.

        Example:
            >>> import torch.nn as nn
            >>> from convlens.featureviz.objectives import neuron
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh())
            >>> res = ActivationMaximizer(net, neuron("1", 0), input_shape=(1, 1, 7, 7), steps=20, lr=0.1).run()
            >>> res.image.requires_grad, bool(res.history[-1] > res.history[0])
            (False, True)
        """
        require_autograd("ActivationMaximizer", call="call run()", no_grad_ok=False)
        first = self._once(self.seed)
        features = [first.features] + [self._once(self.seed + s).features for s in range(1, self.seeds)]
        quality = Quality(
            relative=None if self.reference is None else relative_to(first.units, self.reference),
            stability=stability_of(features) if self.seeds > 1 else None,
            transfer=None if self.transfer is None else transfer_of(self.transfer, first.image),
        )
        return MaximizationResult(
            image=first.image.to(self.dtype),
            history=first.history,
            values=first.values,
            value=float(first.values.mean()),
            objective=self.objective,
            picture=first.picture,
            mask=first.mask,
            quality=quality,
        )

    def _once(self, seed: int) -> _Drawn:
        """One optimization from ``seed``: the picture, its values, mask and features."""
        generator = torch.Generator().manual_seed(seed)
        work = torch.promote_types(self.dtype, torch.float32)
        made = parameterize(
            self.param,
            self.input_shape,
            generator=generator,
            device=self.device,
            dtype=work,
            decay_power=self.decay_power,
            decorrelate=self.decorrelate,
            picture=self.normalize is not None,
            value_range=self.value_range,
            start=self.start,
        )
        parameter = made.parameter
        to_input = self._to_input(work)
        view = self._view()
        optimizer = torch.optim.Adam([parameter], lr=self.lr)
        history = torch.empty(self.steps, dtype=torch.float32, device=self.device)
        layout = self._layout
        mask = torch.zeros(
            (self.input_shape[0], 1, *self.input_shape[2:]), dtype=torch.float32, device=self.device
        )
        anchor = self.anchor
        seed_picture = None if self.start is None else self.start.to(self.device, work, copy=True)
        recorder = ObjectiveForward(
            self._module,
            self.refs,
            needs_output=self._needs_output,
            probe=self._probe,
            forward_args=self.forward_args,
            layouts=self.objective.layouts,
        )
        with contextlib.ExitStack() as stack:
            stack.enter_context(preserved_modes(self._module, training=False))
            stack.enter_context(grad_mode_restored())
            stack.enter_context(recorder.hooked())
            torch.set_grad_enabled(True)
            for step in range(self.steps):
                rendered = made.render(parameter)
                state = generator.get_state()
                seen = to_input(view(rendered, generator))
                try:
                    values, acts = self._evaluate(recorder, seen, to_input(rendered), layout)
                except RuntimeError:  # e.g. x.view(n, -1) on a channels-last tensor: retry as is
                    if step or layout == torch.preserve_format:
                        raise
                    layout = torch.preserve_format
                    values, acts = self._evaluate(recorder, seen, to_input(rendered), layout)
                if step == 0 and not values.requires_grad:
                    raise InvalidArgumentError(
                        f"the objective {self.objective!r} does not depend on the image: no gradient reaches it."
                    )
                loss = -values.sum()
                if anchor is not None and seed_picture is not None:
                    twin = torch.Generator().set_state(state)  # the seed through the very same view
                    with torch.no_grad():
                        held = recorder.forward(
                            to_input(view(seed_picture, twin)).to(self.dtype).clone(memory_format=layout)
                        )[anchor.layer]
                    loss = loss + anchor.weight * anchor.distance(acts[anchor.layer], held).sum()
                nudge = None
                if self.naturalness > 0:  # its own gradient: the mask is the objective's alone
                    penalty = self.naturalness * spectrum_deviation(rendered).sum()
                    (nudge,) = torch.autograd.grad(penalty, [parameter], retain_graph=True)
                grad, where = torch.autograd.grad(loss, [parameter, rendered], allow_unused=True)
                grad = torch.zeros_like(parameter) if grad is None else grad
                parameter.grad = grad if nudge is None else grad + nudge
                if where is not None:
                    mask += where.detach().abs().sum(1, keepdim=True).float()
                optimizer.step()
                history[step] = values.detach().mean()
            torch.set_grad_enabled(False)
            rendered = made.render(parameter)
            image = to_input(rendered)
            final, acts = self._evaluate(recorder, image, image, layout)
            unit = activation_part(self.objective)
            units = final if unit is None else unit(acts, image)
            feature = unit_features(self.objective, acts, image)
        peak = mask.flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny)
        return _Drawn(
            image=image.detach(),
            picture=None if self.normalize is None else rendered.detach().float(),
            history=history,
            values=final.detach().float(),
            units=units.detach().float(),
            mask=mask / peak.view(-1, *([1] * (mask.dim() - 1))),
            features=feature.detach().float(),
        )

    def _to_input(self, work: torch.dtype) -> Callable[[Tensor], Tensor]:
        """Picture to model input, ``(picture - mean) / std``; the identity without ``normalize``."""
        if self.normalize is None:
            return lambda t: t
        view = (1, -1) + (1,) * (len(self.input_shape) - 2)
        mean, std = (torch.tensor(v, dtype=work, device=self.device).view(view) for v in self.normalize)
        return lambda t: (t - mean) / std

    def _view(self) -> Callable[[Tensor, torch.Generator], Tensor]:
        """The random view of one step (the identity without transforms)."""
        if self.transforms is None:
            return lambda t, _g: t
        if self.transforms == "maco":
            return augment.crops
        if self.normalize is not None:
            fill = 0.5
        else:
            fill = 0.0 if self.value_range is None else sum(self.value_range) / 2
        return lambda t, g: augment.standard(t, g, fill=fill)

    def _evaluate(
        self, recorder: ObjectiveForward, seen: Tensor, image: Tensor, layout: torch.memory_format
    ) -> tuple[Tensor, Activations]:
        # A copy: a model that writes into its input in place must touch neither the leaf nor
        # the image the objective (and the result) reads; made in ``layout`` (see recipe.input_layout).
        activations = recorder.forward(seen.to(self.dtype).clone(memory_format=layout))
        values = self.objective(activations, image)
        n = self.input_shape[0]
        if not isinstance(values, Tensor) or tuple(values.shape) != (n,):
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise InvalidArgumentError(
                f"the objective {self.objective!r} must return one value per sample, shape ({n},); got {got}."
            )
        return values, activations


@dataclass(frozen=True, slots=True)
class _Drawn:
    """One seed's optimization: what the result holds, its unit activations and its features."""

    image: Tensor
    picture: Tensor | None
    history: Tensor
    values: Tensor
    units: Tensor
    mask: Tensor
    features: Tensor
