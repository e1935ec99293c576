"""The figure of docs/concepts.rst: pretrained EfficientNet-Lite0's concepts at a late layer, over photographs.

What it does:

1. Writes ``--pictures`` (default 360, 40 per photograph) crops of nine photographs that ship
   inside installed packages (nothing is downloaded): scikit-image's astronaut, chelsea (a cat), coffee, rocket,
   motorcycle_left and hubble_deep_field, scikit-learn's china and flower, matplotlib's
   grace_hopper. Each crop is a seeded random square (side between 96 px and the photo's short
   side), flipped half the time, resized to 160 px, and saved as PNG into one folder per photograph.
2. ``convlens.concepts(lite0, LAYER, PictureFolder(..., preset="lecture"), N, k=K)``: the
   defaults otherwise (NMF, importance for each picture's predicted class, top examples kept).
3. ``convlens.concept_pictures(lite0, LAYER, result.bank, normalize="lecture", steps=STEPS,
   input_shape=(1, 3, SIZE, SIZE))``: one picture per concept (64 steps at 160 px).
4. Draws one row per concept: its picture, then its top ``K`` examples with the coefficient map
   (:meth:`~convlens.ConceptsResult.heatmaps`) over each (:func:`convlens.overlay`), and above them
   the ImageNet classes the concept is most important for.

Steps 2 and 3 are saved to ``--cache`` (``bench/out/concepts_figure.pt``), so the figure redraws
without computing (``--stage draw``; ``--stage concepts`` and ``--stage pictures`` run one
step each). Needs ``pip install -e '.[bench]'``. On two idle CPU cores: 30 s for the concepts, 15 s
for the pictures; two runs write the same bytes.

Run::

    python bench/concepts_figure.py --out docs/_static/concepts_lite0.jpg
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from topk import load_lite0
from torch import Tensor

import convlens as cl

LAYER = "_swish#1"  # the head's ReLU6: what the classifier reads (see bench/concepts.py)
N, K = 8, 6
STEPS, SIZE = 64, 160
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
    "china",
    "flower",
    "grace_hopper",
)


def photographs() -> dict[str, np.ndarray]:
    """The nine photographs as HWC uint8 RGB arrays, by name."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    found: dict[str, np.ndarray] = {}
    for name in PHOTOS:
        if name in ("china", "flower"):
            found[name] = load_sample_image(f"{name}.jpg")
        elif name == "grace_hopper":  # matplotlib's sample photograph
            found[name] = np.asarray(cl.images.sample_image().convert("RGB"))
        elif name == "motorcycle_left":
            found[name] = data.stereo_motorcycle()[0]  # type: ignore[no-untyped-call]
        else:
            found[name] = getattr(data, name)()
    return {name: photo[:, :, :3] for name, photo in found.items()}


