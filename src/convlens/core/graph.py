"""The data flow of one forward: which op made each tensor, and from which tensors.

Private. :func:`trace` runs the model once and records a :class:`Graph`: one :class:`Node` per call
of a layer (a leaf module, as :func:`~convlens.core.probe.leaf_names` names them, recorded whole: the
functional ops inside it are not) and per functional op between layers (``+``, ``torch.add``,
``F.relu``, ``flatten``, ``view``, ``F.batch_norm``, ...), seen through a
:class:`torch.overrides.TorchFunctionMode`. Each node says which nodes made the tensors it read
(:attr:`Node.sources`), by tensor identity, so an in-place op (``out += identity``,
``ReLU(inplace=True)``) is a node of its own that the rewritten tensor comes from after it. Watched
layers that are not leaves (a residual block) get a node too, after their insides, whose output is
theirs.

The hooks are registered through the recorder (:func:`~convlens.core.recorder.hooks`) and removed on
exit, also when the forward raises; the pass runs in eval mode without autograd, modes restored after,
and is marked internal (a user's active tap ignores it).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from convlens.core.layers import resolve_layer
    >>> class Block(nn.Module):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.conv, self.bn = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)
    ...     def forward(self, x):
    ...         return torch.relu(self.bn(self.conv(x)) + x)
    >>> net = Block()
    >>> graph = trace(net, torch.zeros(1, 2, 5, 5), watched={"conv": resolve_layer(net, "conv")})
    >>> [(node.op, node.sources) for node in graph.nodes]
    [('Conv2d', (-1,)), ('BatchNorm2d', (0,)), ('add', (1, -1)), ('relu', (2,))]
    >>> graph.watched["conv"], graph.nodes[2].label, graph.depends(0)
    (0, 'add', [True, True, True, True])
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from convlens.core.inputs import NO_ARGS, ForwardArgs
from convlens.core.layers import LayerRef
from convlens.core.probe import leaf_names
from convlens.core.recorder import StopForward, hooks, internal, preserved_modes
from convlens.core.values import tensors

__all__ = ["INPUT", "Graph", "Node", "Source", "trace"]

#: The source index of the model's own inputs (and of its forward arguments' tensors).
INPUT = -1

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """An activation among a functional op's arguments: the node that made it (:data:`INPUT`: an input)."""

    node: int
    shape: Shape


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One call of a layer, or one functional op between layers.

    Attributes:
        index: Its place in :attr:`Graph.nodes` (the order the calls ended in).
        op: The module's class name (``"Conv2d"``), or the function's name with in-place and operator
            spellings folded (``torch.add``, ``a + b``, ``a += b``: ``"add"``; ``F.relu``: ``"relu"``).
        name: The module's qualified name, with ``#call`` for a module called more than once so far;
            ``""`` for a functional op.
        module: The module, None for a functional op.
        call: Which call of the module (0 for a functional op).
        args: A functional op's positional arguments, activations replaced by :class:`Source`
            (parameters, buffers and constants kept as they are); for a module, its inputs as sources.
        kwargs: A functional op's keyword arguments, likewise.
        sources: The nodes that made the activations it read, in argument order.
        shape: The shape of its first output tensor (None: it returned none).
        func: The function of a functional op (None for a module).
    """

    index: int
    op: str
    name: str
    module: nn.Module | None
    call: int
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    sources: tuple[int, ...]
    shape: Shape | None
    func: Callable[..., Any] | None = None

    @property
    def label(self) -> str:
        """``"Conv2d 'layer1.0.conv2'"`` for a module, the op's name for a function."""
        return f"{self.op} {self.name!r}" if self.module is not None else self.op


@dataclass(frozen=True, slots=True)
class Graph:
    """The nodes of one forward, in the order their calls ended.

    Attributes:
        nodes: Every node.
        watched: Per watched layer key, the node of its call (missing: it did not run before the
            forward stopped).
    """

    nodes: tuple[Node, ...]
    watched: Mapping[str, int] = field(default_factory=dict)

    def depends(self, start: int) -> list[bool]:
        """Per node, whether it read the output of node ``start`` (itself included), directly or not."""
        reads = [False] * len(self.nodes)
        if 0 <= start < len(self.nodes):
            reads[start] = True
        for node in self.nodes[start + 1 :]:
            reads[node.index] = any(s >= 0 and reads[s] for s in node.sources)
        return reads


#: Function names folded into one op name: in-place and operator spellings of the same op.
_FOLDED = {"__add__": "add", "__radd__": "add", "__iadd__": "add", "__mul__": "mul", "__rmul__": "mul"}


def op_name(func: Callable[..., Any]) -> str:
    """A function's op name: ``add_``, ``__iadd__`` and ``__add__`` are ``"add"``, ``relu_`` ``"relu"``.

    Example:
        >>> import torch
        >>> op_name(torch.Tensor.add_), op_name(torch.Tensor.__radd__), op_name(torch.relu)
        ('add', 'add', 'relu')
    """
    name = getattr(func, "__name__", type(func).__name__)
    name = _FOLDED.get(name, name)
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


