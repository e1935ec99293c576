"""A wrong input gets the same clear error from every entry point that runs a model, before any work.

docs/architecture.md, invariant 4, and "One probe" (contract additions, second round): channels, rank or a spatial
size too small raise one ``ShapeError`` naming the layer, its type and the shape it got, from
``LayerTap.run``, the CAM family, saliency, ``deletion``/``insertion``, the maximizers and
``trace_shapes`` alike, learned from a meta-device pass so that no real forward runs first. One
image without its batch dimension and a numpy array are named as such. Invariant 1: every case
leaves the model as found.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import convlens as cl
from entry_points import ENTRIES
from invariants import ModelState, assert_unchanged, global_hook_counts, snapshot
from models import seeded_alexnet
from wild import StemNet

# -- the entry points: tests/entry_points.py (shared with test_hygiene.py) ---------------


def _fed_shape(entry: str, x: Any) -> tuple[int, ...]:
    """The shape the model receives from an entry point given ``x``."""
    shape = tuple(x.shape)
    return (1, *shape[1:]) if ENTRIES[entry].batch_of_one else shape


# -- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One way an input can be wrong.

    ``patterns`` are regexes the message must contain; ``{shape}`` stands for the shape the model
    receives from the entry point. ``layer`` is a conv after the failing layer, so that no entry
    point can legitimately stop before reaching the failure; ``first`` is the model's first layer,
    where a hook counts real (non-meta) forwards.
    """

    model: str
    x: Callable[[], Any]
    layer: str
    first: str
    error: type[Exception]
    patterns: tuple[str, ...]
    absent: tuple[str, ...] = ()
    skip: tuple[tuple[str, str], ...] = ()  # (entry point, why it does not apply)


_NO_RANK = (
    "deletion/insertion perturb the positions of (N, C, L), (N, C, H, W) or (N, C, T, H, W): an (N, C) input "
    "has no positions, and they say so before the model is asked (tests/test_ranks.py pins it)"
)
_SALIENCY_RANK = (
    "saliency maps are taken over channels, so x must be (N, C, ...): an InvalidTypeError of its own, "
    "before the model is asked (tests/test_saliency.py pins it)"
)
_INPUT_SHAPE = "takes an input_shape, not a tensor: there is no array to pass"
_NO_NUMPY = "a TensorDataset cannot hold a numpy array"
_EVALUATE_RANK = (
    "evaluate scores maps of (N, C, L), (N, C, H, W) or (N, C, T, H, W) batches, and says so in a ShapeError "
    "of its own before the model is asked (tests/test_evaluate.py pins it)"
)
_TRANSFORMS_RANK = (
    "its transforms need images (N, C, H, W): an InvalidArgumentError about input_shape of its own, before "
    "the model is asked"
)
_ROWS = "a dataset of one image's rows is batched as images of one channel"

CASES: dict[str, Case] = {
    "wrong channels": Case(
        model="stem",
        x=lambda: torch.rand(2, 1, 32, 32),
        layer="conv2",
        first="conv1",
        error=cl.ShapeError,
        patterns=(r"\bconv1 expects 3 input channels, got 1\b", r"\bConv2d\b", "{shape}"),
    ),
    "five dimensions": Case(
        model="stem",
        x=lambda: torch.rand(1, 2, 3, 32, 32),
        layer="conv2",
        first="conv1",
        error=cl.ShapeError,
        patterns=(r"\bconv1 expects a 3-D or 4-D input, got 5-D\b", r"\bConv2d\b", "{shape}"),
        skip=(("ActivationMaximizer class_logit", _TRANSFORMS_RANK),),
    ),
    "two dimensions": Case(
        model="stem",
        x=lambda: torch.rand(2, 3),
        layer="conv2",
        first="conv1",
        error=cl.ShapeError,
        patterns=(r"\bconv1 expects a 3-D or 4-D input, got 2-D\b", r"\bConv2d\b", "{shape}"),
        skip=(
            ("deletion", _NO_RANK),
            ("insertion", _NO_RANK),
            ("Saliency", _SALIENCY_RANK),
            ("GuidedBackprop", _SALIENCY_RANK),
            ("GuidedGradCAM", _SALIENCY_RANK),
            ("evaluate", _EVALUATE_RANK),
            ("ActivationMaximizer class_logit", _TRANSFORMS_RANK),
        ),
    ),
    "too small": Case(
        model="alexnet",
        x=lambda: torch.rand(1, 3, 8, 8),
        layer="features.3",
        first="features.0",
        error=cl.ShapeError,
        # features.0 (11x11, stride 4, padding 2) leaves 1x1; the MaxPool2d(3, 2) after it has no output.
        patterns=(r"\bfeatures\.2\b", r"too small", r"\bMaxPool2d\b", re.escape("[1, 64, 1, 1]")),
    ),
    "no batch dimension": Case(
        model="stem",
        x=lambda: torch.rand(3, 32, 32),
        layer="conv2",
        first="conv1",
        error=cl.ShapeError,
        patterns=(r"batch dimension", r"unsqueeze\(0\)", r"[\[(]3, 32, 32[\])]"),
        absent=(r"expects 8 channels",),  # the BatchNorm sees 8 images of 16 channels: misleading
        skip=(
            ("NeuronVisualizer.maximize", "its input_shape is (1, C, H, W) by contract and checked as such"),
            ("concept_pictures", "its input_shape is (1, C, H, W) by contract and checked as such"),
            ("NeuronVisualizer.top_examples", _ROWS),
            ("evaluate", _EVALUATE_RANK),
            ("build_atlas", _ROWS),
            ("concepts", _ROWS),
            ("concepts importance=False", _ROWS),
            ("ActivationMaximizer class_logit", _TRANSFORMS_RANK),
        ),
    ),
    "numpy array": Case(
        model="stem",
        x=lambda: np.zeros((2, 3, 32, 32), np.float32),
        layer="conv2",
        first="conv1",
        error=cl.InvalidTypeError,
        patterns=(r"numpy", r"torch\.from_numpy|torch\.as_tensor"),
        skip=(
            ("ActivationMaximizer", _INPUT_SHAPE),
            ("NeuronVisualizer.maximize", _INPUT_SHAPE),
            ("concept_pictures", _INPUT_SHAPE),
            ("NeuronVisualizer.top_examples", _NO_NUMPY),
            ("ActivationMaximizer class_logit", _INPUT_SHAPE),
            ("evaluate", _NO_NUMPY),
            ("build_atlas", _NO_NUMPY),
            ("concepts", _NO_NUMPY),
            ("concepts importance=False", _NO_NUMPY),
        ),
    ),
}


