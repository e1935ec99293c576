"""Grad-CAM: convlens beside a hand-written floor, captum, pytorch-grad-cam and torchcam.

DESIGN target: <= 1.05x the floor, peak memory near a plain forward, nothing
retained between calls, and correct at alexnet ``features.10`` (a conv followed
by ``ReLU(inplace=True)``).

Run: python bench/gradcam.py [--repeats 11] [--repeats-16 7]

Cases: resnet18 ``layer4`` and alexnet ``features.12`` at batch 1 and 16, input
224x224, seeded random weights (``weights=None``, ``torch.manual_seed(0)``),
seeded random inputs. Every method returns ``(N, 224, 224)`` maps in [0, 1] for
each sample's predicted class, so each timed call includes the upsampling and
min-max it needs to get there:

- floor: one forward under ``no_grad``; a forward hook on the layer makes its
  output a leaf that requires grad and turns autograd on from there; argmax
  from that forward's logits; ``torch.autograd.grad`` of the summed scores to
  the leaf only; ``relu(sum_k mean(grad_k) A_k)``; bilinear upsampling
  (``align_corners=False``); min-max. It returns the leaf itself from the hook
  (no clone: nothing in-place follows ``layer4`` or ``features.12``).
- convlens: ``cl.GradCAM(model, layer)(x)`` (target None: argmax in the same
  pass), constructed once outside the timing. Its first call on a new input
  shape runs a meta-device probe (then cached): reported separately, from fresh
  objects once everything else is warm.
- captum: ``LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)``
  then ``LayerAttribution.interpolate(..., "bilinear")`` and min-max. captum
  needs an explicit target: "given" passes the argmax computed beforehand,
  outside the timing; "argmax" pays the extra no-grad forward that finds it.
- pytorch-grad-cam: ``GradCAM(model, target_layers=[layer])(x, targets=None)``
  (argmax in the same pass); it returns numpy, already upsampled (cv2) and
  min-max scaled. Built once outside the timing (it hooks in ``__init__``),
  released at the end.
- torchcam: ``scores = model(x)`` under grad, ``class_idx`` = its argmax (same
  pass), ``GradCAM(model, layer)(class_idx, scores)``; its layer-resolution
  map is upsampled like the floor's and min-max scaled again. Hooks removed
  at the end.

Each method gets its own deep copy of the model (same weights), so the hooks
and state a library leaves on its model never touch another method's forward.

Timing: one process, the methods interleaved (``common.interleaved``), median
of ``--repeats`` rounds at batch 1 and ``--repeats-16`` at batch 16; the
agreement pass before it doubles as the warm-up round. "x floor" is the median
over rounds of each round's time over the floor's time in that same round
(paired, so a burst of outside load that hits one round cancels out); "median
ms" is the plain median. The convlens first-call line compares a fresh
object's first call with its own second call, pair by pair.

Agreement: each method's maps against convlens's, max absolute difference and
Pearson correlation over all pixels of the batch.

Memory: each (case, method) runs in a fresh subprocess with
``MALLOC_MMAP_THRESHOLD_=65536``, so glibc serves every tensor of 64 KiB or more
with its own mapping and returns it to the kernel when freed; RSS then tracks
live tensor memory instead of what the allocator keeps cached. There the model
is built, one plain no-grad forward warms the kernels, the method is
constructed, and after ``gc.collect()`` the base RSS is read; then two calls,
each result dropped and ``gc.collect()`` run after it. "peak extra" = VmHWM
during the 2nd call (reset through ``/proc/self/clear_refs`` before it) minus
the base: the steady-state footprint of a call, including what the previous
call left behind. "retained" = RSS after the 2nd call minus the base (the
first call's one-off costs, such as convlens's probe cache or a kernel's
first-use buffers, land here too, a MiB or two; compare with the floor's row).
RSS sees every allocation, torch's C++ ones included. "kept by library" is
exact and allocator-independent: the bytes of tensor storage reachable from
the library object's attributes, counting the saved tensors of any autograd
graph those tensors keep alive, plus the parameter ``.grad`` left on the model;
parameters, buffers and the input are not counted.

Correctness at alexnet ``features.10`` (batch 4): the reference is the floor
on the same model with every ReLU ``inplace=False``. Each method runs on the
in-place model and on the ``inplace=False`` model; a method is wrong when its
own two answers differ (an in-place op downstream changed what it reports).
Its in-place answer is also matched against the four mixes of pre-/post-ReLU
activation and gradient (from ``retain_grad`` on the ``inplace=False`` model),
which names what a wrong method computes instead.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from common import interleaved, load_line
from torch import Tensor, nn

import convlens as cl

MiB = 1024 * 1024
SIZE = 224
CASES = [("resnet18", "layer4", 1), ("resnet18", "layer4", 16), ("alexnet", "features.12", 1)]
CASES += [("alexnet", "features.12", 16)]
PLAIN = "plain forward, no_grad (reference)"
FLOOR = "floor"
CONVLENS = "convlens"
METHODS = [
    PLAIN,
    FLOOR,
    CONVLENS,
    "captum, target given",
    "captum, target = argmax",
    "pytorch-grad-cam",
    "torchcam",
]
TARGETS = {
    PLAIN: "-",
    FLOOR: "argmax, same pass",
    CONVLENS: "None: argmax, same pass",
    "captum, target given": "argmax computed beforehand (untimed)",
    "captum, target = argmax": "argmax from an extra no-grad forward",
    "pytorch-grad-cam": "None: argmax, same pass",
    "torchcam": "argmax of the scores it is given, same pass",
}


def build(name: str, *, inplace: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = getattr(torchvision.models, name)(weights=None).eval()
    if not inplace:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
    return model


def make_input(batch: int) -> Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def upsample_min_max(raw: Tensor, size: Iterable[int]) -> Tensor:
    """(N, h, w) -> (N, H, W): bilinear, align_corners=False, then min-max per sample (flat -> 0)."""
    up = F.interpolate(raw.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    low = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (up - low) / torch.where(span > 0, span, 1), 0)


def floor_raw(model: nn.Module, layer: nn.Module, x: Tensor, *, clone: bool = False) -> Tensor:
    """Minimal Grad-CAM at the layer's resolution: one forward, autograd from the layer on only."""
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _args: tuple[Any, ...], out: Tensor) -> Tensor:
        a = out.detach().requires_grad_()
        captured.append(a)
        torch.set_grad_enabled(True)  # record from here on; no_grad's exit restores the mode
        return a.clone() if clone else a  # clone only when an in-place op follows

    with torch.no_grad():
        handle = layer.register_forward_hook(hook)
        try:
            logits = model(x)
        finally:
            handle.remove()
        score = logits.gather(1, logits.detach().argmax(dim=1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(score, captured[0])
        torch.set_grad_enabled(False)
        a = captured[0].detach()
        return F.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))