class _Tracer:
    """The bookkeeping of one traced forward: which node made each live tensor."""

    def __init__(self, names: Mapping[int, str], watched: Mapping[str, LayerRef], stop: str | None) -> None:
        self.names = names
        self.watched = dict(watched)
        self.stop = stop
        self.nodes: list[Node] = []
        self.marks: dict[str, int] = {}
        self.made: dict[int, tuple[weakref.ref[Tensor], int]] = {}
        self.calls: dict[int, int] = {}
        self.depth = 0  # inside a leaf: its functional ops are not recorded
        self.open: list[tuple[nn.Module, tuple[int, ...], tuple[Any, ...]]] = []

    def source(self, t: Tensor) -> int | None:
        found = self.made.get(id(t))
        return found[1] if found is not None and found[0]() is t else None

    def mark(self, value: Any, node: int) -> None:
        for t in tensors(value):
            self.made[id(t)] = (weakref.ref(t), node)

    def swap(self, value: Any, found: list[int], depth: int = 0) -> Any:
        """``value`` with each recorded activation replaced by its :class:`Source` (appended to ``found``)."""
        if isinstance(value, Tensor):
            node = self.source(value)
            if node is None:
                return value
            found.append(node)
            return Source(node, tuple(value.shape))
        if depth < 2 and isinstance(value, list | tuple) and not hasattr(value, "_fields"):
            return type(value)(self.swap(v, found, depth + 1) for v in value)
        if depth < 2 and isinstance(value, dict):
            return {k: self.swap(v, found, depth + 1) for k, v in value.items()}
        return value

    def add(self, **fields: Any) -> int:
        index = len(self.nodes)
        self.nodes.append(Node(index=index, **fields))
        return index

    # -- hooks ---------------------------------------------------------------------------------

    def enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        leaf = id(module) in self.names
        if self.depth == 0:
            found: list[int] = []
            swapped = self.swap(args, found)
            self.open.append((module, tuple(found), swapped))
        if leaf:
            self.depth += 1

    def leave(self, module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        leaf = id(module) in self.names
        if leaf:
            self.depth -= 1
        if self.depth > 0 or not self.open or self.open[-1][0] is not module:
            return
        _, found, swapped = self.open.pop()
        call = self.calls.get(id(module), 0)
        self.calls[id(module)] = call + 1
        keys = [key for key, ref in self.watched.items() if ref.module is module and (ref.call or 0) == call]
        if output is None or (not leaf and not keys):
            return
        first = tensors(output)
        name = self.names.get(id(module)) or next((self.watched[k].name for k in keys), "")
        index = self.add(
            op=type(module).__name__,
            name=f"{name}#{call}" if call else name,
            module=module,
            call=call,
            args=swapped,
            kwargs={},
            sources=found,
            shape=tuple(first[0].shape) if first else None,
        )
        self.mark(output, index)
        for key in keys:
            self.marks[key] = index
        if self.stop in keys:
            raise StopForward

    def function(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any
    ) -> None:
        if self.depth > 0:
            return
        made = [out] if isinstance(out, Tensor) else tensors(out) if isinstance(out, tuple | list) else []
        target = args[0] if out is None and args and isinstance(args[0], Tensor) else None
        if not made and target is None:  # a size, a shape, a bool: no data flows on
            return
        found: list[int] = []
        swapped = self.swap(args, found)
        swapped_kwargs = self.swap(dict(kwargs), found)
        index = self.add(
            op=op_name(func),
            name="",
            module=None,
            call=0,
            args=swapped,
            kwargs=swapped_kwargs,
            sources=tuple(found),
            shape=tuple(made[0].shape) if made else None,
            func=func,
        )
        self.mark(made if made else target, index)  # __setitem__ rewrites its first argument


class _Mode(TorchFunctionMode):
    """Records every functional op between layers into a :class:`_Tracer`."""

    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.tracer.function(func, args, kwargs, out)
        return out


def trace(
    model: nn.Module,
    x: Any,
    forward_args: ForwardArgs = NO_ARGS,
    *,
    watched: Mapping[str, LayerRef],
    stop: str | None = None,
) -> Graph:
    """One forward of ``model`` on ``x`` (eval mode, no autograd), recorded as a :class:`Graph`.

    Args:
        model: The (unwrapped) model.
        x: Its input; every tensor in it is :data:`INPUT`, as are the tensors of ``forward_args``.
        forward_args: The model's other forward arguments.
        watched: Layers (with their call) to find in the graph: :attr:`Graph.watched`.
        stop: A key of ``watched``: the forward stops right after that call.
    """
    tracer = _Tracer(leaf_names(model), watched, stop)
    for t in [*tensors(x), *forward_args.tensors()]:
        tracer.made[id(t)] = (weakref.ref(t), INPUT)
    modules = list(
        dict.fromkeys(
            [m for m in model.modules() if id(m) in tracer.names] + [r.module for r in watched.values()]
        )
    )
    with (
        internal(),
        preserved_modes(model, training=False),
        torch.no_grad(),
        hooks(pre=[(m, tracer.enter) for m in modules], always=[(m, tracer.leave) for m in modules]),
        _Mode(tracer),
        contextlib.suppress(StopForward),
    ):
        forward_args.call(model, x)
    return Graph(tuple(tracer.nodes), dict(tracer.marks))
