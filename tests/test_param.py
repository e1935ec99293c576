"""The parameterizations of a feature visualization (convlens.featureviz.param), checked analytically.

``"maco"``: only the Fourier phase is a parameter; the picture is
``sigmoid(logit(m) + field / (m (1 - m)))`` with ``field = recorrelate(irfft2(A exp(i phase)))``,
so undoing the sigmoid and the colour map gives back a spectrum whose amplitude is exactly the
photographs' ``A`` (:func:`convlens.featureviz.colour.natural_spectrum`), at every frequency, including the
columns ``kx = 0`` and Nyquist whose phases are antisymmetrized.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from convlens.errors import InvalidArgumentError
from convlens.featureviz.colour import decorrelate, natural_spectrum, recorrelate
from convlens.featureviz.maximize import ActivationMaximizer
from convlens.featureviz.objectives import channel
from convlens.featureviz.param import Parameterization, parameterize
from convlens.models.images import PRESETS
from models import seeded

CPU = torch.device("cpu")
F64 = torch.float64


def tiny_net(channels: int = 3) -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU())
    seeded(net)
    return net


def build(
    param: str,
    shape: tuple[int, int, int, int],
    *,
    seed: int = 0,
    dtype: torch.dtype = F64,
    decorrelate: bool | None = None,
) -> Parameterization:
    """A picture-space parameterization on the CPU, decorrelated for RGB unless told."""
    return parameterize(
        param,
        shape,
        generator=torch.Generator().manual_seed(seed),
        device=CPU,
        dtype=dtype,
        decay_power=1.0,
        decorrelate=shape[1] == 3 if decorrelate is None else decorrelate,
        picture=True,
        value_range=None,
    )


def spectrum_of(picture: Tensor, mean: Tensor, *, colour: bool) -> Tensor:
    """``rfft2(ortho)`` of the field a maco picture was made from (sigmoid and colour map undone)."""
    level = mean.to(F64).view(1, -1, 1, 1)
    field = (torch.logit(picture.to(F64)) - torch.logit(level)) * level * (1 - level)
    if colour:
        field = decorrelate(field)
    out: Tensor = torch.fft.rfft2(field, norm="ortho")
    return out


def relative_error(got: Tensor, want: Tensor) -> float:
    """Max of ``|got - want| / want`` over the frequencies where ``want > 0`` (all but DC)."""
    mask = (want > 0).expand_as(got)
    return float(((got - want).abs() / want.clamp_min(1e-300))[mask].max())


def antisymmetrized(phase: Tensor, w: int) -> Tensor:
    """The phase with columns kx = 0 (and Nyquist for even w) made odd in ky, as a real row needs."""
    h = phase.shape[-2]
    mirror = (-torch.arange(h)) % h
    out = phase.clone()
    for column in [0, w // 2] if w % 2 == 0 else [0]:
        out[..., column] = (phase[..., column] - phase[..., mirror, column]) / 2
    return out


# -- maco: the amplitude spectrum is the photographs' ----------------------------------------


def test_a_maximized_maco_picture_keeps_the_amplitude_spectrum_float32() -> None:
    am = ActivationMaximizer(
        tiny_net(),
        channel("1", [1, 2]),
        input_shape=(2, 3, 32, 32),
        normalize="imagenet",
        param="maco",
        steps=5,
    )
    res = am.run()
    assert res.picture is not None
    assert res.picture.dtype == torch.float32
    picture = res.picture.double()
    # Far from 0 and 1, so that float32 rounding of the picture does not blow up through the logit.
    assert float(picture.min()) > 1e-3
    assert float(picture.max()) < 1 - 1e-3
    amplitude, mean = natural_spectrum((32, 32), device=CPU, dtype=F64)
    got = spectrum_of(picture, mean, colour=True).abs()
    # The whole run is in float32 (render, FFT, sigmoid): measured ~1e-5 relative; 1e-4 is a 10x margin.
    assert relative_error(got, amplitude) < 1e-4
    assert float(got[..., 0, 0].max()) < 1e-5  # DC: the mean colour is m exactly
    # The optimization did change the picture (the phase moved), yet the amplitude stayed.
    start = build(
        "maco", (2, 3, 32, 32), seed=0, dtype=torch.float32
    )  # the maximizer's seed: its initial phase
    initial = start.render(start.parameter.detach())
    assert relative_error(spectrum_of(initial.double(), mean, colour=True).abs(), amplitude) < 1e-4
    assert float((initial - res.picture).abs().max()) > 1e-3


def test_a_maximized_maco_picture_keeps_the_amplitude_spectrum_float64() -> None:
    net = tiny_net().double()
    res = ActivationMaximizer(
        net, channel("1", 3), input_shape=(1, 3, 32, 32), normalize="imagenet", param="maco", steps=5
    ).run()
    assert res.image.dtype == F64
    # res.picture is float32 by contract; res.image is the float64 model input (picture - mean) / std.
    mean, std = (
        torch.tensor(v, dtype=F64).view(1, 3, 1, 1)
        for v in (PRESETS["imagenet"].mean, PRESETS["imagenet"].std)
    )
    picture = res.image * std + mean
    amplitude, colour_mean = natural_spectrum((32, 32), device=CPU, dtype=F64)
    got = spectrum_of(picture, colour_mean, colour=True).abs()
    assert relative_error(got, amplitude) < 1e-9
    assert float(got[..., 0, 0].max()) < 1e-12


@pytest.mark.parametrize("size", [(16, 16), (15, 17), (16, 15), (9, 12)])
def test_maco_render_is_the_phase_with_the_natural_amplitude(size: tuple[int, int]) -> None:
    h, w = size
    made = build("maco", (2, 3, h, w), seed=0)
    assert made.parameter.shape == (2, 3, h, w // 2 + 1)
    assert made.parameter.requires_grad
    assert made.parameter.is_leaf
    # The initial phase is uniform in [-pi, pi); a phase far outside works the same way (it is an angle).
    assert float(made.parameter.detach().abs().max()) <= math.pi
    phase = (
        torch.rand(made.parameter.shape, generator=torch.Generator().manual_seed(1), dtype=F64) - 0.5
    ) * 20
    picture = made.render(phase)
    assert picture.shape == (2, 3, h, w)
    assert float(picture.min()) > 0
    assert float(picture.max()) < 1
    amplitude, mean = natural_spectrum((h, w), device=CPU, dtype=F64)
    spectrum = spectrum_of(picture, mean, colour=True)
    # Exactly A * exp(i phase): the columns kx = 0 (and Nyquist) with the phase antisymmetrized in ky.
    want = torch.polar(amplitude.expand_as(phase), antisymmetrized(phase, w))
    torch.testing.assert_close(spectrum, want, rtol=0, atol=1e-9)
    assert relative_error(spectrum.abs(), amplitude) < 1e-9
    # Those columns keep their amplitude too: a non-odd phase there would be projected by irfft2 onto
    # its Hermitian part, |A cos((phi(ky) + phi(-ky)) / 2)| < A.
    for column in [0, w // 2] if w % 2 == 0 else [0]:
        assert relative_error(spectrum[..., column].abs(), amplitude[..., column]) < 1e-9, f"column {column}"
    # The gradient reaches the phase.
    (grad,) = torch.autograd.grad(made.render(made.parameter).sum(), [made.parameter])
    assert float(grad.abs().sum()) > 0


def test_maco_picture_is_the_sigmoid_centred_on_the_mean_colour() -> None:
    # sigmoid(logit(m) + field / (m (1 - m))): slope 1 at the mean colour, so small fields pass unchanged.
    made = build("maco", (1, 3, 16, 16), seed=0)
    amplitude, mean = natural_spectrum((16, 16), device=CPU, dtype=F64)
    phase = made.parameter.detach()
    field = recorrelate(
        torch.fft.irfft2(
            torch.polar(amplitude.expand_as(phase), antisymmetrized(phase, 16)), s=(16, 16), norm="ortho"
        )
    )
    picture = made.render(phase)
    level = mean.view(1, 3, 1, 1)
    torch.testing.assert_close(picture, torch.sigmoid(torch.logit(level) + field / (level * (1 - level))))


def test_a_grey_maco_picture_has_the_luminance_amplitude() -> None:
    h, w = 16, 16
    made = build("maco", (2, 1, h, w), seed=2)
    picture = made.render(made.parameter.detach())
    assert picture.shape == (2, 1, h, w)
    amplitude, mean = natural_spectrum((h, w), device=CPU, dtype=F64)
    spectrum = spectrum_of(picture, mean.mean().reshape(1), colour=False)
    assert relative_error(spectrum.abs(), amplitude[:1] / math.sqrt(3)) < 1e-9
    assert float(spectrum[..., 0, 0].abs().max()) < 1e-12  # the mean is the photographs' grey


def test_a_grey_maco_maximization_stays_in_the_unit_range() -> None:
    am = ActivationMaximizer(
        tiny_net(1),
        channel("1", 0),
        input_shape=(1, 1, 16, 16),
        normalize=(0.5, 0.5),
        param="maco",
        steps=4,
        lr=0.5,
    )
    assert am.decorrelate is False  # one channel: nothing to decorrelate
    res = am.run()
    assert res.picture is not None
    assert res.picture.shape == (1, 1, 16, 16)
    assert float(res.picture.min()) >= 0
    assert float(res.picture.max()) <= 1
    torch.testing.assert_close(res.image, (res.picture - 0.5) / 0.5)
    amplitude, mean = natural_spectrum((16, 16), device=CPU, dtype=F64)
    got = spectrum_of(res.picture.double(), mean.mean().reshape(1), colour=False).abs()
    assert relative_error(got, amplitude[:1] / math.sqrt(3)) < 1e-4


# -- pixel and fft in picture space ------------------------------------------------------------


def test_fft_pictures_are_in_the_open_unit_interval() -> None:
    am = ActivationMaximizer(
        tiny_net(),
        channel("1", 0),
        input_shape=(2, 3, 16, 16),
        normalize="imagenet",
        param="fft",
        steps=5,
        lr=0.5,
    )
    assert am.param == "fft"
    assert am.decorrelate is True
    res = am.run()
    assert res.picture is not None
    assert float(res.picture.min()) > 0
    assert float(res.picture.max()) < 1
    assert float(res.picture.std()) > 1e-3  # not a flat grey: the optimization moved it
    # Even a huge spectrum renders into [0, 1]: the sigmoid is the last step.
    made = build("fft", (1, 3, 16, 16))
    big = made.render(made.parameter.detach() * 1e4)
    assert float(big.min()) >= 0
    assert float(big.max()) <= 1
    assert float(big.std()) > 0.1


def test_pixel_pictures_are_the_sigmoid_of_the_decorrelated_colours() -> None:
    def made(decorrelated: bool) -> tuple[Tensor, Tensor]:
        out = build("pixel", (1, 3, 8, 8), decorrelate=decorrelated)
        p = torch.randn(out.parameter.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
        return p, out.render(p)

    p, plain = made(False)
    q, colour = made(True)
    assert torch.equal(p, q)
    torch.testing.assert_close(plain, torch.sigmoid(p))
    torch.testing.assert_close(colour, torch.sigmoid(recorrelate(p)))


def test_pixel_with_decorrelate_differs_for_the_same_seed() -> None:
    def run(decorrelated: bool) -> Tensor:
        res = ActivationMaximizer(
            tiny_net(),
            channel("1", 0),
            input_shape=(1, 3, 16, 16),
            normalize="imagenet",
            param="pixel",
            decorrelate=decorrelated,
            transforms=False,
            steps=3,
            seed=5,
        ).run()
        assert res.picture is not None
        return res.picture

    plain, colour = run(False), run(True)
    assert torch.equal(plain, run(False))  # each is deterministic
    assert float((plain - colour).abs().max()) > 1e-4


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [None, (0.5, 0.5)])
def test_decorrelate_needs_three_channels(normalize: object) -> None:
    with pytest.raises(InvalidArgumentError, match="3 colour channels"):
        ActivationMaximizer(
            tiny_net(1),
            channel("1", 0),
            input_shape=(1, 1, 16, 16),
            normalize=normalize,  # type: ignore[arg-type]
            param="pixel",
            decorrelate=True,
        )


def test_maco_needs_normalize() -> None:
    with pytest.raises(InvalidArgumentError, match="normalize"):
        ActivationMaximizer(tiny_net(), channel("1", 0), input_shape=(1, 3, 16, 16), param="maco")


def test_maco_is_always_decorrelated() -> None:
    with pytest.raises(InvalidArgumentError, match="always decorrelated"):
        ActivationMaximizer(
            tiny_net(),
            channel("1", 0),
            input_shape=(1, 3, 16, 16),
            normalize="imagenet",
            param="maco",
            decorrelate=False,
        )


def test_maco_needs_one_or_three_channels() -> None:
    with pytest.raises(InvalidArgumentError, match="1 or 3 channels"):
        ActivationMaximizer(
            tiny_net(2), channel("1", 0), input_shape=(1, 2, 16, 16), normalize=(0.5, 0.5), param="maco"
        )


def test_value_range_and_normalize_exclude_each_other() -> None:
    with pytest.raises(InvalidArgumentError, match="value_range"):
        ActivationMaximizer(
            tiny_net(), channel("1", 0), input_shape=(1, 3, 16, 16), normalize="imagenet", value_range=(0, 1)
        )


def test_normalize_must_fit_the_channels() -> None:
    with pytest.raises(InvalidArgumentError, match="channels"):
        ActivationMaximizer(
            tiny_net(), channel("1", 0), input_shape=(1, 3, 16, 16), normalize=((0.5, 0.5), (0.2, 0.2))
        )
    with pytest.raises(InvalidArgumentError, match="channels"):
        ActivationMaximizer(tiny_net(1), channel("1", 0), input_shape=(1, 1, 16, 16), normalize="imagenet")
