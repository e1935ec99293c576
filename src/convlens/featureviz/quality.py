"""How much to trust a feature visualization: three numbers beside each picture.

- **relative activation**: the unit's activation that the picture reaches, over the activation of
  the unit's top natural example (Lucid reports it as a fraction of the dataset's maximum). Above
  1 the picture excites the unit more than anything in the data; far below 1 the optimization did
  not find what the unit answers to.
- **stability**: the mean cosine similarity between the features of pictures made from different
  seeds (the layer's channels averaged over positions, or the model's output for an objective that
  reads only the output). Near 1 every seed finds the same thing; near 0 the picture is one of many
  unrelated answers.
- **transfer**: the probability that a second network, which never saw the optimization, gives the
  target class of each picture: a picture that only fools the model it was made on scores near 0.

:class:`Quality` holds them, one value per picture, ``None`` where not asked for;
:class:`Transfer` says which second network and classes.

Example:
    >>> import torch
    >>> q = Quality(relative=torch.tensor([1.5]), stability=None, transfer=torch.tensor([0.25]))
    >>> q.describe(0)
    'activation 1.50x the top example, transfer p 0.25'
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.core.checks import check_indices, check_model
from convlens.core.recorder import preserved_modes
from convlens.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "Quality",
    "Transfer",
    "check_reference",
    "check_transfer",
    "relative_to",
    "stability_of",
    "transfer_of",
]


@dataclass(frozen=True, slots=True)
class Quality:
    """The trust numbers of a batch of feature visualizations, ``(N,)`` float32 each or None.

    Attributes:
        relative: The unit's activation reached, over its top natural example's.
        stability: The mean cosine between the features of the pictures made from different seeds.
        transfer: The second network's probability of each picture's target class.
    """

    relative: Tensor | None = None
    stability: Tensor | None = None
    transfer: Tensor | None = None

    def describe(self, i: int) -> str:
        """Picture ``i``'s numbers in words (only those measured), e.g. for a caption.

        Example:
            >>> import torch
            >>> Quality(stability=torch.tensor([0.912, 0.5])).describe(1)
            'stability 0.50 across seeds'
        """
        parts = []
        if self.relative is not None and not math.isnan(float(self.relative[i])):
            parts.append(f"activation {float(self.relative[i]):.2f}x the top example")
        if self.stability is not None:
            parts.append(f"stability {float(self.stability[i]):.2f} across seeds")
        if self.transfer is not None:
            parts.append(f"transfer p {float(self.transfer[i]):.2f}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A second network to show the pictures to, and the class each picture should be.

    Args:
        model: Any classifier returning ``(N, classes)`` scores; run in eval mode without autograd
            (modes restored after), on the pictures normalized as for the first model.
        targets: One class per picture, or one for all.
        size: The side the pictures are resized to (bilinear, antialiased) for it; None: as made.

    Example:
        >>> import torch.nn as nn
        >>> Transfer(nn.Linear(3, 2), targets=1).targets
        1
    """

    model: nn.Module
    targets: int | Sequence[int]
    size: int | None = None

    def __post_init__(self) -> None:
        check_model(self.model)
        object.__setattr__(self, "targets", check_indices("targets", self.targets, item="target"))
        if self.size is not None and (not isinstance(self.size, int) or isinstance(self.size, bool)):
            raise InvalidTypeError(f"Transfer size must be an int or None; got {self.size!r}.")
        if self.size is not None and self.size < 1:
            raise InvalidArgumentError(f"Transfer size must be at least 1; got {self.size}.")


