"""One vocabulary: the public signatures follow docs/architecture.md's table.

Read from ``inspect.signature`` over the callables of ``convlens.__all__`` and their public methods, so
that a new entry point is held to the same words without anyone listing it here:

- ``steps`` is optimization iterations only: ActivationMaximizer, NeuronVisualizer.maximize and
  build_atlas (deletion, insertion and evaluate count ``intervals``; their old ``steps=`` is deprecated);
- no ``neuron=`` / ``neurons=`` keyword but the deprecated old spellings: keyword-only, default ``UNSET``;
- every ``target`` defaults to None (the predicted class);
- every ``batch_size`` has the same default;
- the model first, then what to look at, then the data, then keyword-only options;
- ``reshape=`` wherever a layer output becomes a map (the CAM family, GuidedGradCAM, evaluate).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import convlens as cl
from convlens.core.deprecation import UNSET

Parameter = inspect.Parameter


def _public_callables() -> Iterator[tuple[str, Callable[..., Any], bool]]:
    """``(qualified name, callable, is a record)`` for each public callable and public method.

    A class contributes its constructor (under the class's name) and its public methods (and
    ``__call__``), its own and inherited from convlens classes. Exceptions and warnings are left out:
    their constructors are Python's. A record is a frozen dataclass (a result).
    """
    for name in cl.__all__:
        value = getattr(cl, name)
        if inspect.ismodule(value) or isinstance(value, str):
            continue
        if inspect.isclass(value):
            if issubclass(value, BaseException):
                continue
            yield name, value, dataclasses.is_dataclass(value)
            for attr in dir(value):
                if attr.startswith("_") and attr != "__call__":
                    continue
                method = inspect.getattr_static(value, attr)
                if isinstance(method, staticmethod | classmethod):
                    method = method.__func__
                if inspect.isfunction(method) and method.__module__.startswith("convlens."):
                    yield f"{name}.{attr}", method, False
        elif callable(value):
            yield name, value, False


CALLABLES = list(_public_callables())
ENTRY_CALLABLES = [(name, fn) for name, fn, record in CALLABLES if not record]


def _parameters(fn: Callable[..., Any]) -> list[Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def _with(parameter: str, callables: list[tuple[str, Callable[..., Any]]]) -> dict[str, Parameter]:
    return {name: p for name, fn in callables for p in _parameters(fn) if p.name == parameter}


def test_the_public_callables_are_found() -> None:
    """The walk itself: if it found nothing, every test below would pass for nothing."""
    names = {name for name, _ in ENTRY_CALLABLES}
    expected = {
        "GradCAM",
        "GradCAM.__call__",
        "GuidedGradCAM",
        "GuidedGradCAM.__call__",
        "LayerTap.run",
        "ActivationMaximizer",
        "NeuronVisualizer.maximize",
        "NeuronVisualizer.top_examples",
        "deletion",
        "insertion",
        "evaluate",
        "build_atlas",
        "trace_shapes",
        "concepts",
        "concept_pictures",
    }
    assert expected <= names, expected - names


#: The optimization entry points: the only ones whose ``steps`` counts iterations.
OPTIMIZATION = {
    "ActivationMaximizer",
    "NeuronVisualizer.maximize",
    "build_atlas",
    "concept_pictures",
    "accentuate",
}


def _deprecated(p: Parameter) -> bool:
    """An old spelling kept for one release: keyword-only, default UNSET (src/convlens/core/deprecation.py)."""
    return p.kind is Parameter.KEYWORD_ONLY and p.default is UNSET


def test_steps_is_optimization_iterations_only() -> None:
    """Results included: a record's ``steps`` field would mean what the word means.

    An old ``steps=`` kept for one release (deletion's, now ``intervals=``) is not a use of the word.
    """
    everywhere = [(name, fn) for name, fn, _ in CALLABLES]
    found = {name for name, p in _with("steps", everywhere).items() if not _deprecated(p)}
    assert found - OPTIMIZATION == set(), f"steps= outside optimization: {sorted(found - OPTIMIZATION)}"
    assert found >= OPTIMIZATION, (
        f"an optimization entry point without steps=: {sorted(OPTIMIZATION - found)}"
    )


@pytest.mark.parametrize("keyword", ["neuron", "neurons"])
def test_neuron_keywords_are_only_deprecated_old_spellings(keyword: str) -> None:
    found = _with(keyword, ENTRY_CALLABLES)
    wrong = {name: str(p) for name, p in found.items() if not _deprecated(p)}
    assert not wrong, f"{keyword}= must be a keyword-only deprecated spelling (default UNSET): {wrong}"


def test_renamed_units_keywords_are_in_place() -> None:
    """The new spellings exist where the old ones are deprecated (units: NeuronVisualizer's words)."""
    maximize = {p.name for p in _parameters(cl.NeuronVisualizer.maximize)}
    top = {p.name for p in _parameters(cl.NeuronVisualizer.top_examples)}
    assert "units" in maximize, sorted(maximize)
    assert "unit" in top, sorted(top)


def test_every_target_defaults_to_none() -> None:
    found = _with("target", ENTRY_CALLABLES)
    assert {"GradCAM.__call__", "Saliency.__call__", "deletion", "evaluate"} <= found.keys()
    wrong = {name: p.default for name, p in found.items() if p.default is not None}
    assert not wrong, f"target= must default to None (the predicted class): {wrong}"


def test_every_batch_size_has_one_default() -> None:
    found = _with("batch_size", ENTRY_CALLABLES)
    assert {"deletion", "evaluate", "NeuronVisualizer.top_examples", "build_atlas"} <= found.keys()
    defaults = {name: p.default for name, p in found.items()}
    assert set(defaults.values()) == {64}, f"batch_size= defaults differ: {defaults}"


#: What may come before the keyword-only options: the model, what to look at (a layer, layers, the
#: earlier and later layer of a circuit, an objective, methods, units), the data (x, data, input, inputs,
#: maps, the pictures an accentuation starts from) and, for a writer, where to.
LEADING = {
    "model",
    "layer",
    "layers",
    "earlier",
    "later",
    "objective",
    "methods",
    "units",
    "unit",
    "x",
    "data",
    "input",
    "inputs",
    "maps",
    "pictures",
    "out",
}


#: Positional by the design's contract, the named exceptions (docs/architecture.md, "One vocabulary"):
#: ``top_examples(data, unit, k)`` (DESIGN.md writes ``top_examples(data, neuron, k)``;
#: tests/test_neurons.py pins ``top_examples(test_set, 3, 9)``), and ``target`` right after the data it
#: asks about (``cam(x, 3)``, ``deletion(model, x, maps, [3, 7])``), as every release so far took it.
#: ``concepts(model, layer, data, n)``: how many concepts, as DESIGN.md writes the call; and
#: ``concept_pictures(model, layer, bank)``: the bank is what to look at, after the layer.
CONTRACT_POSITIONAL = {
    "NeuronVisualizer.top_examples": {"unit", "k"},
    "concepts": {"n"},
    "concept_pictures": {"bank"},
}
TARGET_AFTER_DATA = {"target"}


def _runs_a_model(name: str, fn: Callable[..., Any]) -> bool:
    """A function or constructor that takes the model first, or a method that runs one on data."""
    parameters = _parameters(fn)
    if not parameters:
        return False
    if "." not in name:
        return parameters[0].name == "model"
    owner = getattr(cl, name.split(".", maxsplit=1)[0])
    takes_model = [p.name for p in _parameters(owner)][:1] == ["model"]
    return takes_model and (
        parameters[0].name in {"x", "data", "inputs"} or name.endswith((".run", ".maximize"))
    )


def test_options_are_keyword_only() -> None:
    checked = {name for name, fn in ENTRY_CALLABLES if _runs_a_model(name, fn)}
    assert {"GradCAM", "GradCAM.__call__", "deletion", "evaluate", "LayerTap.run", "build_atlas"} <= checked
    wrong = {
        name: [
            p.name
            for p in _parameters(fn)
            if p.kind is Parameter.POSITIONAL_OR_KEYWORD
            and p.name not in LEADING | TARGET_AFTER_DATA | CONTRACT_POSITIONAL.get(name, set())
        ]
        for name, fn in ENTRY_CALLABLES
        if name in checked
    }
    wrong = {name: names for name, names in wrong.items() if names}
    assert not wrong, f"options that are not keyword-only: {wrong}"


def test_reshape_wherever_a_layer_output_becomes_a_map() -> None:
    makers = [
        name
        for name in cl.__all__
        if inspect.isclass(getattr(cl, name)) and issubclass(getattr(cl, name), cl.GradCAM)
    ]
    assert {"GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "ScoreCAM", "EigenCAM"} <= set(makers)
    makers += ["GuidedGradCAM", "evaluate"]
    missing = []
    for name in makers:
        parameter = inspect.signature(getattr(cl, name)).parameters.get("reshape")
        if parameter is None or parameter.kind is not Parameter.KEYWORD_ONLY or parameter.default is not None:
            missing.append(name)
    assert not missing, f"no keyword-only reshape=None: {missing}"


def test_reshape_also_wherever_channels_are_read() -> None:
    """The channel readers take the same ``reshape=`` (docs/architecture.md, "reshape")."""
    readers: dict[str, Callable[..., Any]] = {
        "NeuronVisualizer": cl.NeuronVisualizer,
        "objectives.channel": cl.objectives.channel,
        "objectives.neuron": cl.objectives.neuron,
        "build_atlas": cl.build_atlas,
    }
    missing = [
        name
        for name, fn in readers.items()
        if (p := inspect.signature(fn).parameters.get("reshape")) is None
        or p.kind is not Parameter.KEYWORD_ONLY
        or p.default is not None
    ]
    assert not missing, f"no keyword-only reshape=None: {missing}"


def test_forward_args_is_one_keyword_only_option_defaulting_to_none() -> None:
    found = _with("forward_args", ENTRY_CALLABLES)
    expected = {
        "trace_shapes",
        "LayerTap.run",
        "GradCAM.__call__",
        "Saliency.__call__",
        "GuidedBackprop.__call__",
        "GuidedGradCAM.__call__",
        "deletion",
        "insertion",
        "evaluate",
        "ActivationMaximizer",
        "NeuronVisualizer.maximize",
        "NeuronVisualizer.top_examples",
        "build_atlas",
    }
    assert expected <= found.keys(), sorted(expected - found.keys())
    wrong = {
        name: (p.kind.name, p.default)
        for name, p in found.items()
        if p.kind is not Parameter.KEYWORD_ONLY or p.default is not None
    }
    assert not wrong, f"forward_args= must be keyword-only, default None: {wrong}"
