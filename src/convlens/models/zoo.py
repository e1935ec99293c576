"""Models by name, with their weights: torchvision classifiers, your own factories, the lecture's nets.

A model spec is ``"torchvision:NAME"`` (any torchvision classification
model), ``"convlens:NAME"`` (``alphago_policy``, ``digits_cnn``) or
``"path/to/file.py:factory"`` (a function in your own file that returns an
``nn.Module``). :func:`load` adds weights the standard torchvision way.

Example:
    >>> import convlens as cl
    >>> from convlens import zoo
    >>> net = zoo.alphago_policy(k=192)
    >>> report = cl.trace_shapes(net, (1, 48, 19, 19))
    >>> report["features.0"].output_shape, report.output_shape
    ((1, 192, 19, 19), (1, 361))
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

import torch
from torch import nn
from torch.utils.data import TensorDataset

from convlens.core.checks import choices
from convlens.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    RandomWeightsWarning,
    WeightsUnavailableError,
    did_you_mean,
)
from convlens.models.alphago import AlphaGoPolicy, PositionBias, alphago_policy
from convlens.models.digits import DigitsCNN, Split, load_digits_cnn, load_digits_dataset

__all__ = [
    "AlphaGoPolicy",
    "DigitsCNN",
    "PositionBias",
    "alphago_policy",
    "create",
    "default_classes",
    "default_input_size",
    "digits_cnn",
    "digits_dataset",
    "load",
    "weights_note",
]

#: What ``weights=`` accepts besides a path to a state dict.
WeightsMode = Literal["auto", "imagenet", "random"]
_MODES = choices(WeightsMode)
#: The attribute :func:`load` sets on a model whose pretrained weights were unavailable.
_NOTE = "convlens_weights_note"


def digits_cnn() -> DigitsCNN:
    """The lecture's digits CNN with its shipped trained weights, in eval mode.

    Trained on the handwritten digits of scikit-learn (upsampled to 28x28);
    scikit-learn is not needed at run time. See the "Digits model" page.

    Example:
        >>> digits_cnn()(digits_dataset("test")[0][0][None]).shape
        torch.Size([1, 10])
    """
    return load_digits_cnn()


def digits_dataset(split: Split = "test") -> TensorDataset:
    """The digits the digits CNN was trained (``"train"``) and tested (``"test"``) on.

    Items are ``(image (1, 28, 28) float in [0, 1], label)``; ink is bright.

    Example:
        >>> image, label = digits_dataset("test")[0]
        >>> image.shape, label.dtype
        (torch.Size([1, 28, 28]), torch.int64)
    """
    return load_digits_dataset(split)


#: The models of ``"convlens:NAME"`` specs: (random-init factory, shipped weights or None, input size).
_BUILTIN: Mapping[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module] | None, tuple[int, ...]]] = (
    MappingProxyType(
        {
            "alphago_policy": (alphago_policy, None, (1, 48, 19, 19)),
            "digits_cnn": (DigitsCNN, load_digits_cnn, (1, 1, 28, 28)),
        }
    )
)


def default_input_size(spec: str) -> tuple[int, ...]:
    """The input size a spec's model expects by default (ImageNet's for torchvision).

    Example:
        >>> default_input_size("convlens:alphago_policy"), default_input_size("torchvision:vgg16")
        ((1, 48, 19, 19), (1, 3, 224, 224))
    """
    kind, _, name = spec.partition(":")
    if kind == "convlens" and name in _BUILTIN:
        return _BUILTIN[name][2]
    return (1, 3, 224, 224)


def default_classes(spec: str) -> tuple[str, ...] | None:
    """The names of a zoo model's outputs, where convlens knows them; None for your own model.

    A torchvision classifier's categories come from its weights enum's metadata
    (offline: nothing is downloaded); the digits CNN's are the ten digits. For
    a ``path.py:factory`` model, name them with
    :func:`~convlens.models.images.class_names` (``--classes`` on the command line).

    Example:
        >>> default_classes("convlens:digits_cnn")[:2], default_classes("convlens:alphago_policy")
        (('digit 0', 'digit 1'), None)
        >>> len(default_classes("torchvision:resnet18")), default_classes("my_net.py:build")
        (1000, None)
    """
    kind, _, name = spec.rpartition(":")
    if kind == "convlens":
        return tuple(f"digit {d}" for d in range(10)) if name == "digits_cnn" else None
    if kind != "torchvision":
        return None
    try:
        models = importlib.import_module("torchvision.models")
        meta = models.get_model_weights(name).DEFAULT.meta
    except (ImportError, ValueError, KeyError, AttributeError):
        return None
    categories = meta.get("categories")
    return tuple(categories) if isinstance(categories, list) else None


def load(spec: str, weights: WeightsMode | str | Path = "auto", *, seed: int = 0) -> nn.Module:
    """Build a model and give it weights, in eval mode.

    Args:
        spec: ``"torchvision:NAME"``, ``"convlens:NAME"`` or ``"path/to/file.py:factory"``.
        weights: ``"auto"``: the weights the model is known by: for your own
            factory, the model exactly as it returns it (it may have loaded your
            trained weights: they are yours, and nothing warns); for
            ``convlens:digits_cnn`` its shipped weights; for torchvision,
            pretrained where possible, else seeded random init with a
            :class:`RandomWeightsWarning` and a note that figures write on their
            face (:func:`weights_note`). ``"imagenet"``: torchvision's pretrained
            weights (its weights enum's ``DEFAULT``), from the torch hub cache
            or downloaded when online; fails when they cannot be had.
            ``"random"``: seeded random init, as asked, so no warning, but the
            note says it (for your own factory, every submodule's
            ``reset_parameters()`` is called under the seed: the untrained twin
            of your model, as a saliency sanity check wants). A path: a saved
            state dict.
        seed: Seed of the random initialisation (the global RNG is untouched).

    Returns:
        The model.

    Raises:
        WeightsUnavailableError: ``"imagenet"`` weights that cannot be had, or
            a model that has none.
        InvalidArgumentError: An unknown spec or weights choice, a missing file,
            or a state dict that does not fit the model.

    Example:
        >>> net = load("convlens:alphago_policy", weights="random", seed=1)
        >>> type(net).__name__, net.training, weights_note(net)
        ('AlphaGoPolicy', False, 'random weights (seed 1)')
    """
    mode = _weights_mode(weights)
    model = create(spec, seed=seed)
    if isinstance(mode, Path):
        return _load_state_dict(model, mode)
    if mode == "random":
        if _is_file_spec(spec):
            _randomize(model, spec, seed)
        setattr(model, _NOTE, f"random weights (seed {seed})")
        return model
    if mode == "auto" and _is_file_spec(spec):
        return model  # the factory's weights are the user's
    try:
        return _pretrained(spec, model)
    except WeightsUnavailableError as err:
        if mode == "imagenet":
            raise
        note = f"random weights (seed {seed}): pretrained weights unavailable"
        warnings.warn(f"{spec}: {err} Using {note}.", RandomWeightsWarning, stacklevel=2)
        setattr(model, _NOTE, note)
        return model


def _is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a factory in the user's own file (not ``torchvision:`` or ``convlens:``)."""
    return spec.rpartition(":")[0] not in ("torchvision", "convlens")


@contextlib.contextmanager
def _seeded(model: nn.Module, seed: int) -> Iterator[None]:
    """The CPU generator and those of the CUDA devices ``model`` lives on, seeded; every one restored after.

    A factory that builds on CUDA draws ``reset_parameters()`` from that device's generator: it is
    seeded too, and the user's global RNG state (CPU and CUDA) is left as found.
    """
    cuda = sorted({t.get_device() for t in [*model.parameters(), *model.buffers()] if t.is_cuda})
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _randomize(model: nn.Module, spec: str, seed: int) -> None:
    """Seeded random init of a user's model: every submodule's ``reset_parameters()`` (and running stats).

    Drawn from the CPU generator and, for parameters on CUDA, their device's, each seeded with
    ``seed`` and restored after (the global RNG state is left as found).

    Parameters that no ``reset_parameters()`` covers keep the factory's values, with a warning naming them.
    """
    covered: set[int] = set()
    with _seeded(model, seed):
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in module.parameters(recurse=False))
    kept = [name for name, p in model.named_parameters() if id(p) not in covered]
    if kept:
        shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
        warnings.warn(
            f"{spec}: weights='random' re-initialized every module with reset_parameters(); "
            f"{len(kept)} parameters belong to none and keep the factory's values: {shown}.",
            RandomWeightsWarning,
            stacklevel=3,
        )


