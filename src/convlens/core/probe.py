"""The one probe: what every entry point learns about a forward before doing real work.

Private. :func:`probe` runs the model once on PyTorch's ``meta`` device
(shapes only, no arithmetic, parameters swapped for meta twins for the call
only) and learns, at once:

- every leaf call, with its input and output shapes (the shape table);
- per watched module, each call's output shape and whether a later op wrote
  into that output in place (a tensor's version counter moves on meta too);
- the shape of the model's output and how many tensors it holds;
- when the model rejects the input, one diagnosis naming the layer, its type
  and the shape it got: wrong rank, wrong channels or features, a spatial
  size too small for a window, or an input without its batch dimension.

**The failure policy**, one for every entry point:

1. The pass runs to the end: everything above is known (``complete``).
2. The pass fails and the innermost running leaf plainly rejects its input:
   :meth:`Probe.check` raises that :class:`~convlens.ShapeError`, before any
   real work, from every entry point alike.
3. The pass fails otherwise (code that needs data, such as ``.item()`` or
   ``nonzero``, an op without a meta kernel, a user's hook that reads
   values): the probe is incomplete. The calls seen before the failure are
   kept (a module called again after that point is not counted), nothing is
   known about in-place rewrites (so every tapped output is copied) nor about
   the model's output; entry points make their checks on the real forward.

The probe leaves every module exactly as found: hooks, parameters, buffers,
training flags, and the plain attributes a module sets during its forward
(torchvision's ``AnchorGenerator`` caches anchors that way), which are
snapshotted and restored, one level into lists and dicts. A :class:`Prober`
caches probes per model, input signature and structure, shared by every entry
point object on the same model.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 3))
    >>> p = probe(net, (torch.zeros(1, 3, 9, 9),), watched={"0": net[0], "2": net[2]})
    >>> p.complete, p.seen["0"][0].shape, p.seen["0"][0].rewritten, p.seen["2"][0].rewritten
    (True, (1, 8, 7, 7), True, False)
    >>> probe(net, (torch.zeros(1, 1, 9, 9),)).check()
    Traceback (most recent call last):
    ...
    convlens.errors.ShapeError: 0 expects 3 input channels, got 1 (Conv2d, input shape [1, 1, 9, 9]). The 0 layer calls traced before the failure are in err.report.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from convlens.core.arithmetic import mismatch
from convlens.core.checks import format_shape
from convlens.core.fastpath import SkipShapePreserving
from convlens.core.memo import SETTINGS, recall, remember, structure
from convlens.core.recorder import PROBING, Recorder, preserved_modes
from convlens.core.report import TracedCall, shape_error
from convlens.core.values import first_tensor, meta_like, signature, tensors, to_meta
from convlens.errors import InvalidTypeError, UnsupportedModelError

__all__ = [
    "Probe",
    "Prober",
    "Seen",
    "check_inputs",
    "is_script",
    "leaf_names",
    "meta_forward",
    "probe",
    "require_hooks",
]

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Seen:
    """One call of a watched module, as the probe saw it.

    Attributes:
        shape: The shape of the first tensor it returned, None when it returned none.
        rewritten: Whether a later op wrote into that tensor in place (True when unknown).
        parts: Per tensor it returned (in :func:`~convlens.core.values.tensors`
            order, the first included), whether a later op wrote into it in
            place; empty when unknown.
    """

    shape: Shape | None
    rewritten: bool
    parts: tuple[bool, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """What one meta pass learned (see the module docstring for the failure policy).

    Attributes:
        complete: The pass ran to the end.
        calls: Every leaf call, in call order (those before the failure when incomplete).
        names: ``{id(leaf): qualified name}``.
        seen: Per watched name, its calls in order.
        output_shape: Shape of the first tensor the model returned (None: unknown or none).
        output_tensors: How many tensors the model's output holds (None: unknown).
        failure: Why the pass is incomplete, else ``""``.
        input_shape: Shape of the first input tensor.
        in_leaf: An incomplete pass failed inside a leaf layer (one that fails
            there fails for real too, as a rule), not in the model's own code
            between layers (where data-dependent code lives): only then are the
            calls seen before the failure trusted as the count.
    """

    complete: bool
    calls: tuple[TracedCall, ...] = ()
    names: Mapping[int, str] = field(default_factory=dict)
    seen: Mapping[str, tuple[Seen, ...]] = field(default_factory=dict)
    output_shape: Shape | None = None
    output_tensors: int | None = None
    failure: str = ""
    input_shape: Shape = ()
    in_leaf: bool = False
    _unbatched: bool = False
    _message: str | None = None
    _report_model: nn.Module | None = None
    _cause: BaseException | None = None
    _prefix: str = ""

    def check(self, *, stops_after: Mapping[str, int] | None = None) -> None:
        """Raise the :class:`~convlens.ShapeError` of a model that rejects the input, if it does.

        Args:
            stops_after: For a forward that stops early: ``{name: calls}``
                that it waits for. When the pass saw all of them before the
                model rejected the input, the rejection comes after the stop
                and does not count.
        """
        if self._message is None or self._report_model is None:
            return
        seen_all = stops_after and all(len(self.seen.get(n, ())) >= c for n, c in stops_after.items())
        if seen_all and not self._unbatched:  # a missing batch dimension is about the input itself
            return
        raise shape_error(
            self._report_model,
            self.names,
            self.calls,
            self._message,
            input_shape=self.input_shape,
            real=False,
            prefix=self._prefix,
        ) from self._cause

    @property
    def rejected(self) -> bool:
        """Whether the model plainly rejects the input (:meth:`check` raises)."""
        return self._message is not None

    def count(self, name: str) -> int | None:
        """Calls of a watched module; None when unknown.

        Exact when complete; when the pass failed inside a leaf, the calls seen
        before the failure; unknown when it failed in the model's own code.
        """
        calls = self.seen.get(name)
        if calls is None or not (self.complete or self.in_leaf):
            return None
        return len(calls)

    def rewritten(self, name: str, call: int) -> bool:
        """Whether the output of that call is written into later (True when unknown)."""
        calls = self.seen.get(name, ())
        return not self.complete or call >= len(calls) or calls[call].rewritten

    def rewritten_part(self, name: str, call: int, part: int) -> bool:
        """Whether tensor ``part`` of that call's output is written into later (True when unknown)."""
        calls = self.seen.get(name, ())
        if not self.complete or call >= len(calls):
            return True
        parts = calls[call].parts
        return part >= len(parts) or parts[part]


