"""LayerTap: record what layers return, and the gradients that reach them.

The hooks are those of the one call recorder (:mod:`convlens.core.recorder`),
registered on entry and removed through one :class:`contextlib.ExitStack`,
so they are gone after success and after any exception, raised by the
forward or by a hook. What to copy and when to stop comes from the one probe
(:mod:`convlens.core.probe`).

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> import convlens as cl
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Flatten())
    >>> with cl.LayerTap(net, ["0"]) as tap:
    ...     _ = net(torch.randn(2, 3, 8, 8))
    >>> tap["0"].shape, bool((tap["0"] < 0).any())  # recorded before the in-place ReLU
    (torch.Size([2, 8, 6, 6]), True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from convlens.core.checks import check_bool, require_autograd
from convlens.core.inputs import ForwardArgsLike, as_forward_args, check_runnable
from convlens.core.layers import LayerRef, LayerSpec, call_index, resolve_layer, resolve_layers, unwrap
from convlens.core.probe import Probe, Prober, check_inputs, require_hooks
from convlens.core.recorder import Recorder, StopForward, preserved_modes
from convlens.core.values import first_tensor, map_tensors, tensors, with_first_tensor
from convlens.errors import ConvlensError, InvalidArgumentError, LayerNotFoundError, UnsupportedModelError

__all__ = ["LayerTap"]

T = TypeVar("T")


class LayerTap:
    """Record the outputs (and optionally gradients) of chosen layers.

    Use it as a context manager around your own forward, or call :meth:`run`
    to run the model in inference mode and stop right after the last tapped
    layer. Each recorded value is the one the layer returned: a later in-place
    op (``ReLU(inplace=True)``, ``out += identity``) cannot change it. A pass
    on the meta device (once per input signature) sees which outputs a later
    op rewrites in place; only those are copied (:attr:`copied`), the rest are
    kept by reference, detached. Where that pass cannot run (code that needs
    data), every activation is copied. Activations are keyed by qualified
    name; the calls of a module that ran more than once are keyed ``name#0``,
    ``name#1``, ... Only calls made during a forward of ``model`` are recorded
    (calling a submodule directly records nothing), and each forward of
    ``model`` replaces the previous record.

    Inside ``with LayerTap(...)`` your own forward runs the model as it is:
    nothing about its inputs is checked (their device neither), so a model
    that moves its inputs itself and DataParallel's replicas on several GPUs
    work. Entering the block refuses, before any forward, a model on the meta
    device and, with ``grads=True``, a quantized model. :meth:`run` checks
    its inputs' devices too, as every entry point that runs the model does.

    Records are keyed by the names given: a wrapper (``nn.DataParallel``,
    ``DistributedDataParallel``, ``torch.compile``) is looked through and its
    model runs eagerly; its layers can be named as ``named_modules()`` of the
    wrapper names them (``"module.layer4"``, ``"_orig_mod.layer4"``) or as in
    the wrapped model (``"layer4"``), and come back under that name. A layer
    given as a module object is keyed by its name in ``model``.

    A layer that returns several tensors (a tuple, list, dict or NamedTuple,
    as multi-resolution stages and feature pyramids do): ``tap[name]`` and
    :attr:`activations` hold its first tensor (depth first, in order), and
    :attr:`outputs` the value as it was returned, structure kept, every tensor
    detached (and copied where a later op rewrites it). Gradients are taken at
    the first tensor.

    Args:
        model: Any ``nn.Module``.
        layers: One layer or several, as names (``"features.0"``, ``"relu#1"``)
            or module objects. Validated here, before anything runs.
        grads: Also record the gradient reaching each tapped activation when
            the caller back-propagates (``tap.gradients``). An output that a
            later op rewrites in place is then passed on as a clone, so the
            gradient is the one at the layer's own output.
        device: Where to store the records (e.g. ``"cpu"`` to spare GPU
            memory). Defaults to the device of each activation.

    Raises:
        LayerNotFoundError: A layer name the model does not have.
        InvalidArgumentError: ``layers`` is empty.
        UnsupportedModelError: A TorchScript model (hooks cannot see inside it);
            on entering the ``with`` block, a meta or (with ``grads=True``)
            quantized model.

    Shape:
        Each activation has the shape the layer returned.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import convlens as cl
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> tap = cl.LayerTap(net, ["0", net[1]])
        >>> acts = tap.run(torch.randn(1, 1, 9, 9))  # stops after net[1]
        >>> {name: tuple(a.shape) for name, a in acts.items()}
        {'0': (1, 4, 7, 7), '1': (1, 4, 7, 7)}
        >>> inplace = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3))
        >>> tap = cl.LayerTap(inplace, ["0", "2"])
        >>> _ = tap.run(torch.randn(1, 1, 9, 9))
        >>> sorted(tap.copied)  # the ReLU rewrites conv 0's output in place; conv 2's is kept as is
        ['0']
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec],
        *,
        grads: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self._module = unwrap(model)
        require_hooks(self._module, "LayerTap")
        self.refs: list[LayerRef] = resolve_layers(model, layers)
        self.grads = check_bool("grads", grads)
        self.device = None if device is None else torch.device(device)
        # Which calls to keep per module name: None keeps every call.
        self._wanted: dict[str, set[int] | None] = {}
        self._modules: dict[str, nn.Module] = {}
        # The names results are keyed by, per module name: as the user gave them.
        self._labels: dict[str, list[str]] = {}
        for ref in self.refs:
            self._modules[ref.name] = ref.module
            labels = self._labels.setdefault(ref.name, [])
            if ref.shown not in labels:
                labels.append(ref.shown)
            kept = self._wanted.get(ref.name, set())
            self._wanted[ref.name] = None if ref.call is None or kept is None else kept | {ref.call}
        self._prober = Prober(self._module, self._modules)  # shared with every entry point on the model
        self._recorder = Recorder(
            self._module,
            self._modules,
            wanted=self._wanted,
            keep=self._keep,
            forwards_only=True,
            on_forward=self._on_forward,
        )
        self._stack: contextlib.ExitStack | None = None
        self._probe: Probe | None = None  # what the probe knows of the current forward
        self._in_run = False
        self._acts: dict[str, dict[int, Tensor]] = {}
        self._outs: dict[str, dict[int, Any]] = {}  # only outputs that are not a lone tensor
        self._grads: dict[str, dict[int, Tensor]] = {}
        self._copied: set[tuple[str, int]] = set()
        self._live: dict[tuple[str, int], Tensor] = {}
        self._clear()

    # -- hooks -------------------------------------------------------------

    def __enter__(self) -> LayerTap:
        check_runnable(self._module, who="LayerTap", gradients=self.grads)
        if self._module is not self.model and type(self.model).__name__ == "OptimizedModule":
            raise UnsupportedModelError(
                "A torch.compile model's graph does not see hooks added after it was compiled, so a with "
                "block around your own call of it would record nothing. Use tap.run(x) (it runs the "
                "wrapped model eagerly), or tap the original module: LayerTap(model._orig_mod, ...)."
            )
        return self._attach()

    @contextlib.contextmanager
    def steady(self) -> Iterator[LayerTap]:
        """For many :meth:`run` calls in a row (a pass over a dataset) on a model that is not edited meanwhile.

        The hooks are registered once for the block (not per call) and the
        model's structure is read once for the probe lookups; everything is
        removed on exit, also when a run raises.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
            >>> tap = LayerTap(net, "0")
            >>> with tap.steady():
            ...     shapes = [tuple(tap.run(torch.randn(2, 1, 5, 5))["0"].shape) for _ in range(3)]
            >>> shapes, len(net[0]._forward_hooks)
            ([(2, 2, 3, 3), (2, 2, 3, 3), (2, 2, 3, 3)], 0)
        """
        owned = self._stack is None  # inside the user's own with block, the hooks are already there
        if owned:
            self._attach()
        try:
            with self._prober.steady():
                yield self
        finally:
            if owned:
                self.close()

    def _attach(self) -> LayerTap:
        if self._stack is not None:
            raise ConvlensError("This LayerTap is already active; create a second LayerTap to nest taps.")
        stack = contextlib.ExitStack()
        stack.enter_context(self._recorder.attached())  # removes what it registered if one fails
        self._clear()
        self._stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this tap registered. Safe to call twice."""
        stack, self._stack = self._stack, None
        self._live.clear()
        if stack is not None:
            stack.close()

    def _clear(self) -> None:
        self._recorder.start(self._recorder.remaining)
        self._acts = {name: {} for name in self._modules}
        self._outs = {name: {} for name in self._modules}
        self._grads = {name: {} for name in self._modules}
        self._copied = set()
        self._live.clear()

    def _on_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A forward of the model begins: a fresh record, and (in a user's block) a probe.

        A user's own forward is not checked (no device check): it runs the model as it is, so a
        model that moves its inputs itself, or DataParallel's replicas on several GPUs, work.
        """
        self._clear()
        if self._in_run:
            return
        try:  # a user's own forward runs as it is: a probe that cannot run only costs copies
            self._probe = self._prober(args, kwargs, training=None)
        except ConvlensError:
            self._probe = None

    def _keep(self, name: str, call: int, output: Any) -> Any:
        tensor = first_tensor(output)
        if tensor is None:
            return None
        # Nothing runs after the last wanted call of an early-stopped run.
        last = self._in_run and self._recorder.remaining == 1
        rewritten = not last and (self._probe is None or self._probe.rewritten(name, call))
        kept = tensor.detach().to(self.device or tensor.device, copy=rewritten)
        self._acts[name][call] = kept
        if rewritten:
            self._copied.add((name, call))
        if not isinstance(output, Tensor):
            self._outs[name][call] = self._structure(name, call, output, tensor, kept, last=last)
        if not (self.grads and torch.is_grad_enabled()):
            return None
        # Differentiate at the layer's own tensor (a fresh leaf when nothing upstream needs grad,
        # as with a frozen backbone); where a later op rewrites it in place, a clone flows on.
        live = tensor if tensor.requires_grad else tensor.detach().requires_grad_()
        self._live[(name, call)] = live
        if not self._in_run:
            live.register_hook(self._make_grad_hook(name, call))  # type: ignore[no-untyped-call]
        if rewritten:
            return with_first_tensor(output, live.clone())
        return None if live is tensor else with_first_tensor(output, live)

    def _structure(
        self, name: str, call: int, output: Any, first: Tensor, kept: Tensor, *, last: bool
    ) -> Any:
        """The output as returned, each tensor detached, copied where a later op rewrites it."""
        probe, seen = self._probe, iter(range(1 << 30))

        def detach(t: Tensor) -> Tensor:
            part = next(seen)
            if t is first and part == 0:
                return kept
            copy = not last and (probe is None or probe.rewritten_part(name, call, part))
            if copy:
                self._copied.add((name, call))
            return t.detach().to(self.device or t.device, copy=copy)

        return map_tensors(output, detach)

    def _make_grad_hook(self, name: str, call: int) -> Callable[[Tensor], None]:
        def grad_hook(grad: Tensor) -> None:
            self._grads[name][call] = grad.detach().to(self.device or grad.device, copy=True)

        return grad_hook

    # -- running -------------------------------------------------------------

    def run(self, *inputs: Any, forward_args: ForwardArgsLike = None, **kwargs: Any) -> dict[str, Tensor]:
        """Run the model in inference mode and return the activations.

        The model runs in eval mode without autograd, and the forward stops
        right after the last tapped call (nothing after it is computed). With
        ``grads=True`` the whole forward runs with autograd and
        ``tap.gradients`` holds d(sum of the model's outputs)/d(activation),
        taken with :func:`torch.autograd.grad` (no parameter ``.grad`` is
        written). Training flags are restored afterwards. Before any real
        work, one pass on the meta device (cached per input signature) learns
        how often each tapped layer runs and which outputs a later in-place op
        rewrites; a model that rejects the input raises a
        :class:`~convlens.ShapeError` naming the layer.

        Args:
            *inputs: Positional inputs of the model (a detector's list of
                images is one input: ``tap.run([image])``).
            forward_args: The model's other forward arguments, after the
                inputs: a tuple (positional), a dict (keyword) or
                :class:`~convlens.ForwardArgs` for both. They reach every
                forward, the meta probe's included.
            **kwargs: Keyword inputs of the model (added to ``forward_args``'s).

        Returns:
            The activations, as :attr:`activations`.

        Raises:
            UnsupportedModelError: A model on the meta device, or a quantized
                model with ``grads=True`` (quantized kernels have no gradients).
            DeviceMismatchError: The model and a tensor of the inputs (or of
                ``forward_args``) live on different devices.
            ShapeError: A layer rejects the input (wrong rank, channels or
                features, a spatial size too small, no batch dimension).
            InvalidTypeError: A numpy array or PIL image as input, or inputs
                that do not fit the model's ``forward``.
            InvalidArgumentError: ``grads=True`` and the model returns no
                tensor that depends on its input.
            LayerNotFoundError: A tapped layer that does not run, or a
                ``#i`` past its last call.
            InvalidArgumentError: A keyword given both in ``**kwargs`` and in
                ``forward_args``.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> class Scaled(nn.Module):
            ...     def __init__(self) -> None:
            ...         super().__init__()
            ...         self.conv = nn.Conv2d(1, 2, 3)
            ...     def forward(self, x, mask, *, scale):
            ...         return self.conv(x * mask) * scale
            >>> tap = LayerTap(Scaled(), "conv")
            >>> mask = torch.ones(2, 1, 5, 5)
            >>> tuple(tap.run(torch.randn(2, 1, 5, 5), forward_args=(mask,), scale=2.0)["conv"].shape)
            (2, 2, 3, 3)
        """
        extra = as_forward_args(forward_args)
        clash = sorted(set(kwargs) & set(extra.kwargs))
        if clash:
            raise InvalidArgumentError(
                f"LayerTap.run got {', '.join(clash)} both as a keyword input and in forward_args; give each once."
            )
        check_runnable(
            self._module, (inputs, kwargs), who="LayerTap.run", gradients=self.grads, forward_args=extra
        )
        inputs, kwargs = (*inputs, *extra.args), {**kwargs, **extra.kwargs}
        check_inputs(inputs, kwargs)
        if self.grads:
            require_autograd("LayerTap.run with grads=True")
        probe = self._prober(inputs, kwargs)
        probe.check(stops_after=None if self.grads else self._waits_for())
        if probe.complete:  # every tapped layer must run, and a #i must be one of its calls
            for ref in self.refs:
                calls = probe.count(ref.name) or 0
                if calls == 0:
                    raise LayerNotFoundError(
                        f"Layer {ref.shown!r} does not run in the forward of {type(self._module).__name__} "
                        "(in eval mode, as tap.run runs it)."
                    )
                if ref.call is not None:
                    call_index(ref, calls)
        with contextlib.ExitStack() as stack:
            if self._stack is None:
                self._attach()
                stack.callback(self.close)
            stack.enter_context(preserved_modes(self._module, training=False))
            stack.callback(self._finish_run)
            self._clear()
            self._in_run, self._probe = True, probe
            if self.grads:
                stack.enter_context(torch.enable_grad())
                self._recorder.stop_after(None)
                # A leaf per input, and a clone of it into the model: a model that writes into its
                # input must not write into a leaf that requires grad (nor into the caller's tensor).
                inputs = tuple(
                    x.detach().requires_grad_().clone()
                    if isinstance(x, Tensor) and x.is_floating_point()
                    else x
                    for x in inputs
                )
                self._backward(self._forward(inputs, kwargs))
            else:
                stack.enter_context(torch.no_grad())
                self._recorder.stop_after(self._expected_events(probe))
                with contextlib.suppress(StopForward):
                    self._forward(inputs, kwargs)
            return self.activations

    def _forward(self, inputs: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        with self._recorder.owned():  # another active tap (a user's with block) ignores this forward
            return self._module(*inputs, **kwargs)

    def _finish_run(self) -> None:
        # An early stop skips the model's forward hooks: reset the bookkeeping here.
        self._recorder.unwound()
        self._in_run = False
        self._probe = None
        self._live.clear()

    def _waits_for(self) -> dict[str, int]:
        """The calls an early-stopped run waits for: ``#i`` needs i + 1 calls, a bare name one."""
        return {name: 1 if wanted is None else max(wanted) + 1 for name, wanted in self._wanted.items()}

    def _expected_events(self, probe: Probe) -> int | None:
        """Wanted calls in one forward, so that the run can stop after the last (None: never stop)."""
        total = 0
        for name, wanted in self._wanted.items():
            calls = len(wanted) if wanted is not None else probe.count(name)
            if not calls:
                return None
            total += calls
        return total

    def _backward(self, output: Any) -> None:
        found = tensors(output)
        if not found:
            raise InvalidArgumentError(
                f"grads=True needs a model output to differentiate; {type(self._module).__name__} returned "
                f"{type(output).__name__} with no tensor in it."
            )
        outputs = [t for t in found if t.is_floating_point() and t.requires_grad]
        live = [(key, t) for key, t in self._live.items() if t.requires_grad]
        if not live:
            return
        if not outputs:
            raise InvalidArgumentError(
                f"grads=True: no output of {type(self._module).__name__} depends on its input through "
                "autograd (the outputs are detached or not floating point), so no gradient reaches the "
                "tapped layers."
            )
        score = torch.stack([t.sum() for t in outputs]).sum()
        grads = torch.autograd.grad(score, [t for _, t in live], allow_unused=True)
        for ((name, call), tensor), grad in zip(live, grads, strict=True):
            value = torch.zeros_like(tensor) if grad is None else grad
            self._grads[name][call] = value.detach().to(self.device or value.device)
        self._live.clear()

    # -- reading -------------------------------------------------------------

    @property
    def module(self) -> nn.Module:
        """The model the hooks go on: ``model`` itself, or the module a wrapper holds.

        Wrappers (``nn.DataParallel``, ``DistributedDataParallel``,
        ``torch.compile``) are looked through, as layer names are.

        Example:
            >>> import torch.nn as nn
            >>> import convlens as cl
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
            >>> cl.LayerTap(nn.DataParallel(net), ["0"]).module is net
            True
        """
        return self._module

    def probe(self, *inputs: Any, forward_args: ForwardArgsLike = None, **kwargs: Any) -> Probe:
        """What the meta-device pass learns of a forward on these inputs, as :meth:`run` runs it.

        ``forward_args`` and ``**kwargs`` are the model's other forward
        arguments, as :meth:`run` takes them.

        Nothing real runs: the pass is on the meta device, in eval mode, and
        cached per model and input signature (a second LayerTap on the same
        model reuses it; see :class:`~convlens.core.probe.Prober`).

        Example:
            >>> import torch
            >>> import torch.nn as nn
            >>> import convlens as cl
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
            >>> seen = cl.LayerTap(net, ["0"]).probe(torch.zeros(1, 1, 5, 5))
            >>> seen.count("0"), seen.seen["0"][0].shape, seen.rewritten("0", 0)
            (1, (1, 2, 3, 3), True)
        """
        extra = as_forward_args(forward_args)
        return self._prober((*inputs, *extra.args), {**kwargs, **extra.kwargs})

    @property
    def activations(self) -> dict[str, Tensor]:
        """``{name: activation}``; a reused module's calls as ``name#i``.

        Keyed by the names given (a wrapper's ``"module.layer4"`` or
        ``"layer4"``, as written). For a layer that returns several tensors,
        its first tensor; :attr:`outputs` has them all.
        """
        return self._flatten(self._acts)

    @property
    def outputs(self) -> dict[str, Any]:
        """``{name: output}``: what each tapped call returned, structure kept (tuple, list, dict, NamedTuple).

        Every tensor in it is detached (copied where a later in-place op
        rewrites it, as for :attr:`activations`); a layer that returns one
        tensor has that tensor, the same object as in :attr:`activations`.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> class TwoScales(nn.Module):
            ...     def forward(self, x):
            ...         return x, nn.functional.avg_pool2d(x, 2)
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), TwoScales())
            >>> tap = LayerTap(net, "1")
            >>> _ = tap.run(torch.randn(1, 1, 10, 10))
            >>> high, low = tap.outputs["1"]
            >>> tuple(high.shape), tuple(low.shape), tap["1"] is high
            ((1, 2, 8, 8), (1, 2, 4, 4), True)
        """
        merged = {
            name: {call: self._outs[name].get(call, tensor) for call, tensor in per_call.items()}
            for name, per_call in self._acts.items()
        }
        return self._flatten(merged)

    @property
    def gradients(self) -> dict[str, Tensor]:
        """``{name: gradient}`` recorded during backward (``grads=True`` only)."""
        return self._flatten(self._grads)

    @property
    def copied(self) -> frozenset[str]:
        """Keys of the last forward's activations that were copied.

        A copy is made where a later op rewrites the output in place (or where
        the meta pass could not tell); every other activation is a reference.
        """
        return frozenset(key for name, call in self._copied for key in self._keys(name, call))

    def _keys(self, name: str, call: int) -> list[str]:
        """The keys of one call: one per name the user gave for the module."""
        single = self._recorder.counts.get(name) == 1 and self._wanted[name] is None
        return [label if single else f"{label}#{call}" for label in self._labels[name]]

    def _flatten(self, records: Mapping[str, Mapping[int, T]]) -> dict[str, T]:
        return {
            key: value
            for name, per_call in records.items()
            for call, value in sorted(per_call.items())
            for key in self._keys(name, call)
        }

    def __getitem__(self, layer: LayerSpec) -> Tensor:
        """The activation of a tapped layer, by name, ``name#i`` or module."""
        return self._lookup(layer, self._acts, "activation")

    def gradient(self, layer: LayerSpec) -> Tensor:
        """The gradient at a tapped layer, by name, ``name#i`` or module."""
        if not self.grads:
            raise ConvlensError("This LayerTap records no gradients; create it with grads=True.")
        return self._lookup(layer, self._grads, "gradient")

    def _lookup(self, layer: LayerSpec, records: dict[str, dict[int, Tensor]], what: str) -> Tensor:
        ref = resolve_layer(self.model, layer)
        if ref.name not in self._modules:
            tapped = ", ".join(repr(r.key) for r in self.refs)
            raise LayerNotFoundError(f"Layer {ref.key!r} was not tapped; this LayerTap taps {tapped}.")
        calls = self._recorder.counts.get(ref.name, 0)
        if calls == 0:
            raise LayerNotFoundError(
                f"Layer {ref.shown!r} has no {what}: it did not run (run the model inside the "
                "'with' block, or call tap.run(x))."
            )
        call = call_index(ref, calls, tense="ran")
        if call not in records[ref.name]:
            wanted = self._wanted[ref.name]
            if wanted is not None and call not in wanted:
                raise LayerNotFoundError(
                    f"Layer {ref.key!r} was not tapped at that call; this tap keeps calls {sorted(wanted)}."
                )
            raise LayerNotFoundError(
                f"Layer {ref.key!r} has no {what}: no gradient reached it. Call backward() on a score that "
                "depends on it after the forward (inside the 'with' block), or use tap.run with grads=True."
            )
        return records[ref.name][call]

    def __contains__(self, layer: object) -> bool:
        return isinstance(layer, str) and layer in self.activations

    def __repr__(self) -> str:
        keys = ", ".join(repr(r.key) for r in self.refs)
        return f"LayerTap({type(self.model).__name__}, [{keys}], grads={self.grads})"