@dataclass
class Method:
    """One way to get the maps: the call, its model copy, the object that may keep state, its cleanup."""

    call: Callable[[], Tensor]
    model: nn.Module
    holder: object | None = None
    close: Callable[[], None] = lambda: None


def make_method(name: str, model: nn.Module, layer_name: str, x: Tensor, *, clone: bool = False) -> Method:
    layer = model.get_submodule(layer_name)
    size = x.shape[2:]
    if name == PLAIN:

        def plain() -> Tensor:
            with torch.no_grad():
                out: Tensor = model(x)
                return out

        return Method(plain, model)
    if name == FLOOR:
        return Method(lambda: upsample_min_max(floor_raw(model, layer, x, clone=clone), size), model)
    if name == CONVLENS:
        cam = cl.GradCAM(model, layer_name)
        return Method(lambda: cam(x).maps, model, cam)
    if name.startswith("captum"):
        from captum.attr import LayerAttribution, LayerGradCam  # type: ignore[import-untyped]

        explainer = LayerGradCam(model, layer)
        with torch.no_grad():
            given = model(x).argmax(dim=1).tolist()

        def captum_maps(target: list[int]) -> Tensor:
            attr = explainer.attribute(x, target=target, relu_attributions=True)
            up = LayerAttribution.interpolate(attr, tuple(size), interpolate_mode="bilinear")
            return upsample_min_max(up.detach().squeeze(1), size)  # already at size: min-max only

        if name == "captum, target given":
            return Method(lambda: captum_maps(given), model, explainer)

        def captum_argmax() -> Tensor:
            with torch.no_grad():
                target = model(x).argmax(dim=1).tolist()
            return captum_maps(target)

        return Method(captum_argmax, model, explainer)
    if name == "pytorch-grad-cam":
        import pytorch_grad_cam  # type: ignore[import-untyped]

        gradcam = pytorch_grad_cam.GradCAM(model=model, target_layers=[layer])
        return Method(
            lambda: torch.from_numpy(gradcam(input_tensor=x, targets=None)),
            model,
            gradcam,
            gradcam.activations_and_grads.release,
        )
    if name == "torchcam":
        from torchcam.methods import GradCAM as TorchcamGradCAM

        extractor = TorchcamGradCAM(model, target_layer=layer_name)

        def torchcam_maps() -> Tensor:
            scores = model(x)
            (cam,) = extractor(class_idx=scores.argmax(dim=1).tolist(), scores=scores)
            return upsample_min_max(cam, size)

        def close() -> None:
            extractor.remove_hooks()
            extractor.reset_hooks()

        return Method(torchcam_maps, model, extractor, close)
    raise ValueError(f"unknown method {name!r}; choose from {METHODS}")


