"""How long an atlas takes, and its peak memory: the digits CNN whole, and resnet18 over 1,000 pictures.

Each case runs in a fresh process (so its peak resident memory is its own) into a
fresh folder, then once more into the same folder to time a resumed run (every
unit from the cache). The 1,000 pictures are generated here: random crops,
flips and scales of scikit-image's photographs (or, without scikit-image,
smooth random colour fields), 160 x 160 PNGs in an ImageFolder of 10 classes.

Run: ``.venv/bin/python bench/atlas.py`` (about 6 minutes on 2 cores); ``--cases digits`` for one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def make_pictures(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` 160 x 160 pictures in 10 class folders, cut from real photographs where there are some."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    try:
        from skimage import data

        photos = [getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "camera")]
        photos = [p if p.ndim == 3 else np.repeat(p[:, :, None], 3, 2) for p in photos]
    except ImportError:
        photos = []
    for i in range(count):
        target = folder / f"class{i % 10}"
        target.mkdir(parents=True, exist_ok=True)
        if photos:
            photo = photos[i % len(photos)][:, :, :3]
            side = int(rng.integers(96, min(photo.shape[:2])))
            top = int(rng.integers(0, photo.shape[0] - side + 1))
            left = int(rng.integers(0, photo.shape[1] - side + 1))
            patch = photo[top : top + side, left : left + side]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            picture = Image.fromarray(np.ascontiguousarray(patch)).resize((160, 160))
        else:
            field = rng.normal(size=(10, 10, 3))
            picture = Image.fromarray(((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)).resize(
                (160, 160), Image.Resampling.BICUBIC
            )
        picture.save(target / f"{i:04d}.png")


def worker(case: str, out: Path, pictures: Path | None) -> None:
    """One atlas build, in this process; prints a JSON line with its numbers."""
    import convlens as cl

    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if case == "digits":
        model = cl.zoo.digits_cnn()
        data = cl.zoo.digits_dataset("test")
        options: dict[str, object] = {"units": None, "steps": 128}
    else:
        model = cl.zoo.load("torchvision:resnet18", weights="random")
        assert pictures is not None
        data = cl.images.PictureFolder(pictures, preset="imagenet")
        options = {
            "layers": ["layer1", "layer2", "layer3", "layer4"],
            "units": 16,
            "steps": 64,
            "preset": "imagenet",
            "picture_size": 128,
            "batch_size": 32,
        }
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    site = cl.build_atlas(model, data, out, progress=False, **options)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "case": case, "seconds": seconds, "units": site.units, "reused": site.reused,
        "layers": list(site.layers), "images": len(data), "peak_mib": peak / 1024,
        "model_mib": (loaded - base) / 1024, "build_mib": (peak - loaded) / 1024,
    }))  # fmt: skip


def run(case: str, out: Path, pictures: Path | None) -> dict[str, object]:
    command = [sys.executable, str(Path(__file__)), "--worker", case, "--out", str(out)]
    if pictures is not None:
        command += ["--pictures", str(pictures)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="digits,resnet18")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--worker")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pictures", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out, args.pictures)
        return
    print(
        f"# convlens atlas: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print(f"before: load average {os.getloadavg()[0]:.2f} (1 min)")
    print()
    print("| case | units | dataset | first run s | resumed run s | peak RSS MiB | of it, the build MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for case in args.cases.split(","):
            pictures = None
            if case == "resnet18":
                pictures = root / "pictures"
                began = time.perf_counter()
                make_pictures(pictures, args.images)
                print(
                    f"(generated {args.images} pictures in {time.perf_counter() - began:.1f} s)",
                    file=sys.stderr,
                )
            out = root / f"atlas_{case}"
            first = run(case, out, pictures)
            again = run(case, out, pictures)
            assert again["reused"] == again["units"], again
            layers = ", ".join(map(str, first["layers"]))  # type: ignore[call-overload]
            print(
                f"| {case} ({layers}) | {first['units']} | {first['images']} images | {first['seconds']:.1f} | "
                f"{again['seconds']:.1f} | {first['peak_mib']:.0f} | {first['build_mib']:.0f} |"
            )
    print()
    print(f"after: load average {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
