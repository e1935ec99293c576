"""How much each concept contributes to a class score: by gradient x coefficient, or by ablation.

For an example whose layer activation is ``A = U bank + R`` (coefficients ``U``, residual ``R``), the
component of concept ``i`` is ``C_i = U[:, i] bank_i`` at every position.

- ``"gradient"`` (CRAFT's): ``sum over positions of u_i * (d score / d A) . bank_i``, the first-order
  estimate of the score lost when ``C_i`` is removed. One backward from the score to the layer.
- ``"ablation"``: the score lost when ``C_i`` is removed, exactly: ``s(A) - s(A - C_i)``, the rest of the
  network run on each ablated activation. The ablated activations run as one batch of ``(n + 1) B``
  from the layer on (the layers before it run once); a model whose code after the layer cannot take a
  larger batch runs ``n + 1`` forwards instead.

The gradient is exact where the network after the layer is linear in it (a pooling and a linear head)
and close where it is nearly so; the ablation is what the gradient estimates, at ``n`` more forwards of
the layers after the layer.

Example:
    >>> import torch
    >>> bank = torch.eye(2)
    >>> acts = torch.tensor([[[[1.0]], [[2.0]]]])  # one example, 2 channels, 1 position
    >>> ablated(acts, bank, solve=lambda rows, b: rows.clamp(min=0))[:, :, 0, 0].tolist()
    [[1.0, 2.0], [0.0, 2.0], [1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from convlens.core.layouts import Layout
from convlens.core.leaf import forward_with_leaf
from convlens.core.recorder import grad_mode_restored, preserved_modes
from convlens.core.targets import class_scores
from convlens.errors import InvalidArgumentError
from convlens.featureviz.stream import Batch, LayerStream

__all__ = ["Ablator", "ConceptTarget", "ImportanceMethod", "ablated", "by_gradient", "classes_of", "rows_of"]

#: How the concepts' importance is measured: ``"gradient"`` (gradient x coefficient, one backward)
#: or ``"ablation"`` (each concept's component removed, the rest of the network run).
ImportanceMethod = Literal["gradient", "ablation"]

#: Which class each example's importance explains: None (the class the model predicts), ``"label"``
#: (the ``y`` of ``(x, y)`` items), or one class index for every example.
ConceptTarget = Literal["label"] | int | None


def rows_of(acts: Tensor) -> Tensor:
    """``(B, C, *grid)`` activations as ``(B * positions, C)`` rows, float32 at least."""
    wide = torch.promote_types(acts.dtype, torch.float32)
    if acts.dim() == 2:
        return acts.to(wide)
    return acts.flatten(2).transpose(1, 2).reshape(-1, acts.shape[1]).to(wide)


def classes_of(output: Any, labels: Any, target: ConceptTarget) -> Tensor:
    """The class each example explains, from the model's ``(B, classes)`` output of the clean input.

    Raises:
        InvalidArgumentError: An output that is not ``(B, classes)`` scores, ``target="label"``
            without labels, or a label that is not a class of the output.
    """
    if not isinstance(output, Tensor) or output.dim() != 2:
        got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise InvalidArgumentError(
            f"concepts' importance needs a model output of shape (N, classes); got {got}. Pass importance=None."
        )
    if target is None:
        return output.detach().argmax(1)
    if target == "label":
        if labels is None:
            raise InvalidArgumentError("target='label' needs items (x, y, ...); these hold x only.")
        found = labels if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
        found = found.to(output.device).long().view(-1)
        wrong = (found < 0) | (found >= output.shape[1])
        if bool(wrong.any()):
            raise InvalidArgumentError(
                f"target='label': label {int(found[wrong][0])} is not a class of the model, which gives "
                f"{output.shape[1]} scores per sample (0 to {output.shape[1] - 1})."
            )
        return found
    return torch.full((len(output),), int(target), dtype=torch.long, device=output.device)


def by_gradient(
    batch: Batch, bank: Tensor, codes: Tensor, target: ConceptTarget, layout: Layout
) -> tuple[Tensor, Tensor]:
    """Gradient x coefficient ``(B, n)`` per example and concept, and each example's class ``(B,)``.

    ``batch`` comes from a gradient pass (its ``leaf`` what the rest of the network read); the
    gradient is taken with respect to the leaf and read through ``layout`` as the activations were;
    ``codes`` are the coefficients ``(B, positions, n)``.
    """
    classes = classes_of(batch.output, batch.labels, target)
    scores = class_scores(batch.output, classes)
    leaf = batch.activations if batch.leaf is None else batch.leaf
    (gradient,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
    if gradient is None:
        raise InvalidArgumentError(
            "the class score does not depend on the concepts' layer: no gradient reaches it."
        )
    rows = rows_of(layout.apply(gradient.detach()))
    along = rows @ bank.to(rows.device, rows.dtype).T  # (P, n): d score / d coefficient
    return (codes * along.view(codes.shape)).sum(1), classes


def ablated(
    acts: Tensor, bank: Tensor, *, solve: Callable[[Tensor, Tensor], Tensor], only: int | None = None
) -> Tensor:
    """``[A; A - C_1; ...; A - C_n]``: ``((n + 1) B, C, *grid)``, each concept's component removed in turn.

    ``only``: that one variant alone, ``(B, C, *grid)`` (0: ``A`` itself, ``i + 1``: ``A - C_i``).
    """
    if only == 0:
        return acts
    n, batch = len(bank), len(acts)
    rows = rows_of(acts)
    codes = solve(rows, bank)  # (P, n)
    bank = bank.to(codes.dtype)
    variants = [] if only is not None else [acts]
    for i in range(n) if only is None else [only - 1]:
        component = (codes[:, i : i + 1] * bank[i]).view(batch, -1, acts.shape[1])  # (B, positions, C)
        component = component.transpose(1, 2).reshape(acts.shape).to(acts.dtype)
        variants.append(acts - component)
    return torch.cat(variants)


class Ablator:
    """Runs the ablated activations of a batch through the rest of the network (see the module docstring).

    Remembers whether the model took the larger batch, so that a model that does not is tried once.
    """

    def __init__(self, stream: LayerStream, solve: Callable[[Tensor, Tensor], Tensor]) -> None:
        if stream.layout.reshapes or stream.layout.part not in (None, 0):
            raise InvalidArgumentError(
                "importance='ablation' removes concepts from the layer's own output: it needs reshape=None "
                "(use importance='gradient' with a reshape)."
            )
        self.stream, self.solve = stream, solve
        self.stacked: bool | None = None  # None: not tried yet
        self.width = 0  # how many scores the model gives, once a batch has run

    def drops(self, batch: Batch, bank: Tensor, target: ConceptTarget) -> tuple[Tensor, Tensor]:
        """The score lost per example and concept ``(B, n)``, and each example's class ``(B,)``."""
        n, size = len(bank), len(batch.x)
        outputs = self._outputs(batch, bank, n, size)
        classes = classes_of(outputs[0], batch.labels, target)
        self.width = int(outputs[0].shape[1])
        clean = class_scores(outputs[0], classes)
        drops = torch.stack([clean - class_scores(out, classes) for out in outputs[1:]], dim=1)
        return drops, classes

    def _outputs(self, batch: Batch, bank: Tensor, n: int, size: int) -> list[Tensor]:
        stream = self.stream
        module, probe = stream.tap.module, stream.probe
        rewritten = None if probe is None else probe.rewritten

        def run(replace: Callable[[Tensor], Tensor]) -> Any:
            with preserved_modes(module, training=False), grad_mode_restored():
                return forward_with_leaf(
                    module, stream.ref, stream.layout, batch.x, batch.forward_args, gradient=False,
                    rewritten=rewritten, replace=replace,
                )[1]  # fmt: skip

        if self.stacked is not False:
            try:
                output = run(lambda acts: ablated(acts, bank, solve=self.solve))
            except Exception:  # noqa: BLE001 - code after the layer that keeps the input's batch size
                output = None
            stacked = isinstance(output, Tensor) and output.dim() == 2 and output.shape[0] == (n + 1) * size
            if self.stacked is None:
                self.stacked = stacked
            if stacked and isinstance(output, Tensor):
                return list(torch.split(output.detach(), size))
        outputs = []
        for i in range(n + 1):  # one forward per variant

            def one(acts: Tensor, i: int = i) -> Tensor:
                return ablated(acts, bank, solve=self.solve, only=i)

            out = run(one)
            if not isinstance(out, Tensor):
                classes_of(out, None, None)  # raises: no (N, classes) scores
            outputs.append(out.detach())
        return outputs
