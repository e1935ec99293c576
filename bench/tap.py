"""LayerTap on every conv of resnet50 against a plain forward.

DESIGN target: LayerTap <= 1.03x a plain forward, with zero copied activations
on resnet50 (nothing there rewrites a conv's output in place: each conv feeds a
BatchNorm). DESIGN's Performance table says <= 1.05x.

Run: python bench/tap.py [--batch 4] [--rounds 21] [--warmup 2]

Setup: torchvision resnet50 (``weights=None``, ``torch.manual_seed(0)``, eval),
a seeded random input of ``--batch`` x 3 x 224 x 224, a tap on every
``nn.Conv2d`` (53). Methods:

- plain forward (floor): ``with torch.no_grad(): model(x)``.
- with LayerTap: model(x): a new ``cl.LayerTap(model, convs)``, then
  ``with torch.no_grad(), tap: model(x)``.
- tap.run(x): a new ``cl.LayerTap(model, convs)``, then ``tap.run(x)``. It
  stops right after the last conv (``layer4.2.conv3``), so it skips that
  block's bn3, relu and residual add, the pooling and the fc: well under 1% of
  the forward.
- tap.run(x), device='cpu': the same with ``LayerTap(..., device="cpu")``.
- hand-written hooks keeping the outputs: a forward hook on each conv that
  appends its output to a fresh list, removed after the call. Not convlens:
  the floor of *recording* (53 outputs kept alive cost fresh memory, page
  faults and all, which no recorder can avoid), printed as a second column.
- one tap reused across calls: one ``LayerTap`` built before the rounds,
  ``tap.run(x)`` per call (its probe cached per input signature, as in a loop
  over a dataset); its record is dropped after each call, outside the timing.

Building the LayerTap is part of what a user pays, so every fresh method builds
its objects inside the timed call. A new tap finds the meta-device probe that an
earlier tap on the same model, layers and input signature ran (the probes are
shared per model: ``convlens.core.probe.Prober``), so only the warm-up rounds
pay a meta pass; what one costs is printed apart. What a call returns (the output, the tap and its
activations) is dropped, with ``gc.collect()``, outside the timed region before
the next method runs (``common.rounds``).

Timing: ``--warmup`` rounds, then ``--rounds`` rounds; each round runs every
method once, odd rounds in reverse order. "x floor" is each method's time over
the floor's time in the same round; the table gives the median and the IQR of
those per-round ratios (paired, so a burst of outside load that hits one round
cancels out) beside the plain median ms. A tapped forward that beats its floor
is a flaw in the benchmark until explained: the script warns below 0.98x.

Before timing it checks once that ``tap.run(x)["conv1"]`` equals
``model.conv1(x)`` and that the ``with`` block and the ``device="cpu"`` run record
exactly what ``tap.run`` does (``torch.equal``); it exits non-zero otherwise.
After the rounds it prints, from fresh taps, what building a LayerTap costs,
what a fresh tap pays to find its probe (``tap.probe(x)``: the structure key and
the shared cache's lookup), and what one meta-device pass costs when nothing is
cached (``convlens.core.probe.probe``: it counts the tapped calls and sees which
outputs a later op rewrites), each as a ratio to a plain forward timed beside
it. Every fresh tap pays its build and the lookup (``run`` before the forward,
the ``with`` block when the model's forward begins); the reused tap pays
neither (its own cache answers first).
Copies: ``tap.copied`` (the activation keys copied during the last forward,
where the library has it; "n/a" before) from every recorded round.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch
import torchvision
from common import load_line, per_round_ratios, quartiles, rounds
from torch import Tensor, nn

import convlens as cl
from convlens.core.probe import probe

FLOOR = "plain forward (floor)"
WITH = "with LayerTap: model(x)"
RUN = "tap.run(x)"
RUN_CPU = "tap.run(x), device='cpu'"
HANDS = "hand-written hooks keeping the outputs"
REUSED = "one tap reused across calls: tap.run(x)"
TAPPED = (WITH, RUN, RUN_CPU, REUSED)


def copied_of(tap: cl.LayerTap) -> frozenset[str] | None:
    copied = getattr(tap, "copied", None)
    return None if copied is None else frozenset(copied)


def describe_copies(seen: list[frozenset[str] | None], tapped: int) -> str:
    if not seen or all(c is None for c in seen):
        return "n/a (this LayerTap has no `copied` property yet)"
    counts = sorted({len(c) for c in seen if c is not None})
    names = sorted(set().union(*(c for c in seen if c is not None)))
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    count = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    notes = ([] if len(counts) == 1 else ["varies by round"]) + ([shown] if names else [])
    return f"{count} of {tapped}" + (f" ({'; '.join(notes)})" if notes else "")


def verify(model: nn.Module, convs: list[str], x: Tensor) -> dict[str, Tensor]:
    """The correctness checks; returns tap.run's activations, or exits non-zero."""
    failures = []
    with torch.no_grad():
        direct = model.get_submodule("conv1")(x)
    acts = cl.LayerTap(model, convs).run(x)
    if len(acts) != len(convs):
        failures.append(f"tap.run recorded {len(acts)} activations, expected {len(convs)}")
    if "conv1" not in acts or not torch.equal(acts["conv1"], direct):
        failures.append('tap.run(x)["conv1"] differs from model.conv1(x)')
    block = cl.LayerTap(model, convs)
    with torch.no_grad(), block:
        model(x)
    on_cpu = cl.LayerTap(model, convs, device="cpu").run(x)
    for what, other in (("the with block", block.activations), ("device='cpu' run", on_cpu)):
        if other.keys() != acts.keys():
            failures.append(f"{what} recorded keys {sorted(other.keys() ^ acts.keys())} differently")
        else:
            differ = [k for k in acts if not torch.equal(other[k], acts[k])]
            if differ:
                failures.append(f"{what} differs from tap.run at {len(differ)} layers, e.g. {differ[0]}")
    if failures:
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    return acts


