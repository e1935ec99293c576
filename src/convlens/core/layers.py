"""Address the layers of any ``nn.Module`` by qualified name or by object.

Layers are named as in :meth:`torch.nn.Module.named_modules`
(``"features.0"``, ``"layer4.1.conv2"``). A module that runs several times in
one forward (torchvision ResNet's ``relu``) is addressed per call as
``"layer1.0.relu#0"``, ``"layer1.0.relu#1"``.

Example:
    >>> import torch.nn as nn
    >>> import convlens as cl
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten())
    >>> [(info.name, info.type, info.params) for info in cl.list_layers(model)]
    [('0', 'Conv2d', 224), ('1', 'ReLU', 0), ('2', 'Flatten', 0)]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from convlens.core import display
from convlens.core.checks import call_index
from convlens.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    LayerNotFoundError,
    did_you_mean,
)

__all__ = [
    "LayerInfo",
    "LayerList",
    "LayerRef",
    "call_index",
    "list_layers",
    "resolve_layer",
    "resolve_layers",
    "unwrap",
    "wrapper_prefix",
]

_CALL = re.compile(r"^(?P<name>.*)#(?P<call>\d+)$")

#: What a ``layer=`` argument accepts: a qualified name or the module itself.
LayerSpec = str | nn.Module


class LayerInfo(NamedTuple):
    """One named submodule of a model (a named tuple: unpack it or read its fields).

    Attributes:
        name: Qualified name from ``named_modules()``.
        type: The module's class name (``"Conv2d"``).
        module: The module object itself.
        leaf: True when the module has no children.
        params: Number of parameter elements, its children's included.
    """

    name: str
    type: str
    module: nn.Module
    leaf: bool
    params: int


class LayerList(list[LayerInfo]):
    """What :func:`list_layers` returns: a plain ``list`` of :class:`LayerInfo` that Jupyter shows as a table.

    It is a list in every way (indexing, slicing, ``==`` with a plain list,
    ``repr``); only ``_repr_html_`` is added: a table of name (indented by
    depth), type, parameters and whether the module is a leaf.

    Example:
        >>> import torch.nn as nn
        >>> import convlens as cl
        >>> layers = cl.list_layers(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
        >>> isinstance(layers, list), layers == list(layers), layers[1:][0].name
        (True, True, '1')
        >>> layers._repr_html_().count("<tr>")
        3
    """

    __slots__ = ()

    def _repr_html_(self) -> str:
        """The layers as an HTML table (name, type, params, leaf), for Jupyter."""
        rows = [
            [
                display.Html(
                    f'<span style="padding-left:{1.5 * info.name.count(".")}em">'
                    f"{display.escape(info.name)}</span>"
                ),
                info.type,
                f"{info.params:,}",
                "yes" if info.leaf else "no",
            ]
            for info in self
        ]
        leaves = sum(info.leaf for info in self)
        title = display.heading("list_layers", f"{len(self)} layers, {leaves} of them leaves")
        return display.block(title, display.table(["name", "type", "params", "leaf"], rows, align="llrl"))


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A resolved layer: its canonical name, module, optional call index, and the name the user gave.

    Attributes:
        name: Canonical qualified name inside the model convlens runs (the
            first name ``named_modules()`` of the unwrapped model gives).
        module: The module object.
        call: Which call of a reused module (``name#call``), or None for every call.
        label: The name results are keyed by: the name as the user wrote it
            (``"module.layer4"`` given to a ``DataParallel``, or ``"layer4"``),
            or for a module object its name in the object the user holds.
            None: the same as ``name``.

    Example:
        >>> from torch import nn
        >>> LayerRef("relu", nn.ReLU(), 1).key
        'relu#1'
        >>> LayerRef("layer4", nn.ReLU(), label="module.layer4").key
        'module.layer4'
    """

    name: str
    module: nn.Module
    call: int | None = None
    label: str | None = None

    @property
    def shown(self) -> str:
        """The name as written by the user, without the call: ``label``, else ``name``."""
        return self.name if self.label is None else self.label

    @property
    def key(self) -> str:
        """The name as written by the user: ``name`` or ``name#call`` (the label when there is one)."""
        return self.shown if self.call is None else f"{self.shown}#{self.call}"


def _wrapped(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(attribute, inner model)`` of a wrapper convlens looks through, else None."""
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return "module", model.module
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
        return "_orig_mod", inner
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``nn.DataParallel``, ``DistributedDataParallel`` and ``torch.compile`` wrappers.

    convlens runs the wrapped model itself, eagerly: DataParallel's replicas
    would run hooks in several threads, and a compiled graph ignores hooks
    added after it was compiled. Layers keep the names the user gives: the
    wrapper's (``"module.layer4"``) or the wrapped model's (``"layer4"``); see
    :func:`resolve_layer`.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3))
        >>> unwrap(nn.DataParallel(net)) is net, unwrap(net) is net
        (True, True)
    """
    while (found := _wrapped(model)) is not None:
        model = found[1]
    return model


def wrapper_prefix(model: nn.Module) -> str:
    """The prefix the wrappers around the model add to every layer name (``""`` for none).

    The names that ``named_modules()`` of the object the user holds gives are
    this prefix followed by the wrapped model's names.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3))
        >>> wrapper_prefix(nn.DataParallel(net)), wrapper_prefix(net)
        ('module.', '')
    """
    prefix = ""
    while (found := _wrapped(model)) is not None:
        prefix += found[0] + "."
        model = found[1]
    return prefix


def list_layers(model: nn.Module) -> LayerList:
    """List every named submodule of ``model`` but the root, in ``named_modules()`` order.

    Args:
        model: Any ``nn.Module``. For a wrapper (``nn.DataParallel``,
            ``DistributedDataParallel``, ``torch.compile``) the names are those
            ``named_modules()`` of the wrapper gives (``"module.layer4"``,
            ``"_orig_mod.layer4"``); every ``layer=`` accepts them, and the
            wrapped model's own names (``"layer4"``) too.

    Returns:
        One :class:`LayerInfo` per submodule, as a :class:`LayerList` (a
        ``list`` that Jupyter shows as a table).

    Raises:
        InvalidTypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> import torch.nn as nn
        >>> import convlens as cl
        >>> net = nn.Sequential(nn.Sequential(nn.Linear(4, 2)), nn.ReLU())
        >>> [(i.name, i.leaf) for i in cl.list_layers(net)]
        [('0', False), ('0.0', True), ('1', True)]
        >>> [i.name for i in cl.list_layers(nn.DataParallel(net))][:3]
        ['module', 'module.0', 'module.0.0']
    """
    _check_model(model)
    return LayerList(
        LayerInfo(
            name=name,
            type=type(module).__name__,
            module=module,
            leaf=next(module.children(), None) is None,
            params=sum(p.numel() for p in module.parameters()),
        )
        for name, module in model.named_modules()
        if name
    )


def split_call(name: str) -> tuple[str, int | None]:
    """Split ``"layer1.0.relu#1"`` into ``("layer1.0.relu", 1)``.

    Example:
        >>> split_call("layer1.0.relu#1"), split_call("features.0")
        (('layer1.0.relu', 1), ('features.0', None))
    """
    match = _CALL.match(name)
    if match is None:
        return name, None
    return match["name"], int(match["call"])


def resolve_layer(model: nn.Module, layer: LayerSpec) -> LayerRef:
    """Resolve a layer name (``"features.0"``, ``"relu#1"``) or module object.

    Args:
        model: The model that holds the layer. Wrappers are looked through
            (see :func:`unwrap`): the names ``named_modules()`` of the wrapper
            gives (``"module.layer4"``, ``"_orig_mod.layer4"``) and the wrapped
            model's own (``"layer4"``) resolve to the same module, and the
            result keeps the name as given in :attr:`LayerRef.label` (results
            are keyed by it); the wrapper's own name (``"module"``) is the
            wrapped model as a whole (canonical name ``""``).
        layer: A qualified name, optionally with ``#i`` for the i-th call of a
            reused module, or a submodule of ``model``.

    Returns:
        The layer's canonical name, module, call index and the name as given.

    Raises:
        LayerNotFoundError: No such layer; the message names the nearest ones.
        InvalidTypeError: ``layer`` is neither a string nor a module.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> resolve_layer(net, net[1]).name
        '1'
        >>> ref = resolve_layer(nn.DataParallel(net), "module.1")
        >>> ref.name, ref.key, resolve_layer(nn.DataParallel(net), net[1]).key
        ('1', 'module.1', 'module.1')
        >>> resolve_layer(net, "2")
        Traceback (most recent call last):
        ...
        convlens.errors.LayerNotFoundError: Sequential has no layer '2'. Did you mean '1'? Call convlens.list_layers(model) to see all 2.
    """
    return _Namespace(model).resolve(layer)


class _Namespace:
    """A model's layer names, walked once, to resolve any number of layers."""

    def __init__(self, model: nn.Module) -> None:
        _check_model(model)
        self.prefixes: list[str] = []
        while (found := _wrapped(model)) is not None:
            self.prefixes.append(found[0] + ".")
            model = found[1]
        self.prefix = "".join(self.prefixes)
        # The wrappers' own names ("module", "module._orig_mod"): the wrapped model as a whole.
        self.roots = {"".join(self.prefixes[: i + 1])[:-1] for i in range(len(self.prefixes))}
        self.model = model
        self.canonical = {id(m): n for n, m in model.named_modules() if n}
        self.modules = {n: m for n, m in model.named_modules(remove_duplicate=False) if n}

    def resolve(self, layer: LayerSpec) -> LayerRef:
        model, canonical = self.model, self.canonical
        if isinstance(layer, nn.Module):
            if layer is model and self.prefix:
                return LayerRef("", layer, label=self.prefix[:-1])
            if id(layer) not in canonical:
                raise LayerNotFoundError(
                    f"{type(layer).__name__} module given as layer is not a submodule of "
                    f"{type(model).__name__}. Pass one of its modules or a name; call "
                    f"convlens.list_layers(model) to see all {len(canonical)}."
                )
            name = canonical[id(layer)]
            return LayerRef(name, layer, label=self.prefix + name if self.prefix else None)
        if not isinstance(layer, str):
            raise InvalidTypeError(
                f"layer must be a qualified name (str) or an nn.Module; got {type(layer).__name__} {layer!r}."
            )
        given, call = split_call(layer)
        base = given
        if base in self.roots and base not in self.modules:
            return LayerRef("", model, call, label=given)
        for prefix in self.prefixes:
            if base not in self.modules and base.startswith(prefix):
                base = base[len(prefix) :]
        if base not in self.modules:
            names = list(dict.fromkeys(canonical.values()))
            shown = (
                [self.prefix + n for n in names] if given.startswith(self.prefix) and self.prefix else names
            )
            raise LayerNotFoundError(
                f"{type(model).__name__} has no layer {given!r}.{did_you_mean(given, shown)} "
                f"Call convlens.list_layers(model) to see all {len(names) + len(self.roots)}."
            )
        module = self.modules[base]
        name = canonical[id(module)]
        return LayerRef(name, module, call, label=None if given == name else given)


def resolve_layers(model: nn.Module, layers: LayerSpec | Iterable[LayerSpec]) -> list[LayerRef]:
    """Resolve one layer or several, dropping repeats, keeping order.

    Raises:
        InvalidArgumentError: ``layers`` is empty.
        LayerNotFoundError: One of them does not exist.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> [ref.key for ref in resolve_layers(net, ["1", net[0], "1"])]
        ['1', '0']
    """
    specs: Sequence[LayerSpec] = [layers] if isinstance(layers, str | nn.Module) else list(layers)
    if not specs:
        raise InvalidArgumentError(
            "layers is empty: name at least one layer, e.g. 'features.0'. "
            "Call convlens.list_layers(model) to see them all."
        )
    names = _Namespace(model)
    return list(dict.fromkeys(names.resolve(spec) for spec in specs))


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
