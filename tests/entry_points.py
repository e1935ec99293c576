"""The one registry of public entry points that run a model, read by the hygiene and diagnosis tests.

Each entry says how to call it on a small model: ``call(model, x, layer)``, with ``x`` a batch
``(N, C, H, W)`` (or whatever wrong input a diagnosis case gives) and ``layer`` a conv of the model.
An entry that cannot take part in a test says why in a field (``not_in_*``), so that every test
lists every entry, skipped with that reason where it does not apply, never silently absent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import convlens as cl
from convlens.featureviz import objectives as ob

Call = Callable[[nn.Module, Any, str], Any]
#: ``call_with(model, x, layer, forward_args)``: the same call, passing the model's other forward arguments.
CallWith = Callable[[nn.Module, Any, str, Any], Any]


@dataclass(frozen=True)
class EntryPoint:
    """How to call one public entry point, and which tests it cannot take part in (and why).

    Attributes:
        name: The entry point, as the tests' ids show it.
        call: ``call(model, x, layer)`` runs it once on ``model``.
        batch_of_one: It feeds the model ``(1, *x.shape[1:])`` rather than ``x`` itself.
        user_backward: It is the user's own forward and backward inside ``with LayerTap(...)``: the
            user's backward rightly writes ``.grad`` (and, in train mode, BatchNorm statistics).
        not_in_hygiene: Why it cannot take part in the success hygiene test ("" if it does).
        not_in_forward_error: Why it cannot take part in the exception-in-the-forward test.
        not_in_diagnosis: Why it cannot take part in the wrong-input diagnosis tests.
        call_with: The same call with ``forward_args=`` (None: it never runs the model).
        gradients: It differentiates through the model (so a quantized model is refused).
    """

    name: str
    call: Call
    call_with: CallWith | None = None
    gradients: bool = True
    batch_of_one: bool = False
    user_backward: bool = False
    not_in_hygiene: str = ""
    not_in_forward_error: str = ""
    not_in_diagnosis: str = ""


def _maps(x: Any) -> Tensor:
    """One saliency map per sample, ``(N, H, W)`` for ``x`` ``(N, C, H, W)``; ``(H, W)`` for one image."""
    shape = tuple(x.shape)
    return torch.rand(shape[0], *shape[2:]) if len(shape) == 4 else torch.rand(shape[-2:])


def _with_block(model: nn.Module, x: Any, layer: str) -> Any:
    """A user's own forward and backward inside ``with LayerTap(...)``: the model runs as it is."""
    first = next(name for name, m in model.named_modules() if name and not list(m.children()))
    with cl.LayerTap(model, [first, layer], grads=True):
        return model(x).sum().backward()


def _atlas(model: nn.Module, x: Any, layer: str, forward_args: Any = None) -> Any:
    with tempfile.TemporaryDirectory() as out:
        return cl.build_atlas(
            model,
            TensorDataset(x),
            out,
            layers=[layer],
            units=1,
            k=1,
            steps=1,
            picture_size=8,
            concepts=1,  # the registry's layers have few channels: the default 6 would skip the section
            progress=False,
            **({} if forward_args is None else {"forward_args": forward_args}),
        )


def _concepts(model: nn.Module, x: Any, layer: str, forward_args: Any, *, importance: bool) -> Any:
    """Two concepts of a conv layer's (signed) output over the batch as a dataset."""
    return cl.concepts(
        model, layer, TensorDataset(x), 1, method="semi-nmf", k=1, importance=importance, progress=False,
        **({} if forward_args is None else {"forward_args": forward_args}),
    )  # fmt: skip


def _channels(model: nn.Module, layer: str) -> int:
    """The output channels of a conv layer (of the test model as given, wrapper or not)."""
    module = dict(model.named_modules())[layer]
    return int(module.out_channels) if isinstance(module, nn.Conv2d) else 4


def _with_block_args(model: nn.Module, x: Any, layer: str, fa: Any) -> Any:
    """The user's own forward passes its own arguments."""
    with cl.LayerTap(model, [layer], grads=True):
        return fa.call(model, x).sum().backward()