def fresh_costs(
    model: nn.Module, convs: list[str], x: Tensor, repeats: int = 5
) -> dict[str, tuple[float, float]]:
    """Building a LayerTap, finding its shared probe, and one uncached meta pass: median ms and x floor.

    Finding the probe is what a fresh tap pays on top of its build (``tap.probe(x)``,
    what ``run`` calls); the uncached pass is what the first tap on a model and input
    signature pays. Each repeat times a plain forward next to them, so the ratios
    are paired like the table's.
    """
    modules = {name: model.get_submodule(name) for name in convs}
    costs: dict[str, list[tuple[float, float]]] = {"build": [], "lookup": [], "meta pass": []}
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        with torch.no_grad():
            out = model(x)
        floor = time.perf_counter() - start
        del out
        gc.collect()
        start = time.perf_counter()
        tap = cl.LayerTap(model, convs)
        built = time.perf_counter()
        tap.probe(x)
        found = time.perf_counter()
        probe(model, (x,), watched=modules)
        probed = time.perf_counter()
        del tap
        for name, seconds in (
            ("build", built - start),
            ("lookup", found - built),
            ("meta pass", probed - found),
        ):
            costs[name].append((seconds, seconds / floor))
    median = statistics.median
    return {name: (median(s for s, _ in v), median(r for _, r in v)) for name, v in costs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    before = load_line()
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]

    acts = verify(model, convs, x)
    stored = sum(t.numel() * t.element_size() for t in acts.values())
    del acts

    def plain() -> object:
        with torch.no_grad():
            return model(x)

    def with_block() -> object:
        tap = cl.LayerTap(model, convs)
        with torch.no_grad(), tap:
            out = model(x)
        return tap, out

    def run() -> object:
        tap = cl.LayerTap(model, convs)
        return tap, tap.run(x)

    def run_on_cpu() -> object:
        tap = cl.LayerTap(model, convs, device="cpu")
        return tap, tap.run(x)

    modules = [model.get_submodule(name) for name in convs]

    def hands() -> object:
        kept: list[Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _a, out: kept.append(out)) for m in modules]
        try:
            with torch.no_grad():
                model(x)
        finally:
            for handle in handles:
                handle.remove()
        return kept

    reused = cl.LayerTap(model, convs)
    reused.run(x)  # its probe, once

    def run_reused() -> object:
        return reused, reused.run(x)

    copies: dict[str, list[frozenset[str] | None]] = {name: [] for name in TAPPED}

    def keep(name: str, result: object) -> None:
        if isinstance(result, tuple) and isinstance(result[0], cl.LayerTap):
            copies[name].append(copied_of(result[0]))
            if result[0] is reused:
                reused._clear()  # drop its record outside the timing, like a fresh tap's

    methods = {
        FLOOR: plain,
        HANDS: hands,
        WITH: with_block,
        RUN: run,
        RUN_CPU: run_on_cpu,
        REUSED: run_reused,
    }
    times = rounds(methods, count=args.rounds, warmup=args.warmup, keep=keep)
    ratios = per_round_ratios(times, FLOOR)
    recording = per_round_ratios(times, HANDS)
    costs = fresh_costs(model, convs, x)
    after = load_line()

    print(
        f"resnet50, batch {args.batch}, 224x224, {len(convs)} convs tapped, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.rounds} rounds after {args.warmup} warm-up rounds, "
        "order reversed on odd rounds"
    )
    print(f"before: {before}")
    print(f"after: {after}")
    print()
    print(
        "| method | median ms | median x floor (per-round) | IQR of x floor | median x hand-written hooks |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in methods:
        q1, _, q3 = quartiles(ratios[name])
        versus = "" if name == FLOOR else f"{statistics.median(recording[name]):.3f}"
        print(
            f"| {name} | {statistics.median(times[name]) * 1e3:.1f} | "
            f"{statistics.median(ratios[name]):.3f} | {q1:.3f}-{q3:.3f} | {versus} |"
        )
    print()
    print(f"memory: the {len(convs)} recorded activations of a tap.run hold {stored / 2**20:.1f} MiB")
    for name in TAPPED:
        print(f"copied activations, {name}: {describe_copies(copies[name], len(convs))}")
    (build, build_x), (lookup, lookup_x), (meta, meta_x) = costs["build"], costs["lookup"], costs["meta pass"]
    print(
        f"inside the tapped rows (median of 5, after the rounds): building LayerTap(model, {len(convs)} convs) "
        f"{build * 1e3:.1f} ms ({build_x:.3f}x floor); finding its shared probe (every fresh tap) "
        f"{lookup * 1e3:.2f} ms ({lookup_x:.3f}x floor)"
    )
    print(
        f"not inside them: one meta-device pass, uncached (once per model, layers and input signature) "
        f"{meta * 1e3:.1f} ms ({meta_x:.3f}x floor)"
    )
    beaten = [name for name in TAPPED if statistics.median(ratios[name]) < 0.98]
    for name in beaten:
        print(
            f"WARNING: {name} beat its floor ({statistics.median(ratios[name]):.3f}x < 0.98): "
            "a tapped forward cannot be faster than a plain one; this needs explaining"
        )


if __name__ == "__main__":
    main()
