"""The random, differentiable views a feature visualization is optimized through.

Two families, each one bilinear resampling per image (``F.affine_grid`` and
``F.grid_sample``), drawn from the maximizer's own :class:`torch.Generator`:

- :func:`standard` is Lucid's ``standard_transforms``: pad 12 px with grey,
  jitter 8 px, scale by one of 0.90, 0.92, ..., 1.10, rotate by one of
  -10..10 degrees (0 five times more likely), jitter 4 px. The pixel numbers
  are Lucid's at 224 px and scale with the picture's short side (at least
  1 px). The view keeps the picture's size: it is the centre of Lucid's
  transformed canvas, grey where the picture does not reach.
- :func:`crops` is MACO's: a random square-ish crop covering a fraction of
  the picture's side drawn uniformly from :data:`CROP_FRACTION`, its centre
  drawn around the picture's centre (kept inside), resized to the picture's
  size, then Gaussian plus uniform noise of scale :data:`NOISE` (in units of
  the picture's values).

Both leave a batch's images independent: every image gets its own draw.

References:
    Olah et al., "Feature Visualization", Distill 2017 (Lucid's transforms).
    Fel et al., "Unlocking Feature Visualization for Deep Network with MAgnitude
    Constrained Optimization", NeurIPS 2023 (MACO's crops and noise).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CROP_FRACTION", "NOISE", "crops", "standard"]

#: Lucid's numbers at 224 px: pad, the two jitters (px), scales and angles (degrees).
_REFERENCE = 224
_PAD = 12
_JITTERS = (8, 4)
_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
_ANGLES = tuple(range(-10, 11)) + (0,) * 5
#: MACO-style crops: the crop's side as a fraction of the picture's, and the spread of its centre.
CROP_FRACTION = (0.5, 1.0)
_CENTRE_SD = 0.15
#: MACO-style noise: the standard deviation of the Gaussian part, the width of the uniform part.
NOISE = 0.02


def _pixels(n: int, size: int) -> int:
    return max(1, round(n * size / _REFERENCE))


def _choice(values: tuple[float, ...], n: int, generator: torch.Generator) -> Tensor:
    index = torch.randint(len(values), (n,), generator=generator)
    return torch.tensor(values, dtype=torch.float64)[index]


def _jitter(d: int, n: int, generator: torch.Generator) -> Tensor:
    """Lucid's ``jitter(d)`` (a random crop d px smaller): a shift of the centre in {-d/2, ..., d/2}."""
    return torch.randint(d + 1, (n, 2), generator=generator).to(torch.float64) - d / 2


def standard(picture: Tensor, generator: torch.Generator, *, fill: float) -> Tensor:
    """Lucid's standard transforms as one resampling; ``fill`` is the pad's value (grey).

    Shape:
        ``(N, C, H, W)`` in and out.
    """
    n, _, h, w = picture.shape
    size = min(h, w)
    first, second = (_jitter(_pixels(d, size), n, generator) for d in _JITTERS)
    scale = _choice(_SCALES, n, generator)
    angle = _choice(_ANGLES, n, generator) * (math.pi / 180)
    # The view's pixel u (from the centre) comes from the picture's R(-angle) (u + second) / scale + first.
    cos, sin = angle.cos() / scale, angle.sin() / scale
    rot = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (n, 2, 2), (x, y)
    offset = torch.einsum("nij,nj->ni", rot, second) + first
    theta = _normalized(rot, offset, h, w)
    return _resample(picture, theta.to(picture.device, picture.dtype), fill)


def crops(picture: Tensor, generator: torch.Generator) -> Tensor:
    """One MACO-style random crop per image, resized to the picture's size, plus noise.

    Shape:
        ``(N, C, H, W)`` in and out.
    """
    n, _, h, w = picture.shape
    low, high = CROP_FRACTION
    fraction = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
    centre = torch.randn((n, 2), generator=generator, dtype=torch.float64) * _CENTRE_SD
    # Keep the crop inside the picture: |centre| <= (1 - fraction) / 2 of the side.
    room = ((1 - fraction) / 2)[:, None]
    centre = torch.maximum(torch.minimum(centre, room), -room)
    eye = torch.eye(2, dtype=torch.float64).expand(n, 2, 2) * fraction[:, None, None]
    offset = centre * torch.tensor([w, h], dtype=torch.float64)
    theta = _normalized(eye, offset, h, w)
    view = _resample(picture, theta.to(picture.device, picture.dtype), fill=None)
    gauss = torch.randn(view.shape, generator=generator, dtype=torch.float32)
    uniform = torch.rand(view.shape, generator=generator, dtype=torch.float32) - 0.5
    noise = (gauss + uniform) * NOISE
    return view + noise.to(view.device, view.dtype)


def _normalized(linear: Tensor, offset: Tensor, h: int, w: int) -> Tensor:
    """``affine_grid``'s theta from a map in pixels (x, y from the centre): input = linear @ u + offset."""
    sx = torch.tensor([w / 2, h / 2], dtype=torch.float64)
    theta = torch.empty(linear.shape[0], 2, 3, dtype=torch.float64)
    theta[:, :, :2] = linear * sx[None, None, :] / sx[None, :, None]
    theta[:, :, 2] = offset / sx
    return theta


def _resample(picture: Tensor, theta: Tensor, fill: float | None) -> Tensor:
    n, c, h, w = picture.shape
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    if fill is None:
        return F.grid_sample(picture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    shifted = F.grid_sample(picture - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return shifted + fill
