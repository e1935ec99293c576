"""Measure the Fourier amplitude spectrum of natural photographs, and write it for convlens.

MACO-style feature visualization (Fel et al., NeurIPS 2023) optimizes only the
Fourier *phase* of a picture and fixes its amplitude to that of natural images.
This script measures that amplitude and writes ``src/convlens/data/natural_spectrum.npz``,
which :func:`convlens.featureviz.colour.natural_spectrum` loads.

It reads eight RGB photographs that ship inside installed packages (nothing is
downloaded): matplotlib's ``grace_hopper.jpg``, scikit-learn's ``china.jpg`` and
``flower.jpg``, and scikit-image's ``astronaut.png``, ``chelsea.png``,
``coffee.png``, ``rocket.jpg`` and ``motorcycle_left.png``.

The steps:

1. every photo as float64 RGB in [0, 1]; the mean colour of all of them, each
   photo weighted equally;
2. ``CROPS`` square crops of side ``SIZE`` per photo, from seeded random
   positions, at several scales: the photo at native resolution and downscaled
   (PIL Lanczos) so that its short side is 256 or 384 pixels;
3. each crop minus the mean colour, in decorrelated colour coordinates
   (:func:`convlens.featureviz.colour.decorrelate`), its edge discontinuities removed by
   Moisan's periodic-plus-smooth decomposition (the periodic component is kept),
   then ``torch.fft.rfft2(..., norm="ortho")``;
4. the amplitude is the root mean square of ``|F|`` over the crops, per channel
   and frequency, shape ``(3, SIZE, SIZE // 2 + 1)``, DC set to 0.

The file holds ``amplitude`` (float16), ``mean`` (the RGB mean colour, float64),
``sources`` (the photos' names) and ``size``. Everything is seeded and runs on
one CPU thread, and the archive has fixed timestamps, so two runs write the
same bytes. A few statistics are printed at the end.

Usage (needs scikit-image and scikit-learn, which convlens itself does not)::

    pip install scikit-image scikit-learn
    python scripts/natural_spectrum.py

References:
    Moisan, "Periodic plus smooth image decomposition", J. Math. Imaging Vis. 39, 2011.
    Fel et al., "Unlocking Feature Visualization for Deep Network with MAgnitude
    Constrained Optimization", NeurIPS 2023. https://arxiv.org/abs/2306.06805
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import time
import zipfile
from importlib import resources
from pathlib import Path

import matplotlib.cbook
import matplotlib.colors
import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import Tensor

from convlens.featureviz.colour import decorrelate

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "convlens" / "data"

#: Side of the square crops, and of the stored spectrum.
SIZE = 256
#: Crops per photo, over all its scales.
CROPS = 32
#: Short sides the photos are downscaled to, besides their native resolution (when smaller than it).
SHORT_SIDES = (256, 384)

FloatArray = npt.NDArray[np.float64]


def photo_paths() -> dict[str, Path]:
    """The photographs, by name: RGB natural photographs bundled with matplotlib, scikit-learn, scikit-image."""
    sample = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    sklearn_images = resources.files("sklearn.datasets") / "images"
    skimage_data = resources.files("skimage.data")
    paths = {"grace_hopper.jpg": Path(str(sample))}
    paths |= {name: Path(str(sklearn_images / name)) for name in ("china.jpg", "flower.jpg")}
    skimage_names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
    paths |= {name: Path(str(skimage_data / name)) for name in skimage_names}
    for name, path in paths.items():
        if not path.is_file():
            raise SystemExit(f"{name} not found at {path}; is its package installed?")
    return paths


def to_float(image: Image.Image) -> FloatArray:
    """``(H, W, 3)`` float64 RGB in [0, 1]."""
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def scales(image: Image.Image) -> list[FloatArray]:
    """The photo at native resolution and downscaled (Lanczos) to each smaller short side of ``SHORT_SIDES``."""
    w, h = image.size
    short = min(w, h)
    out = [to_float(image)]
    for side in SHORT_SIDES:
        if SIZE <= side < short:
            size = (round(w * side / short), round(h * side / short))
            out.append(to_float(image.resize(size, Image.Resampling.LANCZOS)))
    return out


def random_crops(pictures: list[FloatArray], count: int, rng: np.random.Generator) -> FloatArray:
    """``(count, SIZE, SIZE, 3)``: crops at random positions, spread as evenly as possible over ``pictures``."""
    crops = []
    for i in range(count):
        picture = pictures[i % len(pictures)]
        h, w = picture.shape[:2]
        top, left = int(rng.integers(0, h - SIZE + 1)), int(rng.integers(0, w - SIZE + 1))
        crops.append(picture[top : top + SIZE, left : left + SIZE])
    return np.stack(crops)


def periodic_component(u: Tensor) -> Tensor:
    """Moisan's periodic component of images ``(..., H, W)``: ``u`` minus the smooth part that holds its edge jumps.

    The smooth component ``s`` solves ``laplacian(s) = laplacian_periodic(u) - laplacian(u)``
    (the jumps across the opposite edges), with mean 0; ``u - s`` is periodic.
    """
    h, w = u.shape[-2:]
    boundary = torch.zeros_like(u)
    rows = u[..., -1, :] - u[..., 0, :]
    cols = u[..., :, -1] - u[..., :, 0]
    boundary[..., 0, :] += rows
    boundary[..., -1, :] -= rows
    boundary[..., :, 0] += cols
    boundary[..., :, -1] -= cols
    qy = torch.arange(h, dtype=u.dtype, device=u.device)[:, None]
    qx = torch.arange(w, dtype=u.dtype, device=u.device)[None, :]
    denominator = 2 * torch.cos(2 * math.pi * qy / h) + 2 * torch.cos(2 * math.pi * qx / w) - 4
    denominator[0, 0] = 1.0  # the smooth component's mean, set to 0 below
    smooth = torch.fft.fft2(boundary) / denominator
    smooth[..., 0, 0] = 0.0
    periodic: Tensor = u - torch.fft.ifft2(smooth).real
    return periodic


def radial_slope(power: FloatArray, low: float, high: float, bins: int) -> float:
    """The log-log slope of ``power`` (an rfft2 grid of side ``SIZE``) averaged in log-spaced radial bins."""
    fy = np.fft.fftfreq(SIZE)[:, None]
    fx = np.fft.rfftfreq(SIZE)[None, :]
    radius = np.broadcast_to(np.hypot(fy, fx), power.shape)
    edges = np.geomspace(low, high, bins + 1)
    centres, means = [], []
    for lo, hi in itertools.pairwise(edges):
        inside = (radius >= lo) & (radius < hi)
        if inside.any():
            centres.append(math.sqrt(lo * hi))
            means.append(float(power[inside].mean()))
    slope, _ = np.polyfit(np.log(centres), np.log(means), 1)
    return float(slope)


def write_npz(path: Path, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
    """Like ``np.savez_compressed`` but byte for byte reproducible (fixed zip timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            # np.asarray, not np.ascontiguousarray, which would make the 0-d ``size`` 1-d.
            np.lib.format.write_array(buffer, np.asarray(array, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def fmt(values: FloatArray | Tensor) -> str:
    """Three numbers, rounded for printing."""
    return "(" + ", ".join(f"{float(v):.4f}" for v in values) + ")"


def main() -> None:
    """Load the photos, measure the spectrum, write it, report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop positions (0)")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="where to write the file")
    args = parser.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    began = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    photos: dict[str, Image.Image] = {}
    for name, path in photo_paths().items():
        with Image.open(path) as opened:
            photos[name] = opened.convert("RGB")
        print(f"{name}: {photos[name].size[0]}x{photos[name].size[1]}")
    natives = {name: to_float(image) for name, image in photos.items()}
    mean = np.mean([picture.reshape(-1, 3).mean(axis=0) for picture in natives.values()], axis=0)

    power = torch.zeros(3, SIZE, SIZE // 2 + 1, dtype=torch.float64)
    crop_var = torch.zeros(
        3, dtype=torch.float64
    )  # about each crop's own mean, as the DC-free spectrum sees it
    photo_var = torch.zeros(3, dtype=torch.float64)  # about the mean colour, whole photos at native size
    count = 0
    for name, image in photos.items():
        crops = torch.from_numpy(random_crops(scales(image), CROPS, rng) - mean).permute(0, 3, 1, 2)
        decorrelated = decorrelate(crops)
        spectrum = torch.fft.rfft2(periodic_component(decorrelated), norm="ortho")
        power += spectrum.abs().square().sum(dim=0)
        crop_var += decorrelated.var(dim=(2, 3), correction=0).sum(dim=0)
        count += len(crops)
        native = decorrelate(torch.from_numpy(natives[name] - mean).permute(2, 0, 1)[None])
        photo_var += native.square().mean(dim=(0, 2, 3)) / len(photos)
    power /= count
    # The columns kx = 0 and kx = SIZE / 2 hold the FFT of real rows, so |F(-ky)| = |F(ky)|; make it exact.
    flip = (-torch.arange(SIZE)) % SIZE
    for column in (0, SIZE // 2):
        power[:, :, column] = (power[:, :, column] + power[:, flip, column]) / 2
    power[:, 0, 0] = 0.0
    amplitude = power.sqrt()

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "natural_spectrum.npz"
    write_npz(
        path,
        {
            "amplitude": amplitude.numpy().astype(np.float16),
            "mean": mean.astype(np.float64),
            "sources": np.array(list(photos)),
            "size": np.array(SIZE, dtype=np.int64),
        },
    )

    # Parseval with the orthonormal FFT: the half-plane columns other than 0 and SIZE / 2 stand for two.
    weights = torch.full((SIZE // 2 + 1,), 2.0, dtype=torch.float64)
    weights[0] = weights[SIZE // 2] = 1.0
    stored = torch.from_numpy(amplitude.numpy().astype(np.float16).astype(np.float64))
    rms = ((stored.square() * weights).sum(dim=(1, 2)) / SIZE**2).sqrt()
    saturation = np.mean(
        [matplotlib.colors.rgb_to_hsv(picture)[..., 1].mean() for picture in natives.values()]
    )
    luminance = power[0].numpy()
    print(f"wrote {path} ({path.stat().st_size / 1000:.1f} kB), {count} crops of {SIZE}x{SIZE}")
    print(f"mean colour (RGB): {fmt(mean)}")
    print(f"RMS of the field the amplitude implies (decorrelated): {fmt(rms)}")
    print(f"std of the crops about their own mean (decorrelated):  {fmt(crop_var.div(count).sqrt())}")
    print(f"std of the photos about the mean colour (decorrelated): {fmt(photo_var.sqrt())}")
    print(
        "luminance power spectrum slope: "
        f"{radial_slope(luminance, 2 / SIZE, 0.5, 16):.3f} for f in [2/{SIZE}, 1/2], "
        f"{radial_slope(luminance, 1 / 64, 1 / 4, 8):.3f} for f in [1/64, 1/4] cycles/pixel"
    )
    print(f"mean HSV saturation of the photos: {saturation:.4f}")
    print(f"took {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
