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
from typing import Any

import torch
from torch import Tensor, nn

from convlens.core.checks import check_bool, require_autograd
from convlens.core.layers import LayerRef, LayerSpec, call_index, resolve_layer, resolve_layers, unwrap
from convlens.core.probe import Probe, Prober, check_inputs, require_hooks
from convlens.core.recorder import Recorder, StopForward, preserved_modes
from convlens.core.values import first_tensor, tensors, with_first_tensor
from convlens.errors import ConvlensError, InvalidArgumentError, LayerNotFoundError, UnsupportedModelError

__all__ = ["LayerTap"]


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
    ``model`` replaces the previous record. Wrappers are looked through
    (``nn.DataParallel``, ``DistributedDataParallel``, ``torch.compile``):
    layers are named as in the wrapped model, which runs eagerly.

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
        UnsupportedModelError: A TorchScript model (hooks cannot see inside it).

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
        for ref in self.refs:
            self._modules[ref.name] = ref.module
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
        self._grads: dict[str, dict[int, Tensor]] = {}
        self._copied: set[tuple[str, int]] = set()
        self._live: dict[tuple[str, int], Tensor] = {}
        self._clear()

    # -- hooks -------------------------------------------------------------

    def __enter__(self) -> LayerTap:
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
        self._grads = {name: {} for name in self._modules}
        self._copied = set()
        self._live.clear()

    def _on_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A forward of the model begins: a fresh record, and (in a user's block) a probe."""
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
        self._acts[name][call] = tensor.detach().to(self.device or tensor.device, copy=rewritten)
        if rewritten:
            self._copied.add((name, call))
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

    def _make_grad_hook(self, name: str, call: int) -> Callable[[Tensor], None]:
        def grad_hook(grad: Tensor) -> None:
            self._grads[name][call] = grad.detach().to(self.device or grad.device, copy=True)

        return grad_hook

    # -- running -------------------------------------------------------------

    def run(self, *inputs: Any, **kwargs: Any) -> dict[str, Tensor]:
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
            *inputs: Positional inputs of the model.
            **kwargs: Keyword inputs of the model.

        Returns:
            The activations, as :attr:`activations`.

        Raises:
            ShapeError: A layer rejects the input (wrong rank, channels or
                features, a spatial size too small, no batch dimension).
            InvalidTypeError: A numpy array or PIL image as input, or inputs
                that do not fit the model's ``forward``.
            InvalidArgumentError: ``grads=True`` and the model returns no
                tensor that depends on its input.
            LayerNotFoundError: A tapped layer that does not run, or a
                ``#i`` past its last call.
        """
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
                        f"Layer {ref.name!r} does not run in the forward of {type(self._module).__name__} "
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

    def probe(self, *inputs: Any, **kwargs: Any) -> Probe:
        """What the meta-device pass learns of a forward on these inputs, as :meth:`run` runs it.

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
        return self._prober(inputs, kwargs)

    @property
    def activations(self) -> dict[str, Tensor]:
        """``{name: activation}``; a reused module's calls as ``name#i``."""
        return self._flatten(self._acts)

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
        return frozenset(self._key(name, call) for name, call in self._copied)

    def _key(self, name: str, call: int) -> str:
        single = self._recorder.counts.get(name) == 1 and self._wanted[name] is None
        return name if single else f"{name}#{call}"

    def _flatten(self, records: dict[str, dict[int, Tensor]]) -> dict[str, Tensor]:
        return {
            self._key(name, call): tensor
            for name, per_call in records.items()
            for call, tensor in sorted(per_call.items())
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
                f"Layer {ref.name!r} has no {what}: it did not run (run the model inside the "
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
