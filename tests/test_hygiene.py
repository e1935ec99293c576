"""Hook hygiene for every entry point that touches a model: on success and when the forward raises.

DESIGN invariant 1: no hook left on any module (forward, pre-forward, backward; module and global),
parameters, buffers, ``training`` and ``requires_grad`` flags and ``.grad`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import convlens as cl
from convlens.featureviz import objectives as ob
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


Entry = Callable[[Switch, Tensor], Any]


def _with_block(model: Switch, x: Tensor) -> Any:
    with cl.LayerTap(model, ["conv1", "bn"], grads=True):
        return model(x).sum().backward()


ENTRIES: dict[str, Entry] = {
    "LayerTap.run": lambda m, x: cl.LayerTap(m, ["bn", "fc"]).run(x),
    "LayerTap.run grads": lambda m, x: cl.LayerTap(m, ["bn"], grads=True).run(x),
    "LayerTap with-block": _with_block,
    "trace_shapes": lambda m, x: cl.trace_shapes(m, tuple(x.shape)),
    "GradCAM": lambda m, x: cl.GradCAM(m, "conv2")(x),
    "GradCAMPlusPlus": lambda m, x: cl.GradCAMPlusPlus(m, "conv2")(x, target=1),
    "XGradCAM": lambda m, x: cl.XGradCAM(m, "conv2")(x),
    "LayerCAM": lambda m, x: cl.LayerCAM(m, "conv1")(x),
    "ScoreCAM": lambda m, x: cl.ScoreCAM(m, "conv2", chunk_size=2)(x, target=0),
    "EigenCAM": lambda m, x: cl.EigenCAM(m, "conv2")(x),
    "Saliency": lambda m, x: cl.Saliency(m)(x),
    "GuidedBackprop": lambda m, x: cl.GuidedBackprop(m)(x, target=[0, 1]),
    "GuidedGradCAM": lambda m, x: cl.GuidedGradCAM(m, "conv2")(x),
    "deletion": lambda m, x: cl.deletion(m, x, torch.rand(2, 6, 6), steps=3),
    "insertion": lambda m, x: cl.insertion(m, x, torch.rand(2, 6, 6), steps=3, baseline="blur"),
    "ActivationMaximizer": lambda m, x: cl.ActivationMaximizer(
        m, ob.channel("conv2", 1) - 0.1 * ob.l1(), input_shape=(1, 3, 6, 6), steps=2
    ).run(),
    "ActivationMaximizer class_logit": lambda m, x: cl.ActivationMaximizer(
        m, ob.class_logit(2), input_shape=(1, 3, 6, 6), steps=2, transforms=True
    ).run(),
    "NeuronVisualizer.maximize": lambda m, x: cl.NeuronVisualizer(m, "fc", input_shape=(1, 3, 6, 6)).maximize(
        range(2), steps=2
    ),
    "NeuronVisualizer.top_examples": lambda m, x: cl.NeuronVisualizer(m, "conv2").top_examples(
        TensorDataset(x), neuron=1, k=2
    ),
    "FilterRenderer": lambda m, x: cl.FilterRenderer(m, "conv1").plot(n=4, cols=2),
}

# The filter renderer never runs the model; trace_shapes runs it on the meta device (its real
# fallback and its errors are tested in test_shapes.py).
RUNS_THE_MODEL = [name for name in ENTRIES if name not in {"FilterRenderer", "trace_shapes"}]


def prepared(train: bool) -> tuple[Switch, Tensor]:
    torch.manual_seed(0)
    model = Switch().train(train)
    model.bn.eval()  # mixed flags must come back exactly
    model.conv1.weight.requires_grad_(False)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)  # a user's accumulated gradients stay as they are
    return model, torch.randn(2, 3, 6, 6)


@pytest.mark.parametrize("name", list(ENTRIES))
def test_success_leaves_the_model_as_found(name: str) -> None:
    model, x = prepared(train=True)
    if name == "LayerTap with-block":
        model.eval()  # a user's own backward in train mode would rightly change BatchNorm statistics
        for p in model.parameters():
            p.grad = None
    before = snapshot(model)
    globals_before = global_hook_counts()
    ENTRIES[name](model, x)
    if name == "LayerTap with-block":  # the user's backward wrote .grad; nothing else may change
        for p in model.parameters():
            p.grad = None
    assert_unchanged(model, before)
    assert global_hook_counts() == globals_before
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name", RUNS_THE_MODEL)
def test_an_exception_in_the_forward_leaves_the_model_as_found(name: str) -> None:
    model, x = prepared(train=True)
    model.fail = True
    before = snapshot(model)
    globals_before = global_hook_counts()
    with pytest.raises(RuntimeError, match="boom in forward"):
        ENTRIES[name](model, x)
    assert_unchanged(model, before)
    assert global_hook_counts() == globals_before
    assert torch.is_grad_enabled()
