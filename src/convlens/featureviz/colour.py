"""Pictures in [0, 1] RGB: colour decorrelation, the natural-image spectrum, normalization.

The feature visualizations of :mod:`convlens.featureviz.maximize` optimize, when asked to
(``normalize=...``), a *picture* that a person looks at, and show the model
``(picture - mean) / std``. This module holds what that needs and nothing that
runs a model:

- :data:`COLOR_CORRELATION_SVD_SQRT`: Lucid's square root of the colour
  correlation of ImageNet pictures (a published constant,
  ``lucid/optvis/param/color.py``). Its columns, scaled so that the longest has
  norm 1, span RGB from "decorrelated" coordinates: luminance first, then two
  colour-opponent axes. :func:`recorrelate` maps decorrelated coordinates to
  RGB, :func:`decorrelate` back (the 3x3 matrix is invertible).
- :func:`natural_spectrum`: the Fourier amplitude of photographs, in
  decorrelated coordinates, at a requested size, and their mean colour
  (``data/natural_spectrum.npz``, made by ``scripts/natural_spectrum.py``).
- :func:`spectrum_deviation`: how far a picture's power spectrum is, in shape,
  from a photograph's ``f^NATURAL_SLOPE``, in log-spaced bins and in rings; the
  maximizer's ``naturalness`` penalty.
- :func:`resolve_normalize`: ``"imagenet"``, ``"lecture"`` or ``(mean, std)``
  to two tuples.

References:
    Olah, Mordvintsev, Schubert, "Feature Visualization", Distill 2017 (Lucid).
    Fel et al., "Unlocking Feature Visualization for Deep Network with MAgnitude
    Constrained Optimization", NeurIPS 2023. https://arxiv.org/abs/2306.06805
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from importlib import resources
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from convlens.core.checks import check_real
from convlens.errors import InvalidArgumentError, InvalidTypeError, did_you_mean
from convlens.models.images import PRESETS

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "NATURALNESS",
    "NATURAL_SLOPE",
    "check_naturalness",
    "decorrelate",
    "natural_spectrum",
    "recorrelate",
    "resolve_normalize",
    "spectrum_deviation",
]

#: Lucid's ``color_correlation_svd_sqrt`` (rows R, G, B; columns the decorrelated axes).
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))

SPECTRUM_FILE = "natural_spectrum.npz"
#: Photographs' luminance power spectrum falls as ``f ** NATURAL_SLOPE`` (``scripts/natural_spectrum.py``;
#: bench/featureviz.py measures -2.54 on its eight photographs at 224 px).
NATURAL_SLOPE = -2.53
#: :func:`spectrum_deviation`'s log-spaced radial bins, from 2 / max(H, W) to 0.5 cycles per pixel.
_BINS = 16
#: The default weight, for pictures, of the penalty on the spectrum's shape deviating from photographs'
#: (:func:`~convlens.featureviz.colour.spectrum_deviation`). Without it the optimization adds high
#: frequencies: EfficientNet-Lite0's class pictures fell as f^-2.34 against photographs' f^-2.54, its
#: channel pictures as f^-2.02; with 20, both f^-2.5, and Lite1 recognizes the 16 classes tried about
#: as often (median p 0.965 against 0.978, mean 0.780 against 0.761).
NATURALNESS = 20.0


def _basis(device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(3, 3)``: column k is decorrelated axis k in RGB, the longest column of norm 1."""
    matrix = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float64)
    basis: Tensor = (matrix / matrix.norm(dim=0).max()).to(device, dtype)
    return basis


def recorrelate(t: Tensor) -> Tensor:
    """Decorrelated colour coordinates to RGB (channel dimension 1), Lucid's linear map.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
        >>> torch.allclose(decorrelate(recorrelate(x)), x)
        True
    """
    out: Tensor = torch.einsum("rk,nk...->nr...", _basis(t.device, t.dtype), t)
    return out


def decorrelate(t: Tensor) -> Tensor:
    """RGB (channel dimension 1) to decorrelated colour coordinates: the inverse of :func:`recorrelate`."""
    inverse = torch.linalg.inv(_basis(t.device, torch.float64)).to(t.dtype)
    out: Tensor = torch.einsum("kr,nr...->nk...", inverse, t)
    return out


@functools.cache
def _stored_spectrum() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("convlens.data").joinpath(SPECTRUM_FILE).open("rb") as f, np.load(f) as data:
        return data["amplitude"].astype(np.float64), data["mean"].astype(np.float64)


