"""The maximizer's forward: record an objective's layers, stop right after the last of them.

Also what :mod:`convlens.featureviz.maximize` and :mod:`convlens.featureviz.neurons` learn before
they optimize: the output shapes of the layers an objective reads (from the
probe, or one real forward where the probe cannot see).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from convlens.core.layers import LayerRef, call_index
from convlens.core.probe import Probe, Prober
from convlens.core.recorder import Recorder, StopForward, preserved_modes
from convlens.core.values import first_tensor
from convlens.errors import InvalidArgumentError, LayerNotFoundError
from convlens.featureviz.objectives import OUTPUT

__all__ = ["ObjectiveForward", "layer_shapes"]


class ObjectiveForward:
    """One forward recording the objective's layers, stopped right after the last of them."""

    def __init__(
        self, model: nn.Module, refs: Mapping[str, LayerRef], *, needs_output: bool, probe: Probe
    ) -> None:
        self.model = model
        self.needs_output = needs_output
        self.probe = probe
        self.keys: dict[str, dict[int, list[str]]] = {}
        modules: dict[str, nn.Module] = {}
        for key, ref in refs.items():
            modules[ref.name] = ref.module
            self.keys.setdefault(ref.name, {}).setdefault(ref.call or 0, []).append(key)
        self.acts: dict[str, Tensor] = {}
        self.recorder = Recorder(
            model, modules, wanted={name: set(calls) for name, calls in self.keys.items()}, keep=self._keep
        )

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """The recorder's hooks on the model for the ``with`` block, removed after."""
        with self.recorder.attached():
            yield

    def _keep(self, name: str, call: int, output: Any) -> None:
        keys = self.keys[name][call]
        tensor = first_tensor(output)
        if tensor is None:
            raise InvalidArgumentError(f"layer {keys[0]!r} returns {type(output).__name__}, not a tensor.")
        last = self.recorder.remaining == 1
        # Nothing runs after the last wanted call; an earlier one is cloned (in the graph) only
        # where a later op writes into it in place.
        kept = tensor if last or not self.probe.rewritten(name, call) else tensor.clone()
        for key in keys:
            self.acts[key] = kept

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the model on ``x``; the activations of the objective's layers (and the output where read)."""
        self.acts = {}
        self.recorder.start(None if self.needs_output else self.recorder.events)
        try:
            with self.recorder.owned():
                output = self.model(x)
        except StopForward:
            return self.acts
        missing = [
            k for calls in self.keys.values() for keys in calls.values() for k in keys if k not in self.acts
        ]
        if missing:
            absent = ", ".join(repr(k) for k in sorted(missing))
            raise LayerNotFoundError(f"Layer {absent} did not run in this forward.")
        if self.needs_output:
            tensor = first_tensor(output)
            if tensor is None:
                raise InvalidArgumentError(f"the model returns {type(output).__name__}, not a tensor.")
            self.acts[OUTPUT] = tensor
        return self.acts


def layer_shapes(
    model: nn.Module,
    refs: Mapping[str, LayerRef],
    input_shape: tuple[int, ...],
    *,
    dtype: torch.dtype,
    device: torch.device,
    needs_output: bool = True,
    probe: Probe | None = None,
) -> dict[str, tuple[int, ...]]:
    """Output shapes of the given layers and of the model (under ``OUTPUT``), checked to run.

    From the probe (one pass on the meta device; ``probe`` when the caller has
    it); a model the probe cannot see whole gets one real forward on zeros,
    without autograd, in eval mode, unless the probe failed inside a later leaf
    layer after seeing every layer asked for and the model output is not needed.

    Raises:
        ShapeError: A layer rejects the shape of what it receives (it is named).
        LayerNotFoundError: A layer that does not run, or a call past its last.
        AmbiguousLayerError: The bare name of a layer that runs more than once.
    """
    modules = {ref.name: ref.module for ref in refs.values()}
    if probe is None:
        probe = Prober(model, modules)((torch.empty(input_shape, dtype=dtype, device="meta"),))  # shared
    waits: dict[str, int] = {}
    for ref in refs.values():
        waits[ref.name] = max(waits.get(ref.name, 0), (ref.call or 0) + 1)
    probe.check(stops_after=None if needs_output else waits)
    seen: dict[str, list[tuple[int, ...] | None]] = {
        name: [s.shape for s in probe.seen.get(name, ())] for name in modules
    }
    output_shape = probe.output_shape
    counted = probe.complete or probe.in_leaf  # a failure in the model's own code: counts unknown
    if not probe.complete and (needs_output or not all(seen.values()) or not counted):
        seen = {name: [] for name in modules}

        def record(name: str, _call: int, output: Any) -> None:
            tensor = first_tensor(output)
            seen[name].append(None if tensor is None else tuple(tensor.shape))

        recorder = Recorder(model, modules, keep=record)
        zeros = torch.zeros(input_shape, dtype=dtype, device=device)
        output_shape = None
        try:  # code that needs data: one real forward instead
            with (
                recorder.attached(),
                recorder.owned(),
                preserved_modes(model, training=False),
                torch.no_grad(),
            ):
                tensor = first_tensor(model(zeros))
            output_shape = None if tensor is None else tuple(tensor.shape)
        except Exception:
            if needs_output or not all(seen.values()):
                raise
    shapes: dict[str, tuple[int, ...]] = {}
    for key, ref in refs.items():
        calls = seen[ref.name]
        if not calls:
            raise LayerNotFoundError(
                f"Layer {ref.name!r} does not run in the forward of {type(model).__name__}."
            )
        shape = calls[call_index(ref, len(calls))]
        if shape is None:
            raise InvalidArgumentError(f"layer {key!r} returns no tensor; pick a layer that does.")
        shapes[key] = shape
    if output_shape is not None:
        shapes[OUTPUT] = output_shape
    return shapes
