"""How a feature visualization's image is made from the tensor Adam updates.

Three parameterizations, each a leaf tensor plus a differentiable function
from it to the image:

- ``"pixel"``: the values themselves (Lucid's ``pixel_image``), 0.01 * N(0, 1)
  at the start.
- ``"fft"``: Lucid's and Lucent's ``fft_image``: a Fourier spectrum, 0.01 *
  N(0, 1) at the start, scaled by ``1 / max(f, 1 / max(H, W)) ** decay_power``
  (``f`` in cycles per pixel), orthonormal inverse FFT, divided by 4.
- ``"maco"``: MACO's magnitude-constrained picture: only the Fourier phase is
  a parameter (uniform in [-pi, pi) at the start); the amplitude is the
  photographs' (:func:`convlens.featureviz.colour.natural_spectrum`), in decorrelated
  colours. The field this makes, mapped to RGB, becomes the picture through a
  sigmoid centred on the photographs' mean colour ``m`` with slope 1 there,
  ``sigmoid(logit(m) + field / (m (1 - m)))``: where the field is small the
  picture is ``m + field``, a photograph's spectrum and colours; its peaks are
  squashed smoothly into [0, 1]. ``logit(picture)`` carries the photographs'
  amplitude spectrum exactly.

Started from a given image (``start``, feature accentuation), ``"pixel"`` and ``"fft"`` invert
their render: the sigmoid (the image clamped ``_EDGE`` inside its range first, where a sigmoid
still has a slope), the colour map, and for ``"fft"`` the scaled inverse FFT, so that the first
rendered image is the start, up to that clamp.

In picture space (``normalize`` given) ``"pixel"`` and ``"fft"`` end in
Lucid's ``to_valid_rgb``: decorrelated colours mapped to RGB (``decorrelate``),
then a sigmoid into [0, 1]. Without ``normalize`` the values are the model's
input, squashed into ``value_range`` by a sigmoid when one is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.colour import decorrelate as to_decorrelated
from convlens.featureviz.colour import natural_spectrum, recorrelate

__all__ = ["Parameterization", "check_start", "parameterize", "spectrum_scale"]

#: Standard deviation of the random initial parameters (Lucid's).
_INIT_SD = 0.01
#: Lucid's constant that divides the image made from a spectrum.
_FFT_DIVISOR = 4.0
#: The grey weights of the three decorrelated axes for one-channel (grey) pictures with "maco".
_GREY = 1 / math.sqrt(3)
#: A start image is clamped this far inside its range (a fraction of it) before the sigmoid is inverted.
_EDGE = 0.005


@dataclass(frozen=True, slots=True)
class Parameterization:
    """The leaf Adam updates and the function from it to the image (picture or model values)."""

    parameter: Tensor
    render: Callable[[Tensor], Tensor]


def parameterize(
    param: str,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    decay_power: float,
    decorrelate: bool,
    picture: bool,
    value_range: tuple[float, float] | None,
    start: Tensor | None = None,
) -> Parameterization:
    """Build the parameterization; ``picture``: render pictures in [0, 1] rather than model values.

    ``start``: an image of ``shape`` (a picture in [0, 1], or model values) the first render gives
    back, up to the clamp ``_EDGE`` inside a bounded range; not with ``"maco"``.
    """
    if param == "maco":
        return _maco(shape, generator=generator, device=device, dtype=dtype)
    values = (
        None if start is None else _unrendered(start.to(device, dtype), decorrelate, picture, value_range)
    )
    if param == "pixel":
        init = torch.randn(shape, generator=generator, dtype=dtype) * _INIT_SD
        init = init if values is None else values.detach().to("cpu", copy=True)
        to_values: Callable[[Tensor], Tensor] = lambda p: p  # noqa: E731
    else:
        spatial = shape[2:]
        dims = tuple(range(2, len(shape)))
        scale = spectrum_scale(spatial, decay_power).to(device, dtype)[..., None]
        init = torch.randn((*shape[:-1], spatial[-1] // 2 + 1, 2), generator=generator, dtype=dtype)
        init = init * _INIT_SD
        if values is not None:
            spectrum = torch.fft.rfftn(values * _FFT_DIVISOR, dim=dims, norm="ortho")
            init = (torch.view_as_real(spectrum) / scale).cpu()

        def to_values(p: Tensor) -> Tensor:
            spectrum = torch.view_as_complex(p * scale)
            image: Tensor = torch.fft.irfftn(spectrum, s=spatial, dim=dims, norm="ortho")
            return image / _FFT_DIVISOR

    parameter = init.to(device).requires_grad_()
    colour = (lambda t: recorrelate(to_values(t))) if decorrelate else to_values
    if picture:
        return Parameterization(parameter, lambda p: torch.sigmoid(colour(p)))
    if value_range is None:
        return Parameterization(parameter, colour)
    low, high = value_range
    return Parameterization(parameter, lambda p: low + (high - low) * torch.sigmoid(colour(p)))


def check_start(
    start: object,
    shape: tuple[int, ...],
    param: str,
    *,
    picture: bool,
    value_range: tuple[float, float] | None = None,
) -> Tensor | None:
    """A start image for ``shape`` and ``param``, detached; None stays None.

    Raises:
        InvalidTypeError: Not a floating-point tensor.
        InvalidArgumentError: Another shape, ``param="maco"``, values that are not finite, a picture
            outside [0, 1], or values outside ``value_range``.
    """
    if start is None:
        return None
    if not isinstance(start, Tensor) or not start.is_floating_point():
        raise InvalidTypeError(
            f"start must be a floating-point tensor of input_shape or None; got {start!r:.80}."
        )
    if tuple(start.shape) != shape:
        raise InvalidArgumentError(
            f"start must have input_shape {shape} (one start image per optimized image); "
            f"got {tuple(start.shape)}."
        )
    if param == "maco":
        raise InvalidArgumentError(
            "param='maco' fixes the amplitude to photographs' spectrum, so it cannot start from a given "
            "picture: pick param='fft' (the default) or 'pixel'."
        )
    if picture and not bool(((start >= 0) & (start <= 1)).all()):
        raise InvalidArgumentError(
            "with normalize, start is a picture in [0, 1] RGB (the model sees (start - mean) / std); "
            f"got values from {float(start.min()):.3g} to {float(start.max()):.3g}."
        )
    if not bool(torch.isfinite(start).all()):
        raise InvalidArgumentError("start holds NaN or infinite values; give a finite image.")
    if value_range is not None and not bool(((start >= value_range[0]) & (start <= value_range[1])).all()):
        raise InvalidArgumentError(
            f"start must lie in value_range={value_range} (the image stays in it); got values from "
            f"{float(start.min()):.3g} to {float(start.max()):.3g}."
        )
    return start.detach().clone()  # its own storage: the optimization never writes into the caller's


def _unrendered(
    image: Tensor, decorrelate: bool, picture: bool, value_range: tuple[float, float] | None
) -> Tensor:
    """The values (before the colour map and the sigmoid) that render to ``image``."""
    bounds = (0.0, 1.0) if picture else value_range
    if bounds is not None:
        low, high = bounds
        unit = ((image - low) / (high - low)).clamp(_EDGE, 1 - _EDGE)
        image = torch.logit(unit)
    return to_decorrelated(image) if decorrelate else image


def spectrum_scale(spatial: Sequence[int], decay_power: float) -> Tensor:
    """``1 / max(f, 1 / max(size)) ** decay_power`` on the rfft grid (float64)."""
    axes = [torch.fft.fftfreq(n, dtype=torch.float64) for n in spatial[:-1]]
    axes.append(torch.fft.rfftfreq(spatial[-1], dtype=torch.float64))
    grids = torch.meshgrid(*axes, indexing="ij")
    freqs = torch.sqrt(sum((g * g for g in grids), torch.zeros(())))
    scale: Tensor = 1.0 / freqs.clamp(min=1.0 / max(spatial)) ** decay_power
    return scale


def _maco(
    shape: tuple[int, ...], *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Parameterization:
    n, c, h, w = shape
    amplitude, mean = natural_spectrum((h, w), device=device, dtype=dtype)
    if c == 1:  # a grey picture: the luminance axis only
        amplitude, mean = amplitude[:1] * _GREY, mean.mean().reshape(1)
    init = (torch.rand((n, c, h, w // 2 + 1), generator=generator, dtype=dtype) * 2 - 1) * math.pi
    parameter = init.to(device).requires_grad_()
    # Columns kx = 0 (and Nyquist for even widths) are their own mirror: their phases must be odd in ky.
    real = [0, w // 2] if w % 2 == 0 else [0]
    mirror = (-torch.arange(h, device=device)) % h
    level = mean.view(1, c, 1, 1)
    offset, gain = torch.logit(level), 1 / (level * (1 - level))

    def render(phase: Tensor) -> Tensor:
        odd = (phase[..., real] - phase[..., mirror, :][..., real]) / 2
        phase = phase.index_copy(-1, torch.tensor(real, device=device), odd)
        spectrum = torch.polar(amplitude.expand_as(phase), phase)
        field: Tensor = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")
        if c == 3:
            field = recorrelate(field)
        # Into [0, 1] by a sigmoid whose slope at the mean colour is 1: small fields pass unchanged.
        return torch.sigmoid(offset + gain * field)

    return Parameterization(parameter, render)
