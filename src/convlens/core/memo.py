"""The one cache that outlives a call: what is learned about a model, kept per model, weakly.

Probes (:class:`convlens.core.probe.Prober`) and receptive-field traces
(:meth:`convlens.NeuronVisualizer.top_examples`) are kept here so that a
fresh object on the same model finds them. Safe because the keys are weak (a
model that dies takes its entries with it), every entry is keyed by the
model's :func:`structure` (an edit is learned again), each model keeps at most
16 entries (the least recently used goes first), and an entry holds shapes,
dtypes, ids and plain values only: no module, no tensor, no value of the user.
Nothing is written onto the model.

Example:
    >>> from torch import nn
    >>> net = nn.Linear(2, 3)
    >>> remember(net, ("out", structure(net)), (3,))
    >>> recall(net, ("out", structure(net)))
    (3,)
"""

from __future__ import annotations

import collections
import threading
import weakref

from torch import nn

from convlens.core.recorder import is_recorder_hook

__all__ = ["SETTINGS", "recall", "remember", "structure"]

#: The plain types of a setting: what a structure key or a shareable input may hold.
SETTINGS = frozenset({bool, int, float, str, tuple, type(None)})
_BOOKKEEPING = frozenset(vars(nn.Module())) | {"training"}
#: The hook dictionaries a probe runs through (a user's hooks run on meta tensors too).
_HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


def structure(model: nn.Module) -> object:
    """A key that changes when the model is edited: its modules, their settings, hooks and parameters.

    Each module's identity and class, its attributes of plain types
    (``inplace``, ``stride``, ``padding``, a flag its forward reads, ...), the
    handles of the hooks a user put on it (convlens's own recorders are left
    out: they never act during a probe) and its parameters' shapes and dtypes,
    so a probe cached before ``relu.inplace = True``, a swapped submodule or a
    new hook is not reused after it. nn.Module's own bookkeeping and
    ``training`` (the mode, keyed apart) are left out.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> before = structure(net)
        >>> before == structure(net)
        True
        >>> handle = net[1].register_forward_hook(lambda m, i, o: None)
        >>> structure(net) == before
        False
        >>> handle.remove()
        >>> structure(net) == before
        True
    """
    key: list[object] = []
    for m in model.modules():  # called before every probe lookup: kept lean
        attrs = vars(m)
        hooks = [
            h for name in _HOOKS if attrs.get(name) for h, f in attrs[name].items() if not is_recorder_hook(f)
        ]
        params = [(k, p.shape, p.dtype) for k, p in attrs.get("_parameters", {}).items() if p is not None]
        settings = [(k, v) for k, v in attrs.items() if type(v) in SETTINGS and k not in _BOOKKEEPING]
        key.append((id(m), type(m), *settings, *hooks, *params))  # pairs, ints (hook handles), triples
    return tuple(key)


#: What is learned about a model and kept beyond one object (probes, receptive fields): the one cache
#: of this package that outlives a call. Safe because the keys are weak (a model that dies takes its
#: entries with it), every entry is keyed by the model's structure (an edit is learned again), each
#: model keeps at most _PER_MODEL (the least recently used goes first), and an entry holds shapes,
#: dtypes, ids and plain values only: no module, no tensor, no value of the user (see :func:`remember`).
_SHARED: weakref.WeakKeyDictionary[nn.Module, collections.OrderedDict[object, object]] = (
    weakref.WeakKeyDictionary()
)
_PER_MODEL = 16
_LOCK = threading.Lock()


def recall(model: nn.Module, key: object) -> object | None:
    """What :func:`remember` kept for ``model`` under ``key``, or None.

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(2, 3)
        >>> remember(net, ("out", structure(net)), (3,))
        >>> recall(net, ("out", structure(net))), recall(net, "other")
        ((3,), None)
    """
    with _LOCK:
        try:
            kept = _SHARED.get(model)
        except TypeError:  # a model class that is not hashable: nothing kept
            return None
        if kept is None or key not in kept:
            return None
        kept.move_to_end(key)
        return kept[key]


def remember(model: nn.Module, key: object, value: object) -> None:
    """Keep ``value`` for ``model`` under ``key`` (hashable), for as long as the model lives.

    ``key`` should hold :func:`structure` (so an edited model misses), and
    neither ``key`` nor ``value`` may hold a module, a tensor or any other
    object of the user's: they would keep the model alive or leak its data.
    At most 16 entries per model are kept, the least recently used dropped.
    Nothing is written onto the model.
    """
    with _LOCK:
        try:
            kept = _SHARED.setdefault(model, collections.OrderedDict())
        except TypeError:
            return
        kept[key] = value
        kept.move_to_end(key)
        while len(kept) > _PER_MODEL:
            kept.popitem(last=False)
