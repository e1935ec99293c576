"""Any model, from every entry point: forward arguments, models that cannot run, half precision.

The entry points come from the one registry (tests/entry_points.py), so a new entry point is covered
here once it is listed there. Each test also checks the model is left exactly as found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import convlens as cl
from entry_points import ENTRIES, ENTRY_POINTS, EntryPoint
from invariants import assert_unchanged, snapshot
from models import CallLog, quantized_cnn

LAYER = "conv2"


class Demanding(nn.Module):
    """A CNN whose forward needs more than the image: a per-sample mask and a keyword-only temperature.

    Every call is logged (device type, batch, mask rows, temperature), meta probe included. The mask
    must have the batch's rows (or one row, broadcast): a mask that does not follow a split or repeated
    batch fails the forward.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.log = CallLog()

    def forward(self, x: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
        self.log.entries.append((x.device.type, x.shape[0], mask.shape[0], temperature))
        if mask.shape[0] not in (1, x.shape[0]):
            raise RuntimeError(f"mask with {mask.shape[0]} rows for a batch of {x.shape[0]}")
        h = torch.relu(self.conv1(x * mask))
        out: Tensor = self.fc(self.conv2(h).mean(dim=(2, 3))) / temperature
        return out


def _forget_user_grads(model: nn.Module, entry: EntryPoint) -> None:
    """The user's own backward (inside ``with LayerTap``) rightly writes ``.grad``; nothing else may change."""
    if entry.user_backward:
        for p in model.parameters():
            p.grad = None


def _entries(reason: Callable[[EntryPoint], str]) -> list[Any]:
    return [
        pytest.param(e.name, id=e.name, marks=[pytest.mark.skip(reason=reason(e))] if reason(e) else [])
        for e in ENTRY_POINTS
    ]


@pytest.mark.parametrize("name", _entries(lambda e: "" if e.call_with else "never runs the model"))
def test_every_entry_point_passes_the_forward_arguments_on_every_forward(name: str) -> None:
    entry = ENTRIES[name]
    assert entry.call_with is not None
    torch.manual_seed(0)
    model = Demanding().eval()
    x = torch.rand(1 if entry.batch_of_one else 2, 3, 8, 8)
    mask = torch.rand(x.shape[0], 1, 8, 8) + 0.5
    before = snapshot(model)
    entry.call_with(model, x, LAYER, cl.ForwardArgs(mask, temperature=2.0))
    calls = model.log.entries
    assert calls, "the model never ran"
    assert {t for *_, t in calls} == {2.0}
    assert "meta" in {device for device, *_ in calls} or entry.user_backward
    _forget_user_grads(model, entry)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", _entries(lambda e: "" if e.call_with else "never runs the model"))
def test_without_the_forward_arguments_the_model_raises_its_own_error(name: str) -> None:
    """The other side of the test above: the arguments really are needed."""
    torch.manual_seed(0)
    model = Demanding().eval()
    entry = ENTRIES[name]
    before = snapshot(model)
    with pytest.raises(TypeError, match=r"mask|temperature"):
        entry.call(model, torch.rand(1 if entry.batch_of_one else 2, 3, 8, 8), LAYER)
    assert_unchanged(model, before)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc(self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3)))
        return out


@pytest.mark.parametrize(
    "name", _entries(lambda e: "" if e.name != "trace_shapes" else "shapes only: works on meta")
)
def test_a_model_on_the_meta_device_is_refused_before_work(name: str) -> None:
    entry = ENTRIES[name]
    with torch.device("meta"):
        model = Small().eval()
    before = snapshot(model)
    with pytest.raises(cl.UnsupportedModelError, match="meta device: it holds no data"):
        entry.call(model, torch.rand(1 if entry.batch_of_one else 2, 3, 8, 8), LAYER)
    assert_unchanged(model, before)


def test_trace_shapes_reads_a_model_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = Small()
    report = cl.trace_shapes(model, (2, 3, 8, 8))
    assert report["conv2"].output_shape == (2, 4, 8, 8)


_NO_INPUT = "makes its own input on the model's device"


@pytest.mark.parametrize(
    "name",
    _entries(
        lambda e: (
            "never runs the model"
            if e.call_with is None
            else "shapes only: a meta input is its own way to ask for shapes"
            if e.name == "trace_shapes"
            else _NO_INPUT
            if e.name.startswith("ActivationMaximizer")
            or e.name in ("NeuronVisualizer.maximize", "concept_pictures")
            else "a user's own forward inside `with LayerTap(...)` runs the model as it is: nothing checks "
            "its inputs' device (a model may move them itself; tests/test_tap.py pins it)"
            if e.user_backward
            else ""
        )
    ),
)
def test_an_input_on_another_device_names_both_devices(name: str) -> None:
    entry = ENTRIES[name]
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.rand(1 if entry.batch_of_one else 2, 3, 8, 8, device="meta")
    before = snapshot(model)
    with pytest.raises(cl.DeviceMismatchError, match=r"the model is on cpu but a tensor of .* is on meta"):
        entry.call(model, x, LAYER)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", _entries(lambda e: "" if e.gradients else "needs no gradients"))
def test_a_quantized_model_is_refused_where_gradients_are_needed(name: str) -> None:
    entry = ENTRIES[name]
    model = quantized_cnn()
    before = snapshot(model)
    with pytest.raises(cl.UnsupportedModelError, match="needs gradients through the model"):
        entry.call(model, torch.rand(1 if entry.batch_of_one else 2, 3, 12, 12), "3")
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", _entries(lambda e: "needs gradients" if e.gradients else ""))
def test_a_quantized_model_works_where_no_gradients_are_needed(name: str) -> None:
    entry = ENTRIES[name]
    model = quantized_cnn()
    before = snapshot(model)
    entry.call(model, torch.rand(1 if entry.batch_of_one else 2, 3, 12, 12), "3")
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", _entries(lambda e: ""))
def test_every_entry_point_runs_on_a_bfloat16_model(name: str) -> None:
    """Runs and leaves the model as found; each wing's tests compare the numbers with float32's."""
    entry = ENTRIES[name]
    torch.manual_seed(0)
    model = Small().to(torch.bfloat16).eval()
    x = torch.rand(1 if entry.batch_of_one else 2, 3, 8, 8, dtype=torch.bfloat16)
    before = snapshot(model)
    entry.call(model, x, LAYER)
    _forget_user_grads(model, entry)
    assert_unchanged(model, before)
