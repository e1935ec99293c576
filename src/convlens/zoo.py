"""Models by name: torchvision classifiers, your own factories, and the lecture's nets.

A model spec is ``"torchvision:NAME"`` (any torchvision classification
model), ``"convlens:NAME"`` (a model of this module, such as
``alphago_policy``) or ``"path/to/file.py:factory"`` (a function in your own
file that returns an ``nn.Module``).

Example:
    >>> import convlens as cl
    >>> from convlens import zoo
    >>> net = zoo.alphago_policy(k=192)
    >>> report = cl.trace_shapes(net, (1, 48, 19, 19))
    >>> report["features.0"].output_shape, report.output_shape
    ((1, 192, 19, 19), (1, 361))
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from convlens.errors import InvalidArgumentError, InvalidTypeError, did_you_mean

__all__ = ["AlphaGoPolicy", "PositionBias", "alphago_policy", "create", "default_input_size"]


class PositionBias(nn.Module):
    """Add a separate learned bias at every spatial position.

    Args:
        height: Rows of the map.
        width: Columns of the map.

    Shape:
        Input ``(N, 1, height, width)``; output the same.

    Example:
        >>> import torch
        >>> PositionBias(19, 19)(torch.zeros(2, 1, 19, 19)).shape
        torch.Size([2, 1, 19, 19])
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 1, height, width))

    def forward(self, x: Tensor) -> Tensor:
        """Add the per-position bias."""
        return x + self.bias


