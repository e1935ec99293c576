"""The maximizer's forward: record an objective's layers, stop right after the last of them.

Also what :mod:`convlens.featureviz.maximize` and :mod:`convlens.featureviz.neurons` learn before
they optimize: the output shapes of the layers an objective reads (from the
probe, or one real forward where the probe cannot see), and the refusal of a layer whose output
looks channels last (:func:`check_channels_first`).

Every forward is ``model(x, *forward_args.args, **forward_args.kwargs)``, the probe's included.
A layer that returns several tensors is read at the one its :class:`~convlens.Layout` picks (the
first unless ``part=`` says otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from convlens.core.inputs import NO_ARGS, ForwardArgs
from convlens.core.layers import LayerRef, call_index
from convlens.core.layouts import Layout, channels_last_hint
from convlens.core.probe import Probe, Prober
from convlens.core.recorder import Recorder, StopForward, preserved_modes
from convlens.core.values import first_tensor, tensors
from convlens.errors import InvalidArgumentError, LayerNotFoundError
from convlens.featureviz.objectives import OUTPUT

__all__ = ["ObjectiveForward", "check_channels_first", "layer_shapes"]

#: The first tensor of a layer's output, as returned.
_FIRST = Layout()


def _picks_first(layout: Layout) -> bool:
    return layout.part in (None, 0)


def check_channels_first(
    who: str, key: str, module: nn.Module, shape: tuple[int, ...], layout: Layout
) -> None:
    """Refuse, before any work, a layer output that looks ``(N, *spatial, C)`` read without a reshape.

    Raises:
        InvalidArgumentError: ``layout`` does not reshape and :func:`~convlens.core.layouts.channels_last_hint`
            finds a Linear or LayerNorm over the last dimension; the message names ``reshape="channels_last"``.
    """
    if layout.reshapes:
        return
    found = channels_last_hint(module, shape)
    if found is None:
        return
    part = "" if layout.part is None else f"Layout(part={layout.part!r}, reshape='channels_last')"
    spelled = part or "'channels_last'"
    tokens = " (reshape='vit' for tokens (N, L, C) on a square grid)" if len(shape) == 3 else ""
    raise InvalidArgumentError(
        f"{who} reads channels at dimension 1 of (N, C, *spatial); layer {key!r} gives {shape}, which looks "
        f"channels last (N, *spatial, C): a {found} in it computes {shape[-1]} features along the last "
        f"dimension. Pass reshape={spelled} to read its {shape[-1]} channels{tokens}, or a callable to "
        "(N, C, *spatial)."
    )


class ObjectiveForward:
    """One forward recording the objective's layers, stopped right after the last of them."""

    def __init__(
        self,
        model: nn.Module,
        refs: Mapping[str, LayerRef],
        *,
        needs_output: bool,
        probe: Probe,
        forward_args: ForwardArgs = NO_ARGS,
        layouts: Mapping[str, Layout] | None = None,
    ) -> None:
        self.model = model
        self.needs_output = needs_output
        self.probe = probe
        self.forward_args = forward_args
        self.layouts = dict(layouts or {})
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
        last = self.recorder.remaining == 1
        for key in self.keys[name][call]:
            layout = self.layouts.get(key, _FIRST)
            tensor = layout.pick(output)
            # Nothing runs after the last wanted call; an earlier one is cloned (in the graph) only
            # where a later op writes into it in place (the probe follows the first tensor only).
            rewritten = not _picks_first(layout) or self.probe.rewritten(name, call)
            self.acts[key] = tensor if last or not rewritten else tensor.clone()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the model on ``x``; the activations of the objective's layers (and the output where read)."""
        self.acts = {}
        self.recorder.start(None if self.needs_output else self.recorder.events)
        try:
            with self.recorder.owned():
                output = self.forward_args.call(self.model, x)
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
    forward_args: ForwardArgs = NO_ARGS,
    layouts: Mapping[str, Layout] | None = None,
    example: Tensor | None = None,
) -> dict[str, tuple[int, ...]]:
    """Output shapes of the given layers and of the model (under ``OUTPUT``), checked to run.

    From the probe (one pass on the meta device; ``probe`` when the caller has
    it); a model the probe cannot see whole gets one real forward on zeros
    (or on ``example``), without autograd, in eval mode, unless the probe failed inside a later leaf
    layer after seeing every layer asked for and the model output is not needed.
    A layer's shape is that of the tensor its layout in ``layouts`` picks (the first by default);
    the probe sees the first tensor only, so a layout that picks another gets the real forward.

    Raises:
        ShapeError: A layer rejects the shape of what it receives (it is named).
        LayerNotFoundError: A layer that does not run, or a call past its last.
        AmbiguousLayerError: The bare name of a layer that runs more than once.
    """
    modules = {ref.name: ref.module for ref in refs.values()}
    layouts = dict(layouts or {})
    if probe is None:
        meta = torch.empty(input_shape, dtype=dtype, device="meta")
        probe = Prober(model, modules)((meta, *forward_args.args), forward_args.kwargs)  # shared
    waits: dict[str, int] = {}
    for ref in refs.values():
        waits[ref.name] = max(waits.get(ref.name, 0), (ref.call or 0) + 1)
    probe.check(stops_after=None if needs_output else waits)
    seen: dict[str, list[Any]] = {  # per call, what the layer returned (a meta twin of its first tensor)
        name: [
            None if s.shape is None else torch.empty(s.shape, device="meta") for s in probe.seen.get(name, ())
        ]
        for name in modules
    }
    output_shape = probe.output_shape
    counted = probe.complete or probe.in_leaf  # a failure in the model's own code: counts unknown
    other_parts = not all(_picks_first(layout) for layout in layouts.values())
    if other_parts or (not probe.complete and (needs_output or not all(seen.values()) or not counted)):
        seen = {name: [] for name in modules}

        def record(name: str, _call: int, output: Any) -> None:
            seen[name].append(output if tensors(output) else None)

        recorder = Recorder(model, modules, keep=record)
        zeros = torch.zeros(input_shape, dtype=dtype, device=device) if example is None else example
        output_shape = None
        try:  # code that needs data, or a layout that reads another tensor: one real forward
            with (
                recorder.attached(),
                recorder.owned(),
                preserved_modes(model, training=False),
                torch.no_grad(),
            ):
                tensor = first_tensor(forward_args.call(model, zeros))
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
        value = calls[call_index(ref, len(calls))]
        if value is None:
            raise InvalidArgumentError(f"layer {key!r} returns no tensor; pick a layer that does.")
        shapes[key] = tuple(layouts.get(key, _FIRST).pick(value).shape)
    if output_shape is not None:
        shapes[OUTPUT] = output_shape
    return shapes