# -- what a library keeps --------------------------------------------------------------

_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    nn.Module,
    str,
    bytes,
)


def _saved_tensors(roots: list[Any]) -> list[Tensor]:
    """Tensors saved for backward anywhere in the autograd graphs under ``roots`` (freed ones skipped)."""
    found: list[Tensor] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attr)
            except Exception:  # freed after a backward without retain_graph
                continue
            values = value if isinstance(value, tuple | list) else (value,)
            found.extend(v for v in values if isinstance(v, Tensor))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def kept_bytes(holder: object, model: nn.Module, x: Tensor) -> tuple[int, int]:
    """Bytes of tensor storage reachable from ``holder`` (graphs included), and of ``.grad`` on the model."""
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}
    storages: dict[int, int] = {}
    numpy_bytes = 0
    graph_roots: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(holder, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or depth > 10:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            storages[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
            graph_roots.append(obj.grad_fn)
        elif isinstance(obj, np.ndarray):
            numpy_bytes += obj.nbytes
        elif not isinstance(obj, _OPAQUE):
            stack.extend((ref, depth + 1) for ref in gc.get_referents(obj))
    for t in _saved_tensors(graph_roots):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    grads = {
        p.grad.untyped_storage().data_ptr(): p.grad.untyped_storage().nbytes()
        for p in model.parameters()
        if p.grad is not None
    }
    storages.update(grads)
    return numpy_bytes + sum(n for ptr, n in storages.items() if ptr not in exclude), sum(grads.values())


# -- memory, in a fresh process ----------------------------------------------------------


def _status(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match[1]) * 1024 if match else 0


def measure_memory(model_name: str, layer_name: str, batch: int, method: str) -> dict[str, float]:
    model = build(model_name)
    x = make_input(batch)
    with torch.no_grad():
        model(x)  # warm the kernels and the thread pool; nobody is charged for it
    m = make_method(method, model, layer_name, x)
    gc.collect()
    base = _status("VmRSS")
    result = m.call()
    del result
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    result = m.call()
    peak = _status("VmHWM") - base
    del result
    gc.collect()
    retained = _status("VmRSS") - base
    kept, grads = (0, 0) if m.holder is None else kept_bytes(m.holder, m.model, x)
    m.close()
    return {"peak": peak / MiB, "retained": retained / MiB, "kept": kept / MiB, "grads": grads / MiB}


def memory_of(model_name: str, layer_name: str, batch: int, method: str) -> dict[str, float] | None:
    """The subprocess's numbers; one retry, then None (its stderr goes to ours) so one failure costs one row."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [sys.executable, __file__, "--memory", model_name, layer_name, str(batch), method]
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode == 0:
            result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
            return result
        print(f"memory subprocess failed ({method}):\n{done.stderr}", file=sys.stderr)
    return None


# -- agreement and the tables --------------------------------------------------------------


def agreement(maps: Tensor, reference: Tensor) -> tuple[float, float]:
    """Max |difference| and Pearson correlation over every pixel of the batch."""
    a, b = maps.detach().double().flatten(), reference.detach().double().flatten()
    diff = float((a - b).abs().max())
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return diff, float(a @ b) / denominator if denominator > 0 else float("nan")


def run_case(model_name: str, layer_name: str, batch: int, repeats: int) -> list[str]:
    load = load_line()
    base = build(model_name)
    x = make_input(batch)
    methods = {name: make_method(name, copy.deepcopy(base), layer_name, x) for name in METHODS}
    maps = {name: m.call() for name, m in methods.items()}  # also the warm-up round
    rounds: dict[str, list[float]] = {name: [] for name in METHODS}

    def timed(name: str, call: Callable[[], Tensor]) -> Callable[[], Tensor]:
        def run() -> Tensor:
            start = time.perf_counter()
            out = call()
            rounds[name].append(time.perf_counter() - start)
            return out

        return run

    medians = interleaved({name: timed(name, m.call) for name, m in methods.items()}, repeats, warmup=0)
    ratios = {
        name: statistics.median(t / f for t, f in zip(rounds[name], rounds[FLOOR], strict=True))
        for name in METHODS
    }
    first, second = [], []
    for _ in range(3):  # a fresh object's first call (probe) against its second (probe cached)
        fresh = cl.GradCAM(methods[CONVLENS].model, layer_name)
        start = time.perf_counter()
        fresh(x)
        middle = time.perf_counter()
        fresh(x)
        first.append(middle - start)
        second.append(time.perf_counter() - middle)
    for m in methods.values():
        m.close()
    del methods
    gc.collect()
    rows = [
        f"### {model_name} {layer_name}, batch {batch}, {SIZE}x{SIZE} ({repeats} interleaved repeats)",
        "",
        f"at the start of this case: {load}",
        "",
        "| method | target | median ms | x floor | peak extra MiB | retained MiB "
        "| kept by library MiB (of it, param .grad) | agreement with convlens (max abs diff, corr) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in METHODS:
        print(f"  memory: {model_name} {layer_name} batch {batch}: {name}", file=sys.stderr)
        mem = memory_of(model_name, layer_name, batch, name)
        if name == PLAIN:
            agree = "-"
        else:
            diff, corr = agreement(maps[name], maps[CONVLENS])
            agree = f"{diff:.2e}, {corr:.6f}"
        if mem is None:
            memory = "failed | failed | failed"
        else:
            kept = "-" if name in (PLAIN, FLOOR) else f"{mem['kept']:.1f} ({mem['grads']:.1f})"
            memory = f"{mem['peak']:.1f} | {mem['retained']:.1f} | {kept}"
        rows.append(
            f"| {name} | {TARGETS[name]} | {medians[name] * 1e3:.1f} | {ratios[name]:.3f} | {memory} | {agree} |"
        )
    extra = statistics.median(a - b for a, b in zip(first, second, strict=True))
    rows += [
        "",
        f"convlens, a fresh GradCAM's first call (meta-device probe, then cached) vs its second: "
        f"{statistics.median(first) * 1e3:.1f} ms vs {statistics.median(second) * 1e3:.1f} ms, "
        f"+{extra * 1e3:.1f} ms (medians of 3 pairs)",
        "",
    ]
    return rows


def _variants(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Grad-CAM maps at alexnet features.10 from every mix of pre-/post-ReLU activation and gradient."""
    kept: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, tuple[Any, ...], Tensor], None]:
        def hook(_module: nn.Module, _args: tuple[Any, ...], out: Tensor) -> None:
            out.retain_grad()
            kept[name] = out

        return hook

    handles = [
        model.get_submodule("features.10").register_forward_hook(keep("pre")),
        model.get_submodule("features.11").register_forward_hook(keep("post")),
    ]
    try:
        logits = model(x)
        logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    model.zero_grad(set_to_none=True)
    out = {}
    for a_name in ("pre", "post"):
        for g_name in ("pre", "post"):
            a, g = kept[a_name].detach(), kept[g_name].grad
            if g is None:
                raise RuntimeError(f"no gradient reached the {g_name}-ReLU activation")
            raw = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
            out[f"A {a_name}-ReLU, grad {g_name}-ReLU"] = upsample_min_max(raw, x.shape[2:])
    return out


