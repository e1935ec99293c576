"""Shared timing helpers for the benchmarks: interleaved repeats, paired rounds, medians, load."""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def interleaved(
    methods: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per method, running the methods in turn so drift hits all alike."""
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def rounds(
    methods: Mapping[str, Callable[[], object]],
    *,
    count: int,
    warmup: int = 1,
    keep: Callable[[str, object], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per method per round: each round runs every method once, odd rounds in reverse order.

    Each method should build whatever it uses (a fresh object per call) inside
    itself, so that cost is timed. What a call returns is handed to ``keep``
    (recorded rounds only) and then dropped, with ``gc.collect()``, outside the
    timed region, so memory held by one method cannot help or hurt the next.
    ``warmup`` rounds run the same way and are not recorded.
    """
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for index in range(warmup + count):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            result = methods[name]()
            elapsed = time.perf_counter() - start
            if index >= warmup:
                times[name].append(elapsed)
                if keep is not None:
                    keep(name, result)
            del result
            gc.collect()
    return times


def per_round_ratios(times: Mapping[str, Sequence[float]], floor: str) -> dict[str, list[float]]:
    """Each method's time over the floor's time in the same round (paired: a load burst cancels out)."""
    return {name: [t / f for t, f in zip(ts, times[floor], strict=True)] for name, ts in times.items()}


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile); a single value is all three."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def alias_kornia_for_lucent() -> None:
    """Let torch-lucent 0.1.8 run on a newer kornia; call before importing lucent.

    Lucent calls ``kornia.get_rotation_matrix2d`` and ``kornia.warp_affine``,
    which newer kornia keeps only under ``kornia.geometry.transform``: alias them
    on ``kornia`` where missing (kornia 0.4.1 has both and is left alone). Does
    nothing without kornia (importing lucent then fails, and says why).
    """
    import importlib

    try:
        kornia = importlib.import_module("kornia")
        transform = importlib.import_module("kornia.geometry.transform")
    except Exception:
        return
    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name) and hasattr(transform, name):
            setattr(kornia, name, getattr(transform, name))


def fix_lucent_kornia_version() -> None:
    """After importing lucent: undo its string comparison of kornia versions where it misreads one.

    ``lucent.optvis.transform`` picks the shape of the rotation's scale with
    ``KORNIA_VERSION < '0.4.0'``, a string comparison that calls kornia 0.10 and
    later older than 0.4; there it says "0.4.0" instead (no change for kornia
    0.4 to 0.9).
    """
    import importlib
    import re

    transform = importlib.import_module("lucent.optvis.transform")
    version = str(getattr(transform, "KORNIA_VERSION", ""))
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if len(parts) == 2 and parts >= (0, 4) and version < "0.4.0":
        transform.KORNIA_VERSION = "0.4.0"  # type: ignore[attr-defined]


def run_worker(
    script: str | Path, label: str, *, processes: int, threads: int, arguments: Sequence[str]
) -> None:
    """Run ``script --worker ...arguments`` as ``processes`` gloo ranks (torchrun) or as one process.

    Each process gets ``threads`` threads (``OMP_NUM_THREADS``); the parent's own ``WORLD_SIZE`` is not
    passed down. A worker that fails ends the bench with its stderr's end, named by ``label``.
    """
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += [str(Path(script).resolve()), "--worker", "--threads", str(threads), *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        print(f"FAILED: worker {label!r} exited {done.returncode}:\n{done.stderr[-4000:]}", file=sys.stderr)
        sys.exit(1)