_META_ONLY = (
    "runs the model on the meta device only, where the test model does not fail (its real fallback "
    "and its errors are tested in tests/test_shapes.py)"
)
_NEVER_RUNS = "never runs the model: it reads the weights only"
_USER_FORWARD = (
    "a user's own forward inside `with LayerTap(...)` runs the model as it is, by contract: torch "
    "raises its own error from the real forward"
)

ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint(
        "LayerTap.run",
        lambda m, x, layer: cl.LayerTap(m, [layer]).run(x),
        lambda m, x, layer, fa: cl.LayerTap(m, [layer]).run(x, forward_args=fa),
        gradients=False,
    ),
    EntryPoint(
        "LayerTap.run grads",
        lambda m, x, layer: cl.LayerTap(m, [layer], grads=True).run(x),
        lambda m, x, layer, fa: cl.LayerTap(m, [layer], grads=True).run(x, forward_args=fa),
    ),
    EntryPoint(
        "LayerTap with-block",
        _with_block,
        _with_block_args,
        user_backward=True,
        not_in_diagnosis=_USER_FORWARD,
    ),
    EntryPoint(
        "trace_shapes",
        lambda m, x, layer: cl.trace_shapes(m, x),
        lambda m, x, layer, fa: cl.trace_shapes(m, x, forward_args=fa),
        not_in_forward_error=_META_ONLY,
        gradients=False,
    ),
    EntryPoint(
        "GradCAM",
        lambda m, x, layer: cl.GradCAM(m, layer)(x),
        lambda m, x, layer, fa: cl.GradCAM(m, layer)(x, forward_args=fa),
    ),
    EntryPoint(
        "GradCAMPlusPlus",
        lambda m, x, layer: cl.GradCAMPlusPlus(m, layer)(x, target=1),
        lambda m, x, layer, fa: cl.GradCAMPlusPlus(m, layer)(x, target=1, forward_args=fa),
    ),
    EntryPoint(
        "XGradCAM",
        lambda m, x, layer: cl.XGradCAM(m, layer)(x),
        lambda m, x, layer, fa: cl.XGradCAM(m, layer)(x, forward_args=fa),
    ),
    EntryPoint(
        "LayerCAM",
        lambda m, x, layer: cl.LayerCAM(m, layer)(x),
        lambda m, x, layer, fa: cl.LayerCAM(m, layer)(x, forward_args=fa),
    ),
    EntryPoint(
        "ScoreCAM",
        lambda m, x, layer: cl.ScoreCAM(m, layer, chunk_size=2)(x, target=0),
        lambda m, x, layer, fa: cl.ScoreCAM(m, layer, chunk_size=2)(x, target=0, forward_args=fa),
        gradients=False,  # reads activations only: works on a quantized model
    ),
    EntryPoint(
        "EigenCAM",
        lambda m, x, layer: cl.EigenCAM(m, layer)(x),
        lambda m, x, layer, fa: cl.EigenCAM(m, layer)(x, forward_args=fa),
        gradients=False,  # reads activations only: works on a quantized model
    ),
    EntryPoint(
        "Saliency",
        lambda m, x, layer: cl.Saliency(m)(x),
        lambda m, x, layer, fa: cl.Saliency(m)(x, forward_args=fa),
    ),
    EntryPoint(
        "GuidedBackprop",
        lambda m, x, layer: cl.GuidedBackprop(m)(x, target=1),
        lambda m, x, layer, fa: cl.GuidedBackprop(m)(x, target=1, forward_args=fa),
    ),
    EntryPoint(
        "GuidedGradCAM",
        lambda m, x, layer: cl.GuidedGradCAM(m, layer)(x),
        lambda m, x, layer, fa: cl.GuidedGradCAM(m, layer)(x, forward_args=fa),
    ),
    EntryPoint(
        "deletion",
        lambda m, x, layer: cl.deletion(m, x, _maps(x)),
        lambda m, x, layer, fa: cl.deletion(m, x, _maps(x), forward_args=fa),
        gradients=False,
    ),
    EntryPoint(
        "insertion",
        lambda m, x, layer: cl.insertion(m, x, _maps(x), baseline="blur"),
        lambda m, x, layer, fa: cl.insertion(m, x, _maps(x), baseline="blur", forward_args=fa),
        gradients=False,
    ),
    EntryPoint(
        "evaluate",
        lambda m, x, layer: cl.evaluate(
            m, ["gradcam", "scorecam"], TensorDataset(x), layer=layer, progress=False
        ),
        lambda m, x, layer, fa: cl.evaluate(
            m, ["gradcam", "scorecam"], TensorDataset(x), layer=layer, progress=False, forward_args=fa
        ),
    ),
    EntryPoint(
        "ActivationMaximizer",
        lambda m, x, layer: cl.ActivationMaximizer(
            m, ob.channel(layer, 0) - 0.1 * ob.l1(), input_shape=tuple(x.shape), steps=2
        ).run(),
        lambda m, x, layer, fa: cl.ActivationMaximizer(
            m, ob.channel(layer, 0) - 0.1 * ob.l1(), input_shape=tuple(x.shape), steps=2, forward_args=fa
        ).run(),
    ),
    EntryPoint(
        "ActivationMaximizer class_logit",
        lambda m, x, layer: cl.ActivationMaximizer(
            m, ob.class_logit(1), input_shape=tuple(x.shape), steps=2, transforms=True
        ).run(),
        lambda m, x, layer, fa: cl.ActivationMaximizer(
            m, ob.class_logit(1), input_shape=tuple(x.shape), steps=2, transforms=True, forward_args=fa
        ).run(),
    ),
    EntryPoint(
        "NeuronVisualizer.maximize",
        lambda m, x, layer: cl.NeuronVisualizer(m, layer, input_shape=(1, *x.shape[1:])).maximize(
            [0], steps=2
        ),
        lambda m, x, layer, fa: cl.NeuronVisualizer(m, layer, input_shape=(1, *x.shape[1:])).maximize(
            [0], steps=2, forward_args=fa
        ),
        batch_of_one=True,
    ),
    EntryPoint(
        "NeuronVisualizer.top_examples",
        lambda m, x, layer: cl.NeuronVisualizer(m, layer).top_examples(TensorDataset(x), k=1),
        lambda m, x, layer, fa: cl.NeuronVisualizer(m, layer).top_examples(
            TensorDataset(x), k=1, forward_args=fa
        ),
        gradients=False,
    ),
    EntryPoint(
        "accentuate",
        lambda m, x, layer: cl.accentuate(m, ob.channel(layer, 0), x, layer=layer, steps=2),
        lambda m, x, layer, fa: cl.accentuate(
            m, ob.channel(layer, 0), x, layer=layer, steps=2, forward_args=fa
        ),
    ),
    EntryPoint("build_atlas", _atlas, _atlas, batch_of_one=True),
    EntryPoint(
        "concepts",
        lambda m, x, layer: _concepts(m, x, layer, None, importance=True),
        lambda m, x, layer, fa: _concepts(m, x, layer, fa, importance=True),
    ),
    EntryPoint(
        "concept_pictures",
        lambda m, x, layer: cl.concept_pictures(
            m,
            layer,
            torch.rand(len(x), _channels(m, layer)),  # one concept per picture of x
            input_shape=(1, *x.shape[1:]),
            normalize=None,
            steps=2,
        ),
        lambda m, x, layer, fa: cl.concept_pictures(
            m,
            layer,
            torch.rand(len(x), _channels(m, layer)),  # one concept per picture of x
            input_shape=(1, *x.shape[1:]),
            normalize=None,
            steps=2,
            forward_args=fa,
        ),
    ),
    EntryPoint(
        "concepts importance=False",
        lambda m, x, layer: _concepts(m, x, layer, None, importance=False),
        lambda m, x, layer, fa: _concepts(m, x, layer, fa, importance=False),
        gradients=False,
    ),
    EntryPoint(
        "FilterRenderer",
        lambda m, x, layer: cl.FilterRenderer(m, layer).plot(n=4, cols=2),
        not_in_forward_error=_NEVER_RUNS,
        not_in_diagnosis=_NEVER_RUNS,
        gradients=False,
    ),
)

ENTRIES: dict[str, EntryPoint] = {entry.name: entry for entry in ENTRY_POINTS}
