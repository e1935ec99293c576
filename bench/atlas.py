"""How long an atlas takes, its peak memory, and what every rank drawing buys: digits, resnet18, Lite0 on 2 ranks.

Each case runs in a fresh process (so its peak resident memory is its own) into a
fresh folder, then once more into the same folder to time a resumed run (every
unit from the cache). The 1,000 pictures are generated here: random crops,
flips and scales of scikit-image's photographs (or, without scikit-image,
smooth random colour fields), 160 x 160 PNGs in an ImageFolder of 10 classes.

Then EfficientNet-Lite0 with its ImageNet weights (the bench extra), three layers over 96 of those
pictures, built as one process of 2 threads and as 2 ``torchrun`` ranks of 1 thread each (every rank draws
its share of the pictures), alternating which goes first; ``--site DIR`` keeps the 2-rank site for the
docs' figures. Last, the cost model: one unit's picture-step measured by layer and picture size, and
what a whole Lite0 and resnet50 would take, projected from it (and, for GPUs, from an assumed throughput:
nothing here has run on a GPU).

Run: ``.venv/bin/python bench/atlas.py`` (about 15 minutes on 2 cores); ``--cases digits`` for one
(``digits``, ``resnet18``, ``ranks``, ``cost``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def worker(case: str, out: Path, pictures: Path | None, result: Path | None) -> None:
    """One atlas build, in this process (or as one rank of ``torchrun``); reports its numbers as JSON.

    The JSON goes to ``result`` when given (rank 0 writes it, with every rank's peak memory), else to stdout.
    """
    import torch.distributed as dist

    import convlens as cl

    ranked = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ranked:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if case == "digits":
        model: torch.nn.Module = cl.zoo.digits_cnn()
        data: object = cl.zoo.digits_dataset("test")
        options: dict[str, object] = {"units": None, "steps": 128}
    elif case == "lite0":
        from topk import load_lite0

        model = load_lite0()
        assert pictures is not None
        data = cl.images.PictureFolder(pictures, preset="imagenet")
        options = {
            "layers": LITE0_LAYERS,
            "units": 8,
            "steps": 128,
            "preset": "imagenet",
            "classes": "imagenet",
        }
        options |= {"title": "EfficientNet-Lite0 (ImageNet weights)"}
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
    peaks = [peak]
    if ranked:
        every: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(every, peak)
        peaks = [int(p) for p in every]  # type: ignore[call-overload]
    numbers = {
        "case": case, "seconds": seconds, "units": site.units, "reused": site.reused,
        "layers": list(site.layers), "images": len(data),  # type: ignore[arg-type]
        "peak_mib": max(peaks) / 1024, "peaks_mib": [p / 1024 for p in peaks],
        "model_mib": (loaded - base) / 1024, "build_mib": (peak - loaded) / 1024,
        "concepts": list(site.concepts),
    }  # fmt: skip
    if ranked:
        dist.destroy_process_group()
    if result is None:
        print(json.dumps(numbers))
    elif not ranked or int(os.environ["RANK"]) == 0:
        result.write_text(json.dumps(numbers))


#: The Lite0 layers of the rank comparison: an early block, a late one and the classifier.
LITE0_LAYERS = ["_blocks.5", "_blocks.10", "_fc"]


def run(case: str, out: Path, pictures: Path | None) -> dict[str, object]:
    command = [sys.executable, str(Path(__file__)), "--worker", "--case", case, "--out", str(out)]
    if pictures is not None:
        command += ["--pictures", str(pictures)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ranks(out: Path, pictures: Path, processes: int, threads: int) -> dict[str, object]:
    """One Lite0 build as ``processes`` ranks of ``threads`` threads each, into a fresh ``out``."""
    from common import run_worker

    result = out.with_suffix(".json")
    arguments = ["--case", "lite0", "--out", str(out), "--pictures", str(pictures), "--result", str(result)]
    run_worker(
        __file__, f"lite0 {processes}x{threads}", processes=processes, threads=threads, arguments=arguments
    )
    numbers: dict[str, object] = json.loads(result.read_text())
    return numbers


def compare_ranks(root: Path, images: int, count: int, site: Path | None) -> float:
    """Lite0's atlas as 2 ranks of 1 thread, as 1 process of 1 thread and of 2 threads, alternating.

    1 process of 1 thread is what ``torchrun`` gave before every rank drew: rank 0 alone drew every
    picture with its one thread (the dataset passes were sharded then too, a small part of the time).
    """
    from common import load_line, quartiles

    pictures = root / "lite0_pictures"
    make_pictures(pictures, images)
    print()
    print(
        f"## Every rank draws: EfficientNet-Lite0 (ImageNet weights), {', '.join(LITE0_LAYERS)}, 8 units each,"
    )
    print(f"## 128 steps, {images} pictures of 160 x 160, concepts on; {count} round(s), alternating order")
    print(f"before: {load_line()}")
    print()
    print("| round | 2 ranks x 1 thread s | 1 process x 1 thread s | 1 process x 2 threads s | "
          "speed-up over 1 x 1 | over 1 x 2 | peak RSS MiB (2 ranks / 1 x 1 / 1 x 2) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---|")
    speedups: dict[str, list[float]] = {"1x1": [], "1x2": []}
    runs = [(2, 1), (1, 1), (1, 2)]
    for index in range(count):
        got = {}
        for processes, threads in runs if index % 2 == 0 else runs[::-1]:
            out = root / f"lite0_{processes}x{threads}_{index}"
            got[f"{processes}x{threads}"] = ranks(out, pictures, processes, threads)
        two = float(got["2x1"]["seconds"])  # type: ignore[arg-type]
        for name, values in speedups.items():
            values.append(float(got[name]["seconds"]) / two)  # type: ignore[arg-type]
        per_rank = "+".join(f"{p:.0f}" for p in got["2x1"]["peaks_mib"])  # type: ignore[attr-defined]
        print(f"| {index} | {two:.1f} | {got['1x1']['seconds']:.1f} | {got['1x2']['seconds']:.1f} | "
              f"{speedups['1x1'][-1]:.2f}x | {speedups['1x2'][-1]:.2f}x | "
              f"{per_rank} / {got['1x1']['peak_mib']:.0f} / {got['1x2']['peak_mib']:.0f} |")  # fmt: skip
        if site is not None and index == count - 1:
            if site.exists():
                shutil.rmtree(site)
            shutil.copytree(root / f"lite0_2x1_{index}", site)
            (site / "run.json").write_text(
                json.dumps({"one": got["1x2"], "two": got["2x1"], "one_thread": got["1x1"]})
            )
    print()
    for name, values in speedups.items():
        low, median, high = quartiles(values)
        print(
            f"2 ranks vs 1 process x {name[-1]} thread(s): median {median:.2f}x (quartiles {low:.2f}-{high:.2f})"
        )
    print("target: >= 1.4x over what torchrun gave before (rank 0 alone drawing: 1 x 1)")
    print(f"after: {load_line()}")
    return quartiles(speedups["1x2"])[1]


def cost_model(sizes: Sequence[int], speedup: float | None) -> None:
    """Measured: one unit's picture-step by layer and picture size; projected: whole models.

    A unit's picture-step costs about ``a + b * MACs up to its layer`` (the maximizer stops after the
    layer): ``a`` and ``b`` are fitted, per model, to the measured layers at the largest size, and the
    whole model is the sum over its conv and Linear layers of units x 128 steps x that cost. The rank
    projections divide by the measured 2-rank speed-up per 2 ranks (``speedup``; perfect scaling when
    the rank comparison did not run). The GPU column is not a measurement: each job of 32 units takes,
    per step, the longer of its flops (~3 x 2 x MACs per picture) at an assumed 20 TFLOP/s sustained
    (fp32, an A100/H100 class card) and an assumed 10 ms (a step's kernel launches).
    """
    from topk import load_lite0

    import convlens as cl

    lite0 = load_lite0()
    resnet50 = cl.zoo.load("torchvision:resnet50", weights="random").eval()
    print()
    print(
        "## Cost model: milliseconds per unit per step (a batch of 4 units, 4 timed steps after 2), 1 process"
    )
    print()
    print("| model | layer | MACs to it (224 px) | " + " | ".join(f"{s} px" for s in sizes) + " |")
    print("|---|---|---:|" + "---:|" * len(sizes))
    fits: dict[str, list[tuple[int, float]]] = {}
    cases = [("Lite0", lite0, "_blocks.5"), ("Lite0", lite0, "_blocks.10"), ("Lite0", lite0, "_fc")]
    cases += [
        ("resnet50", resnet50, "layer2"),
        ("resnet50", resnet50, "layer4"),
        ("resnet50", resnet50, "fc"),
    ]
    for name, model, layer in cases:
        depth = _macs_to(cl.trace_shapes(model, (1, 3, 224, 224)), model, layer)
        cells = []
        for size in sizes:
            nv = cl.NeuronVisualizer(model, layer, input_shape=(1, 3, size, size))
            nv.maximize(range(4), steps=2, seed=0, normalize="imagenet")
            began = time.perf_counter()
            nv.maximize(range(4), steps=4, seed=0, normalize="imagenet")
            ms = (time.perf_counter() - began) / 16 * 1000
            cells.append(f"{ms:.1f}")
        fits.setdefault(name, []).append((int(depth * (max(sizes) / 224) ** 2), ms))  # the largest size's
        print(f"| {name} | {layer} | {depth / 1e6:.0f} M | " + " | ".join(cells) + " |")
    scale = 2 / speedup if speedup else 1.0  # ranks per unit of speed-up
    print()
    print(f"## Whole models: every conv and Linear unit, 128 steps, {max(sizes)} px (projected)")
    print()
    print("| model | units | 1 process h | 8 ranks h | GPU, projected: 1 / 8 GPUs h |")
    print("|---|---:|---:|---:|---|")
    for name, model in (("Lite0", lite0), ("resnet50", resnet50)):
        a, b = _line(fits[name])
        report = cl.trace_shapes(model, (1, 3, max(sizes), max(sizes)))
        modules = dict(model.named_modules())
        kinds = torch.nn.Conv2d | torch.nn.Linear
        layers = [r for r in report.rows if isinstance(modules.get(r.name.split("#")[0]), kinds)]
        running, depths = 0, {}
        for r in report.rows:
            running += r.macs
            depths[r.name] = running
        units = sum(r.output_shape[1] for r in layers)
        cpu_h = sum(r.output_shape[1] * 128 * (a + b * depths[r.name]) for r in layers) / 1000 / 3600
        # Assumed, not measured: a step of a chunk of 32 units takes the longer of its flops at 20 TFLOP/s
        # (fp32, forward and backward ~ 3 x 2 x MACs per picture) and 10 ms (kernel launches).
        gpu_s = sum(
            -(-r.output_shape[1] // GPU_CHUNK)
            * 128
            * max(GPU_STEP_S, GPU_CHUNK * 6 * depths[r.name] / GPU_FLOPS)
            for r in layers
        )
        print(f"| {name} | {units:,} | {cpu_h:.1f} | {cpu_h / 8 * scale:.1f} (4 machines like this one, 2 ranks each) | "
              f"{gpu_s / 3600:.2f} / {gpu_s / 8 / 3600:.2f} |")  # fmt: skip


#: The GPU projection's assumptions (nothing here has run on a GPU): units per job (chunk_size on CUDA),
#: sustained fp32 flop rate, and the shortest step of a job (launch-bound).
GPU_CHUNK, GPU_FLOPS, GPU_STEP_S = 32, 20e12, 0.010


def _macs_to(report: Any, model: torch.nn.Module, layer: str) -> int:
    """The multiply-accumulates of a forward that stops after ``layer`` (a container: after its last row)."""
    running, last = 0, 0
    for r in report.rows:
        running += r.macs
        if r.name == layer or r.name.startswith(layer + "."):
            last = running
    return last


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``ms = a + b * macs`` through ``points`` (a and b at least 0)."""
    xs, ys = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    b = (
        float(np.polyfit(xs, ys, 1)[0])
        if len(points) > 1 and np.ptp(xs) > 0
        else float(ys.mean() / xs.mean())
    )
    b = max(b, 0.0)
    return max(float((ys - b * xs).mean()), 0.0), b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="digits,resnet18,ranks,cost")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rank-images", type=int, default=96, help="pictures for the Lite0 rank comparison")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the Lite0 rank comparison")
    parser.add_argument(
        "--site", type=Path, help="keep the last 2-rank Lite0 site here (for the docs figures)"
    )
    parser.add_argument("--sizes", default="128,224", help="picture sizes of the cost model")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--case")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pictures", type=Path)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args()
    if args.worker:
        if args.threads:
            torch.set_num_threads(args.threads)
        worker(args.case, args.out, args.pictures, args.result)
        return
    print(
        f"# convlens atlas: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print(f"before: load average {os.getloadavg()[0]:.2f} (1 min)")
    print()
    cases = args.cases.split(",")
    builds = [case for case in cases if case in ("digits", "resnet18")]
    if builds:
        print(
            "| case | units | dataset | first run s | resumed run s | peak RSS MiB | of it, the build MiB |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for case in builds:
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
        speedup = compare_ranks(root, args.rank_images, args.rounds, args.site) if "ranks" in cases else None
        if "cost" in cases:
            cost_model([int(s) for s in args.sizes.split(",")], speedup)
    print()
    print(f"after: load average {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