def _params(cases: list[str]) -> list[Any]:
    params = []
    for case in cases:
        skipped = dict(CASES[case].skip)
        for entry in ENTRIES:
            reason = ENTRIES[entry].not_in_diagnosis or skipped.get(entry, "")
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(case, entry, id=f"{case}-{entry}", marks=marks))
    return params


@pytest.fixture(scope="module")
def pristine_alexnet() -> tuple[nn.Module, ModelState]:
    """One AlexNet for the module, and its state as built: every test must leave it exactly so."""
    model = seeded_alexnet()
    return model, snapshot(model)  # one snapshot: cloning AlexNet's 61M parameters per test is slow


def _model(case: Case, request: pytest.FixtureRequest) -> tuple[nn.Module, ModelState]:
    if case.model == "alexnet":
        shared: tuple[nn.Module, ModelState] = request.getfixturevalue("pristine_alexnet")
        return shared
    torch.manual_seed(0)
    model = StemNet().eval()
    return model, snapshot(model)


def _raise(case: Case, entry: str, model: nn.Module, before: ModelState, x: Any) -> BaseException:
    """Run the entry point; check the error's type, that no real forward ran and the model is as found."""
    globals_before = global_hook_counts()
    real_forwards = [0]

    def count(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, Tensor) and not output.is_meta:
            real_forwards[0] += 1

    handle = model.get_submodule(case.first).register_forward_hook(count)
    try:
        with pytest.raises(case.error) as info:
            ENTRIES[entry].call(model, x, case.layer)
    finally:
        handle.remove()
    assert real_forwards[0] == 0, f"{case.first} ran {real_forwards[0]} real forward(s) before the error"
    assert_unchanged(model, before)
    assert global_hook_counts() == globals_before
    assert torch.is_grad_enabled()
    return info.value


@pytest.mark.parametrize(("case", "entry"), _params(list(CASES)))
def test_a_wrong_input_gets_a_clear_error_before_any_real_forward(
    case: str, entry: str, request: pytest.FixtureRequest
) -> None:
    spec = CASES[case]
    (model, before), x = _model(spec, request), spec.x()
    message = str(_raise(spec, entry, model, before, x))
    shape = re.escape("[" + ", ".join(map(str, _fed_shape(entry, x))) + "]")
    for pattern in spec.patterns:
        assert re.search(pattern.replace("{shape}", shape), message), f"{pattern!r} not in {message!r}"
    for pattern in spec.absent:
        assert not re.search(pattern, message), f"{pattern!r} in {message!r}"


def _core(message: str) -> str:
    """The diagnosis itself: trace_shapes adds a sentence on ``err.report`` ("... The 0 layer calls ...")."""
    first_line = message.strip().splitlines()[0]
    return first_line.split(" The ")[0].rstrip(". ")


SHAPE_CASES = [name for name, case in CASES.items() if case.error is cl.ShapeError]
# An entry point that feeds a batch of one (NeuronVisualizer.maximize) names a different shape.
SAME_BATCH = [
    name for name, entry in ENTRIES.items() if not entry.batch_of_one and not entry.not_in_diagnosis
]


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_every_entry_point_gives_the_same_diagnosis(case: str, request: pytest.FixtureRequest) -> None:
    spec = CASES[case]
    (model, _), x = _model(spec, request), spec.x()
    skipped = dict(spec.skip)
    cores = {}
    for entry in SAME_BATCH:
        if entry not in skipped:
            with pytest.raises(spec.error) as info:
                ENTRIES[entry].call(model, x, spec.layer)
            cores[entry] = _core(str(info.value))
    assert all(cores.values()), cores
    assert len(set(cores.values())) == 1, "\n".join(f"{entry}: {core}" for entry, core in cores.items())