def make_crops(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` 160 px crops, cycling over the photographs, into one folder per photograph."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = photographs()
    names = list(photos)
    for i in range(count):
        name = names[i % len(names)]
        photo = photos[name]
        side = int(rng.integers(96, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        patch = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(patch)).resize((160, 160)).save(folder / name / f"{i:04d}.png")


def compute(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Step 2: the concepts, as plain tensors and numbers."""
    model = load_lite0()
    data = cl.images.PictureFolder(folder, preset="lecture")
    started = time.perf_counter()
    result = cl.concepts(model, args.layer, data, args.n, k=args.k, batch_size=32, progress=True)
    print(f"concepts: {time.perf_counter() - started:.0f} s")
    assert result.inputs is not None
    assert result.importance is not None
    assert result.classes is not None
    return {
        "layer": args.layer,
        "pictures": len(data),
        "photos": {name: sum(1 for _, c in data.samples if data.classes[c] == name) for name in data.classes},
        "error": result.error,
        "explained": result.explained,
        "bank": result.bank,
        "indices": result.indices,
        "inputs": (result.inputs * 0.5 + 0.5).clamp(0, 1),  # the "lecture" preset undone
        "heatmaps": result.heatmaps(),
        "importance": result.importance,
        "classes": result.classes,
        "class_counts": result.class_counts,
        "top_classes": [result.top_classes(i, 3) for i in range(result.n)],
        "sources": [str(data.samples[int(i)][0].relative_to(folder)) for i in result.indices.flatten()],
        "picture": None,
    }


def pictures(saved: dict[str, Any], args: argparse.Namespace) -> Tensor:
    """Step 3: one picture per concept of the saved bank, ``(n, 3, size, size)`` in [0, 1]."""
    started = time.perf_counter()
    drawn = cl.concept_pictures(
        load_lite0(),
        saved["layer"],
        saved["bank"],
        normalize="lecture",
        steps=args.steps,
        input_shape=(1, 3, args.size, args.size),
    )
    print(f"pictures: {time.perf_counter() - started:.0f} s ({args.steps} steps at {args.size} px)")
    assert drawn.picture is not None
    return drawn.picture.detach().cpu()


def draw(saved: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = cl.images.imagenet_classes()
    inputs: Tensor = saved["inputs"]
    heat: Tensor = saved["heatmaps"]
    n, k = inputs.shape[:2]
    drawn = saved["picture"] is not None
    first = 1 if drawn else 0
    fig, axes = plt.subplots(n, k + first, figsize=(1.25 * (k + first), 1.5 * n), squeeze=False)
    for i in range(n):
        if drawn:
            axes[i, 0].imshow(saved["picture"][i].permute(1, 2, 0).numpy())
        for j in range(k):
            axes[i, j + first].imshow(cl.overlay(inputs[i, j], heat[i, j], alpha=0.45))
        top = ", ".join(f"{names[c].split(',')[0]} {v:+.2f}" for c, v in saved["top_classes"][i][:2])
        label = f"concept {i}: most important for {top}"
        axes[i, first].text(
            0, 1.05, label, transform=axes[i, first].transAxes, ha="left", va="bottom", fontsize=8
        )
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if drawn:
        axes[0, 0].set_title(f"its picture ({saved['steps']} steps)", fontsize=8)
    fig.suptitle(
        f"EfficientNet-Lite0 at {saved['layer']}: {n} concepts over {saved['pictures']} photo crops "
        f"(explained variance {saved['explained']:.2f})",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.955, bottom=0.005, wspace=0.04, hspace=0.22)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, pil_kwargs={"quality": 85} if out.suffix in (".jpg", ".jpeg") else None)
    plt.close(fig)


def describe(saved: dict[str, Any]) -> None:
    """Prints what the figure shows, for writing the docs' note: per concept its examples' sources."""
    names = cl.images.imagenet_classes()
    n, k = saved["indices"].shape
    print(
        f"{saved['pictures']} pictures {saved['photos']}; error {saved['error']:.3f}, explained {saved['explained']:.3f}"
    )
    for i in range(n):
        sources = [s.split("/")[0] for s in saved["sources"][i * k : (i + 1) * k]]
        top = "; ".join(f"{names[c]} {v:+.3f}" for c, v in saved["top_classes"][i])
        print(f"concept {i}: examples from {sources}; most important for {top}")
    counts = saved["class_counts"].tolist()
    print(
        "predicted classes:",
        ", ".join(
            f"{names[int(c)].split(',')[0]} ({m})" for c, m in zip(saved["classes"], counts, strict=True)
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/concepts_lite0.jpg"))
    parser.add_argument("--cache", type=Path, default=Path("bench/out/concepts_figure.pt"))
    parser.add_argument(
        "--stage",
        choices=("all", "concepts", "pictures", "draw"),
        default="all",
        help="concepts: step 2 only; pictures: step 3 on the cached concepts; draw: from the cache only",
    )
    parser.add_argument("--pictures", type=int, default=360)
    parser.add_argument("--folder", type=Path, default=Path("bench/out/concepts_photos"))
    parser.add_argument("--layer", default=LAYER)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--size", type=int, default=SIZE, help="the concept pictures' side in pixels")
    args = parser.parse_args()
    if args.stage in ("all", "concepts"):
        if not args.folder.exists():
            make_crops(args.folder, args.pictures)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(compute(args.folder, args), args.cache)
    saved = torch.load(args.cache, weights_only=False)
    if args.stage in ("all", "pictures"):
        saved["picture"], saved["steps"] = pictures(saved, args), args.steps
        torch.save(saved, args.cache)
    describe(saved)
    draw(saved, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