class AlphaGoPolicy(nn.Module):
    """AlphaGo's policy network as Silver et al. (2016) and the lecture describe it.

    A ``19x19x48`` stack of feature planes is zero padded to ``23x23`` and
    convolved with ``k`` 5x5 filters (ReLU); hidden layers 2 to 12 each pad to
    ``21x21`` and convolve ``k`` 3x3 filters (ReLU); the last layer convolves
    one 1x1 filter, adds a different bias at each of the 361 positions and
    applies a softmax over the moves. No pooling: every layer stays 19x19.

    Args:
        k: Filters per hidden layer (192 in the match version; 128, 256 and
            384 in Extended Data Table 3).
        planes: Input feature planes.
        board: Board size.

    Shape:
        Input ``(N, planes, board, board)``; output ``(N, board * board)``
        move probabilities.

    References:
        Silver et al., "Mastering the game of Go with deep neural networks and
        tree search", Nature 529 (2016). https://doi.org/10.1038/nature16961

    Example:
        >>> import torch
        >>> net = AlphaGoPolicy(k=8)
        >>> probs = net(torch.zeros(2, 48, 19, 19)).detach()
        >>> probs.shape, [round(float(s), 4) for s in probs.sum(dim=1)]
        (torch.Size([2, 361]), [1.0, 1.0])
    """

    def __init__(self, k: int = 192, *, planes: int = 48, board: int = 19) -> None:
        super().__init__()
        for name, value in (("k", k), ("planes", planes), ("board", board)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int; got {value!r}.")
        layers: list[nn.Module] = [nn.Conv2d(planes, k, 5, padding=2), nn.ReLU(inplace=True)]
        for _ in range(11):
            layers += [nn.Conv2d(k, k, 3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(k, 1, 1, bias=False)
        self.position_bias = PositionBias(board, board)
        self.flatten = nn.Flatten()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Move probabilities, one per board point."""
        out = self.position_bias(self.head(self.features(x)))
        return self.softmax(self.flatten(out))  # type: ignore[no-any-return]


def alphago_policy(k: int = 192) -> AlphaGoPolicy:
    """AlphaGo's policy network with ``k`` filters per hidden layer (see :class:`AlphaGoPolicy`).

    Example:
        >>> sum(p.numel() for p in alphago_policy(192).parameters())
        3882793
    """
    return AlphaGoPolicy(k)


#: The models of ``"convlens:NAME"`` specs and their default input sizes.
_BUILTIN: Mapping[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = MappingProxyType(
    {"alphago_policy": (alphago_policy, (1, 48, 19, 19))}
)


def default_input_size(spec: str) -> tuple[int, ...]:
    """The input size a spec's model expects by default (ImageNet's for torchvision).

    Example:
        >>> default_input_size("convlens:alphago_policy"), default_input_size("torchvision:vgg16")
        ((1, 48, 19, 19), (1, 3, 224, 224))
    """
    kind, _, name = spec.partition(":")
    if kind == "convlens" and name in _BUILTIN:
        return _BUILTIN[name][1]
    return (1, 3, 224, 224)


def create(spec: str, *, seed: int = 0) -> nn.Module:
    """Build the model a spec names, with seeded random weights, in eval mode.

    The global random state is left as it was.

    Args:
        spec: ``"torchvision:NAME"``, ``"convlens:NAME"`` or ``"path/to/file.py:factory"``.
        seed: Seed of the random initialisation.

    Returns:
        The model.

    Raises:
        InvalidArgumentError: An unknown name, a missing file or factory.
        InvalidTypeError: The factory did not return an ``nn.Module``.

    Example:
        >>> create("convlens:alphago_policy").features[0]
        Conv2d(48, 192, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
        >>> create("convlens:alphagopolicy")
        Traceback (most recent call last):
        ...
        convlens.errors.InvalidArgumentError: convlens has no model 'alphagopolicy'; choose from 'alphago_policy'. Did you mean 'alphago_policy'?
    """
    if not isinstance(spec, str):
        raise InvalidTypeError(f"a model spec must be a str; got {type(spec).__name__}.")
    kind, sep, name = spec.rpartition(":")
    if not sep or not kind or not name:
        raise InvalidArgumentError(
            f"model spec {spec!r} is not 'torchvision:NAME', 'convlens:NAME' or 'path/to/file.py:factory'."
        )
    factory = _factory(kind, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"{spec} returned {type(model).__name__}, not an nn.Module.")
    return model.eval()


def _factory(kind: str, name: str) -> Callable[[], Any]:
    if kind == "convlens":
        if name not in _BUILTIN:
            raise InvalidArgumentError(
                f"convlens has no model {name!r}; choose from "
                f"{', '.join(repr(n) for n in _BUILTIN)}.{did_you_mean(name, _BUILTIN)}"
            )
        return _BUILTIN[name][0]
    if kind == "torchvision":
        return _torchvision_factory(name)
    return _file_factory(Path(kind), name)


def _torchvision_factory(name: str) -> Callable[[], nn.Module]:
    try:
        models = importlib.import_module("torchvision.models")
    except ImportError as err:
        raise InvalidArgumentError(
            "torchvision models need torchvision: pip install 'convlens[torchvision]'."
        ) from err
    names = models.list_models(module=models)
    if name not in names:
        raise InvalidArgumentError(
            f"torchvision has no classification model {name!r}.{did_you_mean(name, names)} "
            f"It has {len(names)}, e.g. alexnet, vgg16, resnet18."
        )

    def build() -> nn.Module:
        model: nn.Module = models.get_model(name, weights=None)
        return model

    return build


def _file_factory(path: Path, name: str) -> Callable[[], Any]:
    if path.suffix != ".py":
        raise InvalidArgumentError(
            f"unknown model source {str(path)!r}: use 'torchvision', 'convlens' or a path to a .py file."
        )
    if not path.is_file():
        raise InvalidArgumentError(f"model file {str(path)!r} does not exist.")
    module_spec = importlib.util.spec_from_file_location(f"_convlens_user_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise InvalidArgumentError(f"cannot import {str(path)!r} as a Python module.")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise InvalidArgumentError(f"importing {str(path)!r} failed: {type(err).__name__}: {err}") from err
    factory = getattr(module, name, None)
    if not callable(factory):
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise InvalidArgumentError(f"{str(path)!r} has no function {name!r}.{did_you_mean(name, found)}")
    return factory  # type: ignore[no-any-return]
