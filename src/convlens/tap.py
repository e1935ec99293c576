"""LayerTap: record what layers return, the one place convlens hooks a model.

Every hook convlens puts on a user's model is registered here and removed
through one :class:`contextlib.ExitStack`, so it is gone after success and
after any exception, raised by the forward or by a hook.

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

from convlens._checks import layer_mismatch
from convlens.errors import ConvlensError, LayerNotFoundError, ShapeError
from convlens.layers import LayerRef, LayerSpec, call_index, resolve_layer, resolve_layers

__all__ = ["LayerTap"]

ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]
PreHook = Callable[[nn.Module, tuple[Any, ...]], Any]


class StopForward(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a hook to end a forward early.

    An ``Exception`` (not a ``BaseException``) so that PyTorch runs the
    ``always_call`` forward hooks of every module it unwinds through, which
    keeps other active taps' bookkeeping right.
    """


@contextlib.contextmanager
def hooks(
    forward: Iterable[tuple[nn.Module, ForwardHook]] = (),
    pre: Iterable[tuple[nn.Module, PreHook]] = (),
    always: Iterable[tuple[nn.Module, ForwardHook]] = (),
) -> Iterator[None]:
    """Register forward and forward-pre hooks; remove every one on exit.

    ``always`` hooks run after the forward even when it raises. A
    registration that fails, or an exception from the body, still removes the
    hooks registered so far.
    """
    with contextlib.ExitStack() as stack:
        for module, pre_hook in pre:
            stack.callback(module.register_forward_pre_hook(pre_hook).remove)
        for module, hook in forward:
            stack.callback(module.register_forward_hook(hook).remove)
        for module, hook in always:
            stack.callback(module.register_forward_hook(hook, always_call=True).remove)
        yield


@contextlib.contextmanager
def preserved_modes(model: nn.Module, *, training: bool | None = None) -> Iterator[None]:
    """Set every module's training flag (if ``training`` is given), restore all on exit."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        if training is not None:
            model.train(training)
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def grad_mode_restored() -> Iterator[None]:
    """Restore the caller's autograd mode on exit, whatever the body set."""
    previous = torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_grad_enabled(previous)


def to_meta(value: Any) -> Any:
    """A meta-device twin of a tensor (or of the tensors in a tuple, list or dict)."""
    if isinstance(value, Tensor):
        return torch.empty_like(value, device="meta")
    if isinstance(value, tuple | list):
        return type(value)(to_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: to_meta(v) for k, v in value.items()}
    return value


def meta_forward(model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None) -> Any:
    """Run ``model`` on the meta device: shapes only, no arithmetic, no weight copied.

    Parameters and buffers are swapped for meta tensors through
    :func:`torch.func.functional_call` for the duration of the call only.
    """
    state = {
        name: torch.empty_like(t, device="meta")
        for name, t in [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False),
        ]
    }
    with torch.no_grad():
        return torch.func.functional_call(
            model, state, to_meta(args), to_meta(dict(kwargs or {})), tie_weights=True, strict=False
        )


def first_tensor(value: Any) -> Tensor | None:
    """The first tensor in a layer's output (itself, or inside a tuple, list or dict)."""
    if isinstance(value, Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple | list) else ()
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def count_calls(
    model: nn.Module,
    modules: Iterable[nn.Module],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None = None,
) -> dict[int, int] | None:
    """How often each of ``modules`` runs in one forward, by a pass on the meta device.

    When the meta forward fails part-way (data-dependent code, or a later
    layer that raises), the calls seen up to the failure are taken as the
    count, provided every module was seen at least once.

    Returns:
        ``{id(module): calls}``, or None when some module was never seen.

    Raises:
        ShapeError: A layer rejects the shape of what it receives.
    """
    unique = list(dict.fromkeys(modules))
    counts = {id(m): 0 for m in unique}

    def count(module: nn.Module, _args: tuple[Any, ...], _out: Any) -> None:
        counts[id(module)] += 1

    try:
        with hooks(forward=[(m, count) for m in unique]), preserved_modes(model, training=False):
            meta_forward(model, args, kwargs)
    except Exception as err:  # noqa: BLE001 - code that needs data: keep the calls seen so far
        raise_shape_error(model, args, kwargs, err)
    return counts if all(counts.values()) else None


