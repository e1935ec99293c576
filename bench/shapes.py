"""Shape table: cl.trace_shapes against torchinfo.summary and a real forward (vgg16, resnet50 at 224).

DESIGN target: <= 10 ms (vgg16) and <= 20 ms (resnet50), < 10 MiB extra memory, nothing kept.

Run: python bench/shapes.py [--repeats 15] [--models vgg16 resnet50]

Timing: the three methods run interleaved in one process, median of ``--repeats``;
then trace_shapes alone, back-to-back (a real forward streams the weights through
the CPU caches and leaves the next, Python-bound, trace ~1.5x slower).
Memory: each (model, method) runs in a fresh subprocess (so nothing one method
leaves behind colours another). There, after ``gc.collect()``, the kernel's
peak-RSS counter is reset (``/proc/self/clear_refs``) and one call is made:
"peak extra RSS" = VmHWM during the call - VmRSS before it, for the first call
in the process and for the second. It sees every allocation, torch's C++ ones
included, but not memory the allocator already holds from an earlier call (so
the second call of a real forward reuses the first one's freed blocks). "Python peak" is the
``tracemalloc`` peak of a further call (Python-side objects only; torch tensor
storage is invisible to it). "model kept" tells whether the model is still alive
after the caller drops every reference it holds and runs ``gc.collect()``.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import subprocess
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from common import interleaved, load_line
from torch import nn

import convlens as cl

SIZE = (1, 3, 224, 224)
MiB = 1024 * 1024


def methods() -> dict[str, Callable[[nn.Module], object]]:
    import torchinfo

    def real(model: nn.Module) -> object:
        with torch.no_grad():
            return model(torch.zeros(SIZE))

    return {
        "cl.trace_shapes": lambda model: cl.trace_shapes(model, SIZE),
        "torchinfo.summary": lambda model: torchinfo.summary(model, input_size=SIZE, verbose=0),
        "real forward (no_grad)": real,
    }


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = getattr(torchvision.models, name)(weights=None).eval()
    return model


def _status(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match[1]) * 1024 if match else 0


def measure_memory(model_name: str, method: str) -> dict[str, object]:
    """Run in a fresh process: peak extra RSS, tracemalloc peak, whether the model stays alive."""
    fn = methods()[method]
    model = build(model_name)
    peaks = []
    for _ in range(2):  # cold (first call in the process), then warm
        gc.collect()
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        result = fn(model)
        peaks.append((_status("VmHWM") - before) / MiB)
        del result
    tracemalloc.start()
    result = fn(model)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    ref = weakref.ref(model)
    del model
    gc.collect()
    return {"cold": peaks[0], "warm": peaks[1], "py_peak": py_peak / MiB, "kept": ref() is not None}


def memory_rows(models: list[str]) -> list[str]:
    rows = []
    for model_name in models:
        for method in methods():
            out = subprocess.run(
                [sys.executable, __file__, "--memory", model_name, method],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            m = json.loads(out.strip().splitlines()[-1])
            rows.append(
                f"| {model_name} | {method} | {m['cold']:.1f} | {m['warm']:.1f} | {m['py_peak']:.2f} | "
                f"{'yes' if m['kept'] else 'no'} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--memory", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(measure_memory(*args.memory)))
        return
    print(
        f"shape table at {SIZE}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"before: {load_line()}"
    )
    print()
    print("| model | method | median ms | x trace_shapes |")
    print("|---|---|---:|---:|")
    for name in args.models:
        model = build(name)
        calls = {k: (lambda f=f, m=model: f(m)) for k, f in methods().items()}
        medians = interleaved(calls, repeats=args.repeats)
        ours = medians["cl.trace_shapes"]
        # The heavy methods evict the interpreter's caches; this is the same call back-to-back.
        alone = interleaved({"": calls["cl.trace_shapes"]}, repeats=args.repeats)[""]
        for method, seconds in [*medians.items(), ("cl.trace_shapes, back-to-back", alone)]:
            print(f"| {name} | {method} | {seconds * 1e3:.1f} | {seconds / ours:.2f}x |")
        del model, calls
        gc.collect()
    print()
    print(
        "| model | method | peak extra RSS MiB, 1st call | peak extra RSS MiB, 2nd call "
        "| Python peak MiB (tracemalloc) | model kept after call |"
    )
    print("|---|---|---:|---:|---:|---|")
    print("\n".join(memory_rows(args.models)))
    print()
    print(f"after: {load_line()}")


if __name__ == "__main__":
    main()
