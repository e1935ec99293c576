"""The random views of a feature visualization (convlens.featureviz.transforms), checked through their geometry.

Both transforms are one bilinear resampling per image by an affine map. A picture whose channels
are the pixel coordinates themselves (an x ramp and a y ramp, in pixels from the centre) is mapped
exactly by bilinear interpolation wherever the view sees inside the picture, so a least-squares fit
of the view against its own pixel coordinates gives back each image's affine map: Lucid's
rotation, scale and jitters for :func:`standard`, a crop's size and centre for :func:`crops`.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from convlens.featureviz.transforms import CROP_FRACTION, NOISE, crops, standard

F64 = torch.float64
SCALES = [1 + (i - 5) / 50 for i in range(11)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinates(h: int, w: int) -> tuple[Tensor, Tensor]:
    """The pixel centres' (x, y) in pixels from the picture's centre, each ``(H, W)`` float64."""
    ys = torch.arange(h, dtype=F64) - (h - 1) / 2
    xs = torch.arange(w, dtype=F64) - (w - 1) / 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return x, y


def ramps(n: int, h: int, w: int) -> Tensor:
    """``(n, 2, H, W)``: channel 0 the x coordinate, channel 1 the y coordinate of each pixel."""
    x, y = coordinates(h, w)
    return torch.stack([x, y])[None].expand(n, 2, h, w).clone()


def fit(view: Tensor, region: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, the affine map ``(linear (2, 2), offset (2,))`` with view = linear @ u + offset on region.

    Returns ``linear (N, 2, 2)``, ``offset (N, 2)`` and the largest residual of the fit per image.
    """
    n, _, h, w = view.shape
    x, y = coordinates(h, w)
    design = torch.stack([x[region], y[region], torch.ones_like(x[region])], dim=1)  # (P, 3)
    linear, offset, residual = [], [], []
    for i in range(n):
        target = view[i][:, region].T  # (P, 2): the sampled (x, y)
        solution = torch.linalg.lstsq(design, target).solution  # (3, 2)
        linear.append(solution[:2].T)
        offset.append(solution[2])
        residual.append((design @ solution - target).abs().max())
    return torch.stack(linear), torch.stack(offset), torch.stack(residual)


def centre_box(h: int, w: int, fraction: float) -> Tensor:
    """A boolean ``(H, W)`` mask of the central box covering ``fraction`` of each side."""
    x, y = coordinates(h, w)
    return (x.abs() <= fraction * w / 2) & (y.abs() <= fraction * h / 2)


def pixels(n: int, size: int) -> int:
    """Lucid's pixel numbers (at 224 px) scaled to a picture's short side, at least 1."""
    return max(1, round(n * size / 224))


# -- standard(): Lucid's jitter, scale, rotation, jitter ------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(28, 28), (24, 36), (224, 224)])
def test_standard_is_a_rotation_a_scale_and_two_jitters(h: int, w: int) -> None:
    n = 8 if h == 224 else 16
    view = standard(ramps(n, h, w), gen(0), fill=0.0)
    assert view.shape == (n, 2, h, w)
    linear, offset, residual = fit(view, centre_box(h, w, 0.5))
    assert float(residual.max()) < 1e-9  # the centre of the view is an affine image of the picture
    # linear = R(angle) / scale in (x, y): [[cos, sin], [-sin, cos]] / scale.
    torch.testing.assert_close(linear[:, 1, 1], linear[:, 0, 0], rtol=0, atol=1e-9)
    torch.testing.assert_close(linear[:, 1, 0], -linear[:, 0, 1], rtol=0, atol=1e-9)
    scale = 1 / linear[:, 0].norm(dim=1)
    degrees = torch.atan2(linear[:, 0, 1], linear[:, 0, 0]) * 180 / math.pi
    for s, a in zip(scale.tolist(), degrees.tolist(), strict=True):
        assert min(abs(s - c) for c in SCALES) < 1e-9, f"scale {s} is not one of Lucid's"
        assert abs(a - round(a)) < 1e-6, f"angle {a} is not a whole degree"
        assert -10 <= round(a) <= 10
    # Independent draws per image: the batch holds several (scale, angle) pairs.
    assert len({(round(s, 6), round(a)) for s, a in zip(scale.tolist(), degrees.tolist(), strict=True)}) >= 5
    # offset = linear @ second + first, each jitter a centre shift on a grid of step 1 within
    # [-d / 2, d / 2], with d Lucid's 8 and 4 px at 224 scaled with the short side.
    d1, d2 = pixels(8, min(h, w)), pixels(4, min(h, w))
    firsts = torch.cartesian_prod(*(torch.arange(d1 + 1, dtype=F64) - d1 / 2,) * 2)  # (K, 2)
    for i in range(n):
        seconds = torch.linalg.solve(linear[i], (offset[i] - firsts).T).T  # (K, 2) candidates
        on_grid = ((seconds + d2 / 2) - (seconds + d2 / 2).round()).abs().amax(1) < 1e-6
        inside = (seconds.abs() <= d2 / 2 + 1e-9).all(1)
        assert bool((on_grid & inside).any()), f"image {i}: offset {offset[i].tolist()} is no pair of jitters"
    bound = d1 / 2 + (d2 / 2) * (math.cos(math.radians(10)) + math.sin(math.radians(10))) / 0.9
    assert float(offset.abs().max()) <= bound + 1e-9
    if h == 224:  # Lucid's full jitters: shifts of several pixels happen
        assert float(offset.abs().max()) > 2.5
    else:  # small pictures: jitters of about a pixel
        assert float(offset.abs().max()) <= 1.5


