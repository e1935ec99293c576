"""convlens.featureviz.colour: colour decorrelation, the shipped natural-image spectrum, normalize presets."""

from __future__ import annotations

import itertools
import math
from importlib import resources

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import Tensor

from convlens.errors import InvalidArgumentError, InvalidTypeError
from convlens.featureviz.colour import (
    COLOR_CORRELATION_SVD_SQRT,
    SPECTRUM_FILE,
    decorrelate,
    natural_spectrum,
    recorrelate,
    resolve_normalize,
    spectrum_deviation,
)

CPU = torch.device("cpu")


def matrix() -> npt.NDArray[np.float64]:
    """Lucid's matrix, scaled so that its longest column has norm 1, computed here independently."""
    m = np.array(COLOR_CORRELATION_SVD_SQRT, dtype=np.float64)
    scaled: npt.NDArray[np.float64] = m / np.linalg.norm(m, axis=0).max()
    return scaled


def stored() -> dict[str, npt.NDArray[np.generic]]:
    with resources.files("convlens.data").joinpath(SPECTRUM_FILE).open("rb") as f, np.load(f) as data:
        return {name: data[name] for name in data.files}


def spectrum(size: tuple[int, int]) -> Tensor:
    amplitude, _ = natural_spectrum(size, device=CPU, dtype=torch.float64)
    return amplitude


def radial_means(amplitude: Tensor, size: tuple[int, int], edges: npt.NDArray[np.float64]) -> np.ndarray:
    """The mean amplitude (all channels) in radial frequency bins, in cycles per pixel."""
    h, w = size
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    values = amplitude.numpy()
    return np.array(
        [values[:, (radius >= lo) & (radius < hi)].mean(axis=1) for lo, hi in itertools.pairwise(edges)]
    )


# -- colour decorrelation ----------------------------------------------------------------------


