"""One forward with a layer's output as an autograd leaf: no autograd is recorded before the layer.

Shared by the CAM family (the activation and d score / d activation of one layer) and the concepts'
importance (d score / d activation, projected on each concept).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from convlens.core.layers import resolve_layer
    >>> from convlens.core.layouts import Layout
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    >>> leaf, output = forward_with_leaf(net, resolve_layer(net, "0"), Layout(), torch.randn(2, 1, 6, 6))
    >>> leaf.requires_grad, leaf.shape, output.shape
    (True, torch.Size([2, 2, 4, 4]), torch.Size([2, 3]))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from convlens.core.checks import check_ran
from convlens.core.inputs import NO_ARGS, ForwardArgs
from convlens.core.layers import LayerRef
from convlens.core.layouts import Layout
from convlens.core.recorder import Recorder
from convlens.core.values import first_tensor, replaced
from convlens.errors import InvalidArgumentError

__all__ = ["forward_with_leaf"]


def forward_with_leaf(
    model: nn.Module,
    ref: LayerRef,
    layout: Layout,
    x: Any,
    forward_args: ForwardArgs = NO_ARGS,
    *,
    gradient: bool = True,
    rewritten: Callable[[str, int], bool] | None = None,
    replace: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Any]:
    """One forward of ``model`` on ``x``, autograd off until ``ref``'s call; returns (activation, output).

    With ``gradient``, the tensor ``layout`` picks from the layer's output becomes a leaf that
    requires grad and flows on in the output's place (a clone flows on where a later op rewrites
    it in place), and autograd records from there on: ``torch.autograd.grad(score, activation)``
    then back-propagates through the rest of the network only. Without, the output flows on
    untouched and a copy is kept where a later op rewrites it. Call it under
    :func:`~convlens.core.recorder.grad_mode_restored` and in the mode the model should run in;
    it leaves autograd enabled after the layer.

    Args:
        model: The module the hooks go on (unwrapped).
        ref: The layer, and which call of it (``ref.call``, the first by default).
        layout: Which tensor of the layer's output, and how it is read (the leaf is the tensor as
            picked, before any reshape).
        x: The input.
        forward_args: The model's other forward arguments.
        gradient: Make the activation a leaf that requires grad.
        rewritten: ``(name, call) -> bool``: whether a later in-place op rewrites that output (the
            probe knows); None: assume it does (a copy is always made).
        replace: Without ``gradient``: what flows on in the picked tensor's place, from it (the
            activation returned is still the layer's own).

    Raises:
        LayerNotFoundError: The layer does not run (or not that often).
        InvalidArgumentError: The layer returns no tensor.
    """
    captured: list[Tensor] = []
    name, wanted = ref.name, ref.call or 0
    unknown = layout.part not in (None, 0)  # the probe knows about in-place rewrites of the first tensor only

    def keep(_name: str, call: int, output: Any) -> Any:
        if first_tensor(output) is None:
            return None
        tensor = layout.pick(output)
        copy = unknown or rewritten is None or rewritten(name, call)
        if not gradient:
            captured.append(tensor.detach().clone() if copy else tensor.detach())
            return None if replace is None else replaced(output, tensor, replace(captured[-1]))
        leaf = tensor.detach().requires_grad_()
        captured.append(leaf)
        torch.set_grad_enabled(True)  # record autograd from here on
        # Where a later op writes into the output in place, a clone flows on instead; a multi-tensor
        # output keeps its other items.
        return replaced(output, tensor, leaf.clone() if copy else leaf)

    recorder = Recorder(model, {name: ref.module}, wanted={name: {wanted}}, keep=keep)
    torch.set_grad_enabled(False)
    with recorder.attached(), recorder.owned():
        output = forward_args.call(model, x)
    check_ran(ref, recorder.counts[name], model=type(model).__name__)
    if not captured:
        raise InvalidArgumentError(f"layer {ref.key!r} returns no tensor to explain.")
    return captured[0], output