def test_standard_fills_grey_only_near_the_borders() -> None:
    c, fill = 0.8, 0.3
    picture = torch.full((8, 3, 32, 32), c, dtype=F64)
    view = standard(picture, gen(1), fill=fill)
    assert view.shape == picture.shape
    # A mix of the picture and the grey pad, nothing beyond them.
    assert float(view.min()) >= fill - 1e-12
    assert float(view.max()) <= c + 1e-12
    # The central half of every view sees only the picture.
    centre = view[..., centre_box(32, 32, 0.5)]
    torch.testing.assert_close(centre, torch.full_like(centre, c), rtol=0, atol=1e-12)
    # The pad shows at the border (zoom out, rotation, jitter).
    ring = ~centre_box(32, 32, 0.9)
    assert float((c - view[..., ring]).max()) > 0.1
    # A grey equal to the picture: the view is the picture.
    torch.testing.assert_close(standard(picture, gen(1), fill=c), picture, rtol=0, atol=1e-12)


def test_standard_is_differentiable() -> None:
    picture = torch.rand(1, 2, 7, 9, dtype=F64, generator=gen(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: standard(p, gen(4), fill=0.5), (picture,))


def test_standard_is_decided_by_the_generator() -> None:
    picture = torch.rand(3, 3, 20, 20, generator=gen(0))
    g = gen(7)
    first = standard(picture, g, fill=0.5)
    assert torch.equal(first, standard(picture, gen(7), fill=0.5))
    assert not torch.equal(first, standard(picture, gen(8), fill=0.5))
    assert not torch.equal(first, standard(picture, g, fill=0.5))  # the generator moved on
    rng = torch.random.get_rng_state()
    standard(picture, gen(7), fill=0.5)
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_standard_draws_each_image_on_its_own() -> None:
    picture = torch.rand(1, 3, 24, 24, generator=gen(0)).expand(2, 3, 24, 24)
    view = standard(picture, gen(0), fill=0.5)
    assert not torch.allclose(view[0], view[1])


def test_standard_keeps_dtype() -> None:
    for dtype in (torch.float32, torch.float64):
        assert standard(torch.zeros(1, 1, 28, 28, dtype=dtype), gen(0), fill=0.5).dtype == dtype


# -- crops(): MACO's random crops and noise ------------------------------------------------------


def geometry(picture: Tensor, seed: int) -> Tensor:
    """The crop without its noise: the noise does not depend on the picture, and a zero picture's crop is 0."""
    return crops(picture, gen(seed)) - crops(torch.zeros_like(picture), gen(seed))


@pytest.mark.parametrize(("h", "w"), [(32, 32), (20, 30)])
def test_crops_are_squares_inside_the_picture(h: int, w: int) -> None:
    n = 16
    view = geometry(ramps(n, h, w), seed=0)
    assert view.shape == (n, 2, h, w)
    interior = torch.zeros(h, w, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    linear, offset, residual = fit(view, interior)
    assert float(residual.max()) < 1e-9
    # linear = fraction * identity: a crop of the same aspect, resized to the picture.
    fraction = linear[:, 0, 0]
    torch.testing.assert_close(linear[:, 1, 1], fraction, rtol=0, atol=1e-9)
    assert float(linear[:, 0, 1].abs().max()) < 1e-9
    assert float(linear[:, 1, 0].abs().max()) < 1e-9
    low, high = CROP_FRACTION
    assert float(fraction.min()) >= low - 1e-9
    assert float(fraction.max()) <= high + 1e-9
    assert float(fraction.max() - fraction.min()) > 0.1  # one draw per image
    # The crop stays inside: its centre is at most (1 - fraction) / 2 of the side from the centre.
    size = torch.tensor([w, h], dtype=F64)
    assert bool(((offset.abs() + fraction[:, None] * size / 2) <= size / 2 + 1e-9).all())
    # Bilinear resampling of a ramp: values within the ramp's range.
    picture = ramps(1, h, w)
    assert float(view[:, 0].min()) >= float(picture[:, 0].min()) - 1e-12
    assert float(view[:, 0].max()) <= float(picture[:, 0].max()) + 1e-12


def test_crops_add_gaussian_plus_uniform_noise() -> None:
    c = 0.4
    picture = torch.full((4, 3, 32, 32), c, dtype=F64)
    noise = crops(picture, gen(2)) - c
    assert noise.shape == picture.shape
    want = NOISE * math.sqrt(1 + 1 / 12)  # N(0, 1) plus U(-0.5, 0.5), times NOISE
    # 12288 samples: the std is known to about 1%, the mean to about 1e-4.
    assert float(noise.std()) == pytest.approx(want, rel=0.05)
    assert abs(float(noise.mean())) < 4 * want / math.sqrt(noise.numel())
    # Independent across images: their noises are uncorrelated.
    a, b = noise[0].flatten(), noise[1].flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.1


def test_crops_are_differentiable_and_decided_by_the_generator() -> None:
    picture = torch.rand(2, 1, 6, 6, dtype=F64, generator=gen(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: crops(p, gen(5)), (picture,))
    g = gen(5)
    first = crops(picture, g)
    assert torch.equal(first, crops(picture, gen(5)))
    assert not torch.equal(first, crops(picture, gen(6)))
    assert not torch.equal(first, crops(picture, g))
    assert first.dtype == F64