def weights_note(model: nn.Module) -> str | None:
    """The line that figures of ``model`` must show, or None.

    Set by :func:`load` when the model has random weights: asked for
    (``weights="random"``) or fallen back to (``"auto"`` without pretrained
    weights). A user factory's model under ``"auto"`` has its own weights and no note.

    Example:
        >>> from torch import nn
        >>> weights_note(nn.Conv2d(1, 1, 1)) is None
        True
    """
    note = getattr(model, _NOTE, None)
    return note if isinstance(note, str) else None


def _weights_mode(weights: object) -> WeightsMode | Path:
    if isinstance(weights, str) and weights in _MODES:
        return weights  # type: ignore[return-value]
    if isinstance(weights, str | Path):
        path = Path(weights)
        if path.is_file():
            return path
        hint = did_you_mean(str(weights), _MODES) if isinstance(weights, str) else ""
        raise InvalidArgumentError(
            f"weights must be one of {', '.join(repr(m) for m in _MODES)} or the path of a saved state "
            f"dict; got {str(weights)!r}, which is no file.{hint}"
        )
    raise InvalidTypeError(f"weights must be a str or a path; got {type(weights).__name__}.")


def _load_state_dict(model: nn.Module, path: Path) -> nn.Module:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InvalidArgumentError(f"cannot read a state dict from {str(path)!r}: {err}") from err
    if not isinstance(state, Mapping):
        raise InvalidArgumentError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict.")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise InvalidArgumentError(
            f"the state dict in {str(path)!r} does not fit {type(model).__name__}: "
            f"{' '.join(line.strip() for line in first[:3])}"
        ) from err
    return model.eval()


