"""Hook hygiene for every entry point that touches a model: on success and when the forward raises.

The entry points and how to call them come from tests/entry_points.py (shared with test_diagnosis.py).

docs/architecture.md, invariant 1: no hook left on any module (forward, pre-forward, backward; module and global),
parameters, buffers, ``training`` and ``requires_grad`` flags and ``.grad`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from entry_points import ENTRIES, ENTRY_POINTS, EntryPoint
from invariants import assert_unchanged, global_hook_counts, snapshot


class Switch(nn.Module):
    """A small CNN with BatchNorm, Dropout and an in-place ReLU that can fail mid-forward (not on meta)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 5)
        self.fail = False

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn(self.conv1(x)))
        if self.fail and not h.is_meta:
            raise RuntimeError("boom in forward")
        out: Tensor = self.fc(self.drop(self.conv2(h).mean(dim=(2, 3))))
        return out


#: The layer the entry points look at.
LAYER = "conv2"


def _params(reason: Callable[[EntryPoint], str]) -> list[Any]:
    """Every registered entry point; those that cannot take part skipped with the registry's reason."""
    return [
        pytest.param(e.name, id=e.name, marks=[pytest.mark.skip(reason=reason(e))] if reason(e) else [])
        for e in ENTRY_POINTS
    ]


def prepared(train: bool) -> tuple[Switch, Tensor]:
    torch.manual_seed(0)
    model = Switch().train(train)
    model.bn.eval()  # mixed flags must come back exactly
    model.conv1.weight.requires_grad_(False)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)  # a user's accumulated gradients stay as they are
    return model, torch.randn(2, 3, 6, 6)


@pytest.mark.parametrize("name", _params(lambda e: e.not_in_hygiene))
def test_success_leaves_the_model_as_found(name: str) -> None:
    model, x = prepared(train=True)
    entry = ENTRIES[name]
    if entry.user_backward:
        model.eval()  # a user's own backward in train mode would rightly change BatchNorm statistics
        for p in model.parameters():
            p.grad = None
    before = snapshot(model)
    globals_before = global_hook_counts()
    entry.call(model, x, LAYER)
    if entry.user_backward:  # the user's backward wrote .grad; nothing else may change
        for p in model.parameters():
            p.grad = None
    assert_unchanged(model, before)
    assert global_hook_counts() == globals_before
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name", _params(lambda e: e.not_in_forward_error))
def test_an_exception_in_the_forward_leaves_the_model_as_found(name: str) -> None:
    model, x = prepared(train=True)
    model.fail = True
    before = snapshot(model)
    globals_before = global_hook_counts()
    with pytest.raises(RuntimeError, match="boom in forward"):
        ENTRIES[name].call(model, x, LAYER)
    assert_unchanged(model, before)
    assert global_hook_counts() == globals_before
    assert torch.is_grad_enabled()