def leaf_names(model: nn.Module, *, prefix: str = "") -> dict[int, str]:
    """``{id(module): name}`` of the layers: modules without children, and conv or Linear layers with some.

    A conv subclass that pads through a child (EfficientNet's
    ``Conv2dStaticSamePadding`` and its ``ZeroPad2d``) is a layer of its own:
    its call is recorded after its child's, so the table has its shape, MACs
    and receptive field. ``""`` names a childless root. ``prefix`` (a
    wrapper's ``"module."``) goes before every name; a childless root is then
    named by the prefix alone (``"module"``).
    """
    return {
        id(m): prefix + n if n or not prefix else prefix[:-1]
        for n, m in model.named_modules()
        if next(m.children(), None) is None or isinstance(m, _ConvNd | nn.Linear)
    }


def is_script(model: nn.Module) -> bool:
    """Whether ``model`` is TorchScript (``torch.jit.script`` or ``torch.jit.trace``)."""
    return isinstance(model, torch.jit.ScriptModule)


def require_hooks(model: nn.Module, what: str) -> None:
    """Refuse a TorchScript model where hooks or guidance must see inside it.

    Raises:
        UnsupportedModelError: ``model`` is a ScriptModule.
    """
    if is_script(model):
        raise UnsupportedModelError(
            f"{what} cannot work on {type(model).__name__}, a TorchScript module (torch.jit.script or "
            "torch.jit.trace): TorchScript runs its own compiled graph, so Python forward hooks and "
            "__torch_function__ modes never see inside it. Pass the original nn.Module, before scripting."
        )