def shape_mismatch(
    model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None
) -> str | None:
    """Why ``model`` rejects inputs shaped like ``args``, if a layer plainly does (a meta pass).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(4, 2, 3))
        >>> shape_mismatch(net, (torch.zeros(1, 3, 9, 9),))
        '1 expects 4 input channels, got 8 (Conv2d, input shape [1, 8, 7, 7])'
    """
    names = {id(m): n for n, m in model.named_modules() if n and next(m.children(), None) is None}
    leaves = [m for m in model.modules() if id(m) in names]
    running: list[tuple[nn.Module, tuple[int, ...]]] = []

    def enter(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        t = first_tensor(inputs)
        running.append((module, () if t is None else tuple(t.shape)))

    def leave(_module: nn.Module, _inputs: tuple[Any, ...], _output: Any) -> None:
        running.pop()

    try:
        with (
            hooks(pre=[(m, enter) for m in leaves], forward=[(m, leave) for m in leaves]),
            preserved_modes(model, training=False),
        ):
            meta_forward(model, args, kwargs)
    except Exception:  # noqa: BLE001 - the failure is what we are here to explain
        if running:  # the innermost leaf still running is the one that failed
            module, shape = running[-1]
            return layer_mismatch(names[id(module)], module, shape)
    return None


def raise_shape_error(
    model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, err: Exception
) -> None:
    """Raise a :class:`ShapeError` naming the layer if ``err`` came from a plain shape mismatch."""
    if isinstance(err, StopForward | ShapeError):
        return
    message = shape_mismatch(model, args, kwargs)
    if message is not None:
        raise ShapeError(message) from err


class LayerTap:
    """Record the outputs (and optionally gradients) of chosen layers.

    Use it as a context manager around your own forward, or call :meth:`run`
    to run the model in inference mode and stop right after the last tapped
    layer. Each recorded value is the one the layer returned, copied at once,
    so a later in-place op (``ReLU(inplace=True)``, ``out += identity``)
    cannot change it. Activations are keyed by qualified name; the calls of a
    module that ran more than once are keyed ``name#0``, ``name#1``, ... Only
    calls made during a forward of ``model`` are recorded (calling a submodule
    directly records nothing), and each forward of ``model`` replaces the
    previous record.

    Args:
        model: Any ``nn.Module``.
        layers: One layer or several, as names (``"features.0"``, ``"relu#1"``)
            or module objects. Validated here, before anything runs.
        grads: Also record the gradient reaching each tapped activation when
            the caller back-propagates (``tap.gradients``). Tapped outputs are
            then passed on as clones so in-place ops downstream leave them intact.
        device: Where to store the records (e.g. ``"cpu"`` to spare GPU
            memory). Defaults to the device of each activation.

    Raises:
        LayerNotFoundError: A layer name the model does not have.
        InvalidArgumentError: ``layers`` is empty.

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
        self.refs: list[LayerRef] = resolve_layers(model, layers)
        self.grads = grads
        self.device = None if device is None else torch.device(device)
        # Which calls to keep per module name: None keeps every call.
        self._wanted: dict[str, set[int] | None] = {}
        self._modules: dict[str, nn.Module] = {}
        for ref in self.refs:
            self._modules[ref.name] = ref.module
            kept = self._wanted.get(ref.name, set())
            self._wanted[ref.name] = None if ref.call is None or kept is None else kept | {ref.call}
        self._stack: contextlib.ExitStack | None = None
        self._calls: dict[str, int] = {}
        self._acts: dict[str, dict[int, Tensor]] = {}
        self._grads: dict[str, dict[int, Tensor]] = {}
        self._live: dict[tuple[str, int], Tensor] = {}
        self._remaining: int | None = None
        self._depth = 0  # how deep inside a forward of ``model`` we are
        # Calls of the layers tapped by bare name, per input signature (a meta pass each).
        self._every_calls: dict[tuple[object, ...], int | None] = {}
        self._clear()

    # -- hooks -------------------------------------------------------------

    def __enter__(self) -> LayerTap:
        if self._stack is not None:
            raise ConvlensError("This LayerTap is already active; create a second LayerTap to nest taps.")
        stack = contextlib.ExitStack()
        # hooks() removes what it registered if a registration fails.
        stack.enter_context(
            hooks(
                forward=[(m, self._make_hook(name)) for name, m in self._modules.items()],
                pre=[(self.model, self._on_model_call)],
                always=[(self.model, self._on_model_return)],
            )
        )
        self._clear()
        self._depth = 0
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
        self._calls = dict.fromkeys(self._modules, 0)
        self._acts = {name: {} for name in self._modules}
        self._grads = {name: {} for name in self._modules}
        self._live.clear()

    def _on_model_call(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        if _is_meta(args):
            return  # a shape pass of convlens's own, not a forward of the user's
        if self._depth == 0:
            self._clear()
        self._depth += 1

    def _on_model_return(self, _module: nn.Module, args: tuple[Any, ...], _output: Any) -> None:
        if not _is_meta(args):
            self._depth = max(self._depth - 1, 0)

    def _make_hook(self, name: str) -> ForwardHook:
        def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
            tensor = first_tensor(output)
            if self._depth == 0 or tensor is None or tensor.is_meta:
                return None  # a direct call of the layer, or a shape pass: not a forward of the model
            call = self._calls[name]
            self._calls[name] = call + 1
            wanted = self._wanted[name]
            if wanted is not None and call not in wanted:
                return None
            self._acts[name][call] = tensor.detach().to(self.device or tensor.device, copy=True)
            replaced = None
            if self.grads and torch.is_grad_enabled():
                # Differentiate at the layer's own tensor (a fresh leaf when nothing upstream
                # needs grad, as with a frozen backbone) and pass a clone downstream, so in-place
                # ops there cannot rewrite it.
                live = tensor if tensor.requires_grad else tensor.detach().requires_grad_()
                self._live[(name, call)] = live
                if self._remaining is None:
                    live.register_hook(self._make_grad_hook(name, call))  # type: ignore[no-untyped-call]
                replaced = with_first_tensor(output, live.clone())
            if self._remaining is not None and self._remaining > 0:
                self._remaining -= 1
                if self._remaining == 0:
                    raise StopForward
            return replaced

        return hook

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
        written). Training flags are restored afterwards.

        Args:
            *inputs: Positional inputs of the model.
            **kwargs: Keyword inputs of the model.

        Returns:
            The activations, as :attr:`activations`.
        """
        with contextlib.ExitStack() as stack:
            if self._stack is None:
                stack.enter_context(self)
            stack.enter_context(preserved_modes(self.model, training=False))
            stack.callback(self._finish_run)
            self._clear()
            if self.grads:
                stack.enter_context(torch.enable_grad())
                self._remaining = -1  # marks "inside run": gradients by autograd.grad
                inputs = tuple(
                    x.detach().requires_grad_() if isinstance(x, Tensor) and x.is_floating_point() else x
                    for x in inputs
                )
                self._backward(self._forward(inputs, kwargs))
            else:
                stack.enter_context(torch.no_grad())
                self._remaining = self._expected_events(inputs, kwargs)
                with contextlib.suppress(StopForward):
                    self._forward(inputs, kwargs)
            return self.activations

    def _forward(self, inputs: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """The model's forward; a plain shape mismatch comes back as a ShapeError naming the layer."""
        try:
            return self.model(*inputs, **kwargs)
        except Exception as err:
            raise_shape_error(self.model, inputs, kwargs, err)
            raise

    def _finish_run(self) -> None:
        # An early stop skips the model's forward hooks: reset the bookkeeping here.
        self._remaining = None
        self._depth = 0
        self._live.clear()

    def _expected_events(self, inputs: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
        explicit = sum(len(w) for w in self._wanted.values() if w is not None)
        every = [self._modules[name] for name, w in self._wanted.items() if w is None]
        if not every:
            return explicit
        signature = tuple(
            (tuple(x.shape), x.dtype, x.device) if isinstance(x, Tensor) else repr(x)
            for x in [*inputs, *kwargs.items()]
        )
        if signature not in self._every_calls:
            counts = count_calls(self.model, every, inputs, kwargs)
            self._every_calls[signature] = None if counts is None else sum(counts.values())
        calls = self._every_calls[signature]
        return None if calls is None else explicit + calls

    def _backward(self, output: Any) -> None:
        outputs = [t for t in _tensors(output) if t.is_floating_point() and t.requires_grad]
        live = [(key, t) for key, t in self._live.items() if t.requires_grad]
        if not outputs or not live:
            return
        score = torch.stack([t.sum() for t in outputs]).sum()
        grads = torch.autograd.grad(score, [t for _, t in live], allow_unused=True)
        for ((name, call), tensor), grad in zip(live, grads, strict=True):
            value = torch.zeros_like(tensor) if grad is None else grad
            self._grads[name][call] = value.detach().to(self.device or value.device)
        self._live.clear()

    # -- reading -------------------------------------------------------------

    @property
    def activations(self) -> dict[str, Tensor]:
        """``{name: activation}``; a reused module's calls as ``name#i``."""
        return self._flatten(self._acts)

    @property
    def gradients(self) -> dict[str, Tensor]:
        """``{name: gradient}`` recorded during backward (``grads=True`` only)."""
        return self._flatten(self._grads)

    def _flatten(self, records: dict[str, dict[int, Tensor]]) -> dict[str, Tensor]:
        flat: dict[str, Tensor] = {}
        for name, per_call in records.items():
            single = self._calls[name] == 1 and self._wanted[name] is None
            for call, tensor in sorted(per_call.items()):
                flat[name if single else f"{name}#{call}"] = tensor
        return flat

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
        calls = self._calls[ref.name]
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


def _is_meta(args: tuple[Any, ...]) -> bool:
    t = first_tensor(args)
    return t is not None and t.is_meta


def with_first_tensor(value: Any, new: Tensor) -> Any:
    """``value`` with its first tensor (itself, or in a tuple, list or dict) replaced by ``new``."""
    if isinstance(value, Tensor):
        return new
    if isinstance(value, tuple | list):
        items = list(value)
        for i, item in enumerate(items):
            if first_tensor(item) is not None:
                items[i] = with_first_tensor(item, new)
                break
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        out = dict(value)
        for key, item in out.items():
            if first_tensor(item) is not None:
                out[key] = with_first_tensor(item, new)
                break
        return out
    return value


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple | list) else ()
    return [t for item in items for t in _tensors(item)]
