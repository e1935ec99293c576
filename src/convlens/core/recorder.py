"""The one call recorder: the hooks behind LayerTap, the CAM family, the maximizer and the probe.

Private. A :class:`Recorder` hooks the modules it watches, counts their calls
in one forward, hands each wanted call's output to its caller's ``keep``
function (which keeps a reference, a copy or a grad leaf, and may replace
what flows downstream), and stops the forward with :class:`StopForward` right
after the last wanted call. With ``trace`` it also records every call of the
traced modules (input and output shapes, and which earlier call made its
input), as :func:`convlens.trace_shapes` and the probe need.

Every hook is registered and removed by :func:`hooks`, through one
:class:`contextlib.ExitStack`, so none survives an exception.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    >>> kept = {}
    >>> rec = Recorder(net, {"1": net[1]}, keep=lambda name, call, out: kept.setdefault(name, out.shape))
    >>> with rec.attached():
    ...     rec.start(remaining=1)
    ...     try:
    ...         _ = net(torch.zeros(1, 1, 7, 7))
    ...     except StopForward:
    ...         pass  # net[2] never ran
    >>> kept, rec.counts
    ({'1': torch.Size([1, 2, 5, 5])}, {'1': 1})
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from convlens.core.report import TracedCall
from convlens.core.values import first_tensor

__all__ = [
    "PROBING",
    "Recorder",
    "StopForward",
    "grad_mode_restored",
    "hooks",
    "internal",
    "is_recorder_hook",
    "preserved_modes",
]

ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]
PreHook = Callable[[nn.Module, tuple[Any, ...]], Any]
KwargsPreHook = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Any]
#: ``keep(name, call, output)``: what to do with a wanted call's output; returns
#: a replacement for what flows downstream, or None to leave it.
Keep = Callable[[str, int, Any], Any]

#: The token of the convlens pass running in this thread or task (None during a
#: user's own forward). A probe's recorder acts only on the pass its token marks;
#: any other recorder acts on a user's forward and on its own passes. So
#: convlens's own passes (meta probes, and the real forwards of GradCAM or of
#: another tap's run) never reach a user's active LayerTap, and a model that
#: really lives on the meta device is still recorded. A ContextVar, not shared state.
PROBING: ContextVar[object | None] = ContextVar("convlens_probing", default=None)


class StopForward(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a hook to end a forward early.

    An ``Exception`` (not a ``BaseException``) so that PyTorch runs the
    ``always_call`` forward hooks of every module it unwinds through, which
    keeps other active recorders' bookkeeping right.
    """


@contextlib.contextmanager
def hooks(
    forward: Iterable[tuple[nn.Module, ForwardHook]] = (),
    pre: Iterable[tuple[nn.Module, PreHook]] = (),
    always: Iterable[tuple[nn.Module, ForwardHook]] = (),
    pre_kwargs: Iterable[tuple[nn.Module, KwargsPreHook]] = (),
) -> Iterator[None]:
    """Register forward and forward-pre hooks; remove every one on exit.

    ``always`` hooks run after the forward even when it raises; ``pre_kwargs``
    hooks also receive the keyword inputs. A registration that fails, or an
    exception from the body, still removes the hooks registered so far.
    """
    with contextlib.ExitStack() as stack:
        for module, kw_hook in pre_kwargs:
            stack.callback(module.register_forward_pre_hook(kw_hook, with_kwargs=True).remove)
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
        if training is not None and any(flag != training for _, flag in flags):
            model.train(training)
        yield
    finally:
        for module, flag in flags:
            if module.training != flag:
                module.training = flag


@contextlib.contextmanager
def grad_mode_restored() -> Iterator[None]:
    """Restore the caller's autograd mode on exit, whatever the body set."""
    previous = torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_grad_enabled(previous)


@contextlib.contextmanager
def internal() -> Iterator[None]:
    """Mark the body as a forward convlens runs for itself: a user's active tap ignores it."""
    token = PROBING.set(object())
    try:
        yield
    finally:
        PROBING.reset(token)


