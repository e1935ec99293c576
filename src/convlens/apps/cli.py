"""The ``convlens`` command.

Example:
    >>> from convlens.apps.cli import main
    >>> main(["layers", "convlens:alphago_policy"])  # doctest: +ELLIPSIS
    name            type         params  leaf
    features        Sequential  3882240  no
    features.0      Conv2d       230592  yes
    ...
    0
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from convlens.apps.atlas import build_atlas
from convlens.apps.cli_parser import parser
from convlens.apps.concepts_page import build_concepts_page
from convlens.apps.tour import run_tour
from convlens.attribution.evaluation import METHODS, evaluate
from convlens.core.checks import check_choice, check_device
from convlens.core.distributed import rank
from convlens.core.layers import list_layers
from convlens.core.shapes import trace_shapes
from convlens.core.tap import LayerTap
from convlens.errors import ConvlensError, InvalidArgumentError, RandomWeightsWarning
from convlens.featureviz.neurons import NeuronVisualizer
from convlens.models import images, zoo
from convlens.render import FilterRenderer, plot_cam, plot_feature_maps, plot_top_examples

__all__ = ["main"]


def _input_size(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise InvalidArgumentError(
            f"--input must be integers separated by commas, like 1,3,224,224; got {text!r}."
        ) from None


def _layers_table(spec: str) -> str:
    infos = list_layers(zoo.create(spec))
    rows = [("name", "type", "params", "leaf")] + [
        (i.name, i.type, str(i.params), "yes" if i.leaf else "no") for i in infos
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows
    )


def _load(args: argparse.Namespace) -> nn.Module:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = zoo.load(args.model, weights=args.weights, seed=args.seed)
    for warning in caught:
        print(f"convlens: warning: {warning.message}", file=sys.stderr)
    return model


def _picture_input(args: argparse.Namespace, model: nn.Module) -> Tensor:
    """The model input for ``--image``: a digit for the digits CNN, else a preset's preprocessing."""
    if isinstance(model, zoo.DigitsCNN):
        if args.image is None:
            digit: Tensor = zoo.digits_dataset("test")[0][0]
            return digit[None]
        gray = images.load_image(args.image).convert("L").resize((28, 28))
        return torch.from_numpy(images.to_rgb_array(gray)[:, :, 0].copy()).float()[None, None] / 255.0
    picture = images.sample_image() if args.image is None else args.image
    return images.preprocess(picture, preset=args.preset)