#: (host, hub cache folder) -> why a download from there failed, so that offline a process tries once.
_UNREACHABLE: dict[tuple[str, str], str] = {}


def _pretrained(spec: str, model: nn.Module) -> nn.Module:
    kind, _, name = spec.rpartition(":")
    if kind == "convlens":
        shipped = _BUILTIN[name][1]
        if shipped is None:
            raise WeightsUnavailableError(f"convlens:{name} has no pretrained weights.")
        return shipped().eval()
    if kind != "torchvision":
        raise WeightsUnavailableError(
            f"{spec} is your own model: convlens knows no pretrained weights for it. Use "
            "weights='auto' (the model as your factory returns it, its weights included), "
            "'random', or the path of a saved state dict."
        )
    models = importlib.import_module("torchvision.models")
    enum = models.get_model_weights(name).DEFAULT
    hub = importlib.import_module("torch.hub")
    cached = Path(hub.get_dir()) / "checkpoints" / Path(enum.url).name
    where = (urlsplit(enum.url).netloc, str(cached.parent))
    missing = (
        f"pretrained ImageNet weights {type(enum).__name__}.{enum.name} are not in the torch hub cache "
        f"({cached}) and could not be downloaded"
    )
    advice = "Put the file there, pass weights='random', or the path of a saved state dict."
    if not cached.is_file() and where in _UNREACHABLE:  # offline: one failed try per process is enough
        raise WeightsUnavailableError(f"{missing} ({_UNREACHABLE[where]}, earlier in this process). {advice}")
    try:
        state = enum.get_state_dict(progress=False, check_hash=True)
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        if isinstance(err, OSError) and not cached.is_file():
            _UNREACHABLE[where] = reason
        raise WeightsUnavailableError(f"{missing} ({reason}). {advice}") from err
    model.load_state_dict(state)
    return model.eval()


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
        convlens.errors.InvalidArgumentError: convlens has no model 'alphagopolicy'; choose from 'alphago_policy', 'digits_cnn'. Did you mean 'alphago_policy'?
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