def test_recorrelate_and_decorrelate_are_inverse() -> None:
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(decorrelate(recorrelate(x)), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(recorrelate(decorrelate(x)), x, rtol=1e-12, atol=1e-12)


def test_the_maps_keep_dtype_and_shape() -> None:
    x = torch.rand(2, 3, 4, 4)
    for out in (decorrelate(x), recorrelate(x)):
        assert out.dtype == torch.float32
        assert out.shape == x.shape


def test_recorrelate_of_the_unit_axes_is_the_matrix_columns() -> None:
    # N = 3 one-pixel pictures, picture k holding decorrelated axis k.
    units = torch.eye(3, dtype=torch.float64)[:, :, None, None]
    rgb = recorrelate(units)[:, :, 0, 0]  # row k: axis k in RGB
    np.testing.assert_allclose(rgb.numpy(), matrix().T, rtol=1e-12, atol=1e-15)
    assert math.isclose(float(rgb.norm(dim=1).max()), 1.0, rel_tol=1e-12)


def test_decorrelate_of_the_rgb_basis_is_the_inverse_matrix() -> None:
    units = torch.eye(3, dtype=torch.float64)[:, :, None, None]  # pure red, green, blue
    coords = decorrelate(units)[:, :, 0, 0]  # row r: primary r in decorrelated coordinates
    np.testing.assert_allclose(coords.numpy(), np.linalg.inv(matrix()).T, rtol=1e-12, atol=1e-12)


def test_grey_is_mostly_luminance() -> None:
    grey = decorrelate(torch.ones(1, 3, 1, 1, dtype=torch.float64))[0, :, 0, 0]
    assert float(grey[0].abs()) > 10 * float(grey[1:].abs().max())


# -- the natural spectrum ----------------------------------------------------------------------


def test_the_stored_file_is_what_the_script_writes() -> None:
    data = stored()
    assert data["amplitude"].dtype == np.float16
    assert data["amplitude"].shape == (3, 256, 129)
    assert data["size"].shape == ()
    assert int(data["size"]) == 256
    mean = data["mean"].astype(np.float64)
    assert mean.dtype == data["mean"].dtype
    assert mean.shape == (3,)
    assert np.all((mean > 0) & (mean < 1))
    assert len(data["sources"]) >= 5
    assert all(isinstance(name, str) for name in data["sources"].tolist())


def test_at_the_stored_size_the_amplitude_is_the_stored_one() -> None:
    data = stored()
    amplitude, mean = natural_spectrum((256, 256), device=CPU, dtype=torch.float64)
    assert amplitude.shape == (3, 256, 129)
    assert amplitude.dtype == torch.float64
    assert torch.all(amplitude[:, 0, 0] == 0)
    np.testing.assert_array_equal(amplitude.numpy(), data["amplitude"].astype(np.float64))
    np.testing.assert_array_equal(mean.numpy(), data["mean"])
    off_dc = amplitude.reshape(3, -1)[:, 1:]
    assert torch.all(off_dc > 0)


def test_device_and_dtype_are_honoured() -> None:
    amplitude, mean = natural_spectrum((32, 32), device=CPU, dtype=torch.float32)
    assert amplitude.dtype == mean.dtype == torch.float32
    assert amplitude.device == mean.device == CPU


def test_the_result_is_a_copy() -> None:
    first = spectrum((256, 256))
    first.fill_(-1.0)
    assert torch.all(spectrum((256, 256)).reshape(3, -1)[:, 1:] > 0)


def test_resampled_to_224() -> None:
    amplitude = spectrum((224, 224))
    assert amplitude.shape == (3, 224, 113)
    assert torch.all(amplitude[:, 0, 0] == 0)
    assert torch.all(amplitude.reshape(3, -1)[:, 1:] > 0)
    assert torch.isfinite(amplitude).all()


def test_resampled_radial_average_matches_the_stored_one() -> None:
    # With the orthonormal FFT the amplitude at a frequency in cycles/pixel does not depend on the size.
    # Bins of width 1/32 centred on the multiples of 1/32 cycles/pixel, frequencies both grids hold.
    edges = (np.arange(16) + 0.5) / 32
    ours = radial_means(spectrum((224, 224)), (224, 224), edges)
    theirs = radial_means(spectrum((256, 256)), (256, 256), edges)
    np.testing.assert_allclose(ours, theirs, rtol=0.1)


@pytest.mark.parametrize(
    ("size", "shape"), [((57, 40), (3, 57, 21)), ((57, 41), (3, 57, 21)), ((1, 1), (3, 1, 1))]
)
def test_odd_and_tiny_sizes(size: tuple[int, int], shape: tuple[int, int, int]) -> None:
    amplitude = spectrum(size)
    assert amplitude.shape == shape
    assert torch.all(amplitude[:, 0, 0] == 0)
    assert torch.all(amplitude.reshape(3, -1)[:, 1:] > 0)


@pytest.mark.parametrize(
    "size", [(256, 256), (224, 224), (57, 40), (57, 41), (100, 64), (512, 384), (301, 301)]
)
def test_the_real_columns_are_symmetric_in_ky(size: tuple[int, int]) -> None:
    # rfft2 columns kx = 0 and (even W) kx = W / 2 are the FFT of real rows: |F(-ky)| = |F(ky)|.
    # The phases there are antisymmetrized, so the amplitude must be symmetric too.
    h, w = size
    amplitude = spectrum(size)
    flip = (-torch.arange(h)) % h
    for column in [0, w // 2] if w % 2 == 0 else [0]:
        values = amplitude[:, :, column]
        relative = float((values[:, flip] - values).abs().max() / values.abs().max())
        assert relative <= 1e-10, f"column kx = {column}: |A(-ky) - A(ky)| up to {relative:.2g} of max A"


# -- normalize ---------------------------------------------------------------------------------


def test_resolve_normalize_presets() -> None:
    assert resolve_normalize(None, 3) is None
    assert resolve_normalize("imagenet", 3) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert resolve_normalize("lecture", 3) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert resolve_normalize("lecture", 1) == ((0.5,), (0.5,))  # one number: any channel count


def test_resolve_normalize_pair_of_scalars_broadcasts() -> None:
    assert resolve_normalize((0.5, 0.25), 3) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert resolve_normalize((0, 2), 1) == ((0.0,), (2.0,))
    assert resolve_normalize(([0.1, 0.2, 0.3], 0.5), 3) == ((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    assert resolve_normalize([np.float64(0.5), (1, 2)], 2) == ((0.5, 0.5), (1.0, 2.0))


def test_resolve_normalize_wrong_length() -> None:
    with pytest.raises(InvalidArgumentError, match="channels"):
        resolve_normalize(((0.1, 0.2), (0.3, 0.4)), 3)
    with pytest.raises(InvalidArgumentError, match="channels"):
        resolve_normalize("imagenet", 1)


@pytest.mark.parametrize("std", [0.0, -1.0, (1.0, 0.0, 1.0)])
def test_resolve_normalize_std_must_be_positive(std: object) -> None:
    with pytest.raises(InvalidArgumentError, match="std"):
        resolve_normalize((0.5, std), 3)


def test_resolve_normalize_unknown_preset_suggests_the_near_one() -> None:
    with pytest.raises(InvalidArgumentError, match="Did you mean 'imagenet'"):
        resolve_normalize("imagenett", 3)
    with pytest.raises(InvalidArgumentError) as info:
        resolve_normalize("zzz", 3)
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "normalize",
    [3, 0.5, (0.1, 0.2, 0.3), {"mean": 0.5, "std": 0.5}, ("a", 0.5), (True, 0.5), (0.5, float("nan"))],
)
def test_resolve_normalize_wrong_type(normalize: object) -> None:
    with pytest.raises(InvalidTypeError):
        resolve_normalize(normalize, 3)


# -- the spectrum's deviation from photographs' ------------------------------------------------


def deviation_by_hand(pictures: Tensor, slope: float) -> list[float]:
    """The binned luminance power (bench/featureviz.py's log bins, then whole-cycle rings), in numpy,
    against the line of ``slope``, offset free: the two mean squares summed."""
    luminance = pictures.double().mean(dim=1).numpy()
    luminance = luminance - luminance.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(luminance, norm="ortho")) ** 2
    h, w = luminance.shape[-2:]
    side = max(h, w)
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    edges = np.geomspace(2 / side, 0.5, 17)
    octaves = [
        (math.sqrt(lo * hi), (radius >= lo) & ((radius <= hi) if i == 15 else (radius < hi)))
        for i, (lo, hi) in enumerate(itertools.pairwise(edges))
    ]
    rings = [(r / side, np.rint(radius * side) == r) for r in range(1, side // 2 + 1)]

    def mean_square(p: np.ndarray, bins: list[tuple[float, np.ndarray]]) -> float:
        used = [(f, inside) for f, inside in bins if inside.any()]
        residual = np.array([math.log(p[inside].mean()) - slope * math.log(f) for f, inside in used])
        return float(((residual - residual.mean()) ** 2).mean())

    return [mean_square(p, octaves) + mean_square(p, rings) for p in power]


@pytest.mark.parametrize("size", [(64, 64), (48, 80), (224, 224)])
def test_spectrum_deviation_is_the_bench_measure_by_hand(size: tuple[int, int]) -> None:
    pictures = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for slope in (-2.53, -1.0):
        expected = torch.tensor(deviation_by_hand(pictures, slope), dtype=torch.float64)
        torch.testing.assert_close(spectrum_deviation(pictures, slope), expected)


def test_spectrum_deviation_ignores_contrast_and_mean() -> None:
    pictures = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(spectrum_deviation(0.3 * pictures + 0.2), spectrum_deviation(pictures))


def test_spectrum_deviation_is_least_at_the_pictures_own_slope() -> None:
    # A power law of slope -2 coloured into noise: its deviation from -2 is far below that from -0.5 or -3.5.
    g = torch.Generator().manual_seed(2)
    noise = torch.rand(4, 1, 128, 128, generator=g, dtype=torch.float64)
    f = torch.fft.fftfreq(128, dtype=torch.float64).abs().clamp(min=1 / 128)
    amplitude = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() ** -1.0  # power falls as f^-2
    coloured = torch.fft.ifft2(torch.fft.fft2(noise) * amplitude).real
    own = spectrum_deviation(coloured, -2.0)
    for other in (-0.5, -3.5):
        assert bool((own < 0.25 * spectrum_deviation(coloured, other)).all())


def test_spectrum_deviation_gradient_descent_lowers_it() -> None:
    picture = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    picture.requires_grad_()
    before = float(spectrum_deviation(picture.detach()))
    optimizer = torch.optim.Adam([picture], lr=0.01)
    for _ in range(20):
        (picture.grad,) = torch.autograd.grad(spectrum_deviation(picture).sum(), [picture])
        optimizer.step()
    assert float(spectrum_deviation(picture.detach())) < 0.5 * before


def test_spectrum_deviation_of_a_picture_too_small_to_measure_is_zero() -> None:
    # 2x2: a single radial bin holds a frequency, no line can be compared.
    assert spectrum_deviation(torch.rand(3, 3, 2, 2)).tolist() == [0.0, 0.0, 0.0]
