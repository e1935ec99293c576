"""The arguments of the ``convlens`` command (:mod:`convlens.apps.cli` runs them).

Example:
    >>> parser().parse_args(["concepts", "convlens:digits_cnn", "--layer", "features.4", "--data", "digits",
    ...                      "--out", "page", "--target", "label"]).target
    'label'
"""

from __future__ import annotations

import argparse
from pathlib import Path

from convlens.attribution.evaluation import METHODS
from convlens.core.distributed import BATCH_SIZE

__all__ = ["parser"]

_MODEL_HELP = "torchvision:NAME, convlens:NAME or path/to/file.py:factory"


def parser() -> argparse.ArgumentParser:
    """The ``convlens`` command's arguments: one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="convlens", description="Look inside PyTorch convolutional networks."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tour = commands.add_parser("tour", help="reproduce every figure of the CNN lecture")
    tour.add_argument(
        "--out", type=Path, default=Path("tour"), help="folder for the figures (default ./tour)"
    )
    tour.add_argument(
        "--section", action="append", dest="sections", help="only this section (repeatable; default all)"
    )
    tour.add_argument(
        "--weights", default="auto", help="auto, imagenet or random for the ImageNet models (default auto)"
    )
    tour.add_argument("--seed", type=int, default=0, help="seed of random weights and optimizations")
    tour.add_argument("--quick", action="store_true", help="fewer optimization steps")
    tour.add_argument("--image", type=Path, default=None, help="your own picture, through the whole tour")
    tour.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")

    layers = commands.add_parser("layers", help="list a model's layers and their parameters")
    layers.add_argument("model", help=_MODEL_HELP)

    shapes = commands.add_parser("shapes", help="trace every layer's output shape (no real compute)")
    shapes.add_argument("model", help=_MODEL_HELP)
    shapes.add_argument("--input", help="input size, e.g. 1,3,224,224 (default: the model's usual one)")
    shapes.add_argument("--markdown", action="store_true", help="print a Markdown table")

    filters = commands.add_parser("filters", help="draw a conv layer's learned filters")
    featuremaps = commands.add_parser("featuremaps", help="draw a layer's feature maps for a picture")
    gradcam = commands.add_parser("gradcam", help="a class activation map over a picture")
    for sub in (filters, featuremaps, gradcam):
        sub.add_argument("model", help=_MODEL_HELP)
        sub.add_argument("--layer", required=True, help="qualified layer name, e.g. features.0")
        sub.add_argument("--out", required=True, type=Path, help="where to save the PNG")
        sub.add_argument(
            "--weights", default="auto", help="auto, imagenet, random or a state-dict path (default auto)"
        )
        sub.add_argument("--seed", type=int, default=0, help="seed of random weights (default 0)")
    for sub in (filters, featuremaps):
        sub.add_argument("--n", type=int, default=32, help="at most this many panels (default 32)")
        sub.add_argument("--cols", type=int, default=8, help="panels per row (default 8)")
    for sub in (featuremaps, gradcam):
        sub.add_argument("--image", type=Path, help="picture to look at (default: a sample photo)")
        sub.add_argument(
            "--preset", default="imagenet", help="preprocessing: imagenet or lecture (default imagenet)"
        )
    topk = commands.add_parser("topk", help="the dataset pictures that excite each unit of a layer most")
    evaluation = commands.add_parser(
        "evaluate", help="score CAM methods over a dataset (deletion, insertion, drop)"
    )
    concepts = commands.add_parser("concepts", help="a layer's concepts over a dataset, as an offline page")
    for sub in (topk, evaluation, concepts):
        sub.add_argument("model", help=_MODEL_HELP)
        sub.add_argument("--layer", required=True, help="qualified layer name, e.g. features.0")
        sub.add_argument(
            "--data", required=True, help="a picture folder (ImageFolder layout or flat), or 'digits'"
        )
        sub.add_argument(
            "--weights", default="auto", help="auto, imagenet, random or a state-dict path (default auto)"
        )
        sub.add_argument("--seed", type=int, default=0, help="seed of random weights (default 0)")
        sub.add_argument(
            "--preset", default="imagenet", help="preprocessing: imagenet or lecture (default imagenet)"
        )
        sub.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help=f"pictures per forward (default {BATCH_SIZE})"
        )
        sub.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
        sub.add_argument(
            "--device", default="cpu", help="cpu, cuda (under torchrun: each rank's own GPU), cuda:N or mps"
        )
    topk.add_argument("--units", help="units or channels to rank, e.g. 0,3,7 or 0-15 (default all)")
    topk.add_argument("--k", type=int, default=9, help="examples per unit (default 9)")
    topk.add_argument("--rows", type=int, default=16, help="at most this many units drawn (default 16)")
    topk.add_argument("--crops", action="store_true", help="draw each receptive-field window alone")
    topk.add_argument("--out", required=True, type=Path, help="where to save the PNG")
    atlas = commands.add_parser("atlas", help="an offline site: a page per layer and per unit of your model")
    atlas.add_argument("model", help=_MODEL_HELP)
    atlas.add_argument(
        "--data", required=True, help="a picture folder (ImageFolder layout or flat), or 'digits'"
    )
    atlas.add_argument("--out", required=True, type=Path, help="the site's folder (index.html inside)")
    atlas.add_argument("--layers", nargs="+", help="layer names (default: every conv and Linear layer)")
    atlas.add_argument(
        "--units", type=int, default=16, help="the first N units of each layer (default 16; 0: all)"
    )
    atlas.add_argument("--k", type=int, default=8, help="top dataset examples per unit (default 8)")
    atlas.add_argument("--steps", type=int, default=128, help="feature visualization steps (default 128)")
    atlas.add_argument(
        "--no-accents", action="store_true", help="do not accentuate each unit's top example (faster)"
    )
    atlas.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="draw each unit from this many seeds; 2 or more: show its stability",
    )
    atlas.add_argument(
        "--size", type=int, default=128, help="feature visualization side in pixels (default 128)"
    )
    for option, default, text in (
        ("--weights", "auto", "auto, imagenet, random or a state-dict path (default auto)"),
        ("--preset", "imagenet", "preprocessing: imagenet or lecture (default imagenet)"),
        ("--device", "cpu", "cpu, cuda (under torchrun: each rank's own GPU), cuda:N or mps"),
    ):
        atlas.add_argument(option, default=default, help=text)
    atlas.add_argument("--seed", type=int, default=0, help="seed of random weights and pictures (default 0)")
    atlas.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help=f"pictures per forward (default {BATCH_SIZE})"
    )
    atlas.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    atlas.add_argument(
        "--concepts", type=int, default=6, help="concepts on each layer's page (default 6; 0: none)"
    )
    evaluation.add_argument(
        "--methods", default="gradcam,gradcam++,layercam", help=f"comma-separated, of {', '.join(METHODS)}"
    )
    evaluation.add_argument(
        "--intervals",
        "--steps",  # the old spelling, kept for one release
        dest="intervals",
        type=int,
        default=50,
        help="deletion/insertion curves have intervals + 1 points (default 50; --steps is the old name)",
    )
    evaluation.add_argument(
        "--target", default="predicted", help="class explained: predicted or label (default predicted)"
    )
    evaluation.add_argument("--markdown", action="store_true", help="print a Markdown table")
    filters.add_argument(
        "--scale", default="symmetric", help="symmetric, lecture or minmax (default symmetric)"
    )
    gradcam.add_argument("--target", type=int, help="class index to explain (default: the predicted class)")
    concepts.add_argument("--n", type=int, default=10, help="concepts in the bank (default 10)")
    concepts.add_argument("--k", type=int, default=9, help="top examples per concept (default 9)")
    concepts.add_argument("--method", default="nmf", help="nmf (activations >= 0) or semi-nmf (default nmf)")
    concepts.add_argument("--steps", type=int, default=128, help="steps of each concept's picture (0: none)")
    concepts.add_argument("--target", type=_target, help="class for the importance: predicted, label or N")
    concepts.add_argument(
        "--importance",
        default="gradient",
        help="gradient (x coefficient), ablation, or none (default gradient; none where the model gives "
        "no (N, classes) scores)",
    )
    concepts.add_argument("--out", required=True, type=Path, help="the page's folder (index.html inside)")
    for sub in (gradcam, topk, atlas, concepts):
        sub.add_argument(
            "--classes",
            help="names of the output classes: imagenet, or a file with one name per line or a JSON list "
            "(default: the zoo model's own, if known)",
        )
    gradcam.add_argument("--method", default="gradcam", help=f"one of {', '.join(METHODS)} (default gradcam)")
    return parser


def _target(text: str) -> int | str | None:
    """``--target`` of ``concepts``: a class index, ``"label"``, or None for ``"predicted"``."""
    return int(text) if text.isdigit() else None if text == "predicted" else text