def _save(figure: Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    print(f"wrote {out}")


def _run(args: argparse.Namespace) -> None:
    if args.command == "tour":
        run_tour(
            args.out,
            sections=args.sections,
            weights=args.weights,
            seed=args.seed,
            quick=args.quick,
            image=args.image,
            device=args.device,
        )
    elif args.command == "layers":
        print(_layers_table(args.model))
    elif args.command == "shapes":
        size = _input_size(args.input) if args.input else zoo.default_input_size(args.model)
        report = trace_shapes(zoo.create(args.model), size)
        print(report.to_markdown() if args.markdown else report)
    elif args.command == "filters":
        model = _load(args)
        renderer = FilterRenderer(model, args.layer, scale=args.scale, note=zoo.weights_note(model))
        _save(renderer.plot(n=args.n, cols=args.cols), args.out)
    elif args.command == "gradcam":
        _gradcam(args)
    elif args.command == "topk":
        _topk(args)
    elif args.command == "evaluate":
        _evaluate(args)
    elif args.command == "atlas":
        _atlas(args)
    elif args.command == "concepts":
        _concepts(args)
    else:
        model = _load(args)
        tap = LayerTap(model, [args.layer])  # validates the layer name before any work
        x = _picture_input(args, model)
        activation = next(iter(tap.run(x).values()))[0]
        title = f"{args.model} {args.layer}: {activation.shape[0]} feature maps"
        figure = plot_feature_maps(
            activation, n=args.n, cols=args.cols, title=title, note=zoo.weights_note(model)
        )
        _save(figure, args.out)


def _gradcam(args: argparse.Namespace) -> None:
    method = METHODS[check_choice("--method", args.method, list(METHODS))]
    model = _load(args)
    cam = method(model, args.layer)  # validates the layer name before any work
    x = _picture_input(args, model)
    names = _classes(args, model, x)
    result = cam(x, target=args.target)
    target = -1 if result.targets is None else int(result.targets[0])
    name = (
        f"{names[target]} ({target})" if names is not None and 0 <= target < len(names) else f"class {target}"
    )
    title = f"{args.method} at {args.layer}: {name}, score {float(result.scores[0]):.2f}"
    picture = x[0, 0] if isinstance(model, zoo.DigitsCNN) else images.deprocess(x, preset=args.preset)
    _save(plot_cam(picture, result.maps[0], title=title, note=zoo.weights_note(model)), args.out)


def _dataset(args: argparse.Namespace, model: nn.Module) -> TensorDataset | images.PictureFolder:
    """``--data``: the digits test set, or a picture folder preprocessed as the model expects."""
    if args.data == "digits":
        return zoo.digits_dataset("test")
    transform: Callable[[Image.Image], Tensor] | None = _gray28 if isinstance(model, zoo.DigitsCNN) else None
    return images.PictureFolder(args.data, preset=args.preset, transform=transform)


def _gray28(picture: Image.Image) -> Tensor:
    """A picture as the digits CNN sees one: grayscale 28x28 in [0, 1]."""
    gray = picture.convert("L").resize((28, 28))
    return torch.from_numpy(images.to_rgb_array(gray)[:, :, 0].copy()).float()[None] / 255.0


def _units(text: str | None) -> list[int] | None:
    if text is None:
        return None
    units: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            units += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        raise InvalidArgumentError(
            f"--units must be integers or ranges separated by commas, like 0,3,7 or 0-15; got {text!r}."
        ) from None
    return units


def _on_device(args: argparse.Namespace, model: nn.Module) -> nn.Module:
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return model.to(check_device(device))


def _topk(args: argparse.Namespace) -> None:
    units = _units(args.units)
    model = _on_device(args, _load(args))
    visualizer = NeuronVisualizer(model, args.layer)  # validates the layer name before any work
    data = _dataset(args, model)
    names = _output_names(args, model, data, visualizer.layer)
    best = visualizer.top_examples(
        data, unit=units, k=args.k, batch_size=args.batch_size, num_workers=args.workers
    )
    if rank() == 0:
        preset = None if isinstance(model, zoo.DigitsCNN) or args.data == "digits" else args.preset
        title = f"{args.model} {args.layer}: the {args.k} of {len(data)} pictures that excite each unit most"
        figure = plot_top_examples(
            best, preset=preset, crops=args.crops, rows=args.rows, title=title, note=zoo.weights_note(model),
            names=names,
        )  # fmt: skip
        _save(figure, args.out)
        units_ranked = best.unit if isinstance(best.unit, list) else [best.unit]
        kind = "channel" if best.positions is not None else "unit"
        for unit, row in list(zip(units_ranked, best.indices.tolist(), strict=True))[: args.rows]:
            label = f"{names[unit]} ({unit})" if names is not None else f"{kind} {unit}"
            print(f"{label}: " + " ".join(f"#{i}" for i in row))


def _evaluate(args: argparse.Namespace) -> None:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    model = _on_device(args, _load(args))
    data = _dataset(args, model)
    result = evaluate(
        model,
        methods,
        data,
        layer=args.layer,
        target=None if args.target == "predicted" else args.target,
        intervals=args.intervals,
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    if rank() == 0:
        print(result.to_markdown() if args.markdown else result)


def _atlas(args: argparse.Namespace) -> None:
    model = _on_device(args, _load(args))
    data = _dataset(args, model)
    pictures = not (isinstance(model, zoo.DigitsCNN) or args.data == "digits")
    site = build_atlas(
        model,
        data,
        args.out,
        layers=args.layers,
        units=args.units or None,
        k=args.k,
        steps=args.steps,
        seeds=args.seeds,
        accents=not args.no_accents,
        preset=args.preset if pictures else None,
        picture_size=args.size if pictures else None,
        title=args.model,
        note=zoo.weights_note(model),
        classes=args.classes if args.classes is not None else zoo.default_classes(args.model),
        batch_size=args.batch_size,
        num_workers=args.workers,
        seed=args.seed,
        concepts=args.concepts or None,
    )
    if rank() == 0:
        print(
            f"wrote {site.index}: {len(site.layers)} layers, {site.units} units "
            f"({site.reused} from the cache) in {site.seconds:.1f} s"
        )


def _concepts(args: argparse.Namespace) -> None:
    model = _on_device(args, _load(args))
    data = _dataset(args, model)
    call = f"convlens concepts {args.model} --layer {args.layer} --data {args.data} --n {args.n} --k {args.k}"
    importance = check_choice("--importance", args.importance, ["gradient", "ablation", "none"])
    if importance != "none" and len(trace_shapes(model, data[0][0][None]).output_shape) != 2:
        importance = "none"  # a segmenter or a feature extractor: no class scores to weigh
        print("convlens: the model gives no (N, classes) scores: no importance.", file=sys.stderr)
    page = build_concepts_page(
        model, args.layer, data, args.n, args.out, method=args.method, k=args.k, target=args.target,
        importance=None if importance == "none" else importance,  # type: ignore[arg-type]
        steps=args.steps, class_names=_classes(args, model, data[0][0][None]),  # checked before any work
        preset=None if isinstance(model, zoo.DigitsCNN) or args.data == "digits" else args.preset,
        title=f"{args.model}: concepts at {args.layer}", note=zoo.weights_note(model), seed=args.seed,
        call=f"{call} --method {args.method}", batch_size=args.batch_size, num_workers=args.workers,
    )  # fmt: skip
    if rank() == 0:
        print(f"wrote {page.index}: {page.line}")


def _classes(args: argparse.Namespace, model: nn.Module, x: Tensor) -> tuple[str, ...] | None:
    """``--classes`` checked against the model's outputs before any work; else the zoo model's own names."""
    if args.classes is None:
        return zoo.default_classes(args.model)
    return images.class_names(args.classes, outputs=_outputs(model, x))


def _output_names(
    args: argparse.Namespace, model: nn.Module, data: TensorDataset | images.PictureFolder, layer: str
) -> tuple[str, ...] | None:
    """The class names for ``topk`` when ``layer`` is the model's output layer (its units are the classes).

    ``--classes`` for another layer is refused before any work; the zoo's own names are then left out.
    """
    x = data[0][0][None]
    rows = trace_shapes(model, x).rows
    if args.classes is not None and rows and rows[-1].name != layer:
        raise InvalidArgumentError(
            f"--classes names the model's output classes, but layer {layer!r} is not its output layer "
            f"({rows[-1].name!r} is): its units are no classes."
        )
    return _classes(args, model, x) if rows and rows[-1].name == layer else None


def _outputs(model: nn.Module, x: Tensor) -> int | None:
    """How many outputs (classes) the model gives for ``x``: dim 1 of its output (probed, no real compute)."""
    shape = trace_shapes(model, x).output_shape
    return shape[1] if len(shape) >= 2 else None


def _init_distributed(device: str) -> bool:
    """Under ``torchrun`` (RANK and WORLD_SIZE set) join the process group: NCCL on CUDA, else gloo.

    Returns whether it did (and so must leave it at the end).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ or dist.is_initialized():
        return False
    nccl = device.startswith("cuda")
    if nccl:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if nccl else "gloo")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a usage or input error)."""
    args = parser().parse_args(argv)
    joined = False
    try:
        if args.command in ("topk", "evaluate", "atlas", "concepts"):
            joined = _init_distributed(args.device)
        _run(args)
    except (ConvlensError, OSError) as err:
        print(f"convlens: error: {err}", file=sys.stderr)
        return 2
    finally:
        if joined:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