def check_reference(reference: object, n: int) -> Tensor | None:
    """The top natural activation per image, ``(n,)`` float32, or None.

    Raises:
        InvalidTypeError: Not a number or numbers.
        InvalidArgumentError: Neither one number nor ``n``.

    Example:
        >>> check_reference(2, 3).tolist()
        [2.0, 2.0, 2.0]
    """
    if reference is None:
        return None
    if isinstance(reference, bool):
        raise InvalidTypeError(f"reference must be a number or one number per image; got {reference!r}.")
    if isinstance(reference, Real):
        return torch.full((n,), float(reference))
    try:
        values = torch.as_tensor(reference, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidTypeError(
            f"reference must be a number or one number per image; got {reference!r:.80}."
        ) from err
    if values.numel() not in (1, n):
        raise InvalidArgumentError(
            f"reference must be one number, or one per image ({n}); got {values.numel()}."
        )
    return values.expand(n).clone().cpu()


def relative_to(values: Tensor, reference: Tensor) -> Tensor:
    """``values / reference`` as float32, ``(N,)``; a non-positive reference gives NaN (no natural maximum).

    Example:
        >>> import torch
        >>> relative_to(torch.tensor([2.0, 1.0]), torch.tensor([4.0, 0.0])).tolist()
        [0.5, nan]
    """
    reference = reference.to(values.device, torch.float32)
    ratio = values.float() / reference
    return torch.where(reference > 0, ratio, torch.full_like(ratio, float("nan")))


def stability_of(features: Sequence[Tensor]) -> Tensor:
    """The mean cosine similarity over pairs of seeds, per picture; ``features[s]`` is seed ``s``'s ``(N, ...)``.

    Each picture's features are flattened (average over positions first, if wanted).

    Raises:
        InvalidArgumentError: Fewer than two seeds, or features of different shapes.

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> b = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
        >>> stability_of([a, b]).tolist()
        [1.0, 0.0]
    """
    if len(features) < 2:
        raise InvalidArgumentError(f"stability needs pictures from at least 2 seeds; got {len(features)}.")
    shapes = {tuple(f.shape) for f in features}
    if len(shapes) != 1:
        raise InvalidArgumentError(f"stability needs features of one shape per seed; got {sorted(shapes)}.")
    flat = [f.detach().float().flatten(1) for f in features]
    cosines = [F.cosine_similarity(a, b, dim=1, eps=1e-12) for a, b in itertools.combinations(flat, 2)]
    return torch.stack(cosines).mean(0)


def check_transfer(transfer: Transfer, shape: tuple[int, ...]) -> None:
    """Refuse, before any optimization, a transfer network or targets that cannot score pictures of ``shape``.

    One forward of a zero picture (at ``transfer.size``) learns the network's classes.

    Raises:
        InvalidArgumentError: Targets neither one nor one per picture, a target out of the network's
            range, or a network that rejects the pictures or does not return ``(N, classes)``.
    """
    n = shape[0]
    count = 1 if isinstance(transfer.targets, int) else len(transfer.targets)
    if count not in (1, n):
        raise InvalidArgumentError(
            f"Transfer targets: one class for all or one per picture ({n}); got {count}."
        )
    side = shape[2:] if transfer.size is None else (transfer.size, transfer.size)
    try:
        out = _scores(transfer, torch.zeros((1, *shape[1:2], *side)))
    except (RuntimeError, ValueError, TypeError) as err:
        raise InvalidArgumentError(
            f"the transfer network {type(transfer.model).__name__} rejects pictures of {(1, *shape[1:2], *side)}: "
            f"{err}"
        ) from err
    if not isinstance(out, Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise InvalidArgumentError(f"the transfer network must return (N, classes) scores; got {got}.")
    top = max([transfer.targets] if isinstance(transfer.targets, int) else transfer.targets)
    if top >= out.shape[1]:
        raise InvalidArgumentError(
            f"Transfer target {top} is out of range for a network of {out.shape[1]} classes."
        )


@torch.no_grad()
def _scores(transfer: Transfer, inputs: Tensor) -> Any:
    """The second network's output on ``inputs`` (resized), in eval mode, modes restored after."""
    model = transfer.model
    with preserved_modes(model, training=False):
        p = next(iter(model.parameters()), None)
        x = inputs if p is None else inputs.to(p.device, p.dtype)
        if transfer.size is not None and tuple(x.shape[-2:]) != (transfer.size, transfer.size):
            x = F.interpolate(
                x, size=(transfer.size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        return model(x)


def transfer_of(transfer: Transfer, inputs: Tensor) -> Tensor:
    """The second network's softmax probability of each input's target class, ``(N,)`` float32, on ``inputs``' device.

    ``inputs`` are what the first model saw (normalized); the model's modes are restored after.

    Raises:
        InvalidArgumentError: The second network's output is not ``(N, classes)``, or a target is
            out of its range (:func:`check_transfer` finds both before any work).
    """
    out = _scores(transfer, inputs)
    n = inputs.shape[0]
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != n:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise InvalidArgumentError(
            f"the transfer network must return (N, classes) scores for N={n}; got {got}."
        )
    targets = torch.as_tensor(transfer.targets).reshape(-1).to(out.device)
    targets = targets.expand(n) if targets.numel() == 1 else targets
    if targets.numel() != n:
        raise InvalidArgumentError(
            f"Transfer targets: one class for all or one per picture ({n}); got {targets.numel()}."
        )
    if int(targets.max()) >= out.shape[1]:
        raise InvalidArgumentError(
            f"Transfer target {int(targets.max())} is out of range for a network of {out.shape[1]} classes."
        )
    probs = out.detach().float().softmax(dim=1)
    return probs.gather(1, targets[:, None])[:, 0].to(inputs.device)