def check_inputs(args: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> None:
    """Refuse model inputs that are not tensors but plainly should be (numpy arrays, PIL images).

    Raises:
        InvalidTypeError: A numpy array or a PIL image among the inputs.
    """
    for value in _leaves([*args, *(kwargs or {}).values()]):
        if isinstance(value, np.ndarray):
            raise InvalidTypeError(
                f"the model's input must be a torch tensor; got a numpy array of shape {value.shape} "
                f"({value.dtype}). Convert it with torch.from_numpy(x) (or torch.as_tensor(x, device=...))."
            )
        if type(value).__module__.startswith("PIL."):
            raise InvalidTypeError(
                f"the model's input must be a torch tensor; got a PIL image ({type(value).__name__}). "
                "Turn it into a normalized batch with convlens.models.images.preprocess(image)."
            )


def _leaves(values: Sequence[Any], depth: int = 3) -> list[Any]:
    """The values, and those inside their lists, tuples and dicts (a detector's list of images)."""
    found: list[Any] = []
    for value in values:
        if depth and isinstance(value, list | tuple):
            found += _leaves(value, depth - 1)
        elif depth and isinstance(value, dict):
            found += _leaves(list(value.values()), depth - 1)
        else:
            found.append(value)
    return found


def _check_signature(model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a builtin or C forward: nothing to check
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as err:
        raise InvalidTypeError(
            f"{type(model).__name__}.forward{sig} cannot take the inputs given ({err}); pass every input "
            "forward requires, positional and keyword."
        ) from None


@contextlib.contextmanager
def _on_meta(model: nn.Module) -> Iterator[None]:
    """Swap every parameter and buffer for a meta twin (tied ones stay tied); restore on exit.

    Direct writes into each module's ``_parameters`` and ``_buffers``: what
    :func:`torch.func.functional_call` does, at a fifth of its cost.
    """
    twins: dict[int, Tensor] = {}
    saved: list[tuple[dict[str, Any], dict[str, Any]]] = []
    try:
        for module in model.modules():
            # Plain tensor attributes too: an in-place op on one must not touch the real tensor.
            plain = {k: v for k, v in vars(module).items() if isinstance(v, Tensor)}
            if plain:
                saved.append((vars(module), dict(vars(module))))
                for key, tensor in plain.items():
                    if id(tensor) not in twins:
                        twins[id(tensor)] = meta_like(tensor)
                    vars(module)[key] = twins[id(tensor)]
            stores: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
            for store in stores:  # empty ones too: a buffer registered during the forward goes
                saved.append((store, dict(store)))
                for key, tensor in store.items():
                    if tensor is not None:
                        if id(tensor) not in twins:
                            twins[id(tensor)] = meta_like(tensor)
                        store[key] = twins[id(tensor)]
        yield
    finally:
        for store, before in saved:
            if store.keys() != before.keys() or any(store[k] is not v for k, v in before.items()):
                for key in [k for k in store if k not in before]:
                    del store[key]
                store.update(before)


def meta_forward(model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> Any:
    """Run ``model`` on the meta device: shapes only, no arithmetic, no weight copied.

    Parameters and buffers are swapped for meta tensors for the duration of
    the call only; the inputs get meta twins. Shape-preserving functions take
    the fast path of :class:`~convlens.core.fastpath.SkipShapePreserving`.
    """
    with _on_meta(model), torch.no_grad():
        meta_args, meta_kwargs = to_meta(tuple(args)), to_meta(dict(kwargs or {}))
        with SkipShapePreserving():
            return model(*meta_args, **meta_kwargs)


# -- leaving modules as found ---------------------------------------------------------

#: nn.Module's own bookkeeping: restored by identity only, never by content
#: (hook dictionaries change under the probe's own hooks, which remove themselves).
_INTERNAL = frozenset(
    name for name in vars(nn.Module()) if name.startswith("_") and ("hook" in name or name.endswith("_set"))
) | {"_parameters", "_buffers", "_modules"}
_MISSING = object()
#: Containers restored in place, to this depth below a module attribute (a list inside a dict...).
_CONTAINERS = (list, dict, collections.deque, set)
_DEPTH = 3


@dataclass(slots=True)
class _Saved:
    attrs: list[tuple[dict[str, Any], dict[str, Any]]]
    containers: list[tuple[Any, Any]]


def _snapshot(model: nn.Module) -> _Saved:
    saved = _Saved([], [])
    visited: set[int] = set()

    def visit(value: Any, depth: int) -> None:
        if depth == 0 or not isinstance(value, _CONTAINERS) or id(value) in visited:
            return
        visited.add(id(value))
        if isinstance(value, dict):
            saved.containers.append((value, dict(value)))
            children: list[Any] = list(value.values())
        elif isinstance(value, set):
            saved.containers.append((value, set(value)))
            children = []
        else:
            saved.containers.append((value, list(value)))
            children = list(value)
        for child in children:
            visit(child, depth - 1)

    for module in model.modules():
        attrs = vars(module)
        saved.attrs.append((attrs, dict(attrs)))
        for key, value in attrs.items():
            if key not in _INTERNAL:
                visit(value, _DEPTH)
    return saved


def _restore(saved: _Saved) -> None:
    for attrs, before in saved.attrs:
        for key in [k for k in attrs if k not in before]:
            del attrs[key]
        for key, value in before.items():
            if attrs.get(key, _MISSING) is not value:
                attrs[key] = value
    for container, content in saved.containers:
        if isinstance(container, dict):
            if container.keys() != content.keys() or any(container[k] is not v for k, v in content.items()):
                container.clear()
                container.update(content)
        elif isinstance(container, set):
            if {id(v) for v in container} != {id(v) for v in content}:
                container.clear()
                container.update(content)
        elif len(container) != len(content) or any(
            a is not b for a, b in zip(container, content, strict=True)
        ):
            container.clear()
            container.extend(content)


# -- the pass ------------------------------------------------------------------------


def probe(
    model: nn.Module,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
    *,
    watched: Mapping[str, nn.Module] | None = None,
    training: bool | None = False,
    trace: bool = False,
    prefix: str = "",
) -> Probe:
    """One meta pass over ``model(*args, **kwargs)``; see the module docstring.

    Args:
        model: The (unwrapped) model.
        args: Its positional inputs (real or meta tensors, or anything else).
        kwargs: Its keyword inputs.
        watched: ``{name: module}`` whose calls to report in :attr:`Probe.seen`.
        training: The mode to probe in (None: as the model is); restored after.
        trace: Record every leaf call (:attr:`Probe.calls`, the shape table).
            Without it the pass hooks only the watched modules, and a pass
            that fails is run once more, traced, to say where and why.
        prefix: Put before every traced layer name (a wrapper's ``"module."``,
            see :func:`~convlens.core.layers.wrapper_prefix`).

    Raises:
        InvalidTypeError: Inputs that do not fit ``forward``'s signature, or
            numpy arrays / PIL images given as inputs.
    """
    kwargs = dict(kwargs or {})
    check_inputs(args, kwargs)
    first = first_tensor(args) if args else first_tensor(kwargs)
    input_shape: Shape = () if first is None else tuple(first.shape)
    if is_script(model):
        return Probe(complete=False, failure="TorchScript cannot be probed", input_shape=input_shape)
    _check_signature(model, args, kwargs)
    names = leaf_names(model, prefix=prefix) if trace else {}
    leaves = [m for m in model.modules() if id(m) in names]
    watched = dict(watched or {})
    records: dict[str, list[tuple[Shape | None, list[tuple[Tensor, int]]]]] = {name: [] for name in watched}

    def keep(name: str, _call: int, output: Any) -> None:
        found = [output] if isinstance(output, Tensor) else tensors(output)
        shape = tuple(found[0].shape) if found else None
        records[name].append((shape, [(t, t._version) for t in found]))

    rec = Recorder(model, watched, keep=keep, trace=leaves if trace else (), probe=True)
    saved = _snapshot(model)
    failed: Exception | None = None
    token = PROBING.set(rec.token)
    try:
        with rec.attached(), preserved_modes(model, training=training):
            output = meta_forward(model, args, kwargs)
    except Exception as err:  # noqa: BLE001 - sorted by the failure policy
        failed = err
    finally:
        PROBING.reset(token)
        _restore(saved)
    if failed is not None:
        if not trace:  # where and why: the same pass again, every leaf traced
            return probe(model, args, kwargs, watched=watched, training=training, trace=True, prefix=prefix)
        return _failed(model, rec, names, records, failed, input_shape=input_shape, prefix=prefix)
    found = tensors(output)
    return Probe(
        complete=True,
        calls=tuple(rec.calls),
        names=names,
        seen={name: tuple(_seen(shape, parts) for shape, parts in calls) for name, calls in records.items()},
        output_shape=tuple(found[0].shape) if found else None,
        output_tensors=len(found),
        input_shape=input_shape,
    )


def _seen(shape: Shape | None, parts: Sequence[tuple[Tensor, int]]) -> Seen:
    moved = tuple(t._version != version for t, version in parts)
    return Seen(shape, bool(moved) and moved[0], moved)


def _failed(
    model: nn.Module,
    rec: Recorder,
    names: Mapping[int, str],
    records: Mapping[str, list[tuple[Shape | None, list[tuple[Tensor, int]]]]],
    err: Exception,
    *,
    input_shape: Shape,
    prefix: str = "",
) -> Probe:
    culprit = rec.culprit(err)
    message = None
    if culprit is not None:
        message = mismatch(names[id(culprit.module)], culprit.module, culprit.input_shape)
    unbatched = _unbatched(model, rec.calls, names, input_shape)
    if unbatched is not None:
        message = unbatched
    first = (str(err).strip().splitlines() or [""])[0]
    where = names[id(culprit.module)] if culprit is not None else type(model).__name__
    seen = {name: tuple(Seen(shape, True) for shape, _ in calls) for name, calls in records.items()}
    return Probe(
        complete=False,
        calls=tuple(c for c in rec.calls),
        names=names,
        seen=seen,
        failure=f"the meta trace failed in {where!r} ({type(err).__name__}: {first})",
        input_shape=input_shape,
        in_leaf=culprit is not None,
        _unbatched=unbatched is not None,
        _message=message,
        _report_model=model if message is not None else None,
        _cause=err.with_traceback(None) if message is not None else None,
        _prefix=prefix,
    )


def _unbatched(
    model: nn.Module, calls: Sequence[TracedCall], names: Mapping[int, str], input_shape: Shape
) -> str | None:
    """The message for an input without its batch dimension, if the first convolution got one.

    When no convolution ran (a forward that unpacks its input first, as torchvision's ViT
    does), the model's first convolution judges the model's own input.
    """
    conv = next((c for c in calls if isinstance(c.module, _ConvNd)), None)
    if conv is not None and isinstance(conv.module, _ConvNd):
        module, shape = conv.module, conv.input_shape
    else:
        first = next((m for m in model.modules() if isinstance(m, _ConvNd)), None)
        if calls or first is None or id(first) not in names:  # only when no layer ran at all
            return None
        module, shape = first, input_shape
    nd = len(module.kernel_size)
    if len(shape) != nd + 1 or shape[0] != module.in_channels:
        return None
    spatial = {1: "L", 2: "H, W"}.get(nd, "D, H, W")
    wanted = f"[N, {module.in_channels}, {spatial}]"
    return (
        f"{names[id(module)]} ({type(module).__name__}) got an input without a batch dimension, shape "
        f"{format_shape(shape)}; {type(model).__name__} takes a batch {wanted}: add one with "
        "x.unsqueeze(0)"
    )


class Prober:
    """Probes of a model, cached per watched layers, input signature, mode and model structure.

    The cache is shared: a fresh Prober on the same model (a fresh LayerTap,
    GradCAM, ActivationMaximizer, ...) finds what an earlier one probed, so a
    new object per forward pays no meta pass. It lives in one weak-keyed map
    of the package (:func:`remember`), per model object, a few entries per
    model (the least recently used goes first). That is safe: nothing is
    written onto the model and nothing keeps it alive (weak keys; a shared probe holds shapes only,
    neither modules nor tensors, and its key only shapes, dtypes, ids and
    plain values); an edit of the model between calls (a layer replaced, a
    setting changed, a hook added, a parameter of another shape) changes
    :func:`structure` and is probed again, as is another mode. What is not
    shared, kept by this Prober only: a probe of a model that rejects the
    input (it holds the model, to report it), and one of inputs with values
    that are not plain (an object passed to ``forward``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
        >>> prober = Prober(net, {"0": net[0]})
        >>> prober((torch.zeros(1, 1, 5, 5),)) is prober((torch.ones(1, 1, 5, 5),))
        True
        >>> first = prober((torch.zeros(1, 1, 5, 5),))
        >>> Prober(net, {"0": net[0]})((torch.zeros(1, 1, 5, 5),)) is first  # a fresh Prober shares it
        True
        >>> net[0].stride = (2, 2)  # an edited model is probed again
        >>> prober((torch.zeros(1, 1, 5, 5),)) is first
        False
    """

    def __init__(self, model: nn.Module, watched: Mapping[str, nn.Module] | None = None) -> None:
        self.model = model
        self.watched = dict(watched or {})
        self._watching = tuple((name, id(m)) for name, m in self.watched.items())
        self._cache: dict[object, Probe] = {}
        self._steady: object = None

    @contextlib.contextmanager
    def steady(self) -> Iterator[None]:
        """A block in which the model is not edited (one pass over a dataset): its structure is read once.

        Every lookup otherwise reads :func:`~convlens.core.memo.structure`
        anew, to notice an edit between calls; within one pass of a primitive
        over the data nothing edits the model, and the lookups skip that walk.
        """
        self._steady = structure(self.model)
        try:
            yield
        finally:
            self._steady = None

    def __call__(
        self, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None, *, training: bool | None = False
    ) -> Probe:
        """The probe of the model for these inputs, from the cache when the signature was seen."""
        modes: object = training
        if training is None:  # as the model is: every module's flag counts (one when all agree)
            flags = tuple(m.training for m in self.model.modules())
            modes = flags[0] if len(set(flags)) == 1 else flags
        inputs = (signature(tuple(args)), signature(dict(kwargs or {})))
        shape = structure(self.model) if self._steady is None else self._steady
        key = (self._watching, inputs, modes, shape)
        try:
            hash(key)
        except TypeError:  # a setting that holds a list: no cache, a probe each time
            return probe(self.model, args, kwargs, watched=self.watched, training=training)
        found = self._cache.get(key)
        shareable = _plain(inputs)
        if found is None and shareable:
            shared = recall(self.model, ("probe", key))
            found = shared if isinstance(shared, Probe) else None
        if found is None:
            found = probe(self.model, args, kwargs, watched=self.watched, training=training)
            if shareable and not found.rejected:  # shapes only: no module (a complete pass traced none)
                light = replace(found, calls=(), names={}) if found.calls or found.names else found
                remember(self.model, ("probe", key), light)
        self._cache[key] = found
        return found


def _plain(sig: object) -> bool:
    """Whether an input signature holds nothing but shapes, dtypes and plain values (nothing of the user's)."""
    if isinstance(sig, tuple):
        if len(sig) == 2 and sig[0] == "object":
            return False
        if len(sig) == 2 and sig[0] == "value":
            return type(sig[1]) in SETTINGS and _plain(sig[1])
        return all(_plain(part) for part in sig)
    return isinstance(sig, str | int | float | bool | torch.dtype | type(None))