class Recorder:
    """Count, keep and stop: the hooks of one forward of ``model``.

    Args:
        model: The model whose forwards are recorded.
        watched: ``{name: module}`` whose calls are counted per forward.
        wanted: Per watched name, the call indices handed to ``keep`` (None or
            missing: every call).
        keep: Called with ``(name, call, output)`` for each wanted call; its
            return value, when not None, replaces the output downstream.
        trace: Leaf modules whose every call is recorded in :attr:`calls`
            (input shape, output shape, source; a call that raised keeps
            ``output_shape`` None). :meth:`culprit` says which call an error
            of the forward came from, if it came from one: a call whose error
            the model caught is not blamed for a later one.
        forwards_only: Record only inside a forward of ``model`` (a direct
            call of a submodule records nothing); each forward of ``model``
            starts a fresh record.
        on_forward: Called with the model's ``(args, kwargs)`` when a forward
            of ``model`` begins (with ``forwards_only``).
        probe: This recorder belongs to a probe: it acts only during it, while
            every other recorder ignores it (see :data:`PROBING`).
    """

    def __init__(
        self,
        model: nn.Module,
        watched: Mapping[str, nn.Module],
        *,
        wanted: Mapping[str, AbstractSet[int] | None] | None = None,
        keep: Keep | None = None,
        trace: Sequence[nn.Module] = (),
        forwards_only: bool = False,
        on_forward: Callable[[tuple[Any, ...], dict[str, Any]], None] | None = None,
        probe: bool = False,
    ) -> None:
        self.model = model
        self.watched = dict(watched)
        self.wanted = {name: (wanted or {}).get(name) for name in self.watched}
        self.keep = keep
        self.trace = list(trace)
        self.forwards_only = forwards_only
        self.on_forward = on_forward
        self.token = object()
        self.probe = probe
        self.counts: dict[str, int] = dict.fromkeys(self.watched, 0)
        self.calls: list[TracedCall] = []
        self.open: list[int] = []
        self.raised: list[tuple[int, BaseException]] = []
        self.last = -1
        self.remaining: int | None = None
        self.depth = 0
        self._made: dict[int, tuple[weakref.ref[Tensor], int]] = {}

    @property
    def events(self) -> int | None:
        """Wanted calls per forward when every wanted set is explicit, else None."""
        sizes = [len(w) for w in self.wanted.values() if w is not None]
        return sum(sizes) if len(sizes) == len(self.wanted) else None

    def stop_after(self, remaining: int | None) -> None:
        """Stop the forward after ``remaining`` more wanted calls (None: never); the record is kept."""
        self.remaining = remaining

    def unwound(self) -> None:
        """Forget where the last forward stood: no stop pending, outside any forward of the model.

        For the end of a forward that :class:`StopForward` cut short, which skips the
        model's own forward hooks (so :attr:`depth` would stay raised).
        """
        self.remaining = None
        self.depth = 0

    def start(self, remaining: int | None = None) -> None:
        """Forget the last forward; stop after ``remaining`` wanted calls (None: never)."""
        self.counts = dict.fromkeys(self.watched, 0)
        self.calls = []
        self.open = []
        self.raised = []
        self.last = -1
        self._made = {}
        self.remaining = remaining

    @contextlib.contextmanager
    def attached(self) -> Iterator[Recorder]:
        """Register the hooks for the body; every one is removed on exit."""
        model_hooks = self.forwards_only or self.on_forward is not None
        with hooks(
            pre=[(m, self._pre) for m in self.trace],
            forward=[(m, self._watch(name)) for name, m in self.watched.items()],
            pre_kwargs=[(self.model, self._model_call)] if model_hooks else [],
            always=[
                *((m, self._post) for m in self.trace),  # also when the call raises
                *([(self.model, self._model_return)] if model_hooks else []),
            ],
        ):
            self.depth = 0
            try:
                yield self
            finally:
                self._made = {}

    # -- hooks -------------------------------------------------------------------

    def _mine(self) -> bool:
        running = PROBING.get()
        return running is self.token or (running is None and not self.probe)

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Mark the body as this recorder's own pass: other recorders (a user's tap) ignore it."""
        token = PROBING.set(self.token)
        try:
            yield
        finally:
            PROBING.reset(token)

    def _active(self) -> bool:
        return self._mine() and (not self.forwards_only or self.depth > 0)

    def _model_call(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self._mine():
            return
        if self.depth == 0:
            if self.forwards_only:
                self.start(self.remaining)
            if self.on_forward is not None:
                self.on_forward(args, kwargs)
        self.depth += 1

    def _model_return(self, _module: nn.Module, _args: tuple[Any, ...], _output: Any) -> None:
        if self._mine():
            self.depth = max(self.depth - 1, 0)

    def _watch(self, name: str) -> ForwardHook:
        return _Watch(self, name)

    def watched_call(self, name: str, output: Any) -> Any:
        """One call of the watched module ``name`` returned ``output``: count, keep, maybe stop."""
        if not self._active():
            return None
        call = self.counts[name]
        self.counts[name] = call + 1
        wanted = self.wanted[name]
        if wanted is not None and call not in wanted:
            return None
        replaced = None if self.keep is None else self.keep(name, call, output)
        if self.remaining is not None and self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                raise StopForward
        return replaced

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._active():
            return
        t = first_tensor(args)
        made = self._made.get(id(t)) if t is not None else None
        source = made[1] if made is not None and made[0]() is t else self.last
        self.open.append(len(self.calls))
        self.calls.append(TracedCall(module, () if t is None else tuple(t.shape), source))

    def _post(self, _module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        if not self._active() or not self.open:
            return
        index = self.open.pop()
        error = sys.exc_info()[1]
        if output is None and error is not None:  # the call raised (always_call hooks run then too)
            self.raised.append((index, error))
            return
        t = first_tensor(output)
        self.calls[index].output_shape = () if t is None else tuple(t.shape)
        if t is not None:
            self._made[id(t)] = (weakref.ref(t), index)
        self.last = index

    def culprit(self, err: BaseException) -> TracedCall | None:
        """The traced call that ``err`` came from (itself, or as its ``raise ... from`` cause), if any."""
        chain: list[BaseException] = []
        link: BaseException | None = err
        while link is not None and all(link is not e for e in chain):
            chain.append(link)
            link = link.__cause__
        for index, raised in reversed(self.raised):
            if any(raised is e for e in chain):
                return self.calls[index]
        return self.calls[self.open[-1]] if self.open else None


class _Watch:
    """The forward hook of one watched module; ``__self__`` names its recorder, as a bound method's does."""

    __slots__ = ("__self__", "name")

    def __init__(self, recorder: Recorder, name: str) -> None:
        self.__self__ = recorder
        self.name = name

    def __call__(self, _module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        return self.__self__.watched_call(self.name, output)


def is_recorder_hook(hook: object) -> bool:
    """Whether a hook found on a module is one of a :class:`Recorder`'s (convlens's own).

    Every hook convlens puts on a model is a recorder's (registered by
    :func:`hooks`), and a recorder acts only on its own passes and on a user's
    forward, never on a probe of another entry point: so a probe need not be
    run again because a tap's hooks came or went (a user's own hooks, which do
    run during the probe, are another matter).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> rec = Recorder(net, {"": net})
        >>> with rec.attached():
        ...     [is_recorder_hook(h) for h in net._forward_hooks.values()]
        [True]
        >>> is_recorder_hook(print)
        False
    """
    return isinstance(getattr(hook, "__self__", None), Recorder)