def natural_spectrum(
    size: tuple[int, int], *, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The photographs' Fourier amplitude at ``size`` and their mean colour.

    The stored amplitude is the root mean square of ``|rfft2(d)|`` (orthonormal
    FFT) over crops ``d`` of photographs in decorrelated colour coordinates, mean
    colour removed (DC = 0). With the orthonormal FFT the amplitude at a
    frequency in cycles per pixel does not depend on the picture's size, so
    other sizes are sampled from the stored grid by bilinear interpolation in
    frequency.

    Returns:
        ``(3, H, W // 2 + 1)`` amplitude (DC zero, the columns that must be
        real symmetric), ``(3,)`` RGB mean colour.
    """
    stored, mean = _stored_spectrum()
    amplitude = torch.from_numpy(stored)
    h, w = size
    sh, sw = amplitude.shape[1], 2 * (amplitude.shape[2] - 1)
    if (h, w) != (sh, sw):
        amplitude = _resample(amplitude, (sh, sw), (h, w))
    amplitude = amplitude.clone()
    amplitude[:, 0, 0] = 0.0
    return amplitude.to(device, dtype), torch.from_numpy(mean).to(device, dtype)


def _resample(amplitude: Tensor, stored: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Sample a ``(3, SH, SW // 2 + 1)`` rfft2 amplitude at the frequencies of an ``(H, W)`` grid."""
    sh, sw = stored
    h, w = size
    # The full spectrum from the half plane (|F(-k)| = |F(k)| for a real picture), then centred.
    kx = torch.arange(sw)
    ky = torch.arange(sh)
    mirrored = amplitude[:, (-ky) % sh][:, :, (-kx[kx > sw // 2]) % sw]
    full = torch.fft.fftshift(torch.cat([amplitude, mirrored], dim=2), dim=(1, 2))
    # Near DC, interpolate towards the lowest stored frequencies rather than the zeroed DC.
    cy, cx = sh // 2, sw // 2
    full[:, cy, cx] = (
        full[:, cy - 1, cx] + full[:, cy + 1, cx] + full[:, cy, cx - 1] + full[:, cy, cx + 1]
    ) / 4
    # The spectrum is periodic in frequency (period 1 cycle per pixel): repeat the first row and
    # column after the last, so the grid spans [low, low + 1] and no frequency is clamped.
    full = torch.cat([full, full[:, :1]], dim=1)
    full = torch.cat([full, full[:, :, :1]], dim=2)

    def coords(freqs: Tensor, n: int) -> Tensor:
        low = -(n // 2) / n
        return torch.remainder(freqs - low, 1.0) * 2 - 1  # align_corners=True over n + 1 points

    gy = coords(torch.fft.fftfreq(h, dtype=torch.float64), sh)
    gx = coords(torch.fft.rfftfreq(w, dtype=torch.float64), sw)
    rows, cols = torch.meshgrid(gy, gx, indexing="ij")
    grid = torch.stack([cols, rows], dim=-1)[None]
    return F.grid_sample(full[None], grid, mode="bilinear", align_corners=True)[0]


def spectrum_deviation(picture: Tensor, slope: float = NATURAL_SLOPE) -> Tensor:
    """How far each picture's power spectrum is, in shape, from a power law ``f ** slope``; differentiable.

    The luminance (the mean over channels, its mean removed) power ``|fft2|^2``
    (orthonormal) is averaged over frequencies two ways: in :data:`_BINS`
    log-spaced radial bins from ``2 / max(H, W)`` to 0.5 cycles per pixel
    (``bench/featureviz.py``'s measure, every octave alike), and in rings of
    whole cycles per picture, 1 to ``max(H, W) // 2`` (most of them at high
    frequencies). For each, the mean square over the bins of ``log power -
    slope * log f``, less its mean over the bins (the picture's contrast is
    free, only the spectrum's shape counts); the deviation is their sum, 0 for
    a picture whose power falls exactly as ``f ** slope``. Held by the
    log bins alone, the pictures' high frequencies stayed flatter than a
    photograph's when measured by rings.

    Shape:
        ``(N, C, H, W)`` in, ``(N,)`` out (a way whose bins hold fewer than two frequencies adds 0).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> noise = torch.rand(2, 3, 64, 64, generator=g)  # white: a flat spectrum
        >>> f = torch.fft.fftfreq(64).abs().clamp(min=1 / 64)
        >>> amplitude = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() ** (NATURAL_SLOPE / 2)
        >>> natural = torch.fft.ifft2(torch.fft.fft2(noise) * amplitude).real  # the noise, coloured
        >>> spectrum_deviation(noise).shape, bool((spectrum_deviation(natural) < 0.05 * spectrum_deviation(noise)).all())
        (torch.Size([2]), True)
    """
    h, w = picture.shape[-2:]
    side = max(h, w)
    luminance = picture.mean(dim=1)
    luminance = luminance - luminance.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(luminance, norm="ortho").abs().square().flatten(1)
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=picture.device)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=picture.device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).flatten()
    # numpy's geomspace, as the bench's: a frequency on an edge (4/64 at 64 px) falls in the same bin.
    edges = torch.from_numpy(np.geomspace(2 / side, 0.5, _BINS + 1)).to(picture.device)
    inside = (radius >= edges[0]) & (radius <= edges[-1])
    octaves = torch.bucketize(radius, edges, right=True).clamp(max=_BINS) - 1  # the last bin holds 0.5
    octaves = torch.where(inside, octaves, torch.full_like(octaves, _BINS))  # an extra bin for the rest
    centres = (edges[:-1] * edges[1:]).sqrt()
    rings = torch.round(radius * side).long()
    count = side // 2
    rings = torch.where((rings >= 1) & (rings <= count), rings - 1, torch.full_like(rings, count))
    frequencies = torch.arange(1, count + 1, dtype=torch.float64, device=picture.device) / side
    return _deviation(power, octaves, centres, slope) + _deviation(power, rings, frequencies, slope)


def _deviation(power: Tensor, index: Tensor, frequencies: Tensor, slope: float) -> Tensor:
    """Mean square of ``log power - slope log f`` over the bins (``index``; its last value: none), offset free."""
    bins = frequencies.numel()
    counts = torch.bincount(index, minlength=bins + 1)[:bins]
    sums = power.new_zeros(power.shape[0], bins + 1).index_add(1, index, power)[:, :bins]
    used = counts > 0
    if int(used.sum()) < 2:
        nothing: Tensor = power.new_zeros(power.shape[0])
        return nothing
    logs = (sums[:, used] / counts[used].to(power.dtype)).clamp_min(torch.finfo(power.dtype).tiny).log()
    residual = logs - slope * frequencies[used].log().to(power.dtype)
    residual = residual - residual.mean(dim=1, keepdim=True)
    deviation: Tensor = residual.square().mean(dim=1)
    return deviation


def check_naturalness(
    naturalness: object, natural: bool, normalize: object, input_shape: tuple[int, ...]
) -> float:
    """The maximizer's ``naturalness``: None is :data:`NATURALNESS` where ``natural``, else 0; > 0 needs a 2-D picture.

    Example:
        >>> check_naturalness(None, True, ((0.5,), (0.5,)), (1, 1, 8, 8)), check_naturalness(None, False, None, (1, 4))
        (20.0, 0.0)
    """
    if naturalness is None:
        return NATURALNESS if natural else 0.0
    weight = check_real("naturalness", naturalness, positive=False)
    if weight > 0 and (normalize is None or len(input_shape) != 4):
        raise InvalidArgumentError(
            f"naturalness={weight} holds a picture's spectrum to photographs': it needs normalize= and "
            f"2-D pictures (N, C, H, W); got normalize={normalize}, input_shape={input_shape}."
        )
    return weight


def resolve_normalize(normalize: object, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``None``, a preset name or ``(mean, std)`` to ``(mean, std)`` tuples of ``channels`` values."""
    if normalize is None:
        return None
    if isinstance(normalize, str):
        if normalize not in PRESETS:
            raise InvalidArgumentError(
                f"normalize must be None, one of {sorted(PRESETS)} or a pair (mean, std); "
                f"got {normalize!r}.{did_you_mean(normalize, list(PRESETS))}"
            )
        preset = PRESETS[normalize]
        pair: tuple[object, object] = (preset.mean, preset.std)
        if len(set(preset.mean)) == 1 and len(set(preset.std)) == 1:  # "lecture": one number for any channels
            pair = (preset.mean[0], preset.std[0])
    elif isinstance(normalize, Sequence) and len(normalize) == 2:
        pair = (normalize[0], normalize[1])
    else:
        raise InvalidTypeError(
            f"normalize must be None, one of {sorted(PRESETS)} or a pair (mean, std); got {normalize!r}."
        )
    mean, std = (
        _per_channel(name, value, channels) for name, value in zip(("mean", "std"), pair, strict=True)
    )
    if any(s <= 0 for s in std):
        raise InvalidArgumentError(f"normalize's std must be > 0 for every channel; got {std}.")
    return mean, std


def _finite(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return math.isfinite(float(value))


def _per_channel(name: str, value: object, channels: int) -> tuple[float, ...]:
    values = [value] if isinstance(value, Real) else value
    if not isinstance(values, Sequence) or not all(_finite(v) for v in values):
        raise InvalidTypeError(
            f"normalize's {name} must be a finite number or one per channel; got {value!r}."
        )
    floats = tuple(float(v) for v in values)
    if len(floats) == 1:
        floats = floats * channels
    if len(floats) != channels:
        raise InvalidArgumentError(
            f"normalize's {name} has {len(floats)} values, but the input has {channels} channels."
        )
    return floats