def correctness(batch: int = 4) -> list[str]:
    """alexnet features.10 (conv, then ReLU(inplace=True)): each method on the in-place model and without."""
    layer_name = "features.10"
    inplace, plain = build("alexnet"), build("alexnet", inplace=False)
    x = make_input(batch)
    reference_raw = floor_raw(plain, plain.get_submodule(layer_name), x)
    reference = upsample_min_max(reference_raw, x.shape[2:])
    variants = _variants(copy.deepcopy(plain), x)
    rows = [
        f"### alexnet {layer_name} (followed by ReLU(inplace=True)), batch {batch}: correctness",
        "",
        "reference: the floor on the same weights with every ReLU inplace=False. Last column: which mix of "
        "pre-/post-ReLU activation A and gradient its in-place answer equals (max abs diff < 1e-4; "
        "the correct one is A pre-ReLU, grad pre-ReLU).",
        "",
        "| method | in-place model vs reference (max abs diff, corr) "
        "| inplace=False model vs reference (max abs diff, corr) "
        "| in-place vs its own inplace=False answer: max abs diff | verdict | what it computes |",
        "|---|---|---|---:|---|---|",
    ]
    for name in METHODS[1:]:
        if name == "captum, target = argmax":
            continue  # same computation as "target given"
        a = make_method(name, copy.deepcopy(inplace), layer_name, x, clone=True)
        b = make_method(name, copy.deepcopy(plain), layer_name, x)
        on_inplace, on_plain = a.call(), b.call()
        a.close()
        b.close()
        d1, c1 = agreement(on_inplace, reference)
        d2, c2 = agreement(on_plain, reference)
        own = float((on_inplace - on_plain).abs().max())
        verdict = "correct" if own < 1e-4 else "WRONG: the in-place ReLU changes its answer"
        matches = [v for v, maps in variants.items() if float((on_inplace - maps).abs().max()) < 1e-4]
        rows.append(
            f"| {name} | {d1:.2e}, {c1:.6f} | {d2:.2e}, {c2:.6f} | {own:.2e} | {verdict} "
            f"| {' / '.join(matches) or 'none of them'} |"
        )
    raw = cl.GradCAM(copy.deepcopy(inplace), layer_name)(x).raw
    rows += [
        "",
        f"convlens raw map (13x13) on the in-place model vs the reference's: max abs diff "
        f"{float((raw - reference_raw).abs().max()):.2e} (reference max {float(reference_raw.max()):.3g})",
        "",
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=11, help="interleaved rounds at batch 1")
    parser.add_argument("--repeats-16", type=int, default=7, help="interleaved rounds at batch 16")
    parser.add_argument(
        "--memory", nargs=4, metavar=("MODEL", "LAYER", "BATCH", "METHOD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory:
        model_name, layer_name, batch, method = args.memory
        print(json.dumps(measure_memory(model_name, layer_name, int(batch), method)))
        return
    print(
        f"Grad-CAM at {SIZE}x{SIZE}, random weights, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; before: {load_line()}"
    )
    print()
    for model_name, layer_name, batch in CASES:
        print(f"case: {model_name} {layer_name} batch {batch}", file=sys.stderr)
        repeats = args.repeats if batch == 1 else args.repeats_16
        print("\n".join(run_case(model_name, layer_name, batch, repeats)))
    print("\n".join(correctness()))
    print(f"after: {load_line()}")


if __name__ == "__main__":
    main()
